//! Injected faults over the fake model: a forward pass that panics for one sequence fails that
//! request alone (batch-mates finish exactly as they would alone) and the engine keeps serving;
//! a step that stalls past the watchdog timeout is reported until it ends.
mod common;

use std::time::{Duration, Instant};

use common::*;
use llm_engine::config::ModelConfig;
use llm_engine::engine::{Engine, EngineOptions};
use llm_engine::kv::cache::KvCache;
use llm_engine::model::{ForwardSeq, Model};
use serde_json::json;

/// A token that makes the fake model panic, and one that makes it sleep.
const POISON: u32 = 63;
const SLOW: u32 = 62;

struct FaultyModel {
    inner: FakeModel,
    slow_for: Duration,
}

impl Model for FaultyModel {
    fn config(&self) -> &ModelConfig {
        self.inner.config()
    }
    fn forward(&self, batch: &[ForwardSeq], kv: &mut KvCache) -> Vec<f32> {
        // Only prompt chunks (more than one token) trigger faults: the fake model may sample these ids too.
        let in_prompt = |t: u32| batch.iter().any(|s| s.tokens.len() > 1 && s.tokens.contains(&t));
        if in_prompt(POISON) {
            panic!("injected fault: poisoned token in the batch");
        }
        if in_prompt(SLOW) {
            std::thread::sleep(self.slow_for);
        }
        self.inner.forward(batch, kv)
    }
    fn weight_bytes(&self) -> usize {
        0
    }
}

fn faulty_engine(opts: EngineOptions, slow_for: Duration) -> Engine {
    Engine::with_model(Box::new(FaultyModel { inner: FakeModel::new(4096), slow_for }), opts).expect("engine starts")
}

/// Prompts without the fault tokens.
fn clean(seed: u64, n: usize) -> Vec<u32> {
    tokens(seed, n).into_iter().map(|t| if t >= SLOW { 2 + t % 50 } else { t }).collect()
}

#[test]
fn a_panicking_request_fails_alone_and_the_engine_keeps_serving() {
    let opts = options(|_| {});
    let e = faulty_engine(opts.clone(), Duration::ZERO);
    let normal: Vec<Vec<u8>> = (0..6).map(|i| request(&clean(i, 5 + i as usize * 3), 12, json!({"ignore_eos": true}))).collect();
    let mut poisoned = clean(99, 8);
    poisoned[4] = POISON;
    // Submitted together so the poisoned prompt shares a prefill batch with the others.
    let mut ids: Vec<u64> = normal[..3].iter().map(|r| e.submit(r).unwrap()).collect();
    let bad = e.submit(&request(&poisoned, 12, json!({}))).unwrap();
    ids.extend(normal[3..].iter().map(|r| e.submit(r).unwrap()));
    let mut all = ids.clone();
    all.push(bad);
    let out = collect(&e, &all);
    assert_eq!(out[&bad].finish["type"], "abort");
    let msg = out[&bad].finish["message"].as_str().unwrap();
    assert!(msg.contains("injected fault"), "{msg}");
    for (i, id) in ids.iter().enumerate() {
        let alone = run_alone(&opts, &normal[i]);
        assert_eq!(out[id].tokens, alone.tokens, "request {i} hurt by its poisoned batch-mate");
        assert_eq!(out[id].finish["type"], "length");
    }
    // Still serving, the failed request's pages are back, and its garbage KV was never cached.
    let after = e.submit(&normal[0]).unwrap();
    assert_eq!(collect(&e, &[after])[&after].tokens, run_alone(&opts, &normal[0]).tokens);
    let s = wait_idle(&e);
    assert!(s.integrity_ok, "{:?}", s.integrity_error);
    assert_eq!(s.used_slots, s.cached_slots, "only the prefix cache holds slots");
    let again = e.submit(&request(&poisoned, 4, json!({}))).unwrap();
    assert_eq!(collect(&e, &[again])[&again].finish["type"], "abort", "a cached prefix must not hide the fault");
}

#[test]
fn a_stalled_step_is_reported_by_the_watchdog_until_it_ends() {
    let opts = options(|o| o.watchdog_timeout = 0.2);
    let e = faulty_engine(opts, Duration::from_millis(1500));
    let mut prompt = clean(5, 6);
    prompt[2] = SLOW;
    assert!(!e.stats().watchdog_stalled);
    let id = e.submit(&request(&prompt, 2, json!({"ignore_eos": true}))).unwrap();
    let t0 = Instant::now();
    while !e.stats().watchdog_stalled {
        assert!(t0.elapsed() < Duration::from_millis(1400), "stall not reported in time");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(t0.elapsed() >= Duration::from_millis(190), "reported before the timeout");
    let out = collect(&e, &[id]);
    assert_eq!(out[&id].finish["type"], "length", "a slow step still finishes its request");
    let s = wait_idle(&e);
    assert!(!s.watchdog_stalled, "cleared once the step ended");
}

#[test]
fn watchdog_timeout_must_be_a_sane_number() {
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let opts = options(|o| o.watchdog_timeout = bad);
        assert!(Engine::with_model(Box::new(FakeModel::new(64)), opts).is_err(), "{bad}");
    }
}
