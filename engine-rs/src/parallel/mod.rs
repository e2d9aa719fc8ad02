//! Tensor parallelism (`--tp-size N`): how a model is split (plan), how ranks talk (comm), and the
//! model that drives all ranks from one process (model).

pub mod comm;
pub mod model;
pub mod plan;
