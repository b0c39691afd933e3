//! Resilience: circuit breakers, timeouts and retries, recovery from
//! failures.

mod circuit_breaker;
mod failure_recovery;
mod timeout_and_retry;
