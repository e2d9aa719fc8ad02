//! KV memory: the storage (`cache`), the slot/page allocator (`pool`) and the radix prefix cache (`radix`).
pub mod cache;
pub mod pool;
pub mod radix;
