//! A weight matrix kept in its GGUF storage type (quantized or float) and multiplied without ever
//! being expanded to f32: activations are quantized per block, rows are dotted in place, rayon
//! splits the rows across threads.

use super::dot::{vec_dot_rows, vec_dot_tile, vec_dot_tile_rows, Activations, Isa, TILE, TILE_ROWS};
use super::dtype::GgmlType;
use super::interleaved::{Interleaved, PackedKind};
use super::pack_arena::PackArena;
use super::quants::dequantize_row;
use crate::backend::cpu::SharedOut;
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// Bytes a matrix can borrow from: a mapped GGUF file, or an owned buffer (e.g. re-ordered rows).
pub type WeightSource = Arc<dyn AsRef<[u8]> + Send + Sync>;

#[derive(Clone)]
pub struct QMatrix {
    pub dtype: GgmlType,
    /// Output features (rows of the HF `[out, in]` weight).
    pub rows: usize,
    /// Input features; a whole number of `dtype` blocks.
    pub cols: usize,
    source: WeightSource,
    start: usize,
    row_bytes: usize,
    /// The row-interleaved copy the AVX-512 kernels multiply (made by `prepare` or at first use; None where the type
    /// has no such kernel or `LLM_GGUF_INTERLEAVE=0`).
    interleaved: Arc<OnceLock<Option<Interleaved>>>,
    /// Where that copy goes: the model's shared arena when the loader gave one.
    arena: Option<Arc<PackArena>>,
}

/// `LLM_GGUF_INTERLEAVE=0` keeps the GGUF-order kernels (A/B measurements).
fn interleave_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("LLM_GGUF_INTERLEAVE").map_or(true, |v| v != "0"))
}

impl QMatrix {
    /// A `rows × cols` matrix of `dtype` at `source[start..]`; errors when the geometry does not fit.
    pub fn new(dtype: GgmlType, rows: usize, cols: usize, source: WeightSource, start: usize) -> Result<QMatrix, String> {
        let row_bytes = dtype
            .row_bytes(cols)
            .ok_or_else(|| format!("{cols} columns are not a whole number of {dtype} blocks ({})", dtype.block_len()))?;
        let len = row_bytes.checked_mul(rows).ok_or("matrix size overflows")?;
        let have = (*source).as_ref().len();
        if start.checked_add(len).map_or(true, |end| end > have) {
            return Err(format!("{rows}×{cols} {dtype} needs {len} bytes at {start}, source has {have}"));
        }
        Ok(QMatrix { dtype, rows, cols, source, start, row_bytes, interleaved: Arc::default(), arena: None })
    }

