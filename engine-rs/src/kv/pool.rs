//! Page allocator over the KV slots.
//!
//! Contract: the slots `0..num_pages * page_size` are cut into pages of `page_size` consecutive
//! slots. Every page carries a reference count: 0 means it sits in the free list; every holder
//! (a request's page table, a radix-tree node) owns exactly one reference. A page goes back to
//! the free list when its last reference is released, so it is never leaked while referenced and
//! never handed out twice. Releasing a page with no reference is a bug the pool reports (no
//! silent double free).

pub struct KvPool {
    page_size: usize,
    refcounts: Vec<u32>,
    free_pages: Vec<u32>,
}

impl KvPool {
    /// A pool over `num_slots` slots (rounded down to whole pages).
    pub fn new(num_slots: usize, page_size: usize) -> Self {
        assert!(page_size > 0, "page_size must be positive");
        let num_pages = num_slots / page_size;
        // Handing out low pages first keeps early slots hot; pop() takes from the end.
        let free_pages = (0..num_pages as u32).rev().collect();
        KvPool { page_size, refcounts: vec![0; num_pages], free_pages }
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }
    pub fn num_pages(&self) -> usize {
        self.refcounts.len()
    }
    pub fn total_slots(&self) -> usize {
        self.num_pages() * self.page_size
    }
    pub fn free_page_count(&self) -> usize {
        self.free_pages.len()
    }
    pub fn free_slots(&self) -> usize {
        self.free_pages.len() * self.page_size
    }
    pub fn used_slots(&self) -> usize {
        self.total_slots() - self.free_slots()
    }
    pub fn refcount(&self, page: u32) -> u32 {
        self.refcounts[page as usize]
    }

    /// Takes one free page (refcount becomes 1), or None when the pool is exhausted.
    pub fn alloc(&mut self) -> Option<u32> {
        let page = self.free_pages.pop()?;
        debug_assert_eq!(self.refcounts[page as usize], 0);
        self.refcounts[page as usize] = 1;
        Some(page)
    }

    /// Adds a holder to a page that is already allocated.
    pub fn retain(&mut self, page: u32) {
        let rc = &mut self.refcounts[page as usize];
        assert!(*rc > 0, "retain of free page {page}");
        *rc += 1;
    }

    /// Drops one holder; the page returns to the free list with its last holder.
    pub fn release(&mut self, page: u32) {
        let rc = &mut self.refcounts[page as usize];
        assert!(*rc > 0, "double free of page {page}");
        *rc -= 1;
        if *rc == 0 {
            self.free_pages.push(page);
        }
    }

    /// First slot of a page.
    pub fn page_start(&self, page: u32) -> u32 {
        page * self.page_size as u32
    }

    /// Free list and refcounts agree: every free-listed page has refcount 0, appears once, and
    /// every page with refcount 0 is free-listed.
    pub fn check_integrity(&self) -> Result<(), String> {
        let mut seen = vec![false; self.num_pages()];
        for &p in &self.free_pages {
            let i = p as usize;
            if i >= seen.len() {
                return Err(format!("free list holds out-of-range page {p}"));
            }
            if seen[i] {
                return Err(format!("page {p} is in the free list twice"));
            }
            seen[i] = true;
            if self.refcounts[i] != 0 {
                return Err(format!("free page {p} has refcount {}", self.refcounts[i]));
            }
        }
        for (i, &rc) in self.refcounts.iter().enumerate() {
            if rc == 0 && !seen[i] {
                return Err(format!("page {i} has refcount 0 but is not free (leaked)"));
            }
        }
        Ok(())
    }
}

/// One request's map from token positions to KV slots. Holds one pool reference per page.
#[derive(Default)]
pub struct PageTable {
    pages: Vec<u32>,
    /// Slot of every position the table covers so far (kept flat because `ForwardSeq` wants it).
    slots: Vec<u32>,
}

impl PageTable {
    pub fn pages(&self) -> &[u32] {
        &self.pages
    }
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }
    pub fn len(&self) -> usize {
        self.slots.len()
    }
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adopts whole pages shared from the prefix cache (takes a reference on each).
    /// Only valid while the table ends on a page boundary.
    pub fn push_shared_pages(&mut self, pool: &mut KvPool, pages: &[u32]) {
        let ps = pool.page_size();
        assert_eq!(self.slots.len() % ps, 0, "shared pages must start on a page boundary");
        for &p in pages {
            pool.retain(p);
            self.pages.push(p);
            let start = pool.page_start(p);
            self.slots.extend((0..ps as u32).map(|o| start + o));
        }
    }

    /// Pages needed to cover `extra` more positions.
    pub fn pages_needed(&self, page_size: usize, extra: usize) -> usize {
        let have = self.pages.len() * page_size;
        (self.slots.len() + extra).saturating_sub(have).div_ceil(page_size)
    }

    /// Extends the table by `extra` positions, allocating pages as needed. On exhaustion nothing
    /// changes and false is returned.
    pub fn grow(&mut self, pool: &mut KvPool, extra: usize) -> bool {
        let ps = pool.page_size();
        let need = self.pages_needed(ps, extra);
        if need > pool.free_page_count() {
            return false;
        }
        for _ in 0..need {
            let p = pool.alloc().expect("free page count checked");
            self.pages.push(p);
        }
        for _ in 0..extra {
            let pos = self.slots.len();
            let slot = pool.page_start(self.pages[pos / ps]) + (pos % ps) as u32;
            self.slots.push(slot);
        }
        true
    }

    /// Releases every page reference and empties the table.
    pub fn release_all(&mut self, pool: &mut KvPool) {
        for &p in &self.pages {
            pool.release(p);
        }
        self.pages.clear();
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_and_release_returns_every_page() {
        let mut pool = KvPool::new(64, 4);
        let mut t = PageTable::default();
        assert!(t.grow(&mut pool, 5));
        assert_eq!(t.pages().len(), 2);
        assert_eq!(t.slots().len(), 5);
        assert!(t.grow(&mut pool, 3));
        assert_eq!(t.pages().len(), 2);
        assert!(!t.grow(&mut pool, 100));
        assert_eq!(t.len(), 8);
        t.release_all(&mut pool);
        assert_eq!(pool.free_slots(), 64);
        pool.check_integrity().unwrap();
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_is_caught() {
        let mut pool = KvPool::new(8, 1);
        let p = pool.alloc().unwrap();
        pool.release(p);
        pool.release(p);
    }
}
