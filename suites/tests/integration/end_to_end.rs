//! Whole journeys across the mesh (seed 000 scenario 1).

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{Service, Tenant};
use serde_json::json;
use suites::Target;

use crate::common::{intake, saga_trail, visit};

/// The seeds' complete patient journey: intake (synced to the services
/// holding patient data), insurance verification, claim, analytics, the
/// doctor's preferences, and the saga's events in order under the visit's
/// request id.
#[service_test(
    e2e,
    integration,
    interservice,
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
async fn a_patient_journey_crosses_every_service(target: &Target, tenant: Tenant, s: Scenario) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    let claim_id = v.body["claim_id"].as_str().expect("claim_id");
    let claim = target
        .client(Service::BillingEngine, &tenant)
        .get(&format!("/claims/{claim_id}"))
        .await
        .expect("claim");
    let expected: u64 = s.visit.lines.iter().map(|l| l.charge_cents).sum();
    assert_eq!(claim.body["total_cents"], json!(expected), "{}", claim.body);
    let verification_id = v.body["verification_id"].as_str().expect("verification_id");
    let ver = target
        .client(Service::InsuranceVerification, &tenant)
        .get(&format!("/verifications/{verification_id}"))
        .await
        .expect("verification");
    assert_eq!(ver.status, 200, "{}", ver.body);

    let doctor = target.client(Service::DoctorPersonalization, &tenant);
    let npi = &s.visit.rendering_npi;
    let prefs = json!({"note_style": "SOAP", "default_place_of_service": s.visit.place_of_service});
    let put = doctor
        .put(&format!("/doctors/{npi}/preferences"), &prefs)
        .await
        .expect("put");
    assert_eq!(put.status, 200, "{}", put.body);
    let back = doctor
        .get(&format!("/doctors/{npi}/preferences"))
        .await
        .expect("get");
    assert_eq!(back.body["preferences"], prefs);

    let agg = target
        .client(Service::BusinessIntelligence, &tenant)
        .get("/aggregates?metric=claim_charge_cents")
        .await
        .expect("aggregates");
    assert_eq!(
        agg.body["aggregates"][0]["sum"],
        json!(expected as f64),
        "{}",
        agg.body
    );

    let request_id = v.request_id.expect("X-Request-ID answered");
    let monitor = target.client(Service::ComplianceMonitor, &tenant);
    assert_eq!(
        saga_trail(&monitor, &request_id).await,
        [
            "saga_started:claim",
            "step_completed:verify_insurance",
            "step_completed:create_claim",
            "saga_completed:claim"
        ]
    );
}

/// A compensation that itself fails is recorded, not hidden: billing
/// refuses the claim (a bad NPI check digit), the cancellation of the
/// verification fails too (insurance answers 503 to it), and the visit
/// answers 422 with the compensation `failed` and its cause; the trail
/// holds `saga_failed:create_claim` then `compensation_failed:verify_insurance`
/// (nothing pretends the step was undone).
/// Exclusive: the failures it injects go into the API's breaker to
/// insurance-verification, which every tenant shares; beside other tests they could
/// open it for theirs.
#[service_test(
    e2e,
    interservice,
    audit,
    exclusive,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor
    ),
    timeout = "30s"
)]
async fn a_failed_compensation_is_recorded_as_compensation_failed(
    target: &Target,
    faults: suites::Faults,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    faults
        .inject(
            Service::InsuranceVerification,
            &sandbox::FaultPlan {
                fail_next: 10,
                status: Some(503),
                tenant: Some(tenant.0.clone()),
                path_prefix: Some("/verifications/".into()),
                ..sandbox::FaultPlan::default()
            },
        )
        .await
        .expect("inject");
    let mut body = crate::common::visit_body(&patient_id, &s);
    body["visit"]["rendering_npi"] = json!(crate::common::broken_npi(&s.visit.rendering_npi));
    let r = api.post("/visits", &body).await.expect("visit");
    faults
        .clear(Service::InsuranceVerification, &tenant)
        .await
        .expect("clear");
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["failed_step"], "create_claim");
    let comp = &r.body["compensations"][0];
    assert_eq!(comp["step"], "verify_insurance", "{}", r.body);
    assert_eq!(comp["outcome"], "failed", "{}", r.body);
    assert_eq!(comp["cause"]["status"], 503, "{}", r.body);
    let rid = r.request_id.expect("X-Request-ID answered");
    let trail = saga_trail(&target.client(Service::ComplianceMonitor, &tenant), &rid).await;
    let failed = trail.iter().position(|e| e == "saga_failed:create_claim");
    let comp_failed = trail
        .iter()
        .position(|e| e == "compensation_failed:verify_insurance");
    assert!(
        failed.is_some() && comp_failed > failed,
        "the trail: {trail:?}"
    );
}
