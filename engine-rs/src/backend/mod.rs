//! Compute backends. `cpu` always; `cuda` when built with the feature and a GPU is present.
pub mod cpu;
#[cfg(feature = "cuda")] pub mod cuda;
