//! The C ABI exercised through the extern "C" functions, over the fake model.
mod common;

use common::*;
use llm_engine::ffi::*;
use serde_json::{json, Value};

fn last_error(h: *mut LlmEngine) -> String {
    let mut buf = vec![0u8; 512];
    let n = unsafe { llm_engine_last_error(h, buf.as_mut_ptr() as *mut _, buf.len()) };
    String::from_utf8_lossy(&buf[..n.min(511)]).into_owned()
}

fn json_call(h: *mut LlmEngine, f: unsafe extern "C" fn(*mut LlmEngine, *mut u8, usize, *mut usize) -> i32) -> Value {
    let mut written = 0usize;
    // Too small first: the size needed comes back and nothing is lost.
    assert_eq!(unsafe { f(h, std::ptr::null_mut(), 0, &mut written) }, 4);
    let mut buf = vec![0u8; written];
    assert_eq!(unsafe { f(h, buf.as_mut_ptr(), buf.len(), &mut written) }, 0);
    serde_json::from_slice(&buf[..written]).unwrap()
}

#[test]
fn submit_wait_drain_abort_through_the_c_abi() {
    assert_eq!(llm_abi_version(), 1);
    // 1 ms per step: the 1500-token request below runs ~1.5 s, so the abort after its 20th token lands
    // mid-stream (at full speed it finished in ~60 ms, sometimes before the test drained 20 tokens).
    let model = FakeModel::new(4096).with_step_delay(std::time::Duration::from_millis(1));
    let opts = options(|o| o.max_total_tokens = Some(2048));
    let h = LlmEngine::into_raw(llm_engine::engine::Engine::with_model(Box::new(model), opts).expect("engine starts"));
    let info = json_call(h, llm_engine_info);
    assert_eq!(info["vocab_size"], VOCAB);
    assert_eq!(info["max_total_num_tokens"], 2048);
    assert_eq!(info["eos_token_ids"], json!([EOS]));

    let bad = b"{\"input_ids\": []}";
    let mut id = 0u64;
    assert_eq!(unsafe { llm_engine_submit(h, bad.as_ptr(), bad.len(), &mut id) }, 1);
    assert!(last_error(h).contains("input_ids"), "{}", last_error(h));
    assert_eq!(unsafe { llm_engine_submit(h, std::ptr::null(), 5, &mut id) }, 1);

    let short = request(&tokens(5, 10), 8, json!({"ignore_eos": true}));
    let long = request(&tokens(6, 10), 1500, json!({"ignore_eos": true}));
    let (mut a, mut b) = (0u64, 0u64);
    assert_eq!(unsafe { llm_engine_submit(h, short.as_ptr(), short.len(), &mut a) }, 0);
    assert_eq!(unsafe { llm_engine_submit(h, long.as_ptr(), long.len(), &mut b) }, 0);
    assert!(a > 0 && b > a);

    let mut tokens_a = Vec::new();
    let mut finish_b = Value::Null;
    let mut aborted = false;
    let mut buf = vec![0u8; 64];
    for _ in 0..10_000 {
        let n = unsafe { llm_engine_wait(h, 1000) };
        assert!(n >= 0);
        if n == 0 {
            continue;
        }
        let mut written = 0;
        let rc = unsafe { llm_engine_drain(h, buf.as_mut_ptr(), buf.len(), &mut written) };
        if rc == 4 {
            assert!(written > buf.len());
            buf.resize(written, 0);
            continue;
        }
        assert_eq!(rc, 0);
        let recs: Vec<Value> = serde_json::from_slice(&buf[..written]).unwrap();
        assert!(!recs.is_empty());
        for r in recs {
            if r["id"] == a {
                tokens_a.extend(r["tokens"].as_array().unwrap().iter().cloned());
            } else if r["id"] == b {
                if !aborted && r["completion_tokens"].as_u64().unwrap() >= 20 {
                    assert_eq!(unsafe { llm_engine_abort(h, b) }, 0);
                    aborted = true;
                }
                if !r["finish"].is_null() {
                    finish_b = r["finish"].clone();
                }
            }
        }
        if !finish_b.is_null() && tokens_a.len() == 8 {
            break;
        }
    }
    assert_eq!(tokens_a.len(), 8);
    assert_eq!(finish_b["type"], "abort");
    assert_eq!(unsafe { llm_engine_abort(h, b) }, 3, "finished id is not found");
    let stats = json_call(h, llm_engine_stats);
    assert_eq!(stats["num_running_reqs"], 0);
    assert_eq!(stats["integrity_ok"], true);
    assert_eq!(stats["used_slots"], stats["cached_slots"]);
    assert_eq!(unsafe { llm_engine_flush_cache(h) }, 0);
    let mut written = 0;
    let mut small = [0u8; 8];
    assert_eq!(unsafe { llm_engine_drain(h, small.as_mut_ptr(), small.len(), &mut written) }, 0);
    assert_eq!(&small[..written], b"[]");
    assert_eq!(unsafe { llm_engine_wait(h, 10) }, 0);
    assert_eq!(unsafe { llm_engine_abort_all(h) }, 0);
    unsafe { llm_engine_free(h) };
    unsafe { llm_engine_free(std::ptr::null_mut()) };
}

#[test]
fn create_reports_errors_into_the_buffer() {
    let mut out: *mut LlmEngine = std::ptr::null_mut();
    let mut err = [0u8; 64];
    let bad = b"{\"page_size\": 0}";
    let rc = unsafe { llm_engine_create(bad.as_ptr(), bad.len(), &mut out, err.as_mut_ptr() as *mut _, err.len()) };
    assert_eq!(rc, 1);
    assert!(out.is_null());
    let msg = std::ffi::CStr::from_bytes_until_nul(&err).unwrap().to_str().unwrap();
    assert!(msg.contains("page_size"), "{msg}");
    let cfg = b"{\"model_path\": \"/nonexistent\"}";
    let rc = unsafe { llm_engine_create(cfg.as_ptr(), cfg.len(), &mut out, err.as_mut_ptr() as *mut _, err.len()) };
    assert_eq!(rc, 2, "no loader yet (or a missing model) is a load error");
    let garbage = b"not json";
    let rc = unsafe { llm_engine_create(garbage.as_ptr(), garbage.len(), &mut out, err.as_mut_ptr() as *mut _, err.len()) };
    assert_eq!(rc, 1);
}
