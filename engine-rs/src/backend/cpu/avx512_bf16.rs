//! bf16 x bf16 dot products with `vdpbf16ps` (AVX512_BF16): 32 products per instruction with f32
//! accumulation, weights used straight from memory. Activations are rounded to bf16 first, so this
//! path is only taken when the model computes in bfloat16 (never on the float32 golden path).

use std::arch::x86_64::*;

/// Cache lines ahead that each weight row stream prefetches: decode reads several rows at once
/// and the hardware prefetcher alone leaves bandwidth unused on the VMs we measured.
const PREFETCH_BYTES: usize = 1024;

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

/// Where a tile's accumulators live between k blocks: `first` starts them at zero, `last`
/// reduces them into the output; otherwise they are spilled to / reloaded from `carry` as whole
/// vectors, so a k-blocked row adds exactly the same products in the same lanes and order as one
/// done in a single pass (the n = 1 loop), bit for bit.
#[derive(Clone, Copy)]
struct Span {
    first: bool,
    last: bool,
    carry: *mut __m512,
}

/// An R-rows x T-tokens register tile over `len` elements of k: each weight vector is loaded once
/// and used for all T tokens. `prefetch` adds software prefetch to each of the R row streams.
/// x rows and w rows are `ld` apart (the full k).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn tile<const R: usize, const T: usize>(x: *const u16, ld: usize, len: usize, w: *const u16, out: *mut f32, ldo: usize, prefetch: bool, span: Span) {
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    if !span.first {
        for r in 0..R {
            for t in 0..T {
                acc[r][t] = *span.carry.add(r * T + t);
            }
        }
    }
    let full = len & !31;
    let mut i = 0;
    while i < full {
        let mut wv: [__m512bh; R] = std::mem::zeroed();
        for r in 0..R {
            let p = w.add(r * ld + i);
            if prefetch {
                _mm_prefetch::<_MM_HINT_T0>((p as *const i8).add(PREFETCH_BYTES));
            }
            wv[r] = std::mem::transmute(_mm512_loadu_si512(p as *const __m512i));
        }
        for t in 0..T {
            let xv: __m512bh = std::mem::transmute(_mm512_loadu_si512(x.add(t * ld + i) as *const __m512i));
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
            wv[r] = load(w.add(r * ld + full), m);
        }
        for t in 0..T {
            let xv = load(x.add(t * ld + full), m);
            for r in 0..R {
                acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], xv);
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            if span.last {
                *out.add(t * ldo + r) = _mm512_reduce_add_ps(acc[r][t]);
            } else {
                *span.carry.add(r * T + t) = acc[r][t];
            }
        }
    }
}

/// One row's dot product for single-token decode: the `tile::<1, 1>` arithmetic (one accumulator,
/// 32 products a step, masked tail, the same reduction), so bit-identical to the row in any tile,
/// but without the k-block carry: with it the batch-1 loop measured 0.72-0.87x.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn row_dot(x: *const u16, k: usize, w: *const u16) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let full = k & !31;
    let mut i = 0;
    while i < full {
        let wv: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.add(i) as *const __m512i));
        let xv: __m512bh = std::mem::transmute(_mm512_loadu_si512(x.add(i) as *const __m512i));
        acc = _mm512_dpbf16_ps(acc, wv, xv);
        i += 32;
    }
    if full < k {
        let m = ((1u64 << (k - full)) - 1) as __mmask32;
        acc = _mm512_dpbf16_ps(acc, load(w.add(full), m), load(x.add(full), m));
    }
    _mm512_reduce_add_ps(acc)
}

/// Most tokens per register tile: 4 rows x 6 tokens = 24 accumulators + 4 weight vectors + 1
/// activation vector of the 32 zmm registers (3 x 8 measured the same or ~5% slower).
const MAX_TOKENS: usize = 6;
/// Rows per register tile.
const ROWS: usize = 4;
/// Activation bytes of one k block (all tokens) kept in L1 while the row tile's weights of that
/// block are reused for every token group.
const X_BLOCK_BYTES: usize = 32 * 1024;
/// Above this many tokens (prefill) the k blocks would get too short to pay for carrying the
/// accumulators, and the token groups go outermost instead.
const MAX_BLOCKED_TOKENS: usize = 32;

