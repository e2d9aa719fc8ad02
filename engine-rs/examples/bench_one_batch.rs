//! bench_one_batch (SGLang's tool name): the engine alone, no HTTP, no scheduler. Loads a model,
//! prefills one prompt of `--input-len` tokens, then for every `--batch-size` runs `--output-len`
//! decode steps over that many sequences (each with its own copy of the prompt's KV), and prints
//! prefill and decode latency and throughput next to the machine's memory-bandwidth ceiling.
//!
//! cargo run --release --example bench_one_batch -- --model-path DIR --load-format dummy \
//!     --dtype bfloat16 --input-len 512 --output-len 32 --batch-size 1 4 16 64 --threads 2

use llm_engine::backend::cpu::read_probe;
use llm_engine::kv::cache::KvCache;
use llm_engine::loader::{load_model, LoadOptions};
use llm_engine::model::ForwardSeq;
use std::time::Instant;

struct Args {
    model_path: String,
    load_format: String,
    dtype: String,
    input_len: usize,
    output_len: usize,
    batch_sizes: Vec<usize>,
    threads: Option<usize>,
    seed: u64,
    /// Print a last line of JSON with the batch-1 step and the weights read (for scripts).
    json: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench_one_batch --model-path DIR [--load-format auto|dummy] [--dtype auto|float32|bfloat16] \
         [--input-len N] [--output-len N] [--batch-size N...] [--threads N] [--seed N] [--json]"
    );
    std::process::exit(2)
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        model_path: String::new(),
        load_format: "auto".into(),
        dtype: "auto".into(),
        input_len: 512,
        output_len: 32,
        batch_sizes: vec![1],
        threads: None,
        seed: 0,
        json: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let num = |s: Option<&String>, flag: &str| -> Result<usize, String> {
        s.and_then(|v| v.parse().ok()).ok_or(format!("{flag} needs a non-negative integer"))
    };
    while i < argv.len() {
        let flag = argv[i].replace('_', "-");
        let next = argv.get(i + 1);
        match flag.as_str() {
            "--model-path" | "--model" => a.model_path = next.ok_or("--model-path needs a value")?.clone(),
            "--load-format" => a.load_format = next.ok_or("--load-format needs a value")?.clone(),
            "--dtype" => a.dtype = next.ok_or("--dtype needs a value")?.clone(),
            "--input-len" => a.input_len = num(next, "--input-len")?,
            "--output-len" => a.output_len = num(next, "--output-len")?,
            "--threads" => a.threads = Some(num(next, "--threads")?),
            "--seed" => a.seed = num(next, "--seed")? as u64,
            "--batch-size" => {
                a.batch_sizes.clear();
                while let Some(v) = argv.get(i + 1).and_then(|v| v.parse::<usize>().ok()) {
                    a.batch_sizes.push(v);
                    i += 1;
                }
                if a.batch_sizes.is_empty() || a.batch_sizes.contains(&0) {
                    return Err("--batch-size needs positive integers".into());
                }
                i += 1;
                continue;
            }
            "--json" => {
                a.json = true;
                i += 1;
                continue;
            }
            "-h" | "--help" => usage(),
            other => return Err(format!("unknown argument {other}")),
        }
        i += 2;
    }
    if a.model_path.is_empty() {
        return Err("--model-path is required".into());
    }
    if a.input_len == 0 || a.output_len == 0 {
        return Err("--input-len and --output-len must be at least 1".into());
    }
    Ok(a)
}

/// Best-of-3 read bandwidth over a fresh 1 GiB huge-page buffer (far beyond the caches), split
/// across `threads` threads.
fn read_bandwidth_gbs(threads: usize) -> f64 {
    let mut buf = llm_engine::backend::cpu::huge::HugeBuffer::zeroed(1 << 30).expect("probe buffer");
    buf.bytes_mut().iter_mut().step_by(4096).for_each(|b| *b = 1);
    read_probe::best_read_gbs(&[buf.bytes()], threads, 3)
}

fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("bench_one_batch: {e}");
        usage()
    });
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let bw1 = read_bandwidth_gbs(1);
    // The ceiling takes the better probe: on a shared machine two threads can read slower than one.
    let bw = read_bandwidth_gbs(threads).max(bw1);

    let mut opts = LoadOptions::new(&args.model_path);
    opts.load_format = args.load_format.clone();
    opts.dtype = args.dtype.clone();
    opts.threads = Some(threads);
    opts.seed = args.seed;
    let t = Instant::now();
    let model = load_model(&opts).unwrap_or_else(|e| {
        eprintln!("bench_one_batch: {e}");
        std::process::exit(1)
    });
    let c = model.config().clone();
    let gb = model.weight_bytes() as f64 / 1e9;
    println!(
        "model {} ({} {}, {:.2} GB of weights, kernels {}, {threads} threads) loaded in {:.1}s",
        args.model_path,
        args.load_format,
        model.weight_dtype(),
        gb,
        model.kernel_isa(),
        t.elapsed().as_secs_f64()
    );
    println!(
        "memory read bandwidth: {bw1:.1} GB/s (1 thread), {bw:.1} GB/s (best with {threads} threads) -> decode ceiling {:.2} tok/s at batch 1",
        bw / gb
    );

    let max_batch = *args.batch_sizes.iter().max().unwrap();
    let per_seq = args.input_len + args.output_len;
    let mut kv = KvCache::new(c.num_hidden_layers, max_batch * per_seq, c.kv_dim());
    let prompt: Vec<u32> = (0..args.input_len).map(|i| ((i * 7919 + 13) % c.vocab_size) as u32).collect();
    let seq_slots = |s: usize| -> Vec<u32> { (s * per_seq..(s + 1) * per_seq).map(|x| x as u32).collect() };
    let slots0 = seq_slots(0);

    // Prefill: one warm-up, then the median of a few runs (each rewrites the same slots).
    let prefill_once = |kv: &mut KvCache| -> (f64, u32) {
        let t = Instant::now();
        let logits = model
            .try_forward(
                &[ForwardSeq { tokens: &prompt, start_pos: 0, slots: &slots0[..args.input_len], all_logits: false }],
                kv,
            )
            .unwrap_or_else(|e| panic!("prefill: {e}"));
        (t.elapsed().as_secs_f64(), argmax(&logits))
    };
    let (_, first) = prefill_once(&mut kv);
    let prefill_runs = if args.input_len >= 256 { 2 } else { 3 };
    let prefill_secs = read_probe::median(&(0..prefill_runs).map(|_| prefill_once(&mut kv).0).collect::<Vec<_>>());

    println!();
    println!("| batch | prefill latency (s) | prefill tok/s | decode median latency (ms) | decode tok/s | vs ceiling | vs weights read |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut first_row = true;
    // At batch 1 every step is followed by one plain read of the weights it read, so the two are
    // timed under the same conditions (same pages, same minute).
    let regions = model.decode_weight_regions();
    let region_bytes: usize = regions.iter().map(|r| r.len()).sum();
    let (mut batch1_step, mut weights_read): (Option<f64>, Option<f64>) = (None, None);
    for &b in &args.batch_sizes {
        // Every sequence gets its own copy of the prompt's KV, so attention reads what it would
        // for b distinct prompts.
        for s in 1..b {
            let dst = seq_slots(s)[0] as usize * c.kv_dim();
            for l in 0..c.num_hidden_layers {
                let (k, v) = kv.layer_mut(l);
                k.copy_within(0..args.input_len * c.kv_dim(), dst);
                v.copy_within(0..args.input_len * c.kv_dim(), dst);
            }
        }
        let slots: Vec<Vec<u32>> = (0..b).map(seq_slots).collect();
        let mut next: Vec<u32> = vec![first; b];
        let mut steps = Vec::with_capacity(args.output_len);
        let mut reads = Vec::with_capacity(args.output_len);
        for step in 0..args.output_len {
            let pos = args.input_len + step;
            let tokens: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
            let batch: Vec<ForwardSeq> = (0..b)
                .map(|s| ForwardSeq { tokens: &tokens[s], start_pos: pos, slots: &slots[s][..pos + 1], all_logits: false })
                .collect();
            let t = Instant::now();
            let logits = model.try_forward(&batch, &mut kv).unwrap_or_else(|e| panic!("decode: {e}"));
            steps.push(t.elapsed().as_secs_f64());
            if b == 1 && !regions.is_empty() {
                reads.push(read_probe::read_once(&regions, threads).0);
            }
            for (s, n) in next.iter_mut().enumerate() {
                *n = argmax(&logits[s * c.vocab_size..(s + 1) * c.vocab_size]);
            }
        }
        let per_step = read_probe::median(&steps);
        if b == 1 {
            batch1_step = Some(per_step);
        }
        if !reads.is_empty() {
            weights_read = Some(read_probe::median(&reads));
        }
        let tok_s = b as f64 / per_step;
        let (pl, pt) = if first_row {
            (format!("{prefill_secs:.3}"), format!("{:.1}", args.input_len as f64 / prefill_secs))
        } else {
            ("".into(), "".into())
        };
        first_row = false;
        let vs = if b == 1 { format!("{:.0}%", 100.0 * tok_s / (bw / gb)) } else { String::new() };
        let vs_read = match weights_read {
            Some(read) if b == 1 => format!("{:.0}%", 100.0 * read / per_step),
            _ => String::new(),
        };
        println!("| {b} | {pl} | {pt} | {:.1} | {tok_s:.2} | {vs} | {vs_read} |", per_step * 1e3);
    }
    println!();
    println!(
        "prefill: one sequence of {} tokens (median of {prefill_runs} after a warm-up); decode: {} steps from position {}, median step",
        args.input_len, args.output_len, args.input_len
    );
    println!("vs ceiling: decode tok/s over the fresh-buffer read bandwidth / weight bytes");
    let read_gbs = |read: f64| region_bytes as f64 / read / 1e9;
    if let (Some(read), Some(step)) = (weights_read, batch1_step) {
        let (ratio, gbs) = (read / step, read_gbs(read));
        println!(
            "vs weights read: median time to read the step's own weights once with {threads} threads ({:.1} ms, {gbs:.1} GB/s; \
             one read after each batch-1 step) over the median step ({:.0}%)",
            read * 1e3,
            100.0 * ratio
        );
    }
    if args.json {
        let field = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.4}"));
        println!(
            "{{\"batch1_step_ms\": {}, \"weights_read_ms\": {}, \"weights_read_gb_s\": {}, \"fresh_buffer_gb_s\": {bw:.3}, \"weight_gb\": {gb:.4}}}",
            field(batch1_step.map(|s| s * 1e3)),
            field(weights_read.map(|r| r * 1e3)),
            field(weights_read.map(read_gbs)),
        );
    }
}
