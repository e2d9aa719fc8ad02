//! Q4_0 / Q4_1 / Q8_0 weights re-laid at load (or first use) so one 512-bit register holds 16 rows at once.
//!
//! Why: in GGUF order a row's 32-value blocks follow each other, so a SIMD dot product of one row
//! ends in a horizontal sum and pays scalar work (f16 scales, offsets) per block per row; that kept
//! batch-1 decode at ~1.5 multiply-adds per cycle. Here rows go in groups of `GROUP` (16), and within a
//! group each block is stored "row-interleaved": 32-bit lane `r` of a register holds 4 consecutive
//! values of row `r` (VNNI order), so `vpdpbusd` against 4 activation bytes broadcast to every lane
//! yields 16 rows' partial sums with no reduction, and the 16 scales convert in one instruction.
//! The same order is what an AMX int8 B tile wants (tried: a 16-token TDPBSUD path was no faster than
//! this VNNI one here, its per-block tile store and reload dominating; see docs/gguf.md).
//!
//! Layout of one group (all blocks of its 16 rows), each region contiguous:
//! - `qs`: per block `QS_BYTES` (Q4: 4 registers of 64 bytes, register `p` lane `r` = row `r`'s packed
//!   bytes `4p..4p+4`, i.e. values `4p..4p+4` in the low nibbles and `16+4p..16+4p+4` in the high ones,
//!   exactly GGUF's byte order; Q8_0: 8 registers, register `p` lane `r` = values `4p..4p+4` of row `r`
//!   plus 128, as unsigned bytes, so `vpdpbusd`'s unsigned operand is the weight);
//! - `d`: per block the 16 rows' f16 scales;
//! - `m`: per block the 16 rows' f16 minimums (Q4_1 only).
//!
//! Rows past the last group's end are zero (scale 0): computed, never written out. The packed copy has
//! the same size as the GGUF tensor; it lives in the model's huge-page arena (`pack_arena.rs`: decode
//! streams it once per token).

use super::dtype::GgmlType;
use super::quants::Q8Block;
use super::pack_arena::{ArenaSlice, PackArena};
#[cfg(target_arch = "x86_64")]
use crate::backend::cpu::{SharedOut, SERIAL_MACS};
#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

/// Rows per group: one 512-bit register of 32-bit lanes.
pub const GROUP: usize = 16;

/// Which block format a packed matrix holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackedKind {
    /// value = d · (q − 8), q a nibble.
    Q4_0,
    /// value = d · q + m, q a nibble.
    Q4_1,
    /// value = d · q, q a signed byte (stored as q + 128).
    Q8_0,
}

impl PackedKind {
    pub fn of(t: GgmlType) -> Option<PackedKind> {
        match t {
            GgmlType::Q4_0 => Some(PackedKind::Q4_0),
            GgmlType::Q4_1 => Some(PackedKind::Q4_1),
            GgmlType::Q8_0 => Some(PackedKind::Q8_0),
            _ => None,
        }
    }

    /// Bytes of one block of `GROUP` rows' quantized values.
    pub const fn qs_bytes(self) -> usize {
        match self {
            PackedKind::Q4_0 | PackedKind::Q4_1 => GROUP * 16,
            PackedKind::Q8_0 => GROUP * 32,
        }
    }

    /// GGUF bytes of one 32-value block of one row: (scale offset, min offset, values offset, block bytes).
    const fn gguf_block(self) -> (usize, Option<usize>, usize, usize) {
        match self {
            PackedKind::Q4_0 => (0, None, 2, 18),
            PackedKind::Q4_1 => (0, Some(2), 4, 20),
            PackedKind::Q8_0 => (0, None, 2, 34),
        }
    }
}

/// A row-interleaved copy of a `rows × (blocks · 32)` quantized matrix.
pub struct Interleaved {
    pub kind: PackedKind,
    pub rows: usize,
    /// 32-value blocks per row.
    pub blocks: usize,
    buf: ArenaSlice,
}

/// Where one group's regions start, as pointers the kernels read.
pub struct GroupPtrs {
    pub qs: *const u8,
    pub d: *const u16,
    /// Null unless the kind is Q4_1.
    pub m: *const u16,
}

