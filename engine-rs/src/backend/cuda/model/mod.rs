//! `CudaLlama`: the Llama architecture on the GPU, a `Model` the scheduler drives unchanged.
//!
//! KV contract: the model keeps its own paged KV pool in GPU memory (bf16, one K and one V table
//! per layer, `num_slots + 1` rows of kv_dim: the extra row is a scratch slot that padded graph
//! entries write to). It is indexed by the scheduler's slot ids, so the scheduler must size its
//! slot allocator with `num_slots()`. The CPU `KvCache` passed to `forward` is ignored (the engine
//! may create it with zero slots).
//!
//! One forward: embed → per layer [RMSNorm → QKV GEMM → RoPE + KV write → attention (decode
//! kernel when every sequence brings one token, else the prefill kernel) → O GEMM → fused
//! add+RMSNorm → gate/up GEMM → SiLU·mul → down GEMM → fused add+RMSNorm] → gather logit rows →
//! lm_head GEMM (f32) → host. Decode batches up to --cuda-graph-max-bs replay captured graphs.
use std::sync::Mutex;
use std::time::Instant;

use cudarc::driver::{CudaSlice, DevicePtr};

use super::device::{guarded, Gpu};
use super::gemm::{Gemm, OutType};
use super::graphs::DecodeGraphs;
use super::kernels::{Arg, Kernels};
use super::plan::{self, RopeScaling};
use crate::config::ModelConfig;
use crate::kv::cache::KvCache;
use crate::model::{ForwardSeq, Model};

/// Where bf16 weights come from (the loader implements it; None = dummy weights made on the GPU).
pub trait WeightSource {
    /// Tensor `name` (HF naming) as bf16 bits, row-major, of exactly `shape`.
    fn bf16(&self, name: &str, shape: &[usize]) -> Result<Vec<u16>, String>;
}

#[derive(Clone, Debug)]
pub struct CudaOptions {
    pub mem_fraction_static: f64,
    pub max_running_requests: usize,
    /// Most tokens one forward carries (max of chunked_prefill_size and max_prefill_tokens).
    pub max_batch_tokens: usize,
    pub context_length: usize,
    /// Slots the scheduler will use; None: as many as the memory budget allows.
    pub num_slots: Option<usize>,
    pub cuda_graph_max_bs: usize,
    pub disable_cuda_graph: bool,
    pub dummy_seed: u64,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            mem_fraction_static: 0.88,
            max_running_requests: 256,
            max_batch_tokens: 8192,
            context_length: 4096,
            num_slots: None,
            cuda_graph_max_bs: 160,
            disable_cuda_graph: false,
            dummy_seed: 0,
        }
    }
}

/// Splits of decode attention the workspace is sized for.
const MAX_SPLITS: usize = 64;
/// Logit rows computed per lm_head GEMM (all_logits prefill runs in chunks of this).
const LOGIT_ROWS: usize = 256;

struct Layer {
    ln_in: CudaSlice<u16>,
    qkv: CudaSlice<u16>,
    o: CudaSlice<u16>,
    ln_post: CudaSlice<u16>,
    gate_up: CudaSlice<u16>,
    down: CudaSlice<u16>,
    k_cache: CudaSlice<u16>,
    v_cache: CudaSlice<u16>,
}

/// Device buffers reused by every forward, at fixed addresses (graphs replay against them).
pub(crate) struct Buffers {
    pub residual: CudaSlice<u16>,
    pub proj: CudaSlice<u16>,
    pub qkv: CudaSlice<u16>,
    pub attn: CudaSlice<u16>,
    pub gate_up: CudaSlice<u16>,
    pub act: CudaSlice<u16>,
    pub gathered: CudaSlice<u16>,
    pub logits: CudaSlice<f32>,
    pub part_acc: CudaSlice<f32>,
    pub part_ml: CudaSlice<f32>,
    /// Per-token and per-sequence metadata, one upload per step (layout in `Meta`).
    pub meta: CudaSlice<i32>,
    pub slot_table: CudaSlice<i32>,
}

