//! Hot reload in test mode (seed 001): a changed timeout applies live to
//! the calls that start after it, never to the ones in flight, and its
//! impact shows at once. On any target with fault injection (its
//! `/admin/config`).

use std::time::{Duration, Instant};

use harness::{Fixture, FixtureCx, FixtureError, service_test};
use healthcare_data::Scenario;
use sandbox::{FaultPlan, Service, Tenant};
use serde_json::json;
use suites::{ClientPolicy, Faults, Target};

use crate::common::{intake, visit_body};

/// The API's client settings as they were, put back (`PUT /admin/config`)
/// in the test's teardown whatever happened: the next test meets the API
/// as it was.
struct Restored;

impl Fixture for Restored {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = cx.get_shared::<Target>().await?;
        let policy = ClientPolicy::setup(cx).await?;
        cx.on_teardown(async move {
            let _ = target
                .client(Service::HealthcareApi, "admin")
                .put(
                    "/admin/config",
                    &json!({
                        "attempt_timeout_ms": policy.attempt_timeout.as_millis() as u64,
                        "call_timeout_ms": policy.call_timeout.as_millis() as u64,
                        "retry_max_attempts": policy.max_attempts,
                    }),
                )
                .await;
        });
        Ok(Restored)
    }
}

/// Billing answers in 800 ms. A visit is in flight when the API's attempt
/// timeout is tightened from 2 s to 300 ms (`PUT /admin/config`): it still
/// completes (it keeps the settings it began with); `/config` shows the new
/// timeout under a new hash; the next visit answers 504 at the claim step,
/// well before the old timeout; a reload out of bounds is refused.
/// The reload changes the API for everyone: the test runs alone, and its
/// teardown puts the settings back.
#[service_test(
    config,
    resilience,
    exclusive,
    real_services,
    services(healthcare_api, insurance_verification, billing_engine),
    timeout = "40s"
)]
async fn a_tightened_timeout_applies_live_without_dropping_a_call(
    target: &Target,
    faults: Faults,
    _restored: Restored,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let before = api.get("/config").await.expect("config");
    let old_attempt = before.body["client"]["attempt_timeout_ms"]
        .as_u64()
        .unwrap_or(0);
    assert!(old_attempt >= 1000, "{}", before.body["client"]);
    faults
        .inject(
            Service::BillingEngine,
            &FaultPlan {
                latency_ms: 800,
                tenant: Some(tenant.0.clone()),
                path_prefix: Some("/claims".into()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject");
    let body = visit_body(&patient_id, &s);
    let in_flight = tokio::spawn({
        let (api, body) = (api.clone(), body.clone());
        async move { api.post("/visits", &body).await }
    });
    // The visit is waiting on billing by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = api
        .put(
            "/admin/config",
            &json!({"attempt_timeout_ms": 300, "call_timeout_ms": 400, "retry_max_attempts": 1}),
        )
        .await
        .expect("reload");
    assert_eq!(r.status, 200, "{}", r.body);
    let a = in_flight.await.expect("join").expect("visit");
    assert_eq!(a.status, 201, "the visit in flight was dropped: {}", a.body);

    let after = api.get("/config").await.expect("config");
    assert_eq!(after.body["client"]["attempt_timeout_ms"], 300);
    assert_ne!(
        after.body["hash"], before.body["hash"],
        "the hash did not change"
    );

    let started = Instant::now();
    let b = api.post("/visits", &body).await.expect("visit");
    let took = started.elapsed();
    assert_eq!(b.status, 504, "{}", b.body);
    assert_eq!(b.body["failed_step"], "create_claim", "{}", b.body);
    assert!(
        took < Duration::from_millis(old_attempt),
        "answered after {took:?}: not before the old {old_attempt} ms timeout"
    );

    let bad = api
        .put(
            "/admin/config",
            &json!({"attempt_timeout_ms": 900, "call_timeout_ms": 400}),
        )
        .await
        .expect("reload");
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(bad.body["error"], "invalid_config");
}
