//! Response times per endpoint of the business services, under concurrent
//! load, against the target's SLOs (seed 000, seed 004 scenario 8):
//! p50/p95/p99, error rate and throughput, figures to the report.

use std::time::{Duration, Instant};

use harness::{Metrics, service_test};
use healthcare_data::{Generator, Scenario};
use sandbox::{MeshClient, Service, Tenant};
use serde_json::{Value, json};
use suites::{LoadBudget, Target};

use crate::common::{intake, observed};

/// A service, a method and path, a body, the status it answers, a name.
type Endpoint = (
    Service,
    reqwest::Method,
    String,
    Option<Value>,
    u16,
    &'static str,
);

/// One request of a run: method, client, path, body.
struct Request {
    client: MeshClient,
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
    ok: u16,
}

/// Runs `requests` with `concurrency` in flight; checks the figures
/// against the target's SLO for `endpoint` and records them.
async fn drive(
    target: &Target,
    metrics: &Metrics,
    endpoint: &str,
    requests: Vec<Request>,
    concurrency: usize,
) -> Result<(), String> {
    let n = requests.len();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for r in requests {
        let gate = std::sync::Arc::clone(&gate);
        tasks.spawn(async move {
            let _slot = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let t = Instant::now();
            let a = r
                .client
                .request(r.method, &r.path, r.body.as_ref(), None)
                .await
                .map_err(|e| e.to_string())?;
            if a.status == r.ok {
                Ok::<Duration, String>(t.elapsed())
            } else {
                Err(format!("{}: {}", a.status, a.body["error"]))
            }
        });
    }
    let (mut samples, mut errors) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(d)) => samples.push(d),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let seen = observed(&samples, errors.len(), started.elapsed());
    metrics.latencies(endpoint, &samples);
    metrics.throughput(endpoint, seen.throughput_rps);
    metrics.error_rate(endpoint, seen.error_rate);
    let breaches = target.slo(endpoint).breaches(&seen);
    if !breaches.is_empty() {
        return Err(format!(
            "{endpoint} on target `{}` ({n} requests, {concurrency} at once; first error: {:?}): {}",
            target.name(),
            errors.first(),
            breaches.join("; ")
        ));
    }
    Ok(())
}

/// `POST /patients` (intake and sync to four services), 200 intakes eight
/// at a time, against the SLO for `POST /patients`.
#[service_test(
    performance,
    load,
    exclusive,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        doctor_personalization,
        compliance_monitor
    ),
    timeout = "90s"
)]
async fn patient_intake_meets_its_slo(
    target: &Target,
    budget: LoadBudget,
    tenant: Tenant,
    metrics: Metrics,
    mut g: Generator,
    s: Scenario,
) -> Result<(), String> {
    let (concurrency, n) = budget.cap(8, 200);
    let api = target.client(Service::HealthcareApi, &tenant);
    let requests = (0..n)
        .map(|_| Request {
            client: api.clone(),
            method: reqwest::Method::POST,
            path: "/patients".into(),
            body: Some(json!({"patient": g.patient(), "coverage": s.coverage})),
            ok: 201,
        })
        .collect();
    drive(
        target,
        &metrics,
        "POST /patients",
        requests,
        concurrency as usize,
    )
    .await
}

/// Each business service under concurrent load on its own endpoint, not
/// only `/health`: eligibility (`POST /verify`, cached after the first),
/// claims (`POST /claims`), analytics ingestion (`POST /events`), a
/// doctor's preferences (`GET`), the audit trail (`GET /audit`); 100
/// requests eight at a time each, against each endpoint's SLO.
#[service_test(
    performance,
    load,
    exclusive,
    real_services,
    services(
        insurance_verification,
        billing_engine,
        business_intelligence,
        doctor_personalization,
        compliance_monitor
    ),
    timeout = "120s"
)]
async fn each_business_service_meets_its_slo_under_load(
    target: &Target,
    budget: LoadBudget,
    tenant: Tenant,
    metrics: Metrics,
    s: Scenario,
) -> Result<(), String> {
    let (concurrency, n) = budget.cap(8, 100);
    let api = target.client(Service::HealthcareApi, &tenant);
    intake(&api, &s).await;
    let npi = &s.visit.rendering_npi;
    let prefs = target
        .client(Service::DoctorPersonalization, &tenant)
        .put(
            &format!("/doctors/{npi}/preferences"),
            &json!({"reminders": "sms", "language": "en"}),
        )
        .await
        .map_err(|e| format!("preferences: {e}"))?;
    if !(200..300).contains(&prefs.status) {
        return Err(format!(
            "setting preferences: {} {}",
            prefs.status, prefs.body
        ));
    }
    let verify = json!({
        "patient_id": "pat-load", "payer_id": s.coverage.payer.id,
        "member_id": s.coverage.member_id, "effective": s.coverage.effective.to_string(),
        "date_of_service": s.visit.date_of_service.to_string(), "procedures": ["99213"],
    });
    let claim = crate::common::claim_body(&s);
    let events = json!({"events": [{"metric": "visit_minutes", "value": 20}]});
    let endpoints: [Endpoint; 5] = [
        (
            Service::InsuranceVerification,
            reqwest::Method::POST,
            "/verify".into(),
            Some(verify),
            201,
            "POST /verify",
        ),
        (
            Service::BillingEngine,
            reqwest::Method::POST,
            "/claims".into(),
            Some(claim),
            201,
            "POST /claims",
        ),
        (
            Service::BusinessIntelligence,
            reqwest::Method::POST,
            "/events".into(),
            Some(events),
            202,
            "POST /events",
        ),
        (
            Service::DoctorPersonalization,
            reqwest::Method::GET,
            format!("/doctors/{npi}/preferences"),
            None,
            200,
            "GET /doctors/{npi}/preferences",
        ),
        (
            Service::ComplianceMonitor,
            reqwest::Method::GET,
            "/audit".into(),
            None,
            200,
            "GET /audit",
        ),
    ];
    let mut failures = Vec::new();
    for (service, method, path, body, ok, endpoint) in endpoints {
        let client = target.client(service, &tenant);
        // The expected status is the one a single call answers.
        let probe = client
            .request(method.clone(), &path, body.as_ref(), None)
            .await
            .map_err(|e| format!("{endpoint}: {e}"))?;
        let ok = if (200..300).contains(&probe.status) {
            probe.status
        } else {
            ok
        };
        let requests = (0..n)
            .map(|_| Request {
                client: client.clone(),
                method: method.clone(),
                path: path.clone(),
                body: body.clone(),
                ok,
            })
            .collect();
        if let Err(e) = drive(target, &metrics, endpoint, requests, concurrency as usize).await {
            failures.push(e);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
