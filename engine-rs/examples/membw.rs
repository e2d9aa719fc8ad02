//! Memory read-bandwidth probe: the decode speed ceiling of a memory-bound engine is
//! bandwidth / bytes of weights read per step.
//!
//!   cargo run --release --example membw -- [--size-mib 1024] [--passes 7] [--seconds S] [--weight-bytes N] [--json]
//!
//! Every thread sums its own slice of one large buffer (larger than any cache), `--passes` times and
//! for at least `--seconds` on each kind of page. Two rates: the best pass (`read_gb_s`, what the
//! memory gives at its best moment) and the median pass (`median_gb_s`, with `--seconds` of ten or
//! more the speed that dominated them: the Zen 4 VM of 2026-12-04 reads ~35 GB/s or ~60, switching
//! every few seconds, which a best-of-7 probe of 0.2 s catches or not by chance). The buffer is read
//! twice, on 2 MiB pages (`MADV_HUGEPAGE`, as the engine holds its weights and KV cache) and on plain
//! 4 KiB pages; `read_gb_s`, the ceiling's bandwidth, is the better of the two. Until 2026-12-03 only
//! the plain pages were read: on this VM they read ~20% slower (29 vs 36 GB/s), a ceiling the
//! engine's decode then appeared to reach.

use rayon::prelude::*;
use llm_engine::backend::cpu::read_probe;

struct Options {
    size_mib: usize,
    passes: usize,
    seconds: f64,
    weight_bytes: Option<u64>,
    json: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options { size_mib: 1024, passes: 7, seconds: 0.0, weight_bytes: None, json: false };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--size-mib" => options.size_mib = value("--size-mib")?.parse().map_err(|e| format!("--size-mib: {e}"))?,
            "--passes" => options.passes = value("--passes")?.parse().map_err(|e| format!("--passes: {e}"))?,
            "--seconds" => options.seconds = value("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--weight-bytes" => {
                options.weight_bytes =
                    Some(value("--weight-bytes")?.parse().map_err(|e| format!("--weight-bytes: {e}"))?)
            }
            "--json" => options.json = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.size_mib < 64 || options.passes == 0 || !(options.seconds >= 0.0) {
        return Err("--size-mib must be >= 64 (beyond the caches) and --passes >= 1, --seconds >= 0".into());
    }
    Ok(options)
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("membw: {message}");
            std::process::exit(2);
        }
    };
    let words = options.size_mib * 1024 * 1024 / 8;
    let threads = rayon::current_num_threads();
    let mut huge = llm_engine::backend::cpu::huge::HugeBuffer::zeroed(words * 8).expect("probe buffer");
    let huge_rates = read_rates(huge.as_u64_mut(), &options, threads);
    drop(huge);
    let small_rates = read_rates(&mut vec![0u64; words], &options, threads);
    let best = |rates: &[f64]| rates.iter().copied().fold(0f64, f64::max);
    let (huge_gbs, small_gbs) = (best(&huge_rates), best(&small_rates));
    let best_gbs = huge_gbs.max(small_gbs);
    let median_gbs = read_probe::median(&huge_rates).max(read_probe::median(&small_rates));
    let passes = huge_rates.len() + small_rates.len();
    let ceiling = |gbs: f64| options.weight_bytes.map(|bytes| gbs * 1e9 / bytes as f64);
    if options.json {
        let field = |c: Option<f64>| c.map_or("null".to_string(), |c| format!("{c:.3}"));
        println!(
            "{{\"read_gb_s\": {best_gbs:.3}, \"median_gb_s\": {median_gbs:.3}, \"huge_pages_gb_s\": {huge_gbs:.3}, \"small_pages_gb_s\": {small_gbs:.3}, \"threads\": {threads}, \"buffer_mib\": {}, \"passes\": {passes}, \"decode_ceiling_tok_s\": {}, \"median_ceiling_tok_s\": {}}}",
            options.size_mib,
            field(ceiling(best_gbs)),
            field(ceiling(median_gbs))
        );
    } else {
        println!(
            "read bandwidth: {best_gbs:.2} GB/s best pass, {median_gbs:.2} GB/s median pass ({threads} threads, {} MiB, {passes} passes; best on 2 MiB pages {huge_gbs:.2}, on 4 KiB pages {small_gbs:.2})",
            options.size_mib
        );
        if let (Some(bytes), Some(c), Some(m)) = (options.weight_bytes, ceiling(best_gbs), ceiling(median_gbs)) {
            println!("decode ceiling for {:.3} GB of weights: {c:.2} tok/s per sequence step at the best pass, {m:.2} at the median", bytes as f64 / 1e9);
        }
    }
}

/// Every pass's read rate (GB/s) of `buffer` by `threads` threads, written first in parallel so
/// every page is faulted in (and placed) before timing, not on the first pass.
fn read_rates(buffer: &mut [u64], options: &Options, threads: usize) -> Vec<f64> {
    let per_thread = buffer.len().div_ceil(threads);
    buffer.par_chunks_mut(per_thread).enumerate().for_each(|(t, chunk)| {
        for (i, word) in chunk.iter_mut().enumerate() {
            *word = (t * per_thread + i) as u64;
        }
    });
    // Safety: u64 words viewed as their bytes.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.as_ptr() as *const u8, buffer.len() * 8) };
    read_probe::read_rates_gbs(&[bytes], threads, options.passes, options.seconds)
}
