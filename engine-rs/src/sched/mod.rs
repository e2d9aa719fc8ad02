//! Scheduling: request state (`request`), the continuous-batching scheduler with chunked prefill,
//! prefix-aware admission and retraction (`scheduler`), SGLang-style log lines (`log`).
pub mod log;
pub mod request;
pub mod scheduler;
