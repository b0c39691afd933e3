//! The resilience core: breaker transitions on a manual clock, the retry
//! policy, service-token checks.

use std::sync::Arc;
use std::time::Duration;

use harness::service_test;
use sandbox::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use sandbox::clock::ManualClock;
use sandbox::retry::{AttemptFailure, Backoff, RetryPolicy, is_repeatable, is_transient};
use sandbox::token::{self, Claims, TokenError};

fn breaker(window: usize, min: usize, probes: usize) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let cfg = BreakerConfig {
        window_size: window,
        failure_rate_threshold: 50.0,
        minimum_calls: min,
        open_wait: Duration::from_secs(10),
        half_open_calls: probes,
    };
    (
        CircuitBreaker::with_clock(cfg, Arc::new(clock.clone())),
        clock,
    )
}

fn call(b: &CircuitBreaker, ok: bool) -> bool {
    if b.try_acquire().is_err() {
        return false;
    }
    b.record(ok);
    true
}

#[service_test(unit, circuit_breaker, resilience)]
fn it_opens_when_the_failure_rate_reaches_the_threshold() {
    let (b, _) = breaker(5, 5, 2);
    // F, F, F, S: 4 calls, below the minimum of 5: still closed.
    for ok in [false, false, false, true] {
        assert!(call(&b, ok));
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.failure_rate(), None);
    // A fifth call, a success: 3/5 = 60% >= 50% -> open.
    assert!(call(&b, true));
    assert_eq!(b.state(), BreakerState::Open);
    let refused = b.try_acquire().expect_err("open refuses");
    assert_eq!(refused.state, BreakerState::Open);
    assert_eq!(refused.retry_after, Duration::from_secs(10));
    assert_eq!(b.not_permitted(), 1);
}

#[service_test(unit, circuit_breaker, resilience)]
fn below_the_threshold_it_stays_closed_and_old_outcomes_leave_the_window() {
    let (b, _) = breaker(4, 4, 2);
    for ok in [false, true, true, true, true, true] {
        assert!(call(&b, ok));
    }
    assert_eq!(b.state(), BreakerState::Closed);
    // The early failure slid out of the 4-call window.
    assert_eq!(b.failure_rate(), Some(0.0));
    for ok in [false, false] {
        call(&b, ok);
    }
    assert_eq!(b.failure_rate(), Some(50.0));
    assert_eq!(
        b.state(),
        BreakerState::Open,
        "50% is at the threshold, and at-threshold opens"
    );
}

#[service_test(unit, circuit_breaker, resilience)]
fn after_the_wait_probes_pass_and_successes_close_it() {
    let (b, clock) = breaker(2, 2, 2);
    call(&b, false);
    call(&b, false);
    assert_eq!(b.state(), BreakerState::Open);
    clock.advance(Duration::from_secs(9));
    let refused = b.try_acquire().expect_err("still open");
    assert_eq!(refused.retry_after, Duration::from_secs(1));
    clock.advance(Duration::from_secs(1));
    assert!(b.try_acquire().is_ok(), "first probe");
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.try_acquire().is_ok(), "second probe");
    assert_eq!(
        b.try_acquire().expect_err("no third probe").state,
        BreakerState::HalfOpen
    );
    b.record(true);
    b.record(true);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.failure_rate(), None, "a fresh window");
}

#[service_test(unit, circuit_breaker, resilience)]
fn a_failing_probe_round_opens_it_again_for_another_wait() {
    let (b, clock) = breaker(2, 2, 2);
    call(&b, false);
    call(&b, false);
    clock.advance(Duration::from_secs(10));
    assert!(call(&b, false));
    assert!(call(&b, true));
    assert_eq!(
        b.state(),
        BreakerState::Open,
        "1 of 2 probes failed: 50% >= 50%"
    );
    assert_eq!(
        b.try_acquire().expect_err("open again").retry_after,
        Duration::from_secs(10)
    );
}

#[service_test(unit, retry, resilience)]
fn only_repeatable_requests_and_transient_failures_are_retried() {
    assert!(
        is_repeatable("GET", false)
            && is_repeatable("put", false)
            && is_repeatable("DELETE", false)
    );
    assert!(!is_repeatable("POST", false));
    assert!(
        is_repeatable("POST", true),
        "an idempotency key makes a POST repeatable"
    );
    for f in [
        AttemptFailure::Connection,
        AttemptFailure::Timeout,
        AttemptFailure::Status(503),
        AttemptFailure::Status(429),
    ] {
        assert!(is_transient(f), "{f:?}");
    }
    for s in [400, 401, 404, 409, 422, 500] {
        assert!(!is_transient(AttemptFailure::Status(s)), "{s}");
    }
    let mut b = Backoff::new(RetryPolicy::default(), 1);
    assert!(
        b.next_delay(1, "POST", false, AttemptFailure::Timeout)
            .is_none()
    );
    assert!(
        b.next_delay(1, "GET", false, AttemptFailure::Status(404))
            .is_none()
    );
    assert!(
        b.next_delay(3, "GET", false, AttemptFailure::Timeout)
            .is_none(),
        "3 attempts in all"
    );
}

