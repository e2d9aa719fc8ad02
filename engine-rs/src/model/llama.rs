//! HF `LlamaForCausalLM`: embedding, per layer RMSNorm → GQA attention with RoPE → residual →
//! RMSNorm → SwiGLU MLP → residual, then the final norm and the (tied or untied) lm_head.
//! Projections run as one GEMM over every token of the batch; attention runs per sequence.

use super::attention::{attend, Heads, SeqSpan};
use super::attention_llamacpp::{attend as attend_llamacpp, round_kv};
use super::rope::Rope;
use super::{ForwardSeq, Model};
use super::weight::Weight;
use crate::backend::cpu::matrix::DType;
use crate::backend::cpu::{silu_mul, add_in_place, warm_pool, Kernels};
use crate::config::ModelConfig;
use crate::kv::cache::KvCache;
use crate::loader::source::WeightSource;
use crate::parallel::comm::{Communicator, Solo};
use rayon::prelude::*;
use crate::parallel::plan::RankShard;

/// From this many rows (a prefill chunk) RoPE is applied on the pool's threads.
const PARALLEL_ROPE_ROWS: usize = 64;

/// One decoder layer's weights, in HF layout (Q/K rows in rotate-half order).
pub struct Layer {
    pub input_norm: Vec<f32>,
    pub post_attention_norm: Vec<f32>,
    pub q_proj: Weight,
    pub k_proj: Weight,
    pub v_proj: Weight,
    pub o_proj: Weight,
    pub gate_proj: Weight,
    pub up_proj: Weight,
    pub down_proj: Weight,
}

impl Layer {
    /// The seven projection matrices, in the order a forward pass reads them.
    pub fn projections(&self) -> [&Weight; 7] {
        [&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj, &self.gate_proj, &self.up_proj, &self.down_proj]
    }

    /// This layer with its wide bf16 projections (down_proj in Llama 3) in the panelled layout
    /// the `vdpbf16ps` kernels read faster (`backend::cpu::panels`); the others as they were.
    fn panelled(self) -> Layer {
        Layer {
            q_proj: self.q_proj.panelled(),
            k_proj: self.k_proj.panelled(),
            v_proj: self.v_proj.panelled(),
            o_proj: self.o_proj.panelled(),
            gate_proj: self.gate_proj.panelled(),
            up_proj: self.up_proj.panelled(),
            down_proj: self.down_proj.panelled(),
            ..self
        }
    }
}

/// Whether a model on `kernels` panels its wide bf16 projections: only the `vdpbf16ps` kernels
/// read that layout (not AMX, not the f32 paths); `LLM_CPU_PANELS=0` keeps them row-major (A/B runs).
fn panels_wanted(kernels: &Kernels) -> bool {
    kernels.bf16_dot && !kernels.amx && std::env::var("LLM_CPU_PANELS").map_or(true, |v| v != "0")
}

/// Every weight of the model, built by a loader (safetensors/dummy in `Llama::new`, GGUF in loader/gguf.rs).
pub struct LlamaWeights {
    pub embed_tokens: Weight,
    /// None when the embeddings are tied.
    pub lm_head: Option<Weight>,
    pub final_norm: Vec<f32>,
    pub layers: Vec<Layer>,
}

pub struct Llama {
    config: ModelConfig,
    kernels: Kernels,
    embed_tokens: Weight,
    /// None when the embeddings are tied.
    lm_head: Option<Weight>,
    final_norm: Vec<f32>,
    layers: Vec<Layer>,
    rope: Rope,
    pool: Option<rayon::ThreadPool>,
    /// Forward passes keep the pool's other workers awake (`backend::cpu::warm_pool`).
    warm_pool: bool,
    weight_bytes: usize,
    weight_dtype: &'static str,
    /// The heads, MLP columns and vocabulary rows these weights hold (all of them at tp = 1).
    shard: RankShard,
    /// Attention in llama.cpp's default arithmetic (`attention_llamacpp`): GGUF models computed the
    /// llama.cpp way (quantized activations), where the CPU has the fast kernel, unless
    /// `LLM_ATTN_LLAMACPP_F16=0`; others only with `=1`.
    llamacpp_attention: bool,
}

