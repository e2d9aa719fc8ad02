//! Kernel throughput with the data in L1 (no memory, no pool): the GGUF group kernels (VNNI, AMX int8) on
//! one 16-row Q4_1 group of SmolLM2's width, and one SmolLM2 layer's 512-token block attention on one thread.
//! They separate a kernel's own speed from what the matmul or the forward pass around it costs.
//! `bf16_decode_matmul_streaming` and `decode_read_patterns` are the exceptions: batch-1 bf16 matmuls over 1 GiB of
//! weights, and the load patterns alone over the same GiB, both memory-bound.
//! Run: `cargo test --release --test kernel_bench -- --ignored --nocapture` (docs/gguf.md quotes them).

#![cfg(target_arch = "x86_64")]

use llm_engine::backend::cpu::{Kernels, KvTable};
use llm_engine::gguf::dot::{amx_groups, avx512_groups};
use llm_engine::gguf::interleaved::{Interleaved, PackedKind};
use llm_engine::gguf::quants::quantize_q8;
use std::time::Instant;

/// 16 rows × 576 columns of Q4_1 (18 blocks), packed, with fixed pseudo-random bytes.
fn q4_1_group() -> (Interleaved, usize) {
    let (rows, blocks) = (16usize, 18usize);
    let src: Vec<u8> = (0..rows * blocks * 20).map(|i| (i * 31 % 251) as u8 & 0x3b).collect();
    (Interleaved::pack(PackedKind::Q4_1, rows, blocks, &src, None).unwrap(), blocks)
}

fn activations(tokens: usize, blocks: usize) -> Vec<f32> {
    (0..tokens * blocks * 32).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect()
}

#[test]
#[ignore = "benchmark, not a check"]
fn vnni_group_kernel_l1_hot() {
    if !std::arch::is_x86_feature_detected!("avx512vnni") {
        return println!("no AVX-512 VNNI here");
    }
    let (m, blocks) = q4_1_group();
    let acts = quantize_q8(&activations(8, blocks));
    let iters = 1_000_000;
    for threads in [1, 2] {
        let t = Instant::now();
        std::thread::scope(|sc| {
            for _ in 0..threads {
                let (m, acts) = (&m, &acts);
                sc.spawn(move || {
                    let mut out = vec![0f32; 8 * 16];
                    for _ in 0..iters {
                        // SAFETY: VNNI was detected; acts holds 8 tokens' blocks; out has 8 rows of 16.
                        unsafe { avx512_groups::group_dot(PackedKind::Q4_1, &m.group(0), blocks, acts.as_ptr(), 8, 8, out.as_mut_ptr(), 16, 16) };
                        std::hint::black_box(&mut out);
                    }
                });
            }
        });
        let gmacs = (threads * iters * 8 * 16 * blocks * 32) as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!("VNNI group kernel, 16 rows × 8 tokens, {threads} thread(s): {gmacs:.1} GMAC/s");
    }
}

#[test]
#[ignore = "benchmark, not a check"]
fn amx_group_kernel_l1_hot() {
    if !amx_groups::available() {
        return println!("no AMX int8 here");
    }
    let (m, blocks) = q4_1_group();
    let acts = quantize_q8(&activations(16, blocks));
    let mut out = vec![0f32; 16 * 16];
    let iters = 500_000;
    // SAFETY: AMX int8 is available (configured and released on this thread); acts holds 16 tokens' blocks.
    let secs = unsafe {
        amx_groups::configure();
        let mut scratch = amx_groups::Scratch::new(1, blocks);
        amx_groups::load_group(PackedKind::Q4_1, &m.group(0), 0, &mut scratch);
        let t = Instant::now();
        for _ in 0..iters {
            amx_groups::group_tile(PackedKind::Q4_1, &m.group(0), 0, acts.as_ptr(), out.as_mut_ptr(), 16, 16, &mut scratch);
            std::hint::black_box(&mut out);
        }
        let secs = t.elapsed().as_secs_f64();
        amx_groups::release();
        secs
    };
    let gmacs = (iters * 16 * 16 * blocks * 32) as f64 / secs / 1e9;
    println!("AMX int8 group kernel, 16 rows × 16 tokens, 1 thread: {gmacs:.1} GMAC/s, {:.1} ns per block", secs / (iters * blocks) as f64 * 1e9);
}