macro_rules! token_tiles {
    ($r:literal, $tn:expr, $x:expr, $ld:expr, $len:expr, $w:expr, $o:expr, $ldo:expr, $span:expr) => {
        match $tn {
            6 => tile::<$r, 6>($x, $ld, $len, $w, $o, $ldo, true, $span),
            5 => tile::<$r, 5>($x, $ld, $len, $w, $o, $ldo, true, $span),
            4 => tile::<$r, 4>($x, $ld, $len, $w, $o, $ldo, true, $span),
            3 => tile::<$r, 3>($x, $ld, $len, $w, $o, $ldo, true, $span),
            2 => tile::<$r, 2>($x, $ld, $len, $w, $o, $ldo, true, $span),
            _ => tile::<$r, 1>($x, $ld, $len, $w, $o, $ldo, true, $span),
        }
    };
}

/// out[t*ldo + r] = dot(x[t], w[r]) for t < n, r < nrows; x is n x k bf16, w nrows x k bf16.
/// Decode batches (2 <= n <= 32): rows go 4 at a time; for each row tile, k goes in blocks whose
/// activations (all n tokens) fit in L1, and within a block every token group (equal groups of at
/// most 6: 16 = 6 + 5 + 5) reuses the tile's weights from L1. So each weight cache line comes from
/// memory once per matmul and the memory stream is spread over the whole computation instead of
/// one token group's. Accumulators are carried between k blocks in `carry`, one slot set per group.
/// Safety: the CPU has avx512f/bw/vl and avx512bf16; the pointers cover those extents.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub unsafe fn gemm_rows(x: *const u16, n: usize, k: usize, w: *const u16, nrows: usize, out: *mut f32, ldo: usize) {
    let whole = Span { first: true, last: true, carry: std::ptr::null_mut() };
    if n == 1 {
        // Single-token decode: one row after the other is one sequential stream per thread, which
        // the hardware prefetcher follows on its own; several row streams with software prefetch
        // measured slower here. Same single accumulator per row as the tiles (batch invariance).
        for r in 0..nrows {
            *out.add(r) = row_dot(x, k, w.add(r * k));
        }
        return;
    }
    let groups = n.div_ceil(MAX_TOKENS);
    if n > MAX_BLOCKED_TOKENS {
        // Prefill: token groups outer, each over the full k, so a group's activations stay in
        // L1/L2 while the rows stream past (k blocks of 256 for 512 tokens measured 2-3x slower).
        let mut t = 0;
        for g in 0..groups {
            let tn = n / groups + usize::from(g < n % groups);
            let (xt, ot) = (x.add(t * k), out.add(t * ldo));
            let mut r = 0;
            while r < nrows {
                if r + ROWS <= nrows {
                    token_tiles!(4, tn, xt, k, k, w.add(r * k), ot.add(r), ldo, whole);
                    r += ROWS;
                } else {
                    token_tiles!(1, tn, xt, k, k, w.add(r * k), ot.add(r), ldo, whole);
                    r += 1;
                }
            }
            t += tn;
        }
        return;
    }
    let kb = if groups == 1 { k } else { (X_BLOCK_BYTES / (2 * n)).max(256) & !31 };
    let kb = if kb >= k { k } else { kb };
    let mut carry: Vec<__m512> = if kb < k { vec![_mm512_setzero_ps(); groups * ROWS * MAX_TOKENS] } else { Vec::new() };
    let mut r = 0;
    while r < nrows {
        let rows = if r + ROWS <= nrows { ROWS } else { 1 };
        let mut k0 = 0;
        while k0 < k {
            let len = kb.min(k - k0);
            let wr = w.add(r * k + k0);
            let mut t = 0;
            for g in 0..groups {
                let tn = n / groups + usize::from(g < n % groups);
                let span = Span { first: k0 == 0, last: k0 + len == k, carry: carry.as_mut_ptr().wrapping_add(g * ROWS * MAX_TOKENS) };
                let (xt, ot) = (x.add(t * k + k0), out.add(t * ldo + r));
                if rows == ROWS {
                    token_tiles!(4, tn, xt, k, len, wr, ot, ldo, span);
                } else {
                    token_tiles!(1, tn, xt, k, len, wr, ot, ldo, span);
                }
                t += tn;
            }
            k0 += len;
        }
        r += rows;
    }
}
