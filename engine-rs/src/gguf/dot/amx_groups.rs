//! AMX int8 products of row-interleaved weight groups (`gguf/interleaved.rs`) with 16 tokens at once
//! (prefill, large decode batches). Per 32-value block one `TDPBSUD` multiplies a 16 tokens × 32
//! signed-byte activation tile by the group's 8 × 64 unsigned-byte weight tile (the interleaved
//! order is AMX's B-tile order: row p holds values 4p..4p+4 of the 16 rows) into 16 × 16 exact
//! integer sums; vector code then applies the per-block scales into 16 token accumulators.
//!
//! The float steps are those of `avx512_groups` operation for operation (the integer sums are exact
//! either way), so a token's result is bit-identical whether its batch ran on tiles or on VNNI.
//! A group's tile products all run before its scaling (see `Scratch`).

use crate::gguf::interleaved::{GroupPtrs, PackedKind, GROUP};
use crate::gguf::quants::Q8Block;
use std::arch::asm;
use std::arch::x86_64::*;

/// Tokens per tile call (the A tile's height).
pub const TOKENS: usize = 16;

/// ldtilecfg's operand (palette 1): tmm0/tmm1 the 16 × 16 i32 sums, tmm2/tmm4 the activation tiles
/// (16 tokens × 32 bytes), tmm3/tmm5 the weight tiles (8 × 64 bytes); even blocks use the first of
/// each pair, odd blocks the second.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 32, 64, 32, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 8, 16, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
};

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct WeightTile([u8; 512]);
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct SumTile([i32; TOKENS * GROUP]);

/// Per-task buffers for one group: every block's unpacked Q4 weight tile and its 16 × 16 sums.
/// All tile products of a group are done before any scaling reads a sum back: a vector load right
/// behind the tile store it depends on stalls the core (measured: twice slower than VNNI).
pub struct Scratch {
    weights: Vec<WeightTile>,
    sums: Vec<SumTile>,
}

impl Scratch {
    pub fn new(blocks: usize) -> Scratch {
        Scratch { weights: vec![WeightTile([0; 512]); blocks], sums: vec![SumTile([0; TOKENS * GROUP]); blocks] }
    }
}

/// Loads the tile configuration on this thread; call before `group_tile` on a thread, pair with `release`.
///
/// # Safety
/// `crate::backend::cpu::amx::int8_available()` must be true.
pub unsafe fn configure() {
    asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack, readonly));
}

/// Frees this thread's tile state.
///
/// # Safety
/// As `configure`.
pub unsafe fn release() {
    asm!("tilerelease", options(nostack, nomem));
}

/// `dst[t * stride + r] = row r of the group · token t` for 16 tokens whose blocks start at `acts`
/// (token t's block b at `acts[t * act_stride + b]`) and `r < valid`.
///
/// # Safety
/// `configure()` was called on this thread; the CPU has AVX-512 (F/BW/VL/DQ), FMA and F16C; `g` points
/// at a group of `blocks` blocks of `kind`; the 16 tokens' blocks are readable; `dst` is writable at
/// every `(t, r)` above.
pub unsafe fn group_tile(
    kind: PackedKind,
    g: &GroupPtrs,
    blocks: usize,
    acts: *const Q8Block,
    act_stride: usize,
    dst: *mut f32,
    stride: usize,
    valid: usize,
    scratch: &mut Scratch,
) {
    match kind {
        PackedKind::Q4_0 => run::<Q4_0>(g, blocks, acts, act_stride, dst, stride, valid, scratch),
        PackedKind::Q4_1 => run::<Q4_1>(g, blocks, acts, act_stride, dst, stride, valid, scratch),
        PackedKind::Q8_0 => run::<Q8_0>(g, blocks, acts, act_stride, dst, stride, valid, scratch),
    }
}

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

