//! Attention for small heads (head_dim ≤ 16) on AVX-512, 16 positions per vector.
//!
//! The per-row kernels (`dot_rows`, `sum_rows`) hold one position's head_dim values in a 16-lane
//! register: with head_dim 8 half the lanes idle, every score pays a horizontal sum and every
//! probability a scalar `expf`. Here a vector holds one dimension of 16 positions (gathered through
//! the slot table), so scores, softmax and the weighted V sum are vertical FMAs and a vector exp.

use std::arch::x86_64::*;

/// Largest head_dim this kernel takes (one gathered vector per dimension stays in registers).
pub const MAX_HEAD_DIM: usize = 16;

/// Lanes of the last, partial block of `n` positions.
#[inline]
fn block_mask(n: usize, b: usize) -> __mmask16 {
    let left = n - b * 16;
    if left >= 16 { 0xFFFF } else { ((1u32 << left) - 1) as __mmask16 }
}

/// Element index of dimension 0 of each of the block's 16 rows: slot * stride + offset.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn block_index(slots: &[u32], b: usize, m: __mmask16, stride: __m512i, offset: __m512i) -> __m512i {
    let s = _mm512_maskz_loadu_epi32(m, slots.as_ptr().add(b * 16) as *const i32);
    _mm512_add_epi32(_mm512_mullo_epi32(s, stride), offset)
}

/// dims[t] = table[idx + t] for the block's rows (lanes outside `m` read nothing and hold 0).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn gather_dims(table: *const f32, idx: __m512i, m: __mmask16, d: usize, dims: &mut [__m512; MAX_HEAD_DIM]) {
    for (t, dim) in dims.iter_mut().enumerate().take(d) {
        let at = _mm512_add_epi32(idx, _mm512_set1_epi32(t as i32));
        *dim = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), m, at, table as _);
    }
}

/// Asks for the next block's rows ahead of their gathers: the rows are scattered over the KV pool,
/// one cache line each, and a gather waits for all 16 of them.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn prefetch_block(table: *const f32, slots: &[u32], b: usize, stride: usize, offset: usize) {
    let end = slots.len().min(b * 16 + 16);
    for &s in slots.get(b * 16..end).unwrap_or(&[]) {
        _mm_prefetch::<_MM_HINT_T0>(table.add(s as usize * stride + offset) as *const i8);
    }
}

/// e^x for x ≤ 0 (softmax after subtracting the max): Cephes' expf polynomial on the reduced
/// argument, scaled by 2^n with `vscalefps`; about 1 ulp, and 0 far below -87.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn exp_ps(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-103.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_2e-4);
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
    _mm512_scalef_ps(y, n)
}

/// out[g*d..][..d] = softmax(q_g · K_jᵀ · scale) · V_j over the rows j of `slots`, for the `group`
/// query heads q_g = q[g*d..][..d] that share one KV head. K/V row j starts at element
/// `slots[j] * stride + offset` of `k`/`v`. `scratch` is reused between calls.
///
/// Safety: the CPU has avx512f/bw/vl; 1 ≤ d ≤ MAX_HEAD_DIM; every row lies inside both tables and
/// every element index fits in an i32; q and out hold group * d values.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn attend_group(
    q: &[f32],
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
    let n = slots.len();
    let blocks = n.div_ceil(16);
    let padded = blocks * 16;
    // scratch: probabilities [group][padded], V accumulators [group][d][16 lanes], 1/sum [group].
    scratch.clear();
    scratch.resize(group * padded + group * d * 16 + group, 0.0);
    let (probs, rest) = scratch.split_at_mut(group * padded);
    let (acc, inv) = rest.split_at_mut(group * d * 16);
    let stride_v = _mm512_set1_epi32(stride as i32);
    let offset_v = _mm512_set1_epi32(offset as i32);
    let scale_v = _mm512_set1_ps(scale);
    let mut dims = [_mm512_setzero_ps(); MAX_HEAD_DIM];

    // Scores: one gather per dimension serves every query head of the group.
    for b in 0..blocks {
        let m = block_mask(n, b);
        prefetch_block(k, slots, b + 1, stride, offset);
        gather_dims(k, block_index(slots, b, m, stride_v, offset_v), m, d, &mut dims);
        for g in 0..group {
            let qg = q.as_ptr().add(g * d);
            let mut s = _mm512_setzero_ps();
            for (t, dim) in dims.iter().enumerate().take(d) {
                s = _mm512_fmadd_ps(_mm512_set1_ps(*qg.add(t)), *dim, s);
            }
            // Lanes past the end are -inf so they drop out of the max and exp to 0.
            let s = _mm512_mask_blend_ps(m, _mm512_set1_ps(f32::NEG_INFINITY), _mm512_mul_ps(s, scale_v));
            _mm512_storeu_ps(probs.as_mut_ptr().add(g * padded + b * 16), s);
        }
    }

    // Softmax numerators in place; the 1/sum is applied once per output at the end.
    for (g, inv_g) in inv.iter_mut().enumerate() {
        let row = probs.as_mut_ptr().add(g * padded);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for b in 0..blocks {
            mx = _mm512_max_ps(mx, _mm512_loadu_ps(row.add(b * 16)));
        }
        let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        let mut sum = _mm512_setzero_ps();
        for b in 0..blocks {
            let e = _mm512_maskz_mov_ps(block_mask(n, b), exp_ps(_mm512_sub_ps(_mm512_loadu_ps(row.add(b * 16)), mx)));
            _mm512_storeu_ps(row.add(b * 16), e);
            sum = _mm512_add_ps(sum, e);
        }
        *inv_g = 1.0 / _mm512_reduce_add_ps(sum);
    }

    // Weighted V sum, lane-wise over positions; one horizontal sum per output value.
    for b in 0..blocks {
        let m = block_mask(n, b);
        prefetch_block(v, slots, b + 1, stride, offset);
        gather_dims(v, block_index(slots, b, m, stride_v, offset_v), m, d, &mut dims);
        for g in 0..group {
            let p = _mm512_loadu_ps(probs.as_ptr().add(g * padded + b * 16));
            let a = acc.as_mut_ptr().add(g * d * 16);
            for (t, dim) in dims.iter().enumerate().take(d) {
                _mm512_storeu_ps(a.add(t * 16), _mm512_fmadd_ps(p, *dim, _mm512_loadu_ps(a.add(t * 16))));
            }
        }
    }
    for g in 0..group {
        for t in 0..d {
            out[g * d + t] = _mm512_reduce_add_ps(_mm512_loadu_ps(acc.as_ptr().add((g * d + t) * 16))) * inv[g];
        }
    }
}
