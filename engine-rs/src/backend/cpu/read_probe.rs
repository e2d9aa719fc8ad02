//! Memory read probe: the time for `threads` threads to read a set of memory regions once, as fast
//! as plain loads allow. A batch-1 decode step reads every weight once, so reading the weights
//! themselves this way is the step's bandwidth floor; `membw` and `bench_one_batch` also read fresh
//! buffers with it. On the VMs we run on a fresh buffer's rate varies from one process to the next
//! (33 vs 39 GB/s in alternating runs of one loop, cause not pinned down), so the ceiling of record
//! is the read of the very pages the decode step reads, in the same process and minute.

use std::time::Instant;

/// Eight independent accumulators keep the loop load-bound rather than add-bound; wrapping
/// because the sum only has to defeat dead-code elimination.
#[inline(always)]
fn sum_words_portable(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = words.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..8 {
            acc[lane] = acc[lane].wrapping_add(chunk[lane]);
        }
    }
    acc.iter().chain(tail).fold(0u64, |a, &b| a.wrapping_add(b))
}

/// The baseline x86-64 build only has SSE2, whose adds can fall behind memory on a fast core; the
/// same loop compiled for AVX2 stays memory-bound.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_words_avx2(words: &[u64]) -> u64 {
    sum_words_portable(words)
}

/// Wrapping sum of `bytes` read as little-endian u64 words (a trailing partial word byte by byte).
pub fn sum_bytes(bytes: &[u8]) -> u64 {
    // Safety: u64 has no invalid bit patterns; align_to hands back the unaligned head and tail.
    let (head, words, tail) = unsafe { bytes.align_to::<u64>() };
    #[cfg(target_arch = "x86_64")]
    let body = if std::is_x86_feature_detected!("avx2") {
        // Safety: the CPU supports AVX2, checked just above.
        unsafe { sum_words_avx2(words) }
    } else {
        sum_words_portable(words)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let body = sum_words_portable(words);
    head.iter().chain(tail).fold(body, |a, &b| a.wrapping_add(b as u64))
}

/// The byte ranges of `regions` (taken as one concatenation) that part `part` of `parts` reads:
/// equal contiguous shares cut at multiples of 64 bytes, so each thread streams one run as long as
/// possible and no cache line is read by two threads.
fn share<'a>(regions: &[&'a [u8]], part: usize, parts: usize) -> Vec<&'a [u8]> {
    let total: usize = regions.iter().map(|r| r.len()).sum();
    let cut = |p: usize| if p == parts { total } else { total * p / parts / 64 * 64 };
    let (start, end) = (cut(part), cut(part + 1));
    let mut out = Vec::new();
    let mut offset = 0;
    for region in regions {
        let (lo, hi) = (start.max(offset), end.min(offset + region.len()));
        if lo < hi {
            out.push(&region[lo - offset..hi - offset]);
        }
        offset += region.len();
    }
    out
}

/// The wrapping sum of the words of every piece (one thread's share).
fn sum_all(pieces: &[&[u8]]) -> u64 {
    pieces.iter().fold(0u64, |a, p| a.wrapping_add(sum_bytes(p)))
}

/// One read of every byte of `regions` by `threads` threads, each streaming its equal contiguous
/// share. Returns the seconds it took and the wrapping sum of the words read.
pub fn read_once(regions: &[&[u8]], threads: usize) -> (f64, u64) {
    let threads = threads.max(1);
    let shares: Vec<Vec<&[u8]>> = (0..threads).map(|t| share(regions, t, threads)).collect();
    let start = Instant::now();
    let sum = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .iter()
            .map(|parts| s.spawn(move || sum_all(parts)))
            .collect();
        handles.into_iter().fold(0u64, |a, h| a.wrapping_add(h.join().expect("read probe thread")))
    });
    (start.elapsed().as_secs_f64(), sum)
}

/// The wrapping sum of one read of `regions` by the current rayon pool, `parts` equal contiguous
/// shares as in `read_once`, without spawning threads (a read of a few MiB is over in ~0.1 ms, the
/// time two thread spawns take): for benchmarks that set a kernel on the pool against a plain read.
pub fn read_on_pool(regions: &[&[u8]], parts: usize) -> u64 {
    use rayon::prelude::*;
    let parts = parts.max(1);
    (0..parts)
        .into_par_iter()
        .map(|p| sum_all(&share(regions, p, parts)))
        .reduce(|| 0, u64::wrapping_add)
}

