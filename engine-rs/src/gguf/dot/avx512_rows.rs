//! AVX-512 VNNI dot products of several consecutive weight rows against one token (decode).
//! Why: with one row per call the per-block work is a chain of dependent scalar and vector
//! operations (f16 scale → product → offset sum, dpbusd → fma into one accumulator), so the core
//! waits on latencies; R independent rows interleave R such chains and load each activation pair
//! once for all of them. Per row the arithmetic is exactly `avx512::dot_q4` / `dot_q8_0`'s,
//! operation for operation (same block pairing, same fused multiply-adds, same reduction), so the
//! result is bit-identical to the one-row dot and to the token tiles of prefill.

use super::avx2::{f16_at, hsum};
use super::avx512::{nibbles, pair_i, pair_scale, load_y};
use crate::gguf::dtype::GgmlType;
use crate::gguf::quants::Q8Block;
use std::arch::x86_64::*;

/// Rows per call: R zmm accumulators plus the shared activation pair fit the 32 registers with room.
pub const ROWS: usize = 4;

/// `out[r] = rows[r * row_bytes ..] · act` for `out.len() == ROWS` consecutive rows; false when `t`
/// has no kernel here.
///
/// # Safety
/// The CPU must support avx512f/bw/vl/dq, avx512vnni, avx2, fma and f16c.
pub unsafe fn dot_rows(t: GgmlType, rows: &[u8], row_bytes: usize, act: &[Q8Block], out: &mut [f32; ROWS]) -> bool {
    assert!(rows.len() >= ROWS * row_bytes);
    *out = match t {
        GgmlType::Q4_0 => rows_q4::<ROWS>(rows.as_ptr(), row_bytes, act, false),
        GgmlType::Q4_1 => rows_q4::<ROWS>(rows.as_ptr(), row_bytes, act, true),
        GgmlType::Q8_0 => rows_q8_0::<ROWS>(rows.as_ptr(), row_bytes, act),
        _ => return false,
    };
    true
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn rows_q4<const R: usize>(p: *const u8, row_bytes: usize, a: &[Q8Block], with_min: bool) -> [f32; R] {
    let bb = if with_min { 20 } else { 18 };
    let nb = a.len();
    assert_eq!(row_bytes, nb * bb, "vec_dot: Q4 row length mismatch");
    let mut acc = [_mm512_setzero_ps(); R];
    let mut acc256 = [_mm256_setzero_ps(); R];
    let mut offset_terms = [0f32; R];
    let mut i = 0;
    while i + 1 < nb {
        let (y0, y1) = (&a[i], &a[i + 1]);
        let y = pair_i(load_y(y0), load_y(y1));
        for r in 0..R {
            let b0 = p.add(r * row_bytes + i * bb);
            let b1 = b0.add(bb);
            let d0 = f16_at(b0) * y0.d;
            offset_terms[r] += if with_min { f16_at(b0.add(2)) * y0.s } else { -8.0 * d0 * y0.isum as f32 };
            let d1 = f16_at(b1) * y1.d;
            offset_terms[r] += if with_min { f16_at(b1.add(2)) * y1.s } else { -8.0 * d1 * y1.isum as f32 };
            let q = pair_i(nibbles(b0.add(bb - 16)), nibbles(b1.add(bb - 16)));
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y);
            acc[r] = _mm512_fmadd_ps(pair_scale(d0, d1), _mm512_cvtepi32_ps(dot), acc[r]);
        }
        i += 2;
    }
    if i < nb {
        let y0 = &a[i];
        for r in 0..R {
            let b0 = p.add(r * row_bytes + i * bb);
            let d0 = f16_at(b0) * y0.d;
            offset_terms[r] += if with_min { f16_at(b0.add(2)) * y0.s } else { -8.0 * d0 * y0.isum as f32 };
            let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), nibbles(b0.add(bb - 16)), load_y(y0));
            acc256[r] = _mm256_fmadd_ps(_mm256_set1_ps(d0), _mm256_cvtepi32_ps(dot), acc256[r]);
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = _mm512_reduce_add_ps(acc[r]) + hsum(acc256[r]) + offset_terms[r];
    }
    out
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn rows_q8_0<const R: usize>(p: *const u8, row_bytes: usize, a: &[Q8Block]) -> [f32; R] {
    let nb = a.len();
    assert_eq!(row_bytes, nb * 34, "vec_dot: Q8_0 row length mismatch");
    let mut acc = [_mm512_setzero_ps(); R];
    let mut acc256 = [_mm256_setzero_ps(); R];
    let mut i = 0;
    while i + 1 < nb {
        let (y0, y1) = (&a[i], &a[i + 1]);
        let y = pair_i(load_y(y0), load_y(y1));
        for r in 0..R {
            let b0 = p.add(r * row_bytes + i * 34);
            let b1 = b0.add(34);
            let (d0, d1) = (f16_at(b0) * y0.d, f16_at(b1) * y1.d);
            let x = pair_i(_mm256_loadu_si256(b0.add(2) as *const __m256i), _mm256_loadu_si256(b1.add(2) as *const __m256i));
            // vpdpbusd wants one unsigned operand: |x|, with x's sign moved onto y.
            let neg = _mm512_movepi8_mask(x);
            let ys = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(x), ys);
            acc[r] = _mm512_fmadd_ps(pair_scale(d0, d1), _mm512_cvtepi32_ps(dot), acc[r]);
        }
        i += 2;
    }
    if i < nb {
        let y0 = &a[i];
        let y = load_y(y0);
        for r in 0..R {
            let b0 = p.add(r * row_bytes + i * 34);
            let d0 = f16_at(b0) * y0.d;
            let x = _mm256_loadu_si256(b0.add(2) as *const __m256i);
            let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
            acc256[r] = _mm256_fmadd_ps(_mm256_set1_ps(d0), _mm256_cvtepi32_ps(dot), acc256[r]);
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = _mm512_reduce_add_ps(acc[r]) + hsum(acc256[r]);
    }
    out
}
