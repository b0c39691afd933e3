//! PHI protection: nothing the services keep or log holds a patient's PHI;
//! a leak into a log is redacted before it is kept.

use std::time::{Duration, Instant};

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{FaultPlan, Service, Tenant};
use suites::{Faults, Logs, Target};

use crate::common::{intake, visit};

/// After a journey, nothing the compliance monitor keeps (the tenant's
/// whole audit trail) and no log line of any service holds the patient's
/// PHI: the scanner, with the patient's values registered as canaries,
/// finds nothing.
#[service_test(
    compliance,
    audit,
    phi_safe,
    real_services,
    services(healthcare_api, compliance_monitor),
    timeout = "30s"
)]
async fn no_phi_reaches_the_audit_trail_or_the_logs(
    target: &Target,
    logs: Logs,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    visit(&api, &patient_id, &s).await;
    let trail = target
        .client(Service::ComplianceMonitor, &tenant)
        .get("/audit")
        .await
        .expect("audit");
    let n = trail.body["events"].as_array().map_or(0, Vec::len);
    assert!(n >= 4, "only {n} audit events");
    if let Some(f) = phi::scan(&trail.body.to_string()).first() {
        panic!("PHI in the audit trail: {f}");
    }
    for line in logs.lines().await.expect("logs") {
        if let Some(f) = phi::scan(&line).first() {
            panic!("PHI in a log line: {f}");
        }
    }
}

/// A PHI leak injected into billing's log is redacted before any line is
/// kept, and reported to the compliance monitor as a violation that holds
/// the kinds, never the value.
#[service_test(
    compliance,
    phi_safe,
    real_services,
    services(billing_engine, compliance_monitor),
    timeout = "20s"
)]
async fn a_phi_leak_in_a_log_is_redacted_and_reported(
    target: &Target,
    faults: Faults,
    logs: Logs,
    tenant: Tenant,
    s: Scenario,
) {
    let leak = format!("SSN {}", s.patient.ssn);
    faults
        .inject(
            Service::BillingEngine,
            &FaultPlan {
                leak_phi: Some(leak),
                tenant: Some(tenant.0.clone()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject");
    target
        .client(Service::BillingEngine, &tenant)
        .get("/claims/clm-none")
        .await
        .expect("request");
    let monitor = target.client(Service::ComplianceMonitor, &tenant);
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        let r = monitor
            .get("/violations?source=billing-engine")
            .await
            .expect("violations");
        if !r.body["violations"][0].is_null() {
            break r.body["violations"][0].clone();
        }
        assert!(Instant::now() < deadline, "no violation recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(found["channel"], "log");
    assert!(
        found["kinds"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "SSN")),
        "kinds: {}",
        found["kinds"]
    );
    let excerpt = found["excerpt"].as_str().unwrap_or_default();
    assert!(excerpt.contains("[PHI:SSN]"), "the excerpt is not redacted");
    assert!(!excerpt.contains(&s.patient.ssn));
    let lines = logs.lines().await.expect("logs");
    assert!(
        lines.iter().all(|l| !l.contains(&s.patient.ssn)),
        "a log line holds the SSN"
    );
    assert!(
        lines.iter().any(|l| l.contains("[PHI:SSN]")),
        "no redacted line was kept"
    );
}
