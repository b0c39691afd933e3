//! The access log (HIPAA's "who accessed what"): every read of a patient's
//! data is an audit event naming the person and role who read it and the
//! service that served it, and the compliance monitor answers "who read
//! this patient between T1 and T2" with exactly those reads.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{MeshClient, Role, Service, Tenant};
use serde_json::Value;
use suites::{SignTokens, Target};

use crate::common::{intake, visit};

/// Now, in milliseconds since the Unix epoch, by this machine's clock.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A read that must be answered 200.
async fn read(c: &MeshClient, path: &str) {
    let r = c.get(path).await.expect("read");
    assert_eq!(r.status, 200, "{} GET {path}: {}", c.service(), r.body);
}

/// One access as `(service, actor, actor_role, action, resource)`, sorted
/// lists of which are compared.
type Seen = (String, String, String, String, String);

fn seen(log: &Value) -> Vec<Seen> {
    let text = |e: &Value, k: &str| e[k].as_str().unwrap_or("(none)").to_string();
    let mut out: Vec<Seen> = log["accesses"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        text(e, "service"),
                        text(e, "actor"),
                        text(e, "actor_role"),
                        text(e, "action"),
                        text(e, "resource"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Queries the access log until it holds `want.len()` accesses (they are
/// reported in the background; 10 s at most), then once more a moment
/// later (a late extra report would show there), and answers that.
async fn settled(officer: &MeshClient, query: &str, want: usize) -> Vec<Seen> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = officer.get(query).await.expect("access log");
        assert_eq!(r.status, 200, "GET {query}: {}", r.body);
        if seen(&r.body).len() >= want || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = officer.get(query).await.expect("access log");
    assert_eq!(r.status, 200, "GET {query}: {}", r.body);
    seen(&r.body)
}

/// Reads of one patient by three people in three roles, through three
/// services (the API's patient and visit, billing's claim, insurance's
/// verification), made between T1 and T2; reads of the same patient before
/// T1 and after T2, and of another patient within the window. "Who read
/// this patient between T1 and T2" (`GET /audit/access` at the compliance
/// monitor, as a compliance officer) answers exactly the reads within the
/// window, each with its service, person, role and route; without the
/// window, every read; every audit event of the patient names its actor.
///
/// Catches: a read that is not audited (on any of the three services), a
/// read audited under the serving service instead of the person, a wrong
/// role, a window that leaks reads from outside it, a read counted twice,
/// another patient's reads in the answer, audit events without an actor.
#[service_test(
    compliance,
    audit,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor
    ),
    timeout = "60s"
)]
async fn who_read_a_patient_between_two_times_is_exactly_the_reads_made(
    target: &Target,
    // People's tokens name the person (`sub`): signed here.
    _tokens: SignTokens,
    tenant: Tenant,
    s: Scenario,
) {
    let admin = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&admin, &s).await;
    let other_patient = intake(&admin, &s).await;
    let v = visit(&admin, &patient_id, &s).await;
    let text = |k: &str| v.body[k].as_str().unwrap_or_default().to_string();
    let (visit_id, claim_id, verification_id) =
        (text("visit_id"), text("claim_id"), text("verification_id"));
    assert!(
        !visit_id.is_empty() && !claim_id.is_empty() && !verification_id.is_empty(),
        "the visit names its claim and verification: {}",
        v.body
    );
    let (early, dr, clerk) = (
        format!("dr-early-{}", tenant.0),
        format!("dr-b-{}", tenant.0),
        format!("clerk-c-{}", tenant.0),
    );
    let person = |service, sub: &str, role| target.client(service, &tenant).as_person(sub, role);
    let patient_path = format!("/patients/{patient_id}");

    // T1 and T2 are read on this machine's clock, each in the middle of a
    // 1.2 s pause between reads: the accesses are stamped by the serving
    // services' clocks, which may be up to 0.6 s off this one.

    // Before T1.
    read(
        &person(Service::HealthcareApi, &early, Role::Clinician),
        &patient_path,
    )
    .await;
    let before = now_ms();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let t1 = (before + now_ms()) / 2;

    // Between T1 and T2.
    let dr_api = person(Service::HealthcareApi, &dr, Role::Clinician);
    read(&dr_api, &patient_path).await;
    read(&dr_api, &patient_path).await;
    read(&dr_api, &format!("/patients/{other_patient}")).await;
    read(
        &person(Service::InsuranceVerification, &dr, Role::Clinician),
        &format!("/verifications/{verification_id}"),
    )
    .await;
    read(
        &person(Service::BillingEngine, &clerk, Role::BillingClerk),
        &format!("/claims/{claim_id}"),
    )
    .await;
    read(
        &person(Service::HealthcareApi, &clerk, Role::BillingClerk),
        &format!("/visits/{visit_id}"),
    )
    .await;
    let last = now_ms();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let t2 = (last + now_ms()) / 2;

    // After T2.
    read(
        &person(Service::HealthcareApi, &early, Role::Clinician),
        &patient_path,
    )
    .await;

    let officer = person(
        Service::ComplianceMonitor,
        &format!("officer-{}", tenant.0),
        Role::ComplianceOfficer,
    );
    let (from, to) = (
        sandbox::access::format_rfc3339_ms(t1),
        sandbox::access::format_rfc3339_ms(t2),
    );
    let access = |service: Service, actor: &str, role: &str, resource: String| -> Seen {
        (
            service.name().to_string(),
            actor.to_string(),
            role.to_string(),
            "read".to_string(),
            resource,
        )
    };
    let mut want = vec![
        access(
            Service::HealthcareApi,
            &dr,
            "clinician",
            format!("GET {patient_path}"),
        ),
        access(
            Service::HealthcareApi,
            &dr,
            "clinician",
            format!("GET {patient_path}"),
        ),
        access(
            Service::InsuranceVerification,
            &dr,
            "clinician",
            format!("GET /verifications/{verification_id}"),
        ),
        access(
            Service::BillingEngine,
            &clerk,
            "billing_clerk",
            format!("GET /claims/{claim_id}"),
        ),
        access(
            Service::HealthcareApi,
            &clerk,
            "billing_clerk",
            format!("GET /visits/{visit_id}"),
        ),
    ];
    want.sort();
    let query = format!("/audit/access?patient_id={patient_id}&from={from}&to={to}");
    let got = settled(&officer, &query, want.len()).await;
    assert_eq!(got, want, "who read {patient_id} between {from} and {to}");

    // Without the window: the reads before T1 and after T2 as well.
    let everything = settled(
        &officer,
        &format!("/audit/access?patient_id={patient_id}"),
        want.len() + 2,
    )
    .await;
    let by_early = everything.iter().filter(|a| a.1 == early).count();
    assert_eq!(
        (everything.len(), by_early),
        (want.len() + 2, 2),
        "every read of {patient_id}: {everything:?}"
    );

    // Every audit event of the patient names who acted, and in what role.
    let r = officer
        .get(&format!("/audit?patient_id={patient_id}"))
        .await
        .expect("audit");
    assert_eq!(r.status, 200, "{}", r.body);
    let events = r.body["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.len() > want.len(),
        "the saga's events and the reads: {}",
        r.body
    );
    for e in &events {
        let named = |k: &str| e[k].as_str().is_some_and(|v| !v.is_empty());
        assert!(
            named("actor") && named("actor_role"),
            "an event without its actor: {e}"
        );
    }
}

