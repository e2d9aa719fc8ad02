//! CUDA host-side planning, tested in every build (no GPU, no `cuda` feature needed): the planning
//! file is plain Rust and is compiled here directly, its unit tests included.
#[path = "../src/backend/cuda/plan.rs"]
#[allow(dead_code)]
mod plan;
