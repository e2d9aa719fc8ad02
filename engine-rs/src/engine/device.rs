//! Where the model runs (`--device auto|cpu|cuda`, SGLang's `--device`).
//!
//! `auto` tries the GPU and falls back to the CPU with one log line saying why; `cuda` makes the
//! same reason a load error; `cpu` never touches the CUDA driver. A build without the `cuda`
//! feature knows no GPU at all, so its reason is fixed.
//!
//! On the GPU the model keeps K/V in its own device pool, so the scheduler's slot allocator is
//! sized from that pool and the CPU `KvCache` gets no rows (see `DeviceKv`).

use crate::config::ModelConfig;
use crate::model::Model;
use crate::sched::log::Logger;

use super::options::EngineOptions;
use super::{status, EngineError};
use crate::model::LoadOptions;

/// The `device` key of the create JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda,
}

impl DeviceRequest {
    pub fn parse(s: &str) -> Result<DeviceRequest, String> {
        match s {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            // SGLang also accepts an ordinal; only GPU 0 is driven.
            "cuda" | "cuda:0" | "gpu" => Ok(DeviceRequest::Cuda),
            other => Err(format!("unknown device {other:?} (supported: auto, cpu, cuda)")),
        }
    }
}

/// A KV pool that lives on the device instead of in the CPU `KvCache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceKv {
    pub slots: usize,
    pub bytes: usize,
}

/// A loaded model and where it runs.
pub struct PlacedModel {
    pub model: Box<dyn Model>,
    /// For `llm_engine_info`: "cpu" or "cuda:0 <GPU name>".
    pub device: String,
    pub device_kv: Option<DeviceKv>,
    /// Options the engine must run with on this device (the GPU caps running requests and dtype).
    pub opts: EngineOptions,
}

/// The CUDA message a build without the feature gives.
pub const NO_CUDA_BUILD: &str = "this engine was built without CUDA support (cargo feature `cuda`)";

/// Why a model cannot run on the CUDA backend whatever the GPU, checked before touching the driver.
pub fn cuda_precheck(opts: &EngineOptions, cfg: &ModelConfig) -> Result<(), String> {
    if matches!(opts.dtype.as_str(), "float32" | "float" | "fp32") {
        return Err("--dtype float32 runs on the CPU only (the CUDA backend computes in bfloat16)".into());
    }
    if cfg.architecture != "LlamaForCausalLM" {
        return Err(format!("architecture {} has no CUDA implementation", cfg.architecture));
    }
    check_cuda_model_shape(cfg)
}

#[cfg(feature = "cuda")]
fn check_cuda_model_shape(cfg: &ModelConfig) -> Result<(), String> {
    crate::backend::cuda::plan::check_model_shape(cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)
}

#[cfg(not(feature = "cuda"))]
fn check_cuda_model_shape(_cfg: &ModelConfig) -> Result<(), String> {
    Ok(())
}

/// Running requests the GPU plan is sized for when `max_running_requests` is not given.
pub const DEFAULT_GPU_RUNNING_REQUESTS: usize = 256;

/// Most tokens one forward can carry, which sizes the GPU activations: the scheduler packs every
/// decode token with up to `max_prefill_tokens` of prefill, and without chunking a prompt longer
/// than that budget runs whole (up to the context length).
pub fn gpu_batch_tokens(opts: &EngineOptions, context_len: usize, max_running: usize) -> usize {
    let prefill = match opts.chunk_size() {
        Some(_) => opts.max_prefill_tokens,
        None => opts.max_prefill_tokens.max(context_len),
    };
    prefill + max_running
}

