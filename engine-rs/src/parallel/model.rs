//! A model split over `--tp-size` ranks in one process: each rank is a `Llama` holding its shard
//! of the weights and its own KV cache (its KV heads only), runs on its own compute pool, and
//! joins the others through a `ThreadGroup` after o_proj, down_proj, the embedding and the
//! lm_head. The scheduler, radix cache and slot allocation stay single: every rank stores a
//! slot's K/V at the same slot index.

use std::sync::Mutex;

use super::comm::{Communicator, ThreadGroup};
use super::plan::{self, RankShard};
use crate::config::ModelConfig;
use crate::kv::cache::KvCache;
use crate::model::llama::Llama;
use crate::model::{ForwardSeq, Model};

pub struct TensorParallel {
    config: ModelConfig,
    ranks: Vec<Llama>,
    comms: Vec<Box<dyn Communicator>>,
    /// One cache per rank; locked for a forward pass (the scheduler runs one at a time).
    kv: Mutex<Vec<KvCache>>,
    weight_bytes: usize,
    weight_dtype: &'static str,
    kernel_isa: &'static str,
}

impl TensorParallel {
    /// Splits `model` into `tp` ranks, each with a pool of `threads / tp` (at least 1) compute
    /// threads. The ranks' caches are empty until `allocate_kv`.
    pub fn split(model: Llama, tp: usize, threads: usize) -> Result<TensorParallel, String> {
        let comms = ThreadGroup::new(tp).into_iter().map(|c| Box::new(c) as Box<dyn Communicator>).collect();
        Self::split_over(model, comms, threads)
    }

    /// `split` with the ranks joined by `comms` (one per rank, in rank order), e.g. NCCL.
    pub fn split_over(model: Llama, comms: Vec<Box<dyn Communicator>>, threads: usize) -> Result<TensorParallel, String> {
        let tp = comms.len();
        let config = model.config().clone();
        plan::check(&config, tp)?;
        let per_rank_threads = (threads / tp).max(1);
        let mut ranks = Vec::with_capacity(tp);
        for s in plan::shards(&config, tp) {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(per_rank_threads)
                .thread_name(move |i| format!("llm-tp{}-{i}", s.rank))
                .build()
                .map_err(|e| format!("cannot start the compute threads of TP rank {}: {e}", s.rank))?;
            let rank = model.shard(&s)?.with_pool(pool);
            rank.prepare_weights();
            ranks.push(rank);
        }
        drop(model);
        let weight_bytes = ranks.iter().map(|r| r.weight_bytes()).sum();
        let (weight_dtype, kernel_isa) = (ranks[0].weight_dtype(), ranks[0].kernel_isa());
        let kv = Mutex::new(ranks.iter().map(|r| KvCache::new(config.num_hidden_layers, 0, r.kv_dim())).collect());
        Ok(TensorParallel { config, comms, ranks, kv, weight_bytes, weight_dtype, kernel_isa })
    }

    pub fn tp_size(&self) -> usize {
        self.ranks.len()
    }

    pub fn shards(&self) -> impl Iterator<Item = &RankShard> {
        self.ranks.iter().map(|r| r.rank_shard())
    }

    /// Weight bytes held by each rank.
    pub fn rank_weight_bytes(&self) -> Vec<usize> {
        self.ranks.iter().map(|r| r.weight_bytes()).collect()
    }

    /// Bytes one KV slot takes on each rank (its KV heads, every layer, K and V).
    pub fn rank_kv_bytes_per_slot(&self) -> Vec<usize> {
        self.ranks.iter().map(|r| KvCache::bytes_per_slot(self.config.num_hidden_layers, r.kv_dim())).collect()
    }

    /// Gives every rank a cache of `slots` rows.
    pub fn allocate_kv(&self, slots: usize) {
        let mut kv = self.kv.lock().unwrap_or_else(|e| e.into_inner());
        *kv = self.ranks.iter().map(|r| KvCache::new(self.config.num_hidden_layers, slots, r.kv_dim())).collect();
    }
}

impl Model for TensorParallel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn forward(&self, batch: &[ForwardSeq], kv: &mut KvCache) -> Vec<f32> {
        crate::model::forward_or_log(self, batch, kv)
    }

    /// `_kv` is the scheduler's (empty) cache: the ranks keep their own.
    fn try_forward(&self, batch: &[ForwardSeq], _kv: &mut KvCache) -> Result<Vec<f32>, String> {
        let mut caches = self.kv.lock().unwrap_or_else(|e| e.into_inner());
        for (rank, cache) in self.ranks.iter().zip(caches.iter()) {
            rank.check_batch(batch, cache)?;
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Rank 0 runs on this thread; the others on scoped threads, each inside its own pool. A
        // rank that panics breaks the group's barrier so no other rank waits for it forever; the
        // panic then reaches the runner, which fails that batch's requests alone.
        let (first, rest) = caches.split_at_mut(1);
        let outcome = std::thread::scope(|scope| {
            let others: Vec<_> = self.ranks[1..]
                .iter()
                .zip(rest.iter_mut())
                .zip(&self.comms[1..])
                .map(|((rank, cache), comm)| scope.spawn(move || run_rank(rank, batch, cache, comm.as_ref())))
                .collect();
            let logits = run_rank(&self.ranks[0], batch, &mut first[0], self.comms[0].as_ref());
            let others_ok = others.into_iter().all(|h| h.join().map_or(false, |r| r.is_some()));
            logits.filter(|_| others_ok)
        });
        match outcome {
            Some(logits) => Ok(logits),
            None => {
                self.comms[0].mend();
                panic!("a tensor-parallel rank failed during the forward pass");
            }
        }
    }

    fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    fn weight_dtype(&self) -> &'static str {
        self.weight_dtype
    }

    fn kernel_isa(&self) -> &'static str {
        self.kernel_isa
    }
}

/// One rank's pass on its own pool; None (after releasing the other ranks) when it panicked.
fn run_rank(rank: &Llama, batch: &[ForwardSeq], cache: &mut KvCache, comm: &dyn Communicator) -> Option<Vec<f32>> {
    let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rank.on_pool(|| rank.run(batch, cache, comm))));
    if pass.is_err() {
        comm.abandon();
    }
    pass.ok()
}
