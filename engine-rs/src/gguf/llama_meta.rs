//! Llama hyperparameters from GGUF metadata (`{arch}.*` keys), mapped onto the engine's ModelConfig.

use super::file::{GgufError, GgufFile};
use crate::config::ModelConfig;

/// RoPE scaling as llama.cpp stores it (`{arch}.rope.scaling.*`); Llama 3 frequency factors come as the
/// `rope_freqs.weight` tensor instead.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeScaling {
    pub kind: String,
    pub factor: f32,
    pub original_context_length: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct LlamaParams {
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub context_length: usize,
    pub rope_scaling: Option<RopeScaling>,
    /// No `output.weight`: the LM head reuses `token_embd.weight`.
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// EOS, EOT and EOM ids (llama.cpp stops on any of them).
    pub eos_token_ids: Vec<u32>,
}

impl LlamaParams {
    pub fn from_gguf(f: &GgufFile) -> Result<LlamaParams, GgufError> {
        let fail = |msg: String| GgufError(format!("{}: {msg}", f.path.display()));
        let arch = f.get_str("general.architecture").ok_or_else(|| fail("general.architecture is missing".into()))?;
        if arch != "llama" {
            return Err(fail(format!("architecture '{arch}' is not supported (only llama)")));
        }
        let req = |key: &str| -> Result<usize, GgufError> {
            let full = format!("{arch}.{key}");
            f.get_u64(&full).map(|v| v as usize).ok_or_else(|| fail(format!("{full} is missing or not an integer")))
        };
        let opt = |key: &str| f.get_u64(&format!("{arch}.{key}")).map(|v| v as usize);
        let optf = |key: &str| f.get_f64(&format!("{arch}.{key}"));
        let hidden_size = req("embedding_length")?;
        let num_attention_heads = req("attention.head_count")?;
        if num_attention_heads == 0 || hidden_size == 0 {
            return Err(fail("embedding_length and attention.head_count must be positive".into()));
        }
        let num_key_value_heads = opt("attention.head_count_kv").unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(fail(format!("{num_attention_heads} heads cannot be grouped over {num_key_value_heads} KV heads")));
        }
        let head_dim = opt("attention.key_length")
            .or_else(|| opt("rope.dimension_count"))
            .unwrap_or(hidden_size / num_attention_heads);
        let embd = f.tensor("token_embd.weight").ok_or_else(|| fail("tensor 'token_embd.weight' is missing".into()))?;
        let vocab_size = opt("vocab_size")
            .or_else(|| f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len()))
            .unwrap_or(embd.rows());
        if embd.cols() != hidden_size || embd.rows() != vocab_size {
            return Err(fail(format!(
                "tensor 'token_embd.weight' has shape {:?}, expected [{hidden_size}, {vocab_size}]",
                embd.dims
            )));
        }
        let rope_scaling = f.get_str(&format!("{arch}.rope.scaling.type")).filter(|k| *k != "none").map(|kind| RopeScaling {
            kind: kind.to_string(),
            factor: optf("rope.scaling.factor").unwrap_or(1.0) as f32,
            original_context_length: opt("rope.scaling.original_context_length"),
        });
        let id = |key: &str| f.get_u64(key).and_then(|v| u32::try_from(v).ok());
        let mut eos_token_ids = Vec::new();
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let Some(v) = id(key) {
                if !eos_token_ids.contains(&v) {
                    eos_token_ids.push(v);
                }
            }
        }
        Ok(LlamaParams {
            architecture: arch.to_string(),
            hidden_size,
            intermediate_size: req("feed_forward_length")?,
            num_hidden_layers: req("block_count")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size,
            rms_norm_eps: optf("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
            rope_theta: optf("rope.freq_base").unwrap_or(10000.0) as f32,
            context_length: opt("context_length").unwrap_or(2048),
            rope_scaling,
            tie_word_embeddings: f.tensor("output.weight").is_none(),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_ids,
        })
    }

    pub fn to_model_config(&self) -> ModelConfig {
        ModelConfig {
            architecture: "LlamaForCausalLM".to_string(),
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            max_position_embeddings: self.context_length,
            tie_word_embeddings: self.tie_word_embeddings,
            eos_token_ids: self.eos_token_ids.clone(),
            bos_token_id: self.bos_token_id,
            // Llama 3 scaling reaches a GGUF model as the `rope_freqs.weight` tensor (per-frequency
            // divisors), not as config values; the GGUF loader applies that tensor itself.
            rope_scaling: None,
            // Weights keep their GGUF types per tensor; there is no single checkpoint dtype.
            torch_dtype: String::new(),
        }
    }
}
