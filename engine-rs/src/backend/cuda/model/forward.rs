//! One step on the GPU: pack and upload the batch's metadata, replay a decode graph or launch
//! the forward eagerly (logits in chunks of `LOGIT_ROWS`), download the logits.
use super::meta::{self, PackedBatch};
use super::state::AttnMode;
use super::{err, CudaLlama, LOGIT_ROWS, MAX_SPLITS};
use crate::backend::cuda::plan;
use crate::model::ForwardSeq;

impl CudaLlama {
    pub(super) fn forward_checked(&self, batch: &[ForwardSeq]) -> Result<Vec<f32>, String> {
        let c = &self.config;
        let mut st = self.state.lock().map_err(|_| "CUDA state poisoned".to_string())?;
        let ml = st.meta_layout;
        let n_tokens: usize = batch.iter().map(|s| s.tokens.len()).sum();
        if batch.is_empty() || n_tokens == 0 {
            return Ok(Vec::new());
        }
        if batch.len() > ml.s || n_tokens > ml.t {
            return Err(format!("batch of {} sequences / {n_tokens} tokens exceeds the CUDA plan ({} / {})", batch.len(), ml.s, ml.t));
        }
        let PackedBatch { mut meta, table, rows, tokens: tok, max_len, max_extend } =
            meta::pack(ml, batch, self.context_length, self.num_slots, c.vocab_size)?;
        let decode = max_extend == 1;
        let graph_bs = if decode { st.graphs.padded(batch.len()) } else { None };
        if let Some(bs) = graph_bs {
            ml.pad_decode(&mut meta, batch.len(), bs, self.num_slots);
        }
        if table.len() > st.bufs.slot_table.len() {
            // Graphs hold the old table's address: drop them along with it.
            st.bufs.slot_table = self.gpu.stream.alloc_zeros::<i32>(table.len() * 2).map_err(err("slot table"))?;
            st.graphs.clear();
        }
        let stream = &self.gpu.stream;
        stream.memcpy_htod(&meta, &mut st.bufs.meta).map_err(err("meta upload"))?;
        stream.memcpy_htod(&table, &mut st.bufs.slot_table).map_err(err("slot table upload"))?;

        let v = c.vocab_size;
        let mut out = vec![0f32; rows.len() * v];
        match graph_bs.and_then(|bs| st.graphs.get(bs)) {
            Some(graph) => {
                graph.launch().map_err(err("graph launch"))?;
                stream.memcpy_dtoh(&st.bufs.logits.slice(0..rows.len() * v), &mut out[..]).map_err(err("logits download"))?;
            }
            None => {
                let mode = if decode {
                    let (splits, partition) = plan::decode_split(max_len, batch.len(), c.num_key_value_heads, self.gpu.info.sm_count, MAX_SPLITS);
                    AttnMode::Decode { splits, partition }
                } else {
                    AttnMode::Prefill { max_extend }
                };
                let cap = LOGIT_ROWS.max(ml.s);
                self.run_body(&st, tok, batch.len(), mode, rows.len().min(cap))?;
                let mut done = 0;
                while done < rows.len() {
                    let count = (rows.len() - done).min(cap);
                    if done > 0 {
                        self.logits_rows(&st, done, count)?;
                    }
                    stream
                        .memcpy_dtoh(&st.bufs.logits.slice(0..count * v), &mut out[done * v..(done + count) * v])
                        .map_err(err("logits download"))?;
                    done += count;
                }
            }
        }
        stream.synchronize().map_err(err("forward"))?;
        Ok(out)
    }
}