/// Offsets of the sections in `Buffers::meta` (tokens capacity T, sequences capacity S).
#[derive(Clone, Copy)]
pub(crate) struct MetaLayout {
    pub t: usize,
    pub s: usize,
}

impl MetaLayout {
    pub fn ids(&self) -> usize { 0 }
    pub fn positions(&self) -> usize { self.t }
    pub fn out_slots(&self) -> usize { 2 * self.t }
    pub fn logit_rows(&self) -> usize { 3 * self.t }
    pub fn slot_offsets(&self) -> usize { 4 * self.t }
    pub fn seq_lens(&self) -> usize { 4 * self.t + self.s }
    pub fn q_row_offsets(&self) -> usize { 4 * self.t + 2 * self.s }
    pub fn extend_lens(&self) -> usize { 4 * self.t + 3 * self.s }
    pub fn prefix_lens(&self) -> usize { 4 * self.t + 4 * self.s }
    pub fn len(&self) -> usize { 4 * self.t + 5 * self.s }
}

/// How attention runs for one forward.
#[derive(Clone, Copy)]
pub(crate) enum AttnMode {
    Decode { splits: usize, partition: usize },
    Prefill { max_extend: usize },
}

pub(crate) struct State {
    pub bufs: Buffers,
    pub meta_layout: MetaLayout,
    pub graphs: DecodeGraphs,
}

pub struct CudaLlama {
    config: ModelConfig,
    gpu: Gpu,
    kernels: Kernels,
    gemm: Gemm,
    embed: CudaSlice<u16>,
    lm_head: Option<CudaSlice<u16>>,
    final_norm: CudaSlice<u16>,
    rope_table: CudaSlice<f32>,
    layers: Vec<Layer>,
    num_slots: usize,
    context_length: usize,
    weight_bytes: usize,
    state: Mutex<State>,
    startup_log: Vec<String>,
}

// Safety: every GPU object is used only under `state`'s lock or read-only after load; the CUDA
// context is bound to whichever thread calls in (cudarc binds it per call).
unsafe impl Send for CudaLlama {}
unsafe impl Sync for CudaLlama {}

fn err<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e:?}")
}

pub(crate) fn ptr<T>(slice: &CudaSlice<T>, gpu: &Gpu) -> u64 {
    let (p, _sync) = slice.device_ptr(&gpu.stream);
    p
}

impl CudaLlama {
    /// Uploads (or, with no source, generates) bf16 weights, plans and allocates the KV pool and
    /// workspaces, and captures the decode graphs.
    pub fn load(
        config: ModelConfig,
        rope: RopeScaling,
        weights: Option<&dyn WeightSource>,
        opts: &CudaOptions,
    ) -> Result<CudaLlama, String> {
        guarded(|| Self::load_unguarded(config, rope, weights, opts)).and_then(|r| r)
    }

