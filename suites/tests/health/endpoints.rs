//! `/health` and `/metrics` of every service.

use healthcare_data::Scenario;
use harness::service_test;
use sandbox::{Service, Tenant};
use serde_json::Value;
use suites::Target;

use crate::common::{intake, visit};

/// Every business service answers `/health` 200 JSON, healthy, with its
/// database and Redis up; the API's `/health` names all five dependencies
/// with their status and breaker state.
#[service_test(
    health,
    real_services,
    services(healthcare_api, insurance, billing, compliance, bi, doctor),
    timeout = "20s"
)]
async fn every_service_reports_its_health_and_storage(target: &Target) -> Result<(), String> {
    for service in Service::ALL {
        let r = target
            .http()
            .get(format!("{}/health", target.url(service)))
            .send()
            .await
            .map_err(|e| format!("{service}: {e}"))?;
        let status = r.status().as_u16();
        let body: Value = r
            .json()
            .await
            .map_err(|e| format!("{service}: not JSON: {e}"))?;
        if status != 200 || body["database"] != "up" || body["redis"] != "up" {
            return Err(format!("{service}: {status} {body}"));
        }
        if service == Service::HealthcareApi {
            for dep in Service::ALL
                .iter()
                .filter(|s| **s != Service::HealthcareApi)
            {
                let d = &body["dependencies"][dep.name()];
                if d["status"] != "healthy" || !d["circuit_breaker"].is_string() {
                    return Err(format!("the API's view of {dep}: {d}"));
                }
            }
        } else if body["status"] != "healthy" {
            return Err(format!("{service}: {body}"));
        }
    }
    Ok(())
}

/// `/metrics` is Prometheus text with request counts, saga outcomes,
/// breaker states and the process's resources.
#[service_test(health, real_services, services(healthcare_api), timeout = "20s")]
async fn metrics_are_prometheus_text(
    target: &Target,
    tenant: Tenant,
    s: Scenario,
) -> Result<(), String> {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    visit(&api, &patient_id, &s).await;
    let text = target.metrics_text(Service::HealthcareApi).await?;
    for want in [
        "# TYPE http_requests_total counter",
        "saga_total{service=\"healthcare-api\",outcome=\"completed\"}",
        "circuit_breaker_state{service=\"healthcare-api\",target=\"billing-engine\",state=",
        "# TYPE process_open_fds gauge",
        "# TYPE process_resident_memory_bytes gauge",
    ] {
        if !text.contains(want) {
            return Err(format!("/metrics lacks `{want}`"));
        }
    }
    Ok(())
}
