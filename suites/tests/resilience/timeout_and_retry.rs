//! Timeouts and retries: what is retried, how often, and what a timeout
//! leaves behind.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::breaker::BreakerConfig;
use sandbox::client::{Call, CallError, ClientConfig, Method, ServiceClient};
use sandbox::clock::SystemClock;
use sandbox::metrics::ServiceMetrics;
use sandbox::retry::RetryPolicy;
use sandbox::{FaultPlan, Service, Tenant};
use serde_json::json;
use suites::{ClientPolicy, Faults, Rows, SignTokens, Target, Toxics};

use crate::common::{
    assert_compensated, audited_call, failed_visit, intake, saga_trail, standing_claims_settle,
    visit,
};

/// Billing fails one claim with a 503 (for this tenant only): the saga's
/// claim call carries an idempotency key, so it is retried and the visit
/// succeeds; the audit trail of this visit (its request id: no other
/// test's retries) shows billing's call made in exactly two attempts.
///
/// Catches: a keyed claim not retried after a transient `503` (the visit
/// fails), and a call retried more than its failures call for (three
/// attempts where one failed) — which the process-wide retry counter,
/// moved by every test's retries, could not tell.
#[service_test(
    resilience,
    retry,
    real_services,
    services(healthcare_api, billing_engine, compliance_monitor),
    timeout = "30s"
)]
async fn a_transient_billing_failure_is_retried_to_success(
    target: &Target,
    faults: Faults,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
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
    let request_id = v.request_id.expect("request id");
    let call = audited_call(target, &tenant, &request_id, Service::BillingEngine).await;
    assert_eq!(call["status"], 201, "{call}");
    assert_eq!(
        call["attempts"], 2,
        "billing failed one attempt of this visit's claim; the audited call: {call}"
    );
}

/// Billing's count of injected faults (a fault is injected for one
/// tenant, but the count is the whole service's: read by a test that runs
/// alone).
async fn billing_faults(target: &Target) -> f64 {
    target
        .metric(Service::BillingEngine, "faults_injected_total", &[])
        .await
        .expect("metrics")
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
/// times as `/config` states — billing counts that many faults, and the
/// visit's audited call that many attempts, no more — with waits within
/// the policy's bounds; then the step fails, the verification is
/// cancelled and the compensation audited. Billing's counter is shared:
/// the test runs alone.
///
/// Catches: retries beyond (or short of) the declared attempts, backoffs
/// longer than the policy's, and a failed claim step left uncompensated.
#[service_test(
    resilience,
    retry,
    integration,
    exclusive,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor
    ),
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
    let faults_before = billing_faults(target).await;
    let started = std::time::Instant::now();
    let r = failed_visit(&api, &patient_id, &s, 502).await;
    let took = started.elapsed();
    assert_eq!(r.body["failed_step"], "create_claim");
    assert_eq!(r.body["cause"]["status"], 503);
    assert_compensated(&r.body);
    let faulted = billing_faults(target).await;
    assert_eq!(
        faulted - faults_before,
        f64::from(policy.max_attempts),
        "billing saw {} claim attempts; the policy makes {}",
        faulted - faults_before,
        policy.max_attempts
    );
    let request_id = r.request_id.clone().expect("request id");
    let call = audited_call(target, &tenant, &request_id, Service::BillingEngine).await;
    assert_eq!(
        call["attempts"], policy.max_attempts,
        "the visit's audited call to billing: {call}"
    );
    let bound = longest_backoff(&policy) + Duration::from_secs(3);
    assert!(
        took < bound,
        "the failing visit took {took:?}: its retries waited longer than the policy allows ({:?} of backoff at most)",
        longest_backoff(&policy)
    );
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
    services(business_intelligence),
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
/// visit's own audited call counts as many attempts as fit in the
/// deadline, at least two), and the deadline ends it: the visit answers
/// `504` at the claim, within the deadline, compensated. A claim billing
/// made behind a lost answer is voided once the link is healthy again;
/// then the same visit succeeds.
///
/// Catches: timed-out attempts not retried (one attempt), retried past the
/// deadline or without a per-attempt timeout (the visit hangs), a missing
/// compensation, and a claim left standing behind a lost answer.
#[service_test(
    resilience,
    retry,
    chaos,
    exclusive,
    real_services,
    services(healthcare_api, billing_engine),
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
    // backoffs, at most as many as fit with none (and never fewer than
    // two: a deadline that holds one attempt tests no retry).
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
    assert!(
        most >= 2,
        "with {:?} per attempt and a {:?} deadline no retry fits: nothing to test",
        policy.attempt_timeout,
        policy.call_timeout
    );
    // Counted for this visit alone: the audit trail's record of the API's
    // call to billing under the visit's request id.
    let request_id = r.request_id.clone().expect("request id");
    let call = audited_call(target, &tenant, &request_id, Service::BillingEngine).await;
    let attempts = call["attempts"].as_u64().unwrap_or(0) as u32;
    assert!(
        (fewest.max(2)..=most).contains(&attempts),
        "{attempts} attempt(s) timed out; with {:?} per attempt, a {:?} deadline and {} attempts at most, {fewest} to {most} fit: {call}",
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
