//! llama.cpp's CPU flash attention over its default F16 KV cache (ggml's `flash_attn_ext_f16`, one
//! query row at a time), at vector speed and bit for bit: the scalar oracle is
//! `model::attention_llamacpp::attend_reference`, and tests compare every output bit with it.
//!
//! The arithmetic reproduced, per query head: Q rounded to f16; each score the f32 dot product of
//! f16 values in ggml's AVX-512 order (exact products in four 16-lane accumulators per 64 values,
//! folded (0+2)+(1+3), then the 16 lanes by halves) times the scale; an online softmax in position
//! order where a new maximum rescales the f16 accumulator by expf(old - new) and adds V with weight
//! 1, any other position adds V with weight expf(s - max); the accumulator rounded to f16 after every
//! step; the f32 sum updated as sum·ms + vs; the result the accumulator times 1/sum.
//!
//! How it is fast: every input of an exp is known once the scores are (the running max is a
//! prefix max), so the work splits into three passes per row: scores for 16 positions at a time (a
//! transposing reduction keeps ggml's add order while lanes hold positions), the max scan and the
//! exps 16 lanes at a time (`expf_glibc::expf16`, equal to libm's), and the one pass that must stay
//! sequential, the f16-rounded V sum, with the GQA group's heads interleaved so their dependency
//! chains overlap.
//!
//! The K and V tables must already hold f16-rounded values (the model rounds them when it writes
//! the cache in this mode); Q is rounded here.

use super::avx512_attn_block::KvRows;
use super::expf_glibc::expf16;
use std::arch::x86_64::*;

const LANES: usize = 16;

/// Whether the kernel takes this head size: whole 64-value steps of ggml's dot, at most 256.
pub fn supports(head_dim: usize) -> bool {
    head_dim % 64 == 0 && (64..=256).contains(&head_dim)
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn round_f16(x: __m512) -> __m512 {
    _mm512_cvtph_ps(_mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x))
}

/// For one query row and the `group` query heads that share one KV head: `out[g*d..][..d]` =
/// llama.cpp's attention of `q[g*d..][..d]` over the K/V rows `kv.slots` names, in that order.
///
/// # Safety
/// The CPU has avx512f; `supports(d)`; q and out hold group·d values; every row of `kv` lies inside
/// its tables; `kv.slots` is not empty.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn attend_row(q: *const f32, group: usize, d: usize, kv: KvRows, scale: f32, out: *mut f32, scratch: &mut Vec<f32>) {
    let n = kv.slots.len();
    let padded = n.div_ceil(LANES) * LANES;
    // Per head: `padded` scores, then the same number of exp values; then the new-max flags.
    let per_head = 2 * padded;
    scratch.clear();
    scratch.resize(group * per_head + group * padded.div_ceil(2 * LANES), 0.0);
    let (values, flag_words) = scratch.split_at_mut(group * per_head);
    let flags = flag_words.as_mut_ptr() as *mut u16;
    for g in 0..group {
        let s = values.as_mut_ptr().add(g * per_head);
        match d / 64 {
            1 => scores::<1>(q.add(g * d), kv, scale, s),
            2 => scores::<2>(q.add(g * d), kv, scale, s),
            3 => scores::<3>(q.add(g * d), kv, scale, s),
            _ => scores::<4>(q.add(g * d), kv, scale, s),
        }
        softmax_factors(s, n, s.add(padded), flags.add(g * padded / LANES));
    }
    let head = |g: usize| Head { exps: values.as_ptr().add(g * per_head + padded), flags: flags.add(g * padded / LANES), out: out.add(g * d) };
    let mut g = 0;
    while g < group {
        let left = group - g;
        g += match (d / LANES, left) {
            (4, 1) => v_pass::<1, 4>([head(g)], kv),
            (4, 2) => v_pass::<2, 4>([head(g), head(g + 1)], kv),
            (4, 3) => v_pass::<3, 4>([head(g), head(g + 1), head(g + 2)], kv),
            (4, _) => v_pass::<4, 4>([head(g), head(g + 1), head(g + 2), head(g + 3)], kv),
            (8, 1) => v_pass::<1, 8>([head(g)], kv),
            (8, _) => v_pass::<2, 8>([head(g), head(g + 1)], kv),
            (12, _) => v_pass::<1, 12>([head(g)], kv),
            _ => v_pass::<1, 16>([head(g)], kv),
        };
    }
}

