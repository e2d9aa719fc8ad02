//! Radix prefix cache (RadixAttention): a radix tree over token ids whose edges carry the KV
//! pages of those tokens, so a new request can reuse the KV of the longest cached prefix.
//!
//! Contract:
//! - Keys are cut at page granularity: every node's key holds a whole number of pages and
//!   `pages[i]` stores the KV of `key[i*page_size..(i+1)*page_size]`. A partial last page of a
//!   sequence is never cached.
//! - The tree owns one pool reference on every page it stores; a page appears in at most one node.
//! - `lock(node)` pins the path root→node: `lock_ref` of a node counts the locks taken on it or on
//!   any descendant. Nodes with `lock_ref > 0` are never evicted; a request locks the node of its
//!   matched prefix for as long as it reads those pages.
//! - `evict` drops least-recently-used unlocked leaves (repeatedly, so parents can follow).
//! - Sizes: `cached_pages() == evictable_pages() + protected pages`, tracked incrementally and
//!   verified by `check_integrity`.
//! - Disabled (`--disable-radix-cache`): match finds nothing and insert stores nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::pool::KvPool;

pub type NodeId = usize;
pub const ROOT: NodeId = 0;

struct Node {
    parent: NodeId,
    key: Vec<u32>,
    pages: Vec<u32>,
    /// Children by the first token of their key (several when page_size > 1 and the first page
    /// differs after its first token).
    children: HashMap<u32, Vec<NodeId>>,
    lock_ref: u32,
    direct_locks: u32,
    last_access: u64,
    alive: bool,
}

impl Node {
    fn new(parent: NodeId, key: Vec<u32>, pages: Vec<u32>, tick: u64) -> Self {
        Node {
            parent,
            key,
            pages,
            children: HashMap::new(),
            lock_ref: 0,
            direct_locks: 0,
            last_access: tick,
            alive: true,
        }
    }
    fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }
}

/// A cached prefix: its pages (in order), the node it ends at, and its length in tokens.
pub struct PrefixMatch {
    pub pages: Vec<u32>,
    pub node: NodeId,
    pub len: usize,
}

pub struct RadixCache {
    nodes: Vec<Node>,
    free_nodes: Vec<NodeId>,
    page_size: usize,
    enabled: bool,
    clock: u64,
    cached_pages: usize,
    evictable_pages: usize,
}