/// Best read rate (GB/s) of `passes` reads of `regions` by `threads` threads: what the memory gives
/// at its best moment (see `read_rates_gbs` for why that is not always its usual rate).
pub fn best_read_gbs(regions: &[&[u8]], threads: usize, passes: usize) -> f64 {
    read_rates_gbs(regions, threads, passes, 0.0).into_iter().fold(0f64, f64::max)
}

/// The rate (GB/s) of every pass of reading `regions` by `threads` threads, passes repeated until
/// at least `passes` are done and `seconds` have gone by. On the 2-core VM this project was measured
/// on (2026-12-04) the memory reads either ~35 GB/s or ~55-65 GB/s, switching every few seconds:
/// the best pass of a short probe says whether it hit a fast spell, the median of a probe of some
/// seconds which speed dominated them.
pub fn read_rates_gbs(regions: &[&[u8]], threads: usize, passes: usize, seconds: f64) -> Vec<f64> {
    let bytes: usize = regions.iter().map(|r| r.len()).sum();
    let start = Instant::now();
    let mut rates = Vec::new();
    while rates.len() < passes.max(1) || start.elapsed().as_secs_f64() < seconds {
        let (pass_seconds, sum) = read_once(regions, threads);
        std::hint::black_box(sum);
        rates.push(bytes as f64 / pass_seconds / 1e9);
    }
    rates
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte views of u64 buffers (8-aligned), so word sums do not depend on where a share starts.
    fn words_as_bytes(w: &[u64]) -> &[u8] {
        unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, w.len() * 8) }
    }

    #[test]
    fn shares_cover_every_byte_once_in_order() {
        let a: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let b: Vec<u8> = (0..333u32).map(|i| (i * 13 + 1) as u8).collect();
        let regions = [&a[..], &b[3..], &a[5..6]];
        let whole: Vec<u8> = regions.concat();
        for threads in 1..6 {
            let pieces: Vec<u8> = (0..threads).flat_map(|t| share(&regions, t, threads)).flat_map(|p| p.iter().copied()).collect();
            assert_eq!(pieces, whole, "{threads} threads");
        }
    }

    #[test]
    fn reads_sum_every_word() {
        let a: Vec<u64> = (0..4096u64).map(|i| i * 0x9E37_79B9).collect();
        let b: Vec<u64> = (0..1000u64).map(|i| i ^ 0xABCD).collect();
        let regions = [words_as_bytes(&a), words_as_bytes(&b[8..])];
        let expected = a.iter().chain(&b[8..]).fold(0u64, |s, &w| s.wrapping_add(w));
        for threads in 1..6 {
            assert_eq!(read_once(&regions, threads).1, expected, "{threads} threads");
            assert_eq!(read_on_pool(&regions, threads), expected, "{threads} parts on the pool");
        }
    }

    #[test]
    fn rates_cover_the_passes_and_the_time_asked_for() {
        let a = vec![7u64; 1 << 16];
        let regions = [words_as_bytes(&a)];
        assert_eq!(read_rates_gbs(&regions, 2, 5, 0.0).len(), 5);
        let start = Instant::now();
        let rates = read_rates_gbs(&regions, 2, 1, 0.05);
        assert!(start.elapsed().as_secs_f64() >= 0.05 && rates.len() > 1, "{} passes", rates.len());
        assert!(rates.iter().all(|r| r.is_finite() && *r > 0.0));
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn sum_bytes_reads_unaligned_heads_and_tails() {
        let v: Vec<u8> = (0..77u8).collect();
        for start in 0..9 {
            let s = &v[start..];
            // The sum of words depends on alignment, so compare against the same split done by hand.
            let (head, words, tail) = unsafe { s.align_to::<u64>() };
            let manual = words.iter().fold(0u64, |a, &w| a.wrapping_add(w));
            let manual = head.iter().chain(tail).fold(manual, |a, &b| a.wrapping_add(b as u64));
            assert_eq!(sum_bytes(s), manual);
        }
    }
}
