//! Loader errors: every broken input is an Err naming the file (and tensor), never a panic.

use super::*;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("llm-loader-test-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

const CONFIG: &str = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":16,
  "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":10,
  "tie_word_embeddings":true,"eos_token_id":2,"bos_token_id":1}"#;

/// (name, shape) of every tensor CONFIG needs.
fn tensors_for_config() -> Vec<(String, Vec<usize>)> {
    let p = "model.layers.0";
    vec![
        ("model.embed_tokens.weight".into(), vec![10, 8]),
        ("model.norm.weight".into(), vec![8]),
        (format!("{p}.input_layernorm.weight"), vec![8]),
        (format!("{p}.post_attention_layernorm.weight"), vec![8]),
        (format!("{p}.self_attn.q_proj.weight"), vec![8, 8]),
        (format!("{p}.self_attn.k_proj.weight"), vec![4, 8]),
        (format!("{p}.self_attn.v_proj.weight"), vec![4, 8]),
        (format!("{p}.self_attn.o_proj.weight"), vec![8, 8]),
        (format!("{p}.mlp.gate_proj.weight"), vec![16, 8]),
        (format!("{p}.mlp.up_proj.weight"), vec![16, 8]),
        (format!("{p}.mlp.down_proj.weight"), vec![8, 16]),
    ]
}

