//! Rotary position embedding in HF's rotate-half layout: dimension i pairs with i + head_dim/2.

use crate::config::ModelConfig;

pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(config: &ModelConfig) -> Rope {
        Rope { inv_freq: config.rope_inv_freq() }
    }

    /// Rotates every head (`head_dim` floats each) of one token's vector `x` to position `pos`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        let half = head_dim / 2;
        // HF forms the angle as a float32 product, then takes cos/sin of it.
        let (cos, sin): (Vec<f32>, Vec<f32>) = self.inv_freq.iter().map(|&f| {
            let angle = pos as f64 * f as f64;
            (angle.cos() as f32, angle.sin() as f32)
        }).unzip();
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
