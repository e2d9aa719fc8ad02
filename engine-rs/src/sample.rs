//! Per-request sampling and logprobs.
//!
//! Order (SGLang's): logit_bias and penalties edit the logits, EOS/stop ids are masked until
//! min_new_tokens is reached; logprobs are the log-softmax of those logits (before temperature);
//! then temperature, top_k, top_p, min_p and a draw from the request's own RNG, so a seeded
//! request gives the same tokens whatever else is in the batch.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i64,
    pub min_p: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub repetition_penalty: f32,
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    pub logit_bias: HashMap<String, f32>,
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: -1,
            min_p: 0.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repetition_penalty: 1.0,
            max_new_tokens: 128,
            min_new_tokens: 0,
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            logit_bias: HashMap::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Rejects values no sampler can honour (the server validates too; this is the last line).
    pub fn validate(&self, vocab_size: usize) -> Result<Vec<(u32, f32)>, String> {
        let finite = |name: &str, v: f32| if v.is_finite() { Ok(()) } else { Err(format!("{name} must be finite")) };
        finite("temperature", self.temperature)?;
        finite("top_p", self.top_p)?;
        finite("min_p", self.min_p)?;
        finite("frequency_penalty", self.frequency_penalty)?;
        finite("presence_penalty", self.presence_penalty)?;
        finite("repetition_penalty", self.repetition_penalty)?;
        if self.temperature < 0.0 {
            return Err("temperature must be non-negative".into());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err("top_p must be in (0, 1]".into());
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err("min_p must be in [0, 1]".into());
        }
        if self.top_k == 0 || self.top_k < -1 {
            return Err("top_k must be -1 (all) or at least 1".into());
        }
        if self.repetition_penalty <= 0.0 {
            return Err("repetition_penalty must be positive".into());
        }
        if let Some(&bad) = self.stop_token_ids.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(format!("stop token id {bad} is outside the vocabulary ({vocab_size})"));
        }
        let mut bias = Vec::with_capacity(self.logit_bias.len());
        for (k, &v) in &self.logit_bias {
            let id: u32 = k.parse().map_err(|_| format!("logit_bias key {k:?} is not a token id"))?;
            if id as usize >= vocab_size {
                return Err(format!("logit_bias token id {id} is outside the vocabulary ({vocab_size})"));
            }
            if v.is_nan() {
                return Err("logit_bias values must be numbers".into());
            }
            bias.push((id, v));
        }
        bias.sort_unstable_by_key(|&(id, _)| id);
        Ok(bias)
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature < 1e-6 || self.top_k == 1
    }

    fn has_penalties(&self) -> bool {
        self.frequency_penalty != 0.0 || self.presence_penalty != 0.0 || self.repetition_penalty != 1.0
    }
}

/// A request's own random stream (SplitMix64-seeded xorshift64*): independent of batch mates.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// What one request carries between steps for sampling.
pub struct SamplingState {
    pub params: SamplingParams,
    /// logit_bias parsed into (token, bias), sorted.
    pub bias: Vec<(u32, f32)>,
    pub rng: Rng,
    /// Occurrences of each generated token (frequency/presence penalties).
    output_counts: HashMap<u32, u32>,
    /// Prompt tokens (repetition penalty covers prompt and output, as in HF/SGLang).
    prompt_set: HashSet<u32>,
}

impl SamplingState {
    pub fn new(params: SamplingParams, bias: Vec<(u32, f32)>, seed: u64, prompt: &[u32]) -> Self {
        let prompt_set = if params.repetition_penalty != 1.0 { prompt.iter().copied().collect() } else { HashSet::new() };
        SamplingState { params, bias, rng: Rng::new(seed), output_counts: HashMap::new(), prompt_set }
    }

    /// Records a generated token for the penalties.
    pub fn observe(&mut self, token: u32) {
        if self.params.has_penalties() {
            *self.output_counts.entry(token).or_insert(0) += 1;
        }
    }
}