#[test]
#[ignore = "benchmark, not a check"]
fn block_attention_one_layer() {
    let k = Kernels::detect();
    // SmolLM2-135M: 9 query heads, 3 KV heads, head_dim 64; a 512-token prefill.
    let (n, heads, kv_heads, d) = (512usize, 9usize, 3usize, 64usize);
    let group = heads / kv_heads;
    let Some(block) = k.attention_block_rows(d, group) else {
        return println!("no block attention kernel on {}", k.name());
    };
    let kv_dim = kv_heads * d;
    let q: Vec<f32> = (0..n * heads * d).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let kc: Vec<f32> = (0..n * kv_dim).map(|i| ((i * 104729) % 1000) as f32 / 500.0 - 1.0).collect();
    let vc: Vec<f32> = (0..n * kv_dim).map(|i| ((i * 7) % 1000) as f32 / 500.0 - 1.0).collect();
    let slots: Vec<u32> = (0..n as u32).collect();
    let mut out = vec![0f32; n * heads * d];
    let mut scratch = Vec::new();
    let mut layer = |out: &mut [f32]| {
        for i in (0..n).step_by(block) {
            for h in 0..kv_heads {
                let at = i * heads * d + h * group * d;
                let kv = KvTable { k: &kc, v: &vc, slots: &slots, stride: kv_dim, offset: h * d };
                // SAFETY: q and out hold every row and head the block touches.
                unsafe { k.attend_block(q[at..].as_ptr(), heads * d, block.min(n - i), group, d, kv, i, 0.125, out[at..].as_mut_ptr(), &mut scratch) };
            }
        }
    };
    layer(&mut out);
    let iters = 40;
    let t = Instant::now();
    for _ in 0..iters {
        layer(&mut out);
    }
    let secs = t.elapsed().as_secs_f64() / iters as f64;
    let flops = (heads * (n * (n + 1) / 2) * d * 4) as f64;
    println!("block attention, one SmolLM2 layer, 512 tokens, 1 thread: {:.3} ms, {:.1} GFLOP/s", secs * 1e3, flops / secs / 1e9);
}

/// The weights both streaming benchmarks read: COUNT matrices of ROWS × K bf16 (1 GiB, far past the
/// caches) on huge pages, with fixed values near 1.0.
fn streaming_weights() -> Vec<llm_engine::backend::cpu::huge::HugeBuffer> {
    use read_patterns::{COUNT, K, ROWS};
    (0..COUNT)
        .map(|i| {
            let mut b = llm_engine::backend::cpu::huge::HugeBuffer::zeroed(ROWS * K * 2).unwrap();
            b.as_u16_mut().iter_mut().enumerate().for_each(|(j, v)| *v = 0x3c00 + ((j * 7 + i) % 64) as u16);
            b
        })
        .collect()
}

