//! Concurrent work on the business services.

use std::time::{Duration, Instant};

use harness::{Metrics, service_test};
use healthcare_data::Scenario;
use sandbox::{Service, Tenant};
use suites::{LoadBudget, Target};

use crate::common::{intake, observed, visit_body};

/// Twenty claim sagas at once, each in a tenant of its own: all succeed,
/// and latency, error rate and throughput meet the SLO of `POST /visits`;
/// the figures go to the report.
#[service_test(
    performance,
    load,
    exclusive,
    real_services,
    services(healthcare_api, insurance_verification, billing_engine),
    timeout = "60s"
)]
async fn twenty_concurrent_sagas_meet_the_visit_slo(
    target: &Target,
    budget: LoadBudget,
    tenant: Tenant,
    metrics: Metrics,
    s: Scenario,
) -> Result<(), String> {
    let (n, _) = budget.cap(20, 20);
    let mut patients = Vec::new();
    for i in 0..n {
        let api = target.client(Service::HealthcareApi, &format!("{}-{i}", tenant.0));
        patients.push((intake(&api, &s).await, api));
    }
    let started = Instant::now();
    let handles: Vec<_> = patients
        .into_iter()
        .map(|(patient_id, api)| {
            let body = visit_body(&patient_id, &s);
            tokio::spawn(async move {
                let t = Instant::now();
                let r = api
                    .post("/visits", &body)
                    .await
                    .map_err(|e| e.to_string())?;
                match r.status {
                    201 => Ok::<Duration, String>(t.elapsed()),
                    st => Err(format!("{st}: {}", r.body)),
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    for h in handles {
        match h.await {
            Ok(Ok(d)) => samples.push(d),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let seen = observed(&samples, errors.len(), started.elapsed());
    metrics.latencies("POST /visits", &samples);
    metrics.throughput("POST /visits", seen.throughput_rps);
    metrics.error_rate("POST /visits", seen.error_rate);
    if let Some(e) = errors.first() {
        return Err(format!("{} of {n} sagas failed; first: {e}", errors.len()));
    }
    let breaches = target.slo("POST /visits").breaches(&seen);
    if !breaches.is_empty() {
        return Err(format!(
            "POST /visits on target `{}`: {}",
            target.name(),
            breaches.join("; ")
        ));
    }
    Ok(())
}
