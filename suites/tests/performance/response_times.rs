//! Response times of endpoints, against their SLOs.

use std::time::Duration;

use harness::{Metrics, service_test};
use healthcare_data::Scenario;
use sandbox::{Service, Tenant};
use suites::{LoadBudget, SignTokens, Target};
use traffic::load::{self, LoadPlan};

use crate::common::observed_load;

/// The API's aggregated health under a bounded closed-model load (8
/// connections, 300 requests): p50/p95/p99, error rate and throughput meet
/// the target's SLO for `GET /health`; the figures go to the report.
#[service_test(
    performance,
    load,
    exclusive,
    real_services,
    services(healthcare_api),
    timeout = "60s"
)]
async fn the_health_endpoint_meets_its_slo_under_load(
    target: &Target,
    budget: LoadBudget,
    metrics: Metrics,
) -> Result<(), String> {
    let (connections, requests) = budget.cap(8, 300);
    let plan = LoadPlan::closed(
        target.addr(Service::HealthcareApi)?,
        "/health",
        connections as usize,
    )
    .max_requests(requests)
    .tls(target.tls())
    .allow(target.load_hosts())
    .duration(Duration::from_secs(20));
    let report = load::run(&plan).await.map_err(|e| e.to_string())?;
    report.record(&metrics, "GET /health (api)");
    verdict(target, "GET /health", &report, requests)
}

/// `Ok` when all `requests` were answered `2xx` and the figures meet the
/// target's SLO for `endpoint`; else what fell short.
fn verdict(
    target: &Target,
    endpoint: &str,
    report: &load::LoadReport,
    requests: u64,
) -> Result<(), String> {
    let breaches = target.slo(endpoint).breaches(&observed_load(report));
    if report.ok < requests || !breaches.is_empty() {
        return Err(format!(
            "{endpoint} on target `{}`: {} of {} answered 2xx (errors {:?}); SLO: {}",
            target.name(),
            report.ok,
            report.requests,
            report.errors,
            if breaches.is_empty() {
                "met".into()
            } else {
                breaches.join("; ")
            }
        ));
    }
    Ok(())
}

/// Intake under a bounded closed-model load through the load generator
/// (8 connections, 100 requests): `POST /patients` with the scenario's
/// patient as its body, a token signed afresh for each request (the
/// services refuse a replayed one), the API reached by the name its URL
/// gives; every request answered `201`, and the figures meet the target's
/// SLO for `POST /patients`.
#[service_test(
    performance,
    load,
    exclusive,
    real_services,
    services(healthcare_api),
    timeout = "60s"
)]
async fn intake_meets_its_slo_under_load(
    target: &Target,
    budget: LoadBudget,
    tokens: SignTokens,
    tenant: Tenant,
    s: Scenario,
    metrics: Metrics,
) -> Result<(), String> {
    let (connections, requests) = budget.cap(8, 100);
    let body =
        serde_json::to_vec(&serde_json::json!({"patient": s.patient, "coverage": s.coverage}))
            .map_err(|e| e.to_string())?;
    let tokens = std::sync::Arc::new(tokens);
    let (signer, acting) = (std::sync::Arc::clone(&tokens), tenant.0.clone());
    let fresh = load::HeaderSource::new(move || {
        let token = signer.token(Service::HealthcareApi, &acting, Duration::from_secs(300));
        vec![
            ("authorization".to_string(), format!("Bearer {token}")),
            ("x-tenant-id".to_string(), acting.clone()),
        ]
    });
    let url = deployment::parse_base_url(target.url(Service::HealthcareApi))?;
    let mut plan = LoadPlan::closed(
        target.addr(Service::HealthcareApi)?,
        "/patients",
        connections as usize,
    )
    .post(body)
    .header_source(fresh)
    .max_requests(requests)
    .tls(target.tls())
    .allow(target.load_hosts())
    .duration(Duration::from_secs(30));
    if url.host.parse::<std::net::IpAddr>().is_err() {
        plan = plan.host(&url.host);
    }
    let report = load::run(&plan).await.map_err(|e| e.to_string())?;
    report.record(&metrics, "POST /patients (api)");
    verdict(target, "POST /patients", &report, requests)
}
