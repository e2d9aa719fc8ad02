//! The radix cache and page pool under thousands of seeded random operations: integrity holds
//! after every one, and the pool ends exactly full once everything is released and flushed.

use llm_engine::kv::pool::{KvPool, PageTable};
use llm_engine::kv::radix::{NodeId, RadixCache};
use llm_engine::sample::Rng;

struct Holder {
    tokens: Vec<u32>,
    table: PageTable,
    node: NodeId,
}

fn check(pool: &KvPool, tree: &RadixCache, holders: &[Holder]) {
    pool.check_integrity().unwrap();
    tree.check_integrity(pool).unwrap();
    let mut refs = vec![0u32; pool.num_pages()];
    tree.for_each_page(|p| refs[p as usize] += 1);
    for h in holders {
        h.table.pages().iter().for_each(|&p| refs[p as usize] += 1);
    }
    for (p, &r) in refs.iter().enumerate() {
        assert_eq!(pool.refcount(p as u32), r, "page {p}: refcount vs holders");
    }
    let cached_or_held = refs.iter().filter(|&&r| r > 0).count();
    assert_eq!(cached_or_held + pool.free_page_count(), pool.num_pages(), "cached + held + free = total");
}

fn run(seed: u64, page_size: usize) {
    let mut rng = Rng::new(seed);
    let mut pool = KvPool::new(600 * page_size, page_size);
    let mut tree = RadixCache::new(page_size, true);
    let mut holders: Vec<Holder> = Vec::new();
    let mut evicted_any = false;
    // A few shared stems with small alphabets make prefixes collide and nodes split.
    let stems: Vec<Vec<u32>> = (0..4).map(|s| (0..40).map(|i| ((s * 31 + i * 7) % 5) as u32).collect()).collect();
    for _ in 0..4000 {
        match rng.next_u64() % 10 {
            0..=3 => {
                // A request arrives: match, lock, allocate the rest.
                let stem = &stems[(rng.next_u64() % 4) as usize];
                let cut = (rng.next_u64() % stem.len() as u64) as usize;
                let mut tokens = stem[..cut].to_vec();
                tokens.extend((0..1 + rng.next_u64() % 30).map(|_| (rng.next_u64() % 3) as u32));
                let m = tree.match_prefix(&tokens);
                assert_eq!(m.len % page_size, 0);
                assert_eq!(m.len, tree.peek_prefix_len(&tokens));
                tree.lock(m.node);
                let mut table = PageTable::default();
                table.push_shared_pages(&mut pool, &m.pages);
                let rest = tokens.len() - m.len;
                let need = table.pages_needed(page_size, rest);
                if need > pool.free_page_count() {
                    let short = need - pool.free_page_count();
                    let freed = tree.evict(&mut pool, short);
                    evicted_any |= freed > 0;
                }
                if !table.grow(&mut pool, rest) {
                    table.release_all(&mut pool);
                    tree.unlock(m.node);
                } else {
                    holders.push(Holder { tokens, table, node: m.node });
                }
            }
            4..=6 if !holders.is_empty() => {
                // A request finishes: insert, unlock, release.
                let i = (rng.next_u64() % holders.len() as u64) as usize;
                let mut h = holders.swap_remove(i);
                let (_, stored) = tree.insert(&mut pool, &h.tokens, h.table.pages());
                assert_eq!(stored, h.tokens.len() / page_size * page_size);
                assert!(tree.peek_prefix_len(&h.tokens) >= stored);
                tree.unlock(h.node);
                h.table.release_all(&mut pool);
            }
            7 if !holders.is_empty() => {
                // Chunk progress: insert and re-lock deeper.
                let i = (rng.next_u64() % holders.len() as u64) as usize;
                let h = &mut holders[i];
                let (node, _) = tree.insert(&mut pool, &h.tokens, h.table.pages());
                tree.lock(node);
                tree.unlock(h.node);
                h.node = node;
            }
            8 => {
                let before = pool.free_page_count();
                let n = (rng.next_u64() % 50) as usize;
                let freed = tree.evict(&mut pool, n);
                evicted_any |= freed > 0;
                assert_eq!(pool.free_page_count(), before + freed, "evicted pages are only held by the tree");
            }
            _ => {}
        }
        check(&pool, &tree, &holders);
    }
    assert!(evicted_any, "the run must exercise eviction");
    assert!(tree.reset(&mut pool).is_err() || holders.is_empty(), "reset refused while locked");
    for mut h in holders.drain(..) {
        tree.unlock(h.node);
        h.table.release_all(&mut pool);
    }
    check(&pool, &tree, &holders);
    tree.reset(&mut pool).unwrap();
    assert_eq!(pool.free_page_count(), pool.num_pages(), "flush returns every page");
    check(&pool, &tree, &holders);
}

#[test]
fn radix_and_pool_keep_integrity_page_size_1() {
    for seed in 0..5 {
        run(seed, 1);
    }
}

#[test]
fn radix_and_pool_keep_integrity_page_size_4() {
    for seed in 10..15 {
        run(seed, 4);
    }
}

#[test]
fn disabled_cache_stores_nothing() {
    let mut pool = KvPool::new(64, 1);
    let mut tree = RadixCache::new(1, false);
    let mut t = PageTable::default();
    assert!(t.grow(&mut pool, 10));
    tree.insert(&mut pool, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], t.pages());
    assert_eq!(tree.match_prefix(&[1, 2, 3]).len, 0);
    t.release_all(&mut pool);
    assert_eq!(pool.free_slots(), 64);
}
