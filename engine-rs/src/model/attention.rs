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
pub fn attend(kernels: &Kernels, heads: Heads, spans: &[SeqSpan], q: &[f32], k_cache: &[f32], v_cache: &[f32], out: &mut [f32]) {
    let Heads { num_heads, num_kv_heads, head_dim } = heads;
    let q_dim = num_heads * head_dim;
    let kv_dim = num_kv_heads * head_dim;
    let group = num_heads / num_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    // One task per (query row, head); rows of a span map back to their sequence.
    let mut tasks: Vec<(usize, usize)> = Vec::new();
    for (si, span) in spans.iter().enumerate() {
        for i in 0..span.len {
            tasks.push((si, i));
        }
    }
    let out_ptr = SharedOut(out.as_mut_ptr());
    let run = |&(si, i): &(usize, usize)| {
        let span = &spans[si];
        let row = span.first_row + i;
        let visible = span.start_pos + i + 1;
        let mut scores = vec![0.0f32; visible];
        let mut acc = vec![0.0f32; head_dim];
        for h in 0..num_heads {
            let qh = &q[row * q_dim + h * head_dim..][..head_dim];
            let kv_off = (h / group) * head_dim;
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                let base = span.slots[j] as usize * kv_dim + kv_off;
                *s = kernels.dot(qh, &k_cache[base..base + head_dim]) * scale;
                max = max.max(*s);
            }
            let mut sum = 0.0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (j, &p) in scores.iter().enumerate() {
                let base = span.slots[j] as usize * kv_dim + kv_off;
                for (a, &v) in acc.iter_mut().zip(&v_cache[base..base + head_dim]) {
                    *a += p * v;
                }
            }
            let inv = 1.0 / sum;
            let dst = out_ptr.at(row * q_dim + h * head_dim);
            for (d, &a) in acc.iter().enumerate() {
                // Safety: each (row, head) slice is written by exactly one task.
                unsafe { *dst.add(d) = a * inv };
            }
        }
    };
    if tasks.len() > 1 {
        tasks.par_iter().for_each(run);
    } else {
        tasks.iter().for_each(run);
    }
}
