//! Partitions and partial degradation between the API and its
//! dependencies, through a chaos proxy in a private mesh's route: a black
//! hole, a reply lost after the request went through, a share of
//! connections reset under load.

use std::time::{Duration, Instant};

use fixtures::Scenario;
use harness::service_test;
use sandbox::Service;
use suites::PrivateMesh;
use traffic::chaos::{Direction, Fault, FaultKind};

use crate::common::{assert_compensated, behind_proxy, intake, observed, one, visit, visit_body};

/// Claim rows of the tests' tenant in billing's table.
const CLAIMS: &str = "SELECT count(*) FROM billing.claims WHERE tenant = 't1'";

/// A black hole between the API and billing (a partition: nothing passes
/// either way): the claim step times out within the call's deadline (1.6 s), the
/// visit answers `504` and the verification is compensated; billing never
/// saw the claim (no row). Healed, the same visit succeeds.
#[service_test(
    resilience,
    chaos,
    real_services,
    services(healthcare_api, billing),
    timeout = "30s"
)]
async fn a_partition_from_billing_times_out_and_is_compensated(own: PrivateMesh, s: Scenario) {
    let mesh = own
        .start(|c| {
            // Room for a loaded machine: a healthy claim answers well
            // within 800 ms; a partitioned one never does.
            c.client.attempt_timeout = Duration::from_millis(800);
            c.client.call_timeout = Duration::from_millis(1600);
            c.client.retry.base = Duration::from_millis(10);
        })
        .await
        .expect("mesh");
    let proxy = behind_proxy(&mesh, Service::BillingEngine, 1).await;
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    let cut = proxy.partition();
    let started = Instant::now();
    let r = api
        .post("/visits", &visit_body(&patient_id, &s))
        .await
        .expect("visit");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.body["failed_step"], "create_claim", "{}", r.body);
    assert_compensated(&r.body);
    assert!(
        took < Duration::from_secs(4),
        "the call's 1.6 s deadline bounds the wait; took {took:?}"
    );
    assert_eq!(one::<i64>(&mesh, CLAIMS).await, 0, "billing saw no claim");
    proxy.remove(cut);
    visit(&api, &patient_id, &s).await;
    assert_eq!(one::<i64>(&mesh, CLAIMS).await, 1);
}

/// The reply is lost after the request went through: billing creates the
/// claim, the proxy resets the connection as the answer comes back, the
/// API retries with the same idempotency key and billing replays the claim
/// it made. Exactly one claim row; the visit's claim id is that row's.
#[service_test(
    resilience,
    chaos,
    retry,
    real_services,
    services(healthcare_api, billing),
    timeout = "30s"
)]
async fn a_lost_reply_is_retried_without_a_duplicate_claim(own: PrivateMesh, s: Scenario) {
    let mesh = own
        .start(|c| {
            // The reply is lost at the TCP level: over TLS the first bytes
            // back would be the handshake, not the reply.
            c.tls = None;
            c.client.retry.max_attempts = 3;
            c.client.retry.base = Duration::from_millis(300);
            c.client.retry.max_delay = Duration::from_millis(300);
        })
        .await
        .expect("mesh");
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    let proxy = behind_proxy(&mesh, Service::BillingEngine, 2).await;
    let lose_reply = proxy.add(
        Fault::new(FaultKind::Reset {
            after: Duration::ZERO,
        })
        .direction(Direction::Downstream),
    );
    // Heal once the lost reply has been seen (the API counts a retry
    // before it waits its backoff): by then billing holds the claim.
    let retried = || {
        mesh.counter(
            Service::HealthcareApi,
            "client_retries_total",
            "target=\"billing-engine\"",
        )
    };
    let heal = async {
        while retried() == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let written = one::<i64>(&mesh, CLAIMS).await;
        proxy.remove(lose_reply);
        written
    };
    let (v, written_before_retry) = tokio::join!(visit(&api, &patient_id, &s), heal);
    assert_eq!(
        written_before_retry, 1,
        "the first attempt went through before its reply was lost"
    );
    assert_eq!(one::<i64>(&mesh, CLAIMS).await, 1, "one claim, not two");
    let id: String = one(&mesh, "SELECT id FROM billing.claims WHERE tenant = 't1'").await;
    assert_eq!(v.body["claim_id"], id.as_str(), "{}", v.body);
}

/// 30 % of the connections to insurance verification are reset when the
/// request arrives, under load (visits from six clients at once, and the
/// proxy taken down between waves so that connections are made afresh):
/// retries keep the end-to-end error rate within the SLO of
/// `POST /visits`. The proxy's draws are seeded: the same connections
/// reset on every run.
#[service_test(
    resilience,
    chaos,
    retry,
    load,
    real_services,
    services(healthcare_api, insurance),
    timeout = "60s"
)]
async fn resets_on_30_percent_of_insurance_connections_stay_within_the_slo(
    own: PrivateMesh,
    s: Scenario,
) {
    let mesh = own
        .start(|c| {
            c.client.retry.max_attempts = 5;
            c.client.retry.base = Duration::from_millis(5);
            c.client.retry.max_delay = Duration::from_millis(50);
        })
        .await
        .expect("mesh");
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    let proxy = behind_proxy(&mesh, Service::InsuranceVerification, 30).await;
    proxy.add(
        Fault::new(FaultKind::Reset {
            after: Duration::ZERO,
        })
        .direction(Direction::Upstream)
        .toxicity(0.3),
    );
    let body = visit_body(&patient_id, &s);
    let (waves, clients, per_client) = (3, 6, 4);
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    let started = Instant::now();
    for _ in 0..waves {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (api, body) = (api.clone(), body.clone());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for _ in 0..per_client {
                        let t = Instant::now();
                        out.push(match api.post("/visits", &body).await {
                            Ok(r) if r.status == 201 => Ok(t.elapsed()),
                            Ok(r) => Err(format!("{}: {}", r.status, r.body)),
                            Err(e) => Err(e.to_string()),
                        });
                    }
                    out
                })
            })
            .collect();
        for t in tasks {
            for r in t.await.expect("client") {
                match r {
                    Ok(d) => samples.push(d),
                    Err(e) => errors.push(e),
                }
            }
        }
        // Drop every connection: the next wave makes new ones.
        proxy.down().await;
        proxy.up().await.expect("proxy up");
    }
    let seen = observed(&samples, errors.len(), started.elapsed());
    let retries = mesh.counter(
        Service::HealthcareApi,
        "client_retries_total",
        "target=\"insurance-verification\"",
    );
    assert!(
        retries >= 1,
        "no connection was reset: the test proved nothing"
    );
    let slo = sandbox::target::slos().of("POST /visits");
    let breaches = slo.breaches(&seen);
    assert!(
        breaches.is_empty(),
        "{} of {} visits failed with {retries} retries (first: {:?}): {}",
        errors.len(),
        samples.len() + errors.len(),
        errors.first(),
        breaches.join("; ")
    );
}
