//! llm-engine: the Rust half of llm-server. Owns weights, the paged KV pool, the radix prefix
//! cache, the scheduler and the compute kernels; exposes a C ABI (`include/engine.h`) that the
//! Deno server opens with `Deno.dlopen`.

pub mod backend;
pub mod config;
pub mod engine;
pub mod ffi;
pub mod gguf;
pub mod kv;
pub mod loader;
pub mod model;
pub mod parallel;
pub mod runner;
pub mod sample;
pub mod sched;
