//! The compliance monitor across the mesh: leaks in any service reach it,
//! and its scanner finds PHI in text.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{FaultPlan, Service, Tenant};
use serde_json::json;
use suites::{Breakers, Faults, Target};

use crate::common::{failures_left, poll_until};

/// How long the monitor takes each of the slow tenant's reports in
/// `a_tenant_slow_to_report_does_not_hold_up_another_tenants_violations`.
const SLOW_REPORT: Duration = Duration::from_millis(1500);

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
    poll_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async {
            let r = monitor.get("/violations").await.expect("violations");
            let mut sources: Vec<&str> = r.body["violations"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v["source"].as_str()).collect())
                .unwrap_or_default();
            sources.sort_unstable();
            sources.dedup();
            if sources.len() < Service::ALL.len() {
                return Err(format!("violations only from {sources:?}"));
            }
            assert!(
                !r.body.to_string().contains(&s.patient.phone),
                "a violation holds the raw phone number"
            );
            Ok(())
        },
    )
    .await;
}

/// The log pipeline reports each tenant's violations side by side: a
/// tenant whose reports the monitor is slow to take (1.5 s each, a latency
/// fault on `/violations` for that tenant only; under the log pipeline's
/// 2 s attempt timeout, so they succeed) does not hold up another tenant's.
/// Two of the slow tenant's reports go first: one after another they would
/// hold this tenant's back 3 s; side by side it is at the monitor within
/// 2.75 s of the first leak (under load the leaks' own requests take part of
/// that).
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
                latency_ms: u64::try_from(SLOW_REPORT.as_millis()).expect("a short latency"),
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
    // Behind both slow reports, this one could not reach the monitor
    // before 2 × 1.5 s from the first leak: the deadline keeps a quarter
    // of a second from that, and leaves the leaks' own requests the rest.
    let within = (2 * SLOW_REPORT).saturating_sub(Duration::from_millis(250));
    poll_until(
        within.saturating_sub(first_leak.elapsed()),
        Duration::from_millis(50),
        || async {
            let sources = violation_sources(target, &tenant).await;
            if sources.iter().any(|s| s == "billing-engine") {
                Ok(())
            } else {
                Err(format!(
                    "no report of this tenant's leak {within:?} after the first leak: held up behind the slow tenant's"
                ))
            }
        },
    )
    .await;
}

/// Makes the log pipeline's breaker to the monitor open: from closed and
/// empty (every breaker reset), the monitor answers `failing`'s next
/// reports 503, as many as the breaker judges a rate on, and the tenant
/// leaks until they are all answered (each report may be tried more than
/// once): a window of failures only. Returns then, with the number of
/// leaks made.
async fn trip_the_shippers_breaker(
    target: &Target,
    faults: &Faults,
    breakers: &Breakers,
    failing: &Tenant,
    s: &Scenario,
) -> usize {
    suites::capabilities::reset_breakers(target).await;
    let failures = u32::try_from(breakers.minimum_calls.max(1)).expect("a small window");
    faults
        .inject(
            Service::ComplianceMonitor,
            &FaultPlan {
                fail_next: failures,
                status: Some(503),
                tenant: Some(failing.0.clone()),
                path_prefix: Some("/violations".into()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject failures");
    let leaks = AtomicUsize::new(0);
    poll_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let left = failures_left(target, Service::ComplianceMonitor, &failing.0).await;
            if left == 0 {
                return Ok(());
            }
            if leaks.load(Ordering::Relaxed) < breakers.minimum_calls.max(1) as usize {
                leak_phone(target, faults, Service::BillingEngine, failing, s).await;
                leaks.fetch_add(1, Ordering::Relaxed);
            }
            Err(format!(
                "the monitor has not answered the {failures} failing reports: {left} left"
            ))
        },
    )
    .await;
    let leaks = leaks.into_inner();
    // The last answers reach the breaker.
    tokio::time::sleep(Duration::from_millis(100)).await;
    leaks
}

/// The `source` of each of `tenant`'s violations at the monitor.
async fn violation_sources(target: &Target, tenant: &Tenant) -> Vec<String> {
    let r = target
        .client(Service::ComplianceMonitor, tenant)
        .get("/violations")
        .await
        .expect("violations");
    r.body["violations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["source"].as_str().map(str::to_string))
        .collect()
}

/// A violation report the monitor did not take (its answers failing, then
/// the log pipeline's breaker to it open) is not lost: it is sent again
/// until the monitor takes it. The failing tenant's reports and another
/// tenant's, refused while the breaker was open, are all at the monitor
/// once it recovers (after the breaker's open wait).
#[service_test(
    compliance,
    exclusive,
    real_services,
    services(billing_engine, compliance_monitor),
    timeout = "40s"
)]
async fn a_violation_report_the_monitor_refused_is_sent_again_until_taken(
    target: &Target,
    faults: Faults,
    breakers: Breakers,
    failing: Tenant,
    tenant: Tenant,
    s: Scenario,
) {
    let leaks = trip_the_shippers_breaker(target, &faults, &breakers, &failing, &s).await;
    leak_phone(target, &faults, Service::BillingEngine, &tenant, &s).await;
    let within = breakers.open_wait + Duration::from_secs(12);
    poll_until(within, Duration::from_millis(100), || async {
        let (theirs, ours) = (
            violation_sources(target, &failing).await.len(),
            violation_sources(target, &tenant).await.len(),
        );
        assert!(
            theirs <= leaks && ours <= 1,
            "more violations than leaks: {theirs} of {leaks}, {ours} of 1"
        );
        if theirs == leaks && ours == 1 {
            Ok(())
        } else {
            Err(format!(
                "the monitor holds {theirs} of the failing tenant's {leaks} violations and {ours} of this tenant's 1: the others were lost"
            ))
        }
    })
    .await;
}

/// Resetting the breakers (test mode's `/admin/breakers/reset` on every
/// service, as a suite's teardown does after a test that tripped one)
/// closes the log pipeline's too: a leak right after it is reported at
/// once (within three quarters of the breaker's open wait, counted from
/// the leak), not once the breaker lets a probe through.
#[service_test(
    compliance,
    exclusive,
    real_services,
    services(billing_engine, compliance_monitor),
    timeout = "40s"
)]
async fn resetting_the_breakers_reopens_the_log_pipeline_at_once(
    target: &Target,
    faults: Faults,
    breakers: Breakers,
    failing: Tenant,
    tenant: Tenant,
    s: Scenario,
) {
    trip_the_shippers_breaker(target, &faults, &breakers, &failing, &s).await;
    suites::capabilities::reset_breakers(target).await;
    leak_phone(target, &faults, Service::BillingEngine, &tenant, &s).await;
    let within = breakers.open_wait * 3 / 4;
    poll_until(within, Duration::from_millis(25), || async {
        if violation_sources(target, &tenant).await.is_empty() {
            Err("no report of the leak since the breakers were reset: the log pipeline's breaker stayed open".to_string())
        } else {
            Ok(())
        }
    })
    .await;
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
