//! Causal grouped-query attention of one forward pass over the KV slots each sequence names.

use crate::backend::cpu::{Kernels, KvTable, SharedOut};
use rayon::prelude::*;

/// Shape of the attention heads.
#[derive(Clone, Copy)]
pub struct Heads {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// One sequence's queries in the batch: rows `first_row..first_row + len` of `q`.
#[derive(Clone, Copy)]
pub struct SeqSpan<'a> {
    pub first_row: usize,
    pub len: usize,
    pub start_pos: usize,
    pub slots: &'a [u32],
}


/// Below this many multiply-adds (scores plus V sum, whole batch) attention runs on the calling
/// thread: a tiny model's step (stories260K: ~0.6M per layer at 64 streams) costs less than waking
/// the pool and joining it, and the other cores are busy serving HTTP anyway.
const SERIAL_WORK: usize = 1 << 21;

/// out[row, head] = softmax(q·Kᵀ / sqrt(d)) · V over positions 0..=pos of the row's sequence.
/// The new tokens' K/V must already be in `k_cache`/`v_cache` at their slots.
/// Where the block kernel applies (`attention_block_rows`), a work item is a block of a sequence's
/// rows for one KV head, decode rows (blocks of one) included: its arithmetic for a query does not
/// depend on the block around it but differs from the per-row kernels', and a request's logits must
/// not depend on how its tokens were batched, cached or retracted (tests/engine_core_test.ts checks
/// logprobs bit for bit). Elsewhere an item is one row for a run of KV heads: the GQA group's query
/// heads share every K/V row it reads; the run is one head (a single decode token still spreads
/// over the heads' tasks) unless the kernel reads whole rows for small heads, then all of them.
/// Multi-row blocks run one per task, other items in a few coarse chunks (one scratch buffer
/// each), or everything on this thread when small.
pub fn attend(kernels: &Kernels, heads: Heads, spans: &[SeqSpan], q: &[f32], k_cache: &[f32], v_cache: &[f32], out: &mut [f32]) {
    let Heads { num_heads, num_kv_heads, head_dim } = heads;
    let q_dim = num_heads * head_dim;
    let kv_dim = num_kv_heads * head_dim;
    let group = num_heads / num_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    // Item = (span, first row, rows, first KV head): rows > 0 is a block of that many rows for one
    // KV head (`attend_block`), rows == 0 one row for a run of KV heads (`attend_heads`).
    let mut items: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut work = 0usize;
    let run_len = kernels.attention_heads_per_call(head_dim, num_kv_heads);
    let block_rows = kernels.attention_block_rows(head_dim, group);
    for (si, span) in spans.iter().enumerate() {
        for i in 0..span.len {
            work += (span.start_pos + i + 1) * 2 * num_heads * head_dim;
        }
        match block_rows {
            Some(b) => {
                for i in (0..span.len).step_by(b) {
                    for kvh in 0..num_kv_heads {
                        items.push((si, i, b.min(span.len - i), kvh));
                    }
                }
            }
            _ => {
                for i in 0..span.len {
                    for kvh in (0..num_kv_heads).step_by(run_len) {
                        items.push((si, i, 0, kvh));
                    }
                }
            }
        }
    }
    let out_ptr = SharedOut(out.as_mut_ptr());
    let run = |&(si, i, rows, kvh): &(usize, usize, usize, usize), scratch: &mut Vec<f32>| {
        let span = &spans[si];
        let row = span.first_row + i;
        let at = row * q_dim + kvh * group * head_dim;
        if rows > 0 {
            // SAFETY: the block reads q and writes out at rows row..row+rows, heads of KV head kvh
            // only (inside both: spans lie in the batch); no other item writes those.
            unsafe {
                let kv = KvTable { k: k_cache, v: v_cache, slots: span.slots, stride: kv_dim, offset: kvh * head_dim };
                kernels.attend_block(q[at..].as_ptr(), q_dim, rows, group, head_dim, kv, span.start_pos + i, scale, out_ptr.at(at), scratch)
            };
            return;
        }
        let visible = span.start_pos + i + 1;
        let len = run_len * group * head_dim;
        // Safety: each item writes only its own heads of its own row.
        let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.at(at), len) };
        let slots = &span.slots[..visible];
        kernels.attend_heads(&q[at..at + len], run_len, group, k_cache, v_cache, slots, kv_dim, kvh * head_dim, scale, dst, scratch);
    };
    let threads = rayon::current_num_threads().max(1);
    if work < SERIAL_WORK || threads == 1 || items.len() == 1 {
        let mut scratch = Vec::new();
        items.iter().for_each(|it| run(it, &mut scratch));
    } else {
        // Prefill blocks are big and causal (later rows see more positions): one per task, so the
        // threads even out; single rows (decode) go in a few coarse chunks.
        let chunk = if items.iter().any(|it| it.2 > 1) { 1 } else { items.len().div_ceil(threads * 4).max(1) };
        items.par_chunks(chunk).for_each_init(Vec::new, |scratch, c| c.iter().for_each(|it| run(it, scratch)));
    }
}
