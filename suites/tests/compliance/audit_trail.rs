//! The audit trail: every call a visit makes between services is audited
//! under its request id, and one tenant's trail never shows another's.

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{FaultPlan, Service, Tenant};
use serde_json::{Value, json};
use suites::{Faults, SignTokens, Target};

use crate::common::{eventually, intake, visit, visit_as};

/// The API's calls for one visit (insurance, billing, analytics) are in the
/// audit trail under the visit's request id (audited in the background).
#[service_test(
    compliance,
    audit,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        business_intelligence,
        compliance_monitor
    ),
    timeout = "30s"
)]
async fn every_call_of_a_visit_is_audited_under_its_request_id(
    target: &Target,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    let request_id = v.request_id.expect("X-Request-ID answered");
    let monitor = target.client(Service::ComplianceMonitor, &tenant);
    eventually("the visit's service calls audited", || async {
        let r = monitor
            .get(&format!("/audit?request_id={request_id}&kind=service_call"))
            .await
            .expect("audit");
        let targets: Vec<&str> = r.body["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["detail"]["target"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        [
            "insurance-verification",
            "billing-engine",
            "business-intelligence",
        ]
        .iter()
        .all(|t| targets.contains(t))
    })
    .await;
}

/// Visits made at once each keep their own trail: the API sends the audits
/// and the saga events of many requests in one exchange (under the first
/// one's request id), and the monitor files every record under the request
/// that made it, so each of 16 concurrent visits has exactly its three
/// calls, numbered 1 to 3, its own saga's four events in order, and is
/// complete; their analytics, sent as joined lists, are each recorded once.
#[service_test(
    compliance,
    audit,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        business_intelligence,
        compliance_monitor
    ),
    timeout = "40s"
)]
async fn concurrent_visits_each_keep_exactly_their_own_calls(
    target: &Target,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let monitor = target.client(Service::ComplianceMonitor, &tenant);
    let patient_id = intake(&api, &s).await;
    let rids: Vec<String> = (0..16)
        .map(|i| format!("req-{}-together-{i}", tenant.0))
        .collect();
    let visits = rids.iter().map(|rid| visit_as(&api, &patient_id, &s, rid));
    let mut sagas = Vec::new();
    let mut charged = 0;
    for v in futures_util::future::join_all(visits).await {
        assert_eq!(v.status, 201, "{}", v.body);
        sagas.push(v.body["saga_id"].as_str().unwrap_or_default().to_string());
        charged += v.body["total_cents"].as_i64().unwrap_or_default();
    }
    // Analytics got every visit's events once (sent in joined lists).
    let agg = target
        .client(Service::BusinessIntelligence, &tenant)
        .get("/aggregates?metric=claim_charge_cents")
        .await
        .expect("aggregates");
    let figures = &agg.body["aggregates"][0];
    assert_eq!(
        (figures["count"].as_i64(), figures["sum"].as_f64()),
        (Some(16), Some(charged as f64)),
        "each visit's charge recorded once: {}",
        agg.body
    );
    for (rid, saga) in rids.iter().zip(&sagas) {
        eventually("each visit's trail complete", || async {
            let r = monitor
                .get(&format!("/audit/completeness?request_id={rid}"))
                .await
                .expect("completeness");
            r.body["complete"] == true
        })
        .await;
        let trail = monitor
            .get(&format!("/audit?request_id={rid}&kind=service_call"))
            .await
            .expect("audit");
        let mut seqs: Vec<u64> = trail.body["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["detail"]["seq"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        seqs.sort_unstable();
        assert_eq!(seqs, [1, 2, 3], "{rid}: exactly its three calls");
        // Recorded before the visit answered: no waiting.
        let events = monitor
            .get(&format!("/audit?request_id={rid}&kind=saga_event"))
            .await
            .expect("audit");
        let events: Vec<String> = events.body["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let d = &e["detail"];
                        format!("{}:{}:{}", d["saga_id"], d["event_type"], d["step"])
                    })
                    .collect()
            })
            .unwrap_or_default();
        let own = |event: &str, step: &str| format!("\"{saga}\":\"{event}\":\"{step}\"");
        assert_eq!(
            events,
            [
                own("saga_started", "claim"),
                own("step_completed", "verify_insurance"),
                own("step_completed", "create_claim"),
                own("saga_completed", "claim"),
            ],
            "{rid}: exactly its own saga's events, in order"
        );
    }
}