    fn load_unguarded(
        config: ModelConfig,
        rope: RopeScaling,
        weights: Option<&dyn WeightSource>,
        opts: &CudaOptions,
    ) -> Result<CudaLlama, String> {
        let c = &config;
        plan::check_model_shape(c.num_attention_heads, c.num_key_value_heads, c.head_dim)?;
        if opts.max_batch_tokens == 0 || opts.max_running_requests == 0 || opts.context_length == 0 {
            return Err("max_batch_tokens, max_running_requests and context_length must be positive".into());
        }
        let gpu = Gpu::open(0)?;
        let kernels = Kernels::load(&gpu.ctx)?;
        let gemm = Gemm::new(&gpu.stream)?;
        let mut log = vec![format!(
            "Using CUDA device {} ({}, compute capability {}.{}, {} SMs, {:.2} GB)",
            gpu.info.ordinal,
            gpu.info.name,
            gpu.info.compute_capability.0,
            gpu.info.compute_capability.1,
            gpu.info.sm_count,
            gpu.info.total_memory_bytes as f64 / 1e9
        )];
        let started = Instant::now();
        let (h, inter, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let qkv_dim = (nh + 2 * nkv) * hd;
        let mut weight_bytes = 0usize;
        let mut seed = opts.dummy_seed;
        let mut tensor = |parts: &[(&str, usize)], cols: usize, fill: Option<f32>| -> Result<CudaSlice<u16>, String> {
            let rows: usize = parts.iter().map(|p| p.1).sum();
            weight_bytes += rows * cols * 2;
            match weights {
                Some(src) => {
                    let mut host = Vec::with_capacity(rows * cols);
                    for (name, r) in parts {
                        let shape: Vec<usize> = if cols == 1 { vec![*r] } else { vec![*r, cols] };
                        host.extend(src.bf16(name, &shape)?);
                    }
                    gpu.stream.clone_htod(&host).map_err(err("weight upload"))
                }
                None => {
                    let mut dev = gpu.stream.alloc_zeros::<u16>(rows * cols).map_err(err("weight alloc"))?;
                    seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    // Norm weights near 1, matrices small: activations stay finite through 32 layers.
                    let (scale, offset_one) = match fill {
                        Some(s) => (s, false),
                        None => (0.0, true),
                    };
                    if offset_one {
                        let ones = vec![0x3F80u16; rows * cols]; // bf16 1.0
                        gpu.stream.memcpy_htod(&ones, &mut dev).map_err(err("weight upload"))?;
                    } else {
                        let n = rows * cols;
                        kernels.launch(
                            &gpu.stream,
                            "fill_uniform_bf16",
                            plan::elementwise_launch(n),
                            &[Arg::Ptr(ptr(&dev, &gpu)), Arg::U64(n as u64), Arg::U64(seed), Arg::F32(scale)],
                        )?;
                    }
                    Ok(dev)
                }
            }
        };
        let mat_scale = |fan_in: usize| Some(1.0 / (fan_in as f32).sqrt());
        let embed = tensor(&[("model.embed_tokens.weight", v)], h, Some(0.02))?;
        let lm_head =
            if c.tie_word_embeddings { None } else { Some(tensor(&[("lm_head.weight", v)], h, mat_scale(h))?) };
        let final_norm = tensor(&[("model.norm.weight", h)], 1, None)?;
        let mut layers_w = Vec::new();
        for l in 0..c.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let (q, k, vv) = (p("self_attn.q_proj.weight"), p("self_attn.k_proj.weight"), p("self_attn.v_proj.weight"));
            let (g, u) = (p("mlp.gate_proj.weight"), p("mlp.up_proj.weight"));
            layers_w.push((
                tensor(&[(&p("input_layernorm.weight"), h)], 1, None)?,
                tensor(&[(&q, nh * hd), (&k, nkv * hd), (&vv, nkv * hd)], h, mat_scale(h))?,
                tensor(&[(&p("self_attn.o_proj.weight"), h)], nh * hd, mat_scale(nh * hd))?,
                tensor(&[(&p("post_attention_layernorm.weight"), h)], 1, None)?,
                tensor(&[(&g, inter), (&u, inter)], h, mat_scale(h))?,
                tensor(&[(&p("mlp.down_proj.weight"), h)], inter, mat_scale(inter))?,
            ));
        }
        gpu.stream.synchronize().map_err(err("weight load"))?;
        log.push(format!(
            "Load weight end. elapsed={:.2} s, type=LlamaForCausalLM, dtype=torch.bfloat16, mem usage={:.2} GB",
            started.elapsed().as_secs_f64(),
            weight_bytes as f64 / (1u64 << 30) as f64
        ));

        // Workspaces first, so the KV plan sees what is really left.
        let t = opts.max_batch_tokens.max(opts.max_running_requests);
        let s = opts.max_running_requests;
        let meta_layout = MetaLayout { t, s };
        let alloc_u16 = |n: usize| gpu.stream.alloc_zeros::<u16>(n.max(1)).map_err(err("activation alloc"));
        let alloc_f32 = |n: usize| gpu.stream.alloc_zeros::<f32>(n.max(1)).map_err(err("activation alloc"));
        let logit_rows = LOGIT_ROWS.max(s);
        let mut bufs = Buffers {
            residual: alloc_u16(t * h)?,
            proj: alloc_u16(t * h)?,
            qkv: alloc_u16(t * qkv_dim)?,
            attn: alloc_u16(t * nh * hd)?,
            gate_up: alloc_u16(t * 2 * inter)?,
            act: alloc_u16(t * inter)?,
            gathered: alloc_u16(logit_rows * h)?,
            logits: alloc_f32(logit_rows * v)?,
            part_acc: alloc_f32(s * nh * MAX_SPLITS * hd)?,
            part_ml: alloc_f32(s * nh * MAX_SPLITS * 2)?,
            meta: gpu.stream.alloc_zeros::<i32>(meta_layout.len()).map_err(err("meta alloc"))?,
            slot_table: gpu.stream.alloc_zeros::<i32>(1).map_err(err("meta alloc"))?,
        };
        let max_pos = opts.context_length.max(c.max_position_embeddings.min(opts.context_length));
        let inv_freq = plan::rope_inv_freq(hd, c.rope_theta as f64, &rope);
        let rope_table =
            gpu.stream.clone_htod(&plan::rope_cos_sin_table(max_pos, hd, &inv_freq)).map_err(err("rope table"))?;

        let kv_dim = c.kv_dim();
        let per_slot = plan::kv_bytes_per_slot(c.num_hidden_layers, kv_dim);
        let (free, total) = gpu.ctx.mem_get_info().map_err(err("mem_get_info"))?;
        // The activation buffers are already allocated (counted in `total - free`); the reserve
        // covers what cuBLAS and graph capture take later.
        let reserve = plan::activation_reserve_bytes(&plan::ActivationShape {
            max_batch_tokens: 0,
            max_running: 0,
            hidden: h,
            intermediate: inter,
            qkv_dim,
            vocab: v,
            num_heads: nh,
            head_dim: hd,
            max_splits: MAX_SPLITS,
        });
        let planned = plan::plan_kv_slots(total, free, opts.mem_fraction_static, per_slot, reserve)?;
        let num_slots = match opts.num_slots {
            Some(n) if n > planned => {
                return Err(format!("{n} KV slots requested but GPU memory holds {planned} (mem_fraction_static {})", opts.mem_fraction_static))
            }
            Some(n) => n,
            None => planned,
        };
        // Distinct tokens per step are bounded by the pool; shared prefixes can repeat slots, so
        // leave room for that and regrow (re-capturing graphs) if a step ever needs more.
        bufs.slot_table = gpu.stream.alloc_zeros::<i32>(num_slots + t + 1).map_err(err("slot table"))?;
        let mut layers = Vec::new();
        for (ln_in, qkv, o, ln_post, gate_up, down) in layers_w {
            let rows = (num_slots + 1) * kv_dim;
            layers.push(Layer {
                ln_in,
                qkv,
                o,
                ln_post,
                gate_up,
                down,
                k_cache: alloc_u16(rows)?,
                v_cache: alloc_u16(rows)?,
            });
        }
        log.push(format!(
            "KV Cache is allocated. #tokens: {num_slots}, K size: {:.2} GB, V size: {:.2} GB",
            (per_slot / 2 * num_slots) as f64 / (1u64 << 30) as f64,
            (per_slot / 2 * num_slots) as f64 / (1u64 << 30) as f64
        ));

        let graph_sizes = plan::graph_batch_sizes(opts.cuda_graph_max_bs, opts.max_running_requests, opts.disable_cuda_graph);
        let model = CudaLlama {
            config,
            gpu,
            kernels,
            gemm,
            embed,
            lm_head,
            final_norm,
            rope_table,
            layers,
            num_slots,
            context_length: max_pos,
            weight_bytes,
            state: Mutex::new(State { bufs, meta_layout, graphs: DecodeGraphs::new(graph_sizes) }),
            startup_log: log,
        };
        let capture_log = model.capture_graphs()?;
        let mut model = model;
        model.startup_log.extend(capture_log);
        Ok(model)
    }

