//! OpenAPI contracts: every service serves its document; the documents
//! keep the v1 snapshot; a response that breaks its schema is caught (the
//! check every answer of the suites passes through); one error shape
//! everywhere.

use std::sync::Arc;

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{Credentials, MeshClient, Service, Tenant};
use serde_json::{Value, json};
use suites::Target;
use suites::contract::{Contracts, breaking_changes};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::claim_body;

/// The checked-in v1 contract of all six services (`sandbox openapi`).
const V1: &str = include_str!("../../contracts/v1.json");

fn v1() -> Value {
    serde_json::from_str(V1).expect("suites/contracts/v1.json is JSON")
}

/// The operations each service must document (besides `/health`,
/// `/metrics`, `/config` and `/openapi.json`, which all do).
const OWN: [(Service, &[(&str, &str)]); 6] = [
    (
        Service::HealthcareApi,
        &[
            ("post", "/patients"),
            ("get", "/patients/{id}"),
            ("put", "/patients/{id}"),
            ("post", "/visits"),
            ("get", "/visits/{id}"),
            ("get", "/visits/{id}/events"),
        ],
    ),
    (
        Service::InsuranceVerification,
        &[("post", "/verify"), ("get", "/verifications/{id}")],
    ),
    (
        Service::BillingEngine,
        &[("post", "/claims"), ("get", "/claims/{id}")],
    ),
    (
        Service::ComplianceMonitor,
        &[("get", "/audit"), ("post", "/audit/saga-events")],
    ),
    (
        Service::BusinessIntelligence,
        &[("post", "/events"), ("get", "/aggregates")],
    ),
    (
        Service::DoctorPersonalization,
        &[("get", "/doctors/{npi}/preferences")],
    ),
];

/// Each of the six serves an OpenAPI 3.1 document at `/openapi.json`
/// (without a token) naming itself, documenting its own operations and
/// the shared ones, every operation with a `default` answer in the one
/// error shape.
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
    timeout = "30s"
)]
async fn every_service_serves_its_openapi_document(target: &Target) {
    for (service, own) in OWN {
        let contract = target
            .contract(service)
            .await
            .unwrap_or_else(|e| panic!("{service}: {e}"));
        let doc = contract.document();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{service}: openapi {}",
            doc["openapi"]
        );
        assert_eq!(doc["info"]["title"], service.name(), "{service}");
        let shared = [
            ("get", "/health"),
            ("get", "/metrics"),
            ("get", "/config"),
            ("get", "/openapi.json"),
        ];
        for (m, p) in own.iter().chain(&shared) {
            assert!(
                doc["paths"][*p][*m].is_object(),
                "{service}: {} {p} is not documented",
                m.to_uppercase()
            );
        }
        for (p, item) in doc["paths"].as_object().expect("paths") {
            for (m, op) in item.as_object().expect("path item") {
                let error = &op["responses"]["default"]["content"]["application/json"]["schema"];
                assert_eq!(
                    error["$ref"], "#/components/schemas/ErrorBody",
                    "{service}: {m} {p} has no default error answer"
                );
            }
        }
        assert_eq!(
            doc["components"]["schemas"]["ErrorBody"]["required"],
            json!(["error", "message"]),
            "{service}"
        );
    }
}

/// Backward compatibility: no service's served document breaks the
/// checked-in v1 contract (no path, operation, status or answer field
/// removed, no type changed, no request field newly required).
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
    timeout = "30s"
)]
async fn the_served_documents_keep_the_v1_contract(target: &Target) {
    let v1 = v1();
    let mut broken = Vec::new();
    for service in Service::ALL {
        let old = &v1[service.name()];
        assert!(old.is_object(), "v1 has no document for {service}");
        let now = target
            .contract(service)
            .await
            .unwrap_or_else(|e| panic!("{service}: {e}"));
        broken.extend(
            breaking_changes(old, now.document())
                .into_iter()
                .map(|b| format!("{service}: {b}")),
        );
    }
    assert!(
        broken.is_empty(),
        "the served documents break v1:\n{}",
        broken.join("\n")
    );
}

/// The compatibility check fails what breaks clients: v1's billing
/// document with a claim field removed, another's type changed, a route
/// removed and a request field newly required is refused, each named; an
/// added optional field is not a break.
#[service_test(api_contract, unit, timeout = "10s")]
async fn a_removed_field_or_a_changed_type_breaks_v1() {
    let v1 = v1();
    let old = &v1["billing-engine"];
    let mut new = old.clone();
    let claim = &mut new["components"]["schemas"]["Claim"];
    claim["properties"]
        .as_object_mut()
        .expect("Claim properties")
        .remove("total_cents");
    claim["properties"]["npi"]["type"] = json!("integer");
    claim["properties"]["note"] = json!({"type": "string"});
    new["paths"]
        .as_object_mut()
        .expect("paths")
        .remove("/claims/{id}/cancel");
    new["components"]["schemas"]["CreateClaim"]["required"]
        .as_array_mut()
        .expect("CreateClaim required")
        .push(json!("payer_id"));
    let broken = breaking_changes(old, &new);
    let has = |needle: &str| broken.iter().any(|b| b.contains(needle));
    assert!(has(".total_cents: removed"), "{broken:#?}");
    assert!(has(".npi: type changed"), "{broken:#?}");
    assert!(has("/claims/{id}/cancel: removed"), "{broken:#?}");
    assert!(has(".payer_id: newly required in requests"), "{broken:#?}");
    assert!(!has("note"), "an added field is not a break: {broken:#?}");
    assert!(breaking_changes(old, old).is_empty());
}

