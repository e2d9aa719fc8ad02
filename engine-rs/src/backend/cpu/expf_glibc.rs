//! `expf` as glibc computes it on x86-64 with FMA (its `__expf_fma`, which `libm.so.6` picks on
//! every CPU we run on), scalar and 16 lanes at a time, bit for bit the same results.
//!
//! Why: llama.cpp's CPU flash attention calls libm `expf` once per query and position, and our
//! llama.cpp-faithful attention (`avx512_attn_f16acc`) must reproduce its every bit, at vector speed.
//! The algorithm (ARM's optimized-routines `expf`, in glibc since 2.28): x·32/ln2 = k + r with k
//! rounded to nearest by adding 1.5·2^52, 2^(k/32) from a 32-entry table, and a cubic in r, all in
//! f64, rounded to f32 once at the end. The table and coefficients below are that routine's
//! published numbers. Which products glibc's compiler fused into FMAs was settled by comparing with
//! libm on every negative float (this file's ignored test, ~11 s): with the range reduction fused
//! (as GCC contracts `z + SHIFT` and `z - kd`), zero differences in 1.1 billion; unfused, one.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// 2^(i/32) as f64 bits, minus i << 47 (the exponent part that k's low bits will add back).
const TABLE: [u64; 32] = [
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
];
const N: f64 = 32.0;
const INV_LN2_N: f64 = f64::from_bits(0x3ff71547652b82fe) * N;
const SHIFT: f64 = f64::from_bits(0x4338000000000000); // 1.5 * 2^52
const C0: f64 = f64::from_bits(0x3fac6af84b912394) / N / N / N;
const C1: f64 = f64::from_bits(0x3fcebfce50fac4f3) / N / N;
const C2: f64 = f64::from_bits(0x3fe62e42ff0c52d6) / N;
/// Below this glibc returns +0 (underflow); at or above `OVERFLOW` it returns +inf.
const UNDERFLOW: f32 = -103.972_08; // -0x1.9fe368p6
const OVERFLOW: f32 = 88.722_83; // 0x1.62e42ep6

/// glibc's `expf(x)` for finite x and -inf (NaN and +inf are not needed here and not matched).
pub fn expf(x: f32) -> f32 {
    if x < UNDERFLOW {
        return 0.0;
    }
    if x > OVERFLOW {
        return f32::INFINITY;
    }
    // glibc's compiler fused both uses of x·32/ln2 into FMAs (the exhaustive test tells: an
    // unfused `r` differs from libm at x = -63.09946).
    let xd = x as f64;
    let kd = INV_LN2_N.mul_add(xd, SHIFT);
    let ki = kd.to_bits();
    let kd = kd - SHIFT;
    let r = INV_LN2_N.mul_add(xd, -kd);
    let s = f64::from_bits(TABLE[(ki % 32) as usize].wrapping_add(ki << 47));
    let p = C0.mul_add(r, C1);
    let r2 = r * r;
    let y = C2.mul_add(r, 1.0);
    let y = p.mul_add(r2, y);
    (y * s) as f32
}

/// `expf` of 8 lanes given as f64 (exact conversions of f32 inputs at or above `UNDERFLOW`);
/// returns f64 lanes holding the f32-rounded result's value only after `_mm512_cvtpd_ps`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn expf_pd(xd: __m512d, table: &[__m512i; 4]) -> __m256 {
    let kd = _mm512_fmadd_pd(_mm512_set1_pd(INV_LN2_N), xd, _mm512_set1_pd(SHIFT));
    let ki = _mm512_castpd_si512(kd);
    let kd = _mm512_sub_pd(kd, _mm512_set1_pd(SHIFT));
    let r = _mm512_fmsub_pd(_mm512_set1_pd(INV_LN2_N), xd, kd);
    // T[ki % 32]: bit 4 of ki picks the upper 16 entries, bits 0-3 the entry within.
    let low = _mm512_permutex2var_epi64(table[0], ki, table[1]);
    let high = _mm512_permutex2var_epi64(table[2], ki, table[3]);
    let upper = _mm512_test_epi64_mask(ki, _mm512_set1_epi64(16));
    let t = _mm512_mask_blend_epi64(upper, low, high);
    let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
    let p = _mm512_fmadd_pd(_mm512_set1_pd(C0), r, _mm512_set1_pd(C1));
    let r2 = _mm512_mul_pd(r, r);
    let y = _mm512_fmadd_pd(_mm512_set1_pd(C2), r, _mm512_set1_pd(1.0));
    let y = _mm512_fmadd_pd(p, r2, y);
    _mm512_cvtpd_ps(_mm512_mul_pd(y, s))
}

