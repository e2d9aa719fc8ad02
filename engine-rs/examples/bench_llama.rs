//! Quick CPU throughput check: dummy bf16 weights from a config, one prefill, then batch-1 decode.
//! Usage: cargo run --release --example bench_llama -- [model_dir] [prefill_tokens] [decode_steps]
//! Also prints a rough memory-read bandwidth, to judge decode against the machine's ceiling.

use llm_engine::kv::cache::KvCache;
use llm_engine::loader::{load_model, LoadOptions};
use llm_engine::model::ForwardSeq;
use std::time::Instant;

fn read_bandwidth_gbs() -> f64 {
    use rayon::prelude::*;
    let data = vec![1u64; 1 << 28]; // 2 GiB, far beyond the caches
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let s: u64 = data.par_chunks(1 << 16).map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x))).sum();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(s, data.len() as u64);
        best = best.max((data.len() * 8) as f64 / secs / 1e9);
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).cloned().unwrap_or_else(|| {
        format!("{}/../../shared/models/llama-3.2-1b-instruct", env!("CARGO_MANIFEST_DIR"))
    });
    let prefill: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(128);
    let steps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(16);

    println!("memory read bandwidth (2 GiB sum, all cores): {:.1} GB/s", read_bandwidth_gbs());

    let mut opts = LoadOptions::new(&dir);
    opts.load_format = "dummy".into();
    let t = Instant::now();
    let model = load_model(&opts).unwrap_or_else(|e| panic!("{e}"));
    let c = model.config().clone();
    println!(
        "loaded {} dummy {} weights ({:.2} GB, kernels {}) in {:.1}s",
        dir,
        model.weight_dtype(),
        model.weight_bytes() as f64 / 1e9,
        model.kernel_isa(),
        t.elapsed().as_secs_f64()
    );

    let total = prefill + steps;
    let mut kv = KvCache::new(c.num_hidden_layers, total, c.kv_dim());
    let slots: Vec<u32> = (0..total as u32).collect();
    let prompt: Vec<u32> = (0..prefill as u32).map(|i| 1000 + i * 7).collect();
    let t = Instant::now();
    let logits = model
        .try_forward(&[ForwardSeq { tokens: &prompt, start_pos: 0, slots: &slots[..prefill], all_logits: false }], &mut kv)
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!("prefill {prefill} tokens: {:.2}s = {:.1} tok/s", secs, prefill as f64 / secs);
    assert!(logits.iter().all(|x| x.is_finite()));

    let mut next = 1u32;
    let t = Instant::now();
    for s in 0..steps {
        let pos = prefill + s;
        let l = model
            .try_forward(&[ForwardSeq { tokens: &[next], start_pos: pos, slots: &slots[..pos + 1], all_logits: false }], &mut kv)
            .unwrap();
        next = l.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32;
    }
    let secs = t.elapsed().as_secs_f64();
    let per = secs / steps as f64;
    println!(
        "decode batch 1: {:.1} ms/token = {:.2} tok/s, weight stream {:.1} GB/s",
        per * 1e3,
        1.0 / per,
        model.weight_bytes() as f64 / per / 1e9
    );
}