#[service_test(unit, retry, resilience)]
fn backoff_is_full_jitter_under_an_exponential_cap_and_seeded() {
    let policy = RetryPolicy {
        max_attempts: 10,
        base: Duration::from_millis(100),
        max_delay: Duration::from_millis(1000),
    };
    let b = Backoff::new(policy, 7);
    let caps: Vec<u64> = (1..=6).map(|n| b.ceiling(n).as_millis() as u64).collect();
    assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
    let draws = |seed| {
        let mut b = Backoff::new(policy, seed);
        (1..=5)
            .map(|n| {
                b.next_delay(n, "GET", false, AttemptFailure::Timeout)
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
    };
    let a = draws(7);
    assert_eq!(a, draws(7), "same seed, same delays");
    assert_ne!(a, draws(8));
    for (n, d) in a.iter().enumerate() {
        assert!(*d <= b.ceiling(n as u32 + 1), "delay {d:?} above its cap");
    }
    let spread: Vec<Duration> = (0..50)
        .map(|s| {
            Backoff::new(policy, s)
                .next_delay(4, "GET", false, AttemptFailure::Timeout)
                .unwrap_or_default()
        })
        .collect();
    assert!(
        spread.iter().any(|d| *d < Duration::from_millis(200))
            && spread.iter().any(|d| *d > Duration::from_millis(600)),
        "jitter spans the range"
    );
}

#[service_test(unit, security)]
fn service_tokens_are_checked_for_signature_audience_expiry_and_tenant() {
    let secret = b"sandbox-test-secret";
    let t = token::sign(
        secret,
        "healthcare-api",
        "billing-engine",
        "tenant-1",
        Duration::from_secs(60),
    );
    let claims = token::verify(secret, &t, "billing-engine", "tenant-1").expect("valid");
    assert_eq!(claims.iss, "healthcare-api");
    assert_eq!(
        token::verify(b"another-secret", &t, "billing-engine", "tenant-1"),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        token::verify(secret, &t, "insurance-verification", "tenant-1"),
        Err(TokenError::WrongAudience("billing-engine".into()))
    );
    assert_eq!(
        token::verify(secret, &t, "billing-engine", "tenant-2"),
        Err(TokenError::WrongTenant)
    );
    // Tampered claims under the original signature: another tenant's
    // payload between this token's header and signature.
    let other = token::sign(
        secret,
        "healthcare-api",
        "billing-engine",
        "tenant-2",
        Duration::from_secs(60),
    );
    let parts: Vec<&str> = t.split('.').collect();
    let other_parts: Vec<&str> = other.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    assert_eq!(
        token::verify(secret, &forged, "billing-engine", "tenant-2"),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        token::verify(secret, "not-a-token", "billing-engine", "tenant-1"),
        Err(TokenError::Malformed)
    );
    // `alg: none` is refused by name, before any signature is looked at.
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
    assert_eq!(
        token::verify(secret, &unsigned, "billing-engine", "tenant-1"),
        Err(TokenError::Algorithm("none".into()))
    );
    let at = |iat: u64, nbf: u64, exp: u64| Claims {
        iss: "healthcare-api".into(),
        aud: "billing-engine".into(),
        tenant: "tenant-1".into(),
        exp,
        iat,
        nbf,
        jti: "j1".into(),
        role: None,
        sub: None,
    };
    let expired = token::sign_claims(secret, &at(900, 900, 1_000));
    let leeway = token::LEEWAY;
    assert_eq!(
        token::verify_at(
            secret,
            &expired,
            "billing-engine",
            "tenant-1",
            1_000 + leeway
        ),
        Err(TokenError::Expired)
    );
    assert!(token::verify_at(secret, &expired, "billing-engine", "tenant-1", 999 + leeway).is_ok());
    let early = token::sign_claims(secret, &at(900, 960, 1_000));
    assert_eq!(
        token::verify_at(secret, &early, "billing-engine", "tenant-1", 950),
        Err(TokenError::NotYetValid)
    );
    let long = token::sign_claims(secret, &at(900, 900, 900 + 2 * 3600));
    assert_eq!(
        token::verify_at(secret, &long, "billing-engine", "tenant-1", 901),
        Err(TokenError::LifetimeTooLong(7200))
    );
    assert_eq!(
        token::verify_from(
            secret,
            &t,
            "billing-engine",
            "tenant-1",
            Some("doctor-personalization")
        ),
        Err(TokenError::WrongIssuer {
            iss: "healthcare-api".into(),
            source_service: "doctor-personalization".into()
        })
    );
    assert!(
        token::verify_from(
            secret,
            &t,
            "billing-engine",
            "tenant-1",
            Some("healthcare-api")
        )
        .is_ok()
    );
}

harness::main!();
