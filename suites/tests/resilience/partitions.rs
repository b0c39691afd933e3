//! Partitions and partial degradation between the API and its
//! dependencies: a black hole on the link to billing, a reply lost after
//! the request went through, a share of connections to insurance reset
//! under load. On any target with chaos (Toxiproxy) and faults, the
//! policy read from the API's `/config`.

use std::time::{Duration, Instant};

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{FaultPlan, Service, Tenant};
use serde_json::json;
use suites::{ClientPolicy, Edge, Faults, Rows, Target, Toxics};

use crate::common::{assert_compensated, audited_call, intake, observed, visit, visit_body};

/// The tenant's claim rows in billing's table, cancelled ones too.
async fn claims(rows: &Rows, tenant: &str) -> i64 {
    rows.one::<i64>(
        "SELECT count(*) FROM billing.claims WHERE tenant = $1",
        &[&tenant],
    )
    .await
    .expect("claims")
}

/// A black hole between the API and billing (a partition: `timeout`
/// toxics hold every byte either way): the claim step times out within
/// the call's deadline (from `/config`), the visit answers `504` and the
/// verification is compensated; billing never saw the claim (no row).
/// Healed, the same visit succeeds.
#[service_test(
    resilience,
    chaos,
    exclusive,
    real_services,
    services(healthcare_api, billing_engine),
    timeout = "60s"
)]
async fn a_partition_from_billing_times_out_and_is_compensated(
    target: &Target,
    toxics: Toxics,
    policy: ClientPolicy,
    rows: Rows,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let mut cut = Vec::new();
    for stream in ["upstream", "downstream"] {
        let name = toxics
            .add(
                Service::BillingEngine,
                json!({"name": format!("hole_{stream}"), "type": "timeout", "stream": stream,
                       "toxicity": 1.0, "attributes": {"timeout": 0}}),
            )
            .await
            .expect("add the toxic");
        cut.push(name);
    }
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
        took < policy.call_timeout + Duration::from_secs(2),
        "the call's deadline ({:?}) bounds the wait; took {took:?}",
        policy.call_timeout
    );
    assert_eq!(claims(&rows, &tenant).await, 0, "billing saw no claim");
    for name in cut {
        toxics
            .remove(Service::BillingEngine, &name)
            .await
            .expect("heal");
    }
    visit(&api, &patient_id, &s).await;
    assert_eq!(claims(&rows, &tenant).await, 1);
}

/// The reply is lost after the request went through (billing makes the
/// claim, then its connection breaks before the answer: an injected
/// fault, once): the API retries with the same idempotency key and billing
/// replays the claim it made. Exactly one claim row; the visit's claim id
/// is that row's; the visit's audited call to billing took two attempts
/// (this visit's, not the process-wide retry counter).
///
/// Catches: a lost reply not retried (the visit fails), a retry without
/// the idempotency key (two claims), and a retry that is not this call's.
#[service_test(
    resilience,
    retry,
    exclusive,
    real_services,
    services(healthcare_api, billing_engine),
    timeout = "30s"
)]
async fn a_lost_reply_is_retried_without_a_duplicate_claim(
    target: &Target,
    faults: Faults,
    rows: Rows,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    faults
        .inject(
            Service::BillingEngine,
            &FaultPlan {
                fail_next: 1,
                lose_reply: true,
                tenant: Some(tenant.0.clone()),
                path_prefix: Some("/claims".into()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject");
    let v = visit(&api, &patient_id, &s).await;
    let request_id = v.request_id.clone().expect("request id");
    let call = audited_call(target, &tenant, &request_id, Service::BillingEngine).await;
    assert_eq!(
        call["attempts"], 2,
        "the lost reply retried once; the visit's audited call to billing: {call}"
    );
    assert_eq!(claims(&rows, &tenant).await, 1, "one claim, not two");
    let t: &str = &tenant;
    let id: String = rows
        .one("SELECT id FROM billing.claims WHERE tenant = $1", &[&t])
        .await
        .expect("the claim");
    assert_eq!(v.body["claim_id"], id.as_str(), "{}", v.body);
}

/// A share of the connections to insurance verification is reset as the
/// request arrives (`reset_peer`, toxicity chosen from `/config`'s retry
/// policy and the SLO's error budget: a visit fails only when every one of
/// its attempts draws a reset), under load: six clients at a time, the
/// link cycled between waves so that each visit opens a fresh connection.
/// Retries keep the end-to-end error rate within the SLO of
/// `POST /visits`, and resets did happen.
#[service_test(
    resilience,
    chaos,
    retry,
    load,
    exclusive,
    real_services,
    services(healthcare_api, insurance_verification),
    timeout = "120s"
)]
async fn resets_on_a_share_of_insurance_connections_stay_within_the_slo(
    target: &Target,
    toxics: Toxics,
    policy: ClientPolicy,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let slo = target.slo("POST /visits");
    let budget = slo.max_error_rate.unwrap_or(0.01);
    // A visit fails with probability toxicity^attempts: a tenth of the
    // error budget at most.
    let attempts = f64::from(policy.max_attempts.max(1));
    let toxicity = (budget / 10.0).powf(1.0 / attempts).min(0.3);
    let retries = || {
        target.metric(
            Service::HealthcareApi,
            "client_retries_total",
            &[("target", "insurance-verification")],
        )
    };
    let retries_before = retries().await.expect("metrics");
    toxics
        .add(
            Service::InsuranceVerification,
            json!({"name": "reset_some", "type": "reset_peer", "stream": "upstream",
                   "toxicity": toxicity, "attributes": {"timeout": 0}}),
        )
        .await
        .expect("add the toxic");
    let body = visit_body(&patient_id, &s);
    let (waves, clients) = (34, 6);
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    let started = Instant::now();
    for _ in 0..waves {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (api, body) = (api.clone(), body.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    match api.post("/visits", &body).await {
                        Ok(r) if r.status == 201 => Ok(t.elapsed()),
                        Ok(r) => Err(format!("{}: {}", r.status, r.body)),
                        Err(e) => Err(e.to_string()),
                    }
                })
            })
            .collect();
        for t in tasks {
            match t.await.expect("client") {
                Ok(d) => samples.push(d),
                Err(e) => errors.push(e),
            }
        }
        // Drop every connection: the next wave makes new ones.
        let link = Edge::To(Service::InsuranceVerification);
        toxics.disable(link).await.expect("link down");
        toxics.enable(link).await.expect("link up");
    }
    let seen = observed(&samples, errors.len(), started.elapsed());
    let retried = retries().await.expect("metrics") - retries_before;
    assert!(
        retried >= 1.0,
        "no connection was reset at toxicity {toxicity:.3}: the test proved nothing"
    );
    let breaches = slo.breaches(&seen);
    assert!(
        breaches.is_empty(),
        "{} of {} visits failed with {retried} retries at toxicity {toxicity:.3} (first: {:?}): {}",
        errors.len(),
        samples.len() + errors.len(),
        errors.first(),
        breaches.join("; ")
    );
}
