//! GGUF checkpoints (llama.cpp's format): parsing from a memory map, quant block formats, quantized
//! CPU dot-product kernels, and the mapping of llama.cpp's Llama tensors and hyperparameters onto
//! the engine's HF-shaped model.
//!
//! - `file`: header, metadata, tensor infos, data section (bounds-checked).
//! - `dtype`: ggml type ids and block geometry.
//! - `quants`: block layouts, scalar dequantization, activation quantization (Q8 / Q8_K).
//! - `dot`: per-row dot products, scalar reference + AVX2 + AVX-512 VNNI, runtime-dispatched.
//! - `qmatrix`: a weight matrix that stays in its storage type, multithreaded matmul.
//! - `names`, `rope_permute`, `llama_meta`: llama.cpp layout → HF layout.

pub mod dot;
pub mod dtype;
pub mod file;
pub mod interleaved;
pub mod llama_meta;
pub mod names;
pub mod pack_arena;
pub mod qmatrix;
pub mod quants;
pub mod rope_permute;
pub mod value;
pub mod writer;

pub use dtype::GgmlType;
pub use file::{GgufError, GgufFile, TensorInfo};
pub use qmatrix::QMatrix;
