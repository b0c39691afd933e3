//! The retry policy of one test: how many more attempts, which failures
//! earn one, and how long to wait before each (nextest's model: a fixed or
//! exponential delay, optional jitter, a maximum delay).
//!
//! ```
//! # extern crate service_test_harness as service_test;
//! use std::time::Duration;
//! use service_test::retry::{RetryPolicy, RetryOn};
//! use service_test::config::Backoff;
//!
//! let policy = RetryPolicy {
//!     count: 3,
//!     backoff: Backoff::Exponential,
//!     delay: Duration::from_millis(100),
//!     max_delay: Some(Duration::from_millis(250)),
//!     jitter: false,
//!     on: RetryOn::Any,
//! };
//! assert_eq!(policy.delay_before(1, 0), Duration::from_millis(100));
//! assert_eq!(policy.delay_before(2, 0), Duration::from_millis(200));
//! assert_eq!(policy.delay_before(3, 0), Duration::from_millis(250));
//! ```

use std::time::Duration;

use crate::config::{Backoff, RetriesSetting, RetryOnKind, RetryOnSetting};
use crate::events::Outcome;

/// Which failures are retried.
#[derive(Debug, Clone)]
pub enum RetryOn {
    /// Failures, errors and timeouts.
    Any,
    /// Timeouts only.
    Timeout,
    /// Failures (and errors) whose message matches.
    Message(regex::Regex),
}

/// How a failing test is retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub count: u32,
    /// Fixed or exponential delay.
    pub backoff: Backoff,
    /// The delay before the first retry.
    pub delay: Duration,
    /// The cap exponential backoff stops at.
    pub max_delay: Option<Duration>,
    /// Scale each delay by a factor in [0.5, 1], drawn from `jitter_draw`.
    pub jitter: bool,
    /// Which failures earn a retry.
    pub on: RetryOn,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            count: 0,
            backoff: Backoff::Fixed,
            delay: Duration::ZERO,
            max_delay: None,
            jitter: false,
            on: RetryOn::Any,
        }
    }
}

impl RetryPolicy {
    /// The policy a config `retries` and `retry-on` describe. A `retry-on`
    /// message was checked as a regular expression when the file was read.
    pub fn from_settings(retries: Option<&RetriesSetting>, on: Option<&RetryOnSetting>) -> Self {
        let mut p = RetryPolicy::default();
        match retries {
            None => {}
            Some(RetriesSetting::Count(n)) => p.count = *n,
            Some(RetriesSetting::Policy(t)) => {
                p.count = t.count;
                p.backoff = t.backoff;
                p.delay = t.delay.map_or(Duration::ZERO, |d| d.0);
                p.max_delay = t.max_delay.map(|d| d.0);
                p.jitter = t.jitter;
            }
        }
        p.on = match on {
            None | Some(RetryOnSetting::Kind(RetryOnKind::Any)) => RetryOn::Any,
            Some(RetryOnSetting::Kind(RetryOnKind::Timeout)) => RetryOn::Timeout,
            Some(RetryOnSetting::Message { message }) => match regex::Regex::new(message) {
                Ok(re) => RetryOn::Message(re),
                // Unreachable after the config check; retry nothing rather than everything.
                Err(_) => RetryOn::Message(regex::Regex::new("$^").expect("a valid regex")),
            },
        };
        p
    }

    /// Does this outcome earn another attempt (count aside)?
    pub fn retries(&self, outcome: &Outcome) -> bool {
        if !outcome.is_failure() {
            return false;
        }
        match &self.on {
            RetryOn::Any => true,
            RetryOn::Timeout => matches!(outcome, Outcome::TimedOut(_)),
            RetryOn::Message(re) => match outcome {
                Outcome::Failed(m) | Outcome::Error(m) => re.is_match(m),
                _ => false,
            },
        }
    }

    /// The wait before retry number `retry` (1 = the second attempt).
    /// `jitter_draw` is a random `u64` (seeded per test and attempt), used
    /// only with `jitter`.
    pub fn delay_before(&self, retry: u32, jitter_draw: u64) -> Duration {
        let base = match self.backoff {
            Backoff::Fixed => self.delay,
            Backoff::Exponential => self
                .delay
                .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1).min(31))),
        };
        let capped = match self.max_delay {
            Some(max) => base.min(max),
            None => base,
        };
        if self.jitter {
            // A factor in [0.5, 1]: never longer than the plan, never zero.
            let unit = (jitter_draw >> 11) as f64 / (1u64 << 53) as f64;
            capped.mul_f64(0.5 + unit / 2.0)
        } else {
            capped
        }
    }
}
