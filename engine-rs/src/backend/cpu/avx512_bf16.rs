//! bf16 x bf16 dot products with `vdpbf16ps` (AVX512_BF16): 32 products per instruction with f32
//! accumulation, weights used straight from memory. Activations are rounded to bf16 first, so this
//! path is only taken when the model computes in bfloat16 (never on the float32 golden path).

use std::arch::x86_64::*;

/// How far ahead of the 4-row tile being multiplied the batched kernel prefetches weights, in
/// tiles, and how many cache lines it asks for per 32-wide k step (4 lines a step bring a whole
/// 4-row tile in during the first token group of the tile before it).
const PREFETCH_TILES_AHEAD: usize = 2;
const PREFETCH_LINES_PER_STEP: usize = 4;

/// A byte range of weights to bring into L2 while a tile computes, walked sequentially.
struct Prefetch {
    next: usize,
    end: usize,
}

impl Prefetch {
    fn none() -> Prefetch {
        Prefetch { next: 0, end: 0 }
    }

    /// Issues the next few lines' prefetches. `prefetcht1` (L2), not `t0`: on Zen 4, lines pulled
    /// into L1 ahead of time evicted the activations the tile was reusing and read slower than no
    /// prefetch at all; `nta` did the same.
    #[inline(always)]
    unsafe fn step(&mut self) {
        if self.next < self.end {
            for j in 0..PREFETCH_LINES_PER_STEP {
                // Prefetches never fault, so lines past the range's end are harmless.
                _mm_prefetch::<_MM_HINT_T1>((self.next + 64 * j) as *const i8);
            }
            self.next += 64 * PREFETCH_LINES_PER_STEP;
        }
    }
}

/// Rounds f32 activations to bf16 (nearest even), 32 at a time.
/// Safety: the CPU has avx512f/bw/vl and avx512bf16; `out.len() >= x.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub unsafe fn to_bf16(x: &[f32], out: &mut [u16]) {
    let n = x.len();
    let mut i = 0;
    while i + 32 <= n {
        let lo = _mm512_loadu_ps(x.as_ptr().add(i));
        let hi = _mm512_loadu_ps(x.as_ptr().add(i + 16));
        let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(out.as_mut_ptr().add(i) as *mut __m512i, packed);
        i += 32;
    }
    for j in i..n {
        out[j] = half::bf16::from_f32(x[j]).to_bits();
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn load(p: *const u16, m: __mmask32) -> __m512bh {
    std::mem::transmute(_mm512_maskz_loadu_epi16(m, p as *const i16))
}

/// An R-rows x T-tokens register tile over the full k: each weight vector is loaded once and
/// used for all T tokens; `prefetch` advances once per k step.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn tile<const R: usize, const T: usize>(x: *const u16, k: usize, w: *const u16, out: *mut f32, ldo: usize, prefetch: &mut Prefetch) {
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let full = k & !31;
    let mut i = 0;
    while i < full {
        let mut wv: [__m512bh; R] = std::mem::zeroed();
        for r in 0..R {
            wv[r] = std::mem::transmute(_mm512_loadu_si512(w.add(r * k + i) as *const __m512i));
        }
        prefetch.step();
        for t in 0..T {
            let xv: __m512bh = std::mem::transmute(_mm512_loadu_si512(x.add(t * k + i) as *const __m512i));
            for r in 0..R {
                acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], xv);
            }
        }
        i += 32;
    }
    if full < k {
        let m = ((1u64 << (k - full)) - 1) as __mmask32;
        let mut wv: [__m512bh; R] = std::mem::zeroed();
        for r in 0..R {
            wv[r] = load(w.add(r * k + full), m);
        }
        for t in 0..T {
            let xv = load(x.add(t * k + full), m);
            for r in 0..R {
                acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], xv);
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            *out.add(t * ldo + r) = _mm512_reduce_add_ps(acc[r][t]);
        }
    }
}

macro_rules! token_tiles {
    ($r:literal, $tn:expr, $x:expr, $k:expr, $w:expr, $o:expr, $ldo:expr, $pf:expr) => {
        match $tn {
            6 => tile::<$r, 6>($x, $k, $w, $o, $ldo, $pf),
            5 => tile::<$r, 5>($x, $k, $w, $o, $ldo, $pf),
            4 => tile::<$r, 4>($x, $k, $w, $o, $ldo, $pf),
            3 => tile::<$r, 3>($x, $k, $w, $o, $ldo, $pf),
            2 => tile::<$r, 2>($x, $k, $w, $o, $ldo, $pf),
            _ => tile::<$r, 1>($x, $k, $w, $o, $ldo, $pf),
        }
    };
}

/// out[t*ldo + r] = dot(x[t], w[r]) for t < n, r < nrows; x is n x k bf16, w nrows x k bf16.
/// For several tokens, each 4-row tile runs all its token groups (4 x 6 accumulators + 4 weight
/// registers fit the 32 zmm registers) while its rows are in L1/L2, and prefetches the tile
/// PREFETCH_TILES_AHEAD tiles on as one sequential stream, as far as `readable_rows` (the rows of
/// the matrix from `w` on, which may go past this task's `nrows`).
/// Safety: the CPU has avx512f/bw/vl and avx512bf16; the pointers cover those extents.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub unsafe fn gemm_rows(x: *const u16, n: usize, k: usize, w: *const u16, nrows: usize, readable_rows: usize, out: *mut f32, ldo: usize) {
    if n == 1 {
        // Single-token decode: one row after the other is one sequential stream per thread, which
        // the hardware prefetcher follows on its own (software prefetch measured slower here).
        // Same single accumulator per row as the tiles (batch invariance).
        for r in 0..nrows {
            tile::<1, 1>(x, k, w.add(r * k), out.add(r), ldo, &mut Prefetch::none());
        }
        return;
    }
    // A 4-row tile is 4*k contiguous elements: the prefetch stream is the whole tile ahead.
    let readable_end = w as usize + readable_rows.max(nrows) * k * 2;
    let mut r = 0;
    while r + 4 <= nrows {
        let next = w as usize + (r + 4 * PREFETCH_TILES_AHEAD) * k * 2;
        let mut prefetch = Prefetch { next, end: (next + 4 * k * 2).min(readable_end) };
        let mut t = 0;
        while t < n {
            let tn = (n - t).min(6);
            token_tiles!(4, tn, x.add(t * k), k, w.add(r * k), out.add(t * ldo + r), ldo, &mut prefetch);
            t += tn;
        }
        r += 4;
    }
    while r < nrows {
        let mut t = 0;
        while t < n {
            let tn = (n - t).min(6);
            token_tiles!(1, tn, x.add(t * k), k, w.add(r * k), out.add(t * ldo + r), ldo, &mut Prefetch::none());
            t += tn;
        }
        r += 1;
    }
}
