//! `CudaOptions`: what the engine tells `CudaLlama::load` (memory share, batch limits, graphs).

#[derive(Clone, Debug)]
pub struct CudaOptions {
    pub mem_fraction_static: f64,
    pub max_running_requests: usize,
    /// Most tokens one forward carries (max of chunked_prefill_size and max_prefill_tokens).
    pub max_batch_tokens: usize,
    pub context_length: usize,
    /// Slots the scheduler will use; None: as many as the memory budget allows.
    pub num_slots: Option<usize>,
    pub cuda_graph_max_bs: usize,
    pub disable_cuda_graph: bool,
    pub dummy_seed: u64,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            mem_fraction_static: 0.88,
            max_running_requests: 256,
            max_batch_tokens: 8192,
            context_length: 4096,
            num_slots: None,
            cuda_graph_max_bs: 160,
            disable_cuda_graph: false,
            dummy_seed: 0,
        }
    }
}
