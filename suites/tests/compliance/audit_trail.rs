//! The audit trail: every call a visit makes between services is audited
//! under its request id, and one tenant's trail never shows another's.

use fixtures::Scenario;
use harness::service_test;
use sandbox::{Service, Tenant};
use serde_json::json;
use suites::{SignTokens, Target};

use crate::common::{eventually, intake, visit};

/// The API's calls for one visit (insurance, billing, analytics) are in the
/// audit trail under the visit's request id (audited in the background).
#[service_test(
    compliance,
    audit,
    real_services,
    services(healthcare_api, insurance, billing, bi, compliance),
    timeout = "30s"
)]
async fn every_call_of_a_visit_is_audited_under_its_request_id(
    target: &Target,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    let request_id = v.request_id.expect("X-Request-ID answered");
    let monitor = target.client(Service::ComplianceMonitor, &tenant);
    eventually("the visit's service calls audited", || async {
        let r = monitor
            .get(&format!("/audit?request_id={request_id}&kind=service_call"))
            .await
            .expect("audit");
        let targets: Vec<&str> = r.body["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["detail"]["target"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        [
            "insurance-verification",
            "billing-engine",
            "business-intelligence",
        ]
        .iter()
        .all(|t| targets.contains(t))
    })
    .await;
}

/// One tenant's audit trail never shows another tenant's requests: by
/// request id and by patient, the other tenant sees nothing.
#[service_test(
    compliance,
    audit,
    security,
    real_services,
    services(healthcare_api, compliance),
    timeout = "30s"
)]
async fn a_tenant_never_sees_another_tenants_audit_trail(
    target: &Target,
    _two_tenants: SignTokens,
    mine: Tenant,
    theirs: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &theirs);
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    let rid = v.request_id.unwrap_or_default();
    let monitor = target.client(Service::ComplianceMonitor, &mine);
    for query in [
        format!("/audit?request_id={rid}"),
        format!("/audit?patient_id={patient_id}"),
    ] {
        let trail = monitor.get(&query).await.expect("audit");
        assert_eq!(trail.body["events"], json!([]), "{query}");
    }
}
