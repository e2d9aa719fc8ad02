//! One scheduler step: plan → batched forward → sample → per-request records.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crate::kv::cache::KvCache;
use crate::model::{ForwardSeq, Model};
use crate::sample::{log_sum_exp, Sampler};
use crate::sched::log::Logger;
use crate::sched::request::Finish;
use crate::sched::scheduler::{Plan, Scheduler};

pub struct Runner {
    pub model: Box<dyn Model>,
    pub kv: KvCache,
    pub sched: Scheduler,
    log: Logger,
    decode_log_interval: usize,
    sampler: Sampler,
    plan: Plan,
    decode_steps: usize,
    last_decode_log: Instant,
    generated_since_log: u64,
    pub last_gen_throughput: f64,
    /// Per plan item: its forward pass failed, so it finishes with an abort and its KV is not kept.
    failed: Vec<bool>,
}

impl Runner {
    pub fn new(model: Box<dyn Model>, kv: KvCache, sched: Scheduler, log: Logger, decode_log_interval: usize) -> Self {
        Runner {
            model,
            kv,
            sched,
            log,
            decode_log_interval: decode_log_interval.max(1),
            sampler: Sampler::default(),
            plan: Plan::default(),
            decode_steps: 0,
            last_decode_log: Instant::now(),
            generated_since_log: 0,
            last_gen_throughput: 0.0,
            failed: Vec::new(),
        }
    }

    /// Runs one step; records of requests with output are appended to `records`, ids of
    /// finished requests passed to `finished`. Returns false when nothing could run.
    pub fn step(&mut self, records: &mut Vec<String>, finished: &mut dyn FnMut(u64)) -> bool {
        // Aborts that arrived since the last step leave before anything is planned.
        self.sched.sweep(records, &mut *finished);
        self.sched.schedule(&mut self.plan);
        if self.plan.items.is_empty() {
            self.unstick();
            self.sched.sweep(records, &mut *finished);
            return false;
        }
        if self.plan.prefill_seqs > 0 {
            self.log_prefill();
        }
        self.failed.clear();
        self.failed.resize(self.plan.items.len(), false);
        let all: Vec<usize> = (0..self.plan.items.len()).collect();
        match self.forward(&all) {
            Ok(logits) => self.consume(&logits),
            Err(msg) => {
                self.log.log(crate::sched::log::Level::Error, &format!("{msg}; retrying the batch's sequences one by one"));
                let logits = self.forward_one_by_one();
                self.consume(&logits);
            }
        }
        if self.plan.decode_seqs > 0 {
            self.decode_steps += 1;
            if self.decode_steps.is_multiple_of(self.decode_log_interval) {
                self.log_decode();
            }
        }
        self.sched.sweep(records, &mut *finished);
        true
    }

    /// Nothing was runnable although requests wait. Alone, the queue head can never be admitted
    /// (its prompt exceeds what the pool can hold) and is refused rather than retried forever;
    /// with partially prefilled requests stuck on memory, the newest one gives its pages back.
    fn unstick(&mut self) {
        let live = self.sched.running.iter().filter(|r| !r.is_done()).count();
        if live > 1 {
            self.sched.retract_newest_for_progress();
        } else if live == 1 {
            if let Some(r) = self.sched.running.iter_mut().find(|r| !r.is_done()) {
                r.pending.finish = Some(Finish::Abort("The request does not fit in the KV cache pool.".into()));
            }
        } else if self.sched.running.is_empty() {
            if let Some(r) = self.sched.waiting.front_mut() {
                r.pending.finish = Some(Finish::Abort("The request does not fit in the KV cache pool.".into()));
            }
        }
    }

    /// After a failed batch: each sequence alone, so one bad request fails only itself. A sequence that
    /// fails alone gets an abort finish and zero logits rows (never read: `consume` skips failed items).
    /// Rewriting KV at the same slots is harmless: a sequence's new positions are its own pages.
    fn forward_one_by_one(&mut self) -> Vec<f32> {
        let vocab = self.model.config().vocab_size;
        let mut logits = Vec::new();
        for i in 0..self.plan.items.len() {
            let it = &self.plan.items[i];
            let rows = if it.all_logits { it.n } else { 1 };
            match self.forward(&[i]) {
                Ok(l) => logits.extend_from_slice(&l),
                Err(msg) => {
                    let r = &mut self.sched.running[self.plan.items[i].req];
                    self.log.log(crate::sched::log::Level::Error, &format!("request {} failed: {msg}", r.id));
                    if r.pending.finish.is_none() {
                        r.pending.finish = Some(Finish::Abort(format!("Internal error while processing the request: {msg}")));
                    }
                    self.failed[i] = true;
                    logits.resize(logits.len() + rows * vocab, 0.0);
                }
            }
        }
        logits
    }

    /// Runs the plan items at `which` as one batch.
    fn forward(&mut self, which: &[usize]) -> Result<Vec<f32>, String> {
        let running = &self.sched.running;
        let items: Vec<&crate::sched::scheduler::PlanItem> = which.iter().map(|&i| &self.plan.items[i]).collect();
        let batch: Vec<ForwardSeq> = items
            .iter()
            .map(|it| {
                let r = &running[it.req];
                let end = r.computed + it.n;
                ForwardSeq {
                    tokens: &r.tokens[r.computed..end],
                    start_pos: r.computed,
                    slots: &r.table.slots()[..end],
                    all_logits: it.all_logits,
                }
            })
            .collect();
        let rows: usize = items.iter().map(|it| if it.all_logits { it.n } else { 1 }).sum();
        let model = &self.model;
        let kv = &mut self.kv;
        let logits = catch_unwind(AssertUnwindSafe(|| model.forward(&batch, kv)))
            .map_err(|e| format!("model forward failed: {}", panic_message(&e)))?;
        let vocab = self.model.config().vocab_size;
        if logits.len() != rows * vocab {
            return Err(format!("model returned {} logits, expected {rows} rows of {vocab}", logits.len()));
        }
        Ok(logits)
    }

