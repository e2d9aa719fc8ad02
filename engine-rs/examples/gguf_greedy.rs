//! Greedy decoding on a model with each step's top logits, in the same JSON shape as
//! scripts/llamacpp_vectors.mjs writes for llama.cpp, so the two can be compared step by step.
//! Usage: cargo run --release --example gguf_greedy -- MODEL PROMPTS.json OUT.json [steps] [dtype] [top]
//! PROMPTS.json: an array of token-id arrays, or an object with `greedy[].prompt_ids` or `out[].prompt_ids`.

use llm_engine::kv::cache::KvCache;
use llm_engine::loader::{load_model, LoadOptions};
use llm_engine::model::ForwardSeq;
use serde_json::{json, Value};

fn prompts(v: &Value) -> Vec<Vec<u32>> {
    let runs = v.get("greedy").or_else(|| v.get("out"));
    let list = runs.map(|g| g.as_array().unwrap().iter().map(|c| c["prompt_ids"].clone()).collect()).unwrap_or_else(|| v.as_array().unwrap().clone());
    list.iter().map(|p| p.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()).collect()
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (model_path, prompts_path, out_path) = (&a[1], &a[2], &a[3]);
    let steps: usize = a.get(4).map_or(32, |s| s.parse().unwrap());
    let mut opts = LoadOptions::new(model_path);
    opts.dtype = a.get(5).cloned().unwrap_or_else(|| "auto".into());
    let top: usize = a.get(6).map_or(2, |s| s.parse().unwrap());
    let model = load_model(&opts).unwrap_or_else(|e| panic!("{e}"));
    let c = model.config().clone();
    let input: Value = serde_json::from_str(&std::fs::read_to_string(prompts_path).unwrap()).unwrap();
    let mut out = Vec::new();
    for ids in prompts(&input) {
        let total = ids.len() + steps;
        let mut kv = KvCache::new(c.num_hidden_layers, total, c.kv_dim());
        let slots: Vec<u32> = (0..total as u32).collect();
        let (mut toks, mut tops) = (Vec::new(), Vec::new());
        let mut feed = ids.clone();
        let mut pos = 0;
        for _ in 0..steps {
            let seq = ForwardSeq { tokens: &feed, start_pos: pos, slots: &slots[..pos + feed.len()], all_logits: false };
            let logits = model.try_forward(&[seq], &mut kv).unwrap();
            pos += feed.len();
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.select_nth_unstable_by(top, |&x, &y| logits[y].total_cmp(&logits[x]));
            order.truncate(top);
            order.sort_by(|&x, &y| logits[y].total_cmp(&logits[x]));
            tops.push(order.iter().map(|&t| json!([t, logits[t]])).collect::<Vec<_>>());
            let next = order[0] as u32;
            toks.push(next);
            if c.eos_token_ids.contains(&next) {
                break;
            }
            feed = vec![next];
        }
        out.push(json!({ "prompt_ids": ids, "output_ids": toks, "tops": tops }));
    }
    std::fs::write(out_path, serde_json::to_string(&json!({ "kv": "F32", "fa": "ours", "dtype": opts.dtype, "out": out })).unwrap()).unwrap();
}
