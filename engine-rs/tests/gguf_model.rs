//! A GGUF written from stories260K's safetensors (Q/K rows permuted as llama.cpp's converter does)
//! must load into the same model: identical logits for F32 storage, close ones for F16 and Q8_0.
//! Also: how a model path resolves to a GGUF file, and bad files failing with errors.

use llm_engine::gguf::dtype::GgmlType;
use llm_engine::gguf::names::hf_to_gguf;
use llm_engine::gguf::quants::quantize_q8;
use llm_engine::gguf::rope_permute::permute_rows;
use llm_engine::gguf::value::MetaValue;
use llm_engine::gguf::writer::GgufWriter;
use llm_engine::kv::cache::KvCache;
use llm_engine::loader::gguf::resolve;
use llm_engine::loader::safetensors::SafetensorsFile;
use llm_engine::model::{load_model, ForwardSeq, LoadOptions, Model};
use std::path::{Path, PathBuf};

fn models_dir() -> PathBuf {
    std::env::var("LLM_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models"))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gguf_model_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// stories260K config: hidden 64, inter 172, 5 layers, 8 heads, 4 KV heads, head_dim 8, vocab 512, tied.
const HEADS: usize = 8;
const KV_HEADS: usize = 4;
const HEAD_DIM: usize = 8;

/// Encodes f32 values row by row in `dtype`; Q8_0 falls back to F32 for rows that are not whole blocks
/// (llama.cpp's quantizer does the same for odd shapes).
fn encode(values: &[f32], cols: usize, dtype: GgmlType) -> (GgmlType, Vec<u8>) {
    match dtype {
        GgmlType::F16 => (dtype, values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()),
        GgmlType::Q8_0 if cols % 32 == 0 => {
            let mut out = Vec::new();
            for b in quantize_q8(values) {
                out.extend_from_slice(&half::f16::from_f32(b.d).to_le_bytes());
                out.extend(b.qs.iter().map(|q| *q as u8));
            }
            (dtype, out)
        }
        _ => (GgmlType::F32, values.iter().flat_map(|v| v.to_le_bytes()).collect()),
    }
}