    /// KV slots of the GPU pool: the scheduler's allocator must use exactly this many.
    pub fn num_slots(&self) -> usize {
        self.num_slots
    }

    pub fn device_info(&self) -> &plan::DeviceInfo {
        &self.gpu.info
    }

    /// Lines for the engine's log (device, weights, KV pool, graph capture), SGLang wording.
    pub fn startup_log(&self) -> &[String] {
        &self.startup_log
    }

    fn capture_graphs(&self) -> Result<Vec<String>, String> {
        let mut st = self.state.lock().map_err(|_| "CUDA state poisoned".to_string())?;
        let sizes = st.graphs.sizes().to_vec();
        if sizes.is_empty() {
            return Ok(vec!["CUDA graphs disabled".into()]);
        }
        let (free_before, _) = self.gpu.ctx.mem_get_info().map_err(err("mem_get_info"))?;
        let mut log = vec![format!(
            "Capture cuda graph begin. This can take up to several minutes. avail mem={:.2} GB",
            free_before as f64 / (1u64 << 30) as f64
        )];
        let started = Instant::now();
        for bs in sizes {
            let (splits, partition) = plan::decode_split(self.context_length, bs, self.config.num_key_value_heads, self.gpu.info.sm_count, MAX_SPLITS);
            let mode = AttnMode::Decode { splits, partition };
            // Capture against well-formed metadata: every padded entry points at the scratch slot.
            self.upload_padding(&mut st, bs)?;
            let st_ref: &State = &st;
            let graph = super::graphs::capture(&self.gpu, || self.run_body(st_ref, bs, bs, mode, bs))?;
            st.graphs.insert(bs, graph, mode);
        }
        let (free_after, _) = self.gpu.ctx.mem_get_info().map_err(err("mem_get_info"))?;
        log.push(format!(
            "Capture cuda graph end. Time elapsed: {:.2} s. mem usage={:.2} GB. avail mem={:.2} GB.",
            started.elapsed().as_secs_f64(),
            free_before.saturating_sub(free_after) as f64 / (1u64 << 30) as f64,
            free_after as f64 / (1u64 << 30) as f64
        ));
        Ok(log)
    }

