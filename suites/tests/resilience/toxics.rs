//! Chaos through a Toxiproxy-compatible API: the same tests drive the
//! chaos front of the in-process sandbox and, on an external target, the
//! Toxiproxy its target file names (`capabilities.chaos`). A toxic affects
//! every call to its service, so these tests run `exclusive`.

use std::time::{Duration, Instant};

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{Service, Tenant};
use serde_json::json;
use suites::{Target, Toxics};

use crate::common::{failed_visit, intake, visit};

/// A 400 ms `latency` toxic on the replies of billing: it is listed on
/// billing's proxy, and a visit (one claim call) takes at least 400 ms
/// while it is there; removed, the visit is fast again.
#[service_test(
    resilience,
    chaos,
    exclusive,
    real_services,
    services(healthcare_api, billing_engine),
    timeout = "30s"
)]
async fn a_latency_toxic_on_billing_slows_the_claim_step(
    target: &Target,
    toxics: Toxics,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let timed = || async {
        let t = Instant::now();
        visit(&api, &patient_id, &s).await;
        t.elapsed()
    };
    // Warm (the first visit of a fresh mesh pays for connections).
    timed().await;
    let name = toxics
        .add(
            Service::BillingEngine,
            json!({"name": "slow_billing", "type": "latency", "stream": "downstream",
                   "toxicity": 1.0, "attributes": {"latency": 400, "jitter": 0}}),
        )
        .await
        .expect("add the toxic");
    let listed = toxics.list(Service::BillingEngine).await.expect("list");
    assert!(
        listed
            .iter()
            .any(|t| t["name"] == name.as_str() && t["type"] == "latency"),
        "{listed:?}"
    );
    let slowed = timed().await;
    assert!(
        slowed >= Duration::from_millis(400),
        "with 400 ms on billing's replies a visit took {slowed:?}"
    );
    toxics
        .remove(Service::BillingEngine, &name)
        .await
        .expect("remove");
    let after = timed().await;
    assert!(
        after + Duration::from_millis(200) < slowed,
        "removed, the toxic still slows visits: {after:?} vs {slowed:?}"
    );
}

/// A `reset_peer` toxic on insurance verification: every connection is
/// reset as the request arrives; the visit fails at its first step with
/// `502`, nothing to compensate, no claim; removed, the same visit
/// succeeds.
#[service_test(
    resilience,
    chaos,
    exclusive,
    real_services,
    services(healthcare_api, insurance_verification),
    timeout = "30s"
)]
async fn a_reset_peer_toxic_on_insurance_fails_the_first_step_cleanly(
    target: &Target,
    toxics: Toxics,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let name = toxics
        .add(
            Service::InsuranceVerification,
            json!({"name": "reset_insurance", "type": "reset_peer", "stream": "upstream",
                   "toxicity": 1.0, "attributes": {"timeout": 0}}),
        )
        .await
        .expect("add the toxic");
    let r = failed_visit(&api, &patient_id, &s, 502).await;
    assert_eq!(r.body["failed_step"], "verify_insurance", "{}", r.body);
    assert_eq!(r.body["compensations"], json!([]));
    toxics
        .remove(Service::InsuranceVerification, &name)
        .await
        .expect("remove");
    let v = visit(&api, &patient_id, &s).await;
    assert!(v.body["claim_id"].is_string(), "{}", v.body);
}
