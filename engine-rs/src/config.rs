//! config.json (+ generation_config.json) → ModelConfig. (Fields the scheduler relies on are fixed here;
//! the loader may add more.)

use serde_json::Value;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct ModelConfig {
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
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// EOS ids from config.json and generation_config.json (union).
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    /// `rope_scaling` with rope_type "llama3"; None means plain RoPE.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// `torch_dtype` (or `dtype`) as written in config.json, e.g. "bfloat16"; "" when absent.
    pub torch_dtype: String,
}

/// Llama 3.x frequency-dependent RoPE rescaling parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

const SUPPORTED_ARCHITECTURES: &[&str] = &["LlamaForCausalLM", "MistralForCausalLM"];

impl ModelConfig {
    /// Floats per token per layer in K (and in V).
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Floats per token in Q (all heads).
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Reads `<dir>/config.json` and, when present, `<dir>/generation_config.json`.
    pub fn from_dir(dir: &Path) -> Result<ModelConfig, String> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
        let mut config = Self::from_json_str(&text).map_err(|e| format!("{}: {e}", config_path.display()))?;
        let gen_path = dir.join("generation_config.json");
        if gen_path.exists() {
            let gen_text = std::fs::read_to_string(&gen_path)
                .map_err(|e| format!("cannot read {}: {e}", gen_path.display()))?;
            let gen: Value = serde_json::from_str(&gen_text)
                .map_err(|e| format!("{}: invalid JSON: {e}", gen_path.display()))?;
            let ids = token_ids(gen.get("eos_token_id"), "eos_token_id")
                .map_err(|e| format!("{}: {e}", gen_path.display()))?;
            for id in ids {
                if !config.eos_token_ids.contains(&id) {
                    config.eos_token_ids.push(id);
                }
            }
            if config.bos_token_id.is_none() {
                config.bos_token_id = token_ids(gen.get("bos_token_id"), "bos_token_id")
                    .map_err(|e| format!("{}: {e}", gen_path.display()))?
                    .first()
                    .copied();
            }
        }
        Ok(config)
    }

    /// Parses the text of a HF config.json (errors do not name the file; `from_dir` adds it).
    pub fn from_json_str(text: &str) -> Result<ModelConfig, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        if !v.is_object() {
            return Err("expected a JSON object".into());
        }
        let architecture = match v.get("architectures").and_then(|a| a.as_array()) {
            Some(list) if !list.is_empty() => list[0].as_str().ok_or("architectures[0] is not a string")?.to_string(),
            _ => return Err("missing \"architectures\"".into()),
        };
        if !SUPPORTED_ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(format!(
                "unsupported architecture \"{architecture}\" (supported: {})",
                SUPPORTED_ARCHITECTURES.join(", ")
            ));
        }
        let hidden_size = req_usize(&v, "hidden_size")?;
        let num_attention_heads = req_usize(&v, "num_attention_heads")?;
        let num_key_value_heads = opt_usize(&v, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(format!(
                "num_attention_heads ({num_attention_heads}) must be a multiple of num_key_value_heads ({num_key_value_heads})"
            ));
        }
        let head_dim = match opt_usize(&v, "head_dim")? {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(format!(
                        "hidden_size ({hidden_size}) is not divisible by num_attention_heads ({num_attention_heads}) and no head_dim is given"
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(format!("head_dim must be even and positive, got {head_dim}"));
        }
        if let Some(act) = v.get("hidden_act").and_then(|a| a.as_str()) {
            if act != "silu" {
                return Err(format!("unsupported hidden_act \"{act}\" (only silu)"));
            }
        }
        for flag in ["attention_bias", "mlp_bias"] {
            if v.get(flag).and_then(|b| b.as_bool()).unwrap_or(false) {
                return Err(format!("{flag}=true is not supported"));
            }
        }
        let rope_theta = opt_f64(&v, "rope_theta")?
            .or(v.get("rope_scaling").and_then(|r| r.get("rope_theta")).and_then(|t| t.as_f64()))
            .unwrap_or(10000.0) as f32;
        let rope_scaling = parse_rope_scaling(v.get("rope_scaling"))?;
        let mut eos_token_ids = token_ids(v.get("eos_token_id"), "eos_token_id")?;
        eos_token_ids.dedup();
        let bos_token_id = token_ids(v.get("bos_token_id"), "bos_token_id")?.first().copied();
        let torch_dtype = v
            .get("torch_dtype")
            .or(v.get("dtype"))
            .and_then(|d| d.as_str())
            .unwrap_or("")
            .to_string();
        let config = ModelConfig {
            architecture,
            hidden_size,
            intermediate_size: req_usize(&v, "intermediate_size")?,
            num_hidden_layers: req_usize(&v, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: req_usize(&v, "vocab_size")?,
            rms_norm_eps: opt_f64(&v, "rms_norm_eps")?.unwrap_or(1e-6) as f32,
            rope_theta,
            max_position_embeddings: opt_usize(&v, "max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(|b| b.as_bool()).unwrap_or(false),
            eos_token_ids,
            bos_token_id,
            rope_scaling,
            torch_dtype,
        };
        for (name, value) in [
            ("hidden_size", config.hidden_size),
            ("intermediate_size", config.intermediate_size),
            ("num_hidden_layers", config.num_hidden_layers),
            ("num_attention_heads", config.num_attention_heads),
            ("vocab_size", config.vocab_size),
        ] {
            if value == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        Ok(config)
    }

    /// RoPE inverse frequencies (head_dim / 2 of them), computed as HF transformers does in
    /// float32, including the llama3 rescaling when configured.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base = self.rope_theta;
        let plain: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0f32 / base.powf((2 * i) as f32 / dim as f32))
            .collect();
        let Some(s) = &self.rope_scaling else { return plain };
        let old_len = s.original_max_position_embeddings as f32;
        let low_freq_wavelen = old_len / s.low_freq_factor;
        let high_freq_wavelen = old_len / s.high_freq_factor;
        plain
            .iter()
            .map(|&f| {
                let wavelen = 2.0 * std::f32::consts::PI / f;
                if wavelen < high_freq_wavelen {
                    f
                } else if wavelen > low_freq_wavelen {
                    f / s.factor
                } else {
                    let smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                }
            })
            .collect()
    }
}

fn parse_rope_scaling(v: Option<&Value>) -> Result<Option<Llama3RopeScaling>, String> {
    let Some(v) = v else { return Ok(None) };
    if v.is_null() {
        return Ok(None);
    }
    let kind = v.get("rope_type").or(v.get("type")).and_then(|t| t.as_str()).unwrap_or("");
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let num = |key: &str| -> Result<f64, String> {
                v.get(key)
                    .and_then(|x| x.as_f64())
                    .ok_or_else(|| format!("rope_scaling.{key} is missing or not a number"))
            };
            let scaling = Llama3RopeScaling {
                factor: num("factor")? as f32,
                low_freq_factor: num("low_freq_factor")? as f32,
                high_freq_factor: num("high_freq_factor")? as f32,
                original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
            };
            if scaling.factor <= 0.0
                || scaling.high_freq_factor <= scaling.low_freq_factor
                || scaling.low_freq_factor <= 0.0
                || scaling.original_max_position_embeddings == 0
            {
                return Err(format!("rope_scaling has invalid values: {scaling:?}"));
            }
            Ok(Some(scaling))
        }
        other => Err(format!("unsupported rope_scaling rope_type \"{other}\" (supported: llama3, default)")),
    }
}

