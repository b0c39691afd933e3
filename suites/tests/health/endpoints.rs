//! `/health` and `/metrics` of every service.

use harness::{Metrics, service_test};
use healthcare_data::Scenario;
use sandbox::{Service, Tenant};
use serde_json::Value;
use suites::Target;
use suites::target::sum_samples;

use crate::common::{intake, record_health, visit};

/// Every business service answers `/health` 200 JSON, healthy, with its
/// database and Redis up; the API's `/health` names all five dependencies
/// with their status and breaker state. What each answered goes to the
/// report's service health section. It runs alone: the API probes each
/// peer's `/health` with a short timeout, and the load tests running beside
/// it on a loaded 2-core machine could make a healthy peer miss it (seen
/// twice while builds ran beside the suites), which this test would then
/// report as a broken mesh.
#[service_test(
    health,
    exclusive,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor,
        business_intelligence,
        doctor_personalization
    ),
    timeout = "20s"
)]
async fn every_service_reports_its_health_and_storage(
    target: &Target,
    metrics: Metrics,
) -> Result<(), String> {
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
        record_health(&metrics, service, &body);
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

/// `/metrics` is Prometheus text whose counters count: one intake and one
/// visit move the API's `POST … 201` requests by exactly two and its
/// completed sagas by exactly one; billing's breaker is in exactly one
/// state, closed; the process's resources are there and non-zero. Catches
/// counters that are declared but never move (a stuck `incr`), and a
/// breaker gauge reporting no state or two. The counters are the whole
/// process's: the test runs alone.
#[service_test(
    health,
    exclusive,
    real_services,
    services(healthcare_api),
    timeout = "20s"
)]
async fn metrics_are_prometheus_text_and_its_counters_count(
    target: &Target,
    tenant: Tenant,
    s: Scenario,
) -> Result<(), String> {
    let created = [("method", "POST"), ("status", "201")];
    let completed = [("outcome", "completed")];
    let before = target.metrics_text(Service::HealthcareApi).await?;
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
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sum_samples(&text, name, labels) - sum_samples(&before, name, labels)
    };
    let requests = moved("http_requests_total", &created);
    if requests != 2.0 {
        return Err(format!(
            "an intake and a visit moved http_requests_total{{method=POST,status=201}} by {requests}, not 2"
        ));
    }
    let sagas = moved("saga_total", &completed);
    if sagas != 1.0 {
        return Err(format!(
            "a completed visit moved saga_total{{outcome=completed}} by {sagas}, not 1"
        ));
    }
    let billing = [("target", "billing-engine")];
    let states = sum_samples(&text, "circuit_breaker_state", &billing);
    let closed = sum_samples(
        &text,
        "circuit_breaker_state",
        &[("target", "billing-engine"), ("state", "closed")],
    );
    if (states, closed) != (1.0, 1.0) {
        return Err(format!(
            "billing's breaker gauge: {states} states set, closed {closed}; one state, closed, expected"
        ));
    }
    for gauge in ["process_open_fds", "process_resident_memory_bytes"] {
        if sum_samples(&text, gauge, &[]) <= 0.0 {
            return Err(format!("{gauge} is not above zero"));
        }
    }
    Ok(())
}
