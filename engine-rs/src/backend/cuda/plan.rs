//! Host-side planning for the CUDA backend: KV memory budget, CUDA-graph batch sizes, kernel launch
//! shapes, the RoPE table (llama3 scaling included) and the sampling uniforms.
//!
//! Plain Rust with no CUDA types and no `crate::` paths, so the default (CPU-only) build tests it:
//! `tests/cuda_plan.rs` includes this file with `#[path]`, and the cuda module uses it on the GPU.

/// What `probe_cuda` learnt about the GPU the engine would use.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_memory_bytes: usize,
    pub free_memory_bytes: usize,
    pub sm_count: usize,
}

/// The kernels index dims per lane up to 8 (head_dim <= 256) and hold up to 8 query heads per KV
/// head in registers (attention_decode.cu MAX_GROUP).
pub const MAX_HEAD_DIM: usize = 256;
pub const MAX_GQA_GROUP: usize = 8;
/// Architectures the build embeds (build.rs GENCODE); older GPUs are refused by the probe.
pub const MIN_COMPUTE_CAPABILITY: (i32, i32) = (8, 0);

/// Rejects model shapes the kernels cannot run, with the reason.
pub fn check_model_shape(num_heads: usize, num_kv_heads: usize, head_dim: usize) -> Result<(), String> {
    if num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
        return Err(format!("num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}"));
    }
    if num_heads / num_kv_heads > MAX_GQA_GROUP {
        return Err(format!("GQA group {} exceeds the CUDA kernels' limit {MAX_GQA_GROUP}", num_heads / num_kv_heads));
    }
    if head_dim == 0 || !head_dim.is_multiple_of(2) || head_dim > MAX_HEAD_DIM {
        return Err(format!("head_dim {head_dim} must be even and at most {MAX_HEAD_DIM} for the CUDA kernels"));
    }
    Ok(())
}

/// Bytes one KV slot takes in the GPU pool (bf16 K and V, every layer).
pub fn kv_bytes_per_slot(num_layers: usize, kv_dim: usize) -> usize {
    num_layers * kv_dim * 2 * 2
}

/// How many KV slots fit, SGLang style: the static budget is `total * mem_fraction_static`; what
/// is already used (weights, context, other processes: `total - free`) and the activation reserve
/// come out of it, the rest is KV. Errors say which number is short.
pub fn plan_kv_slots(
    total_bytes: usize,
    free_bytes: usize,
    mem_fraction_static: f64,
    bytes_per_slot: usize,
    activation_reserve_bytes: usize,
) -> Result<usize, String> {
    if !(mem_fraction_static > 0.0 && mem_fraction_static <= 1.0) {
        return Err(format!("mem_fraction_static {mem_fraction_static} must be in (0, 1]"));
    }
    if bytes_per_slot == 0 || free_bytes > total_bytes {
        return Err(format!("inconsistent memory numbers: free {free_bytes} of {total_bytes}, {bytes_per_slot} B/slot"));
    }
    let budget = (total_bytes as f64 * mem_fraction_static) as usize;
    let used = total_bytes - free_bytes;
    let kv = budget.checked_sub(used + activation_reserve_bytes).ok_or_else(|| {
        format!(
            "not enough GPU memory for the KV cache: static budget {:.2} GiB (mem_fraction_static {mem_fraction_static}) \
             minus {:.2} GiB in use and {:.2} GiB activations leaves nothing; raise --mem-fraction-static",
            gib(budget),
            gib(used),
            gib(activation_reserve_bytes)
        )
    })?;
    let slots = kv / bytes_per_slot;
    if slots == 0 {
        return Err(format!("KV budget {kv} B holds no slot of {bytes_per_slot} B"));
    }
    Ok(slots)
}

/// The shapes that size one forward pass's activations.
#[derive(Clone, Copy, Debug)]
pub struct ActivationShape {
    pub max_batch_tokens: usize,
    pub max_running: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub qkv_dim: usize,
    pub vocab: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    pub max_splits: usize,
}

/// Activation and workspace memory one forward pass may need (bf16 activations, f32 logits,
/// decode split-K workspace), with 25% headroom for cuBLAS workspaces and fragmentation.
pub fn activation_reserve_bytes(a: &ActivationShape) -> usize {
    let per_token_bf16 = a.hidden * 3 + a.qkv_dim + a.intermediate * 3 + a.num_heads * a.head_dim;
    let activations = a.max_batch_tokens * per_token_bf16 * 2;
    let logits = a.max_running.max(1) * a.vocab * 4;
    let split_k = a.max_running * a.num_heads * a.max_splits * (a.head_dim + 2) * 4;
    (activations + logits + split_k) * 5 / 4 + (64 << 20)
}

