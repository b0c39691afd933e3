//! The API's circuit breakers: open on failures, refuse without calling,
//! probe after the wait, close on success.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fixtures::Scenario;
use harness::service_test;
use sandbox::breaker::{BreakerConfig, BreakerState};
use sandbox::clock::ManualClock;
use sandbox::{Answer, FaultPlan, Service, Tenant};
use serde_json::json;
use suites::{Breakers, Faults, PrivateMesh, Target};

use crate::common::{intake, observed, visit, visit_body};

/// A route of the API, to send while a dependency's breaker is tested.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    /// `POST /visits` (insurance, billing; compliance and BI best effort).
    Visit,
    /// `GET /doctors/{npi}/preferences` (doctor-personalization).
    DoctorPreferences,
    /// `GET /analytics/aggregates` (business-intelligence).
    Analytics,
    /// `GET /audit` (compliance-monitor).
    Audit,
}

impl Route {
    fn endpoint(self) -> &'static str {
        match self {
            Route::Visit => "POST /visits",
            Route::DoctorPreferences => "GET /doctors/{npi}/preferences",
            Route::Analytics => "GET /analytics/aggregates",
            Route::Audit => "GET /audit",
        }
    }

    /// The status a success answers.
    fn ok(self) -> u16 {
        if self == Route::Visit { 201 } else { 200 }
    }

    async fn send(self, api: &sandbox::MeshClient, patient_id: &str, s: &Scenario) -> Answer {
        let r = match self {
            Route::Visit => api.post("/visits", &visit_body(patient_id, s)).await,
            Route::DoctorPreferences => {
                api.get(&format!("/doctors/{}/preferences", s.visit.rendering_npi))
                    .await
            }
            Route::Analytics => api.get("/analytics/aggregates").await,
            Route::Audit => api.get("/audit").await,
        };
        r.unwrap_or_else(|e| panic!("{}: {e}", self.endpoint()))
    }
}

/// How one dependency's breaker is driven: the route that needs it, the
/// path of the dependency to fail, and a route that does not need it.
struct BreakerCase {
    dependency: Service,
    needs: Route,
    fault_path: &'static str,
    unrelated: Route,
}