/// Loads the model on the device `opts.device` asks for.
pub fn load(opts: &EngineOptions, req: &LoadOptions, log: Logger) -> Result<PlacedModel, EngineError> {
    let want = DeviceRequest::parse(&opts.device).map_err(|e| EngineError::new(status::INVALID_ARGUMENT, e))?;
    if want != DeviceRequest::Cpu {
        // The NCCL communicator (backend/cuda/nccl.rs) is not yet driven by the CUDA model.
        let tp_on_gpu = (opts.tp_size > 1).then(|| CudaFailure::Unavailable(format!(
            "--tp-size {} runs on the CPU ranks only (the CUDA model has no tensor parallelism yet)",
            opts.tp_size
        )));
        match tp_on_gpu.map_or_else(|| try_cuda(opts, req, log), Err) {
            Ok(placed) => return Ok(placed),
            Err(CudaFailure::Unavailable(reason)) if want == DeviceRequest::Auto => {
                log.warn(&format!("CUDA not used: {reason}; running on CPU"));
            }
            Err(CudaFailure::Unavailable(reason)) => {
                return Err(EngineError::new(status::LOAD, format!("--device cuda: CUDA is unavailable: {reason}")))
            }
            Err(CudaFailure::Load(e)) => return Err(EngineError::new(status::LOAD, format!("CUDA backend: {e}"))),
        }
    }
    let gb = |b: usize| b as f64 / (1u64 << 30) as f64;
    log.info(&format!("Load weight begin. avail mem={:.2} GB", gb(super::options::mem_available_bytes().unwrap_or(0))));
    let started = std::time::Instant::now();
    if opts.tp_size > 1 {
        let model = crate::loader::load_llama(req).map_err(|e| EngineError::new(status::LOAD, e))?;
        return super::tensor_parallel::place(model, opts, req, log, started);
    }
    let model = crate::model::load_model(req).map_err(|e| EngineError::new(status::LOAD, e))?;
    log.info(&format!(
        "Load weight end. type={}, dtype={}, avail mem={:.2} GB, mem usage={:.2} GB, took {:.2} s.",
        model.config().architecture,
        model.weight_dtype(),
        gb(super::options::mem_available_bytes().unwrap_or(0)),
        gb(model.weight_bytes()),
        started.elapsed().as_secs_f64()
    ));
    Ok(PlacedModel { model, device: "cpu".into(), device_kv: None, opts: opts.clone() })
}

enum CudaFailure {
    /// No usable GPU (or a model the kernels cannot run): `auto` falls back to the CPU.
    Unavailable(String),
    /// The GPU was there but loading on it failed (memory plan, weights): always an error.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Load(String),
}

#[cfg(not(feature = "cuda"))]
fn try_cuda(opts: &EngineOptions, req: &LoadOptions, _log: Logger) -> Result<PlacedModel, CudaFailure> {
    let _ = (opts, req);
    Err(CudaFailure::Unavailable(NO_CUDA_BUILD.into()))
}

#[cfg(feature = "cuda")]
fn try_cuda(opts: &EngineOptions, req: &LoadOptions, log: Logger) -> Result<PlacedModel, CudaFailure> {
    cuda_load::load(opts, req, log)
}

#[cfg(feature = "cuda")]
mod cuda_load {
    use super::*;
    use crate::backend::cpu::matrix::DType;
    use crate::backend::cuda::{self, plan::RopeScaling, CudaLlama, CudaOptions, WeightSource};
    use crate::loader::checkpoint::Checkpoint;

    /// Checkpoint tensors as the bf16 bits the GPU stores (f32/f16 checkpoints rounded once).
    struct CheckpointBf16(Checkpoint);

    impl WeightSource for CheckpointBf16 {
        fn bf16(&self, name: &str, shape: &[usize]) -> Result<Vec<u16>, String> {
            let m = self.0.matrix(name, shape)?;
            let m = if m.dtype == DType::BF16 { m } else { m.to_bf16() };
            Ok(m.bytes().chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect())
        }
    }