impl RadixCache {
    pub fn new(page_size: usize, enabled: bool) -> Self {
        assert!(page_size > 0);
        RadixCache {
            nodes: vec![Node::new(ROOT, Vec::new(), Vec::new(), 0)],
            free_nodes: Vec::new(),
            page_size,
            enabled,
            clock: 0,
            cached_pages: 0,
            evictable_pages: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn cached_pages(&self) -> usize {
        self.cached_pages
    }
    pub fn cached_slots(&self) -> usize {
        self.cached_pages * self.page_size
    }
    pub fn evictable_pages(&self) -> usize {
        self.evictable_pages
    }
    pub fn evictable_slots(&self) -> usize {
        self.evictable_pages * self.page_size
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Pages of `a` and `b` that agree from the start.
    fn common_pages(&self, a: &[u32], b: &[u32]) -> usize {
        let ps = self.page_size;
        a.chunks_exact(ps).zip(b.chunks_exact(ps)).take_while(|(x, y)| x == y).count()
    }

    /// The child of `node` whose first page equals the first page of `rest`.
    fn child_for(&self, node: NodeId, rest: &[u32]) -> Option<NodeId> {
        let ps = self.page_size;
        let first = &rest[..ps];
        self.nodes[node].children.get(&first[0])?.iter().copied().find(|&c| &self.nodes[c].key[..ps] == first)
    }

    /// Length in tokens of the longest cached prefix of `tokens`, without touching the tree
    /// (used to rank the queue).
    pub fn peek_prefix_len(&self, tokens: &[u32]) -> usize {
        if !self.enabled {
            return 0;
        }
        let ps = self.page_size;
        let usable = tokens.len() / ps * ps;
        let (mut node, mut pos) = (ROOT, 0);
        while pos < usable {
            let Some(child) = self.child_for(node, &tokens[pos..usable]) else { break };
            let n = self.common_pages(&self.nodes[child].key, &tokens[pos..usable]);
            pos += n * ps;
            if n * ps < self.nodes[child].key.len() {
                break;
            }
            node = child;
        }
        pos
    }

    /// Longest cached prefix of `tokens` (whole pages). A match ending inside a node splits it so
    /// that the returned node covers exactly the matched prefix. Refreshes LRU times on the path.
    pub fn match_prefix(&mut self, tokens: &[u32]) -> PrefixMatch {
        let mut out = PrefixMatch { pages: Vec::new(), node: ROOT, len: 0 };
        if !self.enabled {
            return out;
        }
        let ps = self.page_size;
        let usable = tokens.len() / ps * ps;
        let now = self.tick();
        while out.len < usable {
            let Some(child) = self.child_for(out.node, &tokens[out.len..usable]) else { break };
            let n = self.common_pages(&self.nodes[child].key, &tokens[out.len..usable]);
            let child = if n * ps < self.nodes[child].key.len() { self.split(child, n) } else { child };
            self.nodes[child].last_access = now;
            out.pages.extend_from_slice(&self.nodes[child].pages);
            out.len += n * ps;
            out.node = child;
        }
        out
    }

    /// Cuts `node` after `n_pages` pages; returns the new upper node (which keeps the node's place
    /// in its parent). Locks are inherited because every lock below the cut is also below it.
    fn split(&mut self, node: NodeId, n_pages: usize) -> NodeId {
        let ps = self.page_size;
        let parent = self.nodes[node].parent;
        let lower_key = self.nodes[node].key.split_off(n_pages * ps);
        let lower_pages = self.nodes[node].pages.split_off(n_pages);
        let upper_key = std::mem::replace(&mut self.nodes[node].key, lower_key);
        let upper_pages = std::mem::replace(&mut self.nodes[node].pages, lower_pages);
        let mut upper = Node::new(parent, upper_key, upper_pages, self.nodes[node].last_access);
        upper.lock_ref = self.nodes[node].lock_ref;
        let first_lower = self.nodes[node].key[0];
        upper.children.insert(first_lower, vec![node]);
        let first_upper = upper.key[0];
        let upper_id = self.alloc_node(upper);
        self.nodes[node].parent = upper_id;
        let siblings = self.nodes[parent].children.get_mut(&first_upper).expect("child listed in parent");
        let at = siblings.iter().position(|&c| c == node).expect("child listed in parent");
        siblings[at] = upper_id;
        upper_id
    }

    fn alloc_node(&mut self, node: Node) -> NodeId {
        if let Some(id) = self.free_nodes.pop() {
            self.nodes[id] = node;
            id
        } else {
            self.nodes.push(node);
            self.nodes.len() - 1
        }
    }

    /// Stores `tokens` (truncated to whole pages) with their KV `pages`. Parts already cached keep
    /// their existing pages (the caller still owns its duplicates); new parts take a pool reference
    /// on the caller's pages. Returns the node covering the whole stored prefix and its length.
    pub fn insert(&mut self, pool: &mut KvPool, tokens: &[u32], pages: &[u32]) -> (NodeId, usize) {
        if !self.enabled {
            return (ROOT, 0);
        }
        let ps = self.page_size;
        let usable = (tokens.len() / ps).min(pages.len()) * ps;
        let now = self.tick();
        let (mut node, mut pos) = (ROOT, 0);
        while pos < usable {
            match self.child_for(node, &tokens[pos..usable]) {
                Some(child) => {
                    let n = self.common_pages(&self.nodes[child].key, &tokens[pos..usable]);
                    let child = if n * ps < self.nodes[child].key.len() { self.split(child, n) } else { child };
                    self.nodes[child].last_access = now;
                    pos += n * ps;
                    node = child;
                }
                None => {
                    let key = tokens[pos..usable].to_vec();
                    let new_pages = pages[pos / ps..usable / ps].to_vec();
                    for &p in &new_pages {
                        pool.retain(p);
                    }
                    self.cached_pages += new_pages.len();
                    self.evictable_pages += new_pages.len();
                    let first = key[0];
                    let leaf = self.alloc_node(Node::new(node, key, new_pages, now));
                    self.nodes[node].children.entry(first).or_default().push(leaf);
                    node = leaf;
                    pos = usable;
                }
            }
        }
        (node, usable)
    }

    /// Pins the path root→node against eviction.
    pub fn lock(&mut self, node: NodeId) {
        if node == ROOT {
            return;
        }
        self.nodes[node].direct_locks += 1;
        let mut n = node;
        while n != ROOT {
            if self.nodes[n].lock_ref == 0 {
                self.evictable_pages -= self.nodes[n].pages.len();
            }
            self.nodes[n].lock_ref += 1;
            n = self.nodes[n].parent;
        }
    }

    pub fn unlock(&mut self, node: NodeId) {
        if node == ROOT {
            return;
        }
        assert!(self.nodes[node].direct_locks > 0, "unlock of a node that is not locked");
        self.nodes[node].direct_locks -= 1;
        let mut n = node;
        while n != ROOT {
            self.nodes[n].lock_ref -= 1;
            if self.nodes[n].lock_ref == 0 {
                self.evictable_pages += self.nodes[n].pages.len();
            }
            n = self.nodes[n].parent;
        }
    }

    /// Evicts least-recently-used unlocked leaves until at least `pages` pages are released (or
    /// nothing evictable is left). Returns the pages released.
    pub fn evict(&mut self, pool: &mut KvPool, pages: usize) -> usize {
        if pages == 0 || self.evictable_pages == 0 {
            return 0;
        }
        let mut heap: BinaryHeap<Reverse<(u64, NodeId)>> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(id, n)| *id != ROOT && n.alive && n.is_leaf() && n.lock_ref == 0)
            .map(|(id, n)| Reverse((n.last_access, id)))
            .collect();
        let mut released = 0;
        while released < pages {
            let Some(Reverse((_, id))) = heap.pop() else { break };
            let parent = self.nodes[id].parent;
            released += self.remove_leaf(pool, id);
            let p = &self.nodes[parent];
            if parent != ROOT && p.is_leaf() && p.lock_ref == 0 {
                heap.push(Reverse((p.last_access, parent)));
            }
        }
        released
    }

    fn remove_leaf(&mut self, pool: &mut KvPool, id: NodeId) -> usize {
        let node = &mut self.nodes[id];
        debug_assert!(node.is_leaf() && node.lock_ref == 0);
        let pages = std::mem::take(&mut node.pages);
        let first = node.key[0];
        let parent = node.parent;
        node.alive = false;
        node.key = Vec::new();
        for &p in &pages {
            pool.release(p);
        }
        self.cached_pages -= pages.len();
        self.evictable_pages -= pages.len();
        let siblings = self.nodes[parent].children.get_mut(&first).expect("leaf listed in parent");
        siblings.retain(|&c| c != id);
        if siblings.is_empty() {
            self.nodes[parent].children.remove(&first);
        }
        self.free_nodes.push(id);
        pages.len()
    }

    /// Drops the whole cache (flush). Refused while any node is locked.
    pub fn reset(&mut self, pool: &mut KvPool) -> Result<(), String> {
        if self.nodes[ROOT].children.values().flatten().any(|&c| self.nodes[c].lock_ref > 0) {
            return Err("radix cache has locked nodes (requests in flight)".into());
        }
        for node in &mut self.nodes {
            if node.alive {
                for &p in &node.pages {
                    pool.release(p);
                }
            }
        }
        self.nodes.truncate(1);
        self.nodes[ROOT].children.clear();
        self.free_nodes.clear();
        self.cached_pages = 0;
        self.evictable_pages = 0;
        Ok(())
    }

    /// Calls `f` with every page the tree holds.
    pub fn for_each_page(&self, mut f: impl FnMut(u32)) {
        for node in self.nodes.iter().filter(|n| n.alive) {
            node.pages.iter().for_each(|&p| f(p));
        }
    }

    /// Verifies the contract: structure, lock counts, page ownership, size counters.
    pub fn check_integrity(&self, pool: &KvPool) -> Result<(), String> {
        let ps = self.page_size;
        let mut owner = vec![usize::MAX; pool.num_pages()];
        let (mut cached, mut evictable, mut reachable) = (0, 0, 0);
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            reachable += 1;
            let n = &self.nodes[id];
            if !n.alive {
                return Err(format!("node {id} is reachable but dead"));
            }
            if id != ROOT && (n.key.is_empty() || n.key.len() != n.pages.len() * ps) {
                return Err(format!("node {id}: key of {} tokens vs {} pages", n.key.len(), n.pages.len()));
            }
            let mut child_locks = 0;
            for (first, kids) in &n.children {
                if kids.is_empty() {
                    return Err(format!("node {id}: empty child list for token {first}"));
                }
                for &c in kids {
                    let child = &self.nodes[c];
                    if child.parent != id || child.key.first() != Some(first) {
                        return Err(format!("node {c}: wrong parent link or child key"));
                    }
                    child_locks += child.lock_ref;
                    stack.push(c);
                }
            }
            if id != ROOT && n.lock_ref != n.direct_locks + child_locks {
                return Err(format!(
                    "node {id}: lock_ref {} != direct {} + children {}",
                    n.lock_ref, n.direct_locks, child_locks
                ));
            }
            for &p in &n.pages {
                let slot = owner.get_mut(p as usize).ok_or_else(|| format!("page {p} out of range"))?;
                if *slot != usize::MAX {
                    return Err(format!("page {p} owned by nodes {} and {id}", *slot));
                }
                *slot = id;
                if pool.refcount(p) == 0 {
                    return Err(format!("cached page {p} is free in the pool"));
                }
            }
            cached += n.pages.len();
            if n.lock_ref == 0 {
                evictable += n.pages.len();
            }
        }
        let alive = self.nodes.iter().filter(|n| n.alive).count();
        if reachable != alive {
            return Err(format!("{alive} live nodes but {reachable} reachable"));
        }
        if cached != self.cached_pages || evictable != self.evictable_pages {
            return Err(format!(
                "size counters off: cached {}/{} evictable {}/{}",
                self.cached_pages, cached, self.evictable_pages, evictable
            ));
        }
        Ok(())
    }
}
