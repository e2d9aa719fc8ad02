//! llama.cpp's CPU attention with its default F16 KV cache and flash attention (ggml's
//! `flash_attn_ext_f16`, one query row at a time): Q, K and V rounded to f16, scores f32 dot
//! products of those in ggml's order, an online softmax with V summed into an f16 accumulator
//! that is rounded after every position (rescaled, then rounded, whenever the running max rises),
//! divided by the f32 sum at the end. `attend` runs it with the AVX-512 kernel
//! (`backend::cpu::avx512_attn_f16acc`, bit for bit the same) where the CPU and head size allow,
//! else with `attend_reference`, the scalar oracle the kernel's tests compare against.
//!
//! Why: issue #10 wants our greedy tokens equal to llama.cpp's default, and that default's f16
//! accumulation moves SmolLM2's logits by up to ~0.2 against llama.cpp's own F32 path (docs/gguf.md).
//!
//! Which rows: llama.cpp itself takes this path only for batches of fewer than 64 query rows
//! (`GGML_FA_TILE_Q`; decode included, up to 512 KV cells); bigger prompt batches go through its
//! tiled kernel, f32 throughout (Q unrounded, K/V read from the f16 cache, f32 sums). `attend`
//! follows the same rule per sequence: a sequence with at least `TILED_ROWS` rows in this pass takes
//! our f32 attention (`attention::attend`, over the same f16-rounded cache), the others this path.
//! So, as in llama.cpp, a row's arithmetic depends on how many of its sequence's tokens were
//! computed in the same pass (a cached prefix or a prefill chunk changes it) but, by taking the
//! rule per sequence rather than per batch, not on which other requests shared the pass. The model
//! rounds K and V to f16 as it writes them to the cache in this mode (`round_kv`). llama.cpp's
//! split-KV decode for 512 cells and more is not copied.

use super::attention::{Heads, SeqSpan};
use crate::backend::cpu::expf_glibc::expf;
use crate::backend::cpu::{Isa, Kernels, SharedOut};
use crate::gguf::quants::round_f16;
use rayon::prelude::*;

/// Whether `LLM_ATTN_LLAMACPP_F16` asks for this path ("1") or against it ("0"); None when unset.
pub fn requested() -> Option<bool> {
    static ASKED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    *ASKED.get_or_init(|| std::env::var("LLM_ATTN_LLAMACPP_F16").ok().map(|v| v == "1"))
}

/// Whether the fast kernel takes this head size on this CPU (else `attend` runs the scalar oracle).
pub fn fast(kernels: &Kernels, head_dim: usize) -> bool {
    cfg!(target_arch = "x86_64") && kernels.isa == Isa::Avx512 && avx512_f16acc_supports(head_dim)
}

#[cfg(target_arch = "x86_64")]
fn avx512_f16acc_supports(head_dim: usize) -> bool {
    crate::backend::cpu::avx512_attn_f16acc::supports(head_dim)
}
#[cfg(not(target_arch = "x86_64"))]
fn avx512_f16acc_supports(_: usize) -> bool {
    false
}

