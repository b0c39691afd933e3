//! Recovery: a service stopped and restarted, a link that resets every
//! connection and heals.

use std::time::Duration;

use fixtures::Scenario;
use harness::service_test;
use sandbox::Service;
use serde_json::json;
use suites::PrivateMesh;
use traffic::chaos::{Fault, FaultKind};

use crate::common::{behind_proxy, failed_visit, intake, one, visit, visit_body};

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
    let r = failed_visit(&api, &patient_id, &s, 502).await;
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
    let proxy = behind_proxy(&mesh, Service::InsuranceVerification, 0x5eed).await;
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    let reset = proxy.add(Fault::new(FaultKind::Reset {
        after: Duration::ZERO,
    }));
    let r = failed_visit(&api, &patient_id, &s, 502).await;
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
    let proxy = behind_proxy(&mesh, Service::BillingEngine, 0x5eed).await;
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

/// Billing shut down (gracefully, as a deploy does) and started again
/// while four clients send visits: every visit is answered — `201`, or a
/// `5xx` whose completed steps were all compensated — and nothing is left
/// half-done: one claim row per successful visit (none for a failed one),
/// and every verification not behind a successful visit is cancelled.
/// Some visits failed while billing was away and some succeeded after it
/// came back, or the test proved nothing.
#[service_test(
    resilience,
    integration,
    real_services,
    services(healthcare_api, insurance, billing),
    timeout = "60s"
)]
async fn a_service_restarted_under_traffic_leaves_nothing_half_done(own: PrivateMesh, s: Scenario) {
    let mesh = own
        .start(|c| {
            c.client.retry.base = Duration::from_millis(5);
            c.client.retry.max_delay = Duration::from_millis(20);
            c.client.breaker.open_wait = Duration::from_millis(100);
        })
        .await
        .expect("mesh");
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    let body = visit_body(&patient_id, &s);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (api, body, stop) = (api.clone(), body.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r =
                        tokio::time::timeout(Duration::from_secs(10), api.post("/visits", &body))
                            .await
                            .expect("a visit was never answered")
                            .expect("visit");
                    answers.push(r);
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    mesh.shutdown(Service::BillingEngine).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    mesh.restart(Service::BillingEngine).await.expect("restart");
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0i64, 0i64);
    for c in clients {
        for r in c.await.expect("client") {
            match r.status {
                201 => ok += 1,
                502..=504 => {
                    failed += 1;
                    for c in r.body["compensations"].as_array().into_iter().flatten() {
                        assert_eq!(c["outcome"], "completed", "{}", r.body);
                    }
                }
                other => panic!("a visit answered {other}: {}", r.body),
            }
        }
    }
    assert!(failed > 0, "no visit failed while billing was away");
    // The last visits, after the restart, go through.
    visit(&api, &patient_id, &s).await;
    ok += 1;
    assert_eq!(
        one::<i64>(
            &mesh,
            "SELECT count(*) FROM billing.claims WHERE tenant = 't1' AND status <> 'cancelled'"
        )
        .await,
        ok,
        "one claim per successful visit ({ok}), none for the {failed} failed"
    );
    assert_eq!(
        one::<i64>(
            &mesh,
            "SELECT count(*) FROM insurance.verifications WHERE tenant = 't1' AND status = 'active'"
        )
        .await,
        ok,
        "every verification not behind a successful visit is cancelled"
    );
}
