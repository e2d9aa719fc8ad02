//! Quant block layouts (as ggml defines them) and the scalar reference for turning blocks into floats
//! and activations into 8-bit blocks.
//!
//! Weight blocks are read straight from the file's bytes (little-endian, packed), so no struct casts
//! and no alignment assumptions on the mapping:
//! - Q4_0 (18 B / 32): f16 d, 16 B nibbles; x = (q - 8) * d. Byte j holds element j (low nibble) and j+16 (high).
//! - Q4_1 (20 B / 32): f16 d, f16 m, 16 B nibbles; x = q * d + m.
//! - Q8_0 (34 B / 32): f16 d, 32 i8; x = q * d.
//! - Q4_K (144 B / 256): f16 d, f16 dmin, 12 B of packed 6-bit (scale, min) for 8 sub-blocks of 32,
//!   128 B nibbles; each 64-element chunk takes the low nibbles for its first 32 and the high ones after.
//!   x = d * scale * q - dmin * min.
//! - Q6_K (210 B / 256): 128 B low 4 bits, 64 B high 2 bits, 16 i8 scales (one per 16), f16 d;
//!   x = d * scale * (q - 32).

use super::dtype::{GgmlType, QK, QK_K};
use half::{bf16, f16};

#[inline]
pub fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Activations quantized per 32 for the legacy quants (ggml's Q8_0 / Q8_1 rolled into one):
/// `d` and `s` are rounded through f16 exactly as ggml stores them, so results track llama.cpp's.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q8Block {
    pub qs: [i8; QK],
    pub d: f32,
    /// d * Σqs, for Q4_1's offset term.
    pub s: f32,
    /// Σqs, for Q4_0's -8 offset in the SIMD paths.
    pub isum: i32,
}

/// Activations quantized per 256 for the K-quants (ggml's Q8_K): sums per 16 serve the min/offset terms.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q8KBlock {
    pub qs: [i8; QK_K],
    pub d: f32,
    pub bsums: [i16; QK_K / 16],
}

/// Round to nearest, ties to even, for |x| < 2^22: adding 1.5·2^23 pushes the fraction out of the
/// mantissa under the default rounding mode (ggml's `nearest_int` does the same). `round_ties_even`
/// would be a libm call on the baseline x86-64 target, a visible cost in prefill.
#[inline]
fn nearest_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

pub(crate) fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// `x.len()` must be a multiple of 32. AVX-512 where the CPU has it (bit-identical to the scalar form).
pub fn quantize_q8(x: &[f32]) -> Vec<Q8Block> {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *AVX512.get_or_init(|| is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("f16c")) {
            let mut out = vec![Q8Block { qs: [0; QK], d: 0.0, s: 0.0, isum: 0 }; x.len() / QK];
            // SAFETY: the features were detected above.
            unsafe { super::dot::avx512_quant::quantize_q8(&x[..out.len() * QK], &mut out) };
            return out;
        }
    }
    quantize_q8_scalar(x)
}

/// The scalar reference of `quantize_q8`.
pub fn quantize_q8_scalar(x: &[f32]) -> Vec<Q8Block> {
    x.chunks_exact(QK)
        .map(|c| {
            let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            // As ggml's x86 quantizer: the multiplier is 127/amax (not 1/d) and rounding is to nearest-even
            // (`_mm256_round_ps(_MM_ROUND_NEAREST)`). Either differs from the obvious form by one ulp or a
            // tie now and then, and this model's logits move by ~0.1 when a few activations round the other way.
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let mut qs = [0i8; QK];
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(c) {
                *q = nearest_even(v * id) as i8;
                sum += *q as i32;
            }
            Q8Block { qs, d: round_f16(d), s: round_f16(d * sum as f32), isum: sum }
        })
        .collect()
}

/// `x.len()` must be a multiple of 256.
pub fn quantize_q8k(x: &[f32]) -> Vec<Q8KBlock> {
    x.chunks_exact(QK_K)
        .map(|c| {
            // ggml scales by the signed value of largest magnitude so that value maps to exactly -127.
            let mut max = 0f32;
            for &v in c {
                if v.abs() > max.abs() {
                    max = v;
                }
            }
            let mut b = Q8KBlock { qs: [0; QK_K], d: 0.0, bsums: [0; QK_K / 16] };
            if max == 0.0 {
                return b;
            }
            let iscale = -127.0 / max;
            for (q, &v) in b.qs.iter_mut().zip(c) {
                // ggml's nearest_int (float magic-number trick) rounds ties to even.
                *q = (nearest_even(iscale * v) as i32).min(127) as i8;
            }
            for (g, s) in b.bsums.iter_mut().enumerate() {
                *s = b.qs[g * 16..g * 16 + 16].iter().map(|&q| q as i16).sum();
            }
            b.d = 1.0 / iscale;
            b
        })
        .collect()
}

/// The 6-bit (scale, min) of sub-block `j` of a Q4_K block's 12 packed bytes.
#[inline]
pub fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Dequantizes one row: `src` holds `dst.len()` elements of `dtype` (a whole number of blocks).
pub fn dequantize_row(dtype: GgmlType, src: &[u8], dst: &mut [f32]) {
    assert_eq!(Some(src.len()), dtype.row_bytes(dst.len()), "dequantize_row: {} bytes for {} {dtype} elements", src.len(), dst.len());
    let bb = dtype.block_bytes();
    match dtype {
        GgmlType::F32 => {
            for (y, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (y, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *y = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (y, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *y = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            for (y, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(bb)) {
                let d = f16_at(b, 0);
                let (m, qs) = if dtype == GgmlType::Q4_1 { (f16_at(b, 2), &b[4..]) } else { (-8.0 * d, &b[2..]) };
                for j in 0..QK / 2 {
                    y[j] = (qs[j] & 0x0F) as f32 * d + m;
                    y[j + QK / 2] = (qs[j] >> 4) as f32 * d + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (y, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(bb)) {
                let d = f16_at(b, 0);
                for j in 0..QK {
                    y[j] = b[2 + j] as i8 as f32 * d;
                }
            }
        }
        GgmlType::Q4_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(bb)) {
                let d = f16_at(b, 0);
                let dmin = f16_at(b, 2);
                let scales = &b[4..16];
                let qs = &b[16..];
                for chunk in 0..4 {
                    let q = &qs[chunk * 32..chunk * 32 + 32];
                    let (sc0, m0) = q4k_scale_min(2 * chunk, scales);
                    let (sc1, m1) = q4k_scale_min(2 * chunk + 1, scales);
                    let out = &mut y[chunk * 64..chunk * 64 + 64];
                    for l in 0..32 {
                        out[l] = d * sc0 as f32 * (q[l] & 0x0F) as f32 - dmin * m0 as f32;
                        out[l + 32] = d * sc1 as f32 * (q[l] >> 4) as f32 - dmin * m1 as f32;
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(bb)) {
                let d = f16_at(b, 208);
                for half in 0..2 {
                    let ql = &b[half * 64..half * 64 + 64];
                    let qh = &b[128 + half * 32..128 + half * 32 + 32];
                    let sc = &b[192 + half * 8..192 + half * 8 + 8];
                    let out = &mut y[half * 128..half * 128 + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
            }
        }
    }
}