/// Unpacks block `b`'s Q4 values into its weight tile (Q8_0 blocks are tiles as stored).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn unpack(g: &GroupPtrs, b: usize, tile: &mut WeightTile) {
    let q = g.qs.add(b * GROUP * 16);
    let low = _mm512_set1_epi8(0x0F);
    let w = tile.0.as_mut_ptr();
    for p in 0..4 {
        let v = _mm512_loadu_si512(q.add(p * 64) as *const _);
        _mm512_store_si512(w.add(p * 64) as *mut _, _mm512_and_si512(v, low));
        _mm512_store_si512(w.add((p + 4) * 64) as *mut _, _mm512_and_si512(_mm512_srli_epi16(v, 4), low));
    }
}

/// One block's tile product: 16 tokens' activations at `a` (rows `a_stride_bytes` apart) times the
/// weight tile at `w`, stored to `sums`. Alternate blocks use alternate tiles so consecutive products
/// do not wait on each other's registers.
#[inline]
unsafe fn product(parity: usize, a: *const i8, a_stride_bytes: usize, w: *const u8, sums: *mut i32) {
    if parity == 0 {
        asm!(
            "tilezero tmm0",
            "tileloadd tmm2, [{a} + {sa} * 1]",
            "tileloadd tmm3, [{w} + {sw} * 1]",
            "tdpbsud tmm0, tmm2, tmm3",
            "tilestored [{c} + {sc} * 1], tmm0",
            a = in(reg) a, sa = in(reg) a_stride_bytes, w = in(reg) w, sw = in(reg) 64usize,
            c = in(reg) sums, sc = in(reg) 64usize, options(nostack),
        );
    } else {
        asm!(
            "tilezero tmm1",
            "tileloadd tmm4, [{a} + {sa} * 1]",
            "tileloadd tmm5, [{w} + {sw} * 1]",
            "tdpbsud tmm1, tmm4, tmm5",
            "tilestored [{c} + {sc} * 1], tmm1",
            a = in(reg) a, sa = in(reg) a_stride_bytes, w = in(reg) w, sw = in(reg) 64usize,
            c = in(reg) sums, sc = in(reg) 64usize, options(nostack),
        );
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn run<const K: u8>(
    g: &GroupPtrs,
    blocks: usize,
    acts: *const Q8Block,
    act_stride: usize,
    dst: *mut f32,
    stride: usize,
    valid: usize,
    scratch: &mut Scratch,
) {
    let a_stride_bytes = act_stride * std::mem::size_of::<Q8Block>();
    if K != Q8_0 {
        for b in 0..blocks {
            unpack(g, b, &mut scratch.weights[b]);
        }
    }
    for b in 0..blocks {
        let w = if K == Q8_0 { g.qs.add(b * GROUP * 32) } else { scratch.weights[b].0.as_ptr() };
        product(b % 2, (*acts.add(b)).qs.as_ptr(), a_stride_bytes, w, scratch.sums[b].0.as_mut_ptr());
    }
    let mut acc = [_mm512_setzero_ps(); TOKENS];
    for b in 0..blocks {
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(g.d.add(b * GROUP) as *const __m256i));
        let m = if K == Q4_1 { _mm512_cvtph_ps(_mm256_loadu_si256(g.m.add(b * GROUP) as *const __m256i)) } else { d };
        let sums = scratch.sums[b].0.as_ptr();
        for (t, a) in acc.iter_mut().enumerate() {
            let y = &*acts.add(t * act_stride + b);
            let mut sum = _mm512_load_si512(sums.add(t * GROUP) as *const _);
            // The same integer as avx512_groups' (bias first there, last here: integer sums are exact).
            match K {
                Q4_0 => sum = _mm512_add_epi32(sum, _mm512_set1_epi32(-8 * y.isum)),
                Q8_0 => sum = _mm512_add_epi32(sum, _mm512_set1_epi32(-128 * y.isum)),
                _ => {}
            }
            *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(d, _mm512_set1_ps(y.d)), *a);
            if K == Q4_1 {
                *a = _mm512_fmadd_ps(m, _mm512_set1_ps(y.s), *a);
            }
        }
    }
    let mask: __mmask16 = if valid >= GROUP { 0xFFFF } else { (1u16 << valid) - 1 };
    for (t, a) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(dst.add(t * stride), mask, *a);
    }
}
