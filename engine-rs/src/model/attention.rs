//! Causal grouped-query attention of one forward pass over the KV slots each sequence names.

use crate::backend::cpu::Kernels;
use rayon::prelude::*;

/// Shape of the attention heads.
#[derive(Clone, Copy)]
pub struct Heads {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// One sequence's queries in the batch: rows `first_row..first_row + len` of `q`.
pub struct SeqSpan<'a> {
    pub first_row: usize,
    pub len: usize,
    pub start_pos: usize,
    pub slots: &'a [u32],
}

#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}
impl SharedOut {
    fn at(self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

/// out[row, head] = softmax(q·Kᵀ / sqrt(d)) · V over positions 0..=pos of the row's sequence.
/// The new tokens' K/V must already be in `k_cache`/`v_cache` at their slots.
/// One task per (query row, KV head): the task's query heads (the GQA group) share every K/V row
/// it reads, and a single decode token still spreads over num_kv_heads tasks.
pub fn attend(kernels: &Kernels, heads: Heads, spans: &[SeqSpan], q: &[f32], k_cache: &[f32], v_cache: &[f32], out: &mut [f32]) {
    let Heads { num_heads, num_kv_heads, head_dim } = heads;
    let q_dim = num_heads * head_dim;
    let kv_dim = num_kv_heads * head_dim;
    let group = num_heads / num_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
    for (si, span) in spans.iter().enumerate() {
        for i in 0..span.len {
            for kvh in 0..num_kv_heads {
                tasks.push((si, i, kvh));
            }
        }
    }
    let out_ptr = SharedOut(out.as_mut_ptr());
    let run = |&(si, i, kvh): &(usize, usize, usize)| {
        let span = &spans[si];
        let row = span.first_row + i;
        let visible = span.start_pos + i + 1;
        let kv_off = kvh * head_dim;
        let first_head = kvh * group;
        let slots = &span.slots[..visible];
        // scores[g * visible + j]: query head first_head + g against position j.
        let mut scores = vec![0.0f32; group * visible];
        for (g, s) in scores.chunks_exact_mut(visible).enumerate() {
            let qh = &q[row * q_dim + (first_head + g) * head_dim..][..head_dim];
            kernels.dot_rows(qh, k_cache, slots, kv_dim, kv_off, scale, s);
        }
        let mut inv_sums = vec![0.0f32; group];
        for (g, s) in scores.chunks_exact_mut(visible).enumerate() {
            let max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = 0.0f32;
            for v in s.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            inv_sums[g] = 1.0 / sum;
        }
        let mut acc = vec![0.0f32; group * head_dim];
        for (g, a) in acc.chunks_exact_mut(head_dim).enumerate() {
            kernels.sum_rows(&scores[g * visible..(g + 1) * visible], v_cache, slots, kv_dim, kv_off, a);
        }
        for (g, a) in acc.chunks_exact(head_dim).enumerate() {
            let dst = out_ptr.at(row * q_dim + (first_head + g) * head_dim);
            for (d, &v) in a.iter().enumerate() {
                // Safety: each (row, head) slice is written by exactly one task.
                unsafe { *dst.add(d) = v * inv_sums[g] };
            }
        }
    };
    if tasks.len() > 1 {
        tasks.par_iter().for_each(run);
    } else {
        tasks.iter().for_each(run);
    }
}
