//! The API's circuit breakers: open on failures (at their threshold, not
//! before), refuse without calling, probe after the wait (no more probes
//! than the breaker allows), re-open on failed probes, close on success.
//! In real time, on any target with fault injection and a breaker wait
//! short enough to watch (`sandbox up --test-mode`: 2 s), with every
//! setting read from the API's `/config`.

use std::time::{Duration, Instant};

use harness::{Metrics, service_test};
use healthcare_data::Scenario;
use sandbox::{Answer, FaultPlan, Service, Tenant};
use serde_json::json;
use suites::{Breakers, Faults, Target};

use crate::common::{intake, observed, record_health, visit, visit_body};

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

/// The API's breaker for `dependency` as `/health` states it.
async fn breaker_state(api: &sandbox::MeshClient, dependency: Service) -> String {
    let h = api.get("/health").await.expect("health");
    h.body["dependencies"][dependency.name()]["circuit_breaker"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

/// How much slower the route that does not need the open breaker's
/// dependency may be, at its median, than before the fault: three times
/// its median then, plus this much for a busy machine's noise.
const NO_CASCADE_SLACK: Duration = Duration::from_millis(50);

/// One dependency's breaker through its whole cycle, in real time on the
/// target, with its settings read from the API's `/config`: the
/// dependency fails (`500`s for the test's tenant, only on the path the
/// route needs) until the API's breaker for it opens, within its window;
/// the next call is a fast `503` that never reaches the dependency (its
/// fault counter does not move); `/health` shows the open breaker and
/// `degraded`; a route that does not need the dependency keeps its SLO and
/// its pace from before the fault (no cascade); healed, the breaker still
/// refuses until its wait has passed, then its half-open probes succeed
/// and close it. The breaker is shared by every tenant: the test runs
/// alone. `/health` as seen open and closed again goes to the report.
///
/// Catches: a breaker that never opens, or opens only after more than a
/// window of failures; an open breaker that still calls the dependency or
/// refuses slowly; `/health` not showing it; a refusal that makes the
/// routes not needing the dependency wait (a cascade: slowed many times
/// over, even within the route's SLO); a breaker that closes before its
/// wait, or whose successful probes do not close it.
async fn breaker_cycle(
    target: &Target,
    faults: &Faults,
    breakers: &Breakers,
    metrics: &Metrics,
    tenant: &Tenant,
    s: &Scenario,
    case: BreakerCase,
) {
    let BreakerCase {
        dependency,
        needs,
        fault_path,
        unrelated,
    } = case;
    let api = target.client(Service::HealthcareApi, tenant);
    let patient_id = intake(&api, s).await;
    let doctor = target.client(Service::DoctorPersonalization, tenant);
    let prefs = doctor
        .put(
            &format!("/doctors/{}/preferences", s.visit.rendering_npi),
            &json!({"note_template": "soap"}),
        )
        .await
        .expect("preferences");
    assert_eq!(prefs.status, 200, "{}", prefs.body);
    let baseline = needs.send(&api, &patient_id, s).await;
    assert_eq!(baseline.status, needs.ok(), "baseline: {}", baseline.body);
    // The route that does not need the dependency, timed: its pace before
    // the fault is what it must keep while the breaker is open.
    let sample = || async {
        let mut samples = Vec::new();
        let started = Instant::now();
        for _ in 0..10 {
            let t = Instant::now();
            let r = unrelated.send(&api, &patient_id, s).await;
            assert_eq!(
                r.status,
                unrelated.ok(),
                "{} while {dependency}'s breaker is tested: {}",
                unrelated.endpoint(),
                r.body
            );
            samples.push(t.elapsed());
        }
        observed(&samples, 0, started.elapsed())
    };
    let paced = sample().await;

    let fail = FaultPlan {
        fail_next: 100_000,
        status: Some(500),
        tenant: Some(tenant.0.clone()),
        path_prefix: Some(fault_path.into()),
        ..FaultPlan::default()
    };
    faults.inject(dependency, &fail).await.expect("inject");
    // Every failed request is at least one failed call: the breaker opens
    // before a whole window of them.
    let bound = breakers.window_size.max(breakers.minimum_calls);
    let mut failures = 0;
    while breaker_state(&api, dependency).await != "open" {
        assert!(
            failures < bound,
            "{dependency}: the breaker did not open after {failures} failed requests (window {}, minimum {}, threshold {} %)",
            breakers.window_size,
            breakers.minimum_calls,
            breakers.failure_rate_threshold
        );
        let r = needs.send(&api, &patient_id, s).await;
        assert!(
            matches!(r.status, 502 | 503),
            "{} while {dependency} fails: {} {}",
            needs.endpoint(),
            r.status,
            r.body
        );
        failures += 1;
    }

    let reached = || target.metric(dependency, "faults_injected_total", &[]);
    let before = reached().await.expect("metrics");
    let started = Instant::now();
    let refused = needs.send(&api, &patient_id, s).await;
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
        reached().await.expect("metrics"),
        before,
        "the refused call reached {dependency}"
    );
    let health = api.get("/health").await.expect("health");
    record_health(metrics, Service::HealthcareApi, &health.body);
    assert_eq!(
        health.body["dependencies"][dependency.name()]["circuit_breaker"],
        "open",
        "{}",
        health.body
    );
    assert_eq!(health.body["status"], "degraded");

    // No cascade: the route that does not need the dependency keeps its
    // SLO, and its pace (an SLO of seconds would let it slow twentyfold).
    let seen = sample().await;
    let breaches = target.slo(unrelated.endpoint()).breaches(&seen);
    assert!(
        breaches.is_empty(),
        "{} with {dependency}'s breaker open: {}",
        unrelated.endpoint(),
        breaches.join("; ")
    );
    let bound = 3.0 * paced.p50_ms + NO_CASCADE_SLACK.as_secs_f64() * 1000.0;
    assert!(
        seen.p50_ms <= bound,
        "{} with {dependency}'s breaker open: median {:.0} ms, {:.0} ms before the fault (at most {bound:.0} ms): the open breaker slows a route that does not need it",
        unrelated.endpoint(),
        seen.p50_ms,
        paced.p50_ms
    );

    // Healed: still open until the wait has passed, then probes close it.
    faults.clear(dependency, tenant).await.expect("clear");
    let r = needs.send(&api, &patient_id, s).await;
    assert_eq!(r.status, 503, "still open before its wait: {}", r.body);
    tokio::time::sleep(breakers.open_wait + Duration::from_millis(100)).await;
    for n in 0..breakers.half_open_calls.max(1) {
        let probe = needs.send(&api, &patient_id, s).await;
        assert_eq!(
            probe.status,
            needs.ok(),
            "probe {} after the wait: {}",
            n + 1,
            probe.body
        );
    }
    let health = api.get("/health").await.expect("health");
    record_health(metrics, Service::HealthcareApi, &health.body);
    assert_eq!(
        health.body["dependencies"][dependency.name()]["circuit_breaker"],
        "closed",
        "{}",
        health.body
    );
}

/// One `circuit_breaker_for_<dependency>` test per dependency, each naming
/// its service (so the report's service table shows one per dependency).
macro_rules! breaker_tests {
    ($($(#[doc = $doc:literal])* $name:ident: $svc:ident, $dependency:ident, $needs:ident, $path:literal, $unrelated:ident;)*) => {$(
        $(#[doc = $doc])*
        #[service_test(
            resilience,
            circuit_breaker,
            exclusive,
            real_services,
            services(healthcare_api, $svc),
            timeout = "60s"
        )]
        async fn $name(target: &Target, faults: Faults, breakers: Breakers, metrics: Metrics, tenant: Tenant, s: Scenario) {
            let case = BreakerCase {
                dependency: Service::$dependency,
                needs: Route::$needs,
                fault_path: $path,
                unrelated: Route::$unrelated,
            };
            breaker_cycle(target, &faults, &breakers, &metrics, &tenant, &s, case).await;
        }
    )*};
}

breaker_tests! {
    /// Insurance verification's breaker: visits fail fast while it is open;
    /// analytics reads keep their SLO.
    circuit_breaker_for_insurance: insurance_verification, InsuranceVerification, Visit, "/verify", Analytics;
    /// The billing engine's breaker: visits fail fast (the verification is
    /// compensated) while it is open; analytics reads keep their SLO.
    circuit_breaker_for_billing: billing_engine, BillingEngine, Visit, "/claims", Analytics;
    /// The compliance monitor's breaker: audit reads fail fast while it is
    /// open; visits still complete within their SLO (their audit events are
    /// best effort).
    circuit_breaker_for_compliance: compliance_monitor, ComplianceMonitor, Audit, "/audit", Visit;
    /// Business intelligence's breaker: analytics reads fail fast while it
    /// is open; visits still complete within their SLO (analytics is best
    /// effort).
    circuit_breaker_for_bi: business_intelligence, BusinessIntelligence, Analytics, "/aggregates", Visit;
    /// Doctor personalisation's breaker: preference reads fail fast while
    /// it is open; visits keep their SLO.
    circuit_breaker_for_doctor: doctor_personalization, DoctorPersonalization, DoctorPreferences, "/doctors", Visit;
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
    services(healthcare_api, billing_engine),
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

/// Fills the API's breaker for doctor personalisation with successful
/// calls (a whole window of preference reads), waiting first for it to be
/// closed; returns the route's client and the path read.
async fn a_window_of_successes(
    target: &Target,
    breakers: &Breakers,
    tenant: &Tenant,
    s: &Scenario,
) -> (sandbox::MeshClient, String) {
    let api = target.client(Service::HealthcareApi, tenant);
    let doctor = target.client(Service::DoctorPersonalization, tenant);
    let path = format!("/doctors/{}/preferences", s.visit.rendering_npi);
    let put = doctor
        .put(&path, &json!({"note_template": "soap"}))
        .await
        .expect("preferences");
    assert_eq!(put.status, 200, "{}", put.body);
    let deadline = Instant::now() + breakers.open_wait + Duration::from_secs(5);
    while breaker_state(&api, Service::DoctorPersonalization).await != "closed" {
        assert!(Instant::now() < deadline, "the doctor breaker never closed");
        let _ = api.get(&path).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..breakers.window_size {
        let r = api.get(&path).await.expect("preferences");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    (api, path)
}

/// Sends reads until doctor personalisation has failed `n` more calls
/// (its `faults_injected_total`), the fault plan failing exactly `n`.
async fn fail_exactly(
    target: &Target,
    faults: &Faults,
    api: &sandbox::MeshClient,
    path: &str,
    tenant: &Tenant,
    n: u64,
) {
    let reached = || target.metric(Service::DoctorPersonalization, "faults_injected_total", &[]);
    let before = reached().await.expect("metrics");
    faults
        .inject(
            Service::DoctorPersonalization,
            &FaultPlan {
                fail_next: n as u32,
                status: Some(500),
                tenant: Some(tenant.0.clone()),
                path_prefix: Some("/doctors".into()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject");
    let mut sent = 0;
    while reached().await.expect("metrics") < before + n as f64 {
        if sent >= 3 * n + 10 {
            panic!(
                "{n} failures were not reached in {sent} reads: the breaker is {} (open before its threshold, reads are refused)",
                breaker_state(api, Service::DoctorPersonalization).await
            );
        }
        let _ = api.get(path).await.expect("preferences");
        sent += 1;
    }
    faults
        .clear(Service::DoctorPersonalization, tenant)
        .await
        .expect("clear");
}

/// The breaker's threshold, both ways, from `/config`: with a window of
/// successes, failing the most calls that keep the window's failure rate
/// under the threshold leaves it closed; one failure more (the rate at the
/// threshold) opens it.
///
/// Catches: a breaker that opens on the first failure (or any rate under
/// its threshold), and one that does not open at its threshold.
#[service_test(
    resilience,
    circuit_breaker,
    exclusive,
    real_services,
    services(healthcare_api, doctor_personalization),
    timeout = "90s"
)]
async fn the_breaker_opens_at_its_threshold_and_not_before(
    target: &Target,
    faults: Faults,
    breakers: Breakers,
    tenant: Tenant,
    s: Scenario,
) {
    let window = breakers.window_size.max(breakers.minimum_calls);
    // The most failures in a full window whose rate stays under it.
    let under = (0..=window)
        .rev()
        .find(|f| (*f as f64) * 100.0 / (window as f64) < breakers.failure_rate_threshold)
        .unwrap_or(0);
    let (api, path) = a_window_of_successes(target, &breakers, &tenant, &s).await;
    fail_exactly(target, &faults, &api, &path, &tenant, under).await;
    assert_eq!(
        breaker_state(&api, Service::DoctorPersonalization).await,
        "closed",
        "{under} failures in a window of {window} ({} % < {} %) opened the breaker",
        under as f64 * 100.0 / window as f64,
        breakers.failure_rate_threshold
    );
    fail_exactly(target, &faults, &api, &path, &tenant, 1).await;
    assert_eq!(
        breaker_state(&api, Service::DoctorPersonalization).await,
        "open",
        "{} failures in a window of {window} ({} % >= {} %) did not open the breaker",
        under + 1,
        (under + 1) as f64 * 100.0 / window as f64,
        breakers.failure_rate_threshold
    );
}

/// Half-open, from `/config`: after the open wait, with the dependency
/// still failing (and slow, so that probes overlap), a burst of reads lets
/// exactly `half_open_calls` probes reach it, the rest refused at once;
/// the failed probes open the breaker again. Healed, after another wait
/// the probes succeed and close it.
#[service_test(
    resilience,
    circuit_breaker,
    exclusive,
    real_services,
    services(healthcare_api, doctor_personalization),
    timeout = "90s"
)]
async fn half_open_lets_its_probes_through_and_failed_probes_reopen(
    target: &Target,
    faults: Faults,
    breakers: Breakers,
    tenant: Tenant,
    s: Scenario,
) {
    let (api, path) = a_window_of_successes(target, &breakers, &tenant, &s).await;
    let failing = FaultPlan {
        fail_next: 100_000,
        status: Some(500),
        tenant: Some(tenant.0.clone()),
        path_prefix: Some("/doctors".into()),
        ..FaultPlan::default()
    };
    faults
        .inject(Service::DoctorPersonalization, &failing)
        .await
        .expect("inject");
    let bound = breakers.window_size.max(breakers.minimum_calls);
    let mut sent = 0;
    while breaker_state(&api, Service::DoctorPersonalization).await != "open" {
        assert!(
            sent < bound,
            "the breaker did not open after {sent} failed reads"
        );
        let _ = api.get(&path).await.expect("preferences");
        sent += 1;
    }
    // Slow failures: the probes are all in flight at once.
    faults
        .inject(
            Service::DoctorPersonalization,
            &FaultPlan {
                latency_ms: 300,
                ..failing.clone()
            },
        )
        .await
        .expect("inject");
    tokio::time::sleep(breakers.open_wait + Duration::from_millis(100)).await;
    let reached = || target.metric(Service::DoctorPersonalization, "faults_injected_total", &[]);
    let before = reached().await.expect("metrics");
    let probes = breakers.half_open_calls.max(1);
    let burst = probes + 3;
    let tasks: Vec<_> = (0..burst)
        .map(|_| {
            let (api, path) = (api.clone(), path.clone());
            tokio::spawn(async move { api.get(&path).await.map(|r| r.status) })
        })
        .collect();
    let mut refused = 0u64;
    for t in tasks {
        if t.await.expect("read").is_ok_and(|status| status == 503) {
            refused += 1;
        }
    }
    let through = reached().await.expect("metrics") - before;
    assert_eq!(
        through, probes as f64,
        "half-open let {through} calls reach the dependency; it allows {probes}"
    );
    assert!(
        refused >= burst - probes,
        "{refused} of {burst} reads refused; {probes} probes allowed"
    );
    assert_eq!(
        breaker_state(&api, Service::DoctorPersonalization).await,
        "open",
        "the failed probes did not open the breaker again"
    );
    faults
        .clear(Service::DoctorPersonalization, &tenant)
        .await
        .expect("clear");
    tokio::time::sleep(breakers.open_wait + Duration::from_millis(100)).await;
    for n in 0..probes {
        let r = api.get(&path).await.expect("preferences");
        assert_eq!(r.status, 200, "probe {} after healing: {}", n + 1, r.body);
    }
    assert_eq!(
        breaker_state(&api, Service::DoctorPersonalization).await,
        "closed"
    );
}
