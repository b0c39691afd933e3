//! A visit's lifecycle (seed 004 scenarios 4 and 6): polled, and pushed
//! live on its Server-Sent Events stream.

use std::time::{Duration, Instant};

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{FaultPlan, Service, Tenant};
use serde_json::Value;
use suites::{Faults, SignTokens, Target};

use crate::common::{intake, visit_body};

/// The order a visit's states must follow.
const ORDER: [&str; 4] = ["pending", "verifying", "billing", "completed"];

fn in_order(seen: &[String]) -> bool {
    let mut at = 0;
    for s in seen {
        match ORDER[at..].iter().position(|o| o == s) {
            Some(i) => at += i,
            None => return false,
        }
    }
    true
}

/// With insurance and billing each slowed by 400 ms, a visit started under
/// a request id of the client's choosing is found while it runs; polling
/// `GET /visits/{id}` sees `verifying` then `billing` then `completed`, in
/// that order; its event stream, opened mid-saga, pushes the same
/// transitions from the state it found and closes after `completed`.
#[service_test(
    e2e,
    integration,
    real_services,
    services(healthcare_api, insurance_verification, billing_engine),
    timeout = "40s"
)]
async fn a_visit_moves_through_its_states_polled_and_pushed_live(
    target: &Target,
    faults: Faults,
    tokens: SignTokens,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    for (service, prefix) in [
        (Service::InsuranceVerification, "/verify"),
        (Service::BillingEngine, "/claims"),
    ] {
        faults
            .inject(
                service,
                &FaultPlan {
                    latency_ms: 400,
                    tenant: Some(tenant.0.clone()),
                    path_prefix: Some(prefix.into()),
                    ..FaultPlan::default()
                },
            )
            .await
            .expect("inject");
    }
    let rid = format!("req-{}-lifecycle", tenant.0);
    let saga = tokio::spawn({
        let (api, body, rid) = (api.clone(), visit_body(&patient_id, &s), rid.clone());
        async move {
            api.request(reqwest::Method::POST, "/visits", Some(&body), Some(&rid))
                .await
        }
    });
    // Find the visit while it runs.
    let deadline = Instant::now() + Duration::from_secs(5);
    let visit_id = loop {
        let r = api
            .get(&format!("/visits?request_id={rid}"))
            .await
            .expect("find");
        if let Some(id) = r.body["visits"][0]["visit_id"].as_str() {
            break id.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the visit never showed: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The live stream, read alongside the polling.
    let token = tokens.token(Service::HealthcareApi, &tenant, Duration::from_secs(60));
    let stream = target
        .http()
        .get(format!(
            "{}/visits/{visit_id}/events",
            target.url(Service::HealthcareApi)
        ))
        .header("authorization", format!("Bearer {token}"))
        .header("x-tenant-id", tenant.0.as_str())
        .send()
        .await
        .expect("event stream");
    assert_eq!(stream.status(), 200);
    assert!(
        stream
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream")),
        "not an event stream"
    );
    let pushed = tokio::spawn(async move {
        let mut stream = stream;
        let mut text = String::new();
        while let Ok(Some(chunk)) = stream.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .filter_map(|v| v["status"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    });
    let mut polled: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = api.get(&format!("/visits/{visit_id}")).await.expect("poll");
        let status = r.body["status"].as_str().unwrap_or("?").to_string();
        if polled.last() != Some(&status) {
            polled.push(status.clone());
        }
        if status == "completed" || status == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "still {status}: {polled:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = saga.await.expect("join").expect("visit");
    for service in [Service::InsuranceVerification, Service::BillingEngine] {
        faults.clear(service, &tenant).await.expect("clear");
    }
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert!(
        in_order(&polled) && polled.ends_with(&["billing".into(), "completed".into()]),
        "polled: {polled:?}"
    );
    let pushed = tokio::time::timeout(Duration::from_secs(5), pushed)
        .await
        .expect("the stream did not close after the last state")
        .expect("join");
    assert!(
        in_order(&pushed) && pushed.last().map(String::as_str) == Some("completed"),
        "pushed: {pushed:?}"
    );
    assert!(
        pushed.iter().any(|p| p == "billing"),
        "the stream missed the billing step: {pushed:?}"
    );
}
