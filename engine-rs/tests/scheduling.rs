//! Scheduler behaviour end to end over the fake model (cargo test --release).
mod common;

use common::*;
use serde_json::json;

#[test]
fn batch_of_32_matches_each_request_alone() {
    let batched_opts = options(|o| {
        o.chunked_prefill_size = 16;
        o.max_prefill_tokens = 48;
    });
    let alone_opts = options(|_| {});
    let reqs: Vec<Vec<u8>> = (0..32u64)
        .map(|i| {
            let prompt = tokens(i, 1 + (i as usize * 7) % 90);
            let extra = if i % 4 == 3 { json!({"temperature": 0.8, "top_p": 0.9, "seed": i}) } else { json!({}) };
            request(&prompt, 10 + (i as usize % 5) * 6, extra)
        })
        .collect();
    let e = engine(batched_opts);
    let ids: Vec<u64> = reqs.iter().map(|r| e.submit(r).unwrap()).collect();
    let batched = collect(&e, &ids);
    let mut eos_finishes = 0;
    for (i, id) in ids.iter().enumerate() {
        let alone = run_alone(&alone_opts, &reqs[i]);
        let got = &batched[id];
        assert_eq!(got.tokens, alone.tokens, "request {i} differs in a batch");
        assert_eq!(got.finish, alone.finish, "request {i} finish differs");
        assert_eq!(got.completion_tokens as usize, got.tokens.len());
        if got.finish["type"] == "stop" {
            assert_eq!(got.finish["matched"], EOS);
            eos_finishes += 1;
        } else {
            assert_eq!(got.finish["type"], "length");
        }
    }
    // The fake model emits EOS now and then: both finish kinds must have been exercised.
    assert!(eos_finishes > 0 && eos_finishes < 32, "eos finishes: {eos_finishes}");
    let s = wait_idle(&e);
    assert!(s.integrity_ok, "{:?}", s.integrity_error);
    assert_eq!(s.used_slots, s.cached_slots, "after finishing only the cache holds slots");
}

#[test]
fn shared_prefix_is_served_from_cache_with_identical_output() {
    for page_size in [1usize, 4] {
        let prefix = tokens(1000, 67);
        let mut a = prefix.clone();
        a.extend(tokens(1, 5));
        let mut b = prefix.clone();
        b.extend(tokens(2, 9));
        let e = engine(options(|o| o.page_size = page_size));
        let ida = e.submit(&request(&a, 12, json!({"ignore_eos": true}))).unwrap();
        let first = collect(&e, &[ida]).remove(&ida).unwrap();
        assert_eq!(first.cached_tokens, 0);
        let idb = e.submit(&request(&b, 12, json!({"ignore_eos": true}))).unwrap();
        let second = collect(&e, &[idb]).remove(&idb).unwrap();
        let expected_cached = prefix.len() / page_size * page_size;
        assert!(
            second.cached_tokens as usize >= expected_cached,
            "page {page_size}: cached {} < {expected_cached}",
            second.cached_tokens
        );
        let uncached = run_alone(&options(|o| o.disable_radix_cache = true), &request(&b, 12, json!({"ignore_eos": true})));
        assert_eq!(uncached.cached_tokens, 0);
        assert_eq!(second.tokens, uncached.tokens);
        let s = wait_idle(&e);
        assert!(s.integrity_ok, "{:?}", s.integrity_error);
        assert!(s.cache_hit_rate > 0.0);
    }
}

#[test]
fn small_pool_retracts_and_everything_completes() {
    let opts = options(|o| {
        o.max_total_tokens = Some(256);
        o.init_new_token_ratio = 0.0;
        o.page_size = 2;
    });
    let reqs: Vec<Vec<u8>> =
        (0..12u64).map(|i| request(&tokens(50 + i, 20 + i as usize), 60, json!({"ignore_eos": true}))).collect();
    let e = engine(opts.clone());
    let ids: Vec<u64> = reqs.iter().map(|r| e.submit(r).unwrap()).collect();
    let out = collect(&e, &ids);
    for (i, id) in ids.iter().enumerate() {
        let alone = run_alone(&options(|_| {}), &reqs[i]);
        assert_eq!(out[id].tokens, alone.tokens, "request {i}");
        assert_eq!(out[id].finish, json!({"type": "length", "length": 60}));
    }
    let s = wait_idle(&e);
    assert!(s.num_retractions > 0, "a pool of 256 slots cannot hold 12 x 80 tokens without retracting");
    assert!(s.integrity_ok, "{:?}", s.integrity_error);
    assert_eq!(s.used_slots, s.cached_slots);
}

