//! Resources the services use under load, read from their `/metrics`,
//! held to stated bounds.

use std::time::{Duration, Instant};

use harness::{Metrics, service_test};
use sandbox::Service;
use suites::{LoadBudget, Target};
use traffic::load::{self, LoadPlan};

/// Open HTTP connections a service may keep beyond a baseline once a load
/// has ended (other tests' pooled keep-alive connections).
const CONNECTIONS_SLACK: f64 = 64.0;
/// Open descriptors of the process serving the API.
const MAX_OPEN_FDS: f64 = 2048.0;
/// Resident memory of that process.
const MAX_RESIDENT_BYTES: f64 = 1024.0 * 1048576.0;

/// During and after 300 requests on 8 connections to the API's health
/// (which calls the five others): the API's request counter accounts for
/// every answered request; its open HTTP connections fall back to within
/// 64 of the baseline once the load's connections close; the serving
/// process stays under 2048 open descriptors and 1 GiB resident.
#[service_test(
    performance,
    load,
    exclusive,
    real_services,
    services(healthcare_api),
    timeout = "60s"
)]
async fn load_leaves_connections_closed_and_resources_bounded(
    target: &Target,
    budget: LoadBudget,
    metrics: Metrics,
) -> Result<(), String> {
    let api = Service::HealthcareApi;
    let gauge = |name: &'static str| target.metric(api, name, &[]);
    let answered = || {
        target.metric(
            api,
            "http_requests_total",
            &[("method", "GET"), ("status", "200")],
        )
    };
    let (conns_before, answered_before) =
        (gauge("http_connections_open").await?, answered().await?);
    let (connections, requests) = budget.cap(8, 300);
    let plan = LoadPlan::closed(target.addr(api)?, "/health", connections as usize)
        .max_requests(requests)
        .tls(target.tls())
        .allow(target.load_hosts())
        .duration(Duration::from_secs(20));
    let report = load::run(&plan).await.map_err(|e| e.to_string())?;
    let counted = answered().await? - answered_before;
    if counted < report.ok as f64 {
        return Err(format!(
            "{} requests answered 200 but the counter rose by {counted}",
            report.ok
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let conns_after = loop {
        let now = gauge("http_connections_open").await?;
        if now <= conns_before + CONNECTIONS_SLACK || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let fds = gauge("process_open_fds").await?;
    let rss = gauge("process_resident_memory_bytes").await?;
    metrics.record(
        "http_connections_open_after_load",
        conns_after,
        "connections",
        Some("healthcare-api"),
    );
    metrics.record("open_fds", fds, "fds", Some("healthcare-api"));
    metrics.record(
        "resident_memory_mib",
        rss / 1048576.0,
        "MiB",
        Some("healthcare-api"),
    );
    let mut problems = Vec::new();
    if conns_after > conns_before + CONNECTIONS_SLACK {
        problems.push(format!(
            "open connections {conns_before} → {conns_after} after the load ended"
        ));
    }
    if fds == 0.0 || fds > MAX_OPEN_FDS {
        problems.push(format!(
            "open descriptors {fds} (bound {MAX_OPEN_FDS}; 0 means not reported)"
        ));
    }
    if rss == 0.0 || rss > MAX_RESIDENT_BYTES {
        problems.push(format!(
            "resident memory {:.0} MiB (bound 1 GiB; 0 means not reported)",
            rss / 1048576.0
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
