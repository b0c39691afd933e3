//! PHI across services: after a journey, the patient's identifiers are
//! only where a service needs them (minimum necessary), in every row the
//! services wrote, every log line and every `/metrics` label.

use std::collections::{BTreeMap, BTreeSet};

use harness::service_test;
use healthcare_data::Scenario;
use phi::{CanaryRegistry, Kind};
use sandbox::{Service, Tenant};
use serde_json::Value;
use suites::{Logs, Rows, Target};

use crate::common::{intake, tenant_rows, visit};

/// This scenario's patient, and only them, as canaries.
fn registry(s: &Scenario) -> CanaryRegistry {
    let reg = CanaryRegistry::new();
    let p = &s.patient;
    reg.register(Kind::Name, &p.full_name());
    reg.register(Kind::Ssn, &p.ssn);
    // Covered from birth, the coverage starts on the birth date and is
    // kept in the clear with it: the date alone then proves nothing.
    if s.coverage.effective != p.birth_date {
        reg.register(Kind::Date, &p.birth_date.to_string());
    }
    reg.register(Kind::Phone, &p.phone);
    reg.register(Kind::Email, &p.email);
    reg.register(Kind::Address, &p.address.line1);
    reg.register(Kind::Mrn, &p.mrn);
    reg.register(Kind::MemberId, &s.coverage.member_id);
    reg
}

/// Which of the patient's identifiers a table may hold, by design: the
/// API's patient record (SSN and birth date sealed, so neither in the
/// clear), each holder's copy as `sandbox::api::FIELDS_NEEDED` cuts it,
/// the member id an eligibility check is about. Nothing else anywhere.
fn allowed(schema: &str, table: &str) -> BTreeSet<Kind> {
    use Kind::*;
    let kinds: &[Kind] = match (schema, table) {
        ("api", "patients") => &[Name, Address, Phone, Email, Mrn, MemberId],
        ("insurance", "patients") => &[Name, Mrn, MemberId],
        ("billing", "patients") => &[Name, Address, Phone, Mrn, MemberId],
        ("doctor", "patients") => &[Name],
        ("compliance", "patients") => &[Mrn],
        ("insurance", "verifications") => &[MemberId],
        _ => &[],
    };
    kinds.iter().copied().collect()
}

/// Every row the services wrote for the tenant, every log line and every
/// `/metrics` text of a full journey is scanned with the patient's values
/// registered: identifiers appear only in the tables allowed to hold them,
/// and of those only the kinds allowed there.
#[service_test(
    compliance,
    phi_safe,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor,
        doctor_personalization,
        business_intelligence
    ),
    timeout = "40s"
)]
async fn phi_stays_in_the_fields_allowed_to_hold_it(
    target: &Target,
    rows: Rows,
    logs: Logs,
    tenant: Tenant,
    s: Scenario,
) {
    let reg = registry(&s);
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    assert_eq!(v.status, 201, "the journey: {}", v.body);
    let mut breaches = Vec::new();
    let mut seen: BTreeMap<String, BTreeSet<Kind>> = BTreeMap::new();
    for (schema, table, text) in tenant_rows(&rows, &tenant).await {
        let ok = allowed(&schema, &table);
        for f in phi::scan_with(&reg, &text) {
            if f.via != phi::Via::Canary {
                continue;
            }
            seen.entry(format!("{schema}.{table}"))
                .or_default()
                .insert(f.kind);
            if !ok.contains(&f.kind) {
                breaches.push(format!("{schema}.{table}: {f}"));
            }
        }
    }
    // The system of record does hold the identity (the scan would see it).
    assert!(
        seen.get("api.patients")
            .is_some_and(|k| k.contains(&Kind::Name)),
        "the scan found no name even in api.patients: {seen:?}"
    );
    // This tenant's lines and the mesh's own (other tests' patients may
    // share a first or last name with this one).
    let mine = format!("tenant={}", tenant.0);
    for line in logs.lines().await.expect("logs") {
        if line.contains("tenant=") && !line.contains(&mine) {
            continue;
        }
        if let Some(f) = phi::scan_with(&reg, &line).first() {
            breaches.push(format!("a log line: {f}"));
        }
    }
    for service in Service::ALL {
        let url = format!("{}/metrics", target.url(service));
        let text = target
            .http()
            .get(&url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        if let Some(f) = phi::scan_with(&reg, &text).first() {
            breaches.push(format!("{service} /metrics: {f}"));
        }
    }
    assert!(breaches.is_empty(), "PHI outside its fields: {breaches:#?}");
}

/// Each holder's copy of the patient has exactly the fields its work needs
/// (`sandbox::api::FIELDS_NEEDED`): no SSN anywhere, coverage only where
/// eligibility and claims need it.
#[service_test(
    compliance,
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
async fn each_holder_receives_only_the_fields_it_needs(
    target: &Target,
    rows: Rows,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    for (holder, fields) in sandbox::api::FIELDS_NEEDED {
        let text: String = rows
            .one(
                &format!(
                    "SELECT record FROM {}.patients WHERE tenant = $1 AND patient_id = $2",
                    holder.schema()
                ),
                &[&tenant.0, &patient_id],
            )
            .await
            .expect("the holder's copy");
        let record: Value = serde_json::from_str(&text).expect("a JSON record");
        let keys: BTreeSet<&str> = record["patient"]
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let needed: BTreeSet<&str> = fields.iter().copied().collect();
        assert_eq!(keys, needed, "{holder} holds other fields than it needs");
        assert!(!text.contains("\"ssn\""), "{holder} holds an SSN field");
        let has_coverage = !record["coverage"].is_null();
        assert_eq!(
            has_coverage,
            matches!(
                holder,
                Service::InsuranceVerification | Service::BillingEngine
            ),
            "{holder}: coverage held = {has_coverage}"
        );
    }
}
