//! Request and answer shapes the services promise.

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{Service, Tenant};
use serde_json::{Value, json};
use suites::Target;

use crate::common::{intake, visit};

/// A completed visit answers 201 with its documented fields and types.
#[service_test(api_contract, real_services, services(healthcare_api), timeout = "30s")]
async fn a_completed_visit_answers_its_documented_fields(
    target: &Target,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    for field in [
        "visit_id",
        "saga_id",
        "verification_id",
        "claim_id",
        "request_id",
    ] {
        assert!(
            v.body[field].is_string(),
            "`{field}` is not a string: {}",
            v.body
        );
    }
    assert_eq!(v.body["status"], "completed");
    let expected: u64 = s.visit.lines.iter().map(|l| l.charge_cents).sum();
    assert_eq!(v.body["total_cents"], json!(expected));
    assert_eq!(
        v.body["request_id"].as_str(),
        v.request_id.as_deref(),
        "body and header disagree"
    );
}

/// Errors are JSON with a machine-readable `error` and a `message`: 401
/// from every service without a token (with the `reason` of the first
/// version too), held to the service's `ErrorBody`; 404 for a missing
/// resource.
#[service_test(
    api_contract,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor,
        business_intelligence,
        doctor_personalization
    ),
    timeout = "20s"
)]
async fn errors_are_json_with_a_code(target: &Target, tenant: Tenant) {
    for service in Service::ALL {
        let r = target
            .http()
            .get(format!("{}/anything", target.url(service)))
            .header("x-tenant-id", tenant.0.as_str())
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 401, "{service}");
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(body["error"], "unauthorized", "{service}: {body}");
        assert!(body["reason"].is_string(), "{service}: {body}");
        // The gate answers before routing: the body is what any route's
        // `default` (ErrorBody) promises.
        let contract = target.contract(service).await.expect("contract");
        contract
            .check("GET", "/config", 401, &body)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for (service, path) in [
        (Service::HealthcareApi, "/patients/pat-none"),
        (Service::InsuranceVerification, "/verifications/ver-none"),
        (Service::BillingEngine, "/claims/clm-none"),
        (
            Service::DoctorPersonalization,
            "/doctors/1234567893/preferences",
        ),
    ] {
        let r = target
            .client(service, &tenant)
            .get(path)
            .await
            .expect("read");
        assert_eq!(r.status, 404, "{service}{path}: {}", r.body);
        assert_eq!(r.body["error"], "not_found", "{service}{path}: {}", r.body);
        assert!(r.body["message"].is_string(), "{service}{path}: {}", r.body);
    }
}

/// A repeated create with the same idempotency key returns the same claim
/// (`replayed: true`); another key makes another; a second identical
/// eligibility question is answered from the cache.
#[service_test(
    api_contract,
    retry,
    real_services,
    services(billing_engine, insurance_verification),
    timeout = "20s"
)]
async fn idempotency_keys_and_the_eligibility_cache(target: &Target, tenant: Tenant, s: Scenario) {
    let billing = target.client(Service::BillingEngine, &tenant);
    let claim = crate::common::claim_body(&s);
    let send = |key: &'static str| {
        let billing = billing.clone();
        let claim = claim.clone();
        async move {
            billing
                .send(
                    reqwest::Method::POST,
                    "/claims",
                    Some(&claim),
                    &[("idempotency-key", key)],
                )
                .await
                .expect("create")
        }
    };
    let first = send("k1").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = send("k1").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["claim_id"], first.body["claim_id"]);
    assert_eq!(again.body["replayed"], true);
    let other = send("k2").await;
    assert_eq!(
        other.status, 201,
        "another key is a new claim: {}",
        other.body
    );
    assert_ne!(other.body["claim_id"], first.body["claim_id"]);
    assert_ne!(other.body["replayed"], true, "{}", other.body);
    let other_again = send("k2").await;
    assert_eq!(other_again.status, 200, "{}", other_again.body);
    assert_eq!(other_again.body["claim_id"], other.body["claim_id"]);

    let ins = target.client(Service::InsuranceVerification, &tenant);
    let q = json!({
        "patient_id": "pat-x", "payer_id": s.coverage.payer.id,
        "member_id": s.coverage.member_id, "effective": s.coverage.effective.to_string(),
        "date_of_service": s.visit.date_of_service.to_string(), "procedures": ["99213"],
    });
    let a = ins.post("/verify", &q).await.expect("verify");
    let b = ins.post("/verify", &q).await.expect("verify");
    assert_eq!((a.status, b.status), (201, 201));
    assert_eq!(a.body["cached"], false);
    assert_eq!(b.body["cached"], true);
    assert_ne!(a.body["verification_id"], b.body["verification_id"]);
}
