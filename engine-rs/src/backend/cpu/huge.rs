//! Large zeroed buffers backed by transparent huge pages where the kernel allows it.
//! Weights and the KV cache are streamed from memory on every decode step; with 4 KiB pages the
//! TLB misses cost a third of the read bandwidth on the VMs we run on (a 512 MiB read probe:
//! ~5 GB/s with 4 KiB pages, ~7.5 GB/s with 2 MiB pages, same machine, same minute).

use memmap2::{MmapMut, MmapOptions};

/// A zero-initialised, page-aligned byte buffer. Falls back to a plain mapping when huge pages
/// are unavailable (the advice is only a hint).
pub struct HugeBuffer {
    map: Option<MmapMut>,
    len: usize,
}

impl HugeBuffer {
    pub fn zeroed(len: usize) -> Result<HugeBuffer, String> {
        if len == 0 {
            return Ok(HugeBuffer { map: None, len: 0 });
        }
        let map = MmapOptions::new().len(len).map_anon().map_err(|e| format!("cannot map {len} bytes: {e}"))?;
        #[cfg(target_os = "linux")]
        {
            // Best effort: a kernel with THP disabled simply keeps 4 KiB pages.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        Ok(HugeBuffer { map: Some(map), len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
    }

    /// The buffer as f32 values (mappings are page-aligned, so the cast is aligned).
    pub fn as_f32(&self) -> &[f32] {
        let b = self.bytes();
        unsafe { std::slice::from_raw_parts(b.as_ptr() as *const f32, b.len() / 4) }
    }

    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        let b = self.bytes_mut();
        unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut f32, b.len() / 4) }
    }

    pub fn as_u16(&self) -> &[u16] {
        let b = self.bytes();
        unsafe { std::slice::from_raw_parts(b.as_ptr() as *const u16, b.len() / 2) }
    }

    pub fn as_u16_mut(&mut self) -> &mut [u16] {
        let b = self.bytes_mut();
        unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut u16, b.len() / 2) }
    }

    pub fn as_u64_mut(&mut self) -> &mut [u64] {
        let b = self.bytes_mut();
        // SAFETY: the mapping is page-aligned, so u64-aligned; whole words only.
        unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut u64, b.len() / 8) }
    }
}
