//! Recovery: a service cut off and restarted by the target's own restart
//! command (`capabilities.restart`), a link that resets every connection
//! and heals, a breaker's whole story, a restart under traffic. Each runs
//! on any target declaring chaos and restart (in process: the mesh's chaos
//! front and control API).

use std::time::Duration;

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{MeshClient, Service, Tenant};
use serde_json::{Value, json};
use suites::{Breakers, Edge, Restarts, Rows, Target, Toxics};

use crate::common::{
    assert_compensated, eventually, failed_visit, intake, standing_claims_settle, visit, visit_body,
};

/// The API's `/health` body.
async fn health(api: &MeshClient) -> Value {
    api.get("/health").await.expect("health").body
}

/// Billing cut off from the API (its link down): the API's `/health`
/// reports it unreachable and degraded, a visit fails and is compensated.
/// Billing restarted by the target's restart command and its link back:
/// it answers on the URL the target declares, the API reports healthy
/// again and visits succeed.
#[service_test(
    resilience,
    chaos,
    health,
    integration,
    exclusive,
    real_services,
    services(healthcare_api, billing_engine),
    timeout = "60s"
)]
async fn stop_and_restart_a_service_on_its_port(
    target: &Target,
    toxics: Toxics,
    restarts: Restarts,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    toxics
        .disable(Edge::To(Service::BillingEngine))
        .await
        .expect("cut billing off");
    let r = api.get("/health").await.expect("health");
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "degraded", "{}", r.body);
    assert_eq!(
        r.body["dependencies"]["billing-engine"]["status"], "unreachable",
        "{}",
        r.body
    );
    let r = failed_visit(&api, &patient_id, &s, 502).await;
    assert_eq!(r.body["compensations"][0]["outcome"], "completed");
    restarts
        .restart(Service::BillingEngine)
        .await
        .expect("restart billing");
    toxics
        .enable(Edge::To(Service::BillingEngine))
        .await
        .expect("bring billing's link back");
    eventually("the API reports healthy again", || async {
        health(&api).await["status"] == "healthy"
    })
    .await;
    visit(&api, &patient_id, &s).await;
}

