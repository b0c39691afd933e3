//! Graceful degradation and error propagation between services (seed
//! 001): the saga completes without its best-effort peers, and a failing
//! peer's error reaches the caller with its context.

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{FaultPlan, Service, Tenant};
use serde_json::json;
use suites::{Edge, Faults, Logs, Target, Toxics};

use crate::common::{eventually, failed_visit, intake, saga_trail, visit};

/// Business intelligence unreachable (its link down): the visit still
/// completes (analytics are best effort), and the gap is in the audit
/// trail: the call to analytics is audited with its failure, under the
/// visit's request id.
#[service_test(
    integration,
    e2e,
    interservice,
    chaos,
    exclusive,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        business_intelligence,
        compliance_monitor
    ),
    timeout = "40s"
)]
async fn with_analytics_down_the_saga_completes_and_the_gap_is_audited(
    target: &Target,
    toxics: Toxics,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    toxics
        .disable(Edge::To(Service::BusinessIntelligence))
        .await
        .expect("cut analytics off");
    let v = visit(&api, &patient_id, &s).await;
    assert_eq!(v.status, 201, "{}", v.body);
    let rid = v.request_id.expect("X-Request-ID answered");
    let monitor = target.client(Service::ComplianceMonitor, &tenant);
    eventually("the failed analytics call audited", || {
        let monitor = monitor.clone();
        let rid = rid.clone();
        async move {
            let r = monitor
                .get(&format!("/audit?request_id={rid}&kind=service_call"))
                .await
                .expect("audit");
            r.body["events"].as_array().is_some_and(|events| {
                events.iter().any(|e| {
                    e["detail"]["target"] == "business-intelligence"
                        && e["detail"]["outcome"] != "ok"
                })
            })
        }
    })
    .await;
    let trail = saga_trail(&monitor, &rid).await;
    assert_eq!(
        trail.last().map(String::as_str),
        Some("saga_completed:claim"),
        "{trail:?}"
    );
}

/// The compliance monitor unreachable from the API (its link down): the
/// visit still completes (an audit that cannot be written is logged, never
/// fatal); once the link is back, the next visit's trail is whole again.
#[service_test(
    integration,
    e2e,
    interservice,
    chaos,
    exclusive,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor
    ),
    timeout = "40s"
)]
async fn with_the_monitor_down_the_saga_completes_and_auditing_resumes(
    target: &Target,
    toxics: Toxics,
    logs: Logs,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    toxics
        .disable(Edge::To(Service::ComplianceMonitor))
        .await
        .expect("cut the monitor off");
    let v = visit(&api, &patient_id, &s).await;
    assert_eq!(v.status, 201, "with the monitor down: {}", v.body);
    let rid = v.request_id.clone().expect("X-Request-ID answered");
    let lines = logs.lines().await.expect("logs");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("auditing saga event") && l.contains("failed") && l.contains(&rid)),
        "the lost audit is not logged"
    );
    toxics
        .enable(Edge::To(Service::ComplianceMonitor))
        .await
        .expect("bring the monitor's link back");
    // The API's breaker to the monitor opened during the outage; auditing
    // resumes once it lets calls through again (2 s open in test mode, then
    // a few probes): within 15 s a visit's trail is whole again.
    let monitor = target.client(Service::ComplianceMonitor, &tenant);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let v = visit(&api, &patient_id, &s).await;
        assert_eq!(v.status, 201, "{}", v.body);
        let rid = v.request_id.expect("X-Request-ID answered");
        let settle = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut whole = false;
        while !whole && std::time::Instant::now() < settle {
            let r = monitor
                .get(&format!("/audit/completeness?request_id={rid}"))
                .await
                .expect("completeness");
            whole = r.body["complete"] == true;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if whole {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "15 s after the monitor came back, a visit's trail is still not whole"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// A failing peer's error reaches the caller with its context: insurance
/// answers 503 to the first step, and the visit answers 502 naming the
/// failed step, the service, its status and the body it gave, with no
/// compensation needed and the failure in the trail.
/// Exclusive: the failures it injects go into the API's breaker to
/// insurance-verification, which every tenant shares; beside other tests they could
/// open it for theirs.
#[service_test(
    integration,
    interservice,
    exclusive,
    real_services,
    services(healthcare_api, insurance_verification, compliance_monitor),
    timeout = "30s"
)]
async fn a_peers_error_reaches_the_caller_with_its_context(
    target: &Target,
    faults: Faults,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    faults
        .inject(
            Service::InsuranceVerification,
            &FaultPlan {
                fail_next: 10,
                status: Some(503),
                tenant: Some(tenant.0.clone()),
                path_prefix: Some("/verify".into()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject");
    let r = failed_visit(&api, &patient_id, &s, 502).await;
    faults
        .clear(Service::InsuranceVerification, &tenant)
        .await
        .expect("clear");
    assert_eq!(r.body["failed_step"], "verify_insurance", "{}", r.body);
    let cause = &r.body["cause"];
    assert_eq!(cause["status"], 503, "{cause}");
    assert_eq!(cause["body"]["error"], "injected_fault", "{cause}");
    assert!(
        cause["message"]
            .as_str()
            .is_some_and(|m| m.contains("insurance-verification")),
        "the message names the service: {cause}"
    );
    assert_eq!(r.body["compensations"], json!([]), "{}", r.body);
    let rid = r.request_id.clone().expect("X-Request-ID answered");
    let trail = saga_trail(&target.client(Service::ComplianceMonitor, &tenant), &rid).await;
    assert!(
        trail.iter().any(|e| e == "saga_failed:verify_insurance"),
        "{trail:?}"
    );
}
