//! Linear layers through cuBLAS: y[m][n] = x[m][k] · w[n][k]ᵀ with bf16 inputs (HF's row-major
//! [out][in] weights as stored), f32 accumulation, bf16 or f32 output.
//!
//! cuBLAS is column-major, so the row-major product is computed as its transpose:
//! yᵀ (n×m, ld n) = w (k×n col-major, transposed) · xᵀ (k×m col-major).
//! A fixed workspace is attached so cuBLAS never allocates inside a CUDA-graph capture.
use std::sync::Arc;

use cudarc::cublas::{result, sys, CudaBlas};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

pub struct Gemm {
    blas: CudaBlas,
    _workspace: CudaSlice<u8>,
}

const WORKSPACE_BYTES: usize = 32 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    Bf16,
    F32,
}

impl Gemm {
    pub fn new(stream: &Arc<CudaStream>) -> Result<Gemm, String> {
        let blas = CudaBlas::new(stream.clone()).map_err(|e| format!("cuBLAS init failed: {e:?}"))?;
        let workspace = stream.alloc_zeros::<u8>(WORKSPACE_BYTES).map_err(|e| format!("cuBLAS workspace: {e:?}"))?;
        {
            let (ptr, _sync) = workspace.device_ptr(stream);
            let status = unsafe { sys::cublasSetWorkspace_v2(*blas.handle(), ptr as *mut _, WORKSPACE_BYTES) };
            if status != sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                return Err(format!("cublasSetWorkspace failed: {status:?}"));
            }
        }
        Ok(Gemm { blas, _workspace: workspace })
    }

    /// y = x · wᵀ; x: [m][k] bf16, w: [n][k] bf16, y: [m][n] of `out`. Raw device addresses.
    #[allow(clippy::too_many_arguments)] // the BLAS shape: pointers, m, n, k, output type
    pub fn linear(&self, x: u64, w: u64, y: u64, m: usize, n: usize, k: usize, out: OutType) -> Result<(), String> {
        if m == 0 {
            return Ok(());
        }
        let (alpha, beta) = (1.0f32, 0.0f32);
        let c_type = match out {
            OutType::Bf16 => sys::cudaDataType_t::CUDA_R_16BF,
            OutType::F32 => sys::cudaDataType_t::CUDA_R_32F,
        };
        unsafe {
            result::gemm_ex(
                *self.blas.handle(),
                sys::cublasOperation_t::CUBLAS_OP_T,
                sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                &alpha as *const f32 as *const _,
                w as *const _,
                sys::cudaDataType_t::CUDA_R_16BF,
                k as i32,
                x as *const _,
                sys::cudaDataType_t::CUDA_R_16BF,
                k as i32,
                &beta as *const f32 as *const _,
                y as *mut _,
                c_type,
                n as i32,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| format!("cuBLAS gemm {m}x{n}x{k} failed: {e:?}"))
    }
}
