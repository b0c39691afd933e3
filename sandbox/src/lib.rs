//! The reference system under test (the sandbox).
//!
//! Built so far: the resilience core that every service-to-service call of
//! the mesh goes through, as pure, tested pieces:
//!
//! - [`breaker`]: a per-target circuit breaker with resilience4j's
//!   semantics (count-based sliding window, failure-rate threshold,
//!   minimum calls, wait in open, a limited number of half-open probes),
//!   driven by an injectable [`clock::Clock`];
//! - [`retry`]: which requests may be retried (idempotent methods, or an
//!   idempotency key) and after how long (exponential backoff, full jitter,
//!   seeded);
//! - [`token`]: signed service tokens (HMAC-SHA256; audience = the target
//!   service, tenant, short expiry), and their checks with a reason for
//!   every rejection.
//!
//! The six services, the claim saga and `cargo run -p sandbox -- up` are
//! the next step (issue 3).

pub mod breaker;
pub mod clock;
pub mod retry;
pub mod token;
