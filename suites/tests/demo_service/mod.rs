//! A small real HTTP/1.1 service on loopback for the demo suites: `/health`,
//! an audit trail per tenant (`/audit`), and a slow endpoint (`/slow?ms=N`).
//! One request per connection, `connection: close`. It stands in until the
//! reference mesh (`sandbox/`) lands; it is not a mock: tests reach it over
//! real sockets and it keeps real state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use harness::{FixtureCx, fixture};
use rand_core::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The running demo service (session scope: one per run, stopped at the end).
pub struct DemoService {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
}

type AuditTrail = Arc<Mutex<HashMap<String, Vec<String>>>>;

#[fixture(session)]
async fn demo_service(cx: &mut FixtureCx) -> Result<DemoService, std::io::Error> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, AuditTrail::default(), stopped));
    cx.on_teardown(async move {
        let _ = stop.send(());
        server
            .await
            .map_err(|e| format!("the demo service's task failed: {e}"))
    });
    Ok(DemoService { addr })
}

/// A tenant of its own for one test, so concurrent tests stay apart.
pub struct Tenant(pub String);

#[fixture]
async fn tenant(cx: &mut FixtureCx) -> Tenant {
    Tenant(format!("tenant-{:08x}", cx.rng().next_u32()))
}

async fn serve(listener: TcpListener, audit: AuditTrail, mut stopped: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(handle(stream, audit.clone()));
                }
            }
        }
    }
}

async fn handle(mut stream: TcpStream, audit: AuditTrail) {
    let Some(req) = read_head(&mut stream).await else {
        return;
    };
    let mut parts = req.first_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let tenant = req.headers.get("x-tenant-id").cloned().unwrap_or_default();
    let request_id = req
        .headers
        .get("x-request-id")
        .cloned()
        .unwrap_or_else(|| "-".into());
    let (status, body) = match (method, path) {
        ("GET", "/health") => {
            audit
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(tenant.clone())
                .or_default()
                .push(format!("{request_id} GET /health"));
            (200, r#"{"status":"healthy"}"#.to_string())
        }
        ("GET", "/audit") => {
            let trail = audit.lock().unwrap_or_else(PoisonError::into_inner);
            (
                200,
                trail
                    .get(&tenant)
                    .map(|lines| lines.join("\n"))
                    .unwrap_or_default(),
            )
        }
        ("GET", "/slow") => {
            let ms = query
                .strip_prefix("ms=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0u64)
                .min(10_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (200, r#"{"slept":true}"#.to_string())
        }
        _ => (404, r#"{"error":"not found"}"#.to_string()),
    };
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let content_type = if path == "/audit" {
        "text/plain"
    } else {
        "application/json"
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

struct Head {
    first_line: String,
    headers: HashMap<String, String>,
}

async fn read_head(stream: &mut TcpStream) -> Option<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let first_line = lines.next()?.to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Head {
        first_line,
        headers,
    })
}

/// A response as the demo client reads it.
pub struct Response {
    pub status: u16,
    headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// `GET path` with extra headers, over a fresh connection.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed response: {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}
