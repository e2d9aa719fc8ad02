//! Forward passes with the pool's other workers kept awake. Between two matmul dispatches of a step
//! the calling thread runs norms, RoPE and attention alone, and rayon's idle workers soon go to
//! sleep; waking one again cost 26-38 µs per dispatch on average on the VMs we measured (a halted
//! vCPU is woken by an interrupt), against 1-6 µs for a worker that kept looking for work. A batch-1
//! Llama-3.2-1B step makes 65 dispatches, and while the second worker wakes the first streams
//! weights alone: keeping the workers awake made that step 3% faster (83.7-84.2 -> 81.2-81.3 ms,
//! alternating runs of bench_one_batch), and a SmolLM2-135M Q4_1 step, ~120 dispatches of small
//! matrices, 25% faster (3.6 -> 2.7 ms). The kernels and their task split are untouched, so every
//! number is the same bit for bit.
//!
//! The price is a core kept busy for the length of each forward pass, so a model only does this when
//! its weights are large enough for its matmuls to run on the pool (`worth_keeping_warm`): on a tiny
//! model the passes run on the calling thread, and the spare core is better left to the HTTP side
//! (forced on for stories260K, 64 streaming requests served 10-15% fewer tokens a second).

use std::sync::atomic::{AtomicBool, Ordering};

/// Weights below this size: forward passes too short for the wake-ups to matter (stories260K,
/// tiny-random); at and above it the workers are kept awake.
pub const MIN_WEIGHT_BYTES: usize = 64 << 20;

/// Idle rounds between two `sched_yield`s of a waiting worker, so another runnable thread on its
/// core (the HTTP server's) still gets the core within a few microseconds.
const SPINS_PER_YIELD: u32 = 256;

/// Whether forward passes on `pool` over `weight_bytes` of weights should keep the workers awake.
/// `LLM_WARM_POOL=0` turns it off (for A/B runs), `LLM_WARM_POOL=1` forces it on.
pub fn worth_keeping_warm(pool: &rayon::ThreadPool, weight_bytes: usize) -> bool {
    match std::env::var("LLM_WARM_POOL").as_deref() {
        Ok("0") => false,
        Ok("1") => pool.current_num_threads() > 1,
        _ => pool.current_num_threads() > 1 && weight_bytes >= MIN_WEIGHT_BYTES,
    }
}

/// Sets the flag when dropped, so the waiting workers are released even if the pass panics.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `f` on `pool` while every other worker of the pool waits for work by looking for it (taking
/// any task the pass queues at once) instead of sleeping. Returns when `f` has returned and every
/// worker has stopped waiting; a panic in `f` is passed on after that.
pub fn install_warm<T: Send>(pool: &rayon::ThreadPool, f: impl FnOnce() -> T + Send) -> T {
    pool.install(|| {
        let done = AtomicBool::new(false);
        let caller = rayon::current_thread_index();
        let mut out = None;
        rayon::scope(|scope| {
            scope.spawn_broadcast(|_, ctx| {
                // The calling thread runs the pass itself; waiting on it would never end.
                if Some(ctx.index()) == caller {
                    return;
                }
                let mut idle = 0u32;
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        idle = 0;
                        continue;
                    }
                    idle += 1;
                    if idle % SPINS_PER_YIELD == 0 {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
            let _release = Release(&done);
            out = Some(f());
        });
        out.expect("the pass returned or its panic was passed on")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn returns_the_pass_result_and_its_tasks_reach_more_than_one_worker() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for _ in 0..20 {
            let sum: u64 = install_warm(&pool, || (0..100_000u64).into_par_iter().map(|i| i * 3).sum());
            assert_eq!(sum, 3 * (100_000 * 99_999 / 2));
        }
        // Work queued from inside the pass reaches the waiting workers, not only the caller.
        let seen: std::collections::HashSet<usize> = install_warm(&pool, || {
            (0..64)
                .into_par_iter()
                .map(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    rayon::current_thread_index().unwrap()
                })
                .collect()
        });
        assert!(seen.len() > 1, "only worker(s) {seen:?} ran tasks");
    }

    #[test]
    fn a_panicking_pass_releases_the_workers_and_panics() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| install_warm(&pool, || panic!("pass failed"))));
        assert!(caught.is_err());
        // The pool is usable afterwards (no worker left waiting forever).
        assert_eq!(install_warm(&pool, || 7), 7);
    }

    #[test]
    fn a_one_thread_pool_runs_the_pass() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(install_warm(&pool, || (1..=10).into_par_iter().sum::<i32>()), 55);
    }
}
