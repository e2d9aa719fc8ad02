//! AVX-512 VNNI products of row-interleaved weight groups (`gguf/interleaved.rs`) with up to
//! `MAX_TOKENS` tokens: per 32-value block the group's values are unpacked once into registers whose
//! lane `r` is row `r`, then every token adds `vpdpbusd(values, its 4 bytes broadcast)` over 8
//! registers into 16 rows' integer sums at once, and one convert + fused multiply-add applies the 16
//! rows' scales. No horizontal sums, no scalar work per row.
//!
//! A token's arithmetic does not depend on the other tokens of the call (each has its own chains),
//! so prefill, batched decode and batch-1 decode give bit-identical results for the same row.
//! Integer parts are exact: Q4_0 adds −8·Σy and Q8_0 −128·Σy to its sum (the stored +8 / +128 bias),
//! as ggml does for Q4_0; Q4_1 adds m·s (s = d_y·Σy) in float, as ggml does.

use crate::gguf::interleaved::{GroupPtrs, PackedKind, GROUP};
use crate::gguf::quants::Q8Block;
use std::arch::x86_64::*;

/// Tokens per call: T accumulators + 8 value registers + scales fit the 32 zmm registers.
pub const MAX_TOKENS: usize = 8;

/// `dst[t * stride + r] = Σ_block (row r of the group) · token t` for `r < valid` and
/// `t < tokens <= MAX_TOKENS`, token t's block b at `acts[b * tile + t]` (a tile of `tile` tokens
/// with its blocks interleaved, so one block of every token is one contiguous run:
/// `Interleaved::matmul_many`).
///
/// # Safety
/// The CPU must support avx512f/bw/vl/dq, avx512vnni, fma and f16c; `g` must point at a group of
/// `blocks` blocks of `kind`; `acts` must be readable at every `b * tile + t` above; `dst` must be writable at
/// every `(t, r)` above.
#[allow(clippy::too_many_arguments)]
pub unsafe fn group_dot(kind: PackedKind, g: &GroupPtrs, blocks: usize, acts: *const Q8Block, tile: usize, tokens: usize, dst: *mut f32, stride: usize, valid: usize) {
    macro_rules! by_tokens {
        ($k:expr) => {
            match tokens {
                1 => run::<1, { $k }>(g, blocks, acts, tile, dst, stride, valid),
                2 => run::<2, { $k }>(g, blocks, acts, tile, dst, stride, valid),
                3 => run::<3, { $k }>(g, blocks, acts, tile, dst, stride, valid),
                4 => run::<4, { $k }>(g, blocks, acts, tile, dst, stride, valid),
                5 => run::<5, { $k }>(g, blocks, acts, tile, dst, stride, valid),
                6 => run::<6, { $k }>(g, blocks, acts, tile, dst, stride, valid),
                7 => run::<7, { $k }>(g, blocks, acts, tile, dst, stride, valid),
                8 => run::<8, { $k }>(g, blocks, acts, tile, dst, stride, valid),
                n => panic!("group_dot: {n} tokens (1..={MAX_TOKENS})"),
            }
        };
    }
    match kind {
        PackedKind::Q4_0 => by_tokens!(Q4_0),
        PackedKind::Q4_1 => by_tokens!(Q4_1),
        PackedKind::Q8_0 => by_tokens!(Q8_0),
    }
}

/// Bytes ahead of the block being multiplied that each call prefetches: the hardware prefetchers stop
/// at page boundaries and start cold on every matrix; measured on the decode sweep (gguf_bench.rs):
/// no prefetch 6.7 ms, 4 KB 4.6-5.2 ms, 16 KB 3.9-4.5 ms, 32 KB 4.7 ms.
const PREFETCH: usize = 16 << 10;
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
unsafe fn broadcast_dword(qs: &[i8; 32], p: usize) -> __m512i {
    _mm512_set1_epi32((qs.as_ptr() as *const i32).add(p).read_unaligned())
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
unsafe fn run<const T: usize, const K: u8>(g: &GroupPtrs, blocks: usize, acts: *const Q8Block, tile: usize, dst: *mut f32, stride: usize, valid: usize) {
    let mut acc = [_mm512_setzero_ps(); T];
    let low = _mm512_set1_epi8(0x0F);
    let qs_bytes = if K == Q8_0 { GROUP * 32 } else { GROUP * 16 };
    for b in 0..blocks {
        let q = g.qs.add(b * qs_bytes);
        for line in 0..qs_bytes / 64 {
            _mm_prefetch::<_MM_HINT_T0>(q.add(PREFETCH + line * 64) as *const i8);
        }
        // 8 registers of 16 lanes × 4 values: values 4p..4p+4 of each row in register p.
        let mut w = [_mm512_setzero_si512(); 8];
        if K == Q8_0 {
            for (p, wp) in w.iter_mut().enumerate() {
                *wp = _mm512_loadu_si512(q.add(p * 64) as *const _);
            }
        } else {
            for p in 0..4 {
                let v = _mm512_loadu_si512(q.add(p * 64) as *const _);
                w[p] = _mm512_and_si512(v, low);
                w[p + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(g.d.add(b * GROUP) as *const __m256i));
        let m = if K == Q4_1 { _mm512_cvtph_ps(_mm256_loadu_si256(g.m.add(b * GROUP) as *const __m256i)) } else { d };
        for t in 0..T {
            let y = &*acts.add(b * tile + t);
            let mut sum = match K {
                Q4_0 => _mm512_set1_epi32(-8 * y.isum),
                Q8_0 => _mm512_set1_epi32(-128 * y.isum),
                _ => _mm512_setzero_si512(),
            };
            for (p, wp) in w.iter().enumerate() {
                sum = _mm512_dpbusd_epi32(sum, *wp, broadcast_dword(&y.qs, p));
            }
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(d, _mm512_set1_ps(y.d)), acc[t]);
            if K == Q4_1 {
                acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(y.s), acc[t]);
            }
        }
    }
    let mask: __mmask16 = if valid >= GROUP { 0xFFFF } else { (1u16 << valid) - 1 };
    for (t, a) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(dst.add(t * stride), mask, *a);
    }
}
