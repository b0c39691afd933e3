//! Suites against the reference mesh (`sandbox`): six services on real
//! PostgreSQL and Redis, started once per run by the `Mesh` fixture; each
//! test works in a tenant of its own. Tests that break the mesh (a chaos
//! proxy in a service's route) start one of their own.

use std::time::{Duration, Instant};

use fixtures::chaos::{ChaosProxy, Fault, FaultKind};
use fixtures::load::{self, LoadPlan};
use fixtures::{Redis, Scenario, TestDb};
use harness::{Metrics, service_test};
use sandbox::{FaultPlan, Mesh, MeshClient, MeshConfig, Service, Tenant};
use serde_json::{Value, json};

async fn intake(api: &MeshClient, s: &Scenario) -> Result<String, String> {
    let r = api
        .post(
            "/patients",
            &json!({"patient": s.patient, "coverage": s.coverage}),
        )
        .await
        .map_err(|e| format!("intake: {e}"))?;
    if r.status != 201 {
        return Err(format!("intake answered {}: {}", r.status, r.body));
    }
    r.body["patient_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("intake without patient_id: {}", r.body))
}

async fn visit(api: &MeshClient, patient_id: &str, s: &Scenario) -> Result<Value, String> {
    let r = api
        .post(
            "/visits",
            &json!({"patient_id": patient_id, "visit": s.visit}),
        )
        .await
        .map_err(|e| format!("visit: {e}"))?;
    if r.status != 201 {
        return Err(format!("visit answered {}: {}", r.status, r.body));
    }
    let mut body = r.body;
    body["request_id"] = json!(r.request_id);
    Ok(body)
}

mod e2e {
    use super::*;

    /// The seeds' complete patient journey: intake (synced to the services
    /// holding patient data), insurance verification, claim, analytics,
    /// the doctor's preferences, and an audit trail that covers it all.
    #[service_test(
        e2e,
        real_services,
        interservice,
        services(healthcare_api, insurance, billing, compliance, bi, doctor),
        timeout = "30s"
    )]
    async fn a_patient_journey_crosses_every_service(
        mesh: &Mesh,
        tenant: Tenant,
        s: Scenario,
    ) -> Result<(), String> {
        let api = mesh.client(Service::HealthcareApi, &tenant);
        let patient_id = intake(&api, &s).await?;
        let read = api
            .get(&format!("/patients/{patient_id}"))
            .await
            .map_err(|e| e.to_string())?;
        if read.body["mrn"] != json!(s.patient.mrn) {
            return Err(format!("the patient read back differs: {}", read.status));
        }
        let v = visit(&api, &patient_id, &s).await?;
        let claim_id = v["claim_id"].as_str().unwrap_or_default();
        let claim = mesh
            .client(Service::BillingEngine, &tenant)
            .get(&format!("/claims/{claim_id}"))
            .await
            .map_err(|e| e.to_string())?;
        let expected: u64 = s.visit.lines.iter().map(|l| l.charge_cents).sum();
        if claim.body["total_cents"] != json!(expected) {
            return Err(format!(
                "claim total {} != {expected}",
                claim.body["total_cents"]
            ));
        }
        let doctor = mesh.client(Service::DoctorPersonalization, &tenant);
        let npi = &s.visit.rendering_npi;
        let prefs =
            json!({"note_style": "SOAP", "default_place_of_service": s.visit.place_of_service});
        doctor
            .put(&format!("/doctors/{npi}/preferences"), &prefs)
            .await
            .map_err(|e| e.to_string())?;
        let back = doctor
            .get(&format!("/doctors/{npi}/preferences"))
            .await
            .map_err(|e| e.to_string())?;
        if back.body["preferences"] != prefs {
            return Err(format!("preferences read back: {}", back.body));
        }
        let agg = mesh
            .client(Service::BusinessIntelligence, &tenant)
            .get("/aggregates?metric=claim_charge_cents")
            .await
            .map_err(|e| e.to_string())?;
        if agg.body["aggregates"][0]["sum"] != json!(expected as f64) {
            return Err(format!("analytics: {}", agg.body));
        }
        let trail = mesh
            .client(Service::ComplianceMonitor, &tenant)
            .get(&format!("/audit?patient_id={patient_id}&kind=saga_event"))
            .await
            .map_err(|e| e.to_string())?;
        let events: Vec<&str> = trail.body["events"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["event_type"].as_str()).collect())
            .unwrap_or_default();
        if events.first() != Some(&"saga_started") || events.last() != Some(&"saga_completed") {
            return Err(format!("saga trail: {events:?}"));
        }
        Ok(())
    }
}

