//! bf16 x bf16 dot products with `vdpbf16ps` (AVX512_BF16): 32 products per instruction with f32
//! accumulation, weights used straight from memory. Activations are rounded to bf16 first, so this
//! path is only taken when the model computes in bfloat16 (never on the float32 golden path).

use super::panels;
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

/// Lines a k step for a tile over `tokens` tokens (one token group, or more).
fn prefetch_lines_per_step(tokens: usize) -> usize {
    if tokens <= TOKEN_GROUP {
        PREFETCH_LINES_PER_STEP_ONE_GROUP
    } else {
        PREFETCH_LINES_PER_STEP
    }
}

/// Tokens whose activations a sweep over the task's tiles keeps in L2 (24 x k bf16: 96 KiB at
/// k = 2048, 384 KiB at k = 8192); a prefill sweeps the task once per block of this many tokens.
/// A decode batch of up to 24 is one block. Prefill 512 on Zen 4: 191-197 tok/s against 176-188
/// with all tokens in one block (each tile then streamed all 512 tokens' activations from L3).
const TOKEN_BLOCK: usize = 24;

/// Tokens one register tile covers (4 rows x 6 tokens of accumulators, see `gemm_rows`).
const TOKEN_GROUP: usize = 6;

/// Byte ranges of weights to bring into L2 while a tile computes, walked one after the other
/// (one range for a row-major tile, one a panel for a panelled one).
struct Prefetch {
    next: usize,
    end: usize,
    lines_per_step: usize,
    /// Ranges still to walk after this one, in order, and how many of them there are.
    then: [(usize, usize); panels::MAX_PANELS],
    remaining: usize,
}

impl Prefetch {
    fn none() -> Prefetch {
        Prefetch::range(0, 0, 0)
    }

    fn range(next: usize, end: usize, lines_per_step: usize) -> Prefetch {
        Prefetch { next, end, lines_per_step, then: [(0, 0); panels::MAX_PANELS], remaining: 0 }
    }

    /// Issues the next few lines' prefetches. `prefetcht1` (L2), not `t0`: on Zen 4, lines pulled
    /// into L1 ahead of time evicted the activations the tile was reusing and read slower than no
    /// prefetch at all; `nta` did the same.
    #[inline(always)]
    unsafe fn step(&mut self) {
        if self.next >= self.end {
            if self.remaining == 0 {
                return;
            }
            let at = self.then.len() - self.remaining;
            (self.next, self.end) = self.then[at];
            self.remaining -= 1;
        }
        for j in 0..self.lines_per_step {
            // Prefetches never fault, so lines past the range's end are harmless.
            _mm_prefetch::<_MM_HINT_T1>((self.next + 64 * j) as *const i8);
        }
        self.next += 64 * self.lines_per_step;
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

/// Adds `len` columns of products into an R-rows x T-tokens register tile: token t's activations
/// at `x + t * ldx`, row r's weights at `w + r * ldw`; each weight vector is loaded once and used for
/// all T tokens; `prefetch` advances once per 32-wide k step. Columns past the last multiple of 32
/// go in one masked step, so a row split into pieces at multiples of 32 adds exactly what one call
/// over the whole row would, in the same order.
#[inline(always)]
unsafe fn accumulate<const R: usize, const T: usize>(
    acc: &mut [[__m512; T]; R],
    x: *const u16,
    ldx: usize,
    w: *const u16,
    ldw: usize,
    len: usize,
    prefetch: &mut Prefetch,
) {
    let full = len & !31;
    let mut i = 0;
    while i < full {
        let mut wv: [__m512bh; R] = std::mem::zeroed();
        for r in 0..R {
            wv[r] = std::mem::transmute(_mm512_loadu_si512(w.add(r * ldw + i) as *const __m512i));
        }
        prefetch.step();
        for t in 0..T {
            let xv: __m512bh = std::mem::transmute(_mm512_loadu_si512(x.add(t * ldx + i) as *const __m512i));
            for r in 0..R {
                acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], xv);
            }
        }
        i += 32;
    }
    if full < len {
        let m = ((1u64 << (len - full)) - 1) as __mmask32;
        let mut wv: [__m512bh; R] = std::mem::zeroed();
        for r in 0..R {
            wv[r] = load(w.add(r * ldw + full), m);
        }
        for t in 0..T {
            let xv = load(x.add(t * ldx + full), m);
            for r in 0..R {
                acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], xv);
            }
        }
    }
}