/// One dependency's breaker through its whole cycle, in a private mesh on
/// an injected clock: the dependency fails (`500`s, only on the path the
/// route needs) until the API's breaker for it opens; the next call is a
/// fast `503` that never reaches the dependency (its fault counter does
/// not move); `/health` shows the open breaker and `degraded`; a route
/// that does not need the dependency keeps its SLO (no cascade); healed,
/// the breaker stays open until its wait has passed on the clock, then a
/// probe succeeds and closes it.
async fn breaker_cycle(own: PrivateMesh, s: Scenario, case: BreakerCase) {
    let BreakerCase {
        dependency,
        needs,
        fault_path,
        unrelated,
    } = case;
    let clock = ManualClock::new();
    let mesh = own
        .start(|c| {
            c.clock = Arc::new(clock.clone());
            c.client.retry.max_attempts = 1;
            c.client.breaker = BreakerConfig {
                window_size: 4,
                failure_rate_threshold: 50.0,
                minimum_calls: 4,
                open_wait: Duration::from_secs(30),
                half_open_calls: 1,
            };
        })
        .await
        .expect("mesh");
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    let doctor = mesh.client(Service::DoctorPersonalization, "t1");
    let prefs = doctor
        .put(
            &format!("/doctors/{}/preferences", s.visit.rendering_npi),
            &json!({"note_template": "soap"}),
        )
        .await
        .expect("preferences");
    assert_eq!(prefs.status, 200, "{}", prefs.body);
    let baseline = needs.send(&api, &patient_id, &s).await;
    assert_eq!(baseline.status, needs.ok(), "baseline: {}", baseline.body);

    let fail = FaultPlan {
        fail_next: 100,
        status: Some(500),
        path_prefix: Some(fault_path.into()),
        ..FaultPlan::default()
    };
    mesh.inject(dependency, &fail).await.expect("inject");
    let mut failures = 0;
    while mesh.breaker_state(dependency) != Some(BreakerState::Open) {
        assert!(
            failures < 8,
            "{dependency}: the breaker did not open after {failures} failed calls"
        );
        let r = needs.send(&api, &patient_id, &s).await;
        assert_eq!(
            r.status,
            502,
            "{} while {dependency} fails: {}",
            needs.endpoint(),
            r.body
        );
        failures += 1;
    }

    let reached = mesh.counter(dependency, "faults_injected_total", "");
    let started = Instant::now();
    let refused = needs.send(&api, &patient_id, &s).await;
    let took = started.elapsed();
    assert_eq!(refused.status, 503, "{}", refused.body);
    let cause = refused.body["cause"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(cause.contains("circuit breaker open"), "{cause}");
    assert!(
        took < Duration::from_secs(1),
        "the refusal took {took:?}: not a fast fail"
    );
    assert_eq!(
        mesh.counter(dependency, "faults_injected_total", ""),
        reached,
        "the refused call reached {dependency}"
    );
    let health = api.get("/health").await.expect("health");
    assert_eq!(
        health.body["dependencies"][dependency.name()]["circuit_breaker"],
        "open",
        "{}",
        health.body
    );
    assert_eq!(health.body["status"], "degraded");

    // No cascade: the route that does not need the dependency keeps its SLO.
    let mut samples = Vec::new();
    let started = Instant::now();
    for _ in 0..10 {
        let t = Instant::now();
        let r = unrelated.send(&api, &patient_id, &s).await;
        assert_eq!(
            r.status,
            unrelated.ok(),
            "{} with {dependency}'s breaker open: {}",
            unrelated.endpoint(),
            r.body
        );
        samples.push(t.elapsed());
    }
    let seen = observed(&samples, 0, started.elapsed());
    let breaches = sandbox::target::slos()
        .of(unrelated.endpoint())
        .breaches(&seen);
    assert!(
        breaches.is_empty(),
        "{} with {dependency}'s breaker open: {}",
        unrelated.endpoint(),
        breaches.join("; ")
    );

    // Healed; the breaker waits its 30 s on the clock, then probes.
    mesh.clear_faults(dependency).await.expect("clear");
    clock.advance(Duration::from_secs(29));
    let r = needs.send(&api, &patient_id, &s).await;
    assert_eq!(r.status, 503, "still open at 29 s: {}", r.body);
    clock.advance(Duration::from_secs(1));
    let probe = needs.send(&api, &patient_id, &s).await;
    assert_eq!(probe.status, needs.ok(), "the probe: {}", probe.body);
    assert_eq!(mesh.breaker_state(dependency), Some(BreakerState::Closed));
}

/// One `circuit_breaker_for_<dependency>` test per dependency, each naming
/// its service (so the report's service table shows one per dependency).
macro_rules! breaker_tests {
    ($($(#[doc = $doc:literal])* $name:ident: $svc:ident, $dependency:ident, $needs:ident, $path:literal, $unrelated:ident;)*) => {$(
        $(#[doc = $doc])*
        #[service_test(
            resilience,
            circuit_breaker,
            real_services,
            services(healthcare_api, $svc),
            timeout = "30s"
        )]
        async fn $name(own: PrivateMesh, s: Scenario) {
            let case = BreakerCase {
                dependency: Service::$dependency,
                needs: Route::$needs,
                fault_path: $path,
                unrelated: Route::$unrelated,
            };
            breaker_cycle(own, s, case).await;
        }
    )*};
}

breaker_tests! {
    /// Insurance verification's breaker: visits fail fast while it is open;
    /// analytics reads keep their SLO.
    circuit_breaker_for_insurance: insurance, InsuranceVerification, Visit, "/verify", Analytics;
    /// The billing engine's breaker: visits fail fast (the verification is
    /// compensated) while it is open; analytics reads keep their SLO.
    circuit_breaker_for_billing: billing, BillingEngine, Visit, "/claims", Analytics;
    /// The compliance monitor's breaker: audit reads fail fast while it is
    /// open; visits still complete within their SLO (their audit events are
    /// best effort).
    circuit_breaker_for_compliance: compliance, ComplianceMonitor, Audit, "/audit", Visit;
    /// Business intelligence's breaker: analytics reads fail fast while it
    /// is open; visits still complete within their SLO (analytics is best
    /// effort).
    circuit_breaker_for_bi: bi, BusinessIntelligence, Analytics, "/aggregates", Visit;
    /// Doctor personalisation's breaker: preference reads fail fast while
    /// it is open; visits keep their SLO.
    circuit_breaker_for_doctor: doctor, DoctorPersonalization, DoctorPreferences, "/doctors", Visit;
}

/// The API's breaker for billing on the target itself, in real time: the
/// test tenant's claims fail (`500`) until `/health` shows the breaker
/// open; the next visit is refused at once with `503` and billing counts
/// no new fault (the call never reached it); healed, after the breaker's
/// wait (from `/config`) the probe visits succeed and the breaker is
/// closed. The
/// breaker is shared by every tenant: the test runs alone.
#[service_test(
    resilience,
    circuit_breaker,
    exclusive,
    real_services,
    services(healthcare_api, billing),
    timeout = "60s"
)]
async fn the_billing_breaker_trips_and_recovers_in_real_time(
    target: &Target,
    faults: Faults,
    breakers: Breakers,
    tenant: Tenant,
    s: Scenario,
) -> Result<(), String> {
    let api = target.client(Service::HealthcareApi, &tenant);
    let breaker = || async {
        let h = api.get("/health").await.map_err(|e| e.to_string())?;
        Ok::<_, String>(
            h.body["dependencies"]["billing-engine"]["circuit_breaker"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        )
    };
    let patient_id = intake(&api, &s).await;
    visit(&api, &patient_id, &s).await;
    faults
        .inject(
            Service::BillingEngine,
            &FaultPlan {
                fail_next: 10_000,
                status: Some(500),
                tenant: Some(tenant.0.clone()),
                path_prefix: Some("/claims".into()),
                ..FaultPlan::default()
            },
        )
        .await?;
    let body = visit_body(&patient_id, &s);
    let mut failed = 0;
    while breaker().await? != "open" {
        if failed > breakers.window_size + breakers.minimum_calls {
            return Err(format!(
                "the breaker did not open after {failed} failed visits (window {}, threshold {} %)",
                breakers.window_size, breakers.failure_rate_threshold
            ));
        }
        let r = api
            .post("/visits", &body)
            .await
            .map_err(|e| e.to_string())?;
        if r.status != 502 {
            return Err(format!(
                "a visit while claims fail answered {}: {}",
                r.status, r.body
            ));
        }
        failed += 1;
    }
    let injected = || target.metric(Service::BillingEngine, "faults_injected_total", &[]);
    let before = injected().await?;
    let started = Instant::now();
    let refused = api
        .post("/visits", &body)
        .await
        .map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if refused.status != 503 {
        return Err(format!(
            "with the breaker open a visit answered {}: {}",
            refused.status, refused.body
        ));
    }
    if took > Duration::from_secs(1) {
        return Err(format!("the refusal took {took:?}: not a fast fail"));
    }
    if injected().await? != before {
        return Err("the refused call reached billing".into());
    }
    faults.clear(Service::BillingEngine, &tenant).await?;
    tokio::time::sleep(breakers.open_wait + Duration::from_millis(100)).await;
    // Half-open: the probes (as many as the breaker asks) succeed; closed.
    for n in 0..breakers.half_open_calls.max(1) {
        let probe = api
            .post("/visits", &body)
            .await
            .map_err(|e| e.to_string())?;
        if probe.status != 201 {
            return Err(format!(
                "after the wait, probe visit {} answered {}: {}",
                n + 1,
                probe.status,
                probe.body
            ));
        }
    }
    match breaker().await?.as_str() {
        "closed" => Ok(()),
        other => Err(format!(
            "after {} successful probes the breaker is {other}",
            breakers.half_open_calls
        )),
    }
}
