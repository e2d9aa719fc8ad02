//! What every forward works in, behind `CudaLlama`'s lock: device buffers at fixed addresses,
//! the metadata layout, the captured decode graphs; and how attention runs for one forward.
use cudarc::driver::CudaSlice;

use super::meta::MetaLayout;
use crate::backend::cuda::graphs::DecodeGraphs;

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
    /// Per-token and per-sequence metadata, one upload per step (layout in `MetaLayout`).
    pub meta: CudaSlice<i32>,
    pub slot_table: CudaSlice<i32>,
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