/// Decode batch sizes to capture as CUDA graphs: 1, 2, 4, 8, then every 8 up to the cap, the cap
/// itself always included (SGLang's scheme). Empty when graphs are off.
pub fn graph_batch_sizes(cuda_graph_max_bs: usize, max_running_requests: usize, disabled: bool) -> Vec<usize> {
    let cap = cuda_graph_max_bs.min(max_running_requests);
    if disabled || cap == 0 {
        return Vec::new();
    }
    let mut sizes: Vec<usize> = [1, 2, 4].into_iter().chain((1..).map(|i| i * 8).take_while(|&b| b <= cap)).filter(|&b| b <= cap).collect();
    if sizes.last() != Some(&cap) {
        sizes.push(cap);
    }
    sizes
}

/// The captured size a decode batch of `batch` runs in (padded up), or None: run it eagerly.
pub fn padded_graph_batch(batch: usize, sizes: &[usize]) -> Option<usize> {
    sizes.iter().copied().find(|&b| b >= batch && batch > 0)
}

/// Split-K shape for decode attention: (num_splits, partition). Splits only as far as needed to
/// give every SM about two blocks, and never into partitions below 256 keys (the merge would cost
/// more than it hides). `max_splits` bounds the workspace.
pub fn decode_split(max_seq_len: usize, batch: usize, num_kv_heads: usize, sm_count: usize, max_splits: usize) -> (usize, usize) {
    const MIN_PARTITION: usize = 256;
    let len = max_seq_len.max(1);
    let blocks = (batch * num_kv_heads).max(1);
    let wanted = (2 * sm_count.max(1)).div_ceil(blocks);
    let by_length = len.div_ceil(MIN_PARTITION);
    let splits = wanted.min(by_length).clamp(1, max_splits.max(1));
    let partition = len.div_ceil(splits);
    (len.div_ceil(partition), partition)
}

/// A kernel launch: grid, block, dynamic shared memory bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

pub const PREFILL_WARPS: usize = 8;
pub const PREFILL_KEY_TILE: usize = 32;

/// attention_prefill.cu: q_s[8][hd] f32 + K and V tiles [32][hd+2] bf16.
pub fn prefill_smem_bytes(head_dim: usize) -> usize {
    PREFILL_WARPS * head_dim * 4 + 2 * PREFILL_KEY_TILE * (head_dim + 2) * 2
}

pub fn prefill_launch(n_seqs: usize, num_heads: usize, max_extend: usize, head_dim: usize) -> Launch {
    Launch {
        grid: (n_seqs as u32, num_heads as u32, max_extend.div_ceil(PREFILL_WARPS).max(1) as u32),
        block: (256, 1, 1),
        shared_bytes: prefill_smem_bytes(head_dim) as u32,
    }
}

pub fn decode_launch(n_seqs: usize, num_kv_heads: usize, num_splits: usize) -> Launch {
    Launch { grid: (n_seqs as u32, num_kv_heads as u32, num_splits as u32), block: (128, 1, 1), shared_bytes: 0 }
}

/// One block per row (embedding, rmsnorm, rope_kv_write, sampling).
pub fn per_row_launch(rows: usize, threads: u32) -> Launch {
    Launch { grid: (rows as u32, 1, 1), block: (threads, 1, 1), shared_bytes: 0 }
}

/// Grid-stride elementwise kernels (silu_and_mul): enough blocks to fill the GPU, capped.
pub fn elementwise_launch(elements: usize) -> Launch {
    let blocks = elements.div_ceil(256).clamp(1, 65535 * 8);
    Launch { grid: (blocks as u32, 1, 1), block: (256, 1, 1), shared_bytes: 0 }
}

/// RoPE scaling read from config.json's `rope_scaling`.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama 3.x: long wavelengths divided by `factor`, short ones kept, smooth blend between.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position: f64 },
}

impl RopeScaling {
    pub fn from_config(config: &serde_json::Value) -> Result<Self, String> {
        let scaling = match config.get("rope_scaling") {
            None | Some(serde_json::Value::Null) => return Ok(RopeScaling::None),
            Some(s) => s,
        };
        let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
        let num = |key: &str| {
            scaling.get(key).and_then(|v| v.as_f64()).ok_or_else(|| format!("rope_scaling.{key} missing or not a number"))
        };
        match kind {
            "default" => Ok(RopeScaling::None),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position: num("original_max_position_embeddings")?,
            }),
            other => Err(format!("rope_scaling type {other:?} is not supported by the CUDA backend")),
        }
    }
}

