//! The `cuda` build on a host without a usable GPU: probing and loading fail with a reason and
//! never panic or abort, so `--device auto` can fall back to the CPU. On a GPU host the probe
//! must instead describe a bf16-capable device.
#![cfg(feature = "cuda")]

use llm_engine::backend::cuda::{probe_cuda, plan::RopeScaling, CudaLlama, CudaOptions};
use llm_engine::config::ModelConfig;

fn has_gpu_driver() -> bool {
    std::path::Path::new("/dev/nvidiactl").exists()
}

#[test]
fn probe_reports_a_reason_or_a_capable_device() {
    match probe_cuda() {
        Ok(info) => {
            assert!(has_gpu_driver(), "probe succeeded without a GPU: {info:?}");
            assert!(info.compute_capability >= (8, 0));
            assert!(info.total_memory_bytes > 0 && info.sm_count > 0);
        }
        Err(reason) => {
            assert!(!reason.is_empty());
            assert!(!reason.contains('\n'), "one log line expected: {reason}");
            if !has_gpu_driver() {
                assert!(
                    reason.contains("libcuda") || reason.contains("without nvcc"),
                    "unexpected reason on a CPU-only host: {reason}"
                );
            }
        }
    }
}

#[test]
fn loading_without_a_gpu_is_an_error_not_a_crash() {
    if has_gpu_driver() {
        return; // covered by scripts/gpu_check.sh on GPU hosts
    }
    let config = ModelConfig {
        architecture: "LlamaForCausalLM".into(),
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        vocab_size: 512,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        max_position_embeddings: 256,
        tie_word_embeddings: true,
        eos_token_ids: vec![2],
        bos_token_id: Some(1),
        rope_scaling: None,
        torch_dtype: String::new(),
    };
    let err = CudaLlama::load(config, RopeScaling::None, None, &CudaOptions::default()).err().expect("no GPU here");
    assert!(err.contains("CUDA"), "{err}");
}

#[test]
fn unsupported_shapes_are_refused_before_touching_the_gpu() {
    let config = ModelConfig {
        architecture: "LlamaForCausalLM".into(),
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 1,
        num_attention_heads: 4,
        num_key_value_heads: 3,
        head_dim: 16,
        vocab_size: 512,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        max_position_embeddings: 256,
        tie_word_embeddings: true,
        eos_token_ids: vec![],
        bos_token_id: None,
        rope_scaling: None,
        torch_dtype: String::new(),
    };
    let err = CudaLlama::load(config, RopeScaling::None, None, &CudaOptions::default()).err().unwrap();
    assert!(err.contains("num_key_value_heads"), "{err}");
}

