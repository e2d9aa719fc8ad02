//! One huge-page arena per loaded model for the row-interleaved weight copies (`interleaved.rs`).
//!
//! Why: a small model's projections are 0.1–0.6 MB each, below the 2 MB a transparent huge page
//! needs, so one mapping per matrix keeps 4 KiB pages; batch-1 decode then streams ~25k pages a
//! token and the TLB misses halve the read rate (measured on SmolLM2 Q4_1, every projection once in
//! decode order: 8.5 ms a sweep with a mapping per matrix, 3.9 ms from one arena). Matrices of one
//! model take consecutive slices of large chunks instead; a chunk is unmapped when the last matrix
//! using it is dropped.

use crate::backend::cpu::huge::HugeBuffer;
use std::sync::{Arc, Mutex};

/// Chunk size: large enough that nearly all of a chunk is 2 MB-page backed.
const CHUNK_BYTES: usize = 64 << 20;
/// Slices start on cache lines.
const ALIGN: usize = 64;

/// Hands out slices of shared huge-page chunks; `Arc` it and give every matrix of a model a clone.
#[derive(Default)]
pub struct PackArena {
    /// The chunk being filled and how many of its bytes are taken.
    current: Mutex<Option<(Arc<Chunk>, usize)>>,
}

struct Chunk {
    buf: HugeBuffer,
    /// `buf`'s start, taken once through `&mut` so slices can be written without aliasing `&` borrows.
    base: *mut u8,
}

// SAFETY: `base` points into `buf`, which lives as long as the chunk; slices never overlap (see `alloc`).
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

impl Chunk {
    fn new(len: usize) -> Result<Arc<Chunk>, String> {
        let mut buf = HugeBuffer::zeroed(len)?;
        let base = buf.bytes_mut().as_mut_ptr();
        Ok(Arc::new(Chunk { buf, base }))
    }
}

/// `len` zeroed bytes owned by one matrix, in a chunk that stays mapped while the slice lives.
pub struct ArenaSlice {
    chunk: Arc<Chunk>,
    offset: usize,
    len: usize,
}

impl ArenaSlice {
    /// A slice in a chunk of its own (no arena: tests, matrices built outside a loader).
    pub fn standalone(len: usize) -> Result<ArenaSlice, String> {
        Ok(ArenaSlice { chunk: Chunk::new(len.max(1))?, offset: 0, len })
    }

    pub fn bytes(&self) -> &[u8] {
        debug_assert!(self.offset + self.len <= self.chunk.buf.len());
        // SAFETY: inside the chunk (checked at allocation); written only through `bytes_mut` of this slice.
        unsafe { std::slice::from_raw_parts(self.chunk.base.add(self.offset), self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: no other slice covers these bytes, and `&mut self` excludes readers of this one.
        unsafe { std::slice::from_raw_parts_mut(self.chunk.base.add(self.offset), self.len) }
    }
}

impl PackArena {
    pub fn new() -> Arc<PackArena> {
        Arc::new(PackArena::default())
    }

    /// A fresh zeroed slice of `len` bytes: the rest of the current chunk when it fits, else a new
    /// chunk (`CHUNK_BYTES`, or exactly `len` when larger).
    pub fn alloc(&self, len: usize) -> Result<ArenaSlice, String> {
        if len > CHUNK_BYTES / 4 {
            return ArenaSlice::standalone(len);
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let fits = matches!(&*current, Some((c, used)) if used + len <= c.buf.len());
        if !fits {
            *current = Some((Chunk::new(CHUNK_BYTES)?, 0));
        }
        let (chunk, used) = current.as_mut().expect("a chunk was just made");
        let slice = ArenaSlice { chunk: chunk.clone(), offset: *used, len };
        *used += len.div_ceil(ALIGN) * ALIGN;
        Ok(slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_disjoint_aligned_and_zeroed() {
        let arena = PackArena::new();
        let mut a = arena.alloc(100).unwrap();
        let mut b = arena.alloc(4096).unwrap();
        assert!(a.bytes().iter().chain(b.bytes()).all(|&x| x == 0));
        a.bytes_mut().fill(1);
        b.bytes_mut().fill(2);
        assert!(a.bytes().iter().all(|&x| x == 1) && b.bytes().iter().all(|&x| x == 2));
        assert_eq!(b.bytes().as_ptr() as usize % ALIGN, 0);
        assert!(Arc::ptr_eq(&a.chunk, &b.chunk), "small slices share a chunk");
        let big = arena.alloc(CHUNK_BYTES / 2).unwrap();
        assert_eq!(big.bytes().len(), CHUNK_BYTES / 2);
        assert!(!Arc::ptr_eq(&big.chunk, &a.chunk), "a large slice gets a chunk of its own");
    }
}
