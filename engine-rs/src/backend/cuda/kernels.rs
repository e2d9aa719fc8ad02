//! The compiled kernels: loaded once from the fatbins build.rs embedded (or, to run a library on a
//! driver older than the build's nvcc, from cubins/fatbins in $LLM_CUDA_KERNELS_DIR named
//! `<file stem>.fatbin` or `.cubin`), and typed launch helpers, one per kernel, whose argument lists
//! mirror the kernels/*.cu signatures. Pointers travel as raw device addresses (u64).
use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::plan::Launch;

include!(concat!(env!("OUT_DIR"), "/cuda_kernels.rs"));

pub fn embedded_kernel_count() -> usize {
    KERNEL_FATBINS.len()
}

/// (file stem, kernel names) for every kernels/*.cu; loading fails when one is missing.
const KERNEL_NAMES: &[(&str, &[&str])] = &[
    ("activation", &["silu_and_mul"]),
    ("attention_decode", &["attention_decode_partial", "attention_decode_combine"]),
    ("attention_prefill", &["attention_prefill"]),
    ("embedding", &["embedding_gather"]),
    ("init", &["fill_uniform_bf16"]),
    ("rmsnorm", &["rmsnorm", "fused_add_rmsnorm"]),
    ("rope_kv", &["rope_kv_write"]),
    ("sampling", &["apply_penalties", "argmax_rows", "sample_rows"]),
];

pub struct Kernels {
    functions: HashMap<&'static str, CudaFunction>,
}

fn image_for(stem: &str) -> Result<Vec<u8>, String> {
    if let Some(dir) = std::env::var_os("LLM_CUDA_KERNELS_DIR") {
        let dir = std::path::PathBuf::from(dir);
        for ext in ["fatbin", "cubin", "ptx"] {
            let path = dir.join(format!("{stem}.{ext}"));
            if let Ok(mut bytes) = std::fs::read(&path) {
                if ext == "ptx" {
                    bytes.push(0); // cuModuleLoadData reads PTX as a C string
                }
                return Ok(bytes);
            }
        }
        return Err(format!("LLM_CUDA_KERNELS_DIR has no {stem}.fatbin/.cubin/.ptx"));
    }
    KERNEL_FATBINS
        .iter()
        .find(|(s, _)| *s == stem)
        .map(|(_, bytes)| bytes.to_vec())
        .ok_or_else(|| format!("kernel file {stem}.cu was not compiled into this build"))
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Kernels, String> {
        let mut functions = HashMap::new();
        for (stem, names) in KERNEL_NAMES {
            let module = ctx
                .load_module(Ptx::from_binary(image_for(stem)?))
                .map_err(|e| format!("cannot load CUDA module {stem}: {e:?} (driver older than the build's nvcc?)"))?;
            for name in *names {
                let f = module.load_function(name).map_err(|e| format!("kernel {name} missing from {stem}: {e:?}"))?;
                functions.insert(*name, f);
            }
        }
        Ok(Kernels { functions })
    }
}

/// A kernel argument as the kernels take it.
#[derive(Clone, Copy)]
pub enum Arg {
    Ptr(u64),
    I32(i32),
    U64(u64),
    F32(f32),
}

impl Kernels {
    /// Launches `name` with `args` in the kernel's parameter order.
    pub fn launch(&self, stream: &Arc<CudaStream>, name: &str, shape: Launch, args: &[Arg]) -> Result<(), String> {
        let f = self.functions.get(name).ok_or_else(|| format!("unknown kernel {name}"))?;
        let cfg = LaunchConfig { grid_dim: shape.grid, block_dim: shape.block, shared_mem_bytes: shape.shared_bytes };
        // The builder keeps pointers to the values, so they live in this vector until launch.
        let mut builder = stream.launch_builder(f);
        for a in args {
            match a {
                Arg::Ptr(p) | Arg::U64(p) => builder.arg(p),
                Arg::I32(v) => builder.arg(v),
                Arg::F32(v) => builder.arg(v),
            };
        }
        unsafe { builder.launch(cfg) }.map(|_| ()).map_err(|e| format!("launch of {name} failed: {e:?}"))
    }
}