/// Scores of one query head (d = 64·STEPS values at `q`) against every row of `kv`, times
/// `scale`, written to `s[..n]`; `s[n..]` up to the next multiple of 16 gets -inf.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn scores<const STEPS: usize>(q: *const f32, kv: KvRows, scale: f32, s: *mut f32) {
    let n = kv.slots.len();
    let qv: [[__m512; 4]; STEPS] = std::array::from_fn(|t| std::array::from_fn(|a| round_f16(_mm512_loadu_ps(q.add(t * 64 + a * LANES)))));
    for j0 in (0..n).step_by(LANES) {
        // Slot i of the reduction comes out in lane (i % 4) * 4 + i / 4: load position j0 + that.
        let y: [__m512; LANES] = std::array::from_fn(|i| {
            let j = (j0 + (i % 4) * 4 + i / 4).min(n - 1);
            let k = kv.k.add(kv.row(j));
            let p = |t: usize, a: usize| _mm512_loadu_ps(k.add(t * 64 + a * LANES));
            // ggml's accumulators: exact products first (a product of f16 values fits f32), then
            // one FMA per further 64 values; with one step, acc0 + acc2 is one FMA too.
            if STEPS == 1 {
                let even = _mm512_fmadd_ps(qv[0][0], p(0, 0), _mm512_mul_ps(qv[0][2], p(0, 2)));
                let odd = _mm512_fmadd_ps(qv[0][1], p(0, 1), _mm512_mul_ps(qv[0][3], p(0, 3)));
                return _mm512_add_ps(even, odd);
            }
            let mut acc: [__m512; 4] = std::array::from_fn(|a| _mm512_mul_ps(qv[0][a], p(0, a)));
            for (t, qt) in qv.iter().enumerate().skip(1) {
                for a in 0..4 {
                    acc[a] = _mm512_fmadd_ps(qt[a], p(t, a), acc[a]);
                }
            }
            _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]))
        });
        let dots = reduce_lanes(&y);
        let valid = if n - j0 >= LANES { u16::MAX } else { (1u16 << (n - j0)) - 1 };
        let scaled = _mm512_mask_blend_ps(valid, _mm512_set1_ps(f32::NEG_INFINITY), _mm512_mul_ps(dots, _mm512_set1_ps(scale)));
        _mm512_storeu_ps(s.add(j0), scaled);
    }
}

/// The 16 lane sums of 16 vectors, each summed as `_mm512_reduce_add_ps` does (lane l + lane l+8,
/// then l + l+4, l + l+2, l + l+1), into one vector: vector i's sum lands in lane (i % 4) * 4 + i / 4.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn reduce_lanes(y: &[__m512; LANES]) -> __m512 {
    // Halves: a pair's lower 256 bits plus its upper 256 bits, two vectors per register.
    let t: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (y[2 * i], y[2 * i + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b))
    });
    // Quarters: each 128-bit lane now one vector's four partials (lane l + lane l+4).
    let u: [__m512; 4] = std::array::from_fn(|i| {
        let (a, b) = (t[2 * i], t[2 * i + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(a, b), _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b))
    });
    // Pairs within 128 bits (l + l+2), then the last add (l + l+1).
    let v: [__m512; 2] = std::array::from_fn(|i| {
        let (a, b) = (u[2 * i], u[2 * i + 1]);
        _mm512_add_ps(_mm512_shuffle_ps::<0x44>(a, b), _mm512_shuffle_ps::<0xEE>(a, b))
    });
    _mm512_add_ps(_mm512_shuffle_ps::<0x88>(v[0], v[1]), _mm512_shuffle_ps::<0xDD>(v[0], v[1]))
}

