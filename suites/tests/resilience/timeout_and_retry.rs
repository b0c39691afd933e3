//! Timeouts and retries: what is retried, how often, and what a timeout
//! leaves behind.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use healthcare_data::Scenario;
use harness::service_test;
use sandbox::breaker::BreakerConfig;
use sandbox::client::{Call, CallError, ClientConfig, Method, ServiceClient};
use sandbox::clock::SystemClock;
use sandbox::metrics::ServiceMetrics;
use sandbox::retry::RetryPolicy;
use sandbox::{FaultPlan, Service, Tenant};
use serde_json::json;
use suites::{ClientPolicy, Faults, Rows, SignTokens, Target, Toxics};

use crate::common::{
    assert_compensated, failed_visit, intake, saga_trail, standing_claims_settle, visit,
};

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

/// The API's retry counter for billing, and billing's injected faults.
async fn retries_and_faults(target: &Target) -> (f64, f64) {
    let retries = target
        .metric(
            Service::HealthcareApi,
            "client_retries_total",
            &[("target", "billing-engine")],
        )
        .await
        .expect("metrics");
    let faults = target
        .metric(Service::BillingEngine, "faults_injected_total", &[])
        .await
        .expect("metrics");
    (retries, faults)
}

/// The longest wait the policy allows before retry `n` (1 = the first).
fn ceiling(policy: &ClientPolicy, n: u32) -> Duration {
    policy
        .retry_base
        .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX))
        .min(policy.retry_max_delay)
}

/// The sum of the backoff ceilings of a call's retries: the longest the
/// policy lets a call wait between its attempts.
fn longest_backoff(policy: &ClientPolicy) -> Duration {
    (1..policy.max_attempts).map(|n| ceiling(policy, n)).sum()
}