/// `expf` on 16 lanes, equal bit for bit to [`expf`] (and to glibc) for finite inputs and -inf.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn expf16(x: __m512) -> __m512 {
    // Inputs below the underflow bound (and -inf) are computed from a harmless stand-in, then zeroed.
    let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(UNDERFLOW));
    let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(OVERFLOW));
    let safe = _mm512_mask_blend_ps(under | over, x, _mm512_setzero_ps());
    let table = [0, 8, 16, 24].map(|i| _mm512_loadu_si512(TABLE[i..].as_ptr() as *const _));
    let a = expf_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(safe)), &table);
    let b = expf_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(safe)))), &table);
    let y = _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castps_pd(_mm512_castps256_ps512(a)), _mm256_castps_pd(b)));
    let y = _mm512_mask_blend_ps(under, y, _mm512_setzero_ps());
    _mm512_mask_blend_ps(over, y, _mm512_set1_ps(f32::INFINITY))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libm's expf, called through the C ABI so no Rust or LLVM rewrite stands in for it.
    fn libm_expf(x: f32) -> f32 {
        extern "C" {
            fn expf(x: f32) -> f32;
        }
        unsafe { expf(x) }
    }

    fn check_range(from: f32, to: f32, step_bits: u32) -> usize {
        let mut mismatches = 0;
        let mut bits = from.to_bits();
        let end = to.to_bits();
        let vector = cfg!(target_arch = "x86_64") && is_x86_feature_detected!("avx512f");
        let mut batch = [0f32; 16];
        let mut filled = 0;
        let run = |batch: &[f32; 16], n: usize| {
            let mut got = [0f32; 16];
            #[cfg(target_arch = "x86_64")]
            if vector {
                unsafe { _mm512_storeu_ps(got.as_mut_ptr(), expf16(_mm512_loadu_ps(batch.as_ptr()))) };
            }
            let mut bad = 0;
            for i in 0..n {
                let want = libm_expf(batch[i]);
                if expf(batch[i]).to_bits() != want.to_bits() || (vector && got[i].to_bits() != want.to_bits()) {
                    eprintln!("expf({:e} = {:#x}): libm {:#x}, scalar {:#x}, vector {:#x}", batch[i], batch[i].to_bits(), want.to_bits(), expf(batch[i]).to_bits(), got[i].to_bits());
                    bad += 1;
                }
            }
            bad
        };
        // Negative floats: bits grow as the value falls.
        while bits <= end {
            batch[filled] = f32::from_bits(bits);
            filled += 1;
            if filled == 16 {
                mismatches += run(&batch, 16);
                filled = 0;
            }
            bits = match bits.checked_add(step_bits) {
                Some(b) => b,
                None => break,
            };
        }
        mismatches + run(&batch, filled)
    }

    /// Every 97th float from -0 down to below the underflow bound, and the specials.
    #[test]
    fn matches_libm_on_negative_floats() {
        assert_eq!(check_range(-0.0, -110.0, 97), 0);
        for x in [f32::NEG_INFINITY, -0.0, 0.0, -103.97208, -103.97207, -88.0, 1.0, 10.5, 88.7] {
            assert_eq!(expf(x).to_bits(), libm_expf(x).to_bits(), "expf({x})");
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            let xs = [f32::NEG_INFINITY, -0.0, 0.0, -103.97208, -103.97207, -88.0, 1.0, 10.5, 88.7, -1e30, -5.0, -0.5, -1e-8, 3.0, -200.0, 100.0];
            let mut got = [0f32; 16];
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), expf16(_mm512_loadu_ps(xs.as_ptr()))) };
            for (x, g) in xs.iter().zip(got) {
                assert_eq!(g.to_bits(), libm_expf(*x).to_bits(), "expf16({x})");
            }
        }
    }

    /// All 1.1 billion negative floats down to the underflow bound (minutes; run with --ignored).
    #[test]
    #[ignore]
    fn matches_libm_on_every_negative_float() {
        assert_eq!(check_range(-0.0, -110.0, 1), 0);
    }
}
