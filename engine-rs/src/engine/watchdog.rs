//! The scheduler watchdog (SGLang's --watchdog-timeout): a step that runs longer than the timeout is
//! logged once with the batch it was running, and the engine reports itself stalled (stats
//! `watchdog_stalled`, which /health turns into 503) until that step ends. It does not kill the
//! process: a stuck forward pass cannot be interrupted safely, but callers must stop being told
//! the server is healthy.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the scheduler thread publishes about the step it is in.
pub struct StepClock {
    origin: Instant,
    /// Milliseconds since `origin` at which the current step began, plus one; 0 while between steps.
    started_ms_plus_one: AtomicU64,
    batch: Mutex<String>,
    stalled: AtomicBool,
}

impl Default for StepClock {
    fn default() -> Self {
        StepClock {
            origin: Instant::now(),
            started_ms_plus_one: AtomicU64::new(0),
            batch: Mutex::new(String::new()),
            stalled: AtomicBool::new(false),
        }
    }
}

impl StepClock {
    /// Called by the scheduler thread before a step; `describe` runs only here, once per step.
    pub fn begin(&self, describe: impl FnOnce() -> String) {
        *self.batch.lock().unwrap_or_else(|e| e.into_inner()) = describe();
        let now = self.origin.elapsed().as_millis() as u64;
        self.started_ms_plus_one.store(now + 1, Ordering::Release);
    }

    pub fn end(&self) {
        self.started_ms_plus_one.store(0, Ordering::Release);
        self.stalled.store(false, Ordering::Release);
    }

    /// How long the current step has run, if one is running.
    pub fn running_for(&self) -> Option<Duration> {
        let started = self.started_ms_plus_one.load(Ordering::Acquire);
        (started != 0).then(|| {
            let now = self.origin.elapsed().as_millis() as u64;
            Duration::from_millis(now.saturating_sub(started - 1))
        })
    }

    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    fn batch(&self) -> String {
        self.batch.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The watchdog thread; stops and is joined on drop.
pub struct Watchdog {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// `timeout` of zero turns the watchdog off (no thread).
    pub fn start(clock: Arc<StepClock>, timeout: Duration) -> Result<Option<Watchdog>, String> {
        if timeout.is_zero() {
            return Ok(None);
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread_stop = stop.clone();
        // Checks a few times per timeout so a stall is seen within ~1.25 timeouts, at most once a second.
        let period = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let thread = std::thread::Builder::new()
            .name("llm-watchdog".into())
            .spawn(move || watch(&clock, timeout, period, &thread_stop))
            .map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
        Ok(Some(Watchdog { stop, thread: Some(thread) }))
    }
}

fn watch(clock: &StepClock, timeout: Duration, period: Duration, stop: &(Mutex<bool>, Condvar)) {
    let (lock, cvar) = stop;
    let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
    while !*stopped {
        stopped = cvar.wait_timeout(stopped, period).unwrap_or_else(|e| e.into_inner()).0;
        let Some(running) = clock.running_for() else { continue };
        if running >= timeout && !clock.stalled.swap(true, Ordering::AcqRel) {
            eprintln!(
                "[{}] Scheduler watchdog: a step has run for {:.1} s (--watchdog-timeout {:.1} s); the server reports unhealthy until it ends. Stuck batch: {}",
                crate::sched::log::timestamp(),
                running.as_secs_f64(),
                timeout.as_secs_f64(),
                clock.batch()
            );
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_step_is_reported_once_and_cleared_when_it_ends() {
        let clock = Arc::new(StepClock::default());
        let _dog = Watchdog::start(clock.clone(), Duration::from_millis(40)).unwrap().unwrap();
        clock.begin(|| "#running-req: 1, rids: [7]".into());
        std::thread::sleep(Duration::from_millis(20));
        assert!(!clock.stalled(), "not yet past the timeout");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !clock.stalled() {
            assert!(Instant::now() < deadline, "stall not detected");
            std::thread::sleep(Duration::from_millis(5));
        }
        clock.end();
        assert!(!clock.stalled());
        assert!(clock.running_for().is_none());
    }

    #[test]
    fn zero_timeout_starts_no_thread() {
        assert!(Watchdog::start(Arc::new(StepClock::default()), Duration::ZERO).unwrap().is_none());
    }
}
