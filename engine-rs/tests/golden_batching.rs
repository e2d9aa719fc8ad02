//! Chunked prefill and mixed batches must give the same logits as one sequence at a time, and a
//! dummy Llama-3.2-1B must load from its config alone and produce finite logits.

use llm_engine::kv::cache::KvCache;
use llm_engine::loader::{load_model, LoadOptions};
use llm_engine::model::{ForwardSeq, Model};
use std::path::PathBuf;

fn models_dir() -> PathBuf {
    match std::env::var("LLM_MODELS_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models"),
    }
}

fn tiny() -> Box<dyn Model> {
    let mut opts = LoadOptions::new(models_dir().join("tiny-random-llama-3.1"));
    opts.dtype = "float32".into();
    load_model(&opts).unwrap()
}

fn kv_for(model: &dyn Model, slots: usize) -> KvCache {
    let c = model.config();
    KvCache::new(c.num_hidden_layers, slots, c.kv_dim())
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

const PROMPT_A: &[u32] = &[128000, 791, 6864, 315, 9822, 374, 264, 3363, 304, 279, 4731];
const PROMPT_B: &[u32] = &[128000, 40, 1093, 311, 1373];

#[test]
fn chunked_prefill_equals_single_prefill() {
    let model = tiny();
    let v = model.config().vocab_size;
    let slots: Vec<u32> = (0..PROMPT_A.len() as u32).collect();
    let mut kv = kv_for(model.as_ref(), 32);
    let whole = model
        .try_forward(&[ForwardSeq { tokens: PROMPT_A, start_pos: 0, slots: &slots, all_logits: true }], &mut kv)
        .unwrap();
    assert_eq!(whole.len(), PROMPT_A.len() * v);

    // Same prompt in chunks of 4, 4, 3, in scattered slots of a fresh cache.
    let scattered: Vec<u32> = (0..PROMPT_A.len() as u32).map(|i| 31 - 2 * i).collect();
    let mut kv2 = kv_for(model.as_ref(), 32);
    let mut rows = Vec::new();
    let mut pos = 0;
    for chunk in PROMPT_A.chunks(4) {
        let end = pos + chunk.len();
        rows.extend(
            model
                .try_forward(&[ForwardSeq { tokens: chunk, start_pos: pos, slots: &scattered[..end], all_logits: true }], &mut kv2)
                .unwrap(),
        );
        pos = end;
    }
    assert_close(&rows, &whole, "chunked vs whole");
}

#[test]
fn batched_forward_equals_one_at_a_time() {
    let model = tiny();
    let v = model.config().vocab_size;
    let slots_a: Vec<u32> = (0..PROMPT_A.len() as u32 + 1).collect();
    let slots_b: Vec<u32> = (20..20 + PROMPT_B.len() as u32 + 1).collect();

    // Alone: prefill each, then one decode step each.
    let mut kv = kv_for(model.as_ref(), 40);
    let a_pre = model.try_forward(&[ForwardSeq { tokens: PROMPT_A, start_pos: 0, slots: &slots_a[..PROMPT_A.len()], all_logits: false }], &mut kv).unwrap();
    let b_pre = model.try_forward(&[ForwardSeq { tokens: PROMPT_B, start_pos: 0, slots: &slots_b[..PROMPT_B.len()], all_logits: true }], &mut kv).unwrap();
    let a_dec = model.try_forward(&[ForwardSeq { tokens: &[42], start_pos: PROMPT_A.len(), slots: &slots_a, all_logits: false }], &mut kv).unwrap();
    let b_dec = model.try_forward(&[ForwardSeq { tokens: &[43], start_pos: PROMPT_B.len(), slots: &slots_b, all_logits: false }], &mut kv).unwrap();

    // Together: both prefills in one call, then both decodes in one call.
    let mut kv2 = kv_for(model.as_ref(), 40);
    let pre = model
        .try_forward(
            &[
                ForwardSeq { tokens: PROMPT_A, start_pos: 0, slots: &slots_a[..PROMPT_A.len()], all_logits: false },
                ForwardSeq { tokens: PROMPT_B, start_pos: 0, slots: &slots_b[..PROMPT_B.len()], all_logits: true },
            ],
            &mut kv2,
        )
        .unwrap();
    assert_eq!(pre.len(), (1 + PROMPT_B.len()) * v);
    assert_close(&pre[..v], &a_pre, "batched prefill A");
    assert_close(&pre[v..], &b_pre, "batched prefill B");
    let dec = model
        .try_forward(
            &[
                ForwardSeq { tokens: &[42], start_pos: PROMPT_A.len(), slots: &slots_a, all_logits: false },
                ForwardSeq { tokens: &[43], start_pos: PROMPT_B.len(), slots: &slots_b, all_logits: false },
            ],
            &mut kv2,
        )
        .unwrap();
    assert_close(&dec[..v], &a_dec, "batched decode A");
    assert_close(&dec[v..], &b_dec, "batched decode B");
    // The sequences really differ, so the comparison above is not vacuous.
    assert!(a_dec.iter().zip(&b_dec).any(|(x, y)| (x - y).abs() > 1e-3));
}

#[test]
fn invalid_batches_are_errors_not_panics() {
    let model = tiny();
    let mut kv = kv_for(model.as_ref(), 8);
    let bad_slots = model.try_forward(&[ForwardSeq { tokens: &[1, 2], start_pos: 0, slots: &[0], all_logits: false }], &mut kv);
    assert!(bad_slots.unwrap_err().contains("slots"));
    let out_of_cache = model.try_forward(&[ForwardSeq { tokens: &[1], start_pos: 0, slots: &[99], all_logits: false }], &mut kv);
    assert!(out_of_cache.unwrap_err().contains("99"));
    let bad_token = model.try_forward(&[ForwardSeq { tokens: &[999_999], start_pos: 0, slots: &[0], all_logits: false }], &mut kv);
    assert!(bad_token.unwrap_err().contains("999999"));
    assert!(model.forward(&[ForwardSeq { tokens: &[1], start_pos: 0, slots: &[99], all_logits: false }], &mut kv).is_empty());
    let mut wrong_kv = KvCache::new(1, 8, 3);
    assert!(model.try_forward(&[ForwardSeq { tokens: &[1], start_pos: 0, slots: &[0], all_logits: false }], &mut wrong_kv).is_err());
}

#[test]
fn dummy_llama32_1b_gives_finite_logits() {
    let mut opts = LoadOptions::new(models_dir().join("llama-3.2-1b-instruct"));
    opts.load_format = "dummy".into();
    opts.seed = 7;
    let model = load_model(&opts).unwrap();
    let c = model.config();
    assert_eq!((c.hidden_size, c.num_hidden_layers, c.head_dim), (2048, 16, 64));
    assert_eq!(model.weight_dtype(), "bfloat16");
    // Tied embeddings: ~1.24B parameters in bf16.
    let gb = model.weight_bytes() as f64 / 1e9;
    assert!((2.3..2.6).contains(&gb), "weight bytes {gb} GB");
    let mut kv = KvCache::new(c.num_hidden_layers, 8, c.kv_dim());
    let logits = model
        .try_forward(&[ForwardSeq { tokens: &[128000, 791, 6864], start_pos: 0, slots: &[0, 1, 2], all_logits: false }], &mut kv)
        .unwrap();
    assert_eq!(logits.len(), c.vocab_size);
    assert!(logits.iter().all(|x| x.is_finite()));
    let spread = logits.iter().cloned().fold(f32::MIN, f32::max) - logits.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 0.0, "logits are not all equal");
}
