//! Decode graph capture at load: one forward per padded batch size, recorded against padding
//! metadata that points every entry at the scratch slot.
use std::time::Instant;

use super::state::{AttnMode, State};
use super::{err, CudaLlama, MAX_SPLITS};
use crate::backend::cuda::graphs;
use crate::backend::cuda::plan;

impl CudaLlama {
    pub(super) fn capture_graphs(&self) -> Result<Vec<String>, String> {
        let mut st = self.state.lock().map_err(|_| "CUDA state poisoned".to_string())?;
        let sizes = st.graphs.sizes().to_vec();
        if sizes.is_empty() {
            return Ok(vec!["CUDA graphs disabled".into()]);
        }
        let (free_before, _) = self.gpu.ctx.mem_get_info().map_err(err("mem_get_info"))?;
        let mut log = vec![format!(
            "Capture cuda graph begin. This can take up to several minutes. avail mem={:.2} GB",
            free_before as f64 / (1u64 << 30) as f64
        )];
        let started = Instant::now();
        for bs in sizes {
            let (splits, partition) = plan::decode_split(self.context_length, bs, self.config.num_key_value_heads, self.gpu.info.sm_count, MAX_SPLITS);
            let mode = AttnMode::Decode { splits, partition };
            // Capture against well-formed metadata: every padded entry points at the scratch slot.
            self.upload_padding(&mut st, bs)?;
            let st_ref: &State = &st;
            let graph = graphs::capture(&self.gpu, || self.run_body(st_ref, bs, bs, mode, bs))?;
            st.graphs.insert(bs, graph, mode);
        }
        let (free_after, _) = self.gpu.ctx.mem_get_info().map_err(err("mem_get_info"))?;
        log.push(format!(
            "Capture cuda graph end. Time elapsed: {:.2} s. mem usage={:.2} GB. avail mem={:.2} GB.",
            started.elapsed().as_secs_f64(),
            free_before.saturating_sub(free_after) as f64 / (1u64 << 30) as f64,
            free_after as f64 / (1u64 << 30) as f64
        ));
        Ok(log)
    }

    fn upload_padding(&self, st: &mut State, bs: usize) -> Result<(), String> {
        let ml = st.meta_layout;
        let mut meta = vec![0i32; ml.len()];
        ml.pad_decode(&mut meta, 0, bs, self.num_slots);
        self.gpu.stream.memcpy_htod(&meta, &mut st.bufs.meta).map_err(err("meta upload"))
    }
}
