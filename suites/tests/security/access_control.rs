//! Access control: one tenant never reads or acts on another's data.

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{Service, Tenant};
use serde_json::json;
use suites::{SignTokens, Target};

use crate::common::{intake, visit, visit_body};

/// A's patients, visits, verifications, claims, audit events and
/// preferences, read as B: each service answers 404 (or an empty trail);
/// B cannot run a visit on A's patient either.
#[service_test(
    security,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor,
        doctor_personalization
    ),
    timeout = "30s"
)]
async fn tenants_cannot_read_each_others_data(
    target: &Target,
    _two_tenants: SignTokens,
    a: Tenant,
    b: Tenant,
    s: Scenario,
) {
    assert_ne!(a, b);
    let api_a = target.client(Service::HealthcareApi, &a);
    let api_b = target.client(Service::HealthcareApi, &b);
    let patient_id = intake(&api_a, &s).await;
    let v = visit(&api_a, &patient_id, &s).await;
    let id = |k: &str| v.body[k].as_str().unwrap_or_default().to_string();
    for (service, path) in [
        (Service::HealthcareApi, format!("/patients/{patient_id}")),
        (
            Service::HealthcareApi,
            format!("/visits/{}", id("visit_id")),
        ),
        (
            Service::BillingEngine,
            format!("/claims/{}", id("claim_id")),
        ),
        (
            Service::InsuranceVerification,
            format!("/verifications/{}", id("verification_id")),
        ),
    ] {
        let mine = target.client(service, &a).get(&path).await.expect("read");
        assert_eq!(mine.status, 200, "{service}{path} as its owner");
        let r = target.client(service, &b).get(&path).await.expect("read");
        assert_eq!(r.status, 404, "{service}{path} as another tenant");
    }
    let r = api_b
        .post("/visits", &visit_body(&patient_id, &s))
        .await
        .expect("visit");
    assert_eq!(r.status, 404, "{}", r.body);
    let audit_b = target.client(Service::ComplianceMonitor, &b);
    let rid = v.request_id.clone().unwrap_or_default();
    for q in [
        format!("/audit?request_id={rid}"),
        format!("/audit?patient_id={patient_id}"),
    ] {
        let trail = audit_b.get(&q).await.expect("audit");
        assert_eq!(trail.body["events"], json!([]), "{q}");
    }
    let doc_a = target.client(Service::DoctorPersonalization, &a);
    let doc_b = target.client(Service::DoctorPersonalization, &b);
    let npi = &s.visit.rendering_npi;
    let put = doc_a
        .put(
            &format!("/doctors/{npi}/preferences"),
            &json!({"note_style": "SOAP"}),
        )
        .await
        .expect("put");
    assert_eq!(put.status, 200, "{}", put.body);
    let got = doc_b
        .get(&format!("/doctors/{npi}/preferences"))
        .await
        .expect("get");
    assert_eq!(got.status, 404);
}