/// Billing down hard for the test's tenant (every claim `503`): the claim
/// call (it carries an idempotency key) is made exactly `max_attempts`
/// times as `/config` states — billing counts that many faults and the API
/// that many retries less one, no more — with waits within the policy's
/// bounds; then the step fails, the verification is cancelled and the
/// compensation audited. The counters are shared: the test runs alone.
#[service_test(
    resilience,
    retry,
    integration,
    exclusive,
    real_services,
    services(healthcare_api, insurance, billing, compliance),
    timeout = "30s"
)]
async fn a_failing_billing_engine_is_retried_then_compensated(
    target: &Target,
    faults: Faults,
    policy: ClientPolicy,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    faults
        .inject(
            Service::BillingEngine,
            &FaultPlan {
                fail_next: 100,
                status: Some(503),
                tenant: Some(tenant.0.clone()),
                path_prefix: Some("/claims".into()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject");
    let (retries_before, faults_before) = retries_and_faults(target).await;
    let started = std::time::Instant::now();
    let r = failed_visit(&api, &patient_id, &s, 502).await;
    let took = started.elapsed();
    assert_eq!(r.body["failed_step"], "create_claim");
    assert_eq!(r.body["cause"]["status"], 503);
    assert_compensated(&r.body);
    let (retries, faulted) = retries_and_faults(target).await;
    assert_eq!(
        faulted - faults_before,
        f64::from(policy.max_attempts),
        "billing saw {} claim attempts; the policy makes {}",
        faulted - faults_before,
        policy.max_attempts
    );
    // Billing's count (this tenant's claims only) is exact; the API's
    // counter covers every call to billing, so it moved at least as much.
    assert!(
        retries - retries_before >= f64::from(policy.max_attempts - 1),
        "the API counted {} retries; the policy makes {}",
        retries - retries_before,
        policy.max_attempts - 1
    );
    let bound = longest_backoff(&policy) + Duration::from_secs(3);
    assert!(
        took < bound,
        "the failing visit took {took:?}: its retries waited longer than the policy allows ({:?} of backoff at most)",
        longest_backoff(&policy)
    );
    let request_id = r.request_id.expect("request id");
    let trail = saga_trail(
        &target.client(Service::ComplianceMonitor, &tenant),
        &request_id,
    )
    .await;
    assert_eq!(
        trail.last().map(String::as_str),
        Some("compensation_completed:verify_insurance")
    );
}

/// A client of the target's business intelligence with `policy`: signed
/// as the healthcare API, over the target's TLS when it has one.
fn client_for(
    target: &Target,
    tokens: &SignTokens,
    retry: RetryPolicy,
    attempt_timeout: Duration,
) -> Arc<ServiceClient> {
    let routes = Arc::new(RwLock::new(
        Service::ALL
            .iter()
            .filter_map(|s| Some((*s, target.addr(*s).ok()?)))
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
        tokens.secret().into(),
        Arc::new(SystemClock),
        1,
        Arc::new(ServiceMetrics::default()),
    );
    Arc::new(match target.tls() {
        Some(tls) => client.with_client_tls(&tls),
        None => client,
    })
}

/// The retry policy over the wire, against the target's analytics service:
/// a `POST` without an idempotency key is not repeated; with one,
/// transient failures are retried; a `422` is never retried; a `GET` is.
/// The attempts are counted by the client and by the faults the service
/// counts.
#[service_test(
    resilience,
    retry,
    integration,
    real_services,
    services(bi),
    timeout = "30s"
)]
async fn only_repeatable_requests_are_retried(
    target: &Target,
    faults: Faults,
    tokens: SignTokens,
    tenant: Tenant,
) {
    let policy = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(2),
        max_delay: Duration::from_millis(10),
    };
    let client = client_for(target, &tokens, policy, Duration::from_secs(2));
    let fail = |n| FaultPlan {
        fail_next: n,
        status: Some(503),
        tenant: Some(tenant.0.clone()),
        ..FaultPlan::default()
    };
    let event = json!({"events": [{"metric": "m", "value": 1}]});
    let post = |key: Option<&str>| {
        let mut c = Call::new(
            Service::BusinessIntelligence,
            Method::Post,
            "/events",
            &tenant,
            "req-retry",
        )
        .json(event.clone());
        if let Some(k) = key {
            c = c.key(k);
        }
        c
    };
    let bi = Service::BusinessIntelligence;
    faults.inject(bi, &fail(1)).await.expect("inject");
    match client.send(&post(None)).await {
        Err(CallError::Status {
            status: 503,
            attempts: 1,
            ..
        }) => {}
        other => panic!("a POST without a key must not be retried: {other:?}"),
    }
    faults.inject(bi, &fail(2)).await.expect("inject");
    let ok = client
        .send(&post(Some("k1")))
        .await
        .expect("retried to success");
    assert_eq!(ok.attempts, 3);
    faults.inject(bi, &fail(2)).await.expect("inject");
    let get = Call::new(bi, Method::Get, "/aggregates", &tenant, "req-retry");
    assert_eq!(client.send(&get).await.expect("GET retried").attempts, 3);
    faults.inject(bi, &fail(5)).await.expect("inject");
    match client.send(&post(Some("k2"))).await {
        Err(CallError::Status {
            status: 503,
            attempts: 3,
            ..
        }) => {}
        other => panic!("three attempts, then the failure: {other:?}"),
    }
    faults.clear(bi, &tenant).await.expect("clear");
    let bad = Call::new(bi, Method::Post, "/events", &tenant, "req-retry")
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

/// A `latency` toxic on billing's replies, longer than the API's attempt
/// timeout (from `/config`): each claim attempt times out on its own
/// timeout, the call is retried while its overall deadline allows (the
/// attempts counted, as many as fit in the deadline), and the deadline
/// ends it: the visit answers `504` at the claim, within the
/// deadline, compensated. A claim billing made behind a lost answer is
/// voided once the link is healthy again; then the same visit succeeds.
#[service_test(
    resilience,
    retry,
    chaos,
    exclusive,
    real_services,
    services(healthcare_api, billing),
    timeout = "60s"
)]
async fn a_slow_link_to_billing_times_out_and_is_compensated(
    target: &Target,
    toxics: Toxics,
    policy: ClientPolicy,
    rows: Rows,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let latency = policy.attempt_timeout + Duration::from_millis(500);
    let slow = toxics
        .add(
            Service::BillingEngine,
            json!({"name": "slow_billing_replies", "type": "latency", "stream": "downstream",
                   "toxicity": 1.0, "attributes": {"latency": latency.as_millis() as u64, "jitter": 0}}),
        )
        .await
        .expect("add the toxic");
    let (retries_before, _) = retries_and_faults(target).await;
    let started = std::time::Instant::now();
    let r = failed_visit(&api, &patient_id, &s, 504).await;
    let took = started.elapsed();
    assert_eq!(r.body["failed_step"], "create_claim");
    assert_compensated(&r.body);
    assert!(
        took >= policy.attempt_timeout,
        "the visit failed after {took:?}, before one attempt's timeout ({:?})",
        policy.attempt_timeout
    );
    assert!(
        took < policy.call_timeout + Duration::from_secs(2),
        "the visit took {took:?}: the call's deadline is {:?}",
        policy.call_timeout
    );
    // How many attempts fit in the deadline: each waits its timeout (the
    // last what is left of the deadline), then a backoff of at most its
    // ceiling before the next; at least as many as fit with the longest
    // backoffs, at most as many as fit with none.
    let fit = |longest: bool| {
        let mut started = Duration::ZERO;
        let mut attempts = 0u32;
        while attempts < policy.max_attempts && started < policy.call_timeout {
            attempts += 1;
            started += policy.attempt_timeout;
            if longest {
                started += ceiling(&policy, attempts);
            }
        }
        attempts
    };
    let (fewest, most) = (fit(true), fit(false));
    // The counter is the API's, for every call to billing (a compensator
    // retrying another test's void counts too): at least this call's
    // retries; that no more attempts were made than fit is the deadline's
    // bound on the time, above.
    let (retries, _) = retries_and_faults(target).await;
    let attempts = (retries - retries_before) as u32 + 1;
    assert!(
        attempts >= fewest,
        "{attempts} attempt(s) timed out; with {:?} per attempt, a {:?} deadline and {} attempts at most, {fewest} to {most} fit",
        policy.attempt_timeout,
        policy.call_timeout,
        policy.max_attempts
    );
    toxics
        .remove(Service::BillingEngine, &slow)
        .await
        .expect("remove");
    assert_eq!(
        standing_claims_settle(&rows, &tenant, 0).await,
        0,
        "a claim made behind a timed-out answer was never voided"
    );
    visit(&api, &patient_id, &s).await;
}
