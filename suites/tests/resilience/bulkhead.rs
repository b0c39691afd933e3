//! Bulkheads: a dependency that hangs holds a bounded share of the API's
//! calls, and the routes that do not need it go on.

use std::time::{Duration, Instant};

use fixtures::Scenario;
use harness::service_test;
use sandbox::client::BulkheadConfig;
use sandbox::{FaultPlan, Service};
use suites::PrivateMesh;
use suites::target::sum_samples;

use crate::common::{intake, observed, visit_body};

/// Doctor personalisation hangs (3 s per request) while twelve clients
/// read preferences through the API and another runs visits. The API's
/// bulkhead for doctor (four calls at once, 50 ms wait) lets four through
/// and refuses the other eight at once with `503` naming the bulkhead;
/// never more than four calls are in flight to doctor; the visits, on the
/// same API at the same time, all succeed within their SLO.
#[service_test(
    resilience,
    bulkhead,
    load,
    real_services,
    services(healthcare_api, doctor, insurance, billing),
    timeout = "30s"
)]
async fn a_hanging_dependency_cannot_use_up_the_api(own: PrivateMesh, s: Scenario) {
    let mesh = own
        .start(|c| {
            c.client.bulkhead = BulkheadConfig {
                max_concurrent: 4,
                max_wait: Duration::from_millis(50),
            };
            c.client.retry.max_attempts = 1;
            c.client.attempt_timeout = Duration::from_secs(10);
            c.client.call_timeout = Duration::from_secs(10);
        })
        .await
        .expect("mesh");
    let api = mesh.client(Service::HealthcareApi, "t1");
    let patient_id = intake(&api, &s).await;
    mesh.inject(
        Service::DoctorPersonalization,
        &FaultPlan {
            latency_ms: 3000,
            path_prefix: Some("/doctors".into()),
            ..FaultPlan::default()
        },
    )
    .await
    .expect("inject");
    let path = format!("/doctors/{}/preferences", s.visit.rendering_npi);
    let readers: Vec<_> = (0..12)
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
    let breaches = sandbox::target::slos().of("POST /visits").breaches(&seen);
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
                    took < Duration::from_secs(1),
                    "refused after {took:?}: not at once"
                );
            }
            other => panic!("preferences answered {other}: {}", answer.body),
        }
    }
    assert_eq!((through, refused), (4, 8), "four through, eight refused");
    let text = mesh
        .http()
        .get(format!("{}/metrics", mesh.url(Service::HealthcareApi)))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let peak = sum_samples(
        &text,
        "client_in_flight_peak",
        &[("target", "doctor-personalization")],
    );
    assert!(peak <= 4.0, "{peak} calls to doctor in flight at once");
    let rejected = sum_samples(
        &text,
        "client_bulkhead_rejected_total",
        &[("target", "doctor-personalization")],
    );
    assert_eq!(rejected, 8.0);
}
