//! KV storage: for every layer one K and one V table of `num_slots` rows of `kv_dim`
//! (= num_key_value_heads * head_dim) floats. A slot index addresses one token's row in every
//! layer. Which slots belong to whom is decided elsewhere (`pool`, `radix`); this type is plain memory.
//! Tables live on huge pages: attention streams them on every decode step.

use crate::backend::cpu::huge::HugeBuffer;

pub struct KvCache {
    pub num_layers: usize,
    pub num_slots: usize,
    pub kv_dim: usize,
    k: Vec<HugeBuffer>,
    v: Vec<HugeBuffer>,
}

impl KvCache {
    /// Panics only when the OS refuses the memory (as a Vec allocation would abort).
    pub fn new(num_layers: usize, num_slots: usize, kv_dim: usize) -> Self {
        let table = || {
            HugeBuffer::zeroed(num_slots * kv_dim * std::mem::size_of::<f32>())
                .unwrap_or_else(|e| panic!("KV cache allocation failed: {e}"))
        };
        KvCache {
            num_layers,
            num_slots,
            kv_dim,
            k: (0..num_layers).map(|_| table()).collect(),
            v: (0..num_layers).map(|_| table()).collect(),
        }
    }
    /// Bytes one slot occupies across all layers (K and V).
    pub fn bytes_per_slot(num_layers: usize, kv_dim: usize) -> usize {
        num_layers * kv_dim * 2 * std::mem::size_of::<f32>()
    }
    pub fn total_bytes(&self) -> usize {
        Self::bytes_per_slot(self.num_layers, self.kv_dim) * self.num_slots
    }
    /// The K and V tables of one layer (read-only), each `num_slots * kv_dim`.
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (self.k[layer].as_f32(), self.v[layer].as_f32())
    }
    /// The K and V tables of one layer, writable.
    pub fn layer_mut(&mut self, layer: usize) -> (&mut [f32], &mut [f32]) {
        (self.k[layer].as_f32_mut(), self.v[layer].as_f32_mut())
    }
}