/// From the scores `s[..n]` (then -inf up to a multiple of 16): per position, whether it raises
/// the running max (bit j % 16 of `flags[j / 16]`) and the exp the online softmax takes there,
/// expf(old max - s) if it does, else expf(s - max).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_factors(s: *const f32, n: usize, exps: *mut f32, flags: *mut u16) {
    let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut max = neg_inf;
    for c in 0..n.div_ceil(LANES) {
        let x = _mm512_loadu_ps(s.add(c * LANES));
        // Prefix max within the vector, then with the max so far.
        let mut pm = x;
        pm = _mm512_max_ps(pm, _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(_mm512_castps_si512(pm), _mm512_castps_si512(neg_inf))));
        pm = _mm512_max_ps(pm, _mm512_castsi512_ps(_mm512_alignr_epi32::<14>(_mm512_castps_si512(pm), _mm512_castps_si512(neg_inf))));
        pm = _mm512_max_ps(pm, _mm512_castsi512_ps(_mm512_alignr_epi32::<12>(_mm512_castps_si512(pm), _mm512_castps_si512(neg_inf))));
        pm = _mm512_max_ps(pm, _mm512_castsi512_ps(_mm512_alignr_epi32::<8>(_mm512_castps_si512(pm), _mm512_castps_si512(neg_inf))));
        pm = _mm512_max_ps(pm, max);
        // The max before each position: the previous lane's, the carried one in lane 0.
        let before = _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(_mm512_castps_si512(pm), _mm512_castps_si512(max)));
        let raises = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, before);
        let arg = _mm512_mask_blend_ps(raises, _mm512_sub_ps(x, before), _mm512_sub_ps(before, x));
        _mm512_storeu_ps(exps.add(c * LANES), expf16(arg));
        *flags.add(c) = raises;
        max = _mm512_permutexvar_ps(_mm512_set1_epi32(15), pm);
    }
}

/// One query head's inputs and output for the V pass.
#[derive(Clone, Copy)]
struct Head {
    exps: *const f32,
    flags: *const u16,
    out: *mut f32,
}

/// The sequential part for HEADS heads of DV·16 values: the f16 accumulator and f32 sum over
/// every position in order, then out = accumulator / sum. Returns HEADS.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn v_pass<const HEADS: usize, const DV: usize>(heads: [Head; HEADS], kv: KvRows) -> usize {
    let mut acc = [[_mm512_setzero_ps(); DV]; HEADS];
    let mut sum = [0f32; HEADS];
    for j in 0..kv.slots.len() {
        let v = kv.v.add(kv.row(j));
        for (h, head) in heads.iter().enumerate() {
            let e = *head.exps.add(j);
            let weight = if *head.flags.add(j / LANES) >> (j % LANES) & 1 != 0 {
                let ms = _mm512_set1_ps(e);
                for a in acc[h].iter_mut() {
                    *a = round_f16(_mm512_mul_ps(*a, ms));
                }
                sum[h] = sum[h] * e + 1.0;
                1.0
            } else {
                sum[h] += e;
                e
            };
            let w = _mm512_set1_ps(weight);
            for (c, a) in acc[h].iter_mut().enumerate() {
                *a = round_f16(_mm512_fmadd_ps(_mm512_loadu_ps(v.add(c * LANES)), w, *a));
            }
        }
    }
    for (h, head) in heads.iter().enumerate() {
        let inv = _mm512_set1_ps(if sum[h] == 0.0 { 0.0 } else { 1.0 / sum[h] });
        for (c, a) in acc[h].iter().enumerate() {
            _mm512_storeu_ps(head.out.add(c * LANES), _mm512_mul_ps(*a, inv));
        }
    }
    HEADS
}
