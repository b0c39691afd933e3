//! Data at rest: what the services keep in Redis holds no PHI in the
//! clear (keys hash the eligibility question; values carry ids, not
//! identities). Encryption in transit comes with TLS (the security issue).

use fixtures::Scenario;
use harness::service_test;
use sandbox::{Service, Tenant};
use suites::{CacheKeys, Target};

use crate::common::{intake, visit};

/// After a journey, no Redis key or string value under the services'
/// prefix holds PHI (the scanner, with every generated patient registered
/// as canaries), and the eligibility answer is among them.
#[service_test(
    security,
    compliance,
    real_services,
    services(healthcare_api, insurance, billing),
    timeout = "30s"
)]
async fn the_cache_holds_no_phi_in_keys_or_values(
    target: &Target,
    mut cache: CacheKeys,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    visit(&api, &patient_id, &s).await;
    let keys = cache.keys().await.expect("SCAN");
    assert!(
        keys.iter().any(|k| k.contains(":elig:")),
        "no eligibility entry among {} keys",
        keys.len()
    );
    for key in &keys {
        if let Some(f) = phi::scan(key).first() {
            panic!("PHI in a Redis key: {f}");
        }
        if let Some(v) = cache.get(key).await.expect("GET") {
            if let Some(f) = phi::scan(&v).first() {
                panic!("PHI in the value of Redis key {key}: {f}");
            }
        }
    }
    // A self-pay coverage has no member id (empty), which every key "contains".
    let member = &s.coverage.member_id;
    assert!(
        member.is_empty() || !keys.iter().any(|k| k.contains(member.as_str())),
        "a key spells the member id"
    );
}
