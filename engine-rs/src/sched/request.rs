//! One generation request: its tokens, KV page table, sampling state and what it has to report.
//!
//! State machine: Waiting (queue) → Running (prefill chunks, then one decode token per step) →
//! Finished (length | stop | abort). A retraction sends a running request back to Waiting with
//! its generated tokens kept; it re-prefills prompt+output (mostly from the prefix cache).

use std::fmt::Write;

use serde::Deserialize;

use crate::kv::pool::PageTable;
use crate::kv::radix::{NodeId, ROOT};
use crate::sample::{SamplingParams, SamplingState};

/// The submit payload of engine.h.
#[derive(Deserialize)]
pub struct SubmitJson {
    pub input_ids: Vec<u32>,
    #[serde(default)]
    pub rid: Option<String>,
    #[serde(default)]
    pub sampling: SamplingParams,
    #[serde(default)]
    pub return_logprob: bool,
    #[serde(default)]
    pub top_logprobs_num: usize,
    #[serde(default = "minus_one")]
    pub logprob_start_len: i64,
}

fn minus_one() -> i64 {
    -1
}

#[derive(Clone, Debug, PartialEq)]
pub enum Finish {
    Length(usize),
    Stop(u32),
    Abort(String),
}

/// Output gathered during one step, turned into one event record.
#[derive(Default)]
pub struct Pending {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    pub finish: Option<Finish>,
}

pub struct Request {
    pub id: u64,
    pub rid: Option<String>,
    /// Prompt followed by the generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub max_new_tokens: usize,
    /// EOS ids (unless ignore_eos) and stop_token_ids, sorted.
    pub stop_ids: Vec<u32>,
    pub sampling: SamplingState,
    pub return_logprob: bool,
    pub top_logprobs_num: usize,
    /// First prompt position whose input logprob is wanted (None: no input logprobs).
    pub input_logprob_start: Option<usize>,
    pub input_logprobs: Vec<Option<f32>>,
    pub input_top_logprobs: Vec<Vec<(u32, f32)>>,
    input_logprobs_sent: bool,
    pub table: PageTable,
    /// Positions whose KV is in the cache (`table` covers at least these).
    pub computed: usize,
    /// Radix node locked for this request's prefix (ROOT: none).
    pub lock_node: NodeId,
    /// Prompt tokens served from the prefix cache at first admission.
    pub cached_tokens: usize,
    pub admitted_once: bool,
    pub pending: Pending,
}

impl Request {
    pub fn new(
        id: u64,
        submit: SubmitJson,
        sampling: SamplingState,
        max_new_tokens: usize,
        stop_ids: Vec<u32>,
    ) -> Self {
        let prompt_len = submit.input_ids.len();
        let input_logprob_start = (submit.return_logprob && submit.logprob_start_len >= 0)
            .then(|| (submit.logprob_start_len as usize).min(prompt_len));
        let mut tokens = submit.input_ids;
        tokens.reserve(max_new_tokens);
        Request {
            id,
            rid: submit.rid,
            tokens,
            prompt_len,
            max_new_tokens,
            stop_ids,
            sampling,
            return_logprob: submit.return_logprob,
            top_logprobs_num: submit.top_logprobs_num,
            input_logprob_start,
            input_logprobs: Vec::new(),
            input_top_logprobs: Vec::new(),
            input_logprobs_sent: false,
            table: PageTable::default(),
            computed: 0,
            lock_node: ROOT,
            cached_tokens: 0,
            admitted_once: false,
            pending: Pending::default(),
        }
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Tokens still to feed before the next token can be sampled.
    pub fn to_feed(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// Input logprobs are still to be computed (so the prompt must run, not come from cache).
    pub fn wants_input_logprobs(&self) -> bool {
        self.input_logprob_start.is_some() && !self.input_logprobs_sent
    }

    /// Longest prefix the cache may serve: leaves at least one token to run (its logits pick the
    /// next token) and, for input logprobs, the positions that produce them.
    pub fn cacheable_prefix(&self) -> usize {
        let mut limit = self.tokens.len() - 1;
        if self.wants_input_logprobs() {
            limit = limit.min(self.input_logprob_start.unwrap_or(0).saturating_sub(1));
        }
        limit
    }

    pub fn is_stop(&self, token: u32) -> bool {
        self.stop_ids.binary_search(&token).is_ok()
    }

    pub fn is_done(&self) -> bool {
        self.pending.finish.is_some()
    }

    pub fn has_output(&self) -> bool {
        !self.pending.tokens.is_empty() || self.pending.finish.is_some()
    }

    /// The event record of this step (engine.h's drain format); clears the pending output.
    pub fn take_record(&mut self) -> String {
        let p = std::mem::take(&mut self.pending);
        let mut s = String::with_capacity(96 + 8 * p.tokens.len());
        let _ = write!(s, "{{\"id\":{},\"tokens\":[", self.id);
        join(&mut s, &p.tokens, |s, t| {
            let _ = write!(s, "{t}");
        });
        s.push(']');
        if self.return_logprob {
            s.push_str(",\"logprobs\":[");
            join(&mut s, &p.logprobs, |s, &x| write_f32(s, x));
            s.push(']');
            if self.top_logprobs_num > 0 {
                s.push_str(",\"top_logprobs\":");
                write_tops(&mut s, &p.top_logprobs);
            }
            let first_output = !p.tokens.is_empty() || p.finish.is_some();
            if self.input_logprob_start.is_some() && !self.input_logprobs_sent && first_output {
                self.input_logprobs_sent = true;
                s.push_str(",\"input_logprobs\":[");
                join(&mut s, &self.input_logprobs, |s, x| match x {
                    Some(v) => write_f32(s, *v),
                    None => s.push_str("null"),
                });
                s.push(']');
                if self.top_logprobs_num > 0 {
                    s.push_str(",\"input_top_logprobs\":");
                    write_tops(&mut s, &self.input_top_logprobs);
                }
            }
        }
        let _ = write!(
            s,
            ",\"prompt_tokens\":{},\"cached_tokens\":{},\"completion_tokens\":{},\"finish\":",
            self.prompt_len,
            self.cached_tokens,
            self.generated()
        );
        match &p.finish {
            None => s.push_str("null"),
            Some(Finish::Length(n)) => {
                let _ = write!(s, "{{\"type\":\"length\",\"length\":{n}}}");
            }
            Some(Finish::Stop(t)) => {
                let _ = write!(s, "{{\"type\":\"stop\",\"matched\":{t}}}");
            }
            Some(Finish::Abort(m)) => {
                s.push_str("{\"type\":\"abort\",\"message\":");
                s.push_str(&serde_json::to_string(m).unwrap_or_else(|_| "\"\"".into()));
                s.push('}');
            }
        }
        s.push('}');
        s
    }
}

fn join<T>(s: &mut String, items: &[T], mut f: impl FnMut(&mut String, &T)) {
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        f(s, x);
    }
}

/// JSON has no infinities: a masked (-inf) logprob is written as null.
fn write_f32(s: &mut String, x: f32) {
    if x.is_finite() {
        let _ = write!(s, "{x}");
    } else {
        s.push_str("null");
    }
}

fn write_tops(s: &mut String, tops: &[Vec<(u32, f32)>]) {
    s.push('[');
    join(s, tops, |s, row| {
        s.push('[');
        join(s, row, |s, &(id, lp)| {
            let _ = write!(s, "[{id},");
            write_f32(s, lp);
            s.push(']');
        });
        s.push(']');
    });
    s.push(']');
}
