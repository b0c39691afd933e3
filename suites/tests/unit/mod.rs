//! Unit: the suites' own helpers, no network; and the healthcare API alone
//! against stubs of its five peers.

mod api_against_stubs;
mod connection_reuse;

use std::time::Duration;

use harness::{TestRng, service_test};
use rand_core::RngCore;
use sandbox::{Service, Tenant};

/// Tenants drawn for one test are distinct: tests stay apart by tenant.
#[service_test(unit)]
fn tenants_drawn_in_one_test_are_distinct(a: Tenant, b: Tenant) {
    assert_ne!(a.0, b.0);
}

/// The per-test generator is seeded: two draws differ, and a fresh
/// generator from the same seed repeats them.
#[service_test(unit)]
fn the_per_test_generator_is_seeded(mut rng: TestRng) {
    let mut replay = rng.clone();
    let first = [rng.next_u64(), rng.next_u64()];
    assert_eq!(first, [replay.next_u64(), replay.next_u64()]);
    assert_ne!(first[0], first[1]);
}

/// Every service a test names in `services(...)` is one of the mesh's six,
/// by the name the service gives itself (the report spells
/// `billing_engine` as `billing-engine`): the report then has one line per
/// service, never `bi` beside `analytics`, and every service named.
#[service_test(unit)]
fn every_service_a_test_names_is_a_service_of_the_mesh() {
    let mut named = std::collections::BTreeSet::new();
    for (name, def) in harness::registry::registered_tests() {
        for service in def.service_names() {
            assert!(
                Service::from_name(&service).is_some(),
                "{name}: services(...) names `{service}`, not one of the mesh's services ({})",
                Service::ALL.map(Service::name).join(", ")
            );
            named.insert(service);
        }
    }
    for service in Service::ALL {
        assert!(
            named.contains(service.name()),
            "no test names {service} in services(...)"
        );
    }
}

/// `/metrics` samples are summed by name and label subset, and comments
/// and other metrics are ignored.
#[service_test(unit, health)]
fn metric_samples_sum_by_labels() {
    let text = "# TYPE client_retries_total counter\n\
        client_retries_total{service=\"healthcare-api\",target=\"billing-engine\"} 2\n\
        client_retries_total{service=\"healthcare-api\",target=\"insurance-verification\"} 5\n\
        client_retries_total_x{service=\"healthcare-api\"} 100\n\
        process_open_fds{service=\"healthcare-api\"} 41\n";
    let sum = suites::target::sum_samples;
    assert_eq!(
        sum(
            text,
            "client_retries_total",
            &[("target", "billing-engine")]
        ),
        2.0
    );
    assert_eq!(sum(text, "client_retries_total", &[]), 7.0);
    assert_eq!(sum(text, "process_open_fds", &[]), 41.0);
    assert_eq!(
        sum(text, "client_retries_total", &[("target", "nobody")]),
        0.0
    );
    // A label value holding a space, and a sample with a timestamp: split
    // at the last space by hand, these were misread.
    let text = "client_retries_total{target=\"a b\",service=\"x\"} 3 1700000000000\n";
    assert_eq!(sum(text, "client_retries_total", &[("target", "a b")]), 3.0);
}

/// Nearest-rank percentiles, error rate and throughput of samples.
#[service_test(unit, performance)]
fn observed_figures_from_samples() {
    let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
    let o = crate::common::observed(&samples, 1, Duration::from_secs(2));
    assert_eq!((o.p50_ms, o.p95_ms, o.p99_ms), (50.0, 95.0, 99.0));
    assert!((o.error_rate - 1.0 / 101.0).abs() < 1e-9);
    assert_eq!(o.throughput_rps, 50.0);
}

/// Turns (the private meshes' cap) are counted across processes: with
/// every turn of a kind taken here, another process finds each one's lock
/// held (`flock -n`, when the machine has it), and one more turn here waits
/// until one is given back.
#[service_test(unit)]
async fn turns_are_counted_across_processes() {
    let kind = format!("unit-{}", std::process::id());
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(suites::turns::take(&kind, 3).await.expect("a turn"));
    }
    let dir = suites::turns::dir(&kind);
    for i in 0..3 {
        let lock = dir.join(format!("{i}.lock"));
        let other = std::process::Command::new("flock")
            .arg("-n")
            .arg(&lock)
            .arg("true")
            .status();
        if let Ok(status) = other {
            assert!(
                !status.success(),
                "another process took {} while this one holds it",
                lock.display()
            );
        }
    }
    let fourth = tokio::time::timeout(Duration::from_millis(300), suites::turns::take(&kind, 3));
    assert!(fourth.await.is_err(), "a fourth of three turns was given");
    held.pop();
    let freed = tokio::time::timeout(Duration::from_secs(2), suites::turns::take(&kind, 3)).await;
    assert!(
        matches!(freed, Ok(Ok(_))),
        "the turn given back was not taken again"
    );
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
}