/// A response that breaks its schema fails: a claim read from billing
/// passes the check; the same claim without `total_cents`, with a numeric
/// `claim_id` and a text charge fails, each place named and no value
/// quoted; an undocumented status fails; an error without `message`
/// fails. Fed through a client (a stub billing serving the real document
/// and a broken claim), the check fails the call with the violation.
#[service_test(api_contract, real_services, services(billing_engine), timeout = "30s")]
async fn a_response_that_breaks_its_schema_fails_the_check(
    target: &Target,
    tenant: Tenant,
    s: Scenario,
) {
    let billing = target.client(Service::BillingEngine, &tenant);
    let created = billing
        .post("/claims", &claim_body(&s))
        .await
        .expect("create");
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["claim_id"]
        .as_str()
        .expect("claim_id")
        .to_string();
    let contract = target
        .contract(Service::BillingEngine)
        .await
        .expect("contract");
    let read = format!("/claims/{id}");
    contract
        .check("GET", &read, 200, &created.body)
        .expect("a real claim passes");

    let mut broken = created.body.clone();
    broken
        .as_object_mut()
        .expect("object")
        .remove("total_cents");
    broken["claim_id"] = json!(7);
    broken["procedures"][0]["charge_cents"] = json!("S3CR3T-VALUE");
    let err = contract
        .check("GET", &read, 200, &broken)
        .expect_err("a broken claim fails");
    for needle in [
        "Claim",
        "total_cents",
        "/claim_id",
        "/procedures/0/charge_cents",
    ] {
        assert!(err.contains(needle), "`{needle}` not named: {err}");
    }
    assert!(!err.contains("S3CR3T"), "the value is quoted: {err}");
    let err = contract
        .check("GET", &read, 202, &created.body)
        .expect_err("an undocumented status fails");
    assert!(err.contains("202 is not documented"), "{err}");
    let err = contract
        .check("GET", "/claims/none", 404, &json!({"error": "not_found"}))
        .expect_err("an error without a message fails");
    assert!(
        err.contains("ErrorBody") && err.contains("message"),
        "{err}"
    );

    // Through a client: a stub billing serving the real document.
    let stub = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/openapi.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(contract.document()))
        .mount(&stub)
        .await;
    Mock::given(method("GET"))
        .and(path(read.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(&broken))
        .mount(&stub)
        .await;
    let urls = [(Service::BillingEngine, stub.uri())].into_iter().collect();
    let contracts = Arc::new(Contracts::new(reqwest::Client::new(), urls));
    let client = MeshClient::new(
        reqwest::Client::new(),
        stub.uri(),
        Service::BillingEngine,
        tenant.0.as_str(),
        Credentials::Bearer("stub".into()),
    )
    .checked_by(contracts);
    let call = tokio::spawn(async move { client.get(&read).await.map(|a| a.status) });
    let failure = call.await.expect_err("the broken answer fails the call");
    let message = failure
        .into_panic()
        .downcast::<String>()
        .map(|m| *m)
        .unwrap_or_default();
    assert!(
        message.contains("contract violation") && message.contains("total_cents"),
        "{message}"
    );
}

/// One error shape on all six services for the framework's own
/// rejections, each answer held to the service's `ErrorBody` by the
/// client: malformed JSON (400), an unknown route (404), a wrong method
/// (405), an oversized body (413). (`errors_are_json_with_a_code` covers
/// 401 and 404.)
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
    timeout = "60s"
)]
async fn one_error_shape_on_every_service(target: &Target, tenant: Tenant) {
    use reqwest::Method;
    let creates = [
        (Service::HealthcareApi, Method::POST, "/patients"),
        (Service::InsuranceVerification, Method::POST, "/verify"),
        (Service::BillingEngine, Method::POST, "/claims"),
        (Service::ComplianceMonitor, Method::POST, "/phi/scan"),
        (Service::BusinessIntelligence, Method::POST, "/events"),
        (
            Service::DoctorPersonalization,
            Method::PUT,
            "/doctors/1234567893/preferences",
        ),
    ];
    let oversized = {
        let mut b = b"{\"filler\": \"".to_vec();
        b.resize(2 << 20, b'x');
        b.extend_from_slice(b"\"}");
        b
    };
    for (service, create, route) in creates {
        let client = target.client(service, &tenant);
        let cases = [
            (
                "malformed JSON",
                create.clone(),
                route,
                b"{\"not json".to_vec(),
                400,
            ),
            (
                "an unknown route",
                Method::GET,
                "/no-such-route",
                Vec::new(),
                404,
            ),
            ("a wrong method", Method::DELETE, "/config", Vec::new(), 405),
            (
                "an oversized body",
                create.clone(),
                route,
                oversized.clone(),
                413,
            ),
        ];
        for (what, m, p, bytes, expected) in cases {
            // A service may answer 413 and close before the client has
            // sent the whole body; the client then sees its upload fail
            // rather than the answer. Three tries: a service that never
            // answers still fails.
            let mut tries = 0;
            let a = loop {
                tries += 1;
                match client
                    .send_bytes(m.clone(), p, bytes.clone(), "application/json")
                    .await
                {
                    Ok(a) => break a,
                    Err(e) if expected == 413 && tries < 3 => {
                        eprintln!("{service} {what}: {e}; again");
                    }
                    Err(e) => panic!("{service} {what}: {e}"),
                }
            };
            assert_eq!(a.status, expected, "{service} {what} ({m} {p}): {}", a.body);
            assert!(
                a.body["error"].is_string() && a.body["message"].is_string(),
                "{service} {what}: {}",
                a.body
            );
        }
    }
}
