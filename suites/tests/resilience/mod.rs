//! Resilience: circuit breakers, timeouts and retries, recovery from
//! failures.

mod bulkhead;
mod circuit_breaker;
mod failure_recovery;
mod partitions;
mod timeout_and_retry;
