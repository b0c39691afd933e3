//! Calls between services: a refusal downstream is compensated upstream,
//! a failed patient sync is audited for manual resync.

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{Service, Tenant};
use serde_json::json;
use suites::{Edge, Rows, Target, Toxics};

use crate::common::{broken_npi, saga_trail, visit_body};

/// Billing refuses the claim (a bad NPI check digit): 422 with billing's
/// field errors; the verification is cancelled (compensation) and both the
/// failure and the compensation are in the audit trail; no claim.
#[service_test(
    integration,
    interservice,
    audit,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor
    ),
    timeout = "30s"
)]
async fn a_refused_claim_cancels_the_verification(
    target: &Target,
    rows: Rows,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = crate::common::intake(&api, &s).await;
    let mut body = visit_body(&patient_id, &s);
    body["visit"]["rendering_npi"] = json!(broken_npi(&s.visit.rendering_npi));
    let r = api.post("/visits", &body).await.expect("visit");
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["failed_step"], "create_claim");
    assert_eq!(r.body["cause"]["body"]["fields"][0]["field"], "npi");
    assert_eq!(
        r.body["cause"]["body"]["fields"][0]["code"],
        "npi_check_digit"
    );
    assert_eq!(
        r.body["compensations"],
        json!([{"step": "verify_insurance", "outcome": "completed"}])
    );
    let cancelled: i64 = rows
        .one(
            "SELECT count(*) FROM insurance.verifications WHERE tenant = $1 AND status = 'cancelled' AND cancelled_at IS NOT NULL",
            &[&tenant.0],
        )
        .await
        .expect("count");
    assert_eq!(cancelled, 1);
    let claims: i64 = rows
        .one(
            "SELECT count(*) FROM billing.claims WHERE tenant = $1",
            &[&tenant.0],
        )
        .await
        .expect("count");
    assert_eq!(claims, 0);
    let request_id = r.request_id.expect("request id");
    let monitor = target.client(Service::ComplianceMonitor, &tenant);
    assert_eq!(
        saga_trail(&monitor, &request_id).await,
        [
            "saga_started:claim",
            "step_completed:verify_insurance",
            "saga_failed:create_claim",
            "compensation_completed:verify_insurance"
        ]
    );
}

/// Intake syncs the patient to the services that hold patient data; one of
/// them unreachable (its link down): the intake still succeeds, names the
/// failed sync, and the failure is in the audit trail for manual resync.
#[service_test(
    integration,
    interservice,
    audit,
    chaos,
    exclusive,
    real_services,
    services(healthcare_api, doctor_personalization, compliance_monitor),
    timeout = "30s"
)]
async fn a_failed_patient_sync_is_audited(
    target: &Target,
    toxics: Toxics,
    tenant: Tenant,
    s: Scenario,
) {
    toxics
        .disable(Edge::To(Service::DoctorPersonalization))
        .await
        .expect("cut the doctor service off");
    let api = target.client(Service::HealthcareApi, &tenant);
    let r = api
        .post(
            "/patients",
            &json!({"patient": s.patient, "coverage": s.coverage}),
        )
        .await
        .expect("intake");
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["sync_failed"], json!(["doctor-personalization"]));
    assert_eq!(r.body["synced"].as_array().map(Vec::len), Some(3));
    let patient_id = r.body["patient_id"].as_str().expect("patient_id");
    let trail = target
        .client(Service::ComplianceMonitor, &tenant)
        .get(&format!("/audit?patient_id={patient_id}&kind=sync_failure"))
        .await
        .expect("audit");
    let events = trail.body["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{}", trail.body);
    assert_eq!(
        events[0]["detail"]["service_name"],
        "doctor-personalization"
    );
    assert_eq!(events[0]["detail"]["requires_manual_sync"], true);
}

