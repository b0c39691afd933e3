//! When a failed service call may be retried, and after how long.
//!
//! Only requests that are safe to repeat are retried: idempotent methods
//! (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`) or any request carrying an
//! idempotency key. Only failures that may pass are retried: connection
//! errors, timeouts, `429`, `502`, `503`, `504`. The wait before attempt
//! `n` (1-based, after the first) is drawn uniformly from
//! `[0, min(max_delay, base · 2^(n-1))]` ("full jitter"), from a seeded
//! generator so runs repeat.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// How a call attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The connection could not be made or broke.
    Connection,
    /// No answer within the per-attempt timeout.
    Timeout,
    /// An HTTP status other than success.
    Status(u16),
}

/// The retry settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The backoff's base.
    pub base: Duration,
    /// The backoff's cap.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The cap of the wait before retry `n` (1 = the first retry): `base`
    /// doubling with each retry, at most `max_delay`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX));
        exp.min(self.max_delay)
    }
}

/// Work the mesh keeps trying in the background until a peer takes it —
/// the log pipeline's violation reports (`crate::shipper`), the monitor's
/// incident notifications (`crate::compliance::notifier`), the API's kept
/// compensations — waits [`RetryPolicy::ceiling`] of this between tries:
/// 0.25 s doubling to 4 s (bounded by time, [`REDELIVER_FOR`], not by a
/// count of tries).
pub(crate) const REDELIVERY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base: Duration::from_millis(250),
    max_delay: Duration::from_secs(4),
};

/// How long background work ([`REDELIVERY`]) is tried before it is dropped.
pub(crate) const REDELIVER_FOR: Duration = Duration::from_secs(600);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// May a request of `method` (with or without an idempotency key) be repeated?
pub fn is_repeatable(method: &str, has_idempotency_key: bool) -> bool {
    has_idempotency_key
        || matches!(
            method.to_ascii_uppercase().as_str(),
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE"
        )
}

/// May this failure pass if tried again?
pub fn is_transient(failure: AttemptFailure) -> bool {
    match failure {
        AttemptFailure::Connection | AttemptFailure::Timeout => true,
        AttemptFailure::Status(s) => matches!(s, 429 | 502 | 503 | 504),
    }
}

/// The delays of one call's retries.
pub struct Backoff {
    policy: RetryPolicy,
    rng: ChaCha8Rng,
}

impl Backoff {
    /// Delays drawn from a generator seeded with `seed`.
    pub fn new(policy: RetryPolicy, seed: u64) -> Self {
        Backoff {
            policy,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The cap of the wait before retry `n` (1 = the first retry).
    pub fn ceiling(&self, n: u32) -> Duration {
        self.policy.ceiling(n)
    }

    /// Should attempt `attempt` (1-based) that failed with `failure` be
    /// followed by another, and after how long?
    pub fn next_delay(
        &mut self,
        attempt: u32,
        method: &str,
        has_key: bool,
        failure: AttemptFailure,
    ) -> Option<Duration> {
        if attempt >= self.policy.max_attempts
            || !is_repeatable(method, has_key)
            || !is_transient(failure)
        {
            return None;
        }
        let cap = self.ceiling(attempt).as_micros() as u64;
        Some(Duration::from_micros(if cap == 0 {
            0
        } else {
            self.rng.next_u64() % (cap + 1)
        }))
    }
}