/// Writes a finished tile's sums: out[t * ldo + r] = the sum of acc[r][t].
#[inline(always)]
unsafe fn store<const R: usize, const T: usize>(acc: &[[__m512; T]; R], out: *mut f32, ldo: usize) {
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

/// The weights one tile reads: R rows of a row-major matrix (row r at `w + r * k`), or R rows of
/// one block of a panelled one (`rows`, the block's row count, and `row`, the tile's first row in
/// it: panel p of row r at `block + p * PANEL_COLS * rows + (row + r) * panel width`).
#[derive(Clone, Copy)]
enum Rows {
    Plain { w: *const u16 },
    Panelled { block: *const u16, rows: usize, row: usize },
}

/// An R-rows x T-tokens register tile over the full k (row by row for a row-major matrix, panel
/// by panel for a panelled one: the same chain of additions either way).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn tile<const R: usize, const T: usize>(x: *const u16, k: usize, rows: Rows, out: *mut f32, ldo: usize, prefetch: &mut Prefetch) {
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    match rows {
        Rows::Plain { w } => accumulate(&mut acc, x, k, w, k, k, prefetch),
        Rows::Panelled { block, rows, row } => {
            for p in 0..panels::panels(k) {
                let width = panels::panel_width(k, p);
                let w = block.add(p * panels::PANEL_COLS * rows + row * width);
                accumulate(&mut acc, x.add(p * panels::PANEL_COLS), k, w, width, width, prefetch);
            }
        }
    }
    store(&acc, out, ldo);
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
    ($r:literal, $t0:expr, $t1:expr, $x:expr, $k:expr, $rows:expr, $o:expr, $ldo:expr, $pf:expr) => {{
        let mut t = $t0;
        while t < $t1 {
            let (xt, ot) = ($x.add(t * $k), $o.add(t * $ldo));
            match ($t1 - t).min(TOKEN_GROUP) {
                6 => tile::<$r, 6>(xt, $k, $rows, ot, $ldo, $pf),
                5 => tile::<$r, 5>(xt, $k, $rows, ot, $ldo, $pf),
                4 => tile::<$r, 4>(xt, $k, $rows, ot, $ldo, $pf),
                3 => tile::<$r, 3>(xt, $k, $rows, ot, $ldo, $pf),
                2 => tile::<$r, 2>(xt, $k, $rows, ot, $ldo, $pf),
                _ => tile::<$r, 1>(xt, $k, $rows, ot, $ldo, $pf),
            }
            t += TOKEN_GROUP;
        }
    }};
}

/// out[t*ldo + r] = dot(x[t], w[r]) for t < n, r < nrows; x is n x k bf16, w nrows x k bf16,
/// row-major or, with `panelled`, in the panelled layout (`panels`; then `w` is the start of a
/// block).
/// For several tokens, block by block of TOKEN_BLOCK tokens, each 4-row tile runs all the block's
/// token groups (4 x 6 accumulators + 4 weight registers fit the 32 zmm registers) while its rows
/// are in L1/L2, and prefetches the tile PREFETCH_TILES_AHEAD tiles on as one sequential stream
/// (a panelled tile: one stream a panel), as far as `readable_rows` (the rows of the matrix from
/// `w` on, which may go past this task's `nrows`).
/// Safety: the CPU has avx512f/bw/vl and avx512bf16; the pointers cover those extents.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub unsafe fn gemm_rows(x: *const u16, n: usize, k: usize, w: *const u16, nrows: usize, readable_rows: usize, panelled: bool, out: *mut f32, ldo: usize) {
    if panelled {
        return gemm_panelled_rows(x, n, k, w, nrows, readable_rows.max(nrows), out, ldo);
    }
    if n == 1 {
        // Single-token decode: one row after the other is one sequential stream per thread, which
        // the hardware prefetcher follows on its own (software prefetch measured slower here).
        // Same single accumulator per row as the tiles (batch invariance).
        for r in 0..nrows {
            tile::<1, 1>(x, k, Rows::Plain { w: w.add(r * k) }, out.add(r), ldo, &mut Prefetch::none());
        }
        return;
    }
    // A 4-row tile is 4*k contiguous elements: the prefetch stream is the whole tile ahead.
    let readable_end = w as usize + readable_rows.max(nrows) * k * 2;
    let mut t0 = 0;
    while t0 < n {
        let t1 = (t0 + TOKEN_BLOCK).min(n);
        let lines_per_step = prefetch_lines_per_step(t1 - t0);
        let mut r = 0;
        while r + 4 <= nrows {
            let next = w as usize + (r + 4 * PREFETCH_TILES_AHEAD) * k * 2;
            let mut prefetch = Prefetch::range(next, (next + 4 * k * 2).min(readable_end), lines_per_step);
            token_groups!(4, t0, t1, x, k, Rows::Plain { w: w.add(r * k) }, out.add(r), ldo, &mut prefetch);
            r += 4;
        }
        while r < nrows {
            token_groups!(1, t0, t1, x, k, Rows::Plain { w: w.add(r * k) }, out.add(r), ldo, &mut Prefetch::none());
            r += 1;
        }
        t0 = t1;
    }
}