/// Audit completeness: a visit's trail holds exactly the calls the API
/// declares it made, numbered without a gap, in the order made
/// (insurance, billing, analytics); when the monitor loses the second
/// call's event (an injected fault), `/audit/completeness` names it.
#[service_test(
    compliance,
    audit,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        business_intelligence,
        compliance_monitor
    ),
    timeout = "40s"
)]
async fn the_trail_is_complete_and_a_dropped_event_is_detected(
    target: &Target,
    faults: Faults,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let monitor = target.client(Service::ComplianceMonitor, &tenant);
    let completeness = |rid: String| {
        let monitor = monitor.clone();
        async move {
            let r = monitor
                .get(&format!("/audit/completeness?request_id={rid}"))
                .await
                .expect("completeness");
            assert_eq!(r.status, 200, "{}", r.body);
            r.body
        }
    };
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    let rid = v.request_id.expect("X-Request-ID answered");
    eventually("the visit's trail complete", || {
        let c = completeness(rid.clone());
        async move { c.await["complete"] == true }
    })
    .await;
    let body = completeness(rid.clone()).await;
    let mine = &body["sources"]["healthcare-api"];
    // Judged against the calls the visit made (its answer holds a
    // verification, a claim and the analytics step: three calls), not
    // against the count the API declares: an API that declared and audited
    // one call fewer would call its own trail complete.
    assert_eq!(
        mine["declared"].as_u64(),
        Some(3),
        "the visit made three calls: {body}"
    );
    assert_eq!(mine["audited"].as_u64(), Some(3), "{body}");
    let trail = monitor
        .get(&format!("/audit?request_id={rid}&kind=service_call"))
        .await
        .expect("audit");
    let mut calls: Vec<(u64, String)> = trail.body["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["detail"]["seq"].as_u64().unwrap_or(0),
                        e["detail"]["target"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    calls.sort();
    let seqs: Vec<u64> = calls.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 2, 3], "the calls numbered without a gap");
    let order: Vec<&str> = calls.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        order,
        [
            "insurance-verification",
            "billing-engine",
            "business-intelligence"
        ],
        "the calls in the order made"
    );

    let rid = format!("req-{}-lost-audit", tenant.0);
    faults
        .inject(
            Service::ComplianceMonitor,
            &FaultPlan {
                drop_audit_seq: Some(2),
                tenant: Some(tenant.0.clone()),
                path_prefix: Some("/audit/service-calls".into()),
                request_id: Some(rid.clone()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject");
    visit_as(&api, &patient_id, &s, &rid).await;
    eventually("the lost event detected", || {
        let c = completeness(rid.clone());
        async move {
            let body: Value = c.await;
            let mine = &body["sources"]["healthcare-api"];
            mine["declared"].as_u64().is_some()
                && mine["audited"].as_u64() == mine["declared"].as_u64().map(|d| d - 1)
        }
    })
    .await;
    let body = completeness(rid).await;
    faults
        .clear(Service::ComplianceMonitor, &tenant)
        .await
        .expect("clear");
    assert_eq!(body["complete"], false, "{body}");
    assert_eq!(
        body["sources"]["healthcare-api"]["missing"],
        json!([2]),
        "{body}"
    );
}

/// One tenant's audit trail never shows another tenant's requests: by
/// request id and by patient, the other tenant sees nothing.
#[service_test(
    compliance,
    audit,
    security,
    real_services,
    services(healthcare_api, compliance_monitor),
    timeout = "30s"
)]
async fn a_tenant_never_sees_another_tenants_audit_trail(
    target: &Target,
    _two_tenants: SignTokens,
    mine: Tenant,
    theirs: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &theirs);
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    let rid = v.request_id.unwrap_or_default();
    let monitor = target.client(Service::ComplianceMonitor, &mine);
    for query in [
        format!("/audit?request_id={rid}"),
        format!("/audit?patient_id={patient_id}"),
    ] {
        let trail = monitor.get(&query).await.expect("audit");
        assert_eq!(trail.body["events"], json!([]), "{query}");
    }
}