/// Inverse frequencies, HF's `_compute_llama3_parameters` when scaled.
pub fn rope_inv_freq(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Vec<f64> {
    let half = head_dim / 2;
    (0..half)
        .map(|i| {
            let f = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
            match *scaling {
                RopeScaling::None => f,
                RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
                    let low_wavelen = original_max_position / low_freq_factor;
                    let high_wavelen = original_max_position / high_freq_factor;
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (original_max_position / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                }
            }
        })
        .collect()
}

/// The table rope_kv.cu reads: row p = [cos(p*f_0..f_{h-1}) | sin(p*f_0..f_{h-1})], f64 then f32.
pub fn rope_cos_sin_table(max_positions: usize, head_dim: usize, inv_freq: &[f64]) -> Vec<f32> {
    let half = head_dim / 2;
    let mut table = vec![0f32; max_positions * head_dim];
    for (p, row) in table.chunks_exact_mut(head_dim).enumerate() {
        for (i, f) in inv_freq.iter().enumerate().take(half) {
            let angle = p as f64 * f;
            row[i] = angle.cos() as f32;
            row[half + i] = angle.sin() as f32;
        }
    }
    table
}

/// Uniform in [0, 1) for a sequence's `step`-th draw: splitmix64 of (seed, step), so a seeded
/// request samples the same tokens whatever batch it shares.
pub fn sampling_uniform(seed: u64, step: u64) -> f32 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // 24 random bits: exactly representable, strictly below 1.
    (z >> 40) as f32 / (1u64 << 24) as f32
}

