//! Rotary position embedding in HF's rotate-half layout: dimension i pairs with i + head_dim/2.

use crate::config::ModelConfig;

#[derive(Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(config: &ModelConfig) -> Rope {
        // HF transformers keeps inv_freq in a float buffer that is cast with the model: a checkpoint
        // whose torch_dtype is bfloat16 runs with bf16-rounded frequencies even when upcast to
        // float32 afterwards. The goldens come from that path, so we reproduce it (the change is
        // well inside bf16 noise, and exact f32 checkpoints keep exact frequencies).
        let round_to_bf16 = config.torch_dtype == "bfloat16";
        let inv_freq = config
            .rope_inv_freq()
            .into_iter()
            .map(|f| if round_to_bf16 { half::bf16::from_f32(f).to_f32() } else { f })
            .collect();
        Rope { inv_freq }
    }

    /// A RoPE with given per-pair frequencies (GGUF Llama 3 files carry them as `rope_freqs.weight` divisors).
    pub fn from_inv_freq(inv_freq: Vec<f32>) -> Rope {
        Rope { inv_freq }
    }

    /// Rotates every head (`head_dim` floats each) of one token's vector `x` to position `pos`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        let mut cos_sin = vec![0.0; 2 * self.inv_freq.len()];
        self.cos_sin(pos, &mut cos_sin);
        Rope::rotate(x, head_dim, &cos_sin);
    }

    /// Floats `cos_sin` writes: a cos and a sin per rotated pair.
    pub fn cos_sin_len(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// cos (first half) and sin (second half) of every pair's angle at `pos`: computed once per token
    /// and reused by every layer's q and k.
    pub fn cos_sin(&self, pos: usize, out: &mut [f32]) {
        let half = self.inv_freq.len();
        // HF forms the angle as a float32 product, then takes cos/sin of it.
        for (i, &f) in self.inv_freq.iter().enumerate() {
            let angle = pos as f64 * f as f64;
            out[i] = angle.cos() as f32;
            out[half + i] = angle.sin() as f32;
        }
    }

    /// Rotates every head of `x` by the angles `cos_sin` (from `cos_sin`) holds.
    pub fn rotate(x: &mut [f32], head_dim: usize, cos_sin: &[f32]) {
        let half = head_dim / 2;
        let (cos, sin) = cos_sin.split_at(cos_sin.len() / 2);
        for head in x.chunks_exact_mut(head_dim) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos[i] - x2 * sin[i];
                b[i] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}