    fn upload_padding(&self, st: &mut State, bs: usize) -> Result<(), String> {
        let ml = st.meta_layout;
        let mut meta = vec![0i32; ml.len()];
        for i in 0..bs {
            meta[ml.out_slots() + i] = self.num_slots as i32;
            meta[ml.logit_rows() + i] = i as i32;
            meta[ml.q_row_offsets() + i] = i as i32;
            meta[ml.extend_lens() + i] = 1;
        }
        self.gpu.stream.memcpy_htod(&meta, &mut st.bufs.meta).map_err(err("meta upload"))
    }

    /// Every kernel and GEMM of one forward, reading metadata already on the device. Captured
    /// as-is into graphs, so nothing here may synchronise or allocate.
    pub(crate) fn run_body(&self, st: &State, n_tokens: usize, n_seqs: usize, mode: AttnMode, logit_rows: usize) -> Result<(), String> {
        let c = &self.config;
        let g = &self.gpu;
        let k = &self.kernels;
        let b = &st.bufs;
        let ml = st.meta_layout;
        let (h, inter) = (c.hidden_size, c.intermediate_size);
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let qkv_dim = (nh + 2 * nkv) * hd;
        let meta = ptr(&b.meta, g);
        let m = |off: usize| Arg::Ptr(meta + 4 * off as u64);
        let (residual, proj, qkv, attn) = (ptr(&b.residual, g), ptr(&b.proj, g), ptr(&b.qkv, g), ptr(&b.attn, g));
        let (gate_up, act) = (ptr(&b.gate_up, g), ptr(&b.act, g));
        let eps = Arg::F32(c.rms_norm_eps);
        let rows = plan::per_row_launch(n_tokens, 256);

        k.launch(&g.stream, "embedding_gather", rows, &[Arg::Ptr(ptr(&self.embed, g)), m(ml.ids()), Arg::Ptr(residual), Arg::I32(h as i32), Arg::I32(c.vocab_size as i32)])?;
        k.launch(&g.stream, "rmsnorm", rows, &[Arg::Ptr(residual), Arg::Ptr(ptr(&self.layers[0].ln_in, g)), Arg::Ptr(proj), Arg::I32(h as i32), eps])?;
        let scale = Arg::F32(1.0 / (hd as f32).sqrt());
        for (l, layer) in self.layers.iter().enumerate() {
            let (kc, vc) = (ptr(&layer.k_cache, g), ptr(&layer.v_cache, g));
            self.gemm.linear(proj, ptr(&layer.qkv, g), qkv, n_tokens, qkv_dim, h, OutType::Bf16)?;
            k.launch(&g.stream, "rope_kv_write", plan::per_row_launch(n_tokens, 128), &[
                Arg::Ptr(qkv), Arg::I32(qkv_dim as i32), m(ml.positions()), m(ml.out_slots()), Arg::Ptr(ptr(&self.rope_table, g)),
                Arg::Ptr(kc), Arg::Ptr(vc), Arg::I32(nh as i32), Arg::I32(nkv as i32), Arg::I32(hd as i32),
            ])?;
            let slot_table = Arg::Ptr(ptr(&b.slot_table, g));
            match mode {
                AttnMode::Decode { splits, partition } => {
                    k.launch(&g.stream, "attention_decode_partial", plan::decode_launch(n_seqs, nkv, splits), &[
                        Arg::Ptr(qkv), Arg::I32(qkv_dim as i32), Arg::Ptr(kc), Arg::Ptr(vc), slot_table, m(ml.slot_offsets()),
                        m(ml.seq_lens()), Arg::Ptr(ptr(&b.part_acc, g)), Arg::Ptr(ptr(&b.part_ml, g)), Arg::I32(nh as i32),
                        Arg::I32(nkv as i32), Arg::I32(hd as i32), Arg::I32(partition as i32), scale,
                    ])?;
                    let combine = plan::Launch { grid: (n_seqs as u32, nh as u32, 1), block: (128, 1, 1), shared_bytes: 0 };
                    k.launch(&g.stream, "attention_decode_combine", combine, &[
                        Arg::Ptr(ptr(&b.part_acc, g)), Arg::Ptr(ptr(&b.part_ml, g)), Arg::Ptr(attn), Arg::I32(nh as i32),
                        Arg::I32(hd as i32), Arg::I32(splits as i32),
                    ])?;
                }
                AttnMode::Prefill { max_extend } => {
                    k.launch(&g.stream, "attention_prefill", plan::prefill_launch(n_seqs, nh, max_extend, hd), &[
                        Arg::Ptr(qkv), Arg::I32(qkv_dim as i32), Arg::Ptr(kc), Arg::Ptr(vc), slot_table, m(ml.slot_offsets()),
                        m(ml.q_row_offsets()), m(ml.extend_lens()), m(ml.prefix_lens()), Arg::Ptr(attn), Arg::I32(nh as i32),
                        Arg::I32(nkv as i32), Arg::I32(hd as i32), scale,
                    ])?;
                }
            }
            self.gemm.linear(attn, ptr(&layer.o, g), proj, n_tokens, h, nh * hd, OutType::Bf16)?;
            k.launch(&g.stream, "fused_add_rmsnorm", rows, &[Arg::Ptr(proj), Arg::Ptr(residual), Arg::Ptr(ptr(&layer.ln_post, g)), Arg::I32(h as i32), eps])?;
            self.gemm.linear(proj, ptr(&layer.gate_up, g), gate_up, n_tokens, 2 * inter, h, OutType::Bf16)?;
            k.launch(&g.stream, "silu_and_mul", plan::elementwise_launch(n_tokens * inter), &[Arg::Ptr(gate_up), Arg::Ptr(act), Arg::I32(n_tokens as i32), Arg::I32(inter as i32)])?;
            self.gemm.linear(act, ptr(&layer.down, g), proj, n_tokens, h, inter, OutType::Bf16)?;
            let next_norm = match self.layers.get(l + 1) {
                Some(next) => ptr(&next.ln_in, g),
                None => ptr(&self.final_norm, g),
            };
            k.launch(&g.stream, "fused_add_rmsnorm", rows, &[Arg::Ptr(proj), Arg::Ptr(residual), Arg::Ptr(next_norm), Arg::I32(h as i32), eps])?;
        }
        self.logits_rows(st, 0, logit_rows)
    }

