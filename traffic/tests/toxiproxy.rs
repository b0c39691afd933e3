//! Toxiproxy's HTTP API over the chaos proxy, driven as a Toxiproxy client
//! drives it (its documented JSON over HTTP), each fault seen on a real
//! loopback connection.

extern crate service_test_traffic as traffic;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use harness::service_test;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The API on a free loopback port, and a client for it.
async fn api() -> (String, reqwest::Client) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(traffic::toxiproxy::serve(listener));
    (base, reqwest::Client::new())
}

/// A TCP echo server on loopback.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// One round trip through `addr`, timed.
async fn round_trip(addr: &str) -> std::io::Result<Duration> {
    let mut s = TcpStream::connect(addr).await?;
    let started = Instant::now();
    s.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    Ok(started.elapsed())
}

async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = c.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("the API answers");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[service_test(integration, chaos, timeout = "30s")]
async fn a_client_creates_a_proxy_adds_latency_and_sees_it_on_a_real_connection() {
    use reqwest::Method;
    let (base, c) = api().await;
    let upstream = echo().await;
    let (status, v) = call(&c, Method::GET, format!("{base}/version"), None).await;
    assert_eq!(status, 200);
    assert!(v["version"].is_string());

    let (status, proxy) = call(
        &c,
        Method::POST,
        format!("{base}/proxies"),
        Some(json!({"name": "echo", "listen": "127.0.0.1:0", "upstream": upstream.to_string()})),
    )
    .await;
    assert_eq!(status, 201, "{proxy}");
    assert_eq!(proxy["enabled"], true);
    assert_eq!(proxy["toxics"], json!([]));
    let listen = proxy["listen"].as_str().expect("listen").to_string();
    let clean = round_trip(&listen).await.expect("through the proxy");
    assert!(clean < Duration::from_millis(150), "{clean:?}");

    let (status, toxic) = call(
        &c,
        Method::POST,
        format!("{base}/proxies/echo/toxics"),
        Some(json!({"type": "latency", "attributes": {"latency": 300}})),
    )
    .await;
    assert_eq!(status, 200, "{toxic}");
    assert_eq!(toxic["name"], "latency_downstream");
    assert_eq!(toxic["stream"], "downstream");
    assert_eq!(toxic["toxicity"], 1.0);
    assert_eq!(toxic["attributes"], json!({"latency": 300, "jitter": 0}));
    let slow = round_trip(&listen).await.expect("through the proxy");
    assert!(slow >= Duration::from_millis(300), "{slow:?}");

    let (_, listed) = call(&c, Method::GET, format!("{base}/proxies"), None).await;
    assert_eq!(listed["echo"]["toxics"][0]["name"], "latency_downstream");
    let (status, _) = call(
        &c,
        Method::DELETE,
        format!("{base}/proxies/echo/toxics/latency_downstream"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let fast = round_trip(&listen).await.expect("through the proxy");
    assert!(fast < Duration::from_millis(150), "{fast:?}");
}

#[service_test(integration, chaos, timeout = "30s")]
async fn disabling_a_proxy_refuses_connections_and_reset_restores_it() {
    use reqwest::Method;
    let (base, c) = api().await;
    let upstream = echo().await;
    let (_, proxy) = call(
        &c,
        Method::POST,
        format!("{base}/proxies"),
        Some(json!({"name": "echo", "upstream": upstream.to_string()})),
    )
    .await;
    let listen = proxy["listen"].as_str().expect("listen").to_string();
    let (status, p) = call(
        &c,
        Method::POST,
        format!("{base}/proxies/echo"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!((status, &p["enabled"]), (200, &json!(false)));
    assert!(
        round_trip(&listen).await.is_err(),
        "a disabled proxy refuses"
    );
    call(
        &c,
        Method::POST,
        format!("{base}/proxies/echo/toxics"),
        Some(json!({"name": "cut", "type": "timeout", "stream": "upstream", "attributes": {"timeout": 0}})),
    )
    .await;
    let (status, _) = call(&c, Method::POST, format!("{base}/reset"), None).await;
    assert_eq!(status, 204);
    let (_, p) = call(&c, Method::GET, format!("{base}/proxies/echo"), None).await;
    assert_eq!((&p["enabled"], &p["toxics"]), (&json!(true), &json!([])));
    round_trip(&listen).await.expect("enabled again, no toxics");
}

#[service_test(integration, chaos, timeout = "30s")]
async fn mistakes_get_toxiproxys_error_shape() {
    use reqwest::Method;
    let (base, c) = api().await;
    let upstream = echo().await.to_string();
    let (status, e) = call(&c, Method::GET, format!("{base}/proxies/nope"), None).await;
    assert_eq!(
        (status, &e["error"], &e["status"]),
        (404, &json!("proxy not found"), &json!(404))
    );
    let body = json!({"name": "echo", "upstream": upstream});
    call(
        &c,
        Method::POST,
        format!("{base}/proxies"),
        Some(body.clone()),
    )
    .await;
    let (status, e) = call(&c, Method::POST, format!("{base}/proxies"), Some(body)).await;
    assert_eq!((status, &e["error"]), (409, &json!("proxy already exists")));
    let (status, e) = call(
        &c,
        Method::POST,
        format!("{base}/proxies/echo/toxics"),
        Some(json!({"type": "earthquake"})),
    )
    .await;
    assert_eq!(
        (status, &e["error"]),
        (400, &json!("invalid toxic type: earthquake"))
    );
    let (status, e) = call(
        &c,
        Method::POST,
        format!("{base}/proxies"),
        Some(json!({"name": "far", "upstream": "192.0.2.1:80"})),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"].as_str().is_some_and(|m| m.contains("loopback")),
        "{e}"
    );
    let (status, _) = call(
        &c,
        Method::DELETE,
        format!("{base}/proxies/echo/toxics/none"),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[service_test(integration, chaos, timeout = "30s")]
async fn populate_creates_a_list_and_toxics_update_in_place() {
    use reqwest::Method;
    let (base, c) = api().await;
    let upstream = echo().await.to_string();
    let (status, v) = call(
        &c,
        Method::POST,
        format!("{base}/populate"),
        Some(json!([
            {"name": "a", "upstream": upstream},
            {"name": "b", "upstream": upstream, "enabled": false}
        ])),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["proxies"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["proxies"][1]["enabled"], false);
    call(
        &c,
        Method::POST,
        format!("{base}/proxies/a/toxics"),
        Some(json!({"name": "lag", "type": "latency", "toxicity": 0.5, "attributes": {"latency": 10}})),
    )
    .await;
    let (status, t) = call(
        &c,
        Method::POST,
        format!("{base}/proxies/a/toxics/lag"),
        Some(json!({"attributes": {"jitter": 5}, "toxicity": 1.0})),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["attributes"], json!({"latency": 10, "jitter": 5}));
    assert_eq!(t["toxicity"], 1.0);
}

harness::main!();
