//! AVX-512 quantization of activations to Q8 blocks, bit-identical to `quants::quantize_q8_scalar`
//! (same 127/amax multiplier, round to nearest-even by the default MXCSR mode, same f16 rounding of
//! d and s). Prefill quantizes every projection input of every token: the scalar loop was ~10% of a
//! SmolLM2 prefill.

use crate::gguf::quants::Q8Block;
use std::arch::x86_64::*;

/// `out[b]` = block `b` of `x` (`x.len() == 32 * out.len()`).
///
/// # Safety
/// The CPU must support avx512f/bw and f16c.
#[target_feature(enable = "avx512f,avx512bw,f16c")]
pub unsafe fn quantize_q8(x: &[f32], out: &mut [Q8Block]) {
    assert_eq!(x.len(), out.len() * 32, "quantize_q8: {} floats for {} blocks", x.len(), out.len());
    quantize_q8_strided(x, out.as_mut_ptr(), 1);
}

/// Block `b` of `x` (a whole number of 32-value blocks) into `*out.add(b * stride)`: the layout of
/// a tile of `stride` tokens whose blocks are interleaved (`interleaved.rs`).
///
/// # Safety
/// As `quantize_q8`; `out` must be writable at every `b * stride`.
#[target_feature(enable = "avx512f,avx512bw,f16c")]
pub unsafe fn quantize_q8_strided(x: &[f32], out: *mut Q8Block, stride: usize) {
    for (b, c) in x.chunks_exact(32).enumerate() {
        let o = &mut *out.add(b * stride);
        let v0 = _mm512_loadu_ps(c.as_ptr());
        let v1 = _mm512_loadu_ps(c.as_ptr().add(16));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
        let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
        _mm_storeu_si128(o.qs.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128(o.qs.as_mut_ptr().add(16) as *mut __m128i, _mm512_cvtepi32_epi8(q1));
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        o.d = round_f16_f16c(d);
        o.s = round_f16_f16c(d * sum as f32);
        o.isum = sum;
    }
}

/// `quants::round_f16` in two instructions (round to nearest-even, as `half` does): the library call
/// per block showed in prefill profiles.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,f16c")]
unsafe fn round_f16_f16c(x: f32) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x))))
}
