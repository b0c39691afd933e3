//! Resource exhaustion: oversized bodies, huge batches, a flood of slow
//! connections. The service refuses what is too much and stays up.

use std::time::{Duration, Instant};

use harness::{Fixture, FixtureCx, FixtureError, service_test};
use sandbox::{Service, Tenant};
use serde_json::json;
use suites::{LoadBudget, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A 2 MiB intake is refused with `413` and a JSON error that does not
/// echo it; a batch of 1001 analytics events is refused with `413`
/// `batch_too_large` (batches are bounded); a batch of 1000 is taken; the
/// services still answer `/health`.
#[service_test(
    resilience,
    real_services,
    services(healthcare_api, business_intelligence),
    timeout = "30s"
)]
async fn oversized_bodies_and_batches_are_refused(target: &Target, tenant: Tenant) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let filler = "x".repeat(2 << 20);
    let r = api
        .post(
            "/patients",
            &json!({"patient": {"mrn": "M1", "note": filler}}),
        )
        .await
        .expect("intake");
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.body["error"], "body_too_large", "{}", r.body);
    assert!(r.body.to_string().len() < 1000, "the error echoes the body");

    let bi = target.client(Service::BusinessIntelligence, &tenant);
    let batch = |n: usize| json!({"events": (0..n).map(|i| json!({"metric": "exhaustion_probe", "value": i})).collect::<Vec<_>>()});
    let r = bi.post("/events", &batch(1001)).await.expect("events");
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.body["error"], "batch_too_large", "{}", r.body);
    let r = bi.post("/events", &batch(1000)).await.expect("events");
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["ingested"], 1000);
    for s in [Service::HealthcareApi, Service::BusinessIntelligence] {
        let h = target
            .client(s, &tenant)
            .get("/health")
            .await
            .expect("health");
        assert_eq!(h.status, 200, "{s}: {}", h.body);
    }
}

/// The API's server limits as its `/config` states them, when a flood of
/// its connection cap (plus eight) fits in the target's load budget.
struct Flood {
    cap: u64,
    header_read_timeout: Duration,
}

impl Fixture for Flood {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = cx.get_shared::<Target>().await?;
        let budget = LoadBudget::setup(cx).await?;
        let r = target
            .client(Service::HealthcareApi, "config-reader")
            .get("/config")
            .await
            .map_err(|e| FixtureError::new(format!("healthcare-api GET /config: {e}")))?;
        let server = &r.body["server"];
        let (Some(cap), Some(timeout)) = (
            server["max_connections"].as_u64(),
            server["header_read_timeout_ms"].as_u64(),
        ) else {
            return Err(FixtureError::skip(format!(
                "target `{}`: the API's /config states no server limits (server.max_connections, server.header_read_timeout_ms)",
                target.name()
            )));
        };
        if cap + 8 > u64::from(budget.max_connections) {
            return Err(FixtureError::skip(format!(
                "target `{}`: flooding the API's {cap} connections takes {}, over its load budget of {} (sandbox up --test-mode holds 256)",
                target.name(),
                cap + 8,
                budget.max_connections
            )));
        }
        Ok(Flood {
            cap,
            header_read_timeout: Duration::from_millis(timeout),
        })
    }
}

/// The API's connection cap plus eight connections that send half a
/// request head and wait (the cap and the header-read timeout from
/// `/config`): the eight over the cap are answered `503
/// too_many_connections` at once, and the API counts exactly them; the
/// slow ones are cut by the header-read timeout, not held longer; then
/// `/health` answers `200`. The service never stops answering. The flood
/// fills the API for everyone: the test runs alone.
#[service_test(
    resilience,
    load,
    exclusive,
    real_services,
    services(healthcare_api),
    timeout = "60s"
)]
async fn a_flood_of_slow_connections_is_cut_and_the_service_answers(
    target: &Target,
    flood: Flood,
    tenant: Tenant,
) {
    let addr = target
        .addr(Service::HealthcareApi)
        .expect("the API's address");
    let refused_counter = || {
        target.metric(
            Service::HealthcareApi,
            "http_connections_refused_total",
            &[],
        )
    };
    let refused_before = refused_counter().await.expect("metrics");
    // Half a request head; over TLS, half a ClientHello record (the
    // handshake has the header-read budget).
    let half: &[u8] = if target.tls().is_some() {
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    } else {
        b"GET /health HTTP/1.1\r\nhost: sandbox\r\n"
    };
    // Connections already open (the suites' own pooled ones) hold places
    // too; some may be let go while the flood connects.
    let open = target
        .metric(Service::HealthcareApi, "http_connections_open", &[])
        .await
        .expect("metrics") as u64;
    let total = flood.cap + 8;
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..total {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(half).await.expect("half a head");
        slow.push(c);
    }
    let bound = flood.header_read_timeout + Duration::from_secs(3);
    let (mut refused, mut cut) = (0u64, 0u64);
    for mut c in slow {
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(bound, c.read(&mut buf))
            .await
            .expect("the server neither answered nor closed a slow connection")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.contains("503") && text.contains("too_many_connections") {
            refused += 1;
        } else {
            // Closed (or a 408) by the header-read timeout.
            assert!(!text.contains("200 OK"), "a half head was served: {text}");
            cut += 1;
        }
    }
    // Eight over the cap, and as many more as places were held by
    // connections already open (none of the flood is cut before the last
    // connects: that takes far less than the header-read timeout).
    assert!(
        (8..=8 + open).contains(&refused) && refused + cut == total,
        "{refused} refused over the cap of {} ({open} open before), {cut} cut",
        flood.cap
    );
    assert!(
        started.elapsed() < bound,
        "the slow connections were held {:?} (header-read timeout {:?})",
        started.elapsed(),
        flood.header_read_timeout
    );
    let h = target
        .client(Service::HealthcareApi, &tenant)
        .get("/health")
        .await
        .expect("health");
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(
        refused_counter().await.expect("metrics") - refused_before,
        refused as f64,
        "the API's count of refused connections"
    );
}