impl Llama {
    /// Builds the model from `source`, checking every tensor's shape against `config`.
    pub fn new(config: ModelConfig, source: &WeightSource, convert_to: Option<DType>, kernels: Kernels) -> Result<Llama, String> {
        let c = &config;
        let (hidden, inter) = (c.hidden_size, c.intermediate_size);
        let m = |name: &str, rows: usize, cols: usize| source.matrix(name, rows, cols, convert_to).map(Weight::Dense);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Layer {
                input_norm: source.norm(&format!("{p}.input_layernorm.weight"), hidden)?,
                post_attention_norm: source.norm(&format!("{p}.post_attention_layernorm.weight"), hidden)?,
                q_proj: m(&format!("{p}.self_attn.q_proj.weight"), c.q_dim(), hidden)?,
                k_proj: m(&format!("{p}.self_attn.k_proj.weight"), c.kv_dim(), hidden)?,
                v_proj: m(&format!("{p}.self_attn.v_proj.weight"), c.kv_dim(), hidden)?,
                o_proj: m(&format!("{p}.self_attn.o_proj.weight"), hidden, c.q_dim())?,
                gate_proj: m(&format!("{p}.mlp.gate_proj.weight"), inter, hidden)?,
                up_proj: m(&format!("{p}.mlp.up_proj.weight"), inter, hidden)?,
                down_proj: m(&format!("{p}.mlp.down_proj.weight"), hidden, inter)?,
            });
        }
        let embed_tokens = m("model.embed_tokens.weight", c.vocab_size, hidden)?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(m("lm_head.weight", c.vocab_size, hidden)?)
        };
        let final_norm = source.norm("model.norm.weight", hidden)?;
        let weights = LlamaWeights { embed_tokens, lm_head, final_norm, layers };
        let rope = Rope::new(&config);
        // Rounding activations to bf16 is only allowed when the user asked for bfloat16 compute
        // (or for dummy bf16 weights); `auto` on a bf16 checkpoint keeps the exact f32 path.
        let dummy_bf16 = matches!(source, WeightSource::Dummy(d) if d.dtype == DType::BF16);
        let kernels = if convert_to == Some(DType::BF16) || dummy_bf16 { kernels.with_bf16_activations() } else { kernels };
        Ok(Llama::from_weights(config, weights, rope, kernels))
    }

    /// Builds the model from weights a loader already checked against `config`.
    pub fn from_weights(config: ModelConfig, weights: LlamaWeights, rope: Rope, kernels: Kernels) -> Llama {
        let LlamaWeights { embed_tokens, lm_head, final_norm, layers } = weights;
        let layers: Vec<Layer> = if panels_wanted(&kernels) { layers.into_iter().map(Layer::panelled).collect() } else { layers };
        let mut weight_bytes = embed_tokens.size_bytes() + lm_head.as_ref().map_or(0, |h| h.size_bytes());
        weight_bytes += final_norm.len() * 4;
        for l in &layers {
            weight_bytes += l.projections().iter().map(|w| w.size_bytes()).sum::<usize>()
                + (l.input_norm.len() + l.post_attention_norm.len()) * 4;
        }
        let weight_dtype = layers.first().map_or(embed_tokens.dtype_name(), |l| l.q_proj.dtype_name());
        let shard = RankShard::whole(&config);
        Llama {
            shard,
            rope,
            config,
            kernels,
            embed_tokens,
            lm_head,
            final_norm,
            layers,
            pool: None,
            warm_pool: false,
            weight_bytes,
            weight_dtype,
            llamacpp_attention: super::attention_llamacpp::requested() == Some(true),
        }
    }

    /// Takes llama.cpp's attention arithmetic by default (a GGUF file: llama.cpp's users expect its
    /// answers) where the fast kernel runs; `LLM_ATTN_LLAMACPP_F16` still decides when set.
    pub fn with_llamacpp_attention_default(mut self) -> Llama {
        let fast = super::attention_llamacpp::fast(&self.kernels, self.config.head_dim);
        self.llamacpp_attention = super::attention_llamacpp::requested().unwrap_or(fast);
        self
    }

    /// Runs forward passes on `pool` instead of the caller's (global) rayon pool.
    pub fn with_pool(mut self, pool: rayon::ThreadPool) -> Llama {
        self.warm_pool = warm_pool::worth_keeping_warm(&pool, self.weight_bytes);
        self.pool = Some(pool);
        self
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The weights of one tensor-parallel rank: column-parallel q/k/v and gate/up (row slices),
    /// row-parallel o_proj and down_proj (column slices), embedding and lm_head by vocabulary;
    /// norms replicated. Mapped row slices borrow the checkpoint; column slices are copies.
    pub fn shard(&self, s: &RankShard) -> Result<Llama, String> {
        let hd = self.config.head_dim;
        let rows = |r: &std::ops::Range<usize>| r.start * hd..r.end * hd;
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let cols = |w: &Weight, r: std::ops::Range<usize>, name: &str| {
                w.slice_cols(r).map_err(|e| format!("--tp-size {}: layer {i} {name}: {e}", s.world))
            };
            layers.push(Layer {
                input_norm: l.input_norm.clone(),
                post_attention_norm: l.post_attention_norm.clone(),
                q_proj: l.q_proj.slice_rows(rows(&s.heads)),
                k_proj: l.k_proj.slice_rows(rows(&s.kv_heads)),
                v_proj: l.v_proj.slice_rows(rows(&s.kv_heads)),
                o_proj: cols(&l.o_proj, rows(&s.heads), "o_proj")?,
                gate_proj: l.gate_proj.slice_rows(s.inter.clone()),
                up_proj: l.up_proj.slice_rows(s.inter.clone()),
                down_proj: cols(&l.down_proj, s.inter.clone(), "down_proj")?,
            });
        }
        let weights = LlamaWeights {
            embed_tokens: self.embed_tokens.slice_rows(s.vocab.clone()),
            lm_head: self.lm_head.as_ref().map(|h| h.slice_rows(s.vocab.clone())),
            final_norm: self.final_norm.clone(),
            layers,
        };
        let mut rank = Llama::from_weights(self.config.clone(), weights, self.rope.clone(), self.kernels);
        rank.shard = s.clone();
        rank.llamacpp_attention = self.llamacpp_attention;
        Ok(rank)
    }

    /// Makes every quantized weight's kernel copy (GGUF's row-interleaved groups) on this model's pool.
    /// Called once the weights are where they will run (after a tensor-parallel split, per rank), so
    /// no copy is made of a matrix that is then sliced and the first request does not pay for them.
    pub fn prepare_weights(&self) {
        let mut all: Vec<&Weight> = vec![&self.embed_tokens];
        all.extend(&self.lm_head);
        for l in &self.layers {
            all.extend(l.projections());
        }
        self.on_pool(|| all.par_iter().for_each(|w| w.prepare()));
    }

    pub fn rank_shard(&self) -> &RankShard {
        &self.shard
    }

    /// K/V floats per slot in this model's cache (its KV heads × head_dim).
    pub fn kv_dim(&self) -> usize {
        self.shard.num_kv_heads() * self.config.head_dim
    }

    /// Checks a batch against the model and `kv` before any rank runs it.
    pub(crate) fn check_batch(&self, batch: &[ForwardSeq], kv: &KvCache) -> Result<(), String> {
        let c = &self.config;
        if kv.num_layers != c.num_hidden_layers || kv.kv_dim != self.kv_dim() {
            return Err(format!(
                "KV cache shape (layers {}, kv_dim {}) does not match the model (layers {}, kv_dim {})",
                kv.num_layers,
                kv.kv_dim,
                c.num_hidden_layers,
                self.kv_dim()
            ));
        }
        for (i, s) in batch.iter().enumerate() {
            if s.tokens.is_empty() {
                return Err(format!("batch[{i}]: no tokens"));
            }
            let want = s.start_pos + s.tokens.len();
            if s.slots.len() != want {
                return Err(format!("batch[{i}]: {} slots given, start_pos + tokens needs {want}", s.slots.len()));
            }
            if let Some(&t) = s.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(format!("batch[{i}]: token id {t} is outside the vocabulary ({})", c.vocab_size));
            }
            if let Some(&slot) = s.slots.iter().find(|&&x| x as usize >= kv.num_slots) {
                return Err(format!("batch[{i}]: KV slot {slot} is outside the cache ({} slots)", kv.num_slots));
            }
        }
        Ok(())
    }

    /// The forward pass of this rank; `comm` joins the ranks' partial sums (a no-op at tp = 1).
    /// Returns the logits on rank 0; the other ranks compute their vocabulary slice for the gather
    /// and return none.
    pub(crate) fn run(&self, batch: &[ForwardSeq], kv: &mut KvCache, comm: &dyn Communicator) -> Vec<f32> {
        let c = &self.config;
        let k = &self.kernels;
        let s = &self.shard;
        let hd = c.head_dim;
        let (hidden, inter, q_dim, kv_dim) = (c.hidden_size, s.inter.len(), s.num_heads() * hd, self.kv_dim());
        let n: usize = batch.iter().map(|s| s.tokens.len()).sum();
        let heads = Heads { num_heads: s.num_heads(), num_kv_heads: s.num_kv_heads(), head_dim: hd };
        let tp = comm.world_size() > 1;

        let mut x = vec![0.0f32; n * hidden];
        let mut positions = Vec::with_capacity(n);
        let mut new_slots = Vec::with_capacity(n);
        let mut spans = Vec::with_capacity(batch.len());
        for s in batch {
            spans.push(SeqSpan { first_row: positions.len(), len: s.tokens.len(), start_pos: s.start_pos, slots: s.slots });
            for (i, &t) in s.tokens.iter().enumerate() {
                let row = positions.len();
                // A vocabulary shard leaves other ranks' tokens at zero; the all-reduce fills them.
                if self.shard.vocab.contains(&(t as usize)) {
                    let local = t as usize - self.shard.vocab.start;
                    self.embed_tokens.row_to_f32(local, &mut x[row * hidden..(row + 1) * hidden]);
                }
                positions.push(s.start_pos + i);
                new_slots.push(s.slots[s.start_pos + i] as usize);
            }
        }

        if tp {
            comm.all_reduce_sum(&mut x);
        }
        let rope_width = self.rope.cos_sin_len();
        let mut rope_cs = vec![0.0f32; n * rope_width];
        for (row, &pos) in positions.iter().enumerate() {
            self.rope.cos_sin(pos, &mut rope_cs[row * rope_width..(row + 1) * rope_width]);
        }
        let mut h = vec![0.0f32; n * hidden];
        let mut q = vec![0.0f32; n * q_dim];
        let mut kn = vec![0.0f32; n * kv_dim];
        let mut vn = vec![0.0f32; n * kv_dim];
        let mut att = vec![0.0f32; n * q_dim];
        let mut o = vec![0.0f32; n * hidden];
        let mut gate = vec![0.0f32; n * inter];
        let mut up = vec![0.0f32; n * inter];
        let mut down = vec![0.0f32; n * hidden];
        let eps = c.rms_norm_eps;

        for (li, layer) in self.layers.iter().enumerate() {
            if li == 0 {
                k.rmsnorm(&x, &layer.input_norm, eps, &mut h);
            } else {
                k.add_rmsnorm(&mut x, &down, &layer.input_norm, eps, &mut h);
            }
            Weight::matmul_fused(k, &[&layer.q_proj, &layer.k_proj, &layer.v_proj], &h, n, &mut [&mut q, &mut kn, &mut vn]);
            let rotate = |((qr, kr), cs): ((&mut [f32], &mut [f32]), &[f32])| {
                Rope::rotate(qr, hd, cs);
                Rope::rotate(kr, hd, cs);
            };
            if n >= PARALLEL_ROPE_ROWS {
                q.par_chunks_mut(q_dim).zip(kn.par_chunks_mut(kv_dim)).zip(rope_cs.par_chunks(rope_width)).for_each(rotate);
            } else {
                q.chunks_mut(q_dim).zip(kn.chunks_mut(kv_dim)).zip(rope_cs.chunks(rope_width)).for_each(rotate);
            }
            if self.llamacpp_attention {
                round_kv(&mut kn);
                round_kv(&mut vn);
            }
            {
                let (kc, vc) = kv.layer_mut(li);
                for (row, &slot) in new_slots.iter().enumerate() {
                    kc[slot * kv_dim..(slot + 1) * kv_dim].copy_from_slice(&kn[row * kv_dim..(row + 1) * kv_dim]);
                    vc[slot * kv_dim..(slot + 1) * kv_dim].copy_from_slice(&vn[row * kv_dim..(row + 1) * kv_dim]);
                }
            }
            let (kc, vc) = kv.layer(li);
            if self.llamacpp_attention {
                attend_llamacpp(k, heads, &spans, &q, kc, vc, &mut att);
            } else {
                attend(k, heads, &spans, &q, kc, vc, &mut att);
            }
            layer.o_proj.matmul(k, &att, n, &mut o);
            if tp {
                comm.all_reduce_sum(&mut o);
            }
            k.add_rmsnorm(&mut x, &o, &layer.post_attention_norm, eps, &mut h);
            Weight::matmul_fused(k, &[&layer.gate_proj, &layer.up_proj], &h, n, &mut [&mut gate, &mut up]);
            silu_mul(&mut gate, &up);
            layer.down_proj.matmul(k, &gate, n, &mut down);
            if tp {
                comm.all_reduce_sum(&mut down);
            }
        }
        if !self.layers.is_empty() {
            add_in_place(&mut x, &down);
        }

        // Only the rows that need logits go through the final norm and the (large) lm_head.
        let mut picked: Vec<usize> = Vec::new();
        for (s, span) in batch.iter().zip(&spans) {
            if s.all_logits {
                picked.extend(span.first_row..span.first_row + span.len);
            } else {
                picked.push(span.first_row + span.len - 1);
            }
        }
        let mut sel = vec![0.0f32; picked.len() * hidden];
        for (i, &row) in picked.iter().enumerate() {
            sel[i * hidden..(i + 1) * hidden].copy_from_slice(&x[row * hidden..(row + 1) * hidden]);
        }
        let mut normed = vec![0.0f32; sel.len()];
        k.rmsnorm(&sel, &self.final_norm, eps, &mut normed);
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        let mut logits = vec![0.0f32; picked.len() * head.rows()];
        head.matmul(k, &normed, picked.len(), &mut logits);
        if tp {
            logits = gather_vocab(comm, &logits, picked.len(), c.vocab_size);
        }
        logits
    }

    /// Runs `f` on this model's compute pool (the caller's pool when it has none).
    pub(crate) fn on_pool<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.pool {
            Some(pool) if self.warm_pool => warm_pool::install_warm(pool, f),
            Some(pool) => pool.install(f),
            None => f(),
        }
    }
}

