//! AVX2 + FMA + F16C dot products. Unsigned 4/6-bit weights meet signed 8-bit activations in
//! `maddubs` (u8 × i8 → i16 pairs); the constant offsets of Q4_0 (-8) and Q6_K (-32) are taken out
//! afterwards with the activation block sums, so no sign tricks are needed in the inner loop.

use super::Activations;
use crate::gguf::dtype::GgmlType;
use crate::gguf::quants::{q4k_scale_min, Q8Block, Q8KBlock};
use std::arch::x86_64::*;

/// None when this path has no kernel for the type (the caller falls back to scalar).
///
/// # Safety
/// The CPU must support avx2, fma and f16c.
pub unsafe fn vec_dot(t: GgmlType, row: &[u8], act: &Activations) -> Option<f32> {
    Some(match (t, act) {
        (GgmlType::Q4_0, Activations::Q8(a)) => dot_q4(row, a, false),
        (GgmlType::Q4_1, Activations::Q8(a)) => dot_q4(row, a, true),
        (GgmlType::Q8_0, Activations::Q8(a)) => dot_q8_0(row, a),
        (GgmlType::Q4_K, Activations::Q8K(a)) => dot_q4_k(row, a),
        (GgmlType::Q6_K, Activations::Q8K(a)) => dot_q6_k(row, a),
        (GgmlType::F32, Activations::F32(x)) => dot_f32(row, x),
        (GgmlType::F16, Activations::F32(x)) => dot_f16(row, x),
        _ => return None,
    })
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// 16 packed bytes → 32 nibbles in element order (low nibbles first, then high).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn unpack_nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4(row: &[u8], a: &[Q8Block], with_min: bool) -> f32 {
    let bb = if with_min { 20 } else { 18 };
    assert_eq!(row.len(), a.len() * bb, "vec_dot: Q4 row length mismatch");
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut offset_terms = 0f32;
    let p = row.as_ptr();
    for (i, y) in a.iter().enumerate() {
        let b = p.add(i * bb);
        let d = f16_at(b) * y.d;
        let q = unpack_nibbles(b.add(bb - 16));
        let ys = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
        let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(q, ys), ones);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(dot), acc);
        offset_terms += if with_min { f16_at(b.add(2)) * y.s } else { -8.0 * d * y.isum as f32 };
    }
    hsum(acc) + offset_terms
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0(row: &[u8], a: &[Q8Block]) -> f32 {
    assert_eq!(row.len(), a.len() * 34, "vec_dot: Q8_0 row length mismatch");
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let p = row.as_ptr();
    for (i, y) in a.iter().enumerate() {
        let b = p.add(i * 34);
        let x = _mm256_loadu_si256(b.add(2) as *const __m256i);
        let ys = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
        // maddubs wants one unsigned operand: |x| with x's sign moved onto y.
        let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(ys, x)), ones);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b) * y.d), _mm256_cvtepi32_ps(dot), acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_k(row: &[u8], a: &[Q8KBlock]) -> f32 {
    assert_eq!(row.len(), a.len() * 144, "vec_dot: Q4_K row length mismatch");
    let mask = _mm256_set1_epi8(0x0F);
    let mut sum = 0f32;
    let p = row.as_ptr();
    for (i, y) in a.iter().enumerate() {
        let b = p.add(i * 144);
        let scales = std::slice::from_raw_parts(b.add(4), 12);
        let mut sumi = _mm256_setzero_si256();
        let mut summ = 0i32;
        for chunk in 0..4 {
            let (sc0, m0) = q4k_scale_min(2 * chunk, scales);
            let (sc1, m1) = q4k_scale_min(2 * chunk + 1, scales);
            let q = _mm256_loadu_si256(b.add(16 + chunk * 32) as *const __m256i);
            let lo = _mm256_and_si256(q, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
            let y0 = _mm256_loadu_si256(y.qs.as_ptr().add(chunk * 64) as *const __m256i);
            let y1 = _mm256_loadu_si256(y.qs.as_ptr().add(chunk * 64 + 32) as *const __m256i);
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), _mm256_set1_epi16(sc0 as i16));
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), _mm256_set1_epi16(sc1 as i16));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
            summ += m0 as i32 * (y.bsums[4 * chunk] as i32 + y.bsums[4 * chunk + 1] as i32)
                + m1 as i32 * (y.bsums[4 * chunk + 2] as i32 + y.bsums[4 * chunk + 3] as i32);
        }
        sum += y.d * (f16_at(b) * hsum_i32(sumi) as f32 - f16_at(b.add(2)) * summ as f32);
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q6_k(row: &[u8], a: &[Q8KBlock]) -> f32 {
    assert_eq!(row.len(), a.len() * 210, "vec_dot: Q6_K row length mismatch");
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(3);
    let mut sum = 0f32;
    let p = row.as_ptr();
    for (i, y) in a.iter().enumerate() {
        let b = p.add(i * 210);
        let sc = std::slice::from_raw_parts(b.add(192), 16);
        let mut sumi = _mm256_setzero_si256();
        for half in 0..2 {
            let ql0 = _mm256_loadu_si256(b.add(half * 64) as *const __m256i);
            let ql1 = _mm256_loadu_si256(b.add(half * 64 + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(b.add(128 + half * 32) as *const __m256i);
            let hbits = |shift: i32| -> __m256i {
                let s = match shift {
                    0 => qh,
                    2 => _mm256_srli_epi16(qh, 2),
                    4 => _mm256_srli_epi16(qh, 4),
                    _ => _mm256_srli_epi16(qh, 6),
                };
                _mm256_slli_epi16(_mm256_and_si256(s, m2), 4)
            };
            let qs = [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), hbits(0)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), hbits(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), hbits(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), hbits(6)),
            ];
            for (k, q) in qs.iter().enumerate() {
                let g = half * 8 + 2 * k;
                let ys = _mm256_loadu_si256(y.qs.as_ptr().add(half * 128 + k * 32) as *const __m256i);
                let scale = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1] as i8 as i16), _mm_set1_epi16(sc[g] as i8 as i16));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(*q, ys), scale));
            }
        }
        // The -32 offset of every weight, applied through the activation sums per 16.
        let offset: i32 = (0..16).map(|g| sc[g] as i8 as i32 * y.bsums[g] as i32).sum::<i32>() * 32;
        sum += f16_at(b.add(208)) * y.d * (hsum_i32(sumi) - offset) as f32;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    assert_eq!(row.len(), x.len() * 4, "vec_dot: F32 row length mismatch");
    let n = x.len() / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    for i in (0..n).step_by(8) {
        let w = _mm256_loadu_ps(row.as_ptr().add(i * 4) as *const f32);
        acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(x.as_ptr().add(i)), acc);
    }
    let mut s = hsum(acc);
    for i in n..x.len() {
        s += f32::from_le_bytes(row[i * 4..i * 4 + 4].try_into().unwrap()) * x[i];
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    assert_eq!(row.len(), x.len() * 2, "vec_dot: F16 row length mismatch");
    let n = x.len() / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    for i in (0..n).step_by(8) {
        let w = _mm256_cvtph_ps(_mm_loadu_si128(row.as_ptr().add(i * 2) as *const __m128i));
        acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(x.as_ptr().add(i)), acc);
    }
    let mut s = hsum(acc);
    for i in n..x.len() {
        s += f16_at(row.as_ptr().add(i * 2)) * x[i];
    }
    s
}
