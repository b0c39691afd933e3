//! The healthcare API alone (seed 000 "mocked services"): its five peers
//! are wiremock stubs, so what the API sends each of them, and what it does
//! with what they answer, is checked without the real services.

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{Mesh, Service};
use serde_json::{Value, json};
use suites::OwnMesh;
use traffic::stub::Stub;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::common::{intake, visit_body};

/// The five stubs, by service.
struct Peers {
    insurance: Stub,
    billing: Stub,
    compliance: Stub,
    bi: Stub,
    doctor: Stub,
}

async fn ok(stub: &Stub, verb: &str, route: &str, status: u16, body: Value) {
    Mock::given(method(verb))
        .and(path_regex(route))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(stub.server())
        .await;
}

/// Stubs answering as the real peers do; billing answers `claim` to a claim.
async fn peers(claim: ResponseTemplate) -> Peers {
    let start = || async { Stub::start().await.expect("stub") };
    let p = Peers {
        insurance: start().await,
        billing: start().await,
        compliance: start().await,
        bi: start().await,
        doctor: start().await,
    };
    for s in [&p.insurance, &p.billing, &p.compliance, &p.bi, &p.doctor] {
        ok(s, "GET", "^/health$", 200, json!({"status": "healthy"})).await;
        ok(s, "POST", "^/patients/sync$", 200, json!({"synced": true})).await;
    }
    ok(
        &p.insurance,
        "POST",
        "^/verify$",
        201,
        json!({"verification_id": "ver-stub", "eligible": true, "cached": false}),
    )
    .await;
    ok(
        &p.insurance,
        "POST",
        "^/verifications/ver-stub/cancel$",
        200,
        json!({"verification_id": "ver-stub", "status": "cancelled"}),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/claims"))
        .respond_with(claim)
        .mount(p.billing.server())
        .await;
    ok(
        &p.compliance,
        "POST",
        "^/audit/",
        201,
        json!({"audit_id": 1}),
    )
    .await;
    ok(&p.bi, "POST", "^/events$", 202, json!({"accepted": 2})).await;
    p
}

/// A private mesh (plain HTTP: the stubs speak no TLS) whose API calls the stubs.
async fn api_with(own: &OwnMesh, p: &Peers) -> Mesh {
    let mesh = own.start(|c| c.tls = None).await.expect("mesh");
    for (service, stub) in [
        (Service::InsuranceVerification, &p.insurance),
        (Service::BillingEngine, &p.billing),
        (Service::ComplianceMonitor, &p.compliance),
        (Service::BusinessIntelligence, &p.bi),
        (Service::DoctorPersonalization, &p.doctor),
    ] {
        mesh.route(service, stub.addr()).expect("route to the stub");
    }
    mesh
}

/// Registers the scenario's patient and runs its visit through the API
/// routed to the stubs (the mesh is handed back to keep it running).
async fn run_visit(own: &OwnMesh, p: &Peers, s: &Scenario) -> (Mesh, sandbox::Answer) {
    let mesh = api_with(own, p).await;
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, s).await;
    let v = api
        .post("/visits", &visit_body(&patient_id, s))
        .await
        .expect("visit");
    (mesh, v)
}

/// The bodies a stub received on `route` (a path), in arrival order.
async fn received(stub: &Stub, route: &str) -> Vec<Value> {
    stub.server()
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == route)
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect()
}

/// The saga against stubbed peers: insurance is asked about the patient's
/// member id and date of service, billing gets the visit's NPI, diagnoses
/// and one line per procedure, and neither ever sees the SSN; the monitor
/// receives the saga's events in order; the visit answers the stub's claim.
#[service_test(
    unit,
    interservice,
    real_services,
    services(healthcare_api),
    timeout = "30s"
)]
async fn the_saga_sends_each_stubbed_peer_what_it_needs(own: OwnMesh, s: Scenario) {
    let p = peers(
        ResponseTemplate::new(201)
            .set_body_json(json!({"claim_id": "clm-stub", "total_cents": 100})),
    )
    .await;
    let (_mesh, v) = run_visit(&own, &p, &s).await;
    assert_eq!(v.status, 201, "{}", v.body);
    assert_eq!(v.body["claim_id"], "clm-stub");
    assert_eq!(v.body["verification_id"], "ver-stub");

    let verify = received(&p.insurance, "/verify").await;
    assert_eq!(verify.len(), 1);
    assert_eq!(verify[0]["member_id"], s.coverage.member_id.as_str());
    assert_eq!(
        verify[0]["date_of_service"],
        s.visit.date_of_service.to_string()
    );
    let claims = received(&p.billing, "/claims").await;
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["npi"], s.visit.rendering_npi.as_str());
    assert_eq!(claims[0]["verification_id"], "ver-stub");
    assert_eq!(
        claims[0]["procedures"].as_array().map(Vec::len),
        Some(s.visit.lines.len())
    );
    for stub in [&p.insurance, &p.billing, &p.doctor, &p.compliance, &p.bi] {
        for r in stub.server().received_requests().await.unwrap_or_default() {
            let body = String::from_utf8_lossy(&r.body);
            assert!(
                !body.contains(&s.patient.ssn) && !body.contains("\"ssn\""),
                "{} was sent an SSN",
                r.url.path()
            );
        }
    }
    let events: Vec<String> = received(&p.compliance, "/audit/saga-events")
        .await
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["event_type"].as_str().unwrap_or("?"),
                e["step"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            "saga_started:claim",
            "step_completed:verify_insurance",
            "step_completed:create_claim",
            "saga_completed:claim"
        ]
    );
}

/// A stubbed billing refusal (422 with its field errors) is passed to the
/// caller with billing's body as the cause, and the stubbed verification is
/// cancelled (the compensation reaches insurance).
#[service_test(
    unit,
    interservice,
    real_services,
    services(healthcare_api),
    timeout = "30s"
)]
async fn a_stubbed_refusal_is_passed_on_and_compensated(own: OwnMesh, s: Scenario) {
    let refusal =
        json!({"error": "invalid_claim", "fields": [{"field": "npi", "code": "npi_check_digit"}]});
    let p = peers(ResponseTemplate::new(422).set_body_json(refusal)).await;
    let (_mesh, v) = run_visit(&own, &p, &s).await;
    assert_eq!(v.status, 422, "{}", v.body);
    assert_eq!(v.body["failed_step"], "create_claim");
    assert_eq!(v.body["cause"]["body"]["fields"][0]["field"], "npi");
    assert_eq!(
        received(&p.insurance, "/verifications/ver-stub/cancel")
            .await
            .len(),
        1,
        "the verification was not cancelled"
    );
}

/// A peer's answer missing its id is an error, not an empty id: billing's
/// stub answers 201 without a `claim_id`; the visit answers 502 at the
/// claim step and the verification is cancelled.
#[service_test(
    unit,
    interservice,
    real_services,
    services(healthcare_api),
    timeout = "30s"
)]
async fn a_reply_without_its_id_fails_the_step(own: OwnMesh, s: Scenario) {
    let p = peers(ResponseTemplate::new(201).set_body_json(json!({"total_cents": 100}))).await;
    let (_mesh, v) = run_visit(&own, &p, &s).await;
    assert_eq!(v.status, 502, "{}", v.body);
    assert_eq!(v.body["failed_step"], "create_claim");
    assert!(
        v.body["cause"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("claim_id")),
        "{}",
        v.body
    );
    assert_eq!(
        received(&p.insurance, "/verifications/ver-stub/cancel")
            .await
            .len(),
        1,
        "the verification was not cancelled"
    );
}
