//! AMX int8 products of row-interleaved weight groups (`gguf/interleaved.rs`) with 16 tokens at once
//! (prefill chunks, large decode batches). Per 32-value block one `TDPBSUD` multiplies the 16 tokens'
//! signed activation bytes (tile A: 16 rows of 32 bytes, rows one `Q8Block` apart) by the group's
//! weight tile (tile B: 8 rows of 64 bytes, row p holding values 4p..4p+4 of the 16 rows, which is
//! the interleaved order; Q4 nibbles are unpacked to bytes once per group) into 16 × 16 exact
//! integer sums, which vector code then scales into 16 token accumulators (lanes = rows).
//!
//! The float steps are those of `avx512_groups` operation for operation and the integer sums are
//! exact either way, so a token's result is bit-identical whether its batch ran on tiles or VNNI.
//! Each block's sums go through memory (the scales differ per block); reading them back right
//! behind the tile store stalls, so scaling trails the tile products by `LAG` blocks. What made an
//! earlier attempt no faster than VNNI was the A tiles: 16 tokens' blocks 792 bytes apart, out of
//! L2; with the tiles' blocks interleaved (`quantize_tiles`) a tile is 704 contiguous bytes.

use crate::backend::cpu::amx::TileConfig;
use crate::gguf::interleaved::{GroupPtrs, PackedKind, GROUP};
use crate::gguf::quants::Q8Block;
use std::arch::asm;
use std::arch::x86_64::*;

/// Tokens per tile product (the A tile's height).
pub const TOKENS: usize = 16;

/// Blocks the scaling trails the tile products by.
const LAG: usize = 2;
/// Blocks ahead of the tile product that their activations are prefetched.
const PREFETCH_BLOCKS: usize = 4;
/// Sum tiles in the ring (more than LAG, so a tile is never overwritten before it is read).
const RING: usize = 4;

/// tmm0/tmm1 the 16 × 16 i32 sums, tmm2/tmm4 the activation tiles (16 tokens × 32 bytes), tmm3/tmm5
/// the weight tiles (8 × 64 bytes); even blocks use the first of each pair, odd blocks the second, so
/// consecutive products do not wait on each other's tiles.
const CONFIG: TileConfig = TileConfig::new([16, 16, 16, 8, 16, 8, 0, 0], [64, 64, 32, 64, 32, 64, 0, 0]);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct WeightTile([u8; 512]);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct SumTile([i32; TOKENS * GROUP]);

/// One task's buffers: its groups' weight tiles (Q4 unpacked; slot s holds blocks
/// `s * blocks..`) and the ring of sum tiles.
pub struct Scratch {
    weights: Vec<WeightTile>,
    blocks: usize,
    sums: [SumTile; RING],
}

impl Scratch {
    /// Room for `groups` groups of `blocks` blocks. The weight tiles are left unwritten (`load_group`
    /// fills a slot before any product reads it): zero-filling them cost as much as unpacking.
    pub fn new(groups: usize, blocks: usize) -> Scratch {
        Scratch { weights: Vec::with_capacity(groups * blocks), blocks, sums: [SumTile([0; TOKENS * GROUP]); RING] }
    }

    /// Slot `slot`'s tile of block `b`, inside the capacity `new` reserved.
    fn weight_tile(&mut self, slot: usize, b: usize) -> *mut u8 {
        let i = slot * self.blocks + b;
        assert!(i < self.weights.capacity(), "amx scratch: tile {i} beyond {}", self.weights.capacity());
        // `spare_capacity_mut` covers the whole reserved buffer (len stays 0).
        self.weights.spare_capacity_mut()[i].as_mut_ptr() as *mut u8
    }
}

/// Whether this CPU and kernel can run the tile products: AMX-TILE and AMX-INT8 in CPUID, the tile
/// state granted (`backend::cpu::amx`), and `LLM_CPU_AMX=0` not set.
pub fn available() -> bool {
    crate::backend::cpu::amx::int8_available()
}

/// Loads the tile configuration on this thread; pair with `release` on the same thread.
///
/// # Safety
/// `available()` must be true.
pub unsafe fn configure() {
    CONFIG.load();
}

/// Frees this thread's tile state.
///
/// # Safety
/// As `configure`.
pub unsafe fn release() {
    crate::backend::cpu::amx::release();
}

/// Makes `g`'s weight tiles in `scratch`'s slot `slot` (Q4 nibbles to bytes; Q8_0 blocks are tiles
/// as stored).
///
/// # Safety
/// The CPU has AVX-512 F/BW; `g` points at a group of `scratch`'s `blocks` blocks of `kind`; `slot`
/// is below the groups `scratch` was made for.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn load_group(kind: PackedKind, g: &GroupPtrs, slot: usize, scratch: &mut Scratch) {
    if kind == PackedKind::Q8_0 {
        return;
    }
    let low = _mm512_set1_epi8(0x0F);
    let blocks = scratch.blocks;
    for b in 0..blocks {
        let q = g.qs.add(b * GROUP * 16);
        let w = scratch.weight_tile(slot, b);
        for p in 0..4 {
            let v = _mm512_loadu_si512(q.add(p * 64) as *const _);
            _mm512_store_si512(w.add(p * 64) as *mut _, _mm512_and_si512(v, low));
            _mm512_store_si512(w.add((p + 4) * 64) as *mut _, _mm512_and_si512(_mm512_srli_epi16(v, 4), low));
        }
    }
}