    pub fn from_vec(dtype: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<QMatrix, String> {
        Self::new(dtype, rows, cols, Arc::new(bytes), 0)
    }

    pub fn bytes(&self) -> &[u8] {
        &(*self.source).as_ref()[self.start..self.start + self.rows * self.row_bytes]
    }

    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    pub fn row(&self, r: usize) -> &[u8] {
        &self.bytes()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Row `r` as floats (embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.dtype, self.row(r), &mut out[..self.cols]);
    }

    /// Packs this matrix's row-interleaved copy (when it gets one) into `arena`, shared with the model's
    /// other matrices so they sit in huge pages together.
    pub fn with_arena(mut self, arena: Arc<PackArena>) -> QMatrix {
        self.arena = Some(arena);
        self
    }

    /// Makes the row-interleaved copy now where this CPU's kernels use one (`Llama::prepare_weights`
    /// calls it once the weights are placed, so the copy exists before the KV pool is planned and the
    /// first request does not pay for it).
    pub fn prepare(&self) {
        if Isa::detect() == Isa::Avx512 {
            let _ = self.interleaved();
        }
    }

    /// The row-interleaved copy, packed on first call (Q4_0, Q4_1, Q8_0).
    fn interleaved(&self) -> Option<&Interleaved> {
        self.interleaved
            .get_or_init(|| {
                let kind = PackedKind::of(self.dtype).filter(|_| interleave_enabled())?;
                Interleaved::pack(kind, self.rows, self.cols / 32, self.bytes(), self.arena.as_deref()).ok()
            })
            .as_ref()
    }

    /// `matmul` of several matrices over the same `x` (q/k/v, gate/up): where all of them have
    /// row-interleaved copies, `x` is quantized once and one parallel pass covers them all.
    pub fn matmul_fused(ms: &[&QMatrix], x: &[f32], n_tokens: usize, outs: &mut [&mut [f32]]) {
        #[cfg(target_arch = "x86_64")]
        if Isa::detect() == Isa::Avx512 && n_tokens > 0 {
            let packed: Option<Vec<&Interleaved>> = ms.iter().map(|m| m.interleaved()).collect();
            if let Some(p) = packed.filter(|p| p.iter().all(|i| i.blocks == p[0].blocks) && ms[0].cols == x.len() / n_tokens) {
                // SAFETY: Avx512 was detected; geometry is asserted inside.
                unsafe { Interleaved::matmul_many(&p, x, n_tokens, outs) };
                return;
            }
        }
        for (m, out) in ms.iter().zip(outs.iter_mut()) {
            m.matmul(x, n_tokens, out);
        }
    }

    /// `out[t * rows + r] = Σ_c self[r, c] * x[t * cols + c]` for `n_tokens` rows of `x`.
    pub fn matmul(&self, x: &[f32], n_tokens: usize, out: &mut [f32]) {
        self.matmul_with(Isa::detect(), x, n_tokens, out)
    }

    /// `matmul` on a chosen instruction set (tests compare them).
    pub fn matmul_with(&self, isa: Isa, x: &[f32], n_tokens: usize, out: &mut [f32]) {
        assert_eq!(x.len(), n_tokens * self.cols, "matmul: x has {} floats, expected {n_tokens}×{}", x.len(), self.cols);
        assert_eq!(out.len(), n_tokens * self.rows, "matmul: out has {} floats, expected {n_tokens}×{}", out.len(), self.rows);
        if n_tokens == 0 || self.rows == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 {
            if let Some(packed) = self.interleaved() {
                // SAFETY: `isa` is Avx512 only when `Isa::detect` found its features.
                unsafe { packed.matmul(x, n_tokens, out) };
                return;
            }
        }
        let acts: Vec<Activations> = if n_tokens > 1 {
            x.par_chunks(self.cols).map(|xt| Activations::quantize(self.dtype, xt)).collect()
        } else {
            vec![Activations::quantize(self.dtype, x)]
        };
        let chunk_rows = (self.rows / (rayon::current_num_threads() * 8)).clamp(16, 1024);
        if n_tokens == 1 {
            out.par_chunks_mut(chunk_rows).enumerate().for_each(|(c, dst)| {
                let first = c * chunk_rows;
                let rows = &self.bytes()[first * self.row_bytes..(first + dst.len()) * self.row_bytes];
                vec_dot_rows(isa, self.dtype, rows, self.row_bytes, &acts[0], dst);
            });
            return;
        }
        let act_refs: Vec<&Activations> = acts.iter().collect();
        let rows_total = self.rows;
        let dst = SharedOut(out.as_mut_ptr());
        // Tokens go in tiles of TILE, so each weight block is unpacked once per tile; a chunk's rows
        // (a few KB) stay in cache while every tile passes over them. Results go straight to their
        // (token, row) place: no row-major scratch and transpose (a fresh multi-MB buffer per call
        // cost more in page faults than the transpose itself).
        let chunks = self.rows.div_ceil(chunk_rows);
        (0..chunks).into_par_iter().for_each(|c| {
            let first = c * chunk_rows;
            let last = (first + chunk_rows).min(rows_total);
            let mut res = [[0f32; TILE]; TILE_ROWS];
            for (ti, tile) in act_refs.chunks(TILE).enumerate() {
                let mut r = first;
                while r < last {
                    // TILE_ROWS rows at once where a kernel has them, else one row.
                    let n_rows = if r + TILE_ROWS <= last
                        && vec_dot_tile_rows(isa, self.dtype, &self.bytes()[r * self.row_bytes..], self.row_bytes, tile, &mut res)
                    {
                        TILE_ROWS
                    } else {
                        vec_dot_tile(isa, self.dtype, self.row(r), tile, &mut res[0][..tile.len()]);
                        1
                    };
                    for (j, row_res) in res[..n_rows].iter().enumerate() {
                        for (k, &v) in row_res[..tile.len()].iter().enumerate() {
                            // SAFETY: (token, row) pairs are disjoint across tasks and inside `out` (checked above).
                            unsafe { *dst.at((ti * TILE + k) * rows_total + r + j) = v };
                        }
                    }
                    r += n_rows;
                }
            }
        });
    }
}


impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({} {}×{})", self.dtype, self.rows, self.cols)
    }
}

/// Tensor-parallel shards: row ranges borrow the same bytes; column ranges are copied row by row
/// and must fall on block boundaries.
impl QMatrix {
    pub fn slice_rows(&self, rows: std::ops::Range<usize>) -> QMatrix {
        assert!(rows.end <= self.rows);
        QMatrix { rows: rows.len(), start: self.start + rows.start * self.row_bytes, interleaved: Arc::default(), ..self.clone() }
    }

    pub fn slice_cols(&self, cols: std::ops::Range<usize>) -> Result<QMatrix, String> {
        let block = self.dtype.block_len();
        if cols.start % block != 0 || cols.end % block != 0 || cols.end > self.cols {
            return Err(format!(
                "columns {}..{} of a {} matrix with {} columns do not fall on its {block}-value blocks",
                cols.start, cols.end, self.dtype, self.cols
            ));
        }
        let block_bytes = self.row_bytes / (self.cols / block);
        let (from, to) = (cols.start / block * block_bytes, cols.end / block * block_bytes);
        let mut bytes = Vec::with_capacity(self.rows * (to - from));
        for r in 0..self.rows {
            bytes.extend_from_slice(&self.row(r)[from..to]);
        }
        QMatrix::from_vec(self.dtype, self.rows, cols.len(), bytes)
    }
}