fn opt_usize(v: &Value, key: &str) -> Result<Option<usize>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| format!("\"{key}\" must be a non-negative integer, got {x}")),
    }
}

fn req_usize(v: &Value, key: &str) -> Result<usize, String> {
    opt_usize(v, key)?.ok_or_else(|| format!("missing \"{key}\""))
}

fn opt_f64(v: &Value, key: &str) -> Result<Option<f64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_f64().map(Some).ok_or_else(|| format!("\"{key}\" must be a number, got {x}")),
    }
}

/// A token id field that may be absent, null, an integer or a list of integers.
fn token_ids(v: Option<&Value>, key: &str) -> Result<Vec<u32>, String> {
    let as_id = |x: &Value| -> Result<u32, String> {
        x.as_u64()
            .filter(|&n| n <= u32::MAX as u64)
            .map(|n| n as u32)
            .ok_or_else(|| format!("\"{key}\" holds a value that is not a token id: {x}"))
    };
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(list)) => list.iter().map(as_id).collect(),
        Some(x) => Ok(vec![as_id(x)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,
        "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"vocab_size":100,
        "rope_theta":500000.0,"eos_token_id":[5,6],"bos_token_id":1,
        "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
        "original_max_position_embeddings":8192,"rope_type":"llama3"}}"#;

    #[test]
    fn parses_llama3_config() {
        let c = ModelConfig::from_json_str(TINY).unwrap();
        assert_eq!(c.head_dim, 32);
        assert_eq!(c.kv_dim(), 64);
        assert_eq!(c.eos_token_ids, vec![5, 6]);
        assert_eq!(c.rope_scaling.as_ref().unwrap().factor, 8.0);
        let f = c.rope_inv_freq();
        assert_eq!(f.len(), 16);
        // Highest frequency untouched, lowest divided by the factor.
        assert_eq!(f[0], 1.0);
        let plain_last = 1.0f32 / 500000f32.powf(30.0 / 32.0);
        assert!((f[15] - plain_last / 8.0).abs() < 1e-12);
    }

    #[test]
    fn head_dim_defaults_and_scalar_eos() {
        let c = ModelConfig::from_json_str(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":8,"vocab_size":10,"eos_token_id":2}"#,
        )
        .unwrap();
        assert_eq!(c.head_dim, 8);
        assert_eq!(c.num_key_value_heads, 8);
        assert_eq!(c.eos_token_ids, vec![2]);
        assert!(c.rope_scaling.is_none());
    }

    #[test]
    fn rejects_unsupported_architecture_and_missing_fields() {
        let e = ModelConfig::from_json_str(r#"{"architectures":["GPT2LMHeadModel"]}"#).unwrap_err();
        assert!(e.contains("GPT2LMHeadModel"), "{e}");
        let e = ModelConfig::from_json_str(r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64}"#).unwrap_err();
        assert!(e.contains("num_attention_heads"), "{e}");
        let e = ModelConfig::from_json_str("not json").unwrap_err();
        assert!(e.contains("JSON"), "{e}");
    }
}