    /// Logits for rows `meta.logit_rows[first..first+count]` of the normed hidden states into
    /// `bufs.logits` (f32, count <= LOGIT_ROWS capacity).
    fn logits_rows(&self, st: &State, first: usize, count: usize) -> Result<(), String> {
        let c = &self.config;
        let g = &self.gpu;
        let b = &st.bufs;
        let ids = ptr(&b.meta, g) + 4 * (st.meta_layout.logit_rows() + first) as u64;
        let gathered = ptr(&b.gathered, g);
        // Row gather = embedding lookup into the hidden states (vocab := token count capacity).
        self.kernels.launch(&g.stream, "embedding_gather", plan::per_row_launch(count, 256), &[
            Arg::Ptr(ptr(&b.proj, g)), Arg::Ptr(ids), Arg::Ptr(gathered), Arg::I32(c.hidden_size as i32), Arg::I32(st.meta_layout.t as i32),
        ])?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        self.gemm.linear(gathered, ptr(head, g), ptr(&b.logits, g), count, c.vocab_size, c.hidden_size, OutType::F32)
    }

    fn forward_checked(&self, batch: &[ForwardSeq]) -> Result<Vec<f32>, String> {
        let c = &self.config;
        let mut st = self.state.lock().map_err(|_| "CUDA state poisoned".to_string())?;
        let ml = st.meta_layout;
        let n_tokens: usize = batch.iter().map(|s| s.tokens.len()).sum();
        if batch.is_empty() || n_tokens == 0 {
            return Ok(Vec::new());
        }
        if batch.len() > ml.s || n_tokens > ml.t {
            return Err(format!("batch of {} sequences / {n_tokens} tokens exceeds the CUDA plan ({} / {})", batch.len(), ml.s, ml.t));
        }
        let mut meta = vec![0i32; ml.len()];
        let mut table: Vec<i32> = Vec::new();
        let mut rows: Vec<i32> = Vec::new();
        let (mut tok, mut max_len, mut max_extend) = (0usize, 0usize, 0usize);
        for (i, seq) in batch.iter().enumerate() {
            let len = seq.start_pos + seq.tokens.len();
            if seq.slots.len() != len || len > self.context_length {
                return Err(format!("sequence {i}: {} slots for {len} positions (context {})", seq.slots.len(), self.context_length));
            }
            if let Some(bad) = seq.slots.iter().find(|&&s| s as usize >= self.num_slots) {
                return Err(format!("sequence {i}: slot {bad} outside the GPU pool of {}", self.num_slots));
            }
            if let Some(bad) = seq.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(format!("sequence {i}: token {bad} outside the vocabulary of {}", c.vocab_size));
            }
            meta[ml.slot_offsets() + i] = table.len() as i32;
            meta[ml.seq_lens() + i] = len as i32;
            meta[ml.q_row_offsets() + i] = tok as i32;
            meta[ml.extend_lens() + i] = seq.tokens.len() as i32;
            meta[ml.prefix_lens() + i] = seq.start_pos as i32;
            table.extend(seq.slots.iter().map(|&s| s as i32));
            for (j, &t) in seq.tokens.iter().enumerate() {
                meta[ml.ids() + tok + j] = t as i32;
                meta[ml.positions() + tok + j] = (seq.start_pos + j) as i32;
                meta[ml.out_slots() + tok + j] = seq.slots[seq.start_pos + j] as i32;
            }
            if seq.all_logits {
                rows.extend((tok..tok + seq.tokens.len()).map(|r| r as i32));
            } else {
                rows.push((tok + seq.tokens.len() - 1) as i32);
            }
            tok += seq.tokens.len();
            max_len = max_len.max(len);
            max_extend = max_extend.max(seq.tokens.len());
        }
        meta[ml.logit_rows()..ml.logit_rows() + rows.len()].copy_from_slice(&rows);
        let decode = max_extend == 1;
        let graph_bs = if decode { st.graphs.padded(batch.len()) } else { None };
        if let Some(bs) = graph_bs {
            for i in batch.len()..bs {
                meta[ml.out_slots() + i] = self.num_slots as i32;
                meta[ml.logit_rows() + i] = i as i32;
                meta[ml.q_row_offsets() + i] = i as i32;
                meta[ml.extend_lens() + i] = 1;
            }
        }
        if table.len() > st.bufs.slot_table.len() {
            // Graphs hold the old table's address: drop them along with it.
            st.bufs.slot_table = self.gpu.stream.alloc_zeros::<i32>(table.len() * 2).map_err(err("slot table"))?;
            st.graphs.clear();
        }
        let stream = &self.gpu.stream;
        stream.memcpy_htod(&meta, &mut st.bufs.meta).map_err(err("meta upload"))?;
        stream.memcpy_htod(&table, &mut st.bufs.slot_table).map_err(err("slot table upload"))?;

