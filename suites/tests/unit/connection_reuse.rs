//! The tests' client and a connection the server closes as a request
//! leaves (a keep-alive race): a request that may be repeated is sent once
//! more on a fresh connection, and counted; a POST without an idempotency
//! key is not, since the server may have acted on it.

use std::time::Duration;

use harness::service_test;
use sandbox::{Credentials, MeshClient, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server on 127.0.0.2 that reads each connection's request head; the
/// first `drop_first` connections are closed without a byte of answer, the
/// rest answer `200 {}`.
async fn flaky_server(drop_first: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.2:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            n += 1;
            let drop_it = n <= drop_first;
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                if drop_it {
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                    .await;
            });
        }
    });
    addr
}

fn client(addr: std::net::SocketAddr) -> MeshClient {
    MeshClient::new(
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("a client"),
        format!("http://{addr}"),
        Service::BillingEngine,
        "t-conn",
        Credentials::Bearer("unused".into()),
    )
}

#[service_test(unit, resilience)]
async fn a_repeatable_request_on_a_closed_connection_is_sent_once_more() {
    let addr = flaky_server(1).await;
    let before = sandbox::mesh::connection_retries();
    let answer = client(addr).get("/claims/c1").await.expect("answered");
    assert_eq!(answer.status, 200);
    assert!(
        sandbox::mesh::connection_retries() > before,
        "the retry is counted"
    );

    // A keyed create may be repeated too.
    let addr = flaky_server(1).await;
    let answer = client(addr)
        .send(
            reqwest::Method::POST,
            "/claims",
            Some(&serde_json::json!({})),
            &[("idempotency-key", "k-1")],
        )
        .await
        .expect("answered");
    assert_eq!(answer.status, 200);
}

#[service_test(unit, resilience)]
async fn a_post_without_a_key_is_not_sent_twice() {
    let addr = flaky_server(1).await;
    let result = client(addr).post("/claims", &serde_json::json!({})).await;
    assert!(
        result.is_err(),
        "the closed connection is reported: {result:?}"
    );

    // Closed twice: the one retry is not repeated.
    let addr = flaky_server(2).await;
    assert!(client(addr).get("/claims/c1").await.is_err());
}
