//! Engine options (the create JSON of engine.h, SGLang's defaults) and KV pool sizing.

use serde::Deserialize;

use crate::config::ModelConfig;
use crate::kv::cache::KvCache;

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct EngineOptions {
    pub model_path: String,
    pub load_format: String,
    pub dtype: String,
    pub context_length: Option<usize>,
    pub max_total_tokens: Option<usize>,
    pub mem_fraction_static: Option<f64>,
    pub page_size: usize,
    pub max_running_requests: Option<usize>,
    pub max_prefill_tokens: usize,
    /// -1 (or any value < 1) turns chunking off.
    pub chunked_prefill_size: i64,
    pub schedule_policy: String,
    pub disable_radix_cache: bool,
    pub random_seed: Option<u64>,
    pub threads: Option<usize>,
    pub decode_log_interval: usize,
    pub log_level: String,
    /// Not in the ABI's list (SGLang's internal default 0.7): fraction of max_new_tokens that
    /// admission reserves per request; tests lower it to force retractions.
    pub init_new_token_ratio: f32,
    /// "auto" | "cpu" | "cuda" (engine/device.rs).
    pub device: String,
    /// Largest decode batch replayed as a CUDA graph (SGLang's default for H100-class GPUs).
    pub cuda_graph_max_bs: usize,
    pub disable_cuda_graph: bool,
    /// Seconds one scheduler step may run before the watchdog reports the engine stalled; 0 turns it off.
    pub watchdog_timeout: f64,
    /// Tensor-parallel ranks (`--tp-size`); > 1 splits the model over that many ranks (parallel/).
    pub tp_size: usize,
    /// How tensor-parallel ranks exchange partial sums: "threads" (shared memory) or "nccl"
    /// (GPUs 0..tp_size through NCCL; `cuda` builds only).
    pub tp_comm: String,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            model_path: String::new(),
            load_format: "auto".into(),
            dtype: "auto".into(),
            context_length: None,
            max_total_tokens: None,
            mem_fraction_static: None,
            page_size: 1,
            max_running_requests: None,
            max_prefill_tokens: 16384,
            chunked_prefill_size: 8192,
            schedule_policy: "fcfs".into(),
            disable_radix_cache: false,
            random_seed: None,
            threads: None,
            decode_log_interval: 40,
            log_level: "info".into(),
            init_new_token_ratio: 0.7,
            device: "auto".into(),
            cuda_graph_max_bs: 160,
            disable_cuda_graph: false,
            watchdog_timeout: 300.0,
            tp_size: 1,
            tp_comm: "threads".into(),
        }
    }
}

/// SGLang's GPU default; on CPU it applies to the RAM left after the weights.
pub const DEFAULT_MEM_FRACTION_STATIC: f64 = 0.88;
/// Pool size bounds when max_total_tokens is not given: a CPU serves tens of streams, not
/// thousands, so the pool is kept to a few context lengths and at most this many tokens/bytes.
pub const MAX_AUTO_POOL_TOKENS: usize = 262_144;
pub const MIN_AUTO_POOL_TOKENS: usize = 16_384;
pub const MAX_AUTO_POOL_BYTES: usize = 8 << 30;
pub const MAX_AUTO_RUNNING_REQUESTS: usize = 1024;

impl EngineOptions {
    pub fn parse(json: &[u8]) -> Result<EngineOptions, String> {
        let o: EngineOptions = serde_json::from_slice(json).map_err(|e| format!("invalid engine config: {e}"))?;
        o.validate()?;
        Ok(o)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.page_size == 0 {
            return Err("page_size must be at least 1".into());
        }
        if self.max_prefill_tokens == 0 {
            return Err("max_prefill_tokens must be at least 1".into());
        }
        if self.max_running_requests == Some(0) {
            return Err("max_running_requests must be at least 1".into());
        }
        if let Some(f) = self.mem_fraction_static {
            if !(f > 0.0 && f <= 1.0) {
                return Err("mem_fraction_static must be in (0, 1]".into());
            }
        }
        if self.tp_size == 0 {
            return Err("tp_size must be at least 1".into());
        }
        if self.max_total_tokens == Some(0) {
            return Err("max_total_tokens must be at least 1".into());
        }
        if !(self.watchdog_timeout.is_finite() && self.watchdog_timeout >= 0.0) {
            return Err("watchdog_timeout must be a non-negative number of seconds".into());
        }
        if !(self.init_new_token_ratio >= 0.0 && self.init_new_token_ratio <= 1.0) {
            return Err("init_new_token_ratio must be in [0, 1]".into());
        }
        Ok(())
    }

    pub fn chunk_size(&self) -> Option<usize> {
        (self.chunked_prefill_size > 0).then_some(self.chunked_prefill_size as usize)
    }

    pub fn context_len(&self, cfg: &ModelConfig) -> usize {
        self.context_length.unwrap_or(cfg.max_position_embeddings).max(1)
    }

    /// KV slots: max_total_tokens when given; otherwise mem_fraction_static of the RAM left after
    /// the weights, bounded by [MIN, MAX]_AUTO_POOL_TOKENS, 4 × context_len and MAX_AUTO_POOL_BYTES.
    /// Rounded down to whole pages.
    pub fn pool_slots(&self, cfg: &ModelConfig, weight_bytes: usize) -> usize {
        self.pool_slots_of(cfg, weight_bytes, KvCache::bytes_per_slot(cfg.num_hidden_layers, cfg.kv_dim()))
    }

    /// `pool_slots` for a slot of `per_slot` bytes (tensor parallelism: the ranks' shares added up).
    pub fn pool_slots_of(&self, cfg: &ModelConfig, weight_bytes: usize, per_slot: usize) -> usize {
        let slots = match self.max_total_tokens {
            Some(n) => n,
            None => {
                let per_slot = per_slot.max(1);
                let avail = mem_available_bytes().unwrap_or(4 << 30).saturating_sub(weight_bytes);
                let fraction = self.mem_fraction_static.unwrap_or(DEFAULT_MEM_FRACTION_STATIC);
                let by_mem = ((avail as f64 * fraction) as usize).min(MAX_AUTO_POOL_BYTES) / per_slot;
                let by_context = (4 * self.context_len(cfg)).clamp(MIN_AUTO_POOL_TOKENS, MAX_AUTO_POOL_TOKENS);
                by_mem.min(by_context)
            }
        };
        slots / self.page_size * self.page_size
    }

    /// max_running_requests when given; otherwise pool/64 within [16, 1024] (and never more
    /// requests than pages).
    pub fn running_limit(&self, pool_slots: usize) -> usize {
        let pages = (pool_slots / self.page_size).max(1);
        self.max_running_requests.unwrap_or_else(|| (pool_slots / 64).clamp(16, MAX_AUTO_RUNNING_REQUESTS)).min(pages)
    }
}

pub(crate) fn mem_available_bytes() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
