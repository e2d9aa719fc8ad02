//! AVX-512 (BW/DQ/VL + VNNI) dot products for the legacy quants: two 32-element blocks per 512-bit
//! register and `vpdpbusd` (u8 × i8 summed straight into i32). Types without a kernel here fall
//! back to the AVX2 path.

use super::avx2::{f16_at, hsum};
use super::Activations;
use crate::gguf::dtype::GgmlType;
use crate::gguf::quants::Q8Block;
use std::arch::x86_64::*;

/// # Safety
/// The CPU must support avx512f/bw/vl/dq, avx512vnni, avx2, fma and f16c.
pub unsafe fn vec_dot(t: GgmlType, row: &[u8], act: &Activations) -> Option<f32> {
    Some(match (t, act) {
        (GgmlType::Q4_0, Activations::Q8(a)) => dot_q4(row, a, false),
        (GgmlType::Q4_1, Activations::Q8(a)) => dot_q4(row, a, true),
        (GgmlType::Q8_0, Activations::Q8(a)) => dot_q8_0(row, a),
        _ => return None,
    })
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn pair_i(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn pair_scale(lo: f32, hi: f32) -> __m512 {
    _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(lo)), _mm256_set1_ps(hi), 1)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn load_y(y: &Q8Block) -> __m256i {
    _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_q4(row: &[u8], a: &[Q8Block], with_min: bool) -> f32 {
    let bb = if with_min { 20 } else { 18 };
    assert_eq!(row.len(), a.len() * bb, "vec_dot: Q4 row length mismatch");
    let p = row.as_ptr();
    let mut acc = _mm512_setzero_ps();
    let mut acc256 = _mm256_setzero_ps();
    let mut offset_terms = 0f32;
    let mut i = 0;
    while i < a.len() {
        let b0 = p.add(i * bb);
        let d0 = f16_at(b0) * a[i].d;
        offset_terms += if with_min { f16_at(b0.add(2)) * a[i].s } else { -8.0 * d0 * a[i].isum as f32 };
        if i + 1 < a.len() {
            let b1 = b0.add(bb);
            let d1 = f16_at(b1) * a[i + 1].d;
            offset_terms += if with_min { f16_at(b1.add(2)) * a[i + 1].s } else { -8.0 * d1 * a[i + 1].isum as f32 };
            let q = pair_i(nibbles(b0.add(bb - 16)), nibbles(b1.add(bb - 16)));
            let y = pair_i(load_y(&a[i]), load_y(&a[i + 1]));
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y);
            acc = _mm512_fmadd_ps(pair_scale(d0, d1), _mm512_cvtepi32_ps(dot), acc);
            i += 2;
        } else {
            let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), nibbles(b0.add(bb - 16)), load_y(&a[i]));
            acc256 = _mm256_fmadd_ps(_mm256_set1_ps(d0), _mm256_cvtepi32_ps(dot), acc256);
            i += 1;
        }
    }
    _mm512_reduce_add_ps(acc) + hsum(acc256) + offset_terms
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_q8_0(row: &[u8], a: &[Q8Block]) -> f32 {
    assert_eq!(row.len(), a.len() * 34, "vec_dot: Q8_0 row length mismatch");
    let p = row.as_ptr();
    let mut acc = _mm512_setzero_ps();
    let mut acc256 = _mm256_setzero_ps();
    let mut i = 0;
    while i < a.len() {
        let b0 = p.add(i * 34);
        let d0 = f16_at(b0) * a[i].d;
        if i + 1 < a.len() {
            let b1 = b0.add(34);
            let d1 = f16_at(b1) * a[i + 1].d;
            let x = pair_i(_mm256_loadu_si256(b0.add(2) as *const __m256i), _mm256_loadu_si256(b1.add(2) as *const __m256i));
            let y = pair_i(load_y(&a[i]), load_y(&a[i + 1]));
            // vpdpbusd wants one unsigned operand: |x|, with x's sign moved onto y.
            let neg = _mm512_movepi8_mask(x);
            let ys = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(x), ys);
            acc = _mm512_fmadd_ps(pair_scale(d0, d1), _mm512_cvtepi32_ps(dot), acc);
            i += 2;
        } else {
            let x = _mm256_loadu_si256(b0.add(2) as *const __m256i);
            let y = load_y(&a[i]);
            let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
            acc256 = _mm256_fmadd_ps(_mm256_set1_ps(d0), _mm256_cvtepi32_ps(dot), acc256);
            i += 1;
        }
    }
    _mm512_reduce_add_ps(acc) + hsum(acc256)
}
