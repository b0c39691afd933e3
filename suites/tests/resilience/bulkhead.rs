//! Bulkheads: a dependency that hangs holds a bounded share of the API's
//! calls, and the routes that do not need it go on. On any target with
//! fault injection and load, the limits read from the API's `/config`.

use std::time::{Duration, Instant};

use harness::{Fixture, FixtureCx, FixtureError, service_test};
use healthcare_data::Scenario;
use sandbox::{FaultPlan, Service, Tenant};
use suites::{ClientPolicy, Faults, LoadBudget, Target};

use crate::common::{intake, observed, visit_body};

/// What the test needs of the API's policy: a bulkhead it can fill within
/// the load budget, and a hang (`latency`) longer than the bulkhead's wait
/// and shorter than one attempt's timeout (so that no retry re-enters it).
struct Hang {
    limit: u64,
    wait: Duration,
    latency: Duration,
}

impl Fixture for Hang {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let policy = ClientPolicy::setup(cx).await?;
        let budget = LoadBudget::setup(cx).await?;
        let limit = policy.bulkhead_max_concurrent;
        let wait = policy.bulkhead_max_wait;
        let latency = (wait + policy.attempt_timeout) / 2;
        if limit + 9 > u64::from(budget.max_connections) {
            return Err(FixtureError::skip(format!(
                "the API's bulkhead holds {limit} calls: filling it takes {} connections, over the target's load budget of {}",
                limit + 9,
                budget.max_connections
            )));
        }
        if latency < wait + Duration::from_millis(200)
            || latency + Duration::from_millis(300) > policy.attempt_timeout
        {
            return Err(FixtureError::skip(format!(
                "the API's bulkhead waits {wait:?} and an attempt times out after {:?}: no hang fills the bulkhead without timing out",
                policy.attempt_timeout
            )));
        }
        Ok(Hang {
            limit,
            wait,
            latency,
        })
    }
}

/// Doctor personalisation hangs (for the test's tenant, longer than the
/// bulkhead's wait) while the bulkhead's limit plus eight clients read
/// preferences through the API, and another client runs visits. Exactly
/// the limit goes through; the other eight are refused with `503` naming
/// the bulkhead, once the bulkhead's wait is over and not much later;
/// never more than the limit are in flight to doctor, and the API counts
/// exactly eight rejections; the visits, on the same API at the same time,
/// all succeed within their SLO. The bulkhead is shared: the test runs
/// alone.
#[service_test(
    resilience,
    bulkhead,
    load,
    exclusive,
    real_services,
    services(
        healthcare_api,
        doctor_personalization,
        insurance_verification,
        billing_engine
    ),
    timeout = "60s"
)]
async fn a_hanging_dependency_cannot_use_up_the_api(
    target: &Target,
    faults: Faults,
    hang: Hang,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let rejected = || {
        target.metric(
            Service::HealthcareApi,
            "client_bulkhead_rejected_total",
            &[("target", "doctor-personalization")],
        )
    };
    let rejected_before = rejected().await.expect("metrics");
    faults
        .inject(
            Service::DoctorPersonalization,
            &FaultPlan {
                latency_ms: hang.latency.as_millis() as u64,
                tenant: Some(tenant.0.clone()),
                path_prefix: Some("/doctors".into()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject");
    let path = format!("/doctors/{}/preferences", s.visit.rendering_npi);
    let readers: Vec<_> = (0..hang.limit + 8)
        .map(|_| {
            let (api, path) = (api.clone(), path.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let r = api.get(&path).await.expect("preferences");
                (r, t.elapsed())
            })
        })
        .collect();
    // Visits meanwhile, on the same API.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = visit_body(&patient_id, &s);
    let mut samples = Vec::new();
    let started = Instant::now();
    for _ in 0..8 {
        let t = Instant::now();
        let r = api.post("/visits", &body).await.expect("visit");
        assert_eq!(r.status, 201, "a visit while doctor hangs: {}", r.body);
        samples.push(t.elapsed());
    }
    let seen = observed(&samples, 0, started.elapsed());
    let breaches = target.slo("POST /visits").breaches(&seen);
    assert!(
        breaches.is_empty(),
        "visits while doctor hangs: {}",
        breaches.join("; ")
    );

    let (mut through, mut refused) = (0, 0);
    for r in readers {
        let (answer, took) = r.await.expect("reader");
        match answer.status {
            // 404: no preferences stored; the call went through.
            200 | 404 => through += 1,
            503 => {
                refused += 1;
                let cause = answer.body["cause"]["message"].as_str().unwrap_or_default();
                assert!(cause.contains("bulkhead full"), "{}", answer.body);
                assert!(
                    took < hang.wait + Duration::from_secs(1),
                    "refused after {took:?}: the bulkhead waits {:?}",
                    hang.wait
                );
            }
            other => panic!("preferences answered {other}: {}", answer.body),
        }
    }
    assert_eq!(
        (through, refused),
        (hang.limit, 8),
        "the bulkhead of {} let {through} through and refused {refused}",
        hang.limit
    );
    let peak = target
        .metric(
            Service::HealthcareApi,
            "client_in_flight_peak",
            &[("target", "doctor-personalization")],
        )
        .await
        .expect("metrics");
    assert!(
        peak <= hang.limit as f64,
        "{peak} calls to doctor in flight at once; the bulkhead holds {}",
        hang.limit
    );
    assert_eq!(
        rejected().await.expect("metrics") - rejected_before,
        8.0,
        "the API's count of bulkhead rejections"
    );
}