    fn consume(&mut self, logits: &[f32]) {
        let vocab = self.model.config().vocab_size;
        let mut row = 0;
        for (i, it) in self.plan.items.iter().enumerate() {
            let rows = if it.all_logits { it.n } else { 1 };
            let seq_logits = &logits[row * vocab..(row + rows) * vocab];
            row += rows;
            if self.failed[i] {
                // Its KV for these positions may be garbage: not computed, so never cached.
                continue;
            }
            let idx = it.req;
            // A panic while sampling or bookkeeping one request fails that request, not the engine.
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                Self::consume_one(&mut self.sched, &mut self.sampler, &mut self.generated_since_log, it, seq_logits, vocab)
            }));
            if let Err(e) = outcome {
                let msg = format!("Internal error while sampling: {}", panic_message(&e));
                self.log.log(crate::sched::log::Level::Error, &format!("request {} failed: {msg}", self.sched.running[idx].id));
                self.sched.running[idx].pending.finish = Some(Finish::Abort(msg));
            }
        }
    }

    fn consume_one(
        sched: &mut Scheduler,
        sampler: &mut Sampler,
        generated_since_log: &mut u64,
        it: &crate::sched::scheduler::PlanItem,
        seq_logits: &[f32],
        vocab: usize,
    ) {
        {
            let idx = it.req;
            let rows = if it.all_logits { it.n } else { 1 };
            let r = &mut sched.running[idx];
            let start = r.computed;
            r.computed += it.n;
            if r.pending.finish.is_some() {
                return;
            }
            if it.all_logits {
                if let Some(lp_start) = r.input_logprob_start {
                    if start == 0 && lp_start == 0 {
                        r.input_logprobs.push(None);
                        if r.top_logprobs_num > 0 {
                            r.input_top_logprobs.push(Vec::new());
                        }
                    }
                    for j in 0..it.n {
                        let q = start + j + 1;
                        if q < lp_start || q >= r.prompt_len {
                            continue;
                        }
                        let l = &seq_logits[j * vocab..(j + 1) * vocab];
                        let lse = log_sum_exp(l);
                        r.input_logprobs.push(Some(l[r.tokens[q] as usize] - lse));
                        if r.top_logprobs_num > 0 {
                            r.input_top_logprobs.push(top_n(l, lse, r.top_logprobs_num));
                        }
                    }
                }
            }
            if r.computed < r.tokens.len() {
                sched.cache_progress(idx);
                return;
            }
            if r.max_new_tokens == 0 {
                r.pending.finish = Some(Finish::Length(0));
                return;
            }
            let last = &seq_logits[(rows - 1) * vocab..rows * vocab];
            let suppress: &[u32] = if r.generated() < r.sampling.params.min_new_tokens { &r.stop_ids } else { &[] };
            let top = if r.return_logprob { r.top_logprobs_num } else { 0 };
            let s = sampler.sample(last, &mut r.sampling, suppress, r.return_logprob, top);
            r.tokens.push(s.token);
            r.sampling.observe(s.token);
            r.pending.tokens.push(s.token);
            if r.return_logprob {
                r.pending.logprobs.push(s.logprob);
                if top > 0 {
                    r.pending.top_logprobs.push(s.top);
                }
            }
            sched.generation_tokens_total += 1;
            *generated_since_log += 1;
            if r.is_stop(s.token) {
                r.pending.finish = Some(Finish::Stop(s.token));
            } else if r.generated() >= r.max_new_tokens {
                r.pending.finish = Some(Finish::Length(r.generated()));
            }
        }
    }

    fn log_prefill(&self) {
        if !self.log.enabled(crate::sched::log::Level::Info) {
            return;
        }
        let s = &self.sched;
        self.log.info(&format!(
            "Prefill batch. #new-seq: {}, #new-token: {}, #cached-token: {}, cache hit rate: {:.2}%, token usage: {:.2}, #running-req: {}, #queue-req: {}",
            self.plan.prefill_seqs,
            self.plan.prefill_tokens,
            self.plan.prefill_cached,
            s.cache_hit_rate() * 100.0,
            s.token_usage(),
            self.plan.decode_seqs,
            s.waiting.len(),
        ));
    }

    fn log_decode(&mut self) {
        let elapsed = self.last_decode_log.elapsed().as_secs_f64().max(1e-9);
        self.last_gen_throughput = self.generated_since_log as f64 / elapsed;
        self.generated_since_log = 0;
        self.last_decode_log = Instant::now();
        let s = &self.sched;
        self.log.info(&format!(
            "Decode batch. #running-req: {}, #token: {}, token usage: {:.2}, gen throughput (token/s): {:.2}, #queue-req: {}",
            s.running.len(),
            s.held_slots(),
            s.token_usage(),
            self.last_gen_throughput,
            s.waiting.len(),
        ));
    }
}

fn top_n(l: &[f32], lse: f32, n: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..l.len() as u32).collect();
    let n = n.min(idx.len());
    let desc = |a: &u32, b: &u32| l[*b as usize].total_cmp(&l[*a as usize]).then(a.cmp(b));
    if n < idx.len() {
        idx.select_nth_unstable_by(n - 1, desc);
        idx.truncate(n);
    }
    idx.sort_unstable_by(desc);
    idx.into_iter().map(|i| (i, l[i as usize] - lse)).collect()
}

pub fn panic_message(e: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