fn write_stories_gguf(path: &Path, dtype: GgmlType) {
    let st = SafetensorsFile::open(&models_dir().join("stories260K/model.safetensors")).unwrap();
    let mut w = GgufWriter::new();
    let u32m = |v: u32| MetaValue::U32(v);
    w.meta("general.architecture", MetaValue::Str("llama".into()))
        .meta("llama.block_count", u32m(5))
        .meta("llama.context_length", u32m(512))
        .meta("llama.embedding_length", u32m(64))
        .meta("llama.feed_forward_length", u32m(172))
        .meta("llama.attention.head_count", u32m(HEADS as u32))
        .meta("llama.attention.head_count_kv", u32m(KV_HEADS as u32))
        .meta("llama.rope.dimension_count", u32m(HEAD_DIM as u32))
        .meta("llama.rope.freq_base", MetaValue::F32(10000.0))
        .meta("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5))
        .meta("tokenizer.ggml.eos_token_id", u32m(2))
        .meta("tokenizer.ggml.bos_token_id", u32m(1));
    let mut names: Vec<&String> = st.tensors.keys().collect();
    names.sort();
    for name in names {
        let shape = st.tensors[name].shape.clone();
        let m = st.matrix(name, &shape).unwrap();
        let values = m.to_f32_vec();
        let gguf_name = hf_to_gguf(name).unwrap_or_else(|| panic!("no GGUF name for {name}"));
        let cols = *shape.last().unwrap();
        let rows = values.len() / cols;
        let is_norm = shape.len() == 1;
        let (t, mut bytes) = if is_norm { encode(&values, cols, GgmlType::F32) } else { encode(&values, cols, dtype) };
        let heads = if name.ends_with("q_proj.weight") { HEADS } else if name.ends_with("k_proj.weight") { KV_HEADS } else { 0 };
        if heads > 0 {
            bytes = permute_rows(&bytes, bytes.len() / rows, heads, HEAD_DIM).unwrap();
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        w.tensor(&gguf_name, &dims, t, bytes);
    }
    std::fs::write(path, w.to_bytes()).unwrap();
}

fn logits(model: &dyn Model, tokens: &[u32]) -> Vec<f32> {
    let c = model.config();
    let mut kv = KvCache::new(c.num_hidden_layers, tokens.len(), c.kv_dim());
    let slots: Vec<u32> = (0..tokens.len() as u32).collect();
    model.try_forward(&[ForwardSeq { tokens, start_pos: 0, slots: &slots, all_logits: true }], &mut kv).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const PROMPT: [u32; 12] = [1, 403, 407, 261, 378, 429, 292, 300, 1, 46, 511, 260];

fn compare(dtype: GgmlType, dtype_opt: &str, tolerance: f32) -> f32 {
    let dir = temp_dir(&format!("{dtype:?}_{dtype_opt}"));
    let file = dir.join("stories.gguf");
    write_stories_gguf(&file, dtype);
    let reference = load_model(&LoadOptions::new(models_dir().join("stories260K"))).unwrap();
    let mut opts = LoadOptions::new(&file);
    opts.dtype = dtype_opt.into();
    let ours = load_model(&opts).unwrap();
    assert_eq!(ours.config().vocab_size, 512);
    assert!(ours.config().tie_word_embeddings);
    let (a, b) = (logits(reference.as_ref(), &PROMPT), logits(ours.as_ref(), &PROMPT));
    let spread = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&a, &b);
    println!("{dtype:?} dtype={dtype_opt}: max |Δlogit| {diff:.2e} (logits up to {spread:.1})");
    assert!(diff <= tolerance, "{dtype:?} dtype={dtype_opt}: max |Δlogit| {diff} > {tolerance}");
    let _ = std::fs::remove_dir_all(&dir);
    diff
}

#[test]
fn f32_gguf_equals_safetensors() {
    compare(GgmlType::F32, "auto", 1e-4);
    compare(GgmlType::F32, "float32", 1e-4);
}

#[test]
fn f16_gguf_is_close() {
    compare(GgmlType::F16, "auto", 0.05);
}

#[test]
fn q8_0_gguf_is_close_and_dense_path_is_closer() {
    let quantized_activations = compare(GgmlType::Q8_0, "auto", 0.5);
    let f32_activations = compare(GgmlType::Q8_0, "float32", 0.5);
    // Both carry the weight rounding; only the first also rounds activations, so it cannot be much closer.
    assert!(f32_activations <= quantized_activations * 1.5 + 1e-3, "{f32_activations} vs {quantized_activations}");
}

#[test]
fn resolve_finds_gguf_files_and_folders() {
    let dir = temp_dir("resolve");
    let file = dir.join("m.gguf");
    std::fs::write(&file, GgufWriter::new().to_bytes()).unwrap();
    assert_eq!(resolve(&file, "auto").unwrap(), Some(file.clone()));
    assert_eq!(resolve(&dir, "auto").unwrap(), Some(file.clone()));
    // An HF folder stays HF unless GGUF is forced.
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    assert_eq!(resolve(&dir, "auto").unwrap(), None);
    assert_eq!(resolve(&dir, "gguf").unwrap(), Some(file.clone()));
    std::fs::write(dir.join("other.gguf"), b"GGUF").unwrap();
    let err = resolve(&dir, "gguf").unwrap_err();
    assert!(err.contains("2 .gguf files"), "{err}");
    // The magic counts, not only the name.
    let renamed = dir.join("model.bin");
    std::fs::write(&renamed, GgufWriter::new().to_bytes()).unwrap();
    assert_eq!(resolve(&renamed, "auto").unwrap(), Some(renamed.clone()));
    let text = dir.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    assert!(resolve(&text, "gguf").unwrap_err().contains("not a GGUF file"));
    assert!(resolve(&dir.join("absent"), "gguf").is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_gguf_files_are_errors() {
    let dir = temp_dir("bad");
    let file = dir.join("stories.gguf");
    write_stories_gguf(&file, GgmlType::F32);
    let bytes = std::fs::read(&file).unwrap();
    // Truncated: the parser notices tensors running past the end.
    std::fs::write(&file, &bytes[..bytes.len() - 1000]).unwrap();
    let err = load_model(&LoadOptions::new(&file)).err().unwrap();
    assert!(err.contains("stories.gguf"), "{err}");
    // Empty metadata: no architecture.
    std::fs::write(&file, GgufWriter::new().to_bytes()).unwrap();
    let err = load_model(&LoadOptions::new(&file)).err().unwrap();
    assert!(err.contains("general.architecture"), "{err}");
    // A tensor with the wrong shape is named.
    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::Str("llama".into()))
        .meta("llama.block_count", MetaValue::U32(1))
        .meta("llama.embedding_length", MetaValue::U32(32))
        .meta("llama.feed_forward_length", MetaValue::U32(32))
        .meta("llama.attention.head_count", MetaValue::U32(4))
        .tensor("token_embd.weight", &[32, 10], GgmlType::F32, vec![0; 32 * 10 * 4])
        .tensor("blk.0.attn_norm.weight", &[32], GgmlType::F32, vec![0; 32 * 4])
        .tensor("blk.0.ffn_norm.weight", &[32], GgmlType::F32, vec![0; 32 * 4])
        .tensor("blk.0.attn_q.weight", &[32, 16], GgmlType::F32, vec![0; 32 * 16 * 4]);
    std::fs::write(&file, w.to_bytes()).unwrap();
    let err = load_model(&LoadOptions::new(&file)).err().unwrap();
    assert!(err.contains("blk.0.attn_q.weight"), "{err}");
    let mut opts = LoadOptions::new(&file);
    opts.dtype = "float16".into();
    assert!(load_model(&opts).err().unwrap().contains("unsupported dtype"));
    let _ = std::fs::remove_dir_all(&dir);
}
