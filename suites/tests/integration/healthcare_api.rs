//! The healthcare API's intake and claim saga, checked in the rows and
//! cache entries the services wrote.

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{Service, Tenant};
use suites::{CacheKeys, Rows, Target};

use crate::common::{intake, visit};

/// Intake then a visit: the claim's rows are in PostgreSQL, the patient is
/// copied to the four services that hold patient data, and the eligibility
/// answer is in Redis with a TTL.
#[service_test(
    integration,
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
async fn intake_and_visit_leave_the_rows_and_the_cached_answer(
    target: &Target,
    rows: Rows,
    mut cache: CacheKeys,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let r = visit(&api, &patient_id, &s).await;
    let claim_id = r.body["claim_id"].as_str().expect("claim_id");
    let verification_id = r.body["verification_id"].as_str().expect("verification_id");

    let claim = rows
        .query_one(
            "SELECT tenant, patient_id, verification_id, status, total_cents FROM billing.claims WHERE id = $1",
            &[&claim_id],
        )
        .await
        .expect("the claim's row");
    assert_eq!(claim.get::<_, String>(0), tenant.0);
    assert_eq!(claim.get::<_, String>(1), patient_id);
    assert_eq!(claim.get::<_, String>(2), verification_id);
    assert_eq!(claim.get::<_, String>(3), "submitted");
    let expected: u64 = s.visit.lines.iter().map(|l| l.charge_cents).sum();
    assert_eq!(claim.get::<_, i64>(4) as u64, expected);
    let status: String = rows
        .one(
            "SELECT status FROM insurance.verifications WHERE id = $1",
            &[&verification_id],
        )
        .await
        .expect("verification row");
    assert_eq!(status, "active");
    let visit_status: String = rows
        .one(
            "SELECT status FROM api.visits WHERE claim_id = $1",
            &[&claim_id],
        )
        .await
        .expect("visit row");
    assert_eq!(visit_status, "completed");
    for schema in ["billing", "insurance", "doctor", "compliance"] {
        let n: i64 = rows
            .one(
                &format!(
                    "SELECT count(*) FROM {schema}.patients WHERE tenant = $1 AND patient_id = $2"
                ),
                &[&tenant.0, &patient_id],
            )
            .await
            .expect("count");
        assert_eq!(n, 1, "patient copy in {schema}");
    }

    let procs: Vec<String> = s
        .visit
        .lines
        .iter()
        .map(|l| l.procedure_code.to_string())
        .collect();
    let key = cache.key(&sandbox::insurance::eligibility_key(
        &tenant,
        s.coverage.payer.id,
        &s.coverage.member_id,
        &s.visit.date_of_service.to_string(),
        &procs,
    ));
    let ms = cache.pttl_ms(&key).await.expect("PTTL");
    assert!(
        ms > 0 && ms <= 300_000,
        "eligibility cached with TTL {ms} ms (PTTL {key})"
    );
}

/// A patient read back through the API is the one registered; an unknown
/// patient is a 404 with the one error shape.
#[service_test(
    integration,
    api_contract,
    real_services,
    services(healthcare_api),
    timeout = "20s"
)]
async fn a_registered_patient_reads_back_and_an_unknown_one_is_404(
    target: &Target,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let read = api
        .get(&format!("/patients/{patient_id}"))
        .await
        .expect("read");
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["mrn"], serde_json::json!(s.patient.mrn));
    let none = api.get("/patients/pat-no-such").await.expect("read");
    assert_eq!(none.status, 404, "{}", none.body);
    assert_eq!(none.body["error"], "not_found", "{}", none.body);
}