/// A valid f32 safetensors file of `tensors` (values 0.01 * index).
fn safetensors_bytes(tensors: &[(String, Vec<usize>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        let begin = data.len();
        for i in 0..n {
            data.extend_from_slice(&(0.01f32 * (i % 7) as f32).to_le_bytes());
        }
        header.insert(name.clone(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [begin, data.len()]}));
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

fn model_dir(weights: &[(&str, Vec<u8>)]) -> PathBuf {
    let d = temp_dir();
    std::fs::write(d.join("config.json"), CONFIG).unwrap();
    for (name, bytes) in weights {
        std::fs::write(d.join(name), bytes).unwrap();
    }
    d
}

fn load_err(dir: &Path) -> String {
    match load_model(&LoadOptions::new(dir)) {
        Ok(_) => panic!("load of {} unexpectedly succeeded", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn valid_single_file_loads_and_runs() {
    let dir = model_dir(&[("model.safetensors", safetensors_bytes(&tensors_for_config()))]);
    let model = load_model(&LoadOptions::new(&dir)).unwrap();
    assert_eq!(model.weight_dtype(), "float32");
    let mut kv = crate::kv::cache::KvCache::new(1, 4, 4);
    let seq = crate::model::ForwardSeq { tokens: &[1, 5], start_pos: 0, slots: &[0, 1], all_logits: true };
    let logits = model.try_forward(&[seq], &mut kv).unwrap();
    assert_eq!(logits.len(), 20);
    assert!(logits.iter().all(|x| x.is_finite()));
}

#[test]
fn sharded_checkpoint_loads() {
    let all = tensors_for_config();
    let (a, b) = all.split_at(5);
    let mut map = serde_json::Map::new();
    for (n, _) in a {
        map.insert(n.clone(), "model-00001-of-00002.safetensors".into());
    }
    for (n, _) in b {
        map.insert(n.clone(), "model-00002-of-00002.safetensors".into());
    }
    let index = serde_json::to_vec(&serde_json::json!({"metadata": {}, "weight_map": map})).unwrap();
    let dir = model_dir(&[
        ("model-00001-of-00002.safetensors", safetensors_bytes(a)),
        ("model-00002-of-00002.safetensors", safetensors_bytes(b)),
        ("model.safetensors.index.json", index),
    ]);
    let model = load_model(&LoadOptions::new(&dir)).unwrap();
    assert!(model.weight_bytes() > 0);
    // The bfloat16 option converts the f32 checkpoint once.
    let mut opts = LoadOptions::new(&dir);
    opts.dtype = "bfloat16".into();
    assert_eq!(load_model(&opts).unwrap().weight_dtype(), "bfloat16");
}

#[test]
fn missing_config_names_the_file() {
    let d = temp_dir();
    let e = load_err(&d);
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn missing_weights_suggest_dummy() {
    let d = model_dir(&[]);
    let e = load_err(&d);
    assert!(e.contains("safetensors") && e.contains("dummy"), "{e}");
}

#[test]
fn truncated_file_is_an_error_naming_file_and_tensor() {
    let mut bytes = safetensors_bytes(&tensors_for_config());
    bytes.truncate(bytes.len() - 100);
    let dir = model_dir(&[("model.safetensors", bytes)]);
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors") && e.contains("model.layers.0.mlp.down_proj.weight") && e.contains("out of range"), "{e}");
    // Cut inside the header, and a file shorter than the length prefix.
    let dir = model_dir(&[("model.safetensors", safetensors_bytes(&tensors_for_config())[..40].to_vec())]);
    assert!(load_err(&dir).contains("header length"));
    let dir = model_dir(&[("model.safetensors", vec![1, 2, 3])]);
    assert!(load_err(&dir).contains("not a safetensors file"));
}

/// Rewrites one tensor's header entry and keeps the header length consistent.
fn with_mutated_header(edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let bytes = safetensors_bytes(&tensors_for_config());
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

#[test]
fn lying_headers_are_errors() {
    let cases: Vec<(&str, Box<dyn Fn(&mut serde_json::Value)>)> = vec![
        ("out of range", Box::new(|h| h["model.norm.weight"]["data_offsets"] = serde_json::json!([0, 1u64 << 40]))),
        ("out of range", Box::new(|h| h["model.norm.weight"]["data_offsets"] = serde_json::json!([64, 32]))),
        ("needs", Box::new(|h| h["model.norm.weight"]["shape"] = serde_json::json!([9]))),
        ("unknown dtype", Box::new(|h| h["model.norm.weight"]["dtype"] = serde_json::json!("Q4")))
        ,
        ("overflows", Box::new(|h| h["model.norm.weight"]["shape"] = serde_json::json!([u64::MAX, 4]))),
    ];
    for (want, edit) in cases {
        let dir = model_dir(&[("model.safetensors", with_mutated_header(edit))]);
        let e = load_err(&dir);
        assert!(e.contains("model.safetensors") && e.contains("model.norm.weight") && e.contains(want), "want {want}: {e}");
    }
    let dir = model_dir(&[("model.safetensors", {
        let mut b = safetensors_bytes(&tensors_for_config());
        b[8] = b'!';
        b
    })]);
    assert!(load_err(&dir).contains("not valid JSON"));
}

#[test]
fn shape_mismatch_names_tensor_and_file() {
    let mut tensors = tensors_for_config();
    tensors[5].1 = vec![8, 8]; // k_proj as if there were 2 KV heads
    let dir = model_dir(&[("model.safetensors", safetensors_bytes(&tensors))]);
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors") && e.contains("model.layers.0.self_attn.k_proj.weight") && e.contains("[4, 8]"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let mut tensors = tensors_for_config();
    tensors.retain(|(n, _)| !n.contains("up_proj"));
    let dir = model_dir(&[("model.safetensors", safetensors_bytes(&tensors))]);
    let e = load_err(&dir);
    assert!(e.contains("model.layers.0.mlp.up_proj.weight") && e.contains("not found"), "{e}");
}

#[test]
fn bad_options_are_errors() {
    let dir = model_dir(&[("model.safetensors", safetensors_bytes(&tensors_for_config()))]);
    let mut o = LoadOptions::new(&dir);
    o.dtype = "int4".into();
    assert!(load_model(&o).err().unwrap().contains("int4"));
    let mut o = LoadOptions::new(&dir);
    o.load_format = "gguf".into();
    assert!(load_model(&o).err().unwrap().contains("gguf"));
    let mut o = LoadOptions::new(&dir);
    o.threads = Some(0);
    assert!(load_model(&o).is_err());
}

#[test]
fn dummy_weights_are_deterministic_per_seed() {
    let dir = model_dir(&[]);
    let run = |seed: u64| {
        let mut o = LoadOptions::new(&dir);
        o.load_format = "dummy".into();
        o.seed = seed;
        let m = load_model(&o).unwrap();
        let mut kv = crate::kv::cache::KvCache::new(1, 4, 4);
        m.try_forward(&[crate::model::ForwardSeq { tokens: &[3], start_pos: 0, slots: &[0], all_logits: false }], &mut kv).unwrap()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}