/// `dst[t * stride + r] = row r of the group · token t` for the 16 tokens of a tile whose block b of
/// token t is `acts[b * TOKENS + t]`, and `r < valid`. `load_group` put `g` in `scratch`'s `slot`.
///
/// # Safety
/// `configure()` ran on this thread; the CPU has AVX-512 F/BW/VL/DQ, FMA and F16C; `acts` holds
/// `blocks * TOKENS` blocks; `dst` is writable at every `(t, r)` above.
#[allow(clippy::too_many_arguments)]
pub unsafe fn group_tile(kind: PackedKind, g: &GroupPtrs, slot: usize, acts: *const Q8Block, dst: *mut f32, stride: usize, valid: usize, scratch: &mut Scratch) {
    match kind {
        PackedKind::Q4_0 => run::<Q4_0>(g, slot, acts, dst, stride, valid, scratch),
        PackedKind::Q4_1 => run::<Q4_1>(g, slot, acts, dst, stride, valid, scratch),
        PackedKind::Q8_0 => run::<Q8_0>(g, slot, acts, dst, stride, valid, scratch),
    }
}

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

/// One block's tile product: 16 tokens' activation bytes at `a` (rows one `Q8Block` apart) times the
/// weight tile at `w`, stored to `sums`.
#[inline(always)]
unsafe fn product(parity: usize, a: *const i8, w: *const u8, sums: *mut i32) {
    let sa = std::mem::size_of::<Q8Block>();
    macro_rules! tile_product {
        ($c:literal, $a:literal, $w:literal) => {
            asm!(
                concat!("tilezero tmm", $c),
                concat!("tileloadd tmm", $a, ", [{a} + {sa} * 1]"),
                concat!("tileloadd tmm", $w, ", [{w} + {sw} * 1]"),
                concat!("tdpbsud tmm", $c, ", tmm", $a, ", tmm", $w),
                concat!("tilestored [{c} + {sc} * 1], tmm", $c),
                a = in(reg) a, sa = in(reg) sa, w = in(reg) w, sw = in(reg) 64usize,
                c = in(reg) sums, sc = in(reg) 64usize, options(nostack),
            )
        };
    }
    if parity == 0 {
        tile_product!("0", "2", "3");
    } else {
        tile_product!("1", "4", "5");
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn run<const K: u8>(g: &GroupPtrs, slot: usize, acts: *const Q8Block, dst: *mut f32, stride: usize, valid: usize, scratch: &mut Scratch) {
    let blocks = scratch.blocks;
    let mut acc = [_mm512_setzero_ps(); TOKENS];
    for step in 0..blocks + LAG {
        if step < blocks {
            let b = step;
            // The tile's blocks come from L2 for the task's first group, and for every group where a row
            // is long (ffn_down: 48 blocks, 33 KB) and does not stay in L1 beside the weight tiles:
            // measured at 512 tokens, ffn_down 376-392 → 401-414 GMAC/s, ffn_gate 465-488 → 432-452.
            let ahead = acts.wrapping_add((b + PREFETCH_BLOCKS) * TOKENS) as *const i8;
            for line in 0..TOKENS * std::mem::size_of::<Q8Block>() / 64 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line * 64));
            }
            let w = if K == Q8_0 { g.qs.add(b * GROUP * 32) } else { scratch.weight_tile(slot, b) as *const u8 };
            product(b % 2, (*acts.add(b * TOKENS)).qs.as_ptr(), w, scratch.sums[b % RING].0.as_mut_ptr());
        }
        if step >= LAG {
            let b = step - LAG;
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(g.d.add(b * GROUP) as *const __m256i));
            let m = if K == Q4_1 { _mm512_cvtph_ps(_mm256_loadu_si256(g.m.add(b * GROUP) as *const __m256i)) } else { d };
            let sums = scratch.sums[b % RING].0.as_ptr();
            for (t, a) in acc.iter_mut().enumerate() {
                let y = &*acts.add(b * TOKENS + t);
                let mut sum = _mm512_load_si512(sums.add(t * GROUP) as *const _);
                // The same integer as avx512_groups' (its bias goes first, here last: integers are exact).
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
    }
    let mask: __mmask16 = if valid >= GROUP { 0xFFFF } else { (1u16 << valid) - 1 };
    for (t, a) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(dst.add(t * stride), mask, *a);
    }
}
