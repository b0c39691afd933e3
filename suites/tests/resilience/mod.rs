//! Resilience: circuit breakers, timeouts and retries, recovery from
//! failures.

mod bulkhead;
mod circuit_breaker;
mod exhaustion;
mod failure_recovery;
mod limits;
mod partitions;
mod storage_failures;
mod timeout_and_retry;
mod toxics;