/// Seed 000 scenario 2 as one story, in real time, with the breaker's
/// settings read from the API's `/config`: baseline (visits succeed,
/// `/health` healthy) → fault (every connection to billing reset) → the
/// visits fail and the breaker opens within its window → degraded
/// operation (visits refused with `503`, reads that do not need billing
/// still served, `/health` degraded with the breaker open) → heal → after
/// the open wait, the half-open probes close the breaker → full function.
#[service_test(
    resilience,
    chaos,
    circuit_breaker,
    exclusive,
    real_services,
    services(healthcare_api, billing_engine),
    timeout = "60s"
)]
async fn baseline_fault_breaker_degraded_heal_recovered(
    target: &Target,
    toxics: Toxics,
    breakers: Breakers,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let breaker = || async {
        health(&api).await["dependencies"]["billing-engine"]["circuit_breaker"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    };

    // Baseline.
    let patient_id = intake(&api, &s).await;
    visit(&api, &patient_id, &s).await;
    assert_eq!(health(&api).await["status"], "healthy");

    // Fault: the link to billing resets every connection.
    let reset = toxics
        .add(
            Service::BillingEngine,
            json!({"name": "reset_billing", "type": "reset_peer", "stream": "upstream",
                   "toxicity": 1.0, "attributes": {"timeout": 0}}),
        )
        .await
        .expect("add the toxic");
    let body = visit_body(&patient_id, &s);
    // Every failed visit is at least one failed call: the breaker must
    // open before a whole window of them.
    let bound = breakers.window_size.max(breakers.minimum_calls);
    let mut failed = 0;
    while breaker().await != "open" {
        assert!(
            failed < bound,
            "the breaker did not open after {failed} failed visits (window {}, minimum {}, threshold {} %)",
            breakers.window_size,
            breakers.minimum_calls,
            breakers.failure_rate_threshold
        );
        let r = api.post("/visits", &body).await.expect("visit");
        assert!(matches!(r.status, 502 | 503), "{}", r.body);
        assert_compensated(&r.body);
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
    let h = health(&api).await;
    assert_eq!(h["status"], "degraded");
    assert_eq!(
        h["dependencies"]["billing-engine"]["circuit_breaker"],
        "open"
    );

    // Heal; after the wait the probes close the breaker.
    toxics
        .remove(Service::BillingEngine, &reset)
        .await
        .expect("remove the toxic");
    tokio::time::sleep(breakers.open_wait + Duration::from_millis(100)).await;
    for _ in 0..breakers.half_open_calls.max(1) {
        visit(&api, &patient_id, &s).await;
    }
    assert_eq!(breaker().await, "closed");
    // Full function.
    visit(&api, &patient_id, &s).await;
    assert_eq!(health(&api).await["status"], "healthy");
}

/// Billing away for 400 ms (its link down) and restarted by the target's
/// restart command while four clients send visits: every visit is answered
/// — `201`, or a `5xx` whose completed steps were all compensated — and
/// nothing is left half-done: one claim row per successful visit (none for
/// a failed one), and every verification not behind a successful visit is
/// cancelled. Some visits failed while billing was away and some succeeded
/// after it came back, or the test proved nothing.
#[service_test(
    resilience,
    chaos,
    integration,
    exclusive,
    real_services,
    services(healthcare_api, insurance_verification, billing_engine),
    timeout = "60s"
)]
async fn a_service_restarted_under_traffic_leaves_nothing_half_done(
    target: &Target,
    toxics: Toxics,
    restarts: Restarts,
    rows: Rows,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
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
    toxics
        .disable(Edge::To(Service::BillingEngine))
        .await
        .expect("cut billing off");
    restarts
        .restart(Service::BillingEngine)
        .await
        .expect("restart billing");
    tokio::time::sleep(Duration::from_millis(400)).await;
    toxics
        .enable(Edge::To(Service::BillingEngine))
        .await
        .expect("bring billing's link back");
    // Long enough for an open breaker (`sandbox up --test-mode`: 2 s) to
    // let visits through again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0i64, 0i64);
    for c in clients {
        for r in c.await.expect("client") {
            match r.status {
                201 => ok += 1,
                502..=504 => {
                    failed += 1;
                    assert_compensated(&r.body);
                }
                other => panic!("a visit answered {other}: {}", r.body),
            }
        }
    }
    assert!(failed > 0, "no visit failed while billing was away");
    // The last visits, after the restart, go through.
    eventually("a visit succeeds after the restart", || async {
        api.post("/visits", &body).await.expect("visit").status == 201
    })
    .await;
    ok += 1;
    // A claim made by a create whose answer was lost is voided by the
    // API once billing answers again (its pending compensation).
    let t: &str = &tenant;
    let standing = standing_claims_settle(&rows, t, ok).await;
    // A claim left behind a visit that did not complete, with what the
    // visit said: the message a failure needs.
    if standing != ok {
        let orphans = rows
            .query(
                "SELECT c.id, c.idempotency_key, c.status, v.status, v.failure
                 FROM billing.claims c LEFT JOIN api.visits v
                   ON v.tenant = c.tenant AND c.idempotency_key = v.saga_id || ':claim'
                 WHERE c.tenant = $1 AND c.status <> 'cancelled' AND (v.status IS DISTINCT FROM 'completed')",
                &[&t],
            )
            .await
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        format!(
                            "{:?} {:?} {:?} {:?} {:?}",
                            r.get::<_, String>(0),
                            r.get::<_, Option<String>>(1),
                            r.get::<_, String>(2),
                            r.get::<_, Option<String>>(3),
                            r.get::<_, Option<String>>(4)
                        )
                    })
                    .collect::<Vec<_>>()
            });
        let pending = rows
            .query(
                "SELECT saga_id, attempts FROM api.pending_compensations WHERE tenant = $1",
                &[&t],
            )
            .await
            .map(|rs| {
                rs.iter()
                    .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, i32>(1)))
                    .collect::<Vec<_>>()
            });
        panic!(
            "one claim per successful visit ({ok}), none for the {failed} failed; claims left behind failed visits (id, key, status, visit, its failure): {orphans:?}; compensations still pending: {pending:?}"
        );
    }
    let verifications: i64 = rows
        .one(
            "SELECT count(*) FROM insurance.verifications WHERE tenant = $1 AND status = 'active'",
            &[&t],
        )
        .await
        .expect("verifications");
    assert_eq!(
        verifications, ok,
        "every verification not behind a successful visit is cancelled"
    );
}