/// K and V values as this path stores them: rounded to f16 (kept in f32), as llama.cpp's copy
/// into its F16 cache rounds them (to nearest, ties to even).
pub fn round_kv(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("f16c") {
        // SAFETY: F16C is present; the loads and stores stay inside `values`.
        unsafe { round_kv_f16c(values) };
        return;
    }
    values.iter_mut().for_each(|x| *x = round_f16(*x));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn round_kv_f16c(values: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = values.chunks_exact_mut(8);
    for c in &mut chunks {
        let x = _mm256_loadu_ps(c.as_ptr());
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
    }
    chunks.into_remainder().iter_mut().for_each(|x| *x = round_f16(*x));
}

/// A sequence with this many rows in one pass takes the f32 path, as llama.cpp's tiled kernel.
pub const TILED_ROWS: usize = 64;

/// Below this many query-position pairs (all heads) a call runs on the calling thread.
const SERIAL_PAIRS: usize = 1 << 16;

/// `attention::attend`'s contract (causal GQA over each sequence's slots), llama.cpp's arithmetic;
/// K and V in the caches already rounded by `round_kv`.
pub fn attend(kernels: &Kernels, heads: Heads, spans: &[SeqSpan], q: &[f32], k_cache: &[f32], v_cache: &[f32], out: &mut [f32]) {
    let (tiled, short): (Vec<SeqSpan>, Vec<SeqSpan>) = spans.iter().partition(|s| s.len >= TILED_ROWS);
    if !tiled.is_empty() {
        super::attention::attend(kernels, heads, &tiled, q, k_cache, v_cache, out);
    }
    if !short.is_empty() {
        attend_one_chunk(kernels, heads, &short, q, k_cache, v_cache, out);
    }
}

/// ggml's one-chunk flash attention (f16 accumulation) for every row of `spans`.
fn attend_one_chunk(kernels: &Kernels, heads: Heads, spans: &[SeqSpan], q: &[f32], k_cache: &[f32], v_cache: &[f32], out: &mut [f32]) {
    let Heads { num_heads, num_kv_heads, head_dim: d } = heads;
    if !fast(kernels, d) {
        return attend_reference(heads, spans, q, k_cache, v_cache, out);
    }
    #[cfg(target_arch = "x86_64")]
    {
        use crate::backend::cpu::avx512_attn_block::KvRows;
        use crate::backend::cpu::avx512_attn_f16acc::attend_row;
        let (q_dim, kv_dim, group) = (num_heads * d, num_kv_heads * d, num_heads / num_kv_heads);
        let scale = 1.0 / (d as f32).sqrt();
        let mut items = Vec::new();
        let mut pairs = 0;
        for (si, span) in spans.iter().enumerate() {
            for i in 0..span.len {
                pairs += (span.start_pos + i + 1) * num_heads;
                items.extend((0..num_kv_heads).map(|kvh| (si, i, kvh)));
            }
        }
        let table_len = k_cache.len().min(v_cache.len());
        let out_ptr = SharedOut(out.as_mut_ptr());
        let run = |&(si, i, kvh): &(usize, usize, usize), scratch: &mut Vec<f32>| {
            let span = &spans[si];
            let slots = &span.slots[..span.start_pos + i + 1];
            assert!(slots.iter().all(|&s| s as usize * kv_dim + (kvh + 1) * d <= table_len), "attention: slot outside the KV table");
            let at = (span.first_row + i) * q_dim + kvh * group * d;
            assert!(at + group * d <= q.len().min(out.len()));
            let kv = KvRows { k: k_cache.as_ptr(), v: v_cache.as_ptr(), slots, stride: kv_dim, offset: kvh * d };
            // SAFETY: AVX-512 and the head size were checked (`fast`), every row and the q/out
            // ranges were bounds-checked above, and no other item writes this row's heads of kvh.
            unsafe { attend_row(q.as_ptr().add(at), group, d, kv, scale, out_ptr.at(at), scratch) };
        };
        if pairs < SERIAL_PAIRS || rayon::current_num_threads() == 1 {
            let mut scratch = Vec::new();
            items.iter().for_each(|it| run(it, &mut scratch));
        } else {
            items.par_iter().for_each_init(Vec::new, |scratch, it| run(it, scratch));
        }
    }
}

/// The scalar oracle: one query head and one position at a time, exactly as ggml steps.
pub fn attend_reference(heads: Heads, spans: &[SeqSpan], q: &[f32], k_cache: &[f32], v_cache: &[f32], out: &mut [f32]) {
    let Heads { num_heads, num_kv_heads, head_dim: d } = heads;
    let (q_dim, kv_dim, group) = (num_heads * d, num_kv_heads * d, num_heads / num_kv_heads);
    let scale = 1.0 / (d as f32).sqrt();
    let mut acc = vec![0f32; d];
    for span in spans {
        for i in 0..span.len {
            let row = span.first_row + i;
            for h in 0..num_heads {
                let kvh = h / group;
                let qh: Vec<f32> = q[row * q_dim + h * d..][..d].iter().map(|&x| round_f16(x)).collect();
                acc.fill(0.0);
                let (mut max, mut sum) = (f32::NEG_INFINITY, 0f32);
                for &slot in &span.slots[..span.start_pos + i + 1] {
                    let at = slot as usize * kv_dim + kvh * d;
                    let s = dot_f16(&qh, &k_cache[at..at + d]) * scale;
                    // ggml: a new max rescales the accumulator (and the sum) and adds V with weight 1.
                    let (mut ms, mut vs) = (1f32, 1f32);
                    if s > max {
                        ms = expf(max - s);
                        max = s;
                        acc.iter_mut().for_each(|a| *a = round_f16(*a * ms));
                    } else {
                        vs = expf(s - max);
                    }
                    for (a, &v) in acc.iter_mut().zip(&v_cache[at..at + d]) {
                        *a = round_f16(round_f16(v).mul_add(vs, *a));
                    }
                    sum = sum * ms + vs;
                }
                let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
                for (o, a) in out[row * q_dim + h * d..][..d].iter_mut().zip(&acc) {
                    *o = a * inv;
                }
            }
        }
    }
}

/// ggml_vec_dot_f16's sum on AVX-512 for q already rounded to f16: exact products, added in four
/// 16-lane accumulators over 64-value steps, folded pairwise, then the 16 lanes by halves.
fn dot_f16(q: &[f32], k: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    for (l, lane) in lanes.iter_mut().enumerate() {
        let mut part = [0f32; 4];
        for c in (0..q.len()).step_by(64) {
            for (a, p) in part.iter_mut().enumerate() {
                let t = c + a * 16 + l;
                if t < q.len() {
                    *p += q[t] * round_f16(k[t]);
                }
            }
        }
        *lane = (part[0] + part[2]) + (part[1] + part[3]);
    }
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            lanes[l] += lanes[l + w];
        }
    }
    lanes[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 kernel gives every bit the scalar oracle gives, over head sizes 64-256, GQA
    /// groups 1-5, a cached prefix (start_pos > 0), slots out of order and a second sequence.
    #[test]
    fn fast_kernel_equals_reference_bit_for_bit() {
        let kernels = Kernels::detect();
        if !fast(&kernels, 64) {
            eprintln!("no AVX-512 here: the fast kernel is not used, nothing to compare");
            return;
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        for (d, kv_heads, group, lens) in [(64, 3, 3, [37, 5]), (128, 2, 2, [20, 3]), (64, 1, 5, [70, 1]), (192, 1, 1, [17, 16]), (256, 2, 1, [33, 2])] {
            let heads = Heads { num_heads: kv_heads * group, num_kv_heads: kv_heads, head_dim: d };
            let kv_dim = kv_heads * d;
            // Sequence 0 has 12 cached positions before its `lens[0]` new rows; sequence 1 none.
            let cached = [12usize, 0];
            let total: usize = (0..2).map(|s| cached[s] + lens[s]).sum();
            let mut order: Vec<u32> = (0..total as u32).collect();
            order.reverse();
            order.swap(3, 17);
            let slots = [&order[..cached[0] + lens[0]], &order[cached[0] + lens[0]..]];
            let spans = [
                SeqSpan { first_row: 0, len: lens[0], start_pos: cached[0], slots: slots[0] },
                SeqSpan { first_row: lens[0], len: lens[1], start_pos: 0, slots: slots[1] },
            ];
            let rows = lens[0] + lens[1];
            // Scores of a few units make softmax weights spread over many positions.
            let q: Vec<f32> = (0..rows * heads.num_heads * d).map(|_| rnd() * 1.5).collect();
            let mut k: Vec<f32> = (0..total * kv_dim).map(|_| rnd()).collect();
            let mut v: Vec<f32> = (0..total * kv_dim).map(|_| rnd() * 3.0).collect();
            round_kv(&mut k);
            round_kv(&mut v);
            let mut want = vec![0f32; rows * heads.num_heads * d];
            let mut got = vec![1f32; rows * heads.num_heads * d];
            attend_reference(heads, &spans, &q, &k, &v, &mut want);
            attend_one_chunk(&kernels, heads, &spans, &q, &k, &v, &mut got);
            let differ = want.iter().zip(&got).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "d {d}, group {group}: {differ} of {} outputs differ", want.len());
            // `attend` itself: the long sequence as llama.cpp's tiled kernel would (f32 attention),
            // the short one through this path.
            let mut mixed = vec![2f32; rows * heads.num_heads * d];
            attend(&kernels, heads, &spans, &q, &k, &v, &mut mixed);
            let mut f32_path = vec![3f32; rows * heads.num_heads * d];
            crate::model::attention::attend(&kernels, heads, &spans, &q, &k, &v, &mut f32_path);
            let split = lens[0] * heads.num_heads * d;
            let (long, short) = if lens[0] >= TILED_ROWS { (&f32_path[..split], &want[split..]) } else { (&want[..split], &want[split..]) };
            assert!(long.iter().chain(short).zip(&mixed).all(|(a, b)| a.to_bits() == b.to_bits()), "d {d}: attend took the wrong path");
            assert_ne!(&f32_path[..split], &want[..split], "the f32 path rounds differently");
        }
    }

    /// The F16C rounding of the cache equals the scalar one: every 4099th float, ties, f16
    /// subnormals and overflow included (lengths not a multiple of 8 take the scalar tail).
    #[test]
    fn round_kv_equals_scalar_rounding() {
        let mut xs: Vec<f32> = (0..u32::MAX / 4099).map(|i| f32::from_bits(i * 4099)).filter(|x| !x.is_nan()).collect();
        xs.extend([1.0 + 1.0 / 2048.0, 1.0 + 3.0 / 2048.0, 65504.0, 65520.0, 1e-7, -6.0e-8, -0.0]);
        let want: Vec<u32> = xs.iter().map(|&x| round_f16(x).to_bits()).collect();
        round_kv(&mut xs);
        assert!(xs.iter().zip(&want).all(|(a, b)| a.to_bits() == *b));
    }

    /// Close to exact attention (f64) within f16 rounding, and not the f32 result: the rounding happens.
    #[test]
    fn tracks_exact_attention_within_f16_rounding() {
        let (n, heads, d) = (24usize, 2usize, 64usize);
        let h = Heads { num_heads: heads, num_kv_heads: 1, head_dim: d };
        let val = |i: usize, salt: usize| (((i * 7919 + salt * 104729) % 1000) as f32 / 500.0 - 1.0) * 0.7;
        let q: Vec<f32> = (0..n * heads * d).map(|i| val(i, 1)).collect();
        let k: Vec<f32> = (0..n * d).map(|i| val(i, 2)).collect();
        let v: Vec<f32> = (0..n * d).map(|i| val(i, 3)).collect();
        let slots: Vec<u32> = (0..n as u32).rev().collect(); // any slot order: positions map through it
        let spans = [SeqSpan { first_row: 0, len: n, start_pos: 0, slots: &slots }];
        let mut out = vec![0f32; n * heads * d];
        attend_reference(h, &spans, &q, &k, &v, &mut out);
        let (mut worst, mut any_diff) = (0f64, false);
        for i in 0..n {
            for hh in 0..heads {
                let qh = &q[(i * heads + hh) * d..][..d];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let at = slots[j] as usize * d;
                        qh.iter().zip(&k[at..at + d]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = w.iter().sum();
                for dd in 0..d {
                    let exact: f64 = (0..=i).map(|j| w[j] * v[slots[j] as usize * d + dd] as f64).sum::<f64>() / total;
                    let got = out[(i * heads + hh) * d + dd] as f64;
                    worst = worst.max((got - exact).abs());
                    any_diff |= (got - exact).abs() > 1e-6;
                }
            }
        }
        assert!(worst < 5e-3, "llama.cpp-style attention off by {worst}");
        assert!(any_diff, "no f16 rounding visible");
    }
}
