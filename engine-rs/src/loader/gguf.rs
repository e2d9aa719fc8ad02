//! Builds a Llama from a GGUF file: hyperparameters from metadata, every projection and the (tied)
//! head kept in its stored type as a `QMatrix` borrowing from the memory map, Q/K rows put back in
//! HF rotate-half order, norms widened to f32, and Llama 3 `rope_freqs.weight` folded into RoPE.
//! With dtype float32/bfloat16 the weights are dequantized once into dense matrices instead (the
//! float-activation path the HF golden comparison uses).

use crate::backend::cpu::matrix::{DType, Matrix};
use crate::backend::cpu::Kernels;
use crate::config::ModelConfig;
use crate::gguf::llama_meta::LlamaParams;
use crate::gguf::names::layer_tensor;
use crate::gguf::pack_arena::PackArena;
use crate::gguf::quants::dequantize_row;
use crate::gguf::rope_permute::unpermute_rows;
use crate::gguf::{GgufFile, QMatrix, TensorInfo};
use crate::model::llama::{Layer, Llama, LlamaWeights};
use crate::model::rope::Rope;
use crate::model::weight::Weight;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The GGUF file `load_format`/`path` ask for, or None when `path` is an HF folder.
/// A `.gguf` file (or any file starting with the GGUF magic) is GGUF; a folder is GGUF when it holds
/// one `.gguf` file and, for load_format "auto", no config.json.
pub fn resolve(path: &Path, load_format: &str) -> Result<Option<PathBuf>, String> {
    let forced = load_format == "gguf";
    if path.is_file() {
        let is_gguf = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) || has_gguf_magic(path);
        return match (is_gguf, forced) {
            (true, _) => Ok(Some(path.to_path_buf())),
            (false, true) => Err(format!("{}: not a GGUF file (no \"GGUF\" magic)", path.display())),
            (false, false) => Err(format!("{}: model path is a file but not a .gguf; pass a model folder", path.display())),
        };
    }
    if !path.is_dir() {
        return if forced { Err(format!("{}: no such GGUF file or folder", path.display())) } else { Ok(None) };
    }
    if !forced && path.join("config.json").exists() {
        return Ok(None);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot read directory {}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")))
        .collect();
    found.sort();
    match found.len() {
        0 if forced => Err(format!("no .gguf file in {}", path.display())),
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(format!(
            "{} holds {} .gguf files ({}); pass the file itself as the model path",
            path.display(),
            found.len(),
            found.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn has_gguf_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF"
}

/// How the weights are held in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufCompute {
    /// Stored types, quantized activations (llama.cpp's way; default).
    Stored,
    /// Dequantized once to this dense type; activations stay f32.
    Dense(DType),
}

impl GgufCompute {
    pub fn from_dtype(dtype: &str) -> Result<GgufCompute, String> {
        match dtype {
            "auto" => Ok(GgufCompute::Stored),
            "float32" | "float" | "fp32" => Ok(GgufCompute::Dense(DType::F32)),
            "bfloat16" | "bf16" => Ok(GgufCompute::Dense(DType::BF16)),
            other => Err(format!("unsupported dtype \"{other}\" (supported: auto, float32, bfloat16)")),
        }
    }
}

/// The config a GGUF file describes (no weights touched).
pub fn config_of(file: &GgufFile) -> Result<ModelConfig, String> {
    Ok(LlamaParams::from_gguf(file).map_err(|e| e.0)?.to_model_config())
}

/// Opens `path` and builds the model. Call inside the compute pool: dequantization runs on rayon.
pub fn load_llama(path: &Path, compute: GgufCompute, kernels: Kernels) -> Result<Llama, String> {
    let file = Arc::new(GgufFile::open(path).map_err(|e| e.0)?);
    let config = config_of(&file)?;
    let builder = Builder { file: file.clone(), compute, arena: PackArena::new() };
    let c = &config;
    let (hidden, inter) = (c.hidden_size, c.intermediate_size);
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let t = |part: &str| layer_tensor(i, part);
        layers.push(Layer {
            input_norm: builder.vector(&t("attn_norm"), hidden)?,
            post_attention_norm: builder.vector(&t("ffn_norm"), hidden)?,
            q_proj: builder.rope_rows(&t("attn_q"), c.num_attention_heads, c.head_dim, hidden)?,
            k_proj: builder.rope_rows(&t("attn_k"), c.num_key_value_heads, c.head_dim, hidden)?,
            v_proj: builder.matrix(&t("attn_v"), c.kv_dim(), hidden)?,
            o_proj: builder.matrix(&t("attn_output"), hidden, c.q_dim())?,
            gate_proj: builder.matrix(&t("ffn_gate"), inter, hidden)?,
            up_proj: builder.matrix(&t("ffn_up"), inter, hidden)?,
            down_proj: builder.matrix(&t("ffn_down"), hidden, inter)?,
        });
    }
    let embed_tokens = builder.matrix("token_embd.weight", c.vocab_size, hidden)?;
    let lm_head = if c.tie_word_embeddings { None } else { Some(builder.matrix("output.weight", c.vocab_size, hidden)?) };
    let final_norm = builder.vector("output_norm.weight", hidden)?;
    let rope = rope_of(&file, c)?;
    let weights = LlamaWeights { embed_tokens, lm_head, final_norm, layers };
    let model = Llama::from_weights(config, weights, rope, kernels);
    // llama.cpp's arithmetic goes with llama.cpp's way of computing (quantized activations); a
    // dense compute type asks for float accuracy, attention included.
    Ok(if compute == GgufCompute::Stored { model.with_llamacpp_attention_default() } else { model })
}

/// Plain RoPE frequencies, each divided by its `rope_freqs.weight` factor when the file has one
/// (llama.cpp stores Llama 3's long-context scaling that way).
fn rope_of(file: &GgufFile, c: &ModelConfig) -> Result<Rope, String> {
    let mut inv_freq = c.rope_inv_freq();
    if let Some(info) = file.tensor("rope_freqs.weight") {
        let factors = Builder::floats(file, info, inv_freq.len())?;
        for (f, d) in inv_freq.iter_mut().zip(&factors) {
            if !(d.is_finite() && *d > 0.0) {
                return Err(format!("{}: rope_freqs.weight holds {d}, expected positive factors", file.path.display()));
            }
            *f /= d;
        }
    }
    Ok(Rope::from_inv_freq(inv_freq))
}

struct Builder {
    file: Arc<GgufFile>,
    compute: GgufCompute,
    /// Shared by the model's quantized matrices for their row-interleaved copies.
    arena: Arc<PackArena>,
}

impl Builder {
    fn info(&self, name: &str) -> Result<&TensorInfo, String> {
        self.file.tensor(name).ok_or_else(|| format!("{}: tensor '{name}' is missing", self.file.path.display()))
    }

    /// Checks a 2-D tensor is `rows × cols` (ggml dims are [cols, rows]).
    fn checked(&self, name: &str, rows: usize, cols: usize) -> Result<&TensorInfo, String> {
        let info = self.info(name)?;
        if info.dims.len() != 2 || info.cols() != cols || info.rows() != rows {
            return Err(format!(
                "{}: tensor '{name}' has dims {:?}, expected [{cols}, {rows}]",
                self.file.path.display(),
                info.dims
            ));
        }
        Ok(info)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Weight, String> {
        let info = self.checked(name, rows, cols)?;
        let q = QMatrix::new(info.dtype, rows, cols, self.file.clone(), self.file.tensor_start(info))
            .map_err(|e| format!("{}: tensor '{name}': {e}", self.file.path.display()))?;
        Ok(self.finish(q))
    }

    /// Q or K: rows re-ordered from llama.cpp's interleaved-pair RoPE layout back to HF's halves.
    fn rope_rows(&self, name: &str, heads: usize, head_dim: usize, cols: usize) -> Result<Weight, String> {
        let info = self.checked(name, heads * head_dim, cols)?;
        let row_bytes = info.n_bytes / (heads * head_dim).max(1);
        let fail = |e: String| format!("{}: tensor '{name}': {e}", self.file.path.display());
        let bytes = unpermute_rows(self.file.tensor_data(info), row_bytes, heads, head_dim).map_err(fail)?;
        let q = QMatrix::from_vec(info.dtype, heads * head_dim, cols, bytes).map_err(fail)?;
        Ok(self.finish(q))
    }

    fn finish(&self, q: QMatrix) -> Weight {
        match self.compute {
            GgufCompute::Stored => {
                // The kernel copies are made once the model is placed (`Llama::prepare_weights`).
                Weight::Quantized(q.with_arena(self.arena.clone()))
            }
            GgufCompute::Dense(dtype) => {
                let mut values = vec![0f32; q.rows * q.cols];
                values.par_chunks_mut(q.cols).enumerate().for_each(|(r, row)| q.dequantize_row(r, row));
                let m = Matrix::from_f32(q.rows, q.cols, &values);
                Weight::Dense(if dtype == DType::BF16 { m.to_bf16() } else { m })
            }
        }
    }

    /// A 1-D tensor of `len` elements as f32 (norm weights).
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, String> {
        Self::floats(&self.file, self.info(name)?, len)
    }

    fn floats(file: &GgufFile, info: &TensorInfo, len: usize) -> Result<Vec<f32>, String> {
        if info.n_elements() != len as u64 {
            return Err(format!(
                "{}: tensor '{}' has dims {:?}, expected {len} elements",
                file.path.display(),
                info.name,
                info.dims
            ));
        }
        if info.dtype.row_bytes(len).is_none() {
            return Err(format!("{}: tensor '{}': {len} elements are not whole {} blocks", file.path.display(), info.name, info.dtype));
        }
        let mut out = vec![0f32; len];
        dequantize_row(info.dtype, file.tensor_data(info), &mut out);
        Ok(out)
    }
}