/// Analytics ingestion and aggregation between services: events posted
/// for a metric come back as count, sum, avg, min and max for the tenant.
#[service_test(
    integration,
    interservice,
    real_services,
    services(business_intelligence),
    timeout = "20s"
)]
async fn analytics_aggregate_what_was_ingested(target: &Target, tenant: Tenant) {
    let bi = target.client(Service::BusinessIntelligence, &tenant);
    let events = json!({"events": [
        {"metric": "copay_cents", "value": 1000},
        {"metric": "copay_cents", "value": 2500},
        {"metric": "copay_cents", "value": 4000},
    ]});
    let r = bi.post("/events", &events).await.expect("events");
    assert!((200..=202).contains(&r.status), "{} {}", r.status, r.body);
    let agg = bi
        .get("/aggregates?metric=copay_cents")
        .await
        .expect("aggregates");
    let a = &agg.body["aggregates"][0];
    assert_eq!(a["count"], 3, "{}", agg.body);
    assert_eq!(a["sum"].as_f64(), Some(7500.0), "{}", agg.body);
    assert_eq!(a["avg"].as_f64(), Some(2500.0), "{}", agg.body);
    assert_eq!(a["min"].as_f64(), Some(1000.0), "{}", agg.body);
    assert_eq!(a["max"].as_f64(), Some(4000.0), "{}", agg.body);
}

/// A patient update (`PUT /patients/{id}`: a new last name, phone and
/// address) reaches every holder as its own cut (insurance and billing see
/// the new name, billing the new phone, the monitor only the MRN), the API
/// reads it back; a holder that fails the update's sync (doctor
/// personalisation answering 503) is named in `sync_failed` and audited
/// for a manual resync.
/// Exclusive: the failures it injects go into the API's breaker to
/// doctor-personalization, which every tenant shares; beside other tests they could
/// open it for theirs.
#[service_test(
    integration,
    interservice,
    audit,
    exclusive,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        doctor_personalization,
        compliance_monitor
    ),
    timeout = "30s"
)]
async fn a_patient_update_reaches_every_holder_and_a_failed_sync_is_audited(
    target: &Target,
    rows: Rows,
    faults: suites::Faults,
    tenant: Tenant,
    s: Scenario,
    other: healthcare_data::Patient,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = crate::common::intake(&api, &s).await;
    faults
        .inject(
            Service::DoctorPersonalization,
            &sandbox::FaultPlan {
                fail_next: 10,
                status: Some(503),
                tenant: Some(tenant.0.clone()),
                path_prefix: Some("/patients/sync".into()),
                ..sandbox::FaultPlan::default()
            },
        )
        .await
        .expect("inject");
    let change = json!({"patient": {
        "last_name": other.last_name,
        "phone": other.phone,
        "address": other.address,
    }});
    let r = api
        .put(&format!("/patients/{patient_id}"), &change)
        .await
        .expect("update");
    faults
        .clear(Service::DoctorPersonalization, &tenant)
        .await
        .expect("clear");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["sync_failed"], json!(["doctor-personalization"]));
    assert_eq!(r.body["synced"].as_array().map(Vec::len), Some(3));
    let back = api
        .get(&format!("/patients/{patient_id}"))
        .await
        .expect("read");
    assert_eq!(back.body["patient"]["last_name"], other.last_name.as_str());
    assert_eq!(
        back.body["patient"]["first_name"],
        s.patient.first_name.as_str()
    );
    let holder = |schema: &'static str| {
        let rows = &rows;
        let (tenant, patient_id) = (tenant.0.clone(), patient_id.clone());
        async move {
            let text: String = rows
                .one(
                    &format!(
                        "SELECT record FROM {schema}.patients WHERE tenant = $1 AND patient_id = $2"
                    ),
                    &[&tenant, &patient_id],
                )
                .await
                .expect("the holder's copy");
            serde_json::from_str::<serde_json::Value>(&text).expect("JSON")
        }
    };
    let billing = holder("billing").await;
    assert_eq!(billing["patient"]["last_name"], other.last_name.as_str());
    assert_eq!(billing["patient"]["phone"], other.phone.as_str());
    let insurance = holder("insurance").await;
    assert_eq!(insurance["patient"]["last_name"], other.last_name.as_str());
    assert!(
        insurance["patient"].get("phone").is_none(),
        "insurance got the phone"
    );
    let compliance = holder("compliance").await;
    assert!(compliance["patient"].get("last_name").is_none());
    let doctor = holder("doctor").await;
    assert_eq!(
        doctor["patient"]["last_name"],
        s.patient.last_name.as_str(),
        "the failed holder keeps the old copy until resynced"
    );
    let trail = target
        .client(Service::ComplianceMonitor, &tenant)
        .get(&format!("/audit?patient_id={patient_id}&kind=sync_failure"))
        .await
        .expect("audit");
    let events = trail.body["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| e["detail"]["service_name"] == "doctor-personalization"
                && e["detail"]["requires_manual_sync"] == true),
        "the failed sync is not audited: {} events",
        events.len()
    );
}