impl Interleaved {
    /// Packs `rows` rows of `row_bytes` GGUF bytes each (`blocks` blocks per row) from `src`, into
    /// `arena` when given (one model's matrices share huge pages), else into a mapping of its own.
    pub fn pack(kind: PackedKind, rows: usize, blocks: usize, src: &[u8], arena: Option<&PackArena>) -> Result<Interleaved, String> {
        let (d_at, m_at, qs_at, block_bytes) = kind.gguf_block();
        let row_bytes = blocks * block_bytes;
        assert!(src.len() >= rows * row_bytes, "interleave: {} bytes for {rows} rows of {row_bytes}", src.len());
        let groups = rows.div_ceil(GROUP);
        let len = groups * Self::group_bytes_of(kind, blocks);
        let buf = match arena {
            Some(a) => a.alloc(len)?,
            None => ArenaSlice::standalone(len)?,
        };
        let mut packed = Interleaved { kind, rows, blocks, buf };
        let group_bytes = packed.group_bytes();
        let (qs_len, scales_len) = (blocks * kind.qs_bytes(), blocks * GROUP * 2);
        let out = packed.buf.bytes_mut();
        for g in 0..groups {
            let base = g * group_bytes;
            for r in 0..GROUP.min(rows - g * GROUP) {
                let row = &src[(g * GROUP + r) * row_bytes..][..row_bytes];
                for b in 0..blocks {
                    let blk = &row[b * block_bytes..][..block_bytes];
                    let scale_at = |region: usize| base + region + (b * GROUP + r) * 2;
                    out[scale_at(qs_len)..][..2].copy_from_slice(&blk[d_at..d_at + 2]);
                    if let Some(m_at) = m_at {
                        out[scale_at(qs_len + scales_len)..][..2].copy_from_slice(&blk[m_at..m_at + 2]);
                    }
                    let qs = &blk[qs_at..];
                    let dst = base + b * kind.qs_bytes() + r * 4;
                    match kind {
                        PackedKind::Q4_0 | PackedKind::Q4_1 => {
                            for p in 0..4 {
                                out[dst + p * 64..][..4].copy_from_slice(&qs[4 * p..4 * p + 4]);
                            }
                        }
                        PackedKind::Q8_0 => {
                            for p in 0..8 {
                                for j in 0..4 {
                                    out[dst + p * 64 + j] = qs[4 * p + j] ^ 0x80;
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(packed)
    }

    fn group_bytes_of(kind: PackedKind, blocks: usize) -> usize {
        let scales = if kind == PackedKind::Q4_1 { 2 } else { 1 };
        blocks * (kind.qs_bytes() + scales * GROUP * 2)
    }

    pub fn group_bytes(&self) -> usize {
        Self::group_bytes_of(self.kind, self.blocks)
    }

    pub fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP)
    }

    pub fn group(&self, g: usize) -> GroupPtrs {
        assert!(g < self.groups());
        let base = unsafe { self.buf.bytes().as_ptr().add(g * self.group_bytes()) };
        let qs_len = self.blocks * self.kind.qs_bytes();
        let scales_len = self.blocks * GROUP * 2;
        // SAFETY: the offsets stay inside this group's `group_bytes()` (layout above).
        unsafe {
            GroupPtrs {
                qs: base,
                d: base.add(qs_len) as *const u16,
                m: if self.kind == PackedKind::Q4_1 { base.add(qs_len + scales_len) as *const u16 } else { std::ptr::null() },
            }
        }
    }
}

/// Weight bytes a task's groups span at most (tasks small enough for the threads to even out).
#[cfg(target_arch = "x86_64")]
const TASK_BYTES: usize = 192 << 10;

#[cfg(target_arch = "x86_64")]
impl Interleaved {
    /// `out[t * rows + r] = row r · x[t]` for `n` tokens of `blocks · 32` floats (AVX-512 VNNI).
    ///
    /// # Safety
    /// The CPU must have the features `Isa::Avx512` stands for.
    pub unsafe fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) {
        Self::matmul_many(&[self], x, n, &mut [out]);
    }

    /// `matmul` of several matrices with the same columns over the same activations (q/k/v, gate/up)
    /// in one parallel pass: `x` is quantized once, one wake-up of the pool, and the small ones do not
    /// leave threads idle.
    ///
    /// # Safety
    /// As `matmul`.
    pub unsafe fn matmul_many(mats: &[&Interleaved], x: &[f32], n: usize, outs: &mut [&mut [f32]]) {
        use super::dot::amx_groups;
        use super::dot::avx512_groups::{group_dot, MAX_TOKENS};
        assert_eq!(mats.len(), outs.len());
        let blocks = mats[0].blocks;
        assert!(blocks > 0 && x.len() == n * blocks * 32, "interleaved matmul: {} floats for {n} tokens of {blocks} blocks", x.len());
        for (m, out) in mats.iter().zip(outs.iter()) {
            assert_eq!(m.blocks, blocks, "interleaved matmul: fused matrices differ in columns");
            assert_eq!(out.len(), n * m.rows, "interleaved matmul: out has {} floats, expected {n}×{}", out.len(), m.rows);
        }
        let acts = quantize_tiles(x, blocks, n);
        let threads = rayon::current_num_threads();
        // Tasks: (matrix, first group, end group).
        let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
        for (mi, m) in mats.iter().enumerate() {
            let groups = m.groups();
            let per_task = if n == 1 {
                // One contiguous run per thread: the longest streams for the prefetchers.
                groups.div_ceil(threads)
            } else {
                (TASK_BYTES / m.group_bytes()).clamp(1, groups.div_ceil(4 * threads).max(1))
            };
            tasks.extend((0..groups).step_by(per_task).map(|g0| (mi, g0, (g0 + per_task).min(groups))));
        }
        let dsts: Vec<SharedOut> = outs.iter_mut().map(|o| SharedOut(o.as_mut_ptr())).collect();
        // Full 16-token tiles go through AMX int8 tiles where the CPU has them (bit-identical to VNNI)
        // once there are enough of them to pay for unpacking the weights into tiles.
        let amx = n >= AMX_MIN_TOKENS && amx_groups::available();
        let task = |&(mi, g0, g1): &(usize, usize, usize)| {
            let (m, dst) = (mats[mi], dsts[mi]);
            let (rows, kind) = (m.rows, m.kind);
            // One layout tile of `len` tokens against one group, by VNNI in calls of up to MAX_TOKENS.
            let vnni_tile = |grp: &GroupPtrs, tile: *const Q8Block, len: usize, at: *mut f32, valid: usize| {
                for c0 in (0..len).step_by(MAX_TOKENS) {
                    group_dot(kind, grp, blocks, tile.add(c0), len, MAX_TOKENS.min(len - c0), at.add(c0 * rows), rows, valid);
                }
            };
            // SAFETY: features checked by the caller (and `amx_groups::available()` for the tiles,
            // configured and released on this thread around them); each group holds `blocks` blocks;
            // `acts` holds every token's blocks in tile order; (token, row) places are inside that
            // matrix's `out` and disjoint across tasks.
            if amx {
                // Token tiles outer, groups inner: a tile's activations (blocks × 704 bytes) stay in L1
                // while the task's groups pass, each token's outputs are written as one run, and the
                // weight tiles, unpacked once, come from L2.
                amx_groups::configure();
                let mut scratch = amx_groups::Scratch::new(g1 - g0, blocks);
                for g in g0..g1 {
                    amx_groups::load_group(kind, &m.group(g), g - g0, &mut scratch);
                }
                for t0 in (0..n).step_by(TILE_TOKENS) {
                    let len = TILE_TOKENS.min(n - t0);
                    let tile = acts[t0 * blocks..].as_ptr();
                    for g in g0..g1 {
                        let (grp, valid, at) = (m.group(g), GROUP.min(rows - g * GROUP), dst.at(t0 * rows + g * GROUP));
                        if len == amx_groups::TOKENS {
                            amx_groups::group_tile(kind, &grp, g - g0, tile, at, rows, valid, &mut scratch);
                        } else {
                            vnni_tile(&grp, tile, len, at, valid);
                        }
                    }
                }
                amx_groups::release();
                return;
            }
            // Group outer: its weights (a few KB) stay in L1 while every token tile passes; the tokens'
            // blocks come from L2 (down_proj at 256 tokens: 199 → 244 GMAC/s against tiles outer).
            for g in g0..g1 {
                let (grp, valid) = (m.group(g), GROUP.min(rows - g * GROUP));
                for t0 in (0..n).step_by(TILE_TOKENS) {
                    let len = TILE_TOKENS.min(n - t0);
                    vnni_tile(&grp, acts[t0 * blocks..].as_ptr(), len, dst.at(t0 * rows + g * GROUP), valid);
                }
            }
        };
        let macs: usize = mats.iter().map(|m| m.rows * blocks * 32 * n).sum();
        if macs < SERIAL_MACS || tasks.len() == 1 {
            tasks.iter().for_each(task);
        } else {
            tasks.par_iter().for_each(task);
        }
    }
}

/// Tokens from which a product runs on AMX tiles: a decode batch of 16 was ~5% slower on tiles (each
/// group's weights unpacked for one tile product) while a 512-token prefill gained ~10%.
#[cfg(target_arch = "x86_64")]
const AMX_MIN_TOKENS: usize = 64;

/// Tokens per parallel quantization task: whole kernel tiles.
#[cfg(target_arch = "x86_64")]
const QUANTIZE_TASK_TOKENS: usize = 16;

/// Tokens per tile of the activations' layout: the AMX tile's height, two VNNI calls.
#[cfg(target_arch = "x86_64")]
const TILE_TOKENS: usize = 16;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(TILE_TOKENS == super::dot::amx_groups::TOKENS && QUANTIZE_TASK_TOKENS % TILE_TOKENS == 0);

/// Q8 blocks of `n` tokens of `blocks · 32` floats in the group kernels' order: tiles of
/// `TILE_TOKENS` tokens (the last may be shorter), the tile starting at token t0 at `t0 · blocks`,
/// and within it block b of its token t at `b · tile_len + t`, so one block of a tile's tokens is one
/// run (an AMX A tile; for VNNI one run instead of a stream per token).
///
/// # Safety
/// The CPU must support avx512f/bw and f16c.
#[cfg(target_arch = "x86_64")]
unsafe fn quantize_tiles(x: &[f32], blocks: usize, n: usize) -> Vec<Q8Block> {
    use super::dot::avx512_quant::quantize_q8_strided;
    // Every block is written below before `set_len`; zero-filling the buffer first cost ~1% of a prefill.
    let mut out: Vec<Q8Block> = Vec::with_capacity(n * blocks);
    let cols = blocks * 32;
    let chunk = |(c, (o, xs)): (usize, (&mut [std::mem::MaybeUninit<Q8Block>], &[f32]))| {
        for (i, xt) in xs.chunks_exact(cols).enumerate() {
            let t = c * QUANTIZE_TASK_TOKENS + i;
            let t0 = t / TILE_TOKENS * TILE_TOKENS;
            let len = TILE_TOKENS.min(n - t0);
            let at = (t0 - c * QUANTIZE_TASK_TOKENS) * blocks + (t - t0);
            // SAFETY: block b of token t lands at at + b * len < (t0 + len) * blocks, inside this
            // task's chunk (tasks hold whole tiles); features as the caller promised.
            quantize_q8_strided(xt, o.as_mut_ptr().add(at) as *mut Q8Block, len);
        }
    };
    let per_task = QUANTIZE_TASK_TOKENS * blocks;
    let spare = &mut out.spare_capacity_mut()[..n * blocks];
    if n > QUANTIZE_TASK_TOKENS {
        spare.par_chunks_mut(per_task).zip(x.par_chunks(QUANTIZE_TASK_TOKENS * cols)).enumerate().for_each(chunk);
    } else {
        chunk((0, (spare, x)));
    }
    // SAFETY: the tiles cover tokens 0..n and blocks 0..blocks exactly once each (layout above), so all
    // n · blocks elements were written.
    out.set_len(n * blocks);
    out
}
