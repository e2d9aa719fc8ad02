//! The scheduler thread: takes commands, runs steps, publishes records and stats.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::events::EventQueue;
use crate::runner::Runner;
use crate::sched::request::Request;

pub enum Command {
    Submit(Box<Request>),
    Abort(u64),
    AbortAll,
    /// Reply: Ok, or Err(message) when requests are in flight.
    Flush(Sender<Result<(), String>>),
    Stop,
}

/// Live numbers for llm_engine_stats, refreshed after every step.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub num_running_reqs: usize,
    pub num_queue_reqs: usize,
    pub token_usage: f64,
    pub used_slots: usize,
    pub cached_slots: usize,
    /// Slots requests hold (their own pages and the cached prefixes they pin): used minus evictable.
    pub held_slots: usize,
    pub free_slots: usize,
    pub max_total_num_tokens: usize,
    pub last_gen_throughput: f64,
    pub cache_hit_rate: f64,
    pub num_retractions: u64,
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
    pub integrity_ok: bool,
    pub integrity_error: Option<String>,
    /// A step has run past --watchdog-timeout and not ended yet.
    pub watchdog_stalled: bool,
}

pub struct Shared {
    pub events: EventQueue,
    /// Ids submitted and not yet finished (abort answers NOT_FOUND for the rest).
    pub live: Mutex<HashSet<u64>>,
    pub stats: Mutex<Stats>,
    pub clock: Arc<super::watchdog::StepClock>,
}

const ABORT_MESSAGE: &str = "Aborted by request.";
const SHUTDOWN_MESSAGE: &str = "The engine is shutting down.";
/// Full integrity checks cost O(pool); run them when the engine goes idle and every so often.
const INTEGRITY_EVERY_STEPS: u64 = 1024;

pub fn run(mut runner: Runner, rx: Receiver<Command>, shared: Arc<Shared>) {
    let mut records = Vec::new();
    let mut finished = Vec::new();
    let mut steps: u64 = 0;
    let mut integrity: Result<(), String> = Ok(());
    loop {
        let mut stop = false;
        let first = if runner.sched.is_idle() {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Command::Stop),
            }
        } else {
            rx.try_recv().ok()
        };
        let touched = first.is_some();
        let mut next = first;
        while let Some(cmd) = next {
            match cmd {
                Command::Submit(r) => runner.sched.waiting.push_back(*r),
                Command::Abort(id) => {
                    runner.sched.abort(id, ABORT_MESSAGE);
                }
                Command::AbortAll => runner.sched.abort_all(ABORT_MESSAGE),
                Command::Flush(reply) => {
                    let res = if runner.sched.is_idle() {
                        let s = &mut runner.sched;
                        let res = s.tree.reset(&mut s.pool);
                        integrity = s.check_integrity();
                        // Stats first, so a caller sees the empty pool once flush returns.
                        update_stats(&shared, &runner, &integrity);
                        res
                    } else {
                        Err("Cache not flushed because there are pending requests.".to_string())
                    };
                    let _ = reply.send(res);
                }
                Command::Stop => stop = true,
            }
            next = rx.try_recv().ok();
        }
        if stop {
            runner.sched.abort_all(SHUTDOWN_MESSAGE);
            runner.sched.sweep(&mut records, |id| finished.push(id));
            publish(&shared, &mut records, &mut finished);
            break;
        }
        let was_busy = !runner.sched.is_idle();
        if was_busy {
            shared.clock.begin(|| describe_batch(&runner));
            runner.step(&mut records, &mut |id| finished.push(id));
            shared.clock.end();
            steps += 1;
        }
        let now_idle = runner.sched.is_idle();
        if was_busy && (now_idle || steps.is_multiple_of(INTEGRITY_EVERY_STEPS)) {
            integrity = runner.sched.check_integrity();
            if let Err(e) = &integrity {
                eprintln!("[{}] KV integrity check failed: {e}", crate::sched::log::timestamp());
            }
        }
        if was_busy || touched {
            update_stats(&shared, &runner, &integrity);
        }
        publish(&shared, &mut records, &mut finished);
    }
    shared.events.stop();
}

/// The watchdog's account of a step: enough to find the requests in the logs, bounded in size.
fn describe_batch(runner: &Runner) -> String {
    const SHOWN: usize = 16;
    let s = &runner.sched;
    let ids: Vec<String> = s.running.iter().take(SHOWN).map(|r| format!("{}({} tok)", r.id, r.tokens.len())).collect();
    let more = s.running.len().saturating_sub(SHOWN);
    format!(
        "#running-req: {}, #queue-req: {}, requests: [{}]{}",
        s.running.len(),
        s.waiting.len(),
        ids.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() }
    )
}

fn publish(shared: &Shared, records: &mut Vec<String>, finished: &mut Vec<u64>) {
    if !finished.is_empty() {
        let mut live = shared.live.lock().unwrap_or_else(|e| e.into_inner());
        for id in finished.drain(..) {
            live.remove(&id);
        }
    }
    shared.events.push_all(records);
}

pub fn update_stats(shared: &Shared, runner: &Runner, integrity: &Result<(), String>) {
    let s = &runner.sched;
    let stats = Stats {
        num_running_reqs: s.running.len(),
        num_queue_reqs: s.waiting.len(),
        token_usage: s.token_usage(),
        used_slots: s.pool.used_slots(),
        cached_slots: s.tree.cached_slots(),
        held_slots: s.held_slots(),
        free_slots: s.pool.free_slots(),
        max_total_num_tokens: s.pool.total_slots(),
        last_gen_throughput: runner.last_gen_throughput,
        cache_hit_rate: s.cache_hit_rate(),
        num_retractions: s.num_retractions,
        prompt_tokens_total: s.prompt_tokens_total,
        generation_tokens_total: s.generation_tokens_total,
        integrity_ok: integrity.is_ok(),
        integrity_error: integrity.as_ref().err().cloned(),
        watchdog_stalled: false,
    };
    *shared.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
}