fn gib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_slots_follow_the_static_fraction() {
        let gib = 1usize << 30;
        // 80 GiB card, 16 GiB used by weights: 0.88*80 - 16 - 2 = 52.4 GiB of KV.
        let per_slot = kv_bytes_per_slot(32, 1024); // Llama-3.1-8B: 128 KiB per token
        assert_eq!(per_slot, 131072);
        let slots = plan_kv_slots(80 * gib, 64 * gib, 0.88, per_slot, 2 * gib).unwrap();
        let expected = (80.0 * 0.88 * gib as f64) as usize - 18 * gib;
        assert_eq!(slots, expected / per_slot);
        assert!(plan_kv_slots(80 * gib, 64 * gib, 0.5, per_slot, 2 * gib).unwrap() < slots);
    }

    #[test]
    fn kv_plan_errors_are_clear() {
        let gib = 1usize << 30;
        let err = plan_kv_slots(80 * gib, 10 * gib, 0.5, 131072, gib).unwrap_err();
        assert!(err.contains("mem-fraction-static"), "{err}");
        assert!(plan_kv_slots(80 * gib, 60 * gib, 0.0, 131072, gib).is_err());
        assert!(plan_kv_slots(80 * gib, 60 * gib, 1.5, 131072, gib).is_err());
        assert!(plan_kv_slots(10, 20, 0.9, 1, 0).is_err());
        assert!(plan_kv_slots(80 * gib, 60 * gib, 0.9, 0, 0).is_err());
    }

    #[test]
    fn activation_reserve_grows_with_batch_and_vocab() {
        let base = ActivationShape {
            max_batch_tokens: 2048,
            max_running: 8,
            hidden: 4096,
            intermediate: 14336,
            qkv_dim: 6144,
            vocab: 128256,
            num_heads: 32,
            head_dim: 128,
            max_splits: 16,
        };
        let small = activation_reserve_bytes(&base);
        let big = activation_reserve_bytes(&ActivationShape { max_batch_tokens: 8192, ..base });
        assert!(big > small && small > 64 << 20);
        assert!(activation_reserve_bytes(&ActivationShape { vocab: 256000, ..base }) > small);
    }

    #[test]
    fn graph_sizes_cover_every_batch_up_to_the_cap() {
        assert_eq!(graph_batch_sizes(32, 1000, false), vec![1, 2, 4, 8, 16, 24, 32]);
        assert_eq!(graph_batch_sizes(20, 1000, false), vec![1, 2, 4, 8, 16, 20]);
        assert_eq!(graph_batch_sizes(3, 1000, false), vec![1, 2, 3]);
        assert_eq!(graph_batch_sizes(160, 6, false), vec![1, 2, 4, 6]);
        assert!(graph_batch_sizes(160, 100, true).is_empty());
        let sizes = graph_batch_sizes(160, 1000, false);
        for bs in 1..=160 {
            let padded = padded_graph_batch(bs, &sizes).unwrap();
            assert!(padded >= bs && padded - bs < 8, "bs {bs} -> {padded}");
        }
        assert_eq!(padded_graph_batch(161, &sizes), None);
        assert_eq!(padded_graph_batch(0, &sizes), None);
    }

    #[test]
    fn decode_split_covers_the_sequence_exactly() {
        for &(len, batch) in &[(1usize, 1usize), (255, 1), (4096, 1), (131072, 1), (4096, 64), (100_000, 3)] {
            let (splits, partition) = decode_split(len, batch, 8, 132, 64);
            assert!((1..=64).contains(&splits));
            assert!(splits * partition >= len, "len {len}: {splits} x {partition}");
            assert!((splits - 1) * partition < len, "len {len}: an empty split");
        }
        assert_eq!(decode_split(200, 1, 8, 132, 64).0, 1, "short contexts do not split");
        assert!(decode_split(32768, 1, 8, 132, 64).0 > 1, "long single-sequence decode splits");
        assert_eq!(decode_split(32768, 256, 8, 132, 64).0, 1, "a full GPU does not split");
    }

    #[test]
    fn launch_shapes_match_the_kernels() {
        let l = prefill_launch(3, 32, 17, 128);
        assert_eq!(l.grid, (3, 32, 3));
        assert_eq!(l.shared_bytes as usize, 8 * 128 * 4 + 2 * 32 * 130 * 2);
        assert!(prefill_smem_bytes(MAX_HEAD_DIM) <= 48 * 1024, "fits without opting into large smem");
        assert_eq!(decode_launch(5, 8, 4).grid, (5, 8, 4));
        assert_eq!(elementwise_launch(1).grid.0, 1);
        assert_eq!(elementwise_launch(1_000_000_000).grid.0, 65535 * 8);
        assert_eq!(elementwise_launch(1000).grid.0, 4);
    }

    #[test]
    fn model_shapes_outside_the_kernels_are_refused() {
        assert!(check_model_shape(32, 8, 128).is_ok());
        assert!(check_model_shape(8, 4, 8).is_ok()); // stories260K
        assert!(check_model_shape(32, 3, 128).is_err());
        assert!(check_model_shape(64, 4, 128).is_err());
        assert!(check_model_shape(32, 8, 512).is_err());
        assert!(check_model_shape(32, 8, 7).is_err());
        assert!(check_model_shape(32, 0, 128).is_err());
    }

    #[test]
    fn llama3_rope_matches_the_reference_formula() {
        let cfg: serde_json::Value = serde_json::json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}});
        let scaling = RopeScaling::from_config(&cfg).unwrap();
        let plain = rope_inv_freq(128, 500000.0, &RopeScaling::None);
        let scaled = rope_inv_freq(128, 500000.0, &scaling);
        // High frequencies (short wavelengths) untouched, the lowest divided by the factor.
        assert_eq!(scaled[0], plain[0]);
        assert!((scaled[63] - plain[63] / 8.0).abs() < 1e-18);
        // In between: strictly between the two bounds.
        let mid = (0..64).find(|&i| {
            let w = 2.0 * std::f64::consts::PI / plain[i];
            (2048.0..8192.0).contains(&w) && w > 2048.0
        });
        let i = mid.expect("a smoothed band exists");
        assert!(scaled[i] < plain[i] && scaled[i] > plain[i] / 8.0);
        assert_eq!(RopeScaling::from_config(&serde_json::json!({})).unwrap(), RopeScaling::None);
        assert!(RopeScaling::from_config(&serde_json::json!({"rope_scaling": {"rope_type": "yarn"}})).is_err());
        assert!(RopeScaling::from_config(&serde_json::json!({"rope_scaling": {"rope_type": "llama3"}})).is_err());
    }

    #[test]
    fn rope_table_rows_are_cos_then_sin() {
        let f = rope_inv_freq(8, 10000.0, &RopeScaling::None);
        let t = rope_cos_sin_table(5, 8, &f);
        assert_eq!(t.len(), 40);
        assert_eq!(&t[0..4], &[1.0; 4]);
        assert_eq!(&t[4..8], &[0.0; 4]);
        let (p, i) = (3usize, 1usize);
        assert!((t[p * 8 + i] - (p as f64 * f[i]).cos() as f32).abs() < 1e-7);
        assert!((t[p * 8 + 4 + i] - (p as f64 * f[i]).sin() as f32).abs() < 1e-7);
    }

    #[test]
    fn sampling_uniforms_are_seeded_and_spread() {
        assert_eq!(sampling_uniform(42, 7), sampling_uniform(42, 7));
        assert_ne!(sampling_uniform(42, 7), sampling_uniform(42, 8));
        assert_ne!(sampling_uniform(42, 7), sampling_uniform(43, 7));
        let draws: Vec<f32> = (0..10000).map(|s| sampling_uniform(1, s)).collect();
        assert!(draws.iter().all(|&u| (0.0..1.0).contains(&u)));
        let mean = draws.iter().sum::<f32>() / draws.len() as f32;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        let low = draws.iter().filter(|&&u| u < 0.1).count();
        assert!((800..1200).contains(&low), "{low} draws below 0.1");
    }
}
