//! Test helpers: a tiny deterministic fake model and a driver that runs requests to completion.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use llm_engine::config::ModelConfig;
use llm_engine::engine::{Engine, EngineOptions, WaitResult};
use llm_engine::kv::cache::KvCache;
use llm_engine::model::{ForwardSeq, Model};
use serde_json::Value;

pub const VOCAB: usize = 64;
pub const EOS: u32 = 1;

/// Logits depend on the token, its position and a hash of every KV row the sequence reads, so
/// any wrong slot, position or reused KV changes the output.
pub struct FakeModel {
    cfg: ModelConfig,
    /// Time each forward pass takes at least (0: as fast as it computes).
    step_delay: Duration,
}

impl FakeModel {
    pub fn new(context: usize) -> Self {
        FakeModel {
            cfg: ModelConfig {
                architecture: "FakeForCausalLM".into(),
                hidden_size: 8,
                intermediate_size: 16,
                num_hidden_layers: 1,
                num_attention_heads: 1,
                num_key_value_heads: 1,
                head_dim: 2,
                vocab_size: VOCAB,
                rms_norm_eps: 1e-5,
                rope_theta: 10000.0,
                max_position_embeddings: context,
                tie_word_embeddings: false,
                eos_token_ids: vec![EOS],
                bos_token_id: Some(0),
                rope_scaling: None,
                torch_dtype: "float32".into(),
            },
            step_delay: Duration::ZERO,
        }
    }

    /// Makes every forward pass take at least `delay`, so a test can act on a request mid-stream
    /// (abort it) before it finishes, however briefly the test thread is descheduled.
    pub fn with_step_delay(mut self, delay: Duration) -> Self {
        self.step_delay = delay;
        self
    }
}

fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Model for FakeModel {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn forward(&self, batch: &[ForwardSeq], kv: &mut KvCache) -> Vec<f32> {
        if !self.step_delay.is_zero() {
            std::thread::sleep(self.step_delay);
        }
        let mut logits = Vec::new();
        for seq in batch {
            assert_eq!(seq.slots.len(), seq.start_pos + seq.tokens.len(), "slots must cover every position");
            for (j, &tok) in seq.tokens.iter().enumerate() {
                let pos = seq.start_pos + j;
                let (k, _) = kv.layer(0);
                let mut h = mix(tok as u64, pos as u64 + 1);
                for &s in &seq.slots[..pos] {
                    let s = s as usize;
                    h = mix(h, k[2 * s] as u64 | (k[2 * s + 1] as u64) << 16);
                }
                let h32 = h as u32;
                let slot = seq.slots[pos] as usize;
                let (k, v) = kv.layer_mut(0);
                k[2 * slot] = (h32 & 0xffff) as f32;
                k[2 * slot + 1] = (h32 >> 16) as f32;
                v[2 * slot] = 1.0;
                if seq.all_logits || j + 1 == seq.tokens.len() {
                    for t in 0..VOCAB as u64 {
                        let r = (mix(h, t + 7) >> 40) as f32 / (1u64 << 24) as f32;
                        logits.push(r * 8.0 - 4.0);
                    }
                }
            }
        }
        logits
    }

    fn weight_bytes(&self) -> usize {
        0
    }
}

pub fn options(f: impl FnOnce(&mut EngineOptions)) -> EngineOptions {
    let mut o = EngineOptions {
        max_total_tokens: Some(20_000),
        random_seed: Some(42),
        log_level: std::env::var("LLM_TEST_LOG_LEVEL").unwrap_or_else(|_| "warning".into()),
        ..Default::default()
    };
    f(&mut o);
    o
}

pub fn engine(opts: EngineOptions) -> Engine {
    Engine::with_model(Box::new(FakeModel::new(4096)), opts).expect("engine starts")
}

/// Everything a request reported, records concatenated.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub tokens: Vec<u64>,
    pub logprobs: Vec<f64>,
    pub finish: Value,
    pub cached_tokens: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub records: usize,
    pub input_logprobs: Option<Value>,
}

/// Drains records until every id in `ids` has finished; panics on a record after a finish.
pub fn collect(engine: &Engine, ids: &[u64]) -> HashMap<u64, Outcome> {
    let mut out: HashMap<u64, Outcome> = HashMap::new();
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut buf = vec![0u8; 1 << 16];
    while done < ids.len() {
        assert!(Instant::now() < deadline, "requests did not finish in time");
        match engine.wait(200) {
            WaitResult::Pending(_) => {}
            WaitResult::Timeout => continue,
            WaitResult::Stopping => panic!("engine stopped"),
        }
        let n = engine.drain_into(&mut buf).expect("buffer large enough");
        let records: Vec<Value> = serde_json::from_slice(&buf[..n]).expect("drain writes a JSON array");
        for r in records {
            let id = r["id"].as_u64().unwrap();
            let o = out.entry(id).or_default();
            assert!(o.finish.is_null(), "record after finish for {id}");
            o.records += 1;
            o.tokens.extend(r["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()));
            if let Some(lp) = r.get("logprobs").and_then(|v| v.as_array()) {
                o.logprobs.extend(lp.iter().map(|x| x.as_f64().unwrap_or(f64::NEG_INFINITY)));
            }
            if let Some(ilp) = r.get("input_logprobs") {
                assert!(o.input_logprobs.is_none(), "input logprobs sent twice");
                o.input_logprobs = Some(ilp.clone());
            }
            o.cached_tokens = r["cached_tokens"].as_u64().unwrap();
            o.prompt_tokens = r["prompt_tokens"].as_u64().unwrap();
            o.completion_tokens = r["completion_tokens"].as_u64().unwrap();
            o.finish = r["finish"].clone();
            if !o.finish.is_null() && ids.contains(&id) {
                done += 1;
            }
        }
    }
    out
}

pub fn request(input_ids: &[u32], max_new: usize, extra: Value) -> Vec<u8> {
    let mut sampling = serde_json::json!({"temperature": 0.0, "max_new_tokens": max_new});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            sampling[k] = v;
        }
    }
    serde_json::to_vec(&serde_json::json!({"input_ids": input_ids, "sampling": sampling})).unwrap()
}

/// Runs requests alone, one engine each, for reference outputs.
pub fn run_alone(opts: &EngineOptions, req: &[u8]) -> Outcome {
    let e = engine(opts.clone());
    let id = e.submit(req).expect("submit");
    collect(&e, &[id]).remove(&id).unwrap()
}

/// Polls stats until the engine is idle.
pub fn wait_idle(engine: &Engine) -> llm_engine::engine::worker::Stats {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = engine.stats();
        if s.num_running_reqs == 0 && s.num_queue_reqs == 0 {
            return s;
        }
        assert!(Instant::now() < deadline, "engine did not go idle");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Deterministic pseudo-random token ids (never EOS so prompts are plain).
pub fn tokens(seed: u64, n: usize) -> Vec<u32> {
    (0..n as u64).map(|i| 2 + (mix(seed, i) % (VOCAB as u64 - 2)) as u32).collect()
}
