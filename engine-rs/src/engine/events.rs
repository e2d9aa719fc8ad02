//! The event queue between the scheduler thread and llm_engine_wait / llm_engine_drain.
//! Records are serialized JSON objects; drain hands out whole records only.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Queue {
    records: VecDeque<String>,
    stopping: bool,
}

#[derive(Default)]
pub struct EventQueue {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// What `wait` saw.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitResult {
    Pending(usize),
    Timeout,
    Stopping,
}

impl EventQueue {
    pub fn push_all(&self, records: &mut Vec<String>) {
        if records.is_empty() {
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.records.extend(records.drain(..));
        self.ready.notify_all();
    }

    pub fn stop(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.stopping = true;
        self.ready.notify_all();
    }

    /// Pending events are reported even while stopping, so final records are not lost.
    pub fn wait(&self, timeout: Duration) -> WaitResult {
        let deadline = Instant::now() + timeout;
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if !q.records.is_empty() {
                return WaitResult::Pending(q.records.len());
            }
            if q.stopping {
                return WaitResult::Stopping;
            }
            let now = Instant::now();
            if now >= deadline {
                return WaitResult::Timeout;
            }
            q = self.ready.wait_timeout(q, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Writes `[rec,rec,...]` with as many whole records as fit into `buf`.
    /// Err(needed) when not even the first record fits (nothing is consumed).
    pub fn drain_into(&self, buf: &mut [u8]) -> Result<usize, usize> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let first_need = q.records.front().map_or(2, |r| r.len() + 2);
        if buf.len() < first_need {
            return Err(first_need);
        }
        buf[0] = b'[';
        let mut at = 1;
        let mut taken = 0;
        for rec in q.records.iter() {
            let sep = usize::from(taken > 0);
            if at + sep + rec.len() + 1 > buf.len() {
                break;
            }
            if sep == 1 {
                buf[at] = b',';
                at += 1;
            }
            buf[at..at + rec.len()].copy_from_slice(rec.as_bytes());
            at += rec.len();
            taken += 1;
        }
        buf[at] = b']';
        q.records.drain(..taken);
        Ok(at + 1)
    }

    pub fn pending(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).records.len()
    }
}
