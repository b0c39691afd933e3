//! The compliance monitor across the mesh: leaks in any service reach it,
//! and its scanner finds PHI in text.

use std::time::{Duration, Instant};

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{FaultPlan, Service, Tenant};
use serde_json::json;
use suites::{Faults, Target};

/// Makes `service` write the scenario patient's phone number into a log
/// line of `tenant`'s next request, and sends that request (any
/// authenticated request triggers the leak; each injected leak is written
/// once).
async fn leak_phone(
    target: &Target,
    faults: &Faults,
    service: Service,
    tenant: &Tenant,
    s: &Scenario,
) {
    faults
        .inject(
            service,
            &FaultPlan {
                leak_phi: Some(format!("patient phone {}", s.patient.phone)),
                tenant: Some(tenant.0.clone()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject leak");
    target
        .client(service, tenant)
        .get("/no-such-resource")
        .await
        .expect("request");
}

/// A PHI leak injected into each service's log is redacted there and
/// reported to the compliance monitor with the right source.
#[service_test(
    compliance,
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
async fn the_monitor_catches_a_leak_in_every_service(
    target: &Target,
    faults: Faults,
    tenant: Tenant,
    s: Scenario,
) {
    for service in Service::ALL {
        leak_phone(target, &faults, service, &tenant, &s).await;
    }
    let monitor = target.client(Service::ComplianceMonitor, &tenant);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = monitor.get("/violations").await.expect("violations");
        let mut sources: Vec<&str> = r.body["violations"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v["source"].as_str()).collect())
            .unwrap_or_default();
        sources.sort_unstable();
        sources.dedup();
        if sources.len() == Service::ALL.len() {
            assert!(
                !r.body.to_string().contains(&s.patient.phone),
                "a violation holds the raw phone number"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "violations only from {sources:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log pipeline reports each tenant's violations side by side: a
/// tenant whose reports the monitor is slow to take (1.5 s each, a latency
/// fault on `/violations` for that tenant only; under the forwarder's 2 s
/// attempt timeout, so they succeed) does not hold up another tenant's.
/// Two of the slow tenant's reports go first: one after another they would
/// hold this tenant's back 3 s; side by side it is at the monitor within 2 s
/// of the first leak.
#[service_test(
    compliance,
    real_services,
    services(billing_engine, compliance_monitor),
    timeout = "30s"
)]
async fn a_tenant_slow_to_report_does_not_hold_up_another_tenants_violations(
    target: &Target,
    faults: Faults,
    slow: Tenant,
    tenant: Tenant,
    s: Scenario,
) {
    faults
        .inject(
            Service::ComplianceMonitor,
            &FaultPlan {
                latency_ms: 1500,
                tenant: Some(slow.0.clone()),
                path_prefix: Some("/violations".into()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject latency");
    let first_leak = Instant::now();
    // Two of the slow tenant's leaks, then this tenant's.
    for t in [&slow, &slow, &tenant] {
        leak_phone(target, &faults, Service::BillingEngine, t, &s).await;
    }
    let monitor = target.client(Service::ComplianceMonitor, &tenant);
    loop {
        let r = monitor.get("/violations").await.expect("violations");
        let reported = r.body["violations"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v["source"] == "billing-engine"));
        if reported {
            break;
        }
        assert!(
            first_leak.elapsed() < Duration::from_secs(2),
            "no report of this tenant's leak 2 s after the first leak: held up behind the slow tenant's"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The scanner endpoint finds PHI in text, answers with a redacted copy,
/// and records a violation; clean text is clean.
#[service_test(
    compliance,
    real_services,
    services(compliance_monitor),
    timeout = "20s"
)]
async fn the_scan_endpoint_finds_and_records_phi(target: &Target, tenant: Tenant, s: Scenario) {
    let monitor = target.client(Service::ComplianceMonitor, &tenant);
    let text = format!("call {} about MRN {}", s.patient.phone, s.patient.mrn);
    let r = monitor
        .post("/phi/scan", &json!({"text": text, "source": "notes"}))
        .await
        .expect("scan");
    assert_eq!(r.status, 200);
    assert_eq!(r.body["phi_found"], true);
    let redacted = r.body["redacted"].as_str().unwrap_or_default();
    assert!(
        !redacted.contains(&s.patient.phone) && !redacted.contains(&s.patient.mrn),
        "the redacted copy holds PHI"
    );
    let clean = monitor
        .post("/phi/scan", &json!({"text": "claim totals by payer"}))
        .await
        .expect("scan");
    assert_eq!(clean.body["phi_found"], false);
    let v = monitor
        .get("/violations?source=notes")
        .await
        .expect("violations");
    assert_eq!(v.body["violations"].as_array().map(Vec::len), Some(1));
}
