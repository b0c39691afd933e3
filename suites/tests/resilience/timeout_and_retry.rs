//! Timeouts and retries: what is retried, how often, and what a timeout
//! leaves behind.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fixtures::Scenario;
use harness::service_test;
use sandbox::breaker::BreakerConfig;
use sandbox::client::{Call, CallError, ClientConfig, Method, ServiceClient};
use sandbox::clock::SystemClock;
use sandbox::metrics::ServiceMetrics;
use sandbox::retry::RetryPolicy;
use sandbox::{FaultPlan, Mesh, Service, Tenant};
use serde_json::json;
use suites::{Faults, PrivateMesh, Target};
use traffic::chaos::{Fault, FaultKind};

use crate::common::{assert_compensated, behind_proxy, failed_visit, intake, saga_trail, visit};

/// Billing fails one claim with a 503 (for this tenant only): the saga's
/// claim call carries an idempotency key, so it is retried and the visit
/// succeeds; the API's `/metrics` counted the retry and billing counted
/// the injected fault.
#[service_test(
    resilience,
    retry,
    real_services,
    services(healthcare_api, billing),
    timeout = "30s"
)]
async fn a_transient_billing_failure_is_retried_to_success(
    target: &Target,
    faults: Faults,
    tenant: Tenant,
    s: Scenario,
) {
    let retries = || {
        target.metric(
            Service::HealthcareApi,
            "client_retries_total",
            &[("target", "billing-engine")],
        )
    };
    let injected = || target.metric(Service::BillingEngine, "faults_injected_total", &[]);
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let (retries_before, injected_before) = (
        retries().await.expect("metrics"),
        injected().await.expect("metrics"),
    );
    faults
        .inject(
            Service::BillingEngine,
            &FaultPlan {
                fail_next: 1,
                status: Some(503),
                tenant: Some(tenant.0.clone()),
                path_prefix: Some("/claims".into()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject");
    let v = visit(&api, &patient_id, &s).await;
    assert!(v.body["claim_id"].is_string(), "{}", v.body);
    assert!(
        retries().await.expect("metrics") >= retries_before + 1.0,
        "no retry counted"
    );
    assert!(
        injected().await.expect("metrics") >= injected_before + 1.0,
        "billing saw no fault"
    );
}

/// Billing down hard (every request 503): the claim step is retried (it
/// carries an idempotency key), three attempts in all, then fails; the
/// verification is cancelled and the compensation audited.
#[service_test(
    resilience,
    retry,
    integration,
    real_services,
    services(healthcare_api, insurance, billing, compliance),
    timeout = "30s"
)]
async fn a_failing_billing_engine_is_retried_then_compensated(own: PrivateMesh, s: Scenario) {
    let mesh = own
        .start(|c| {
            c.client.retry = RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
            };
        })
        .await
        .expect("mesh");
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    mesh.inject(
        Service::BillingEngine,
        &FaultPlan {
            fail_next: 100,
            status: Some(503),
            path_prefix: Some("/claims".into()),
            ..FaultPlan::default()
        },
    )
    .await
    .expect("inject");
    let r = failed_visit(&api, &patient_id, &s, 502).await;
    assert_eq!(r.body["failed_step"], "create_claim");
    assert_eq!(r.body["cause"]["status"], 503);
    assert_eq!(r.body["compensations"][0]["outcome"], "completed");
    assert_eq!(
        mesh.counter(
            Service::HealthcareApi,
            "client_retries_total",
            "target=\"billing-engine\""
        ),
        2,
        "three attempts in all"
    );
    let request_id = r.request_id.expect("request id");
    let trail = saga_trail(&mesh.client(Service::ComplianceMonitor, "t1"), &request_id).await;
    assert_eq!(
        trail.last().map(String::as_str),
        Some("compensation_completed:verify_insurance")
    );
}

fn client_for(mesh: &Mesh, retry: RetryPolicy, attempt_timeout: Duration) -> Arc<ServiceClient> {
    let routes = Arc::new(RwLock::new(
        mesh.addrs()
            .iter()
            .map(|(s, a)| (*s, *a))
            .collect::<HashMap<_, _>>(),
    ));
    let client = ServiceClient::new(
        "healthcare-api",
        routes,
        ClientConfig {
            retry,
            attempt_timeout,
            call_timeout: Duration::from_secs(5),
            // This test is about retries: a breaker that will not open.
            breaker: BreakerConfig::default(),
            ..ClientConfig::default()
        },
        mesh.config().secret.clone().into(),
        Arc::new(SystemClock),
        1,
        Arc::new(ServiceMetrics::default()),
    );
    Arc::new(match &mesh.config().tls {
        Some(tls) => client.with_tls(tls),
        None => client,
    })
}

