//! Batch invariance: a sequence's numbers must not depend on what else is in the batch. Continuous
//! batching mixes any requests in one forward pass, so greedy outputs are only reproducible if every
//! kernel reduces each row in the same order whatever the batch size and the row's place in it.
//! Checked bit for bit (not within a tolerance) on every instruction set this CPU has.

use llm_engine::backend::cpu::matrix::Matrix;
use llm_engine::backend::cpu::{Isa, Kernels};
use llm_engine::kv::cache::KvCache;
use llm_engine::loader::{load_model, LoadOptions};
use llm_engine::model::ForwardSeq;
use std::path::PathBuf;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn matmul_rows_do_not_depend_on_the_batch() {
    // k not a multiple of any vector width, m not a multiple of the row tile.
    let (m, k) = (37, 83);
    let w32 = Matrix::from_f32(m, k, &values(m * k, 1));
    let weights = [w32.to_bf16(), w32];
    let probe = values(k, 2);
    for isa in Isa::available() {
        let kernels = Kernels::with_isa(isa).unwrap();
        for w in &weights {
            let mut alone = vec![0.0f32; m];
            kernels.matmul(&probe, 1, w, &mut alone);
            for n in 2..=9 {
                for at in [0, n / 2, n - 1] {
                    let mut x = values(n * k, 10 + n as u64);
                    x[at * k..(at + 1) * k].copy_from_slice(&probe);
                    let mut out = vec![0.0f32; n * m];
                    kernels.matmul(&x, n, w, &mut out);
                    let row = &out[at * m..(at + 1) * m];
                    assert!(
                        row.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{} {:?}: row {at} of a batch of {n} differs from the row alone",
                        isa.name(),
                        w.dtype
                    );
                }
            }
        }
    }
}

fn models_dir() -> PathBuf {
    std::env::var("LLM_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models"))
}

#[test]
fn model_logits_of_a_sequence_do_not_depend_on_its_batch() {
    let mut opts = LoadOptions::new(models_dir().join("tiny-random-llama-3.1"));
    opts.dtype = "float32".into();
    let model = load_model(&opts).unwrap();
    let c = model.config().clone();
    let prompts: Vec<Vec<u32>> = (0..6).map(|i| (0..3 + 5 * i).map(|j| 1000 + 97 * j + 13 * i).collect()).collect();
    let fresh = || KvCache::new(c.num_hidden_layers, 512, c.kv_dim());
    // Each prompt alone, in slots 0..len.
    let solo: Vec<Vec<f32>> = prompts
        .iter()
        .map(|p| {
            let slots: Vec<u32> = (0..p.len() as u32).collect();
            model.try_forward(&[ForwardSeq { tokens: p, start_pos: 0, slots: &slots, all_logits: false }], &mut fresh()).unwrap()
        })
        .collect();
    // All together, in other slots, in reverse order.
    let mut slot_sets = Vec::new();
    let mut next = 100u32;
    for p in &prompts {
        slot_sets.push((next..next + p.len() as u32).collect::<Vec<u32>>());
        next += p.len() as u32 + 7;
    }
    let order: Vec<usize> = (0..prompts.len()).rev().collect();
    let batch: Vec<ForwardSeq> = order
        .iter()
        .map(|&i| ForwardSeq { tokens: &prompts[i], start_pos: 0, slots: &slot_sets[i], all_logits: false })
        .collect();
    let together = model.try_forward(&batch, &mut fresh()).unwrap();
    let v = c.vocab_size;
    for (row, &i) in order.iter().enumerate() {
        let got = &together[row * v..(row + 1) * v];
        let same = got.iter().zip(&solo[i]).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "prompt {i} (row {row} of the batch): logits differ from the prompt alone");
    }
}