impl Model for Llama {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Invalid batches return an empty Vec (the reason is in `try_forward`'s error).
    fn forward(&self, batch: &[ForwardSeq], kv: &mut KvCache) -> Vec<f32> {
        super::forward_or_log(self, batch, kv)
    }

    fn try_forward(&self, batch: &[ForwardSeq], kv: &mut KvCache) -> Result<Vec<f32>, String> {
        self.check_batch(batch, kv)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.on_pool(|| self.run(batch, kv, &Solo)))
    }

    fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    fn weight_dtype(&self) -> &'static str {
        self.weight_dtype
    }

    fn decode_weight_regions(&self) -> Vec<&[u8]> {
        let projections = self.layers.iter().flat_map(Layer::projections);
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        let weights: Vec<&Weight> = projections.chain(std::iter::once(head)).collect();
        // All or nothing: a partial list would understate the step's reads.
        weights.iter().map(|w| w.dense_bytes()).collect::<Option<Vec<_>>>().unwrap_or_default()
    }

    fn kernel_isa(&self) -> &'static str {
        self.kernels.name()
    }
}

/// Joins the ranks' vocabulary slices of `rows` logits rows into full rows of `vocab` floats on rank 0
/// (the only rank whose logits are sampled); the other ranks take part in the gather and return none.
fn gather_vocab(comm: &dyn Communicator, local: &[f32], rows: usize, vocab: usize) -> Vec<f32> {
    let mut by_rank = vec![0.0f32; rows * vocab];
    comm.all_gather(local, &mut by_rank);
    if comm.rank() != 0 {
        return Vec::new();
    }
    // by_rank holds rank 0's rows × slice_0, then rank 1's rows × slice_1, ...
    let mut out = vec![0.0f32; rows * vocab];
    let (mut at, mut col) = (0, 0);
    for r in 0..comm.world_size() {
        let width = crate::parallel::plan::even_split(vocab, comm.world_size(), r).len();
        for row in 0..rows {
            out[row * vocab + col..row * vocab + col + width].copy_from_slice(&by_rank[at + row * width..at + (row + 1) * width]);
        }
        at += rows * width;
        col += width;
    }
    out
}