/// The retry policy over the wire: a `POST` without an idempotency key is
/// not repeated; with one, transient failures are retried; a `422` is never
/// retried; a `GET` is.
#[service_test(
    resilience,
    retry,
    integration,
    real_services,
    services(bi),
    timeout = "30s"
)]
async fn only_repeatable_requests_are_retried(own: PrivateMesh) {
    let mesh = own.start(|_| {}).await.expect("mesh");
    let policy = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(2),
        max_delay: Duration::from_millis(10),
    };
    let client = client_for(&mesh, policy, Duration::from_secs(2));
    let fail = |n| FaultPlan {
        fail_next: n,
        status: Some(503),
        ..FaultPlan::default()
    };
    let event = json!({"events": [{"metric": "m", "value": 1}]});
    let post = |key: Option<&str>| {
        let mut c = Call::new(
            Service::BusinessIntelligence,
            Method::Post,
            "/events",
            "t1",
            "req-retry",
        )
        .json(event.clone());
        if let Some(k) = key {
            c = c.key(k);
        }
        c
    };
    mesh.inject(Service::BusinessIntelligence, &fail(1))
        .await
        .expect("inject");
    match client.send(&post(None)).await {
        Err(CallError::Status {
            status: 503,
            attempts: 1,
            ..
        }) => {}
        other => panic!("a POST without a key must not be retried: {other:?}"),
    }
    mesh.inject(Service::BusinessIntelligence, &fail(2))
        .await
        .expect("inject");
    let ok = client
        .send(&post(Some("k1")))
        .await
        .expect("retried to success");
    assert_eq!(ok.attempts, 3);
    mesh.inject(Service::BusinessIntelligence, &fail(2))
        .await
        .expect("inject");
    let get = Call::new(
        Service::BusinessIntelligence,
        Method::Get,
        "/aggregates",
        "t1",
        "req-retry",
    );
    assert_eq!(client.send(&get).await.expect("GET retried").attempts, 3);
    mesh.inject(Service::BusinessIntelligence, &fail(5))
        .await
        .expect("inject");
    match client.send(&post(Some("k2"))).await {
        Err(CallError::Status {
            status: 503,
            attempts: 3,
            ..
        }) => {}
        other => panic!("three attempts, then the failure: {other:?}"),
    }
    mesh.clear_faults(Service::BusinessIntelligence)
        .await
        .expect("clear");
    let bad = Call::new(
        Service::BusinessIntelligence,
        Method::Post,
        "/events",
        "t1",
        "req-retry",
    )
    .json(json!({"events": [{"metric": "", "value": 1}]}))
    .key("k3");
    match client.send(&bad).await {
        Err(CallError::Status {
            status: 422,
            attempts: 1,
            ..
        }) => {}
        other => panic!("a 422 is final: {other:?}"),
    }
}

/// A chaos proxy in front of billing: latency beyond the per-attempt
/// timeout fails the claim step with a timeout (compensated); without the
/// fault the same visit goes through the proxy.
#[service_test(
    resilience,
    retry,
    chaos,
    real_services,
    services(healthcare_api, billing),
    timeout = "30s"
)]
async fn a_slow_link_to_billing_times_out_and_is_compensated(own: PrivateMesh, s: Scenario) {
    let mesh = own
        .start(|c| {
            c.client.attempt_timeout = Duration::from_millis(300);
            c.client.call_timeout = Duration::from_millis(1500);
            c.client.retry.max_attempts = 2;
        })
        .await
        .expect("mesh");
    let proxy = behind_proxy(&mesh, Service::BillingEngine, 0x5eed).await;
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    let slow = proxy.add(Fault::new(FaultKind::Latency {
        latency: Duration::from_millis(800),
        jitter: Duration::ZERO,
    }));
    let r = failed_visit(&api, &patient_id, &s, 504).await;
    assert_eq!(r.body["failed_step"], "create_claim");
    assert_compensated(&r.body);
    proxy.remove(slow);
    visit(&api, &patient_id, &s).await;
}
