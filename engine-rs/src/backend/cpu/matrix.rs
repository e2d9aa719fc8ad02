//! A weight matrix in its stored dtype, either borrowed from a memory-mapped checkpoint or owned
//! (dummy weights, dtype conversions). Rows are contiguous, `cols` elements per row, except in a
//! panelled matrix (`panels`: an owned copy the `vdpbf16ps` kernels read faster).

use super::huge::HugeBuffer;
use super::panels;
use memmap2::Mmap;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    BF16,
    F16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }
    /// The name HF/SGLang use (`--dtype` values).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
        }
    }
}

/// Where a matrix's bytes live. Mapped bytes are used in place: no copy of the checkpoint.
pub enum Storage {
    Mapped { map: Arc<Mmap>, offset: usize, len: usize },
    Owned(Vec<u8>),
    /// Generated or converted weights on huge pages (streamed every decode step).
    Huge(HugeBuffer),
}

pub struct Matrix {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    storage: Storage,
    /// The bytes are in the panelled layout (`panels`), not row-major.
    panelled: bool,
}

impl Matrix {
    /// `storage` must hold exactly rows * cols * dtype.size() bytes (checked).
    pub fn new(dtype: DType, rows: usize, cols: usize, storage: Storage) -> Result<Matrix, String> {
        let m = Matrix { dtype, rows, cols, storage, panelled: false };
        let want = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or("matrix size overflows")?;
        if m.bytes().len() != want {
            return Err(format!("matrix {rows}x{cols} {:?} needs {want} bytes, got {}", dtype, m.bytes().len()));
        }
        Ok(m)
    }

    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> Matrix {
        assert_eq!(values.len(), rows * cols);
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Matrix { dtype: DType::F32, rows, cols, storage: Storage::Owned(bytes), panelled: false }
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped { map, offset, len } => &map[*offset..*offset + *len],
            Storage::Owned(v) => v,
            Storage::Huge(b) => b.bytes(),
        }
    }

    /// Whether the bytes are in the panelled layout (`panels`) rather than row-major.
    pub fn is_panelled(&self) -> bool {
        self.panelled
    }

    /// Row `row` of a row-major matrix.
    fn row_bytes(&self, row: usize) -> &[u8] {
        debug_assert!(!self.panelled);
        let stride = self.cols * self.dtype.size();
        &self.bytes()[row * stride..(row + 1) * stride]
    }

    /// Row `row`'s bytes as one or more pieces (one per panel in a panelled matrix), in column
    /// order, without allocating (the embedding lookup reads a row a token).
    fn row_pieces(&self, row: usize) -> impl Iterator<Item = &[u8]> {
        let (panelled, plain) = if self.panelled {
            (Some(panels::row_pieces(self.bytes(), self.rows, self.cols, self.dtype.size(), row)), None)
        } else {
            (None, Some(self.row_bytes(row)))
        };
        panelled.into_iter().flatten().chain(plain)
    }

    /// Writes row `row` as f32 into `out` (`cols` long); exact for every stored dtype.
    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        let mut at = 0;
        for piece in self.row_pieces(row) {
            let len = piece.len() / self.dtype.size();
            bytes_to_f32(self.dtype, piece, &mut out[at..at + len]);
            at += len;
        }
    }

    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        if self.cols > 0 {
            for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
                self.row_to_f32(r, row);
            }
        }
        out
    }

    /// A copy in the panelled layout on huge pages (`panels`), for the `vdpbf16ps` kernels; the
    /// same numbers, row for row.
    pub fn panelled(&self) -> Matrix {
        if self.panelled {
            return self.row_major_copy().panelled();
        }
        let mut buffer = HugeBuffer::zeroed(self.size_bytes()).unwrap_or_else(|e| panic!("panelled copy: {e}"));
        panels::pack(self.bytes(), self.rows, self.cols, self.dtype.size(), buffer.bytes_mut());
        Matrix { dtype: self.dtype, rows: self.rows, cols: self.cols, storage: Storage::Huge(buffer), panelled: true }
    }

    /// A row-major copy on huge pages (of a panelled matrix: its rows put back in order).
    fn row_major_copy(&self) -> Matrix {
        let size = self.dtype.size();
        let mut buffer = HugeBuffer::zeroed(self.size_bytes()).unwrap_or_else(|e| panic!("row-major copy: {e}"));
        let stride = self.cols * size;
        for (r, dst) in buffer.bytes_mut().chunks_exact_mut(stride.max(1)).enumerate().take(self.rows) {
            let mut at = 0;
            for piece in self.row_pieces(r) {
                dst[at..at + piece.len()].copy_from_slice(piece);
                at += piece.len();
            }
        }
        Matrix { dtype: self.dtype, rows: self.rows, cols: self.cols, storage: Storage::Huge(buffer), panelled: false }
    }

    /// A bf16 copy (round to nearest even) on huge pages; bf16 input is returned as a copy.
    pub fn to_bf16(&self) -> Matrix {
        let mut tmp = vec![0.0f32; self.cols];
        let mut buffer = HugeBuffer::zeroed(self.rows * self.cols * 2).unwrap_or_else(|e| panic!("bf16 copy: {e}"));
        let out = buffer.as_u16_mut();
        for r in 0..self.rows {
            self.row_to_f32(r, &mut tmp);
            for (o, &v) in out[r * self.cols..(r + 1) * self.cols].iter_mut().zip(&tmp) {
                *o = half::bf16::from_f32(v).to_bits();
            }
        }
        Matrix { dtype: DType::BF16, rows: self.rows, cols: self.cols, storage: Storage::Huge(buffer), panelled: false }
    }

    pub fn size_bytes(&self) -> usize {
        self.bytes().len()
    }

    /// Rows `rows` (a tensor-parallel shard): mapped bytes are borrowed, others copied.
    pub fn slice_rows(&self, rows: std::ops::Range<usize>) -> Matrix {
        assert!(rows.end <= self.rows);
        if self.panelled {
            return self.row_major_copy().slice_rows(rows);
        }
        let stride = self.cols * self.dtype.size();
        let storage = match &self.storage {
            Storage::Mapped { map, offset, .. } => {
                Storage::Mapped { map: map.clone(), offset: offset + rows.start * stride, len: rows.len() * stride }
            }
            _ => Storage::Huge(huge_copy(&self.bytes()[rows.start * stride..rows.end * stride])),
        };
        Matrix { dtype: self.dtype, rows: rows.len(), cols: self.cols, storage, panelled: false }
    }

    /// Columns `cols` of every row, copied into a matrix of their own (a row-parallel shard).
    pub fn slice_cols(&self, cols: std::ops::Range<usize>) -> Matrix {
        assert!(cols.end <= self.cols);
        if self.panelled {
            return self.row_major_copy().slice_cols(cols);
        }
        let size = self.dtype.size();
        let mut buffer = HugeBuffer::zeroed(self.rows * cols.len() * size).unwrap_or_else(|e| panic!("weight shard: {e}"));
        let width = cols.len() * size;
        for (r, dst) in buffer.bytes_mut().chunks_exact_mut(width.max(1)).enumerate().take(self.rows) {
            dst.copy_from_slice(&self.row_bytes(r)[cols.start * size..cols.end * size]);
        }
        Matrix { dtype: self.dtype, rows: self.rows, cols: cols.len(), storage: Storage::Huge(buffer), panelled: false }
    }
}

fn huge_copy(bytes: &[u8]) -> HugeBuffer {
    let mut buffer = HugeBuffer::zeroed(bytes.len()).unwrap_or_else(|e| panic!("weight shard: {e}"));
    buffer.bytes_mut().copy_from_slice(bytes);
    buffer
}

pub fn bytes_to_f32(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(bytes.len(), out.len() * dtype.size());
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
    }
}
