//! The GPU the engine runs on: probing (driver present? kernels embedded? GPU new enough?) and the
//! context, stream and cuBLAS handle everything else shares.
//!
//! cudarc opens libcuda and libcublas with dlopen on first use and panics when they are missing,
//! so the probe checks for the libraries first and still guards every call with catch_unwind:
//! on a CPU-only host `probe_cuda` returns Err with the reason, never aborts.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaStream};

use super::kernels::embedded_kernel_count;
use super::plan::{DeviceInfo, MIN_COMPUTE_CAPABILITY};

/// Checks that a usable GPU is there and says why not otherwise (one line, for the log).
pub fn probe_cuda() -> Result<DeviceInfo, String> {
    guarded(probe_unguarded).and_then(|r| r)
}

fn probe_unguarded() -> Result<DeviceInfo, String> {
    if embedded_kernel_count() == 0 && std::env::var_os("LLM_CUDA_KERNELS_DIR").is_none() {
        return Err("this engine was built without nvcc, so it has no CUDA kernels (rebuild with nvcc, \
                    or set LLM_CUDA_KERNELS_DIR)"
            .into());
    }
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda.so not found)".into());
    }
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err("CUDA driver found but not cuBLAS (libcublas.so)".into());
    }
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Err("CUDA driver found but not cuBLASLt (libcublasLt.so)".into());
    }
    let count = CudaContext::device_count().map_err(|e| format!("CUDA driver error: {e:?}"))?;
    if count == 0 {
        return Err("CUDA driver found but no GPU".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("cannot create a CUDA context on GPU 0: {e:?}"))?;
    device_info(&ctx)
}

pub(crate) fn device_info(ctx: &Arc<CudaContext>) -> Result<DeviceInfo, String> {
    let err = |e| format!("CUDA driver error: {e:?}");
    let compute_capability = ctx.compute_capability().map_err(err)?;
    let (free, total) = ctx.mem_get_info().map_err(err)?;
    let info = DeviceInfo {
        ordinal: ctx.ordinal(),
        name: ctx.name().map_err(err)?,
        compute_capability,
        total_memory_bytes: total,
        free_memory_bytes: free,
        sm_count: ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).map_err(err)? as usize,
    };
    if compute_capability < MIN_COMPUTE_CAPABILITY {
        return Err(format!(
            "GPU {} has compute capability {}.{}; the kernels need {}.{} or newer (bf16)",
            info.name, compute_capability.0, compute_capability.1, MIN_COMPUTE_CAPABILITY.0, MIN_COMPUTE_CAPABILITY.1
        ));
    }
    Ok(info)
}

/// Context and the one stream all work is ordered on (graph capture needs a single stream).
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub info: DeviceInfo,
}

impl Gpu {
    pub fn open(ordinal: usize) -> Result<Gpu, String> {
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("no CUDA driver (libcuda.so not found)".into());
        }
        guarded(|| {
            let ctx = CudaContext::new(ordinal).map_err(|e| format!("cannot create a CUDA context: {e:?}"))?;
            // One stream and no cross-stream sharing: cudarc's per-buffer events would only add
            // work, and event records inside a graph capture are not wanted.
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.new_stream().map_err(|e| format!("cannot create a CUDA stream: {e:?}"))?;
            let info = device_info(&ctx)?;
            Ok(Gpu { ctx, stream, info })
        })
        .and_then(|r| r)
    }
}

/// Runs `f`, turning a panic from cudarc's loader (missing library or symbol) into an error.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        format!("CUDA runtime failure: {msg}")
    })
}
