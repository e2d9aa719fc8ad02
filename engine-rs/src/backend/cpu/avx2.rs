//! AVX2 + FMA kernels (8 lanes). bf16/f16 weights are widened to f32 exactly; the k tail that
//! does not fill a vector is finished in scalar code.

use super::matrix::DType;
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f32(p: *const u8, i: usize) -> __m256 {
    _mm256_loadu_ps((p as *const f32).add(i))
}
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_bf16(p: *const u8, i: usize) -> __m256 {
    let h = _mm_loadu_si128((p as *const u16).add(i) as *const __m128i);
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
}
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f16(p: *const u8, i: usize) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128((p as *const u16).add(i) as *const __m128i))
}
#[inline]
fn elem_f32(p: *const u8, i: usize) -> f32 {
    unsafe { (p as *const f32).add(i).read_unaligned() }
}
#[inline]
fn elem_bf16(p: *const u8, i: usize) -> f32 {
    f32::from_bits((unsafe { (p as *const u16).add(i).read_unaligned() } as u32) << 16)
}
#[inline]
fn elem_f16(p: *const u8, i: usize) -> f32 {
    half::f16::from_bits(unsafe { (p as *const u16).add(i).read_unaligned() }).to_f32()
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

macro_rules! kernels_for_dtype {
    ($tile:ident, $rows:ident, $es:expr, $load:ident, $elem:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $tile<const R: usize, const T: usize>(
            x: *const f32,
            k: usize,
            w: *const u8,
            out: *mut f32,
            ldo: usize,
        ) {
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let full = k & !7;
            let mut i = 0;
            while i < full {
                let mut wv = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    wv[r] = $load(w.add(r * k * $es), i);
                }
                for t in 0..T {
                    let xv = _mm256_loadu_ps(x.add(t * k + i));
                    for r in 0..R {
                        acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
                    }
                }
                i += 8;
            }
            for r in 0..R {
                for t in 0..T {
                    let mut s = hsum(acc[r][t]);
                    for j in full..k {
                        s += $elem(w.add(r * k * $es), j) * *x.add(t * k + j);
                    }
                    *out.add(t * ldo + r) = s;
                }
            }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $rows(x: *const f32, n: usize, k: usize, w: *const u8, nrows: usize, out: *mut f32, ldo: usize) {
            let mut t = 0;
            while t < n {
                let tn = (n - t).min(2);
                let xt = x.add(t * k);
                let ot = out.add(t * ldo);
                let mut r = 0;
                while r + 4 <= nrows {
                    let (wr, or) = (w.add(r * k * $es), ot.add(r));
                    match tn {
                        2 => $tile::<4, 2>(xt, k, wr, or, ldo),
                        _ => $tile::<4, 1>(xt, k, wr, or, ldo),
                    }
                    r += 4;
                }
                while r < nrows {
                    let (wr, or) = (w.add(r * k * $es), ot.add(r));
                    match tn {
                        2 => $tile::<1, 2>(xt, k, wr, or, ldo),
                        _ => $tile::<1, 1>(xt, k, wr, or, ldo),
                    }
                    r += 1;
                }
                t += tn;
            }
        }
    };
}

kernels_for_dtype!(tile_f32, rows_f32, 4, load_f32, elem_f32);
kernels_for_dtype!(tile_bf16, rows_bf16, 2, load_bf16, elem_bf16);
kernels_for_dtype!(tile_f16, rows_f16, 2, load_f16, elem_f16);

/// Same contract as `avx512::gemm_rows`. Safety: the CPU has avx2, fma and f16c.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_rows(x: *const f32, n: usize, k: usize, w: *const u8, dtype: DType, nrows: usize, out: *mut f32, ldo: usize) {
    match dtype {
        DType::F32 => rows_f32(x, n, k, w, nrows, out, ldo),
        DType::BF16 => rows_bf16(x, n, k, w, nrows, out, ldo),
        DType::F16 => rows_f16(x, n, k, w, nrows, out, ldo),
    }
}

/// Safety: the CPU has avx2, fma and f16c; a and b have equal lengths.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut out = 0.0f32;
    tile_f32::<1, 1>(b.as_ptr(), a.len(), a.as_ptr() as *const u8, &mut out, 1);
    out
}

/// y += alpha * x. Safety: the CPU has avx2 and fma; x and y have equal lengths.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len();
    let a = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= n {
        let yv = _mm256_loadu_ps(y.as_ptr().add(i));
        _mm256_storeu_ps(y.as_mut_ptr().add(i), _mm256_fmadd_ps(a, _mm256_loadu_ps(x.as_ptr().add(i)), yv));
        i += 8;
    }
    for j in i..n {
        y[j] = alpha.mul_add(x[j], y[j]);
    }
}
