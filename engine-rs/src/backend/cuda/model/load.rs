//! `CudaLlama::load`: open the device, load the weights, allocate the workspaces, size the KV pool
//! from the memory that is left, capture the decode graphs; with SGLang's startup log lines.
use std::sync::Mutex;
use std::time::Instant;

use super::meta::MetaLayout;
use super::options::CudaOptions;
use super::state::{Buffers, State};
use super::weights::{LayerWeights, WeightSource, Weights};
use super::{err, CudaLlama, Layer, LOGIT_ROWS, MAX_SPLITS};
use crate::backend::cuda::device::{guarded, Gpu};
use crate::backend::cuda::gemm::Gemm;
use crate::backend::cuda::graphs::DecodeGraphs;
use crate::backend::cuda::kernels::Kernels;
use crate::backend::cuda::plan::{self, RopeScaling};
use crate::config::ModelConfig;

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
        let w = Weights::load(c, &gpu, &kernels, weights, opts.dummy_seed)?;
        gpu.stream.synchronize().map_err(err("weight load"))?;
        log.push(format!(
            "Load weight end. elapsed={:.2} s, type=LlamaForCausalLM, dtype=torch.bfloat16, mem usage={:.2} GB",
            started.elapsed().as_secs_f64(),
            w.bytes as f64 / (1u64 << 30) as f64
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
        for LayerWeights { ln_in, qkv, o, ln_post, gate_up, down } in w.layers {
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
            embed: w.embed,
            lm_head: w.lm_head,
            final_norm: w.final_norm,
            rope_table,
            layers,
            num_slots,
            context_length: max_pos,
            weight_bytes: w.bytes,
            state: Mutex::new(State { bufs, meta_layout, graphs: DecodeGraphs::new(graph_sizes) }),
            startup_log: log,
        };
        let capture_log = model.capture_graphs()?;
        let mut model = model;
        model.startup_log.extend(capture_log);
        Ok(model)
    }
}
