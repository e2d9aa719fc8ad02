//! Attention for head_dim 8 or 16 on AVX-512 that reads each position's K/V row whole.
//!
//! The gather kernel (`avx512_attn`) fetches one dimension of 16 positions per instruction, and
//! the rows it touches are scattered cache lines: on Zen 4 a gather costs tens of cycles. Here
//! every position's K (and V) values for all KV heads of the task are plain vector loads
//! (one 64-byte vector holds 16/d heads), and the head_dim-wide dot products are finished with a
//! shuffle tree: d product vectors of d positions fold into one vector holding (heads x positions)
//! sums. The V side needs no reduction at all: a position's probabilities are permuted into
//! head-wide runs and multiplied into per-head accumulators lane by lane.

use super::avx512_attn::exp_ps;
use std::arch::x86_64::*;

/// How many positions ahead the K/V rows are prefetched.
const AHEAD: usize = 64;

/// Lanes that hold rows of heads `k*d..` of a 16-lane vector, for d = 8 or 16.
#[inline]
fn head_lanes(k: usize, d: usize) -> __mmask16 {
    (((1u32 << d) - 1) << (k * d)) as __mmask16
}

/// Lanes < n of a 16-lane block.
#[inline]
fn first_lanes(n: usize) -> __mmask16 {
    if n >= 16 { 0xFFFF } else { ((1u32 << n) - 1) as __mmask16 }
}

/// Source lanes for one fold level with segment width `s`: result lane k*s + w (w < s/2) sums the
/// two halves of segment k of `a`, lane k*s + s/2 + w those of `b`. `half` picks the upper halves.
fn fold_index(s: usize, half: bool) -> [i32; 16] {
    let mut idx = [0i32; 16];
    for (l, x) in idx.iter_mut().enumerate() {
        let (k, w) = (l / s, l % s);
        let from_b = w >= s / 2;
        let src = k * s + if from_b { w - s / 2 } else { w } + if half { s / 2 } else { 0 };
        *x = (src + if from_b { 16 } else { 0 }) as i32;
    }
    idx
}

/// vals[0..count] folded pairwise until each lane is a full segment sum; with position p fed at
/// vals[bit_reverse(p)], lane k*count + p ends up holding segment k of position p.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn fold(vals: &mut [__m512; 16], count: usize, tables: &[[__m512i; 2]; 5]) {
    let mut live = count;
    let mut s = count;
    while live > 1 {
        let [lo, hi] = tables[s.trailing_zeros() as usize];
        for m in 0..live / 2 {
            let (a, b) = (vals[2 * m], vals[2 * m + 1]);
            vals[m] = _mm512_add_ps(_mm512_permutex2var_ps(a, lo, b), _mm512_permutex2var_ps(a, hi, b));
        }
        live /= 2;
        s /= 2;
    }
}

fn bit_reverse(p: usize, count: usize) -> usize {
    let bits = count.trailing_zeros();
    if bits == 0 { 0 } else { p.reverse_bits() >> (usize::BITS - bits) }
}

/// Attention of one query row for `kv_heads` consecutive KV heads (see `attend_heads_d`).
///
/// Safety: as `attend_heads_d`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn attend_heads(
    q: &[f32],
    kv_heads: usize,
    group: usize,
    d: usize,
    k: *const f32,
    v: *const f32,
    slots: &[u32],
    stride: usize,
    offset: usize,
    scale: f32,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    // A constant head_dim unrolls the position loops and keeps the fold's vectors in registers.
    match d {
        8 => attend_heads_d::<8>(q, kv_heads, group, k, v, slots, stride, offset, scale, out, scratch),
        16 => attend_heads_d::<16>(q, kv_heads, group, k, v, slots, stride, offset, scale, out, scratch),
        _ => panic!("attend_heads: head_dim {d} is not 8 or 16"),
    }
}