/// Batch-1 bf16 matmul straight from memory: `streaming_weights` against one token, two threads;
/// reads GB/s of weights. Compare with bench_one_batch's probe.
#[test]
#[ignore = "benchmark, not a check"]
fn bf16_decode_matmul_streaming() {
    use llm_engine::backend::cpu::matrix::{DType, Matrix, Storage};
    let (rows, cols, count) = (read_patterns::ROWS, read_patterns::K, read_patterns::COUNT);
    let mats: Vec<Matrix> =
        streaming_weights().into_iter().map(|b| Matrix::new(DType::BF16, rows, cols, Storage::Huge(b)).unwrap()).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let x: Vec<f32> = (0..cols).map(|i| (i % 13) as f32 / 13.0).collect();
    let bf16 = Kernels::detect().with_bf16_activations();
    // What the kernels are up against: the same bytes read plainly by the same number of threads.
    let regions: Vec<&[u8]> = mats.iter().map(|m| m.bytes()).collect();
    let plain = llm_engine::backend::cpu::read_probe::best_read_gbs(&regions, 2, 5);
    println!("plain read of the same weights, 2 threads: {plain:.1} GB/s");
    for (n, kernels) in [(1usize, bf16), (16, bf16), (1, bf16.without_amx())] {
        let xs: Vec<f32> = x.iter().cycle().take(n * cols).cloned().collect();
        let mut out_n = vec![0f32; n * rows];
        let mut best = 0f64;
        for _ in 0..5 {
            let t = Instant::now();
            pool.install(|| mats.iter().for_each(|m| kernels.matmul(&xs, n, m, &mut out_n)));
            best = best.max((count * rows * cols * 2) as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        println!("{} tokens, {}: {best:.1} GB/s of weights", n, kernels.name());
    }
}

/// What a batch-1 kernel's loads can read on this CPU, with no pool, no barriers and (but for the
/// `vdpbf16ps` rows) no arithmetic, over the GiB `bf16_decode_matmul_streaming` multiplies
/// (`streaming_weights`), each of two threads streaming its half of every matrix. Shows whether the decode gap is the multiply or the way it loads.
#[test]
#[ignore = "benchmark, not a check"]
fn decode_read_patterns() {
    use llm_engine::backend::cpu::{amx, has_avx512_bf16, read_probe};
    use read_patterns::*;
    if !has_avx512_bf16() {
        return println!("no AVX512_BF16 here");
    }
    let mats = streaming_weights();
    let x: Vec<u16> = (0..K).map(|i| 0x3c00 + (i % 13) as u16).collect();
    let mut patterns: Vec<(&str, Pattern)> = vec![
        ("plain read, 256-bit loads (the probe)", |_, w, rows| read_probe::sum_bytes(unsafe { std::slice::from_raw_parts(w as *const u8, rows * K * 2) }) as f32),
        ("plain read, 512-bit loads", |_, w, rows| unsafe { zmm_sum::<false>(w, rows) }),
        ("plain read, 512-bit loads + a 4-byte load of each line's second half", |_, w, rows| unsafe { zmm_sum::<true>(w, rows) }),
        ("vdpbf16ps, rows in turn, 8 accumulators", |x, w, rows| rows_dot(x, w, rows)),
    ];
    if amx::available() {
        patterns.push(("AMX tile loads only (16 rows x 64 B, 2 tiles a k step)", |_, w, rows| unsafe { tile_loads(w, rows) }));
    }
    for round in 0..3 {
        for (name, f) in &patterns {
            let mut best = 0f64;
            for _ in 0..3 {
                let t = Instant::now();
                std::thread::scope(|s| {
                    for half in 0..2 {
                        let (mats, x, f) = (&mats, &x, *f);
                        s.spawn(move || {
                            for m in mats {
                                let w = unsafe { m.as_u16().as_ptr().add(half * ROWS / 2 * K) };
                                std::hint::black_box(f(x.as_ptr(), w, ROWS / 2));
                            }
                        });
                    }
                });
                best = best.max((COUNT * ROWS * K * 2) as f64 / t.elapsed().as_secs_f64() / 1e9);
            }
            println!("round {round}: {name}: {best:.1} GB/s");
        }
    }
}

mod read_patterns {
    use std::arch::x86_64::*;
    pub const ROWS: usize = 8192;
    pub const K: usize = 2048;
    pub const COUNT: usize = 32;
    /// (activations, weight rows, row count) -> a value that depends on every byte read.
    pub type Pattern = fn(*const u16, *const u16, usize) -> f32;

    /// Sums `rows` rows of K with 512-bit loads. With `TOUCH`, also one scalar load 32 bytes into
    /// every line: a line read by a single 64-byte load streams ~12% slower than one read by two
    /// 32-byte loads (`sum_bytes`), and this extra load alone closes the gap, consistent with the L1
    /// streaming prefetcher triggering only on a second access to a line.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn zmm_sum<const TOUCH: bool>(w: *const u16, rows: usize) -> f32 {
        let mut acc = [_mm512_setzero_si512(); 8];
        let mut touched = 0u32;
        let mut i = 0;
        while i < rows * K {
            for (a, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_add_epi64(*acc, _mm512_loadu_si512(w.add(i + 32 * a) as *const __m512i));
                if TOUCH {
                    touched = touched.wrapping_add(std::ptr::read_volatile(w.add(i + 32 * a + 16) as *const u32));
                }
            }
            i += 256;
        }
        acc.iter().map(|&v| _mm512_reduce_add_epi64(v)).sum::<i64>() as f32 + touched as f32
    }

    /// One output per row, as a batch-1 matmul writes them (layout matters: adding the rows into
    /// one running total instead read ~15% slower in one build).
    pub fn rows_dot(x: *const u16, w: *const u16, rows: usize) -> f32 {
        let mut out = vec![0f32; rows];
        // Safety: the caller checked AVX512_BF16; w holds `rows` rows of K, x holds K.
        unsafe { rows_dot_into(x, w, rows, out.as_mut_ptr()) };
        out.iter().sum()
    }

    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn rows_dot_into(x: *const u16, w: *const u16, rows: usize, out: *mut f32) {
        let k = std::hint::black_box(K);
        for r in 0..rows {
            let wr = w.add(r * k);
            let mut acc = [_mm512_setzero_ps(); 8];
            let mut i = 0;
            while i < k {
                for (a, acc) in acc.iter_mut().enumerate() {
                    let wv = _mm512_loadu_si512(wr.add(i + 32 * a) as *const __m512i);
                    let xv = _mm512_loadu_si512(x.add(i + 32 * a) as *const __m512i);
                    *acc = _mm512_dpbf16_ps(*acc, std::mem::transmute::<__m512i, __m512bh>(wv), std::mem::transmute::<__m512i, __m512bh>(xv));
                }
                i += 256;
            }
            let sum = acc[1..].iter().fold(acc[0], |s, &v| _mm512_add_ps(s, v));
            *out.add(r) = _mm512_reduce_add_ps(sum);
        }
    }

    /// Safety: `amx::available()`; w holds `rows` (a multiple of 32) rows of K bf16.
    pub unsafe fn tile_loads(w: *const u16, rows: usize) -> f32 {
        use llm_engine::backend::cpu::amx::{release, TileConfig};
        TileConfig::new([16; 8], [64; 8]).load();
        let lda = K * 2;
        for r in (0..rows).step_by(32) {
            for ks in (0..K).step_by(32) {
                let a = w.add(r * K + ks);
                std::arch::asm!("tileloadd tmm4, [{a} + {lda} * 1]", "tileloadd tmm5, [{b} + {lda} * 1]",
                    a = in(reg) a, b = in(reg) a.add(16 * K), lda = in(reg) lda, options(nostack, readonly));
            }
        }
        let mut last = [0f32; 256];
        std::arch::asm!("tilestored [{p} + {s} * 1], tmm4", p = in(reg) last.as_mut_ptr(), s = in(reg) 64usize, options(nostack));
        release();
        last[0]
    }
}
