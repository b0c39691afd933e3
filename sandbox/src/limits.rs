//! The per-tenant rate limit of the API: a token bucket per tenant
//! ([`TenantLimiter`]), refilled at [`RateLimit::per_second`] up to
//! [`RateLimit::burst`]. A request finding its tenant's bucket empty is
//! answered `429 rate_limited` with `Retry-After` (whole seconds until a
//! token is back), counted in `http_rate_limited_total`; other tenants
//! are not slowed by it.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sandbox::limits::{RateLimit, TenantLimiter};
//!
//! let limiter = TenantLimiter::new(RateLimit { per_second: 1, burst: 2 });
//! let now = Instant::now();
//! assert!(limiter.admit_at("a", now).is_ok());
//! assert!(limiter.admit_at("a", now).is_ok());
//! assert_eq!(limiter.admit_at("a", now), Err(Duration::from_secs(1)));
//! assert!(limiter.admit_at("b", now).is_ok());
//! ```

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// A tenant's allowance of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests at once after a quiet spell (the bucket's size).
    pub burst: u32,
}

impl Default for RateLimit {
    /// 50 requests a second, 1000 at once: no suite test sends more than a
    /// thousand requests for one tenant, and a runaway client of one
    /// tenant cannot take the API from the others.
    fn default() -> Self {
        RateLimit {
            per_second: 50,
            burst: 1000,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets past this many are pruned of the full ones (a full bucket is
/// the same as none), so that a stream of new tenant ids cannot grow the
/// map without bound.
const PRUNE_AT: usize = 10_000;

/// A token bucket per tenant.
pub struct TenantLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for TenantLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl TenantLimiter {
    /// Every tenant's bucket full, of `limit`.
    pub fn new(limit: RateLimit) -> TenantLimiter {
        TenantLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Its limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token of `tenant`'s bucket now; `Err` is how long until one
    /// is back (whole seconds, at least one: what `Retry-After` says).
    pub fn admit(&self, tenant: &str) -> Result<(), Duration> {
        self.admit_at(tenant, Instant::now())
    }

    /// [`TenantLimiter::admit`] at `now`.
    pub fn admit_at(&self, tenant: &str, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(self.limit.per_second.max(1));
        let burst = f64::from(self.limit.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(tenant) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / rate).ceil().max(1.0);
        Err(Duration::from_secs(wait as u64))
    }
}

/// The answer to a request over its tenant's limit: `429` with
/// `Retry-After` and the JSON error shape.
pub fn too_many_requests(limit: RateLimit, retry_after: Duration) -> Response {
    let secs = retry_after.as_secs().max(1);
    let mut resp = crate::error::ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "this tenant is over its limit of {} requests per second (bursts of {}); retry after {secs} s",
            limit.per_second, limit.burst
        ),
    )
    .into_response();
    resp.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let l = TenantLimiter::new(RateLimit {
            per_second: 10,
            burst: 5,
        });
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.admit_at("t", t0).is_ok());
        }
        assert_eq!(l.admit_at("t", t0), Err(Duration::from_secs(1)));
        // 0.25 s: two tokens and a half.
        let t1 = t0 + Duration::from_millis(250);
        assert!(l.admit_at("t", t1).is_ok());
        assert!(l.admit_at("t", t1).is_ok());
        assert!(l.admit_at("t", t1).is_err());
        // Ten seconds idle: full again, no more than the burst.
        let t2 = t1 + Duration::from_secs(10);
        for _ in 0..5 {
            assert!(l.admit_at("t", t2).is_ok());
        }
        assert!(l.admit_at("t", t2).is_err());
    }

    #[test]
    fn a_slow_refill_asks_for_a_longer_wait() {
        let l = TenantLimiter::new(RateLimit {
            per_second: 1,
            burst: 1,
        });
        let t0 = Instant::now();
        assert!(l.admit_at("t", t0).is_ok());
        assert_eq!(l.admit_at("t", t0), Err(Duration::from_secs(1)));
        assert!(l.admit_at("t", t0 + Duration::from_secs(1)).is_ok());
    }
}