/// Attention of one query row for `kv_heads` consecutive KV heads and their `group` query heads each:
/// out[h*d..][..d] = softmax(q_h · K_jᵀ · scale) · V_j for query head h (h = kvh * group + g), where
/// KV head kvh of position j starts at `slots[j] * stride + offset + kvh * d` of `k`/`v`.
///
/// Safety: the CPU has avx512f/bw/vl; d is 8 or 16; every addressed row (kv_heads * d values) lies
/// inside both tables; q and out hold kv_heads * group * d values.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn attend_heads_d<const D: usize>(
    q: &[f32],
    kv_heads: usize,
    group: usize,
    k: *const f32,
    v: *const f32,
    slots: &[u32],
    stride: usize,
    offset: usize,
    scale: f32,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let d = D;
    let n = slots.len();
    let width = kv_heads * d;
    let chunks = width.div_ceil(16);
    let per_chunk = 16 / d;
    let heads = kv_heads * group;
    let padded = n.div_ceil(16) * 16;
    // scratch: scores/probabilities [head][padded], 1/sum [head], queries laid out like the K row
    // [chunk][group][16].
    scratch.clear();
    scratch.resize(heads * padded + heads + chunks * group * 16, 0.0);
    let (probs, rest) = scratch.split_at_mut(heads * padded);
    let (inv, qx) = rest.split_at_mut(heads);
    for c in 0..chunks {
        for g in 0..group {
            for l in 0..16 {
                let kvh = c * per_chunk + l / d;
                if kvh < kv_heads {
                    qx[(c * group + g) * 16 + l] = q[(kvh * group + g) * d + l % d] * scale;
                }
            }
        }
    }
    // Positions past n in the last block stay -inf: no max, exp 0.
    for h in 0..heads {
        probs[h * padded + n..(h + 1) * padded].fill(f32::NEG_INFINITY);
    }
    let mut tables = [[_mm512_setzero_si512(); 2]; 5];
    for (lvl, t) in tables.iter_mut().enumerate().skip(1) {
        let s = 1 << lvl;
        for (half, x) in t.iter_mut().enumerate() {
            *x = _mm512_loadu_si512(fold_index(s, half == 1).as_ptr() as *const _);
        }
    }
    let row = |j: usize| slots[j] as usize * stride + offset;
    // Consecutive positions rarely sit in neighbouring slots (page size 1, many sequences allocating
    // in turn), so the hardware prefetcher cannot follow a sequence's rows: ask for every line of them
    // ahead, and for the V rows already during the K pass so the V pass finds them in cache: in L2
    // there (`to_l2`), as a long sequence's K and V rows together overflow L1 and the early V rows
    // were evicted before the V pass reached them, and into L1 AHEAD positions ahead in the V pass.
    let prefetch_to = |table: *const f32, j: usize, to_l2: bool| {
        if j < n {
            let start = table.wrapping_add(row(j)) as *const i8;
            for line in (0..width * 4).step_by(64) {
                if to_l2 {
                    _mm_prefetch::<_MM_HINT_T1>(start.wrapping_add(line));
                } else {
                    _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line));
                }
            }
        }
    };
    let prefetch = |table: *const f32, j: usize| prefetch_to(table, j, false);
    for j in 0..AHEAD.min(n) {
        prefetch(k, j);
    }
    // Scores: d positions at a time per (chunk, query head in group) fold into one vector.
    let mut vals = [_mm512_setzero_ps(); 16];
    for c in 0..chunks {
        let lanes = first_lanes(width - c * 16);
        for j0 in (0..n).step_by(d) {
            let here = (n - j0).min(d);
            if c == 0 {
                for p in 0..D {
                    prefetch(k, j0 + AHEAD + p);
                    prefetch_to(v, j0 + p, true);
                }
            }
            for g in 0..group {
                let qv = _mm512_loadu_ps(qx.as_ptr().add((c * group + g) * 16));
                for p in 0..D {
                    vals[bit_reverse(p, D)] = if p < here {
                        _mm512_mul_ps(qv, _mm512_maskz_loadu_ps(lanes, k.add(row(j0 + p) + c * 16)))
                    } else {
                        _mm512_setzero_ps()
                    };
                }
                fold(&mut vals, D, &tables);
                let keep = first_lanes(here);
                for kk in 0..per_chunk {
                    let kvh = c * per_chunk + kk;
                    if kvh >= kv_heads {
                        break;
                    }
                    // Lanes kk*d.. hold positions j0..j0+d of this head: a store shifted back by kk*d
                    // puts them at j0; the mask leaves every other address untouched.
                    let dst = probs.as_mut_ptr().add((kvh * group + g) * padded + j0).wrapping_sub(kk * d);
                    _mm512_mask_storeu_ps(dst, head_lanes(kk, d) & ((keep as u32) << (kk * d)) as __mmask16, vals[0]);
                }
            }
        }
    }

    // Softmax numerators in place, 16 positions per vector.
    for h in 0..heads {
        let r = probs.as_mut_ptr().add(h * padded);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for b in (0..padded).step_by(16) {
            mx = _mm512_max_ps(mx, _mm512_loadu_ps(r.add(b)));
        }
        let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        let mut sum = _mm512_setzero_ps();
        for b in (0..padded).step_by(16) {
            let e = _mm512_maskz_mov_ps(first_lanes(n - b), exp_ps(_mm512_sub_ps(_mm512_loadu_ps(r.add(b)), mx)));
            _mm512_storeu_ps(r.add(b), e);
            sum = _mm512_add_ps(sum, e);
        }
        inv[h] = 1.0 / _mm512_reduce_add_ps(sum);
    }

    // V: per chunk and up to 4 query heads of the group at once, accumulators stay in registers.
    let zero = _mm512_setzero_ps();
    for c in 0..chunks {
        let lanes = first_lanes(width - c * 16);
        let kvh_of = |kk: usize| c * per_chunk + kk;
        for g0 in (0..group).step_by(4) {
            let gs = (group - g0).min(4);
            let mut acc = [zero; 4];
            for b in (0..n).step_by(16) {
                // This block's probabilities for the chunk's (up to two) heads, per query head.
                let mut pa = [zero; 4];
                let mut pb = [zero; 4];
                for gi in 0..gs {
                    let g = g0 + gi;
                    pa[gi] = _mm512_loadu_ps(probs.as_ptr().add((kvh_of(0) * group + g) * padded + b));
                    if per_chunk == 2 && kvh_of(1) < kv_heads {
                        pb[gi] = _mm512_loadu_ps(probs.as_ptr().add((kvh_of(1) * group + g) * padded + b));
                    }
                }
                for p in 0..(n - b).min(16) {
                    if c == 0 && g0 == 0 {
                        prefetch(v, b + p + AHEAD);
                    }
                    let vr = _mm512_maskz_loadu_ps(lanes, v.add(row(b + p) + c * 16));
                    // Lanes of head kk take probability p of that head: index kk*16 + p.
                    let idx = _mm512_add_epi32(
                        _mm512_set1_epi32(p as i32),
                        _mm512_maskz_mov_epi32(head_lanes(1, d), _mm512_set1_epi32(16)),
                    );
                    for gi in 0..gs {
                        let w = _mm512_permutex2var_ps(pa[gi], idx, pb[gi]);
                        acc[gi] = _mm512_fmadd_ps(w, vr, acc[gi]);
                    }
                }
            }
            for (gi, a) in acc.iter().enumerate().take(gs) {
                let g = g0 + gi;
                for kk in 0..per_chunk {
                    let kvh = kvh_of(kk);
                    if kvh >= kv_heads {
                        break;
                    }
                    let h = kvh * group + g;
                    let dst = out.as_mut_ptr().add(h * d).wrapping_sub(kk * d);
                    _mm512_mask_storeu_ps(dst, head_lanes(kk, d), _mm512_mul_ps(*a, _mm512_set1_ps(inv[h])));
                }
            }
        }
    }
}