    pub(super) fn load(opts: &EngineOptions, req: &LoadOptions, log: Logger) -> Result<PlacedModel, CudaFailure> {
        let dir = std::path::Path::new(&req.model_path);
        // Config problems are the CPU path's errors too: let it report them.
        let Ok(cfg) = ModelConfig::from_dir(dir) else {
            return Err(CudaFailure::Unavailable("config.json could not be read".into()));
        };
        // The probe first: on a host without a GPU its reason is the one worth logging.
        let info = cuda::probe_cuda().map_err(CudaFailure::Unavailable)?;
        cuda_precheck(opts, &cfg).map_err(CudaFailure::Unavailable)?;
        let raw: serde_json::Value = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        let rope = RopeScaling::from_config(&raw).map_err(CudaFailure::Unavailable)?;
        let context_len = opts.context_len(&cfg);
        let max_running = opts.max_running_requests.unwrap_or(DEFAULT_GPU_RUNNING_REQUESTS);
        let cuda_opts = CudaOptions {
            mem_fraction_static: opts.mem_fraction_static.unwrap_or(super::super::options::DEFAULT_MEM_FRACTION_STATIC),
            max_running_requests: max_running,
            max_batch_tokens: gpu_batch_tokens(opts, context_len, max_running),
            context_length: context_len,
            num_slots: opts.max_total_tokens,
            cuda_graph_max_bs: opts.cuda_graph_max_bs,
            disable_cuda_graph: opts.disable_cuda_graph,
            dummy_seed: req.seed,
        };
        let weights = match req.load_format.as_str() {
            "dummy" => None,
            "auto" | "safetensors" => Some(CheckpointBf16(Checkpoint::open(dir).map_err(CudaFailure::Load)?)),
            other => return Err(CudaFailure::Load(format!("unsupported load_format \"{other}\" (supported: auto, dummy)"))),
        };
        let model = CudaLlama::load(cfg, rope, weights.as_ref().map(|w| w as &dyn WeightSource), &cuda_opts)
            .map_err(CudaFailure::Load)?;
        for line in model.startup_log() {
            log.info(line);
        }
        let slots = model.num_slots();
        let kv_bytes = cuda::plan::kv_bytes_per_slot(model.config().num_hidden_layers, model.config().kv_dim()) * slots;
        let mut run_opts = opts.clone();
        run_opts.max_running_requests = Some(max_running);
        run_opts.max_total_tokens = Some(slots);
        run_opts.dtype = "bfloat16".into();
        Ok(PlacedModel {
            model: Box::new(model),
            device: format!("cuda:{} {}", info.ordinal, info.name),
            device_kv: Some(DeviceKv { slots, bytes: kv_bytes }),
            opts: run_opts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama(heads: usize, kv_heads: usize, head_dim: usize) -> ModelConfig {
        let json = format!(
            r#"{{"architectures":["LlamaForCausalLM"],"hidden_size":{h},"intermediate_size":64,"num_hidden_layers":1,
               "num_attention_heads":{heads},"num_key_value_heads":{kv_heads},"head_dim":{head_dim},"vocab_size":32,
               "rms_norm_eps":1e-5,"max_position_embeddings":128}}"#,
            h = heads * head_dim
        );
        ModelConfig::from_json_str(&json).unwrap()
    }

    #[test]
    fn device_names_parse_and_unknown_ones_are_refused() {
        assert_eq!(DeviceRequest::parse("auto"), Ok(DeviceRequest::Auto));
        assert_eq!(DeviceRequest::parse("cpu"), Ok(DeviceRequest::Cpu));
        assert_eq!(DeviceRequest::parse("cuda"), Ok(DeviceRequest::Cuda));
        let err = DeviceRequest::parse("tpu").unwrap_err();
        assert!(err.contains("tpu") && err.contains("auto, cpu, cuda"), "{err}");
    }

    #[test]
    fn float32_and_foreign_architectures_stay_on_the_cpu() {
        let mut opts = EngineOptions::default();
        let cfg = llama(8, 2, 16);
        assert!(cuda_precheck(&opts, &cfg).is_ok());
        opts.dtype = "float32".into();
        assert!(cuda_precheck(&opts, &cfg).unwrap_err().contains("float32"));
        let mut other = cfg.clone();
        other.architecture = "MistralForCausalLM".into();
        assert!(cuda_precheck(&EngineOptions::default(), &other).unwrap_err().contains("MistralForCausalLM"));
    }

    #[test]
    fn gpu_batch_covers_decode_plus_prefill_budget_or_a_whole_unchunked_prompt() {
        let mut opts = EngineOptions { max_prefill_tokens: 1000, chunked_prefill_size: 512, ..Default::default() };
        assert_eq!(gpu_batch_tokens(&opts, 8192, 64), 1064);
        opts.chunked_prefill_size = -1;
        assert_eq!(gpu_batch_tokens(&opts, 8192, 64), 8192 + 64);
        assert_eq!(gpu_batch_tokens(&opts, 100, 64), 1064);
    }

    #[test]
    fn cpu_request_goes_to_the_cpu_loader_and_bad_names_are_invalid_arguments() {
        let log = Logger { level: crate::sched::log::Level::Error };
        let req = LoadOptions {
            model_path: "/nonexistent".into(),
            load_format: "auto".into(),
            dtype: "auto".into(),
            threads: Some(1),
            seed: 0,
        };
        let opts = EngineOptions { device: "tpu".into(), ..Default::default() };
        assert_eq!(load(&opts, &req, log).err().unwrap().code, status::INVALID_ARGUMENT);
        // cpu goes straight to the CPU loader, whose error names the missing folder.
        let opts = EngineOptions { device: "cpu".into(), ..Default::default() };
        let err = load(&opts, &req, log).err().unwrap();
        assert_eq!(err.code, status::LOAD);
        assert!(!err.message.contains("CUDA"), "{}", err.message);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_request_without_the_feature_fails_with_the_reason() {
        let log = Logger { level: crate::sched::log::Level::Error };
        let req = LoadOptions {
            model_path: "/nonexistent".into(),
            load_format: "auto".into(),
            dtype: "auto".into(),
            threads: Some(1),
            seed: 0,
        };
        let opts = EngineOptions { device: "cuda".into(), ..Default::default() };
        let err = load(&opts, &req, log).err().unwrap();
        assert_eq!(err.code, status::LOAD);
        assert!(err.message.contains(NO_CUDA_BUILD), "{}", err.message);
    }
}
