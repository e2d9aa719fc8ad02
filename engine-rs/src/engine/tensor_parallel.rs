//! `--tp-size N` on the CPU: the loaded Llama is split into N rank shards (parallel/), the KV pool
//! is sized from the ranks' shares of a slot, and each rank's memory is logged with SGLang's
//! `[time TPr]` tag. The ranks keep their own KV caches, so the scheduler's `KvCache` gets no rows
//! (the same arrangement as a device-resident pool).

use std::time::Instant;

use super::device::{DeviceKv, PlacedModel};
use super::options::{mem_available_bytes, EngineOptions};
use super::{status, EngineError};
use crate::model::llama::Llama;
use crate::model::{LoadOptions, Model};
use crate::parallel::model::TensorParallel;
use crate::sched::log::Logger;

pub fn place(model: Llama, opts: &EngineOptions, req: &LoadOptions, log: Logger, started: Instant) -> Result<PlacedModel, EngineError> {
    let threads = req.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let load_err = |e: String| EngineError::new(status::LOAD, e);
    let tp = match opts.tp_comm.as_str() {
        "threads" => TensorParallel::split(model, opts.tp_size, threads).map_err(load_err)?,
        "nccl" => TensorParallel::split_over(model, nccl_ranks(opts.tp_size).map_err(load_err)?, threads).map_err(load_err)?,
        other => return Err(EngineError::new(status::INVALID_ARGUMENT, format!("unknown tp_comm {other:?} (supported: threads, nccl)"))),
    };
    let cfg = tp.config().clone();
    let per_slot_by_rank = tp.rank_kv_bytes_per_slot();
    let per_slot: usize = per_slot_by_rank.iter().sum();
    let slots = opts.pool_slots_of(&cfg, tp.weight_bytes(), per_slot);
    tp.allocate_kv(slots);
    let gb = |b: usize| b as f64 / (1u64 << 30) as f64;
    let replicas = (opts.tp_size / cfg.num_key_value_heads).max(1);
    let took = started.elapsed().as_secs_f64();
    for ((s, weights), kv_slot) in tp.shards().zip(tp.rank_weight_bytes()).zip(&per_slot_by_rank) {
        log.info_rank(
            s.rank,
            &format!(
                "Load weight end. type={}, dtype={}, avail mem={:.2} GB, mem usage={:.2} GB, heads {}..{} of {}, KV heads {}..{} of {}{}, MLP columns {}..{}, vocab {}..{}, took {took:.2} s.",
                cfg.architecture,
                tp.weight_dtype(),
                gb(mem_available_bytes().unwrap_or(0)),
                gb(weights),
                s.heads.start,
                s.heads.end,
                cfg.num_attention_heads,
                s.kv_heads.start,
                s.kv_heads.end,
                cfg.num_key_value_heads,
                if replicas > 1 { format!(" (each KV head replicated on {replicas} ranks)") } else { String::new() },
                s.inter.start,
                s.inter.end,
                s.vocab.start,
                s.vocab.end,
            ),
        );
        let kv_bytes = kv_slot * slots;
        log.info_rank(
            s.rank,
            &format!(
                "KV Cache is allocated. #tokens: {slots}, K size: {:.2} GB, V size: {:.2} GB, pool bytes: {kv_bytes}",
                kv_bytes as f64 / 2.0 / 1e9,
                kv_bytes as f64 / 2.0 / 1e9
            ),
        );
    }
    let mut run_opts = opts.clone();
    run_opts.max_total_tokens = Some(slots);
    Ok(PlacedModel {
        model: Box::new(tp),
        device: "cpu".into(),
        device_kv: Some(DeviceKv { slots, bytes: per_slot * slots }),
        opts: run_opts,
    })
}

#[cfg(feature = "cuda")]
fn nccl_ranks(world: usize) -> Result<Vec<Box<dyn crate::parallel::comm::Communicator>>, String> {
    let ranks = crate::backend::cuda::nccl::NcclRank::group(world)?;
    Ok(ranks.into_iter().map(|r| Box::new(r) as Box<dyn crate::parallel::comm::Communicator>).collect())
}

#[cfg(not(feature = "cuda"))]
fn nccl_ranks(_world: usize) -> Result<Vec<Box<dyn crate::parallel::comm::Communicator>>, String> {
    Err(format!("tp_comm \"nccl\": {}", super::device::NO_CUDA_BUILD))
}
