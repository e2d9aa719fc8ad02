//! How a model is cut into `--tp-size` ranks, Megatron style: attention heads and MLP columns
//! (column-parallel QKV and gate/up, row-parallel o_proj and down_proj), the KV cache by KV head,
//! the embedding and lm_head by vocabulary. Pure arithmetic, checked once at start-up.
//!
//! KV heads: with tp <= num_kv_heads each rank holds num_kv_heads / tp of them; with tp >
//! num_kv_heads each rank holds one, replicated on tp / num_kv_heads ranks (as SGLang and vLLM
//! do), so every rank's query heads find their GQA group's K/V locally.

use crate::config::ModelConfig;
use std::ops::Range;

/// One rank's share of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankShard {
    pub rank: usize,
    pub world: usize,
    /// Query heads this rank computes (global head indices).
    pub heads: Range<usize>,
    /// KV heads this rank stores (global KV head indices).
    pub kv_heads: Range<usize>,
    /// Rows of gate/up (columns of down) this rank holds.
    pub inter: Range<usize>,
    /// Vocabulary rows of the embedding and lm_head this rank holds.
    pub vocab: Range<usize>,
}

impl RankShard {
    /// The whole model on one rank (tp = 1).
    pub fn whole(cfg: &ModelConfig) -> RankShard {
        RankShard {
            rank: 0,
            world: 1,
            heads: 0..cfg.num_attention_heads,
            kv_heads: 0..cfg.num_key_value_heads,
            inter: 0..cfg.intermediate_size,
            vocab: 0..cfg.vocab_size,
        }
    }

    pub fn num_heads(&self) -> usize {
        self.heads.len()
    }

    pub fn num_kv_heads(&self) -> usize {
        self.kv_heads.len()
    }
}

/// Checks that `tp` can split `cfg`; the error is the start-up message.
pub fn check(cfg: &ModelConfig, tp: usize) -> Result<(), String> {
    let (heads, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    if tp == 0 {
        return Err("--tp-size must be at least 1".into());
    }
    if heads % tp != 0 {
        return Err(format!("--tp-size {tp} does not divide the number of attention heads ({heads})"));
    }
    if tp <= kv && kv % tp != 0 {
        return Err(format!("--tp-size {tp} does not divide the number of KV heads ({kv})"));
    }
    if tp > kv && tp % kv != 0 {
        return Err(format!("--tp-size {tp} is not a multiple of the number of KV heads ({kv}), so they cannot be replicated evenly"));
    }
    if cfg.intermediate_size < tp || cfg.vocab_size < tp {
        return Err(format!("--tp-size {tp} exceeds the MLP width ({}) or the vocabulary ({})", cfg.intermediate_size, cfg.vocab_size));
    }
    Ok(())
}

/// Every rank's share; `check` must have passed.
pub fn shards(cfg: &ModelConfig, tp: usize) -> Vec<RankShard> {
    (0..tp).map(|rank| shard(cfg, tp, rank)).collect()
}

fn shard(cfg: &ModelConfig, tp: usize, rank: usize) -> RankShard {
    let (heads, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let per_rank = heads / tp;
    let kv_heads = if tp <= kv {
        let n = kv / tp;
        rank * n..(rank + 1) * n
    } else {
        // Rank r's query heads r*per_rank.. all belong to KV head r*kv/tp's group.
        let h = rank * kv / tp;
        h..h + 1
    };
    RankShard {
        rank,
        world: tp,
        heads: rank * per_rank..(rank + 1) * per_rank,
        kv_heads,
        inter: even_split(cfg.intermediate_size, tp, rank),
        vocab: even_split(cfg.vocab_size, tp, rank),
    }
}

/// Rank `rank`'s part of `0..n` cut into `parts` nearly equal contiguous ranges.
pub fn even_split(n: usize, parts: usize, rank: usize) -> Range<usize> {
    let (base, extra) = (n / parts, n % parts);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(heads: usize, kv: usize) -> ModelConfig {
        let json = format!(
            r#"{{"architectures":["LlamaForCausalLM"],"hidden_size":{h},"intermediate_size":100,"num_hidden_layers":1,
               "num_attention_heads":{heads},"num_key_value_heads":{kv},"head_dim":8,"vocab_size":503,
               "rms_norm_eps":1e-5,"max_position_embeddings":128}}"#,
            h = heads * 8
        );
        ModelConfig::from_json_str(&json).unwrap()
    }

    #[test]
    fn ranges_cover_everything_once() {
        for (n, parts) in [(100, 3), (503, 4), (8, 8), (7, 2)] {
            let mut next = 0;
            for r in 0..parts {
                let s = even_split(n, parts, r);
                assert_eq!(s.start, next);
                assert!(s.len() == n / parts || s.len() == n / parts + 1);
                next = s.end;
            }
            assert_eq!(next, n);
        }
    }

    #[test]
    fn kv_heads_split_then_replicate_and_match_each_ranks_query_group() {
        for (heads, kv, tp) in [(8, 4, 2), (8, 4, 4), (4, 2, 4), (8, 2, 8), (8, 8, 2), (32, 8, 4)] {
            let c = cfg(heads, kv);
            check(&c, tp).unwrap();
            let group = heads / kv;
            for s in shards(&c, tp) {
                assert_eq!(s.num_heads(), heads / tp);
                assert_eq!(s.num_kv_heads(), (kv / tp).max(1));
                // Every query head's GQA group is held by the rank.
                for h in s.heads.clone() {
                    assert!(s.kv_heads.contains(&(h / group)), "heads {heads} kv {kv} tp {tp} rank {}", s.rank);
                }
            }
        }
    }

    #[test]
    fn sizes_that_do_not_split_are_clear_errors() {
        assert!(check(&cfg(8, 4), 3).unwrap_err().contains("does not divide the number of attention heads (8)"));
        assert!(check(&cfg(12, 3), 2).unwrap_err().contains("KV heads (3)"));
        assert!(check(&cfg(4, 2), 8).unwrap_err().contains("attention heads (4)"));
        assert!(check(&cfg(12, 4), 6).unwrap_err().contains("multiple of the number of KV heads (4)"));
        assert!(check(&cfg(12, 6), 4).unwrap_err().contains("KV heads (6)"));
        assert!(check(&cfg(8, 4), 0).unwrap_err().contains("at least 1"));
        assert!(check(&cfg(8, 4), 1).is_ok());
    }
}
