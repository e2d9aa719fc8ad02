//! `CudaLlama`: the Llama architecture on the GPU, a `Model` the scheduler drives unchanged.
//!
//! KV contract: the model keeps its own paged KV pool in GPU memory (bf16, one K and one V table
//! per layer, `num_slots + 1` rows of kv_dim: the extra row is a scratch slot that padded graph
//! entries write to). It is indexed by the scheduler's slot ids, so the scheduler must size its
//! slot allocator with `num_slots()`. The CPU `KvCache` passed to `forward` is ignored (the engine
//! may create it with zero slots).
//!
//! One forward: embed → per layer [RMSNorm → QKV GEMM → RoPE + KV write → attention (decode
//! kernel when every sequence brings one token, else the prefill kernel) → O GEMM → fused
//! add+RMSNorm → gate/up GEMM → SiLU·mul → down GEMM → fused add+RMSNorm] → gather logit rows →
//! lm_head GEMM (f32) → host. Decode batches up to --cuda-graph-max-bs replay captured graphs.
//!
//! Files: loading (load.rs: weights.rs, then workspaces, KV pool, capture.rs's decode graphs),
//! one step (forward.rs: meta.rs's metadata, body.rs's kernels and GEMMs), the options
//! (options.rs) and what every forward works in (state.rs).
mod body;
mod capture;
mod forward;
mod load;
mod meta;
mod options;
mod state;
mod weights;

use std::sync::Mutex;

use cudarc::driver::{CudaSlice, DevicePtr};

use super::device::{guarded, Gpu};
use super::gemm::Gemm;
use super::kernels::Kernels;
use super::plan;
use crate::config::ModelConfig;
use crate::kv::cache::KvCache;
use crate::model::{ForwardSeq, Model};

pub use options::CudaOptions;
pub(crate) use state::AttnMode;
use state::State;
pub use weights::WeightSource;

/// Splits of decode attention the workspace is sized for.
const MAX_SPLITS: usize = 64;
/// Logit rows computed per lm_head GEMM (all_logits prefill runs in chunks of this).
const LOGIT_ROWS: usize = 256;

/// One decoder layer on the GPU: its weights (weights.rs) and its K and V tables of the pool.
struct Layer {
    ln_in: CudaSlice<u16>,
    qkv: CudaSlice<u16>,
    o: CudaSlice<u16>,
    ln_post: CudaSlice<u16>,
    gate_up: CudaSlice<u16>,
    down: CudaSlice<u16>,
    k_cache: CudaSlice<u16>,
    v_cache: CudaSlice<u16>,
}

pub struct CudaLlama {
    config: ModelConfig,
    gpu: Gpu,
    kernels: Kernels,
    gemm: Gemm,
    embed: CudaSlice<u16>,
    lm_head: Option<CudaSlice<u16>>,
    final_norm: CudaSlice<u16>,
    rope_table: CudaSlice<f32>,
    layers: Vec<Layer>,
    num_slots: usize,
    context_length: usize,
    weight_bytes: usize,
    state: Mutex<State>,
    startup_log: Vec<String>,
}

// Safety: every GPU object is used only under `state`'s lock or read-only after load; the CUDA
// context is bound to whichever thread calls in (cudarc binds it per call).
unsafe impl Send for CudaLlama {}
unsafe impl Sync for CudaLlama {}

fn err<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e:?}")
}

pub(crate) fn ptr<T>(slice: &CudaSlice<T>, gpu: &Gpu) -> u64 {
    let (p, _sync) = slice.device_ptr(&gpu.stream);
    p
}

impl CudaLlama {
    /// KV slots of the GPU pool: the scheduler's allocator must use exactly this many.
    pub fn num_slots(&self) -> usize {
        self.num_slots
    }

    pub fn device_info(&self) -> &plan::DeviceInfo {
        &self.gpu.info
    }

    /// Lines for the engine's log (device, weights, KV pool, graph capture), SGLang wording.
    pub fn startup_log(&self) -> &[String] {
        &self.startup_log
    }

    /// Like `Model::forward` but returns the error instead of panicking.
    pub fn try_forward(&self, batch: &[ForwardSeq]) -> Result<Vec<f32>, String> {
        guarded(|| self.forward_checked(batch)).and_then(|r| r)
    }
}

impl Model for CudaLlama {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The CPU `kv` is not touched: K/V live in the GPU pool (see the module docs).
    fn forward(&self, batch: &[ForwardSeq], _kv: &mut KvCache) -> Vec<f32> {
        // The trait has no error channel; the FFI layer catches this panic and reports it.
        self.try_forward(batch).unwrap_or_else(|e| panic!("CUDA forward failed: {e}"))
    }

    fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }
}
