//! The engine handle behind the C ABI: validates submissions, talks to the scheduler thread
//! through a command channel, and serves events, stats and info.

pub mod device;
pub mod events;
pub mod options;
pub mod tensor_parallel;
pub mod watchdog;
pub mod worker;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::kv::cache::KvCache;
use crate::kv::pool::KvPool;
use crate::kv::radix::RadixCache;
use crate::model::Model;
use crate::runner::Runner;
use crate::sample::SamplingState;
use crate::sched::log::{Level, Logger};
use crate::sched::request::{Request, SubmitJson};
use crate::sched::scheduler::{Policy, Scheduler, SchedulerConfig};

pub use events::WaitResult;
pub use options::EngineOptions;
use watchdog::{StepClock, Watchdog};
use worker::{Command, Shared, Stats};

/// Status codes of engine.h.
pub mod status {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 1;
    pub const LOAD: i32 = 2;
    pub const NOT_FOUND: i32 = 3;
    pub const BUFFER_TOO_SMALL: i32 = 4;
    pub const BUSY: i32 = 5;
    pub const SHUTDOWN: i32 = 6;
    pub const PANIC: i32 = 7;
    pub const INTERNAL: i32 = 8;
    pub const CAPACITY: i32 = 9;
}

/// A failure with its engine.h status code.
#[derive(Debug, Clone)]
pub struct EngineError {
    pub code: i32,
    pub message: String,
}

impl EngineError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        EngineError { code, message: message.into() }
    }
}

struct Limits {
    context_len: usize,
    total_slots: usize,
    page_size: usize,
    vocab_size: usize,
    eos_token_ids: Vec<u32>,
    random_seed: u64,
}

pub struct Engine {
    shared: Arc<Shared>,
    tx: Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    info_json: String,
    limits: Limits,
    next_id: AtomicU64,
    _watchdog: Option<Watchdog>,
}

impl Engine {
    /// Parses the create JSON, loads the model and starts the scheduler thread.
    pub fn create(config_json: &[u8]) -> Result<Engine, EngineError> {
        let opts = EngineOptions::parse(config_json).map_err(|e| EngineError::new(status::INVALID_ARGUMENT, e))?;
        let req = crate::model::LoadOptions {
            model_path: opts.model_path.clone().into(),
            load_format: opts.load_format.clone(),
            dtype: opts.dtype.clone(),
            threads: opts.threads,
            seed: opts.random_seed.unwrap_or(0),
        };
        let log = Logger { level: Level::parse(&opts.log_level).map_err(|e| EngineError::new(status::INVALID_ARGUMENT, e))? };
        let placed = device::load(&opts, &req, log)?;
        Engine::start(placed.model, placed.opts, &placed.device, placed.device_kv)
    }

    /// Starts an engine over an already built model (tests use a fake one).
    pub fn with_model(model: Box<dyn Model>, opts: EngineOptions) -> Result<Engine, EngineError> {
        Engine::start(model, opts, "cpu", None)
    }

