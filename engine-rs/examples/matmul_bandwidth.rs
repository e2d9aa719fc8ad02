//! Matmul weight-streaming bandwidth per kernel path and thread count (bf16 8192x2048, batch 1).
use llm_engine::backend::cpu::{Kernels, Isa};
use llm_engine::loader::dummy::DummyWeights;
use llm_engine::backend::cpu::matrix::DType;
use std::time::Instant;
fn main() {
    let w = DummyWeights { seed: 1, dtype: DType::BF16 }.matrix("w", 8192, 2048);
    let x = vec![0.5f32; 2048];
    let mut out = vec![0.0f32; 8192];
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Scalar] {
        let k = Kernels::with_isa(isa).unwrap();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| { k.matmul(&x, 1, &w, &mut out);
                let t = Instant::now(); let n = 20; for _ in 0..n { k.matmul(&x, 1, &w, &mut out); }
                let s = t.elapsed().as_secs_f64() / n as f64;
                println!("{isa:?} threads {threads}: {:.1} GB/s", w.size_bytes() as f64 / s / 1e9); });
        }
    }
}
