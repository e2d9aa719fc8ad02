//! The model's bf16 weights on the GPU: uploaded from a `WeightSource`, or, with none, dummy
//! weights generated on the device from a seed.
use cudarc::driver::CudaSlice;

use super::{err, ptr};
use crate::backend::cuda::device::Gpu;
use crate::backend::cuda::kernels::{Arg, Kernels};
use crate::backend::cuda::plan;
use crate::config::ModelConfig;

/// Where bf16 weights come from (the loader implements it; None = dummy weights made on the GPU).
pub trait WeightSource {
    /// Tensor `name` (HF naming) as bf16 bits, row-major, of exactly `shape`.
    fn bf16(&self, name: &str, shape: &[usize]) -> Result<Vec<u16>, String>;
}

/// One decoder layer's weights; Q/K/V and gate/up are stacked row-wise into one GEMM each.
pub(super) struct LayerWeights {
    pub ln_in: CudaSlice<u16>,
    pub qkv: CudaSlice<u16>,
    pub o: CudaSlice<u16>,
    pub ln_post: CudaSlice<u16>,
    pub gate_up: CudaSlice<u16>,
    pub down: CudaSlice<u16>,
}

pub(super) struct Weights {
    pub embed: CudaSlice<u16>,
    /// None: tied to `embed`.
    pub lm_head: Option<CudaSlice<u16>>,
    pub final_norm: CudaSlice<u16>,
    pub layers: Vec<LayerWeights>,
    /// bf16 bytes of all of the above.
    pub bytes: usize,
}

impl Weights {
    /// Every tensor of `c`, from `weights` or (None) generated from `seed`. Launches may still be
    /// running on return: the caller synchronises.
    pub fn load(
        c: &ModelConfig,
        gpu: &Gpu,
        kernels: &Kernels,
        weights: Option<&dyn WeightSource>,
        seed: u64,
    ) -> Result<Weights, String> {
        let (h, inter, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let mut weight_bytes = 0usize;
        let mut seed = seed;
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
                            &[Arg::Ptr(ptr(&dev, gpu)), Arg::U64(n as u64), Arg::U64(seed), Arg::F32(scale)],
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
        let mut layers = Vec::new();
        for l in 0..c.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let (q, k, vv) = (p("self_attn.q_proj.weight"), p("self_attn.k_proj.weight"), p("self_attn.v_proj.weight"));
            let (g, u) = (p("mlp.gate_proj.weight"), p("mlp.up_proj.weight"));
            // Field order is upload order (and, for dummy weights, seed order).
            layers.push(LayerWeights {
                ln_in: tensor(&[(&p("input_layernorm.weight"), h)], 1, None)?,
                qkv: tensor(&[(&q, nh * hd), (&k, nkv * hd), (&vv, nkv * hd)], h, mat_scale(h))?,
                o: tensor(&[(&p("self_attn.o_proj.weight"), h)], nh * hd, mat_scale(nh * hd))?,
                ln_post: tensor(&[(&p("post_attention_layernorm.weight"), h)], 1, None)?,
                gate_up: tensor(&[(&g, inter), (&u, inter)], h, mat_scale(h))?,
                down: tensor(&[(&p("mlp.down_proj.weight"), h)], inter, mat_scale(inter))?,
            });
        }
        Ok(Weights { embed, lm_head, final_norm, layers, bytes: weight_bytes })
    }
}
