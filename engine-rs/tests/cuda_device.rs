//! `--device` through `Engine::create` in a `cuda` build: on a host without a usable GPU, `auto`
//! falls back to the CPU and serves, `cuda` fails with LLM_ERR_LOAD and the probe's reason; model
//! shapes the kernels cannot run are refused before the driver is touched. On a GPU host the
//! engine must report the GPU instead (scripts/gpu_check.py checks it end to end).
#![cfg(feature = "cuda")]

use llm_engine::config::ModelConfig;
use llm_engine::engine::device::cuda_precheck;
use llm_engine::engine::{status, Engine, EngineOptions};

fn has_gpu_driver() -> bool {
    std::path::Path::new("/dev/nvidiactl").exists()
}

fn stories() -> String {
    let dir = std::env::var("LLM_MODELS_DIR")
        .unwrap_or_else(|_| format!("{}/../../shared/models", env!("CARGO_MANIFEST_DIR")));
    format!("{dir}/stories260K")
}

fn create(device: &str) -> Result<Engine, llm_engine::engine::EngineError> {
    let config = serde_json::json!({
        "model_path": stories(),
        "device": device,
        "max_total_tokens": 2048,
        "threads": 1,
        "log_level": "error",
    });
    Engine::create(config.to_string().as_bytes())
}

#[test]
fn auto_serves_on_the_cpu_and_cuda_fails_with_the_reason_when_no_gpu_is_usable() {
    if has_gpu_driver() {
        return; // the GPU path: scripts/gpu_check.sh
    }
    let engine = create("auto").unwrap_or_else(|e| panic!("auto must fall back to the CPU: {}", e.message));
    let info: serde_json::Value = serde_json::from_str(engine.info_json()).unwrap();
    assert_eq!(info["device"], "cpu");
    drop(engine);
    let err = create("cuda").err().expect("cuda must fail without a GPU");
    assert_eq!(err.code, status::LOAD);
    assert!(err.message.starts_with("--device cuda: CUDA is unavailable: "), "{}", err.message);
    // The reason is the probe's, which names what is missing.
    assert!(err.message.contains("libcuda") || err.message.contains("GPU"), "{}", err.message);
}

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
fn shapes_the_kernels_cannot_run_are_refused_before_the_driver() {
    let opts = EngineOptions::default();
    assert!(cuda_precheck(&opts, &llama(8, 2, 64)).is_ok());
    assert!(cuda_precheck(&opts, &llama(32, 2, 64)).unwrap_err().contains("GQA group"));
    assert!(cuda_precheck(&opts, &llama(4, 4, 512)).unwrap_err().contains("head_dim"));
}
