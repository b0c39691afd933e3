//! Hostile input: arithmetic that would overflow, idempotency keys chosen
//! to collide across tenants. Each is refused or kept apart, never a panic,
//! a tripped breaker or another tenant's data.

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{Service, Tenant};
use serde_json::json;
use suites::Target;

use crate::common::{intake, visit, visit_body};

/// Charges that add up beyond a BIGINT are a `422` naming the problem,
/// from billing directly and through the API's saga (compensated), ten
/// times over; the API's breaker to billing stays closed: the next honest
/// visit completes.
#[service_test(
    security,
    real_services,
    services(healthcare_api, insurance_verification, billing_engine),
    timeout = "40s"
)]
async fn an_overflowing_claim_total_is_a_422_and_trips_nothing(
    target: &Target,
    tenant: Tenant,
    s: Scenario,
) {
    let huge = i64::MAX / 2 + 1;
    let billing = target.client(Service::BillingEngine, &tenant);
    let mut claim = crate::common::claim_body(&s);
    claim["procedures"] = json!([
        {"code": "99213", "charge_cents": huge},
        {"code": "99214", "charge_cents": huge}
    ]);
    let r = billing.post("/claims", &claim).await.expect("claim");
    assert_eq!(r.status, 422, "{}", r.body);
    let codes: Vec<&str> = r.body["fields"]
        .as_array()
        .map(|f| f.iter().filter_map(|p| p["code"].as_str()).collect())
        .unwrap_or_default();
    assert!(codes.contains(&"total_overflow"), "{}", r.body);

    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let mut body = visit_body(&patient_id, &s);
    if let Some(lines) = body["visit"]["lines"].as_array_mut() {
        for line in lines.iter_mut() {
            line["charge_cents"] = json!(huge);
        }
        if lines.len() == 1 {
            let again = lines[0].clone();
            lines.push(again);
        }
    }
    for _ in 0..10 {
        let r = api.post("/visits", &body).await.expect("visit");
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.body["failed_step"], "create_claim", "{}", r.body);
    }
    let ok = visit(&api, &patient_id, &s).await;
    assert_eq!(ok.status, 201, "after ten refusals: {}", ok.body);
}

/// Idempotency keys are kept per tenant whatever they spell: key `k:1` of
/// tenant `T` and key `1` of tenant `T:k` (the same text joined with `:`)
/// make two claims, and neither tenant is answered the other's.
#[service_test(security, real_services, services(billing_engine), timeout = "20s")]
async fn idempotency_keys_cannot_reach_another_tenants_slot(
    target: &Target,
    tenant: Tenant,
    s: Scenario,
) {
    let claim = crate::common::claim_body(&s);
    let other = format!("{}:k", tenant.0);
    let mut ids = Vec::new();
    for (who, key) in [(tenant.0.as_str(), "k:1"), (other.as_str(), "1")] {
        let r = target
            .client(Service::BillingEngine, who)
            .send(
                reqwest::Method::POST,
                "/claims",
                Some(&claim),
                &[("idempotency-key", key)],
            )
            .await
            .expect("create");
        assert_eq!(r.status, 201, "tenant {who}, key {key}: {}", r.body);
        ids.push(r.body["claim_id"].clone());
    }
    assert_ne!(
        ids[0], ids[1],
        "the second tenant was answered the first's claim"
    );
    // A key spelling a Redis pattern is a key like any other; one with
    // spaces or control characters, or longer than 255, is refused (400),
    // never taken as absent (a retried create would run twice).
    let long = "k".repeat(300);
    for (key, status) in [
        ("*", 201),
        ("idem:*", 201),
        ("a b\tc", 400),
        (long.as_str(), 400),
    ] {
        let r = target
            .client(Service::BillingEngine, &tenant)
            .send(
                reqwest::Method::POST,
                "/claims",
                Some(&claim),
                &[("idempotency-key", key)],
            )
            .await
            .expect("create");
        assert_eq!(r.status, status, "key {key:?}: {}", r.body);
        if status == 400 {
            assert_eq!(r.body["error"], "invalid_idempotency_key");
        }
    }
}
