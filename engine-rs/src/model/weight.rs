//! A projection weight as the model uses it: dense (bf16/f16/f32 rows, `backend::cpu` GEMM) or
//! kept in a GGUF quantized type (`gguf::QMatrix`, dotted block by block without expanding).
//! The model only needs "multiply", "read one row" and "how big"; this is that seam.

use crate::backend::cpu::matrix::Matrix;
use crate::backend::cpu::panels;
use crate::backend::cpu::Kernels;
use crate::gguf::QMatrix;

pub enum Weight {
    Dense(Matrix),
    Quantized(QMatrix),
}

impl Weight {
    pub fn rows(&self) -> usize {
        match self {
            Weight::Dense(m) => m.rows,
            Weight::Quantized(q) => q.rows,
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Weight::Dense(m) => m.cols,
            Weight::Quantized(q) => q.cols,
        }
    }

    /// `out[t * rows + r] = Σ_c self[r, c] * x[t * cols + c]` for `n` tokens, on the current rayon pool.
    pub fn matmul(&self, kernels: &Kernels, x: &[f32], n: usize, out: &mut [f32]) {
        match self {
            Weight::Dense(m) => kernels.matmul(x, n, m, out),
            Weight::Quantized(q) => q.matmul(&x[..n * q.cols], n, &mut out[..n * q.rows]),
        }
    }

    /// `outs[i] = ws[i] · x` for weights reading the same activations (q/k/v, gate/up): dense ones
    /// in one fused dispatch (activations converted and packed once), others one by one.
    pub fn matmul_fused(kernels: &Kernels, ws: &[&Weight], x: &[f32], n: usize, outs: &mut [&mut [f32]]) {
        let dense: Option<Vec<&Matrix>> = ws.iter().map(|w| if let Weight::Dense(m) = w { Some(m) } else { None }).collect();
        match dense {
            Some(ms) => kernels.matmul_fused(x, n, &ms, outs),
            None => {
                let quantized: Option<Vec<&QMatrix>> = ws.iter().map(|w| if let Weight::Quantized(q) = w { Some(q) } else { None }).collect();
                if let Some(qs) = quantized {
                    return QMatrix::matmul_fused(&qs, x, n, outs);
                }
                for (w, out) in ws.iter().zip(outs.iter_mut()) {
                    w.matmul(kernels, x, n, out);
                }
            }
        }
    }

    /// This weight in the panelled layout (`backend::cpu::panels`) when it is a dense matrix wide
    /// enough to gain from it, otherwise unchanged. For the `vdpbf16ps` kernels only.
    pub fn panelled(self) -> Weight {
        match self {
            Weight::Dense(m) if panels::wanted(m.dtype, m.cols) && !m.is_panelled() => Weight::Dense(m.panelled()),
            other => other,
        }
    }

    /// Makes a quantized weight's kernel copy now (`QMatrix::prepare`) rather than at its first product.
    pub fn prepare(&self) {
        if let Weight::Quantized(q) = self {
            q.prepare();
        }
    }

    /// Row `r` widened to f32 (embedding lookup).
    pub fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        match self {
            Weight::Dense(m) => m.row_to_f32(r, out),
            Weight::Quantized(q) => q.dequantize_row(r, out),
        }
    }

    /// The stored bytes of a dense weight (None for a quantized one).
    pub fn dense_bytes(&self) -> Option<&[u8]> {
        match self {
            Weight::Dense(m) => Some(m.bytes()),
            Weight::Quantized(_) => None,
        }
    }

    pub fn size_bytes(&self) -> usize {
        match self {
            Weight::Dense(m) => m.size_bytes(),
            Weight::Quantized(q) => q.rows * q.row_bytes(),
        }
    }

    /// Storage type for logs and server info: "bfloat16", "float32", ... or a ggml type ("Q4_1").
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Weight::Dense(m) => m.dtype.name(),
            Weight::Quantized(q) => q.dtype.name(),
        }
    }
}

/// Tensor-parallel shards of a weight (see `parallel::plan`).
impl Weight {
    /// Output features `rows` (column-parallel: QKV, gate/up, vocabulary shards).
    pub fn slice_rows(&self, rows: std::ops::Range<usize>) -> Weight {
        match self {
            Weight::Dense(m) => Weight::Dense(m.slice_rows(rows)),
            Weight::Quantized(q) => Weight::Quantized(q.slice_rows(rows)),
        }
    }

    /// Input features `cols` (row-parallel: o_proj, down_proj).
    pub fn slice_cols(&self, cols: std::ops::Range<usize>) -> Result<Weight, String> {
        match self {
            Weight::Dense(m) => Ok(Weight::Dense(m.slice_cols(cols))),
            Weight::Quantized(q) => q.slice_cols(cols).map(Weight::Quantized),
        }
    }
}

impl From<Matrix> for Weight {
    fn from(m: Matrix) -> Weight {
        Weight::Dense(m)
    }
}
