//! End-to-end checks against HF transformers goldens (float32 path) in the shared models folder.

use llm_engine::kv::cache::KvCache;
use llm_engine::loader::{load_model, LoadOptions};
use llm_engine::model::{ForwardSeq, Model};
use serde_json::Value;
use std::path::PathBuf;

fn models_dir() -> PathBuf {
    match std::env::var("LLM_MODELS_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models"),
    }
}

fn load(name: &str, dtype: &str) -> Box<dyn Model> {
    let mut opts = LoadOptions::new(models_dir().join(name));
    opts.dtype = dtype.into();
    load_model(&opts).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn golden(name: &str) -> Value {
    let path = models_dir().join(name).join("golden.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding with KV slots 0..n: one prefill of the prompt, then one token per step.
/// Returns the generated ids and the logits row that chose each of them.
fn greedy(model: &dyn Model, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let c = model.config();
    let mut kv = KvCache::new(c.num_hidden_layers, prompt.len() + steps, c.kv_dim());
    let slots: Vec<u32> = (0..(prompt.len() + steps) as u32).collect();
    let mut tokens = prompt.to_vec();
    let mut rows = Vec::new();
    let mut logits = model
        .try_forward(&[ForwardSeq { tokens: prompt, start_pos: 0, slots: &slots[..prompt.len()], all_logits: false }], &mut kv)
        .unwrap();
    for _ in 0..steps {
        let next = argmax(&logits);
        tokens.push(next);
        rows.push(std::mem::take(&mut logits));
        if tokens.len() == prompt.len() + steps {
            break;
        }
        let pos = tokens.len() - 1;
        logits = model
            .try_forward(&[ForwardSeq { tokens: &[next], start_pos: pos, slots: &slots[..pos + 1], all_logits: false }], &mut kv)
            .unwrap();
    }
    (tokens[prompt.len()..].to_vec(), rows)
}

#[test]
fn stories260k_matches_golden_greedy() {
    let model = load("stories260K", "float32");
    let g = golden("stories260K");
    for case in g["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["output_ids"]);
        let (got, rows) = greedy(model.as_ref(), &prompt, want.len());
        assert_eq!(got, want, "prompt {:?}", case["prompt"]);
        // The prompt's last-position top-5 logits, to float tolerance.
        for pair in case["last_prompt_pos_top5"].as_array().unwrap() {
            let (id, logit) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap() as f32);
            assert!((rows[0][id] - logit).abs() < 1e-3, "id {id}: {} vs {logit}", rows[0][id]);
        }
    }
}

#[test]
fn tiny_random_llama31_matches_golden_ids_and_logits() {
    for dtype in ["float32", "auto"] {
        let model = load("tiny-random-llama-3.1", dtype);
        assert_eq!(model.weight_dtype(), "bfloat16", "bf16 weights stay bf16");
        let g = golden("tiny-random-llama-3.1");
        let cases = g["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 5);
        let mut worst = 0.0f32;
        for (ci, case) in cases.iter().enumerate() {
            let prompt = ids(&case["prompt_ids"]);
            let want = ids(&case["output_ids"]);
            let (got, rows) = greedy(model.as_ref(), &prompt, want.len());
            assert_eq!(got, want, "case {ci}");
            for (step, top) in case["top5_per_step"].as_array().unwrap().iter().enumerate() {
                for (id, logit) in ids(&top["ids"]).iter().zip(top["logits"].as_array().unwrap()) {
                    let diff = (rows[step][*id as usize] - logit.as_f64().unwrap() as f32).abs();
                    worst = worst.max(diff);
                    assert!(diff < 1e-3, "case {ci} step {step} id {id}: off by {diff}");
                }
            }
        }
        eprintln!("tiny-random-llama-3.1 ({dtype}): worst top-5 logit error {worst:.2e}");
    }
}
