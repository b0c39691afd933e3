//! Recovery: a service stopped and restarted, a link that resets every
//! connection and heals.

use std::time::Duration;

use fixtures::Scenario;
use harness::service_test;
use sandbox::Service;
use serde_json::json;
use suites::PrivateMesh;
use traffic::chaos::{ChaosProxy, Fault, FaultKind};

use crate::common::{intake, visit, visit_body};

/// Stop billing: the API's `/health` reports it unreachable and degraded, a
/// visit fails and is compensated; restart it on the same port: healthy
/// again and visits succeed.
#[service_test(
    resilience,
    health,
    integration,
    real_services,
    services(healthcare_api, billing),
    timeout = "30s"
)]
async fn stop_and_restart_a_service_on_its_port(own: PrivateMesh, s: Scenario) {
    let mesh = own
        .start(|c| c.client.retry.base = Duration::from_millis(5))
        .await
        .expect("mesh");
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    let addr = mesh.addr(Service::BillingEngine);
    mesh.stop(Service::BillingEngine).await;
    let h = api.get("/health").await.expect("health");
    assert_eq!(h.status, 200);
    assert_eq!(h.body["status"], "degraded");
    assert_eq!(
        h.body["dependencies"]["billing-engine"]["status"],
        "unreachable"
    );
    let r = api
        .post("/visits", &visit_body(&patient_id, &s))
        .await
        .expect("visit");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body["compensations"][0]["outcome"], "completed");
    mesh.restart(Service::BillingEngine).await.expect("restart");
    assert_eq!(mesh.addr(Service::BillingEngine), addr);
    let h = api.get("/health").await.expect("health");
    assert_eq!(h.body["status"], "healthy", "{}", h.body);
    visit(&api, &patient_id, &s).await;
}

/// Insurance verification behind a chaos proxy that resets every
/// connection: the visit fails at the first step, nothing is compensated
/// (nothing was done) and no claim is made; healed, the same visit succeeds.
#[service_test(
    resilience,
    chaos,
    real_services,
    services(healthcare_api, insurance),
    timeout = "30s"
)]
async fn a_resetting_link_to_insurance_fails_the_first_step_cleanly(own: PrivateMesh, s: Scenario) {
    let mesh = own
        .start(|c| c.client.retry.base = Duration::from_millis(5))
        .await
        .expect("mesh");
    let proxy = ChaosProxy::start(mesh.addr(Service::InsuranceVerification))
        .await
        .expect("proxy");
    mesh.route(Service::InsuranceVerification, proxy.addr())
        .expect("route");
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    let reset = proxy.add(Fault::new(FaultKind::Reset {
        after: Duration::ZERO,
    }));
    let r = api
        .post("/visits", &visit_body(&patient_id, &s))
        .await
        .expect("visit");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body["failed_step"], "verify_insurance", "{}", r.body);
    assert_eq!(r.body["compensations"], json!([]));
    proxy.remove(reset);
    visit(&api, &patient_id, &s).await;
}
