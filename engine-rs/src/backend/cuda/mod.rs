//! CUDA backend (feature `cuda`): bf16 weights and a paged KV pool in GPU memory, kernels from
//! kernels/*.cu (embedded by build.rs), GEMMs through cuBLAS, decode batches replayed as CUDA
//! graphs. The driver and cuBLAS are opened with dlopen (cudarc dynamic-loading): the same library
//! runs on hosts without a GPU, where `probe_cuda` says why it cannot be used.
//!
//! Integration: the engine calls `probe_cuda()` for `--device auto|cuda`; on Ok it builds
//! `CudaLlama` (a `Model`) instead of the CPU model. See docs/cuda.md.
pub mod plan;

mod device;
mod gemm;
mod graphs;
mod kernels;
mod model;
pub mod nccl;

pub use device::probe_cuda;
pub use model::{CudaLlama, CudaOptions, WeightSource};
pub use plan::DeviceInfo;