/// The access log is answered to compliance officers and admins only
/// (`403` to a clinician or a billing clerk, who could learn who looked at
/// whom), and a window that is not RFC 3339, or a query naming neither a
/// patient nor an actor, is `422`, never the whole log.
///
/// Catches: an access log readable by any role, a malformed window read as
/// no window.
#[service_test(
    compliance,
    audit,
    real_services,
    services(compliance_monitor),
    timeout = "20s"
)]
async fn only_compliance_officers_and_admins_read_the_access_log(
    target: &Target,
    _tokens: SignTokens,
    tenant: Tenant,
) {
    let as_role = |role| {
        target
            .client(Service::ComplianceMonitor, &tenant)
            .as_person(&format!("someone-{}", tenant.0), role)
    };
    let query = "/audit/access?patient_id=pat-none";
    for (role, want) in [
        (Role::Clinician, 403),
        (Role::BillingClerk, 403),
        (Role::ComplianceOfficer, 200),
        (Role::Admin, 200),
    ] {
        let r = as_role(role).get(query).await.expect("access log");
        assert_eq!(r.status, want, "{role}: {}", r.body);
    }
    let officer = as_role(Role::ComplianceOfficer);
    for bad in [
        "/audit/access?patient_id=pat-none&from=yesterday",
        "/audit/access?patient_id=pat-none&to=2026-12-06T09:30:00",
        "/audit/access?from=2026-12-06T09:30:00Z",
    ] {
        let r = officer.get(bad).await.expect("access log");
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
    }
}
