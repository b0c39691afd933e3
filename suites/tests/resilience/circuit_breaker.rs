//! The API's circuit breakers: open on failures, refuse without calling,
//! probe after the wait, close on success.

use std::sync::Arc;
use std::time::Duration;

use fixtures::Scenario;
use harness::service_test;
use sandbox::breaker::{BreakerConfig, BreakerState};
use sandbox::clock::ManualClock;
use sandbox::{FaultPlan, Service};
use suites::PrivateMesh;

use crate::common::{intake, visit_body};

/// The API's breaker for billing on an injected clock: closed → open after
/// the failure rate reaches the threshold (calls then refused without
/// reaching billing, `/health` shows it) → half-open once the wait has
/// passed on the clock → closed after a successful probe.
#[service_test(
    resilience,
    circuit_breaker,
    integration,
    real_services,
    services(healthcare_api, billing),
    timeout = "30s"
)]
async fn the_breaker_opens_refuses_and_recovers_on_an_injected_clock(
    own: PrivateMesh,
    s: Scenario,
) {
    let clock = ManualClock::new();
    let mesh = own
        .start(|c| {
            c.clock = Arc::new(clock.clone());
            c.client.retry.max_attempts = 1;
            c.client.breaker = BreakerConfig {
                window_size: 4,
                failure_rate_threshold: 50.0,
                minimum_calls: 4,
                open_wait: Duration::from_secs(30),
                half_open_calls: 1,
            };
        })
        .await
        .expect("mesh");
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    let body = visit_body(&patient_id, &s);
    // Billing's window: the intake's sync, then one good claim.
    assert_eq!(api.post("/visits", &body).await.expect("visit").status, 201);
    assert_eq!(
        mesh.breaker_state(Service::BillingEngine),
        Some(BreakerState::Closed)
    );
    let fail_claims = FaultPlan {
        fail_next: 2,
        status: Some(500),
        path_prefix: Some("/claims".into()),
        ..FaultPlan::default()
    };
    mesh.inject(Service::BillingEngine, &fail_claims)
        .await
        .expect("inject");
    // Window: sync ok, claim ok, claim fail, claim fail → 2/4 = 50 % → open.
    for _ in 0..2 {
        assert_eq!(api.post("/visits", &body).await.expect("visit").status, 502);
    }
    assert_eq!(
        mesh.breaker_state(Service::BillingEngine),
        Some(BreakerState::Open)
    );
    let refused = api.post("/visits", &body).await.expect("visit");
    assert_eq!(refused.status, 503, "{}", refused.body);
    let cause = refused.body["cause"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(cause.contains("circuit breaker open"), "{cause}");
    assert_eq!(
        mesh.counter(Service::BillingEngine, "faults_injected_total", ""),
        2,
        "the refused call never reached billing"
    );
    let health = api.get("/health").await.expect("health");
    assert_eq!(
        health.body["dependencies"]["billing-engine"]["circuit_breaker"],
        "open"
    );
    assert_eq!(health.body["status"], "degraded");
    // Not yet: 29 s on the clock.
    clock.advance(Duration::from_secs(29));
    assert_eq!(api.post("/visits", &body).await.expect("visit").status, 503);
    // 30 s: a probe is let through; it succeeds (no faults left): closed.
    clock.advance(Duration::from_secs(1));
    let probe = api.post("/visits", &body).await.expect("visit");
    assert_eq!(probe.status, 201, "{}", probe.body);
    assert_eq!(
        mesh.breaker_state(Service::BillingEngine),
        Some(BreakerState::Closed)
    );
}
