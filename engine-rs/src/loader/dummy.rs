//! `load_format dummy`: deterministic random weights of the config's shapes, made without
//! touching weight files (benchmarks of models we only have a config for). Small uniform values
//! (std 0.02, like HF's initializer_range) keep activations and logits finite.

use crate::backend::cpu::huge::HugeBuffer;
use crate::backend::cpu::matrix::{DType, Matrix, Storage};
use rayon::prelude::*;

pub struct DummyWeights {
    pub seed: u64,
    pub dtype: DType,
}

const STD: f32 = 0.02;
/// Rows generated per independent RNG stream, so the result does not depend on thread count.
const ROWS_PER_STREAM: usize = 64;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3))
}

impl DummyWeights {
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Matrix {
        let es = self.dtype.size();
        let mut buffer = HugeBuffer::zeroed(rows * cols * es).unwrap_or_else(|e| panic!("dummy weight {name}: {e}"));
        let bytes = buffer.bytes_mut();
        let base = splitmix(self.seed ^ name_hash(name));
        let half_width = STD * 3f32.sqrt();
        let dtype = self.dtype;
        bytes.par_chunks_mut(ROWS_PER_STREAM * cols * es).enumerate().for_each(|(chunk, out)| {
            let mut s = splitmix(base.wrapping_add(chunk as u64)) | 1;
            // One xorshift step feeds four elements (16 random bits each is plenty for weights).
            for group in out.chunks_mut(4 * es) {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                for (j, e) in group.chunks_exact_mut(es).enumerate() {
                    let u = ((s >> (16 * j)) & 0xFFFF) as f32 * (1.0 / 65536.0);
                    let v = (2.0 * u - 1.0) * half_width;
                    match dtype {
                        DType::F32 => e.copy_from_slice(&v.to_le_bytes()),
                        // Truncation is fine here: these are random numbers, not data to preserve.
                        DType::BF16 => e.copy_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes()),
                        DType::F16 => e.copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes()),
                    }
                }
            }
        });
        Matrix::new(dtype, rows, cols, Storage::Huge(buffer)).expect("dummy matrix size is consistent")
    }

    /// Norm weights are ones, as a freshly initialised model has them.
    pub fn norm(&self, len: usize) -> Vec<f32> {
        vec![1.0; len]
    }
}