        let v = c.vocab_size;
        let mut out = vec![0f32; rows.len() * v];
        match graph_bs.and_then(|bs| st.graphs.get(bs)) {
            Some(graph) => {
                graph.launch().map_err(err("graph launch"))?;
                stream.memcpy_dtoh(&st.bufs.logits.slice(0..rows.len() * v), &mut out[..]).map_err(err("logits download"))?;
            }
            None => {
                let mode = if decode {
                    let (splits, partition) = plan::decode_split(max_len, batch.len(), c.num_key_value_heads, self.gpu.info.sm_count, MAX_SPLITS);
                    AttnMode::Decode { splits, partition }
                } else {
                    AttnMode::Prefill { max_extend }
                };
                let cap = LOGIT_ROWS.max(ml.s);
                self.run_body(&st, tok, batch.len(), mode, rows.len().min(cap))?;
                let mut done = 0;
                while done < rows.len() {
                    let count = (rows.len() - done).min(cap);
                    if done > 0 {
                        self.logits_rows(&st, done, count)?;
                    }
                    stream
                        .memcpy_dtoh(&st.bufs.logits.slice(0..count * v), &mut out[done * v..(done + count) * v])
                        .map_err(err("logits download"))?;
                    done += count;
                }
            }
        }
        stream.synchronize().map_err(err("forward"))?;
        Ok(out)
    }

    /// Like `Model::forward` but returns the error instead of panicking.
    pub fn try_forward(&self, batch: &[ForwardSeq]) -> Result<Vec<f32>, String> {
        guarded(|| self.forward_checked(batch)).and_then(|r| r)
    }
}

impl Model for CudaLlama {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The CPU `kv` is not touched: K/V live in the GPU pool (see the module docs).
    fn forward(&self, batch: &[ForwardSeq], _kv: &mut KvCache) -> Vec<f32> {
        // The trait has no error channel; the FFI layer catches this panic and reports it.
        self.try_forward(batch).unwrap_or_else(|e| panic!("CUDA forward failed: {e}"))
    }

    fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }
}
