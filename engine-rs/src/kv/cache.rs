//! KV storage: for every layer one K and one V table of `num_slots` rows of `kv_dim`
//! (= num_key_value_heads * head_dim) floats. A slot index addresses one token's row in every
//! layer. Which slots belong to whom is decided elsewhere (`pool`, `radix`); this type is plain memory.

pub struct KvCache {
    pub num_layers: usize,
    pub num_slots: usize,
    pub kv_dim: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(num_layers: usize, num_slots: usize, kv_dim: usize) -> Self {
        KvCache {
            num_layers,
            num_slots,
            kv_dim,
            k: (0..num_layers).map(|_| vec![0.0; num_slots * kv_dim]).collect(),
            v: (0..num_layers).map(|_| vec![0.0; num_slots * kv_dim]).collect(),
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
        (&self.k[layer], &self.v[layer])
    }
    /// The K and V tables of one layer, writable.
    pub fn layer_mut(&mut self, layer: usize) -> (&mut [f32], &mut [f32]) {
        (&mut self.k[layer], &mut self.v[layer])
    }
}
