//! Response times of endpoints, against their SLOs.

use std::time::Duration;

use harness::{Metrics, service_test};
use sandbox::Service;
use suites::{LoadBudget, Target};
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
    let breaches = target.slo("GET /health").breaches(&observed_load(&report));
    if report.ok < requests || !breaches.is_empty() {
        return Err(format!(
            "GET /health on target `{}`: {} of {} ok (errors {:?}); SLO: {}",
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
