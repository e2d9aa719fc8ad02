//! Model loading: config, weights (safetensors, memory-mapped, single or sharded, or dummy) and
//! the entry point the engine calls, `load_model`.

pub mod checkpoint;
pub mod dummy;
pub mod gguf;
pub mod safetensors;
pub mod source;
#[cfg(test)]
mod tests;

use crate::backend::cpu::matrix::DType;
use crate::backend::cpu::Kernels;
use crate::config::ModelConfig;
use crate::model::llama::Llama;
use crate::model::Model;
use std::path::PathBuf;

/// What `load_model` needs; mirrors the `llm_engine_create` JSON fields.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Directory with config.json (+ generation_config.json, *.safetensors).
    pub model_path: PathBuf,
    /// "auto" reads safetensors (or a .gguf file / a folder holding one without config.json);
    /// "gguf" forces GGUF; "dummy" makes seeded random weights from the config alone.
    pub load_format: String,
    /// "auto" keeps the stored dtype (bf16 for dummy); "float32" computes in f32 on the stored
    /// weights (exact for bf16); "bfloat16" converts f32/f16 weights to bf16 once.
    pub dtype: String,
    /// Compute threads; None = all available cores.
    pub threads: Option<usize>,
    /// Seed of the dummy weights.
    pub seed: u64,
}

impl LoadOptions {
    pub fn new(model_path: impl Into<PathBuf>) -> LoadOptions {
        LoadOptions { model_path: model_path.into(), load_format: "auto".into(), dtype: "auto".into(), threads: None, seed: 0 }
    }
}

/// Loads config and weights and returns a ready model. Errors name the file and tensor at fault.
pub fn load_model(opts: &LoadOptions) -> Result<Box<dyn Model>, String> {
    let model = load_llama(opts)?;
    model.prepare_weights();
    Ok(Box::new(model))
}

/// `load_model`'s concrete Llama (tensor parallelism splits it further), its quantized weights' kernel
/// copies not yet made (`Llama::prepare_weights`, once the weights are placed).
pub fn load_llama(opts: &LoadOptions) -> Result<Llama, String> {
    if let Some(file) = gguf::resolve(&opts.model_path, &opts.load_format)? {
        let compute = gguf::GgufCompute::from_dtype(&opts.dtype)?;
        let pool = compute_pool(opts.threads)?;
        let model = pool.install(|| gguf::load_llama(&file, compute, Kernels::detect()))?;
        return Ok(model.with_pool(pool));
    }
    let config = ModelConfig::from_dir(&opts.model_path)?;
    let convert_to = match opts.dtype.as_str() {
        "auto" | "float32" | "float" | "fp32" => None,
        "bfloat16" | "bf16" => Some(DType::BF16),
        other => return Err(format!("unsupported dtype \"{other}\" (supported: auto, float32, bfloat16)")),
    };
    let source = match opts.load_format.as_str() {
        "auto" | "safetensors" => source::WeightSource::Checkpoint(checkpoint::Checkpoint::open(&opts.model_path)?),
        "dummy" => source::WeightSource::Dummy(dummy::DummyWeights {
            seed: opts.seed,
            dtype: if opts.dtype == "float32" || opts.dtype == "float" || opts.dtype == "fp32" { DType::F32 } else { DType::BF16 },
        }),
        other => return Err(format!("unsupported load_format \"{other}\" (supported: auto, dummy, gguf)")),
    };
    let pool = compute_pool(opts.threads)?;
    let model = pool.install(|| Llama::new(config, &source, convert_to, Kernels::detect()))?;
    Ok(model.with_pool(pool))
}

fn compute_pool(threads: Option<usize>) -> Result<rayon::ThreadPool, String> {
    let threads = match threads {
        Some(0) => return Err("threads must be at least 1".into()),
        Some(n) => n,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("llm-compute-{i}"))
        .build()
        .map_err(|e| format!("cannot start {threads} compute threads: {e}"))
}
