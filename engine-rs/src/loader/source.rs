//! Where a model's tensors come from (a checkpoint or the dummy generator), with the optional
//! one-time dtype conversion asked for by `--dtype`.

use super::checkpoint::Checkpoint;
use super::dummy::DummyWeights;
use crate::backend::cpu::matrix::{DType, Matrix};

pub enum WeightSource {
    Checkpoint(Checkpoint),
    Dummy(DummyWeights),
}

impl WeightSource {
    /// A rows x cols weight. With `convert_to = Some(BF16)`, f32/f16 weights become a bf16 copy;
    /// otherwise the stored bytes are used in place.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize, convert_to: Option<DType>) -> Result<Matrix, String> {
        let m = match self {
            WeightSource::Checkpoint(c) => c.matrix(name, &[rows, cols])?,
            WeightSource::Dummy(d) => return Ok(d.matrix(name, rows, cols)),
        };
        Ok(match convert_to {
            Some(DType::BF16) if m.dtype != DType::BF16 => m.to_bf16(),
            _ => m,
        })
    }

    /// A 1-D norm weight, widened to f32 (small; read on every token).
    pub fn norm(&self, name: &str, len: usize) -> Result<Vec<f32>, String> {
        match self {
            WeightSource::Checkpoint(c) => Ok(c.matrix(name, &[len])?.to_f32_vec()),
            WeightSource::Dummy(d) => Ok(d.norm(len)),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            WeightSource::Checkpoint(c) => c.contains(name),
            WeightSource::Dummy(_) => true,
        }
    }
}
