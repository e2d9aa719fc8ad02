//! The model interface the scheduler drives, and the architectures behind it.
//!
//! Contract between the scheduler (src/sched, src/runner.rs) and a model:
//! - The scheduler owns the KV slot allocation; a model only reads and writes `KvCache` rows
//!   at the slot indices it is given.
//! - One `forward` call runs a whole batch (prefill chunks and decode steps mixed); projections
//!   run over all the batch's tokens at once, attention per sequence.

use crate::config::ModelConfig;
use crate::kv::cache::KvCache;

/// One sequence's part of a batched forward pass.
pub struct ForwardSeq<'a> {
    /// Tokens whose KV is computed this step (a prefill chunk, or one decode token).
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`; KV for positions `0..start_pos` is already in the cache.
    pub start_pos: usize,
    /// KV slot of every position `0..start_pos + tokens.len()` (len must equal that).
    pub slots: &'a [u32],
    /// true: return a logits row for every token in `tokens` (input logprobs);
    /// false: only for the last one.
    pub all_logits: bool,
}

/// A loaded model, ready to run batches.
pub trait Model: Send + Sync {
    fn config(&self) -> &ModelConfig;
    /// Runs one batched forward pass. Writes the new tokens' K/V into `kv` at their slots and
    /// returns logits rows (`vocab_size` floats each), concatenated in batch order: for each
    /// sequence `tokens.len()` rows when `all_logits`, else one row.
    fn forward(&self, batch: &[ForwardSeq], kv: &mut KvCache) -> Vec<f32>;
    /// Bytes held by the weights (resident or mapped), for memory planning and logs.
    fn weight_bytes(&self) -> usize;
    /// Like `forward`, but an invalid batch (slot count, slot or token out of range, KV shape)
    /// is an error instead of an empty result.
    fn try_forward(&self, batch: &[ForwardSeq], kv: &mut KvCache) -> Result<Vec<f32>, String> {
        Ok(self.forward(batch, kv))
    }
    /// Weight storage dtype for logs and server info ("bfloat16", "float32", "float16").
    fn weight_dtype(&self) -> &'static str {
        "float32"
    }
    /// The memory a batch-1 decode step reads in full: every dense weight matrix's bytes (the
    /// embedding table only where it doubles as the LM head). Empty where not known (quantized
    /// weights, other backends). Benchmarks time reading it as the step's bandwidth floor.
    fn decode_weight_regions(&self) -> Vec<&[u8]> {
        Vec::new()
    }
    /// Which CPU kernel path runs ("avx512", "avx2", "scalar").
    fn kernel_isa(&self) -> &'static str {
        "scalar"
    }
}

/// `forward` for models whose real entry is `try_forward`: an invalid batch is logged and gives
/// no logits (the runner then fails that batch's requests).
pub fn forward_or_log<M: Model + ?Sized>(model: &M, batch: &[ForwardSeq], kv: &mut KvCache) -> Vec<f32> {
    model.try_forward(batch, kv).unwrap_or_else(|e| {
        eprintln!("forward rejected: {e}");
        Vec::new()
    })
}

pub mod attention;
pub mod attention_llamacpp;
pub mod llama;
pub mod rope;
pub mod weight;

/// The loader's entry point, re-exported: `load_model(&LoadOptions) -> Result<Box<dyn Model>, String>`.
pub use crate::loader::{load_model, LoadOptions};
