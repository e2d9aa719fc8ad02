//! Memory read-bandwidth probe: the decode speed ceiling of a memory-bound engine is
//! bandwidth / bytes of weights read per step.
//!
//!   cargo run --release --example membw -- [--size-mib 1024] [--passes 7] [--weight-bytes N] [--json]
//!
//! Every thread sums its own slice of one large buffer (larger than any cache); the best pass is
//! reported because the slower ones measure interference, not the memory system. The buffer is read
//! twice, on 2 MiB pages (`MADV_HUGEPAGE`, as the engine holds its weights and KV cache) and on plain
//! 4 KiB pages; `read_gb_s`, the ceiling's bandwidth, is the better of the two. Until 2026-12-03 only
//! the plain pages were read: on this VM they read ~20% slower (29 vs 36 GB/s), a ceiling the
//! engine's decode then appeared to reach.

use rayon::prelude::*;
use llm_engine::backend::cpu::read_probe;

struct Options {
    size_mib: usize,
    passes: usize,
    weight_bytes: Option<u64>,
    json: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options { size_mib: 1024, passes: 7, weight_bytes: None, json: false };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--size-mib" => options.size_mib = value("--size-mib")?.parse().map_err(|e| format!("--size-mib: {e}"))?,
            "--passes" => options.passes = value("--passes")?.parse().map_err(|e| format!("--passes: {e}"))?,
            "--weight-bytes" => {
                options.weight_bytes =
                    Some(value("--weight-bytes")?.parse().map_err(|e| format!("--weight-bytes: {e}"))?)
            }
            "--json" => options.json = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.size_mib < 64 || options.passes == 0 {
        return Err("--size-mib must be >= 64 (beyond the caches) and --passes >= 1".into());
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
    let huge_gbs = best_read(huge.as_u64_mut(), options.passes, threads);
    drop(huge);
    let small_gbs = best_read(&mut vec![0u64; words], options.passes, threads);
    let best_gbs = huge_gbs.max(small_gbs);
    let ceiling = options.weight_bytes.map(|bytes| best_gbs * 1e9 / bytes as f64);
    if options.json {
        let ceiling_field = ceiling.map_or("null".to_string(), |c| format!("{c:.3}"));
        println!(
            "{{\"read_gb_s\": {best_gbs:.3}, \"huge_pages_gb_s\": {huge_gbs:.3}, \"small_pages_gb_s\": {small_gbs:.3}, \"threads\": {threads}, \"buffer_mib\": {}, \"passes\": {}, \"decode_ceiling_tok_s\": {ceiling_field}}}",
            options.size_mib, options.passes
        );
    } else {
        println!(
            "read bandwidth: {best_gbs:.2} GB/s ({threads} threads, {} MiB, best of {} passes; 2 MiB pages {huge_gbs:.2}, 4 KiB pages {small_gbs:.2})",
            options.size_mib, options.passes
        );
        if let (Some(bytes), Some(c)) = (options.weight_bytes, ceiling) {
            println!("decode ceiling for {:.3} GB of weights: {c:.2} tok/s per sequence step", bytes as f64 / 1e9);
        }
    }
}

/// Best read rate (GB/s) of `passes` reads of `buffer` by `threads` threads, written first in
/// parallel so every page is faulted in (and placed) before timing, not on the first pass.
fn best_read(buffer: &mut [u64], passes: usize, threads: usize) -> f64 {
    let per_thread = buffer.len().div_ceil(threads);
    buffer.par_chunks_mut(per_thread).enumerate().for_each(|(t, chunk)| {
        for (i, word) in chunk.iter_mut().enumerate() {
            *word = (t * per_thread + i) as u64;
        }
    });
    // Safety: u64 words viewed as their bytes.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.as_ptr() as *const u8, buffer.len() * 8) };
    read_probe::best_read_gbs(&[bytes], threads, passes)
}
