//! bf16 x bf16 dot products with `vdpbf16ps` (AVX512_BF16): 32 products per instruction with f32
//! accumulation, weights used straight from memory. Activations are rounded to bf16 first, so this
//! path is only taken when the model computes in bfloat16 (never on the float32 golden path).

use std::arch::x86_64::*;

/// How far ahead of the 4-row tile being multiplied the batched kernel prefetches weights, in
/// tiles, and how many cache lines it asks for per 32-wide k step. A 4-row tile is 4 lines a k
/// step, so a tile with one token group needs 4 lines a step to bring the next one in; with two or
/// more groups, 2 lines a step spread the same lines over the first two groups. On Zen 4 that
/// beat 4 lines a step (the whole next tile during the first group) by 7-20% at 12-24 tokens,
/// from DRAM (docs/cpu-kernels.md).
const PREFETCH_TILES_AHEAD: usize = 2;
const PREFETCH_LINES_PER_STEP_ONE_GROUP: usize = 4;
const PREFETCH_LINES_PER_STEP: usize = 2;

/// Tokens whose activations a sweep over the task's tiles keeps in L2 (24 x k bf16: 96 KiB at
/// k = 2048, 384 KiB at k = 8192); a prefill sweeps the task once per block of this many tokens.
/// A decode batch of up to 24 is one block. Prefill 512 on Zen 4: 191-197 tok/s against 176-188
/// with all tokens in one block (each tile then streamed all 512 tokens' activations from L3).
const TOKEN_BLOCK: usize = 24;

/// Tokens one register tile covers (4 rows x 6 tokens of accumulators, see `gemm_rows`).
const TOKEN_GROUP: usize = 6;

/// A byte range of weights to bring into L2 while a tile computes, walked sequentially.
struct Prefetch {
    next: usize,
    end: usize,
    lines_per_step: usize,
}

impl Prefetch {
    fn none() -> Prefetch {
        Prefetch { next: 0, end: 0, lines_per_step: 0 }
    }

    /// Issues the next few lines' prefetches. `prefetcht1` (L2), not `t0`: on Zen 4, lines pulled
    /// into L1 ahead of time evicted the activations the tile was reusing and read slower than no
    /// prefetch at all; `nta` did the same.
    #[inline(always)]
    unsafe fn step(&mut self) {
        if self.next < self.end {
            for j in 0..self.lines_per_step {
                // Prefetches never fault, so lines past the range's end are harmless.
                _mm_prefetch::<_MM_HINT_T1>((self.next + 64 * j) as *const i8);
            }
            self.next += 64 * self.lines_per_step;
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
    if R == 4 {
        for t in 0..T {
            _mm_storeu_ps(out.add(t * ldo), sum4(acc[0][t], acc[1][t], acc[2][t], acc[3][t]));
        }
    } else {
        for r in 0..R {
            for t in 0..T {
                *out.add(t * ldo + r) = sum(acc[r][t]);
            }
        }
    }
}

/// The sum of a 16-lane accumulator, always in one pairing (halves of 512, then of 256, then lanes
/// 0+2 and 1+3, then those two), the pairing `sum4` uses for four at once: a row's number must not
/// depend on whether its tile had 1 or 4 rows (batch invariance).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn sum(a: __m512) -> f32 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
    let h = _mm256_add_ps(_mm512_castps512_ps256(a), hi);
    let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let p = _mm_add_ps(q, _mm_permute_ps::<0b01_00_11_10>(q));
    _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)))
}

/// `[sum(a), sum(b), sum(c), sum(d)]` with the same additions, done four lanes wide: a quarter of
/// the shuffles and adds of four `sum`s, and one 16-byte store for four rows. At k = 2048 the
/// per-tile reductions were ~10% of a 4 x 6 tile's time.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn sum4(a: __m512, b: __m512, c: __m512, d: __m512) -> __m128 {
    // 256-bit halves: ab = [a.lo + a.hi | b.lo + b.hi], 128-bit lanes l0 l1 of each.
    let ab = _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b));
    let cd = _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(c, d), _mm512_shuffle_f32x4::<0b11_10_11_10>(c, d));
    // 128-bit halves: lanes [a4, b4, c4, d4].
    let x = _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(ab, cd), _mm512_shuffle_f32x4::<0b11_01_11_01>(ab, cd));
    let y = _mm512_add_ps(x, _mm512_permute_ps::<0b01_00_11_10>(x)); // lanes 0+2, 1+3
    let z = _mm512_add_ps(y, _mm512_permute_ps::<0b10_11_00_01>(y)); // then 0+1
    let first_of_each_lane = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
    _mm512_castps512_ps128(_mm512_permutexvar_ps(first_of_each_lane, z))
}

/// Tokens t0..t1 against the R rows at `w` (outputs at column `o`), in groups of up to 6 tokens:
/// one `tile` call per group, the groups sharing one prefetch stream.
macro_rules! token_groups {
    ($r:literal, $t0:expr, $t1:expr, $x:expr, $k:expr, $w:expr, $o:expr, $ldo:expr, $pf:expr) => {{
        let mut t = $t0;
        while t < $t1 {
            let (xt, ot) = ($x.add(t * $k), $o.add(t * $ldo));
            match ($t1 - t).min(TOKEN_GROUP) {
                6 => tile::<$r, 6>(xt, $k, $w, ot, $ldo, $pf),
                5 => tile::<$r, 5>(xt, $k, $w, ot, $ldo, $pf),
                4 => tile::<$r, 4>(xt, $k, $w, ot, $ldo, $pf),
                3 => tile::<$r, 3>(xt, $k, $w, ot, $ldo, $pf),
                2 => tile::<$r, 2>(xt, $k, $w, ot, $ldo, $pf),
                _ => tile::<$r, 1>(xt, $k, $w, ot, $ldo, $pf),
            }
            t += TOKEN_GROUP;
        }
    }};
}

/// out[t*ldo + r] = dot(x[t], w[r]) for t < n, r < nrows; x is n x k bf16, w nrows x k bf16.
/// For several tokens, block by block of TOKEN_BLOCK tokens, each 4-row tile runs all the block's
/// token groups (4 x 6 accumulators + 4 weight registers fit the 32 zmm registers) while its rows
/// are in L1/L2, and prefetches the tile PREFETCH_TILES_AHEAD tiles on as one sequential stream,
/// as far as `readable_rows` (the rows of the matrix from `w` on, which may go past this task's
/// `nrows`).
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
    let mut t0 = 0;
    while t0 < n {
        let t1 = (t0 + TOKEN_BLOCK).min(n);
        let lines_per_step = if t1 - t0 <= TOKEN_GROUP { PREFETCH_LINES_PER_STEP_ONE_GROUP } else { PREFETCH_LINES_PER_STEP };
        let mut r = 0;
        while r + 4 <= nrows {
            let next = w as usize + (r + 4 * PREFETCH_TILES_AHEAD) * k * 2;
            let mut prefetch = Prefetch { next, end: (next + 4 * k * 2).min(readable_end), lines_per_step };
            token_groups!(4, t0, t1, x, k, w.add(r * k), out.add(r), ldo, &mut prefetch);
            r += 4;
        }
        while r < nrows {
            token_groups!(1, t0, t1, x, k, w.add(r * k), out.add(r), ldo, &mut Prefetch::none());
            r += 1;
        }
        t0 = t1;
    }
}
