//! Recovery: a service stopped and restarted, a link that resets every
//! connection and heals.

use std::time::Duration;

use fixtures::Scenario;
use harness::service_test;
use sandbox::Service;
use serde_json::json;
use suites::PrivateMesh;
use traffic::chaos::{ChaosProxy, Fault, FaultKind};

use crate::common::{intake, visit, visit_body};

/// Stop billing: the API's `/health` reports it unreachable and degraded, a
/// visit fails and is compensated; restart it on the same port: healthy
/// again and visits succeed.
#[service_test(
    resilience,
    health,
    integration,
    real_services,
    services(healthcare_api, billing),
    timeout = "30s"
)]
async fn stop_and_restart_a_service_on_its_port(own: PrivateMesh, s: Scenario) {
    let mesh = own
        .start(|c| c.client.retry.base = Duration::from_millis(5))
        .await
        .expect("mesh");
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    let addr = mesh.addr(Service::BillingEngine);
    mesh.stop(Service::BillingEngine).await;
    let h = api.get("/health").await.expect("health");
    assert_eq!(h.status, 200);
    assert_eq!(h.body["status"], "degraded");
    assert_eq!(
        h.body["dependencies"]["billing-engine"]["status"],
        "unreachable"
    );
    let r = api
        .post("/visits", &visit_body(&patient_id, &s))
        .await
        .expect("visit");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body["compensations"][0]["outcome"], "completed");
    mesh.restart(Service::BillingEngine).await.expect("restart");
    assert_eq!(mesh.addr(Service::BillingEngine), addr);
    let h = api.get("/health").await.expect("health");
    assert_eq!(h.body["status"], "healthy", "{}", h.body);
    visit(&api, &patient_id, &s).await;
}

/// Insurance verification behind a chaos proxy that resets every
/// connection: the visit fails at the first step, nothing is compensated
/// (nothing was done) and no claim is made; healed, the same visit succeeds.
#[service_test(
    resilience,
    chaos,
    real_services,
    services(healthcare_api, insurance),
    timeout = "30s"
)]
async fn a_resetting_link_to_insurance_fails_the_first_step_cleanly(own: PrivateMesh, s: Scenario) {
    let mesh = own
        .start(|c| c.client.retry.base = Duration::from_millis(5))
        .await
        .expect("mesh");
    let proxy = ChaosProxy::start(mesh.addr(Service::InsuranceVerification))
        .await
        .expect("proxy");
    mesh.route(Service::InsuranceVerification, proxy.addr())
        .expect("route");
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    let reset = proxy.add(Fault::new(FaultKind::Reset {
        after: Duration::ZERO,
    }));
    let r = api
        .post("/visits", &visit_body(&patient_id, &s))
        .await
        .expect("visit");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body["failed_step"], "verify_insurance", "{}", r.body);
    assert_eq!(r.body["compensations"], json!([]));
    proxy.remove(reset);
    visit(&api, &patient_id, &s).await;
}

/// Seed 000 scenario 2 as one story, in real time (the breaker's wait
/// kept short): baseline (visits succeed, `/health` healthy) → fault
/// (every connection to billing reset) → the visits fail and the breaker
/// opens → degraded operation (visits refused at once with `503`, reads
/// that do not need billing still served, `/health` degraded) → heal →
/// after the wait a probe closes the breaker → full function (visits
/// succeed, `/health` healthy).
#[service_test(
    resilience,
    chaos,
    circuit_breaker,
    real_services,
    services(healthcare_api, billing),
    timeout = "30s"
)]
async fn baseline_fault_breaker_degraded_heal_recovered(own: PrivateMesh, s: Scenario) {
    let open_wait = Duration::from_millis(400);
    let mesh = own
        .start(|c| {
            c.client.retry.max_attempts = 1;
            c.client.breaker = sandbox::breaker::BreakerConfig {
                window_size: 4,
                failure_rate_threshold: 50.0,
                minimum_calls: 4,
                open_wait,
                half_open_calls: 1,
            };
        })
        .await
        .expect("mesh");
    let proxy = ChaosProxy::start(mesh.addr(Service::BillingEngine))
        .await
        .expect("proxy");
    mesh.route(Service::BillingEngine, proxy.addr())
        .expect("route");
    let api = mesh.client(Service::HealthcareApi, "t1");
    let health = || async { api.get("/health").await.expect("health").body };

    // Baseline.
    let patient_id = intake(&api, &s).await;
    visit(&api, &patient_id, &s).await;
    assert_eq!(health().await["status"], "healthy");

    // Fault: the link to billing resets every connection.
    let reset = proxy.add(Fault::new(FaultKind::Reset {
        after: Duration::ZERO,
    }));
    let body = visit_body(&patient_id, &s);
    let mut failed = 0;
    while mesh.breaker_state(Service::BillingEngine) != Some(sandbox::breaker::BreakerState::Open) {
        assert!(
            failed < 8,
            "the breaker did not open after {failed} failures"
        );
        let r = api.post("/visits", &body).await.expect("visit");
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.body["compensations"][0]["outcome"], "completed");
        failed += 1;
    }

    // Degraded operation.
    let r = api.post("/visits", &body).await.expect("visit");
    assert_eq!(r.status, 503, "{}", r.body);
    let read = api
        .get(&format!("/patients/{patient_id}"))
        .await
        .expect("read");
    assert_eq!(read.status, 200, "reads do not need billing");
    let h = health().await;
    assert_eq!(h["status"], "degraded");
    assert_eq!(
        h["dependencies"]["billing-engine"]["circuit_breaker"],
        "open"
    );

    // Heal; after the wait a probe closes the breaker.
    proxy.remove(reset);
    tokio::time::sleep(open_wait + Duration::from_millis(50)).await;
    visit(&api, &patient_id, &s).await;
    assert_eq!(
        mesh.breaker_state(Service::BillingEngine),
        Some(sandbox::breaker::BreakerState::Closed)
    );
    // Full function.
    visit(&api, &patient_id, &s).await;
    assert_eq!(health().await["status"], "healthy");
}
