//! AVX-512 kernels. bf16 weights are widened to f32 with a shift (exact) and multiplied with FMA,
//! so results match the f32 reference up to summation order; `vdpbf16ps` is not used because
//! it would round the activations to bf16 and break the float32 golden path.

use super::matrix::DType;
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_f32(p: *const u8, i: usize) -> __m512 {
    _mm512_loadu_ps((p as *const f32).add(i))
}
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_f32_masked(p: *const u8, i: usize, m: __mmask16) -> __m512 {
    _mm512_maskz_loadu_ps(m, (p as *const f32).add(i))
}
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn widen_bf16(h: __m256i) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
}
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_bf16(p: *const u8, i: usize) -> __m512 {
    widen_bf16(_mm256_loadu_si256((p as *const u16).add(i) as *const __m256i))
}
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_bf16_masked(p: *const u8, i: usize, m: __mmask16) -> __m512 {
    widen_bf16(_mm256_maskz_loadu_epi16(m, (p as *const u16).add(i) as *const i16))
}
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_f16(p: *const u8, i: usize) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256((p as *const u16).add(i) as *const __m256i))
}
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_f16_masked(p: *const u8, i: usize, m: __mmask16) -> __m512 {
    _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (p as *const u16).add(i) as *const i16))
}

macro_rules! kernels_for_dtype {
    ($tile:ident, $rows:ident, $es:expr, $load:ident, $load_masked:ident) => {
        /// An R-rows x T-tokens register tile: each weight vector is loaded and widened once
        /// and used for all T tokens.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn $tile<const R: usize, const T: usize>(
            x: *const f32,
            k: usize,
            w: *const u8,
            out: *mut f32,
            ldo: usize,
        ) {
            let mut acc = [[_mm512_setzero_ps(); T]; R];
            let full = k & !15;
            let mut i = 0;
            while i < full {
                let mut wv = [_mm512_setzero_ps(); R];
                for r in 0..R {
                    wv[r] = $load(w.add(r * k * $es), i);
                }
                for t in 0..T {
                    let xv = _mm512_loadu_ps(x.add(t * k + i));
                    for r in 0..R {
                        acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
                    }
                }
                i += 16;
            }
            if full < k {
                let m = ((1u32 << (k - full)) - 1) as __mmask16;
                let mut wv = [_mm512_setzero_ps(); R];
                for r in 0..R {
                    wv[r] = $load_masked(w.add(r * k * $es), full, m);
                }
                for t in 0..T {
                    let xv = _mm512_maskz_loadu_ps(m, x.add(t * k + full));
                    for r in 0..R {
                        acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
                    }
                }
            }
            for r in 0..R {
                for t in 0..T {
                    *out.add(t * ldo + r) = _mm512_reduce_add_ps(acc[r][t]);
                }
            }
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn $rows(x: *const f32, n: usize, k: usize, w: *const u8, nrows: usize, out: *mut f32, ldo: usize) {
            let mut t = 0;
            while t < n {
                let tn = (n - t).min(4);
                let xt = x.add(t * k);
                let ot = out.add(t * ldo);
                let mut r = 0;
                while r + 4 <= nrows {
                    let (wr, or) = (w.add(r * k * $es), ot.add(r));
                    match tn {
                        4 => $tile::<4, 4>(xt, k, wr, or, ldo),
                        3 => $tile::<4, 3>(xt, k, wr, or, ldo),
                        2 => $tile::<4, 2>(xt, k, wr, or, ldo),
                        _ => $tile::<4, 1>(xt, k, wr, or, ldo),
                    }
                    r += 4;
                }
                while r < nrows {
                    let (wr, or) = (w.add(r * k * $es), ot.add(r));
                    match tn {
                        4 => $tile::<1, 4>(xt, k, wr, or, ldo),
                        3 => $tile::<1, 3>(xt, k, wr, or, ldo),
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

kernels_for_dtype!(tile_f32, rows_f32, 4, load_f32, load_f32_masked);
kernels_for_dtype!(tile_bf16, rows_bf16, 2, load_bf16, load_bf16_masked);
kernels_for_dtype!(tile_f16, rows_f16, 2, load_f16, load_f16_masked);

/// Same contract as `scalar::gemm_rows`, given as raw pointers so threads can write disjoint
/// columns of one output. Safety: the CPU has avx512f/bw/vl; `x` holds n*k floats, `w` nrows*k
/// elements, and out[t*ldo + r] is writable for t < n, r < nrows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn gemm_rows(x: *const f32, n: usize, k: usize, w: *const u8, dtype: DType, nrows: usize, out: *mut f32, ldo: usize) {
    match dtype {
        DType::F32 => rows_f32(x, n, k, w, nrows, out, ldo),
        DType::BF16 => rows_bf16(x, n, k, w, nrows, out, ldo),
        DType::F16 => rows_f16(x, n, k, w, nrows, out, ldo),
    }
}

/// Safety: the CPU has avx512f/bw/vl; a and b have equal lengths.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut out = 0.0f32;
    tile_f32::<1, 1>(b.as_ptr(), a.len(), a.as_ptr() as *const u8, &mut out, 1);
    out
}

/// y += alpha * x. Safety: the CPU has avx512f/bw/vl; x and y have equal lengths.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len();
    let a = _mm512_set1_ps(alpha);
    let mut i = 0;
    while i + 16 <= n {
        let yv = _mm512_loadu_ps(y.as_ptr().add(i));
        _mm512_storeu_ps(y.as_mut_ptr().add(i), _mm512_fmadd_ps(a, _mm512_loadu_ps(x.as_ptr().add(i)), yv));
        i += 16;
    }
    if i < n {
        let m = ((1u32 << (n - i)) - 1) as __mmask16;
        let yv = _mm512_maskz_loadu_ps(m, y.as_ptr().add(i));
        let xv = _mm512_maskz_loadu_ps(m, x.as_ptr().add(i));
        _mm512_mask_storeu_ps(y.as_mut_ptr().add(i), m, _mm512_fmadd_ps(a, xv, yv));
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn dot_inline(a: *const f32, b: *const f32, n: usize) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(b.add(i)), acc);
        i += 16;
    }
    if i < n {
        let m = ((1u32 << (n - i)) - 1) as __mmask16;
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a.add(i)), _mm512_maskz_loadu_ps(m, b.add(i)), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// out[j] = dot(q, table[slots[j] * stride + offset ..][..q.len()]) * scale: attention scores of
/// one query head against the K rows a sequence names. Safety: the CPU has avx512f/bw/vl and every
/// addressed row lies inside `table`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn dot_rows(q: &[f32], table: &[f32], slots: &[u32], stride: usize, offset: usize, scale: f32, out: &mut [f32]) {
    let (qp, tp, d) = (q.as_ptr(), table.as_ptr(), q.len());
    for (o, &s) in out.iter_mut().zip(slots) {
        *o = dot_inline(qp, tp.add(s as usize * stride + offset), d) * scale;
    }
}

/// acc += Σ_j p[j] * table[slots[j] * stride + offset ..][..acc.len()]: the probability-weighted
/// sum of V rows. Safety: as `dot_rows`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn sum_rows(p: &[f32], table: &[f32], slots: &[u32], stride: usize, offset: usize, acc: &mut [f32]) {
    let (tp, d) = (table.as_ptr(), acc.len());
    let mut i = 0;
    // 64 columns at a time stay in registers across all positions.
    while i < d {
        let width = (d - i).min(64);
        let vecs = width.div_ceil(16);
        let mask = |v: usize| -> __mmask16 {
            let left = width - v * 16;
            if left >= 16 { 0xFFFF } else { ((1u32 << left) - 1) as __mmask16 }
        };
        let mut a = [_mm512_setzero_ps(); 4];
        for v in 0..vecs {
            a[v] = _mm512_maskz_loadu_ps(mask(v), acc.as_ptr().add(i + v * 16));
        }
        for (&pj, &s) in p.iter().zip(slots) {
            let row = tp.add(s as usize * stride + offset + i);
            let pv = _mm512_set1_ps(pj);
            for v in 0..vecs {
                a[v] = _mm512_fmadd_ps(pv, _mm512_maskz_loadu_ps(mask(v), row.add(v * 16)), a[v]);
            }
        }
        for v in 0..vecs {
            _mm512_mask_storeu_ps(acc.as_mut_ptr().add(i + v * 16), mask(v), a[v]);
        }
        i += width;
    }
}

/// gate[i] = silu(gate[i]) * up[i], 16 at a time with the vector exp (about 1 ulp from libm's).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len());
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    while i < gate.len() {
        let m: __mmask16 = if gate.len() - i >= 16 { 0xFFFF } else { ((1u32 << (gate.len() - i)) - 1) as __mmask16 };
        let g = _mm512_maskz_loadu_ps(m, gate.as_ptr().add(i));
        let u = _mm512_maskz_loadu_ps(m, up.as_ptr().add(i));
        let e = super::avx512_attn::exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g));
        let s = _mm512_div_ps(g, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(gate.as_mut_ptr().add(i), m, _mm512_mul_ps(s, u));
        i += 16;
    }
}