mod compliance {
    use super::*;

    /// After a journey, nothing the compliance monitor keeps (the whole
    /// audit trail of the tenant) and no log line of any service holds the
    /// patient's PHI: the scanner, with the patient's values registered as
    /// canaries, finds nothing.
    #[service_test(
        compliance,
        real_services,
        audit,
        phi_safe,
        services(healthcare_api, compliance),
        timeout = "30s"
    )]
    async fn no_phi_reaches_the_audit_trail_or_the_logs(
        mesh: &Mesh,
        tenant: Tenant,
        s: Scenario,
    ) -> Result<(), String> {
        let api = mesh.client(Service::HealthcareApi, &tenant);
        let patient_id = intake(&api, &s).await?;
        visit(&api, &patient_id, &s).await?;
        let trail = mesh
            .client(Service::ComplianceMonitor, &tenant)
            .get("/audit")
            .await
            .map_err(|e| e.to_string())?;
        let n = trail.body["events"].as_array().map_or(0, Vec::len);
        if n < 4 {
            return Err(format!("only {n} audit events"));
        }
        let findings = phi::scan(&trail.body.to_string());
        if let Some(f) = findings.first() {
            return Err(format!("PHI in the audit trail: {f}"));
        }
        for line in mesh.logs() {
            if let Some(f) = phi::scan(&line).first() {
                return Err(format!("PHI in a log line: {f}"));
            }
        }
        Ok(())
    }

    /// A PHI leak injected into each service's log is redacted there and
    /// reported to the compliance monitor with the right source.
    #[service_test(
        compliance,
        real_services,
        services(healthcare_api, insurance, billing, compliance, bi, doctor),
        timeout = "30s"
    )]
    async fn the_monitor_catches_a_leak_in_every_service(
        mesh: &Mesh,
        tenant: Tenant,
        s: Scenario,
    ) -> Result<(), String> {
        for service in Service::ALL {
            mesh.inject(
                service,
                &FaultPlan {
                    leak_phi: Some(format!("patient phone {}", s.patient.phone)),
                    tenant: Some(tenant.0.clone()),
                    ..FaultPlan::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            // Any authenticated request triggers the leak.
            mesh.client(service, &tenant)
                .get("/no-such-resource")
                .await
                .map_err(|e| e.to_string())?;
        }
        let monitor = mesh.client(Service::ComplianceMonitor, &tenant);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = monitor
                .get("/violations")
                .await
                .map_err(|e| e.to_string())?;
            let mut sources: Vec<&str> = r.body["violations"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v["source"].as_str()).collect())
                .unwrap_or_default();
            sources.sort_unstable();
            sources.dedup();
            if sources.len() == Service::ALL.len() {
                if r.body.to_string().contains(&s.patient.phone) {
                    return Err("a violation holds the raw phone number".into());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("violations only from {sources:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

mod security {
    use super::*;

    /// Every service refuses a request without a token, and one whose
    /// token names another tenant than `X-Tenant-ID`, with 401 and the
    /// reason; a token for another service is refused too.
    #[service_test(
        security,
        real_services,
        services(healthcare_api, insurance, billing, compliance, bi, doctor),
        timeout = "20s"
    )]
    async fn every_service_refuses_bad_tokens(mesh: &Mesh, tenant: Tenant) -> Result<(), String> {
        let http = reqwest::Client::new();
        for service in Service::ALL {
            let other = Service::ALL
                .into_iter()
                .find(|s| *s != service)
                .unwrap_or(service);
            let cases = [
                (None, tenant.0.as_str(), "missing bearer token"),
                (
                    Some(mesh.token(service, &tenant, Duration::from_secs(60))),
                    "someone-else",
                    "another tenant",
                ),
                (
                    Some(mesh.token(other, &tenant, Duration::from_secs(60))),
                    tenant.0.as_str(),
                    "not this service",
                ),
            ];
            for (token, claimed, reason) in cases {
                let mut req = http
                    .get(format!("{}/anything", mesh.url(service)))
                    .header("x-tenant-id", claimed);
                if let Some(t) = token {
                    req = req.header("authorization", format!("Bearer {t}"));
                }
                let r = req.send().await.map_err(|e| e.to_string())?;
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                let got = body["reason"].as_str().unwrap_or_default();
                if status != 401 || !got.contains(reason) {
                    return Err(format!(
                        "{service}: want 401 `{reason}`, got {status} `{got}`"
                    ));
                }
            }
        }
        Ok(())
    }
}

mod resilience {
    use super::*;

    /// Insurance verification behind a chaos proxy that resets every
    /// connection: the visit fails at the first step, nothing is
    /// compensated (nothing was done) and no claim is made; healed, the
    /// same visit succeeds.
    #[service_test(
        resilience,
        chaos,
        real_services,
        services(healthcare_api, insurance),
        timeout = "30s"
    )]
    async fn a_resetting_link_to_insurance_fails_the_first_step_cleanly(
        db: TestDb,
        redis: &Redis,
        s: Scenario,
    ) -> Result<(), String> {
        let mut config = MeshConfig::for_tests(&db.url, redis.addr, 11);
        config.client.retry.base = Duration::from_millis(5);
        let mesh = Mesh::start(config).await.map_err(|e| e.to_string())?;
        let proxy = ChaosProxy::start(mesh.addr(Service::InsuranceVerification))
            .await
            .map_err(|e| e.to_string())?;
        mesh.route(Service::InsuranceVerification, proxy.addr())
            .map_err(|e| e.to_string())?;
        let api = mesh.client(Service::HealthcareApi, "t1");
        let patient_id = intake(&api, &s).await?;
        let reset = proxy.add(Fault::new(FaultKind::Reset {
            after: Duration::ZERO,
        }));
        let r = api
            .post(
                "/visits",
                &json!({"patient_id": patient_id, "visit": s.visit}),
            )
            .await
            .map_err(|e| e.to_string())?;
        if r.status != 502 || r.body["failed_step"] != "verify_insurance" {
            return Err(format!(
                "want 502 at verify_insurance: {} {}",
                r.status, r.body
            ));
        }
        if r.body["compensations"] != json!([]) {
            return Err(format!(
                "nothing to compensate: {}",
                r.body["compensations"]
            ));
        }
        proxy.remove(reset);
        visit(&api, &patient_id, &s).await.map(|_| ())
    }
}

mod performance {
    use super::*;

    /// Twenty claim sagas at once, each in its own tenant: all succeed;
    /// their latencies go to the report.
    #[service_test(
        performance,
        real_services,
        services(healthcare_api, insurance, billing),
        timeout = "60s"
    )]
    async fn twenty_concurrent_sagas_all_complete(
        mesh: &Mesh,
        tenant: Tenant,
        metrics: Metrics,
        s: Scenario,
    ) -> Result<(), String> {
        let started = Instant::now();
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let api = mesh.client(Service::HealthcareApi, &format!("{}-{i}", tenant.0));
                let s = s.clone();
                tokio::spawn(async move {
                    let patient_id = intake(&api, &s).await?;
                    let t = Instant::now();
                    visit(&api, &patient_id, &s).await?;
                    Ok::<Duration, String>(t.elapsed())
                })
            })
            .collect();
        let mut samples = Vec::new();
        let mut errors = Vec::new();
        for h in handles {
            match h.await {
                Ok(Ok(d)) => samples.push(d),
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        metrics.latencies("POST /visits", &samples);
        metrics.throughput(
            "POST /visits",
            samples.len() as f64 / started.elapsed().as_secs_f64(),
        );
        metrics.error_rate("POST /visits", errors.len() as f64 / 20.0);
        match errors.first() {
            None => Ok(()),
            Some(e) => Err(format!("{} of 20 sagas failed; first: {e}", errors.len())),
        }
    }

    /// The API's aggregated health under a bounded closed-model load (8
    /// connections, 300 requests): no errors; percentiles to the report.
    #[service_test(
        performance,
        load,
        real_services,
        services(healthcare_api),
        timeout = "60s"
    )]
    async fn the_health_endpoint_holds_under_load(
        mesh: &Mesh,
        metrics: Metrics,
    ) -> Result<(), String> {
        let plan = LoadPlan::closed(mesh.addr(Service::HealthcareApi), "/health", 8)
            .max_requests(300)
            .duration(Duration::from_secs(20));
        let report = load::run(&plan).await.map_err(|e| e.to_string())?;
        report.record(&metrics, "GET /health (api)");
        if report.ok < 300 {
            return Err(format!(
                "{} of {} ok; errors {:?}",
                report.ok, report.requests, report.errors
            ));
        }
        Ok(())
    }
}
