//! Continuous batching over the paged KV pool and the radix cache.
//!
//! Each step plans one forward pass: first one decode token for every running request that has
//! finished its prompt (retracting the newest request while the pool cannot hold them), then
//! prefill chunks, continuing partially prefilled requests before admitting new ones, within
//! `max_prefill_tokens` per step and `chunked_prefill_size` per request. Admission is
//! memory-aware: free + evictable slots must cover the new prompt plus the expected decode
//! tokens of everyone (`max_new_tokens * new_token_ratio`), as in SGLang.

use std::collections::VecDeque;

use crate::kv::pool::KvPool;
use crate::kv::radix::{RadixCache, ROOT};
use crate::sched::log::Logger;
use crate::sched::request::{Finish, Request};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Fcfs,
    /// Longest cached prefix first (falls back to fcfs for long queues, like SGLang).
    Lpm,
}

impl Policy {
    pub fn parse(s: &str) -> Result<Policy, String> {
        match s {
            "fcfs" => Ok(Policy::Fcfs),
            "lpm" => Ok(Policy::Lpm),
            other => Err(format!("unsupported schedule_policy {other:?} (fcfs | lpm)")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub max_running_requests: usize,
    pub max_prefill_tokens: usize,
    pub chunked_prefill_size: Option<usize>,
    pub policy: Policy,
    /// Starting guess of the fraction of max_new_tokens a request really generates.
    pub init_new_token_ratio: f32,
}

const MIN_NEW_TOKEN_RATIO_FACTOR: f32 = 0.14;
const NEW_TOKEN_RATIO_DECAY_STEPS: f32 = 600.0;
const LPM_MAX_QUEUE: usize = 128;

/// One sequence of the planned batch: `n` tokens of `running[req]` starting at its `computed`.
pub struct PlanItem {
    pub req: usize,
    pub n: usize,
    pub all_logits: bool,
}

#[derive(Default)]
pub struct Plan {
    pub items: Vec<PlanItem>,
    pub prefill_seqs: usize,
    pub prefill_tokens: usize,
    pub prefill_cached: usize,
    pub decode_seqs: usize,
    pub running_before: usize,
}

pub struct Scheduler {
    pub cfg: SchedulerConfig,
    pub pool: KvPool,
    pub tree: RadixCache,
    pub waiting: VecDeque<Request>,
    pub running: Vec<Request>,
    log: Logger,
    new_token_ratio: f32,
    min_new_token_ratio: f32,
    pub num_retractions: u64,
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
    hit_cached_tokens: u64,
    hit_total_tokens: u64,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, pool: KvPool, tree: RadixCache, log: Logger) -> Self {
        let ratio = cfg.init_new_token_ratio;
        Scheduler {
            cfg,
            pool,
            tree,
            waiting: VecDeque::new(),
            running: Vec::new(),
            log,
            new_token_ratio: ratio,
            min_new_token_ratio: ratio * MIN_NEW_TOKEN_RATIO_FACTOR,
            num_retractions: 0,
            prompt_tokens_total: 0,
            generation_tokens_total: 0,
            hit_cached_tokens: 0,
            hit_total_tokens: 0,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    pub fn cache_hit_rate(&self) -> f64 {
        if self.hit_total_tokens == 0 {
            0.0
        } else {
            self.hit_cached_tokens as f64 / self.hit_total_tokens as f64
        }
    }

    /// Slots held by requests (not merely cached) over the pool size.
    pub fn token_usage(&self) -> f64 {
        let held = self.pool.used_slots() - self.tree.evictable_slots().min(self.pool.used_slots());
        held as f64 / self.pool.total_slots().max(1) as f64
    }

    pub fn held_slots(&self) -> usize {
        self.pool.used_slots() - self.tree.evictable_slots().min(self.pool.used_slots())
    }

    /// Plans this step's batch into `plan`.
    pub fn schedule(&mut self, plan: &mut Plan) {
        plan.items.clear();
        plan.prefill_seqs = 0;
        plan.prefill_tokens = 0;
        plan.prefill_cached = 0;
        plan.decode_seqs = 0;
        plan.running_before = self.running.len();
        self.schedule_decode(plan);
        let mut budget = self.cfg.max_prefill_tokens;
        self.continue_prefills(plan, &mut budget);
        self.admit(plan, &mut budget);
    }

    fn schedule_decode(&mut self, plan: &mut Plan) {
        let mut retracted = 0;
        let mut i = 0;
        while i < self.running.len() {
            let r = &self.running[i];
            if r.pending.finish.is_some() || r.computed < r.prompt_len {
                i += 1;
                continue;
            }
            if self.reserve(i, 1) {
                plan.items.push(PlanItem { req: i, n: 1, all_logits: false });
                plan.decode_seqs += 1;
                i += 1;
            } else if self.running.len() == 1 {
                // Alone and still no room: the pool is smaller than this one request needs.
                let msg = "KV cache pool is too small for this request.".to_string();
                self.running[i].pending.finish = Some(Finish::Abort(msg));
                i += 1;
            } else {
                // The newest request goes back to the queue; if that was `i`, the loop ends.
                self.retract_newest();
                retracted += 1;
            }
        }
        if retracted > 0 {
            self.num_retractions += retracted as u64;
            self.new_token_ratio = self.estimate_new_token_ratio();
            self.log.warn(&format!(
                "KV cache pool is full. Retract requests. #retracted_reqs: {retracted}, #new_token_ratio: {:.4}",
                self.new_token_ratio
            ));
        } else if plan.decode_seqs > 0 {
            let decay = (self.cfg.init_new_token_ratio - self.min_new_token_ratio) / NEW_TOKEN_RATIO_DECAY_STEPS;
            self.new_token_ratio = (self.new_token_ratio - decay).max(self.min_new_token_ratio);
        }
    }

    /// After a retraction: how much of max_new_tokens the survivors are expected to use.
    fn estimate_new_token_ratio(&self) -> f32 {
        let decoded: usize = self.running.iter().map(|r| r.generated()).sum();
        let max_new: usize = self.running.iter().map(|r| r.max_new_tokens).sum();
        if max_new == 0 {
            return 1.0;
        }
        ((decoded + 20 * self.running.len()) as f32 / max_new as f32).min(1.0)
    }

    /// Used when no request could make progress: frees the newest request's pages.
    pub fn retract_newest_for_progress(&mut self) {
        self.retract_newest();
        self.num_retractions += 1;
        self.log.warn(&format!(
            "KV cache pool is full. Retract requests. #retracted_reqs: 1, #new_token_ratio: {:.4}",
            self.new_token_ratio
        ));
    }

    fn retract_newest(&mut self) {
        let mut r = self.running.pop().expect("retract with running requests");
        self.release(&mut r);
        r.computed = 0;
        if r.wants_input_logprobs() {
            r.input_logprobs.clear();
            r.input_top_logprobs.clear();
        }
        self.waiting.push_front(r);
    }

    /// Puts a leaving request's computed KV into the prefix cache, unpins and frees its pages.
    pub fn release(&mut self, r: &mut Request) {
        if r.computed > 0 {
            self.tree.insert(&mut self.pool, &r.tokens[..r.computed], r.table.pages());
        }
        self.tree.unlock(r.lock_node);
        r.lock_node = ROOT;
        r.table.release_all(&mut self.pool);
    }

    /// Chunked prefill progress becomes shareable at once; the request re-pins the longer prefix.
    pub fn cache_progress(&mut self, idx: usize) {
        let r = &mut self.running[idx];
        if !self.tree.enabled() || r.computed == 0 {
            return;
        }
        let (node, _) = self.tree.insert(&mut self.pool, &r.tokens[..r.computed], r.table.pages());
        self.tree.lock(node);
        self.tree.unlock(r.lock_node);
        r.lock_node = node;
    }

    /// Grows `running[idx]`'s page table by `n` positions, evicting cached prefixes if needed.
    fn reserve(&mut self, idx: usize, n: usize) -> bool {
        let need = self.running[idx].table.pages_needed(self.pool.page_size(), n);
        let free = self.pool.free_page_count();
        if need > free {
            self.tree.evict(&mut self.pool, need - free);
            if need > self.pool.free_page_count() {
                return false;
            }
        }
        self.running[idx].table.grow(&mut self.pool, n)
    }

    fn chunk_len(&self, to_feed: usize, budget: usize, batch_has_prefill: bool) -> Option<usize> {
        match self.cfg.chunked_prefill_size {
            Some(cap) => Some(to_feed.min(cap).min(budget)).filter(|&n| n > 0),
            // Without chunking a prompt runs whole; one larger than the budget runs alone.
            None if to_feed <= budget || !batch_has_prefill => Some(to_feed),
            None => None,
        }
    }

    fn continue_prefills(&mut self, plan: &mut Plan, budget: &mut usize) {
        for i in 0..self.running.len() {
            let r = &self.running[i];
            if r.pending.finish.is_some() || r.computed >= r.prompt_len || *budget == 0 {
                continue;
            }
            let Some(n) = self.chunk_len(r.to_feed(), *budget, plan.prefill_seqs > 0) else { continue };
            let all_logits = r.wants_input_logprobs();
            if !self.reserve(i, n) {
                continue;
            }
            plan.items.push(PlanItem { req: i, n, all_logits });
            plan.prefill_seqs += 1;
            plan.prefill_tokens += n;
            *budget = budget.saturating_sub(n);
        }
    }

    fn sort_queue(&mut self) {
        if self.cfg.policy != Policy::Lpm || self.waiting.len() < 2 || self.waiting.len() > LPM_MAX_QUEUE {
            return;
        }
        let tree = &self.tree;
        let mut keyed: Vec<(usize, Request)> = self
            .waiting
            .drain(..)
            .map(|r| (tree.peek_prefix_len(&r.tokens[..r.cacheable_prefix()]), r))
            .collect();
        // Stable: equal prefixes keep arrival order.
        keyed.sort_by_key(|k| std::cmp::Reverse(k.0));
        self.waiting.extend(keyed.into_iter().map(|(_, r)| r));
    }

    fn admit(&mut self, plan: &mut Plan, budget: &mut usize) {
        if self.waiting.is_empty() || *budget == 0 || self.running.len() >= self.cfg.max_running_requests {
            return;
        }
        self.sort_queue();
        let ratio = self.new_token_ratio;
        let expected = |r: &Request| (r.max_new_tokens - r.generated().min(r.max_new_tokens)) as f32 * ratio;
        let mut reserved: f32 = self.running.iter().map(expected).sum();
        while *budget > 0 && self.running.len() < self.cfg.max_running_requests {
            let Some(front) = self.waiting.front() else { break };
            let prefix = self.tree.peek_prefix_len(&front.tokens[..front.cacheable_prefix()]);
            let need = (front.tokens.len() - prefix) as f32 + expected(front);
            let avail = (self.pool.free_slots() + self.tree.evictable_slots()) as f32;
            let alone = self.running.is_empty() && plan.items.is_empty();
            if !alone && need + reserved > avail {
                break;
            }
            let mut r = self.waiting.pop_front().expect("front exists");
            let m = self.tree.match_prefix(&r.tokens[..r.cacheable_prefix()]);
            self.tree.lock(m.node);
            r.lock_node = m.node;
            r.table.push_shared_pages(&mut self.pool, &m.pages);
            r.computed = m.len;
            let chunk = self.chunk_len(r.to_feed(), *budget, plan.prefill_seqs > 0);
            self.running.push(r);
            let idx = self.running.len() - 1;
            let Some(n) = chunk.filter(|&n| self.reserve(idx, n)) else {
                let mut r = self.running.pop().expect("just pushed");
                self.tree.unlock(r.lock_node);
                r.lock_node = ROOT;
                r.table.release_all(&mut self.pool);
                r.computed = 0;
                self.waiting.push_front(r);
                break;
            };
            let r = &mut self.running[idx];
            if !r.admitted_once {
                r.admitted_once = true;
                r.cached_tokens = m.len;
                self.prompt_tokens_total += r.prompt_len as u64;
            }
            self.hit_cached_tokens += m.len as u64;
            self.hit_total_tokens += r.tokens.len() as u64;
            reserved += expected(r);
            plan.items.push(PlanItem { req: idx, n, all_logits: r.wants_input_logprobs() });
            plan.prefill_seqs += 1;
            plan.prefill_tokens += n;
            plan.prefill_cached += m.len;
            *budget = budget.saturating_sub(n);
        }
    }

    /// Aborts a queued or running request; false when the id is unknown here.
    pub fn abort(&mut self, id: u64, message: &str) -> bool {
        let finish = Some(Finish::Abort(message.to_string()));
        if let Some(r) = self.running.iter_mut().find(|r| r.id == id) {
            if r.pending.finish.is_none() {
                r.pending.finish = finish;
            }
            return true;
        }
        if let Some(r) = self.waiting.iter_mut().find(|r| r.id == id) {
            r.pending.finish = finish;
            return true;
        }
        false
    }

    pub fn abort_all(&mut self, message: &str) {
        for r in self.running.iter_mut().chain(self.waiting.iter_mut()) {
            if r.pending.finish.is_none() {
                r.pending.finish = Some(Finish::Abort(message.to_string()));
            }
        }
    }

    /// Emits one record per request with output this step and removes finished requests,
    /// returning their KV to the cache/pool. Calls `finished` with each finished id.
    pub fn sweep(&mut self, records: &mut Vec<String>, mut finished: impl FnMut(u64)) {
        let mut i = 0;
        while i < self.running.len() {
            let done = self.running[i].is_done();
            if self.running[i].has_output() {
                records.push(self.running[i].take_record());
            }
            if done {
                let mut r = self.running.remove(i);
                self.release(&mut r);
                finished(r.id);
            } else {
                i += 1;
            }
        }
        let mut j = 0;
        while j < self.waiting.len() {
            if self.waiting[j].is_done() {
                let mut r = self.waiting.remove(j).expect("index in range");
                records.push(r.take_record());
                finished(r.id);
            } else {
                j += 1;
            }
        }
    }

    /// Pool, tree and request page tables agree: every page's refcount equals its holders
    /// (cached + free + held by requests = total), locks match the running requests.
    pub fn check_integrity(&self) -> Result<(), String> {
        self.pool.check_integrity()?;
        self.tree.check_integrity(&self.pool)?;
        let mut holders = vec![0u32; self.pool.num_pages()];
        self.tree.for_each_page(|p| holders[p as usize] += 1);
        for r in &self.running {
            r.table.pages().iter().for_each(|&p| holders[p as usize] += 1);
        }
        for r in &self.waiting {
            if !r.table.is_empty() || r.lock_node != ROOT {
                return Err(format!("queued request {} holds KV", r.id));
            }
        }
        for (p, &h) in holders.iter().enumerate() {
            let rc = self.pool.refcount(p as u32);
            if rc != h {
                return Err(format!("page {p}: refcount {rc} but {h} holders"));
            }
        }
        Ok(())
    }
}
