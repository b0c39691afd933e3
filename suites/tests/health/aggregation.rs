//! The API's aggregated health: a dependency down, a dependency that
//! hangs, and storage down are each reported as what they are, within the
//! probe's time.

use std::time::{Duration, Instant};

use harness::{Metrics, service_test};
use sandbox::{Service, Tenant};
use serde_json::json;
use suites::{Edge, Target, Toxics};

use crate::common::record_health;

/// A dependency that accepts connections and never answers (a `timeout`
/// toxic on billing's link holds every connection): the API's `/health`
/// still answers within its 1 s probe timeout (plus slack), marks billing
/// `unreachable` and itself `degraded`; the other four stay healthy. With
/// billing's link down instead (connections refused), the same.
#[service_test(
    health,
    resilience,
    chaos,
    exclusive,
    real_services,
    services(healthcare_api, billing_engine),
    timeout = "30s"
)]
async fn a_hanging_or_stopped_dependency_degrades_the_aggregate_in_time(
    target: &Target,
    toxics: Toxics,
    tenant: Tenant,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let hang = toxics
        .add(
            Service::BillingEngine,
            json!({"name": "hang_billing", "type": "timeout", "stream": "upstream",
                   "toxicity": 1.0, "attributes": {"timeout": 0}}),
        )
        .await
        .expect("add the toxic");
    for case in ["hanging", "stopped"] {
        if case == "stopped" {
            toxics
                .remove(Service::BillingEngine, &hang)
                .await
                .expect("remove the toxic");
            toxics
                .disable(Edge::To(Service::BillingEngine))
                .await
                .expect("cut billing off");
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
}

/// Each dependency in turn cut off (its link down): the API's `/health`
/// answers `degraded`, names that dependency `unreachable` and the four
/// others `healthy`; its link back, `healthy` again.
#[service_test(
    health,
    resilience,
    chaos,
    exclusive,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor,
        business_intelligence,
        doctor_personalization
    ),
    timeout = "60s"
)]
async fn each_dependency_down_degrades_the_aggregate_and_names_it(
    target: &Target,
    toxics: Toxics,
    metrics: Metrics,
    tenant: Tenant,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let dependencies = [
        Service::InsuranceVerification,
        Service::BillingEngine,
        Service::ComplianceMonitor,
        Service::BusinessIntelligence,
        Service::DoctorPersonalization,
    ];
    for down in dependencies {
        toxics.disable(Edge::To(down)).await.expect("cut it off");
        let r = api.get("/health").await.expect("health");
        record_health(&metrics, Service::HealthcareApi, &r.body);
        assert_eq!(r.status, 200, "{down} down: {}", r.body);
        assert_eq!(r.body["status"], "degraded", "{down} down: {}", r.body);
        let deps = &r.body["dependencies"];
        for other in dependencies {
            let expected = if other == down {
                "unreachable"
            } else {
                "healthy"
            };
            assert_eq!(
                deps[other.name()]["status"],
                expected,
                "{down} down: {other}: {deps}"
            );
        }
        toxics.enable(Edge::To(down)).await.expect("bring it back");
        let r = api.get("/health").await.expect("health");
        assert_eq!(r.body["status"], "healthy", "{down} back: {}", r.body);
    }
}
