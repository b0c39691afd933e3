//! A circuit breaker with resilience4j's semantics.
//!
//! - **Closed**: calls pass; outcomes go into a count-based sliding window of
//!   the last `window_size` calls. Once at least `minimum_calls` are in the
//!   window and the failure rate is **≥** `failure_rate_threshold`, it opens.
//! - **Open**: calls are refused (with how long until a probe is allowed)
//!   until `open_wait` has passed; the next call attempt then moves it to
//!   half-open (lazily, as resilience4j does by default).
//! - **Half-open**: `half_open_calls` probe calls are let through; when they
//!   have all completed the failure rate of the probes decides: ≥ threshold
//!   → open again, else closed with a fresh window.
//!
//! Outcomes are fed in by the caller ([`CircuitBreaker::record`]), so the
//! state machine is tested without sleeping, on a [`ManualClock`](crate::clock::ManualClock).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};

/// The breaker's settings (resilience4j's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Calls in the sliding window (default 100).
    pub window_size: usize,
    /// Opens when the failure rate is at least this, in percent (default 50).
    pub failure_rate_threshold: f64,
    /// No rate is judged below this many calls in the window (default 100;
    /// capped at `window_size`).
    pub minimum_calls: usize,
    /// How long it stays open before a probe is allowed (default 60 s).
    pub open_wait: Duration,
    /// Probe calls allowed in half-open (default 10).
    pub half_open_calls: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window_size: 100,
            failure_rate_threshold: 50.0,
            minimum_calls: 100,
            open_wait: Duration::from_secs(60),
            half_open_calls: 10,
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probe calls pass.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open`, `half_open` (for `/health`).
    pub fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A refused call: the breaker is open (or its probes are all in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is {state:?}: call not permitted (retry after {retry_after:?})")]
pub struct NotPermitted {
    /// The state that refused.
    pub state: BreakerState,
    /// When a call may be tried again (zero in half-open: when a probe completes).
    pub retry_after: Duration,
}

struct Inner {
    state: BreakerState,
    window: VecDeque<bool>,
    failures: usize,
    opened_at: Option<Instant>,
    probes_started: usize,
    probe_results: Vec<bool>,
    not_permitted: u64,
}

/// One breaker (one per peer a service calls).
#[derive(Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    inner: Arc<Mutex<Inner>>,
}

impl CircuitBreaker {
    /// A closed breaker on the real clock.
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A closed breaker on a given clock.
    pub fn with_clock(config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        CircuitBreaker {
            config,
            clock,
            inner: Arc::new(Mutex::new(Inner {
                state: BreakerState::Closed,
                window: VecDeque::with_capacity(config.window_size),
                failures: 0,
                opened_at: None,
                probes_started: 0,
                probe_results: Vec::new(),
                not_permitted: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current state (an open breaker whose wait is over still reads
    /// open until the next call attempt moves it to half-open).
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Back to closed with an empty window (a test's teardown, after it
    /// tripped the breaker on purpose).
    pub fn reset(&self) {
        let mut i = self.lock();
        i.state = BreakerState::Closed;
        i.window.clear();
        i.failures = 0;
        i.opened_at = None;
        i.probes_started = 0;
        i.probe_results.clear();
    }

    /// How many calls were refused.
    pub fn not_permitted(&self) -> u64 {
        self.lock().not_permitted
    }

    /// The failure rate of the current window, percent (`None` below the minimum calls).
    pub fn failure_rate(&self) -> Option<f64> {
        let i = self.lock();
        self.rate(&i)
    }

    fn rate(&self, i: &Inner) -> Option<f64> {
        let min = self
            .config
            .minimum_calls
            .min(self.config.window_size)
            .max(1);
        (i.window.len() >= min).then(|| i.failures as f64 * 100.0 / i.window.len() as f64)
    }

    /// Asks to make a call. `Ok` means go ahead and [`record`](Self::record) its outcome.
    pub fn try_acquire(&self) -> Result<(), NotPermitted> {
        let now = self.clock.now();
        let mut i = self.lock();
        if i.state == BreakerState::Open {
            let opened = i.opened_at.unwrap_or(now);
            let waited = now.saturating_duration_since(opened);
            if waited < self.config.open_wait {
                i.not_permitted += 1;
                return Err(NotPermitted {
                    state: BreakerState::Open,
                    retry_after: self.config.open_wait - waited,
                });
            }
            i.state = BreakerState::HalfOpen;
            i.probes_started = 0;
            i.probe_results.clear();
        }
        if i.state == BreakerState::HalfOpen {
            if i.probes_started >= self.config.half_open_calls.max(1) {
                i.not_permitted += 1;
                return Err(NotPermitted {
                    state: BreakerState::HalfOpen,
                    retry_after: Duration::ZERO,
                });
            }
            i.probes_started += 1;
        }
        Ok(())
    }

    /// Records the outcome of a permitted call.
    pub fn record(&self, success: bool) {
        let now = self.clock.now();
        let mut i = self.lock();
        match i.state {
            BreakerState::Closed => {
                i.window.push_back(success);
                if !success {
                    i.failures += 1;
                }
                if i.window.len() > self.config.window_size.max(1) {
                    if let Some(false) = i.window.pop_front() {
                        i.failures -= 1;
                    }
                }
                if self
                    .rate(&i)
                    .is_some_and(|r| r >= self.config.failure_rate_threshold)
                {
                    i.state = BreakerState::Open;
                    i.opened_at = Some(now);
                }
            }
            BreakerState::HalfOpen => {
                i.probe_results.push(success);
                if i.probe_results.len() >= self.config.half_open_calls.max(1) {
                    let failed = i.probe_results.iter().filter(|ok| !**ok).count();
                    let rate = failed as f64 * 100.0 / i.probe_results.len() as f64;
                    if rate >= self.config.failure_rate_threshold {
                        i.state = BreakerState::Open;
                        i.opened_at = Some(now);
                    } else {
                        i.state = BreakerState::Closed;
                        i.window.clear();
                        i.failures = 0;
                    }
                }
            }
            // An outcome arriving after the breaker opened (a slow call) is not counted.
            BreakerState::Open => {}
        }
    }
}