#[test]
fn aborts_free_slots_and_flush_empties_the_pool() {
    let e = engine(options(|o| o.max_total_tokens = Some(4096)));
    let ids: Vec<u64> = (0..6u64)
        .map(|i| e.submit(&request(&tokens(i, 30), 3000, json!({"ignore_eos": true}))).unwrap())
        .collect();
    // Let them start decoding.
    let mut buf = vec![0u8; 1 << 16];
    let mut seen = 0;
    while seen < 6 * 3 {
        if let llm_engine::engine::WaitResult::Pending(_) = e.wait(1000) {
            let n = e.drain_into(&mut buf).unwrap();
            seen += serde_json::from_slice::<Vec<serde_json::Value>>(&buf[..n]).unwrap().len();
        }
    }
    assert_eq!(e.flush_cache().unwrap_err().code, llm_engine::engine::status::BUSY);
    for &id in &ids[..3] {
        e.abort(id).unwrap();
    }
    let out = collect(&e, &ids[..3]);
    for id in &ids[..3] {
        assert_eq!(out[id].finish["type"], "abort");
        assert!(out[id].completion_tokens < 3000);
    }
    let after = e.stats();
    assert_eq!(after.num_running_reqs + after.num_queue_reqs, 3, "aborted requests left within a step");
    e.abort_all().unwrap();
    let out = collect(&e, &ids[3..]);
    assert!(ids[3..].iter().all(|id| out[id].finish["type"] == "abort"));
    assert_eq!(e.abort(ids[0]).unwrap_err().code, llm_engine::engine::status::NOT_FOUND);
    let s = wait_idle(&e);
    assert!(s.integrity_ok, "{:?}", s.integrity_error);
    assert_eq!(s.used_slots, s.cached_slots, "only the cache holds slots once all requests are gone");
    assert!(s.cached_slots > 0);
    e.flush_cache().unwrap();
    let s = e.stats();
    assert_eq!((s.used_slots, s.cached_slots, s.free_slots), (0, 0, 4096));
}

#[test]
fn refuses_what_can_never_fit_and_nonsense() {
    let e = Engine::with_model(Box::new(FakeModel::new(128)), options(|o| o.max_total_tokens = Some(100))).unwrap();
    use llm_engine::engine::{status, Engine};
    let too_long = e.submit(&request(&tokens(1, 128), 4, json!({}))).unwrap_err();
    assert_eq!(too_long.code, status::CAPACITY);
    assert!(too_long.message.contains("longer than the model's context length (128 tokens)"), "{}", too_long.message);
    assert_eq!(e.submit(&request(&tokens(1, 100), 4, json!({}))).unwrap_err().code, status::CAPACITY);
    assert_eq!(e.submit(&request(&[], 4, json!({}))).unwrap_err().code, status::INVALID_ARGUMENT);
    assert_eq!(e.submit(&request(&[999], 4, json!({}))).unwrap_err().code, status::INVALID_ARGUMENT);
    assert_eq!(e.submit(b"{not json").unwrap_err().code, status::INVALID_ARGUMENT);
    assert_eq!(e.submit(&request(&[3], 4, json!({"top_p": 0.0}))).unwrap_err().code, status::INVALID_ARGUMENT);
    // Clipped so the pool can hold it: 90 + 50 > 100 stops at length 10.
    let id = e.submit(&request(&tokens(2, 90), 50, json!({"ignore_eos": true}))).unwrap();
    let out = collect(&e, &[id]);
    assert_eq!(out[&id].finish, json!({"type": "length", "length": 10}));
}

#[test]
fn min_new_tokens_stop_ids_and_logprobs() {
    let e = engine(options(|_| {}));
    let prompt = tokens(77, 12);
    let free = e.submit(&request(&prompt, 40, json!({"ignore_eos": true}))).unwrap();
    let free = collect(&e, &[free]).remove(&free).unwrap();
    // A stop id taken from the free run ends generation at its first occurrence.
    let stop_at = free.tokens[3] as u32;
    let first = free.tokens.iter().position(|&t| t as u32 == stop_at).unwrap();
    let id = e.submit(&request(&prompt, 40, json!({"stop_token_ids": [stop_at], "ignore_eos": true}))).unwrap();
    let stopped = collect(&e, &[id]).remove(&id).unwrap();
    assert_eq!(stopped.tokens, free.tokens[..=first].to_vec());
    assert_eq!(stopped.finish, json!({"type": "stop", "matched": stop_at}));
    // min_new_tokens masks the stop id until reached.
    let id = e.submit(&request(&prompt, 40, json!({"stop_token_ids": [stop_at], "min_new_tokens": first + 2, "ignore_eos": true}))).unwrap();
    let late = collect(&e, &[id]).remove(&id).unwrap();
    assert!(late.tokens.len() > first + 1);
    assert!(late.tokens[..first + 2].iter().all(|&t| t as u32 != stop_at));
    // Logprobs of greedy picks are the largest, negative, and input logprobs cover the prompt.
    let body = json!({"input_ids": prompt, "return_logprob": true, "top_logprobs_num": 3, "logprob_start_len": 0,
                      "sampling": {"temperature": 0.0, "max_new_tokens": 5, "ignore_eos": true}});
    let id = e.submit(&serde_json::to_vec(&body).unwrap()).unwrap();
    let lp = collect(&e, &[id]).remove(&id).unwrap();
    assert_eq!(lp.logprobs.len(), 5);
    assert!(lp.logprobs.iter().all(|&x| x < 0.0 && x > -10.0));
    let ilp = lp.input_logprobs.unwrap();
    let ilp = ilp.as_array().unwrap();
    assert_eq!(ilp.len(), prompt.len());
    assert!(ilp[0].is_null() && ilp[1..].iter().all(|x| x.as_f64().unwrap() < 0.0));
}