/// The chosen token with its logprob and, when asked, the top-N alternatives.
pub struct Sampled {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Scratch buffers reused across calls so the hot path does not allocate per token.
#[derive(Default)]
pub struct Sampler {
    work: Vec<f32>,
    order: Vec<u32>,
    weights: Vec<f32>,
}

impl Sampler {
    /// Samples one token. `suppress` lists ids masked this step (EOS/stop before min_new_tokens).
    /// `top_n` > 0 also returns that many top logprobs; without `want_logprob` the logprob is NaN
    /// (the log-softmax pass is skipped).
    pub fn sample(
        &mut self,
        raw: &[f32],
        st: &mut SamplingState,
        suppress: &[u32],
        want_logprob: bool,
        top_n: usize,
    ) -> Sampled {
        let edited = !st.bias.is_empty() || !suppress.is_empty() || st.params.has_penalties();
        let logits: &[f32] = if edited {
            self.work.clear();
            self.work.extend_from_slice(raw);
            apply_edits(&mut self.work, st, suppress);
            &self.work
        } else {
            raw
        };
        let token = if st.params.is_greedy() {
            argmax(logits)
        } else {
            draw(logits, &st.params, &mut st.rng, &mut self.order, &mut self.weights)
        };
        if !want_logprob {
            return Sampled { token, logprob: f32::NAN, top: Vec::new() };
        }
        let lse = log_sum_exp(logits);
        let top = if top_n > 0 { top_logprobs(logits, lse, top_n, &mut self.order) } else { Vec::new() };
        Sampled { token, logprob: logits[token as usize] - lse, top }
    }
}

fn apply_edits(l: &mut [f32], st: &SamplingState, suppress: &[u32]) {
    let p = &st.params;
    if p.repetition_penalty != 1.0 {
        let seen = st.prompt_set.iter().chain(st.output_counts.keys().filter(|t| !st.prompt_set.contains(t)));
        for &t in seen {
            if let Some(x) = l.get_mut(t as usize) {
                *x = if *x > 0.0 { *x / p.repetition_penalty } else { *x * p.repetition_penalty };
            }
        }
    }
    if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
        for (&t, &c) in &st.output_counts {
            if let Some(x) = l.get_mut(t as usize) {
                *x -= p.frequency_penalty * c as f32 + p.presence_penalty;
            }
        }
    }
    for &(t, b) in &st.bias {
        l[t as usize] += b;
    }
    for &t in suppress {
        if let Some(x) = l.get_mut(t as usize) {
            *x = f32::NEG_INFINITY;
        }
    }
}

pub fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in l.iter().enumerate() {
        // Strict > keeps the lowest id on ties (deterministic, like torch.argmax).
        if x > l[best] {
            best = i;
        }
    }
    best as u32
}

pub fn log_sum_exp(l: &[f32]) -> f32 {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    let sum: f32 = l.iter().map(|&x| (x - max).exp()).sum();
    max + sum.ln()
}

fn top_logprobs(l: &[f32], lse: f32, n: usize, order: &mut Vec<u32>) -> Vec<(u32, f32)> {
    let n = n.min(l.len());
    order.clear();
    order.extend(0..l.len() as u32);
    let desc = |a: &u32, b: &u32| l[*b as usize].total_cmp(&l[*a as usize]).then(a.cmp(b));
    if n < order.len() {
        order.select_nth_unstable_by(n - 1, desc);
        order.truncate(n);
    }
    order.sort_unstable_by(desc);
    order.iter().map(|&i| (i, l[i as usize] - lse)).collect()
}

