//! Resource exhaustion: oversized bodies, huge batches, a flood of slow
//! connections. The service refuses what is too much and stays up.

use std::time::{Duration, Instant};

use harness::service_test;
use sandbox::mesh::ServerLimits;
use sandbox::{Service, Tenant};
use serde_json::json;
use suites::{PrivateMesh, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A 2 MiB intake is refused with `413` and a JSON error that does not
/// echo it; a batch of 1001 analytics events is refused with `413`
/// `batch_too_large` (batches are bounded); a batch of 1000 is taken; the
/// services still answer `/health`.
#[service_test(
    resilience,
    real_services,
    services(healthcare_api, bi),
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

/// Forty connections that send half a request head and wait, against an
/// API that holds 32 connections and gives a request head 800 ms: the
/// eight over the cap are answered `503 too_many_connections` at once; the
/// slow ones are cut by the header-read timeout; then `/health` answers
/// `200`. The service never stops answering.
#[service_test(resilience, real_services, services(healthcare_api), timeout = "30s")]
async fn a_flood_of_slow_connections_is_cut_and_the_service_answers(own: PrivateMesh) {
    let mesh = own
        .start(|c| {
            c.server = ServerLimits {
                max_connections: 32,
                header_read_timeout: Duration::from_millis(800),
                ..ServerLimits::default()
            };
        })
        .await
        .expect("mesh");
    let addr = mesh.addr(Service::HealthcareApi);
    // Half a request head; over TLS, half a ClientHello record (the
    // handshake has the header-read budget).
    let half: &[u8] = if mesh.config().tls.is_some() {
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    } else {
        b"GET /health HTTP/1.1\r\nhost: sandbox\r\n"
    };
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(half).await.expect("half a head");
        slow.push(c);
        // Let the server count it before the next one.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = Instant::now();
    let (mut refused, mut cut) = (0u64, 0u64);
    for mut c in slow {
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
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
    // Eight over the cap, unless a slow one was already cut (and its place
    // freed) before the last connected, on a busy machine.
    assert!(
        (1..=8).contains(&refused) && refused + cut == 40,
        "{refused} refused over the cap of 32, {cut} cut"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the slow connections were held {:?}",
        started.elapsed()
    );
    let h = mesh
        .client(Service::HealthcareApi, "t1")
        .get("/health")
        .await
        .expect("health");
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(
        mesh.counter(Service::HealthcareApi, "http_connections_refused_total", ""),
        refused
    );
}