/// `gemm_rows` over a panelled matrix whose block starts at `w`; `readable_rows` >= `nrows` rows
/// from `w` on (whole blocks, the last one possibly short, as in the matrix).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn gemm_panelled_rows(x: *const u16, n: usize, k: usize, w: *const u16, nrows: usize, readable_rows: usize, out: *mut f32, ldo: usize) {
    let block_at = |row: usize| w.add(row * k); // row: a multiple of BLOCK_ROWS
    if n == 1 {
        // Panel by panel through each block, the block's rows inside: one sequential stream, and
        // one panel of activations (8 KiB) in L1 at a time. Each row's accumulator is carried from
        // panel to panel, so its chain of additions is the row-major one.
        let mut b0 = 0;
        while b0 < nrows {
            // The block's rows as stored (its layout), and how many of them are this call's.
            let rows = panels::block_rows(readable_rows, b0);
            let count = rows.min(nrows - b0);
            let mut acc = [[[_mm512_setzero_ps(); 1]; 1]; panels::BLOCK_ROWS];
            for p in 0..panels::panels(k) {
                let width = panels::panel_width(k, p);
                let panel = block_at(b0).add(p * panels::PANEL_COLS * rows);
                for (r, a) in acc.iter_mut().enumerate().take(count) {
                    accumulate(a, x.add(p * panels::PANEL_COLS), k, panel.add(r * width), width, width, &mut Prefetch::none());
                }
            }
            for (r, a) in acc.iter().enumerate().take(count) {
                store(a, out.add(b0 + r), ldo);
            }
            b0 += panels::BLOCK_ROWS;
        }
        return;
    }
    // The tile PREFETCH_TILES_AHEAD on: its piece of every panel, walked one after the other.
    let prefetch_for = |row: usize, lines_per_step: usize| -> Prefetch {
        if row >= readable_rows {
            return Prefetch::none();
        }
        let tile_rows = 4.min(panels::block_rows(readable_rows, row) - row % panels::BLOCK_ROWS);
        let piece = |p: usize| {
            let start = w as usize + panels::offset(readable_rows, k, row, p) * 2;
            (start, start + tile_rows * panels::panel_width(k, p) * 2)
        };
        let mut pf = Prefetch::range(piece(0).0, piece(0).1, lines_per_step);
        let more = panels::panels(k) - 1;
        for p in 0..more {
            pf.then[pf.then.len() - more + p] = piece(p + 1);
        }
        pf.remaining = more;
        pf
    };
    let mut t0 = 0;
    while t0 < n {
        let t1 = (t0 + TOKEN_BLOCK).min(n);
        let lines_per_step = prefetch_lines_per_step(t1 - t0);
        let mut b0 = 0;
        while b0 < nrows {
            let rows = panels::block_rows(readable_rows, b0);
            let count = rows.min(nrows - b0);
            let block = block_at(b0);
            let mut r = 0;
            while r + 4 <= count {
                let mut prefetch = prefetch_for(b0 + r + 4 * PREFETCH_TILES_AHEAD, lines_per_step);
                token_groups!(4, t0, t1, x, k, Rows::Panelled { block, rows, row: r }, out.add(b0 + r), ldo, &mut prefetch);
                r += 4;
            }
            while r < count {
                token_groups!(1, t0, t1, x, k, Rows::Panelled { block, rows, row: r }, out.add(b0 + r), ldo, &mut Prefetch::none());
                r += 1;
            }
            b0 += panels::BLOCK_ROWS;
        }
        t0 = t1;
    }
}
