//! bf16 GEMM kernels head to head on the Llama-3.2-1B projection shapes: for each n (tokens) and
//! shape, the bf16-activation paths this CPU has (AMX tiles, vdpbf16ps) run in turn, several
//! rounds, and the median time per matmul is printed with weight GB/s and GMAC/s, next to a plain read
//! of the same matrices by as many threads in the same rounds (the memory's rate of that minute).
//!
//! With `--cpu-time` (one thread) the time is the thread's CPU time, not wall time: on a machine
//! shared with other jobs that removes the time the scheduler gave to them.
//!
//! cargo run --release --example bench_gemm -- [--threads N] [--rounds R] [--n 1,16,64] [--hot] [--cpu-time]
//!     [--shape M,K] [--copies C]
use llm_engine::backend::cpu::matrix::DType;
use llm_engine::backend::cpu::{panels, read_probe, Kernels};
use llm_engine::loader::dummy::DummyWeights;
use std::time::Instant;

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // Safety: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)).cloned();
    let threads: usize = arg("--threads").map_or(2, |v| v.parse().expect("--threads N"));
    let rounds: usize = arg("--rounds").map_or(5, |v| v.parse().expect("--rounds R"));
    let cpu_time = argv.iter().any(|a| a == "--cpu-time");
    assert!(!cpu_time || threads == 1, "--cpu-time needs --threads 1");
    let epoch = Instant::now();
    let clock = move || if cpu_time { thread_cpu_seconds() } else { epoch.elapsed().as_secs_f64() };
    let ns: Vec<usize> = arg("--n").map_or(vec![1, 16, 64], |v| v.split(',').map(|x| x.parse().expect("--n list")).collect());
    let mut shapes = vec![("gate/up 8192x2048", 8192, 2048), ("down 2048x8192", 2048, 8192), ("q/o 2048x2048", 2048, 2048), ("k/v 512x2048", 512, 2048)];
    if argv.iter().any(|a| a == "--hot") {
        // Weights that stay in L2: the kernels' compute rate without the memory stream.
        shapes = vec![("hot 64x1024 (L2)", 64, 1024)];
    }
    if let Some(v) = arg("--shape") {
        let d: Vec<usize> = v.split(',').map(|x| x.parse().expect("--shape M,K")).collect();
        assert_eq!(d.len(), 2, "--shape M,K");
        shapes = vec![("M x K", d[0], d[1])];
    }
    // Several copies of each matrix (default 8) so one matmul does not find the previous one's
    // weights in the L3; `--copies 1` with a matrix that fits the L3 measures the kernel without DRAM.
    let copies: u64 = arg("--copies").map_or(8, |v| v.parse().expect("--copies N"));
    let fast = Kernels::detect().with_bf16_activations();
    // (kernels, weights panelled): the vdpbf16ps kernels also on the panelled copies of matrices
    // wide enough to be panelled (`backend::cpu::panels`), in the same rounds.
    let mut paths = vec![(fast, false)];
    if fast.amx {
        paths.push((fast.without_amx(), false));
    }
    if fast.bf16_dot && shapes.iter().any(|&(_, _, k)| panels::wanted(DType::BF16, k)) {
        paths.push((fast.without_amx(), true));
    }
    let name = |&(p, panelled): &(Kernels, bool)| if panelled { format!("{} panelled", p.name()) } else { p.name().to_string() };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    println!("| shape | n | {} | plain read ms (GB/s) |", paths.iter().map(|p| format!("{} ms (GB/s, GMAC/s)", name(p))).collect::<Vec<_>>().join(" | "));
    println!("|---|---:|{}---:|", "---:|".repeat(paths.len()));
    for &(label, m, k) in &shapes {
        let ws: Vec<_> = (0..copies).map(|i| DummyWeights { seed: i, dtype: DType::BF16 }.matrix("w", m, k)).collect();
        // Narrow matrices are never panelled: that column repeats the row-major one.
        let panelled_ws: Vec<_> = if panels::wanted(DType::BF16, k) { ws.iter().map(|w| w.panelled()).collect() } else { Vec::new() };
        for &n in &ns {
            let x: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 700.0).collect();
            let mut out = vec![0.0f32; n * m];
            let reps = if m * k < 1 << 20 { 2000 / n.max(1) } else { (64 / n).clamp(4, 16) };
            // The last column: the same copies read with plain loads by as many threads, in the same
            // rounds, so a memory-bound matmul's rate can be put against the memory's rate of the minute.
            let mut times = vec![Vec::new(); paths.len() + 1];
            pool.install(|| {
                for round in 0..=rounds {
                    for (pi, &(p, panelled)) in paths.iter().enumerate() {
                        let matrices = if panelled && !panelled_ws.is_empty() { &panelled_ws } else { &ws };
                        let t = clock();
                        for i in 0..reps {
                            p.matmul(&x, n, &matrices[i % matrices.len()], &mut out);
                        }
                        if round > 0 {
                            times[pi].push((clock() - t) / reps as f64);
                        }
                    }
                    let t = clock();
                    for i in 0..reps {
                        std::hint::black_box(read_probe::read_on_pool(&[ws[i % ws.len()].bytes()], threads));
                    }
                    if round > 0 {
                        times[paths.len()].push((clock() - t) / reps as f64);
                    }
                }
            });
            let cells: Vec<String> = times
                .into_iter()
                .map(|mut v| {
                    v.sort_by(f64::total_cmp);
                    let s = v[v.len() / 2];
                    format!("{:.3} ({:.1}, {:.0})", s * 1e3, (m * k * 2) as f64 / s / 1e9, (m * k * n) as f64 / s / 1e9)
                })
                .collect();
            println!("| {label} | {n} | {} |", cells.join(" | "));
        }
    }
}
