//! The API's aggregated health: a dependency down, a dependency that
//! hangs, and storage down are each reported as what they are, within the
//! probe's time.

use std::time::{Duration, Instant};

use harness::service_test;
use sandbox::Service;
use suites::PrivateMesh;

/// A dependency that accepts connections and never answers (billing's
/// route points at a listener that holds every connection): the API's
/// `/health` still answers within its 1 s probe timeout (plus slack),
/// marks billing `unreachable` and itself `degraded`; the other four stay
/// healthy. With billing stopped instead, the same.
#[service_test(
    health,
    resilience,
    real_services,
    services(healthcare_api, billing),
    timeout = "30s"
)]
async fn a_hanging_or_stopped_dependency_degrades_the_aggregate_in_time(own: PrivateMesh) {
    let mesh = own.start(|_| {}).await.expect("mesh");
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hole_addr = hole.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            held.push(c);
        }
    });
    mesh.route(Service::BillingEngine, hole_addr)
        .expect("route");
    let api = mesh.client(Service::HealthcareApi, "t1");
    for case in ["hanging", "stopped"] {
        if case == "stopped" {
            mesh.unroute(Service::BillingEngine);
            mesh.stop(Service::BillingEngine).await;
        }
        let started = Instant::now();
        let r = api.get("/health").await.expect("health");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "{case}: the aggregate took {took:?} (probe timeout 1 s)"
        );
        assert_eq!(r.status, 200, "{case}: {}", r.body);
        assert_eq!(r.body["status"], "degraded", "{case}: {}", r.body);
        let deps = &r.body["dependencies"];
        assert_eq!(
            deps["billing-engine"]["status"], "unreachable",
            "{case}: {deps}"
        );
        for other in [
            Service::InsuranceVerification,
            Service::ComplianceMonitor,
            Service::BusinessIntelligence,
            Service::DoctorPersonalization,
        ] {
            assert_eq!(
                deps[other.name()]["status"],
                "healthy",
                "{case}: {other}: {deps}"
            );
        }
    }
    holder.abort();
}