    /// `device_kv`: the model keeps K/V on its device; the slot allocator uses its size and the
    /// CPU `KvCache` gets no rows.
    fn start(model: Box<dyn Model>, opts: EngineOptions, device: &str, device_kv: Option<device::DeviceKv>) -> Result<Engine, EngineError> {
        let invalid = |e: String| EngineError::new(status::INVALID_ARGUMENT, e);
        opts.validate().map_err(invalid)?;
        let log = Logger { level: Level::parse(&opts.log_level).map_err(invalid)? };
        let policy = Policy::parse(&opts.schedule_policy).map_err(invalid)?;
        let cfg = model.config().clone();
        if cfg.vocab_size == 0 || cfg.num_hidden_layers == 0 {
            return Err(EngineError::new(status::LOAD, "model config has no vocabulary or no layers"));
        }
        let weight_bytes = model.weight_bytes();
        let context_len = opts.context_len(&cfg);
        let total_slots = device_kv.map_or_else(|| opts.pool_slots(&cfg, weight_bytes), |d| d.slots);
        if total_slots < opts.page_size.max(2) {
            return Err(EngineError::new(status::CAPACITY, format!("KV cache pool of {total_slots} tokens is too small")));
        }
        let max_running = opts.running_limit(total_slots);
        let chunk = opts.chunk_size();
        let cpu_slots = if device_kv.is_some() { 0 } else { total_slots };
        let kv = KvCache::new(cfg.num_hidden_layers, cpu_slots, cfg.kv_dim());
        let kv_bytes = device_kv.map_or_else(|| kv.total_bytes(), |d| d.bytes);
        if device_kv.is_none() {
            // The device model logs its own pool.
            log.info(&format!(
                "KV Cache is allocated. #tokens: {total_slots}, K size: {:.2} GB, V size: {:.2} GB, pool bytes: {kv_bytes}",
                kv_bytes as f64 / 2.0 / 1e9,
                kv_bytes as f64 / 2.0 / 1e9
            ));
        }
        log.info(&format!(
            "max_total_num_tokens={total_slots}, chunked_prefill_size={}, max_prefill_tokens={}, max_running_requests={max_running}, context_len={context_len}",
            opts.chunked_prefill_size, opts.max_prefill_tokens
        ));
        let threads = opts.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let info_json = serde_json::json!({
            "architecture": cfg.architecture,
            "vocab_size": cfg.vocab_size,
            "context_len": context_len,
            "max_total_num_tokens": total_slots,
            "max_running_requests": max_running,
            "max_prefill_tokens": opts.max_prefill_tokens,
            "chunked_prefill_size": chunk.map_or(-1, |c| c as i64),
            "page_size": opts.page_size,
            "eos_token_ids": cfg.eos_token_ids,
            "bos_token_id": cfg.bos_token_id,
            "dtype": opts.dtype,
            "weight_bytes": weight_bytes,
            "kv_bytes": kv_bytes,
            "threads": threads,
            "tp_size": opts.tp_size,
            "device": device,
        })
        .to_string();
        let sched_cfg = SchedulerConfig {
            max_running_requests: max_running,
            max_prefill_tokens: opts.max_prefill_tokens,
            chunked_prefill_size: chunk,
            policy,
            init_new_token_ratio: opts.init_new_token_ratio,
        };
        let sched = Scheduler::new(
            sched_cfg,
            KvPool::new(total_slots, opts.page_size),
            RadixCache::new(opts.page_size, !opts.disable_radix_cache),
            log,
        );
        let runner = Runner::new(model, kv, sched, log, opts.decode_log_interval);
        let stats = Stats { max_total_num_tokens: total_slots, free_slots: total_slots, integrity_ok: true, ..Default::default() };
        let shared = Arc::new(Shared {
            events: Default::default(),
            live: Mutex::new(HashSet::new()),
            stats: Mutex::new(stats),
            clock: Arc::new(StepClock::default()),
        });
        let watchdog = Watchdog::start(shared.clock.clone(), Duration::from_secs_f64(opts.watchdog_timeout))
            .map_err(|e| EngineError::new(status::INTERNAL, e))?;
        let (tx, rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("llm-scheduler".into())
            .spawn(move || worker::run(runner, rx, thread_shared))
            .map_err(|e| EngineError::new(status::INTERNAL, format!("cannot start scheduler thread: {e}")))?;
        let random_seed = opts.random_seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        Ok(Engine {
            shared,
            tx,
            thread: Mutex::new(Some(thread)),
            info_json,
            limits: Limits {
                context_len,
                total_slots,
                page_size: opts.page_size,
                vocab_size: cfg.vocab_size,
                eos_token_ids: cfg.eos_token_ids.clone(),
                random_seed,
            },
            next_id: AtomicU64::new(1),
            _watchdog: watchdog,
        })
    }

    pub fn info_json(&self) -> &str {
        &self.info_json
    }

    /// Validates and queues a request; returns its id.
    pub fn submit(&self, json: &[u8]) -> Result<u64, EngineError> {
        let invalid = |m: String| EngineError::new(status::INVALID_ARGUMENT, m);
        let submit: SubmitJson = serde_json::from_slice(json).map_err(|e| invalid(format!("invalid request: {e}")))?;
        let l = &self.limits;
        let prompt_len = submit.input_ids.len();
        if prompt_len == 0 {
            return Err(invalid("input_ids must not be empty".into()));
        }
        if let Some(&bad) = submit.input_ids.iter().find(|&&t| t as usize >= l.vocab_size) {
            return Err(invalid(format!("token id {bad} is outside the vocabulary ({})", l.vocab_size)));
        }
        if prompt_len >= l.context_len {
            return Err(EngineError::new(
                status::CAPACITY,
                format!(
                    "The input ({prompt_len} tokens) is longer than the model's context length ({} tokens).",
                    l.context_len
                ),
            ));
        }
        // One page of headroom: the pool must hold the prompt and the first decode position.
        if prompt_len + l.page_size > l.total_slots {
            return Err(EngineError::new(
                status::CAPACITY,
                format!("The input ({prompt_len} tokens) does not fit in the KV cache pool ({} tokens).", l.total_slots),
            ));
        }
        let bias = submit.sampling.validate(l.vocab_size).map_err(invalid)?;
        let p = &submit.sampling;
        if p.min_new_tokens > p.max_new_tokens {
            return Err(invalid("min_new_tokens must not exceed max_new_tokens".into()));
        }
        if submit.return_logprob && submit.top_logprobs_num > l.vocab_size {
            return Err(invalid("top_logprobs_num exceeds the vocabulary".into()));
        }
        // Generation stops at the context length or when the whole pool would be needed.
        let max_new = p.max_new_tokens.min(l.context_len - prompt_len).min(l.total_slots - prompt_len);
        let mut stop_ids = p.stop_token_ids.clone();
        if !p.ignore_eos {
            stop_ids.extend_from_slice(&l.eos_token_ids);
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let seed = p.seed.unwrap_or_else(|| l.random_seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let sampling = SamplingState::new(p.clone(), bias, seed, &submit.input_ids);
        let request = Request::new(id, submit, sampling, max_new, stop_ids);
        self.lock_live().insert(id);
        if self.tx.send(Command::Submit(Box::new(request))).is_err() {
            self.lock_live().remove(&id);
            return Err(EngineError::new(status::SHUTDOWN, "the engine is stopped"));
        }
        Ok(id)
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.shared.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn abort(&self, id: u64) -> Result<(), EngineError> {
        if !self.lock_live().contains(&id) {
            return Err(EngineError::new(status::NOT_FOUND, format!("no request with id {id} in flight")));
        }
        self.send(Command::Abort(id))
    }

    pub fn abort_all(&self) -> Result<(), EngineError> {
        self.send(Command::AbortAll)
    }

    fn send(&self, cmd: Command) -> Result<(), EngineError> {
        self.tx.send(cmd).map_err(|_| EngineError::new(status::SHUTDOWN, "the engine is stopped"))
    }

    pub fn wait(&self, timeout_ms: i32) -> WaitResult {
        self.shared.events.wait(Duration::from_millis(timeout_ms.max(0) as u64))
    }

    pub fn drain_into(&self, buf: &mut [u8]) -> Result<usize, usize> {
        self.shared.events.drain_into(buf)
    }

    /// Empties the radix cache; BUSY while any request is queued or running.
    pub fn flush_cache(&self) -> Result<(), EngineError> {
        if !self.lock_live().is_empty() {
            return Err(EngineError::new(status::BUSY, "Cache not flushed because there are pending requests."));
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        self.send(Command::Flush(reply_tx))?;
        match reply_rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(m)) => Err(EngineError::new(status::BUSY, m)),
            Err(_) => Err(EngineError::new(status::SHUTDOWN, "the engine is stopped")),
        }
    }

    pub fn stats(&self) -> Stats {
        let mut stats = self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        stats.watchdog_stalled = self.shared.clock.stalled();
        stats
    }

    pub fn stats_json(&self) -> String {
        let s = self.stats();
        serde_json::json!({
            "num_running_reqs": s.num_running_reqs,
            "num_queue_reqs": s.num_queue_reqs,
            "token_usage": s.token_usage,
            "used_slots": s.used_slots,
            "cached_slots": s.cached_slots,
            "held_slots": s.held_slots,
            "free_slots": s.free_slots,
            "max_total_num_tokens": s.max_total_num_tokens,
            "last_gen_throughput": s.last_gen_throughput,
            "cache_hit_rate": s.cache_hit_rate,
            "num_retractions": s.num_retractions,
            "prompt_tokens_total": s.prompt_tokens_total,
            "generation_tokens_total": s.generation_tokens_total,
            "integrity_ok": s.integrity_ok,
            "integrity_error": s.integrity_error,
            "watchdog_stalled": s.watchdog_stalled,
        })
        .to_string()
    }

    /// Stops the scheduler thread (aborting what is in flight) and waits for it.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Stop);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        self.shared.events.stop();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
