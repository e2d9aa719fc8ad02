//! CUDA graphs for decode: one captured forward per padded batch size (plan::graph_batch_sizes).
//! A replay skips ~10 launches per layer of CPU overhead, which dominates small-batch decode.
//! Graphs bake in buffer addresses and the split-K shape; the model re-uploads metadata into the
//! same buffers before each replay and drops the graphs if a buffer has to move.
use std::collections::HashMap;

use cudarc::driver::{sys, CudaGraph};

use super::device::Gpu;
use super::model::AttnMode;
use super::plan;

pub(crate) struct DecodeGraphs {
    sizes: Vec<usize>,
    graphs: HashMap<usize, (CudaGraph, AttnMode)>,
}

impl DecodeGraphs {
    pub fn new(sizes: Vec<usize>) -> Self {
        DecodeGraphs { sizes, graphs: HashMap::new() }
    }

    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The captured size a batch of `n` decode sequences replays in, if any graph covers it.
    pub fn padded(&self, n: usize) -> Option<usize> {
        plan::padded_graph_batch(n, &self.sizes).filter(|bs| self.graphs.contains_key(bs))
    }

    pub fn insert(&mut self, bs: usize, graph: CudaGraph, mode: AttnMode) {
        self.graphs.insert(bs, (graph, mode));
    }

    pub fn get(&self, bs: usize) -> Option<&CudaGraph> {
        self.graphs.get(&bs).map(|(g, _)| g)
    }

    /// After a buffer moved: fall back to eager launches (correct, slower).
    pub fn clear(&mut self) {
        self.graphs.clear();
    }
}

/// Records everything `body` launches on the model's stream into a graph (not executed).
pub(crate) fn capture(gpu: &Gpu, body: impl FnOnce() -> Result<(), String>) -> Result<CudaGraph, String> {
    gpu.stream
        .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .map_err(|e| format!("begin graph capture: {e:?}"))?;
    let body_result = body();
    // End the capture even when the body failed, or the stream stays unusable.
    let graph = gpu.stream.end_capture(sys::CUgraphInstantiate_flags(0));
    body_result?;
    let graph = graph.map_err(|e| format!("end graph capture: {e:?}"))?.ok_or("graph capture recorded nothing")?;
    graph.upload().map_err(|e| format!("graph upload: {e:?}"))?;
    Ok(graph)
}