/// Temperature, top_k, top_p, min_p, then a draw.
fn draw(l: &[f32], p: &SamplingParams, rng: &mut Rng, order: &mut Vec<u32>, weights: &mut Vec<f32>) -> u32 {
    let inv_t = 1.0 / p.temperature;
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let top_k = if p.top_k > 0 && (p.top_k as usize) < l.len() { Some(p.top_k as usize) } else { None };
    let u = rng.next_f32();
    if top_k.is_none() && p.top_p >= 1.0 {
        // No ordering needed: one pass for the mass, one for the draw.
        weights.clear();
        weights.extend(l.iter().map(|&x| ((x - max) * inv_t).exp()));
        let p_floor = p.min_p; // relative to the max weight, which is exactly 1
        let total: f32 = weights.iter().filter(|&&w| w >= p_floor).sum();
        let mut target = u * total;
        let mut last = argmax(l);
        for (i, &w) in weights.iter().enumerate() {
            if w < p_floor || w == 0.0 {
                continue;
            }
            last = i as u32;
            target -= w;
            if target < 0.0 {
                return i as u32;
            }
        }
        return last;
    }
    order.clear();
    order.extend(0..l.len() as u32);
    let desc = |a: &u32, b: &u32| l[*b as usize].total_cmp(&l[*a as usize]).then(a.cmp(b));
    if let Some(k) = top_k {
        order.select_nth_unstable_by(k - 1, desc);
        order.truncate(k);
    }
    order.sort_unstable_by(desc);
    weights.clear();
    weights.extend(order.iter().map(|&i| ((l[i as usize] - max) * inv_t).exp()));
    let total: f32 = weights.iter().sum();
    // top_p: smallest head whose mass reaches top_p (always at least one token).
    let mut keep = weights.len();
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        for (i, &w) in weights.iter().enumerate() {
            acc += w / total;
            if acc >= p.top_p {
                keep = i + 1;
                break;
            }
        }
    }
    if p.min_p > 0.0 {
        let floor = weights[0] * p.min_p;
        keep = keep.min(weights.iter().take_while(|&&w| w >= floor).count().max(1));
    }
    let kept: f32 = weights[..keep].iter().sum();
    let mut target = u * kept;
    for (i, &w) in weights[..keep].iter().enumerate() {
        target -= w;
        if target < 0.0 {
            return order[i];
        }
    }
    order[keep - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(params: SamplingParams, seed: u64) -> SamplingState {
        let bias = params.validate(8).unwrap();
        SamplingState::new(params, bias, seed, &[])
    }

    #[test]
    fn greedy_takes_argmax_and_reports_logprob() {
        let logits = [0.0, 3.0, 1.0, -1.0];
        let mut st = state(SamplingParams { temperature: 0.0, ..Default::default() }, 1);
        let s = Sampler::default().sample(&logits, &mut st, &[], true, 2);
        assert_eq!(s.token, 1);
        let lse = log_sum_exp(&logits);
        assert!((s.logprob - (3.0 - lse)).abs() < 1e-6);
        assert_eq!(s.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn bias_and_suppression_change_the_choice() {
        let logits = [0.0, 3.0, 1.0, -1.0];
        let mut bias = HashMap::new();
        bias.insert("3".to_string(), 10.0);
        let mut st = state(SamplingParams { temperature: 0.0, logit_bias: bias, ..Default::default() }, 1);
        let mut sampler = Sampler::default();
        assert_eq!(sampler.sample(&logits, &mut st, &[], false, 0).token, 3);
        assert_eq!(sampler.sample(&logits, &mut st, &[3], false, 0).token, 1);
    }

    #[test]
    fn seeded_draws_repeat_and_top_k_limits_support() {
        let logits: Vec<f32> = (0..8).map(|i| (i as f32 * 0.3).sin()).collect();
        let params = SamplingParams { temperature: 1.0, top_k: 3, ..Default::default() };
        let run = |seed| {
            let mut st = state(params.clone(), seed);
            let mut s = Sampler::default();
            (0..200).map(|_| s.sample(&logits, &mut st, &[], false, 0).token).collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        let mut allowed: Vec<u32> = (0..8).collect();
        allowed.sort_by(|&x, &y| logits[y as usize].total_cmp(&logits[x as usize]));
        allowed.truncate(3);
        assert!(a.iter().all(|t| allowed.contains(t)));
        let distinct: HashSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), 3);
    }

    #[test]
    fn tiny_top_p_is_greedy() {
        let logits = [0.5, 2.0, 1.9, 0.0];
        let mut st = state(SamplingParams { temperature: 1.0, top_p: 0.01, ..Default::default() }, 3);
        let mut s = Sampler::default();
        assert!((0..100).all(|_| s.sample(&logits, &mut st, &[], false, 0).token == 1));
    }

    #[test]
    fn frequency_penalty_discourages_repeats() {
        let logits = [0.0, 1.0, 0.9, 0.0];
        let mut st = state(SamplingParams { temperature: 0.0, frequency_penalty: 1.0, ..Default::default() }, 3);
        let mut s = Sampler::default();
        let first = s.sample(&logits, &mut st, &[], false, 0).token;
        st.observe(first);
        let second = s.sample(&logits, &mut st, &[], false, 0).token;
        assert_eq!((first, second), (1, 2));
    }

    #[test]
    fn validation_rejects_nonsense() {
        assert!(SamplingParams { top_p: 0.0, ..Default::default() }.validate(8).is_err());
        assert!(SamplingParams { top_k: 0, ..Default::default() }.validate(8).is_err());
        assert!(SamplingParams { stop_token_ids: vec![9], ..Default::default() }.validate(8).is_err());
        assert!(SamplingParams { temperature: f32::NAN, ..Default::default() }.validate(8).is_err());
    }
}
