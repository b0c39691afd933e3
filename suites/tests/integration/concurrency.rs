//! Consistency under concurrency (seed 004 scenarios 2 and 5): tenants
//! working at once see only their own data; a thousand intakes at once are
//! all answered and all stored, with no id given twice.

use std::collections::BTreeSet;
use std::sync::Arc;

use harness::service_test;
use healthcare_data::{Generator, Scenario};
use sandbox::{Service, Tenant};
use serde_json::json;
use suites::{LoadBudget, Rows, Target};

use crate::common::{intake, visit};

/// Five tenants run a journey each at the same time; each reads back its
/// own patient and visit, gets 404 for every other tenant's, and its audit
/// trail holds only its own requests.
#[service_test(
    integration,
    e2e,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor
    ),
    timeout = "60s"
)]
async fn five_tenants_at_once_see_only_their_own(
    target: &Target,
    tenant: Tenant,
    mut g: Generator,
) {
    let runs: Vec<_> = (0..5)
        .map(|i| {
            let who = format!("{}-{i}", tenant.0);
            let s = g.scenario();
            let api = target.client(Service::HealthcareApi, &who);
            tokio::spawn(async move {
                let patient_id = intake(&api, &s).await;
                let v = visit(&api, &patient_id, &s).await;
                assert_eq!(v.status, 201, "{who}: {}", v.body);
                let visit_id = v.body["visit_id"].as_str().unwrap_or_default().to_string();
                (who, patient_id, visit_id, v.request_id.unwrap_or_default())
            })
        })
        .collect();
    let mut done = Vec::new();
    for r in runs {
        done.push(r.await.expect("a tenant's journey"));
    }
    for (who, ..) in &done {
        let api = target.client(Service::HealthcareApi, who);
        for (other, their_patient, their_visit, _) in &done {
            let expected = if other == who { 200 } else { 404 };
            let p = api
                .get(&format!("/patients/{their_patient}"))
                .await
                .expect("read");
            assert_eq!(p.status, expected, "{who} reading {other}'s patient");
            let v = api
                .get(&format!("/visits/{their_visit}"))
                .await
                .expect("read");
            assert_eq!(v.status, expected, "{who} reading {other}'s visit");
        }
        let trail = target
            .client(Service::ComplianceMonitor, who)
            .get("/audit")
            .await
            .expect("audit");
        let others: BTreeSet<&str> = done
            .iter()
            .filter(|(o, ..)| o != who)
            .map(|(.., rid)| rid.as_str())
            .collect();
        let seen: Vec<&str> = trail.body["events"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["request_id"].as_str()).collect())
            .unwrap_or_default();
        assert!(!seen.is_empty(), "{who}: an empty trail");
        assert!(
            seen.iter().all(|r| !others.contains(r)),
            "{who} sees another tenant's request in its trail"
        );
    }
}

/// A thousand intakes at once (twenty in flight, or the target's load
/// ceiling): every one answered 201, every patient id distinct, and the
/// tenant's rows in PostgreSQL hold exactly the ids answered.
#[service_test(
    integration,
    load,
    exclusive,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        doctor_personalization,
        compliance_monitor
    ),
    timeout = "180s"
)]
async fn a_thousand_concurrent_intakes_are_all_answered_and_stored(
    target: &Target,
    budget: LoadBudget,
    rows: Rows,
    tenant: Tenant,
    mut g: Generator,
    s: Scenario,
) {
    let (in_flight, n) = budget.cap(20, 1000);
    let gate = Arc::new(tokio::sync::Semaphore::new(in_flight as usize));
    let api = target.client(Service::HealthcareApi, &tenant);
    // Every patient drawn before the first request: drawing registers PHI
    // canaries, and a registration between scans rebuilds the scanner.
    let bodies: Vec<_> = (0..n)
        .map(|_| json!({"patient": g.patient(), "coverage": s.coverage}))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for body in bodies {
        let (api, gate) = (api.clone(), Arc::clone(&gate));
        tasks.spawn(async move {
            let _slot = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let r = api
                .post("/patients", &body)
                .await
                .map_err(|e| e.to_string())?;
            match r.status {
                201 => Ok(r.body["patient_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()),
                st => Err(format!("{st}: {} {}", r.body["error"], r.body["message"])),
            }
        });
    }
    let mut ids = BTreeSet::new();
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(id)) => {
                assert!(ids.insert(id), "a patient id was given twice");
            }
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} intakes failed; first: {}",
        failures.len(),
        failures[0]
    );
    assert_eq!(ids.len() as u64, n, "answers");
    // The ids answered are the ids stored: a count would pass with rows
    // stored under other ids than the callers were given.
    let stored: Vec<String> = rows
        .one(
            "SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM api.patients WHERE tenant = $1",
            &[&tenant.0],
        )
        .await
        .expect("patient ids");
    let stored: BTreeSet<String> = stored.into_iter().collect();
    let unstored: Vec<&String> = ids.difference(&stored).take(3).collect();
    let unanswered: Vec<&String> = stored.difference(&ids).take(3).collect();
    assert!(
        unstored.is_empty() && unanswered.is_empty(),
        "{} answered ids are not in api.patients (first {unstored:?}); {} stored ids were never answered (first {unanswered:?})",
        ids.difference(&stored).count(),
        stored.difference(&ids).count()
    );
    assert_eq!(stored.len() as u64, n, "patients stored for the tenant");
}
