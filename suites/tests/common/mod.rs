//! Steps the suites share: intake, a visit, the saga's audit trail, polling.

use std::time::{Duration, Instant};

use healthcare_data::Scenario;
use sandbox::{Answer, MeshClient};
use serde_json::{Value, json};

/// Registers the scenario's patient at the API; returns the patient id.
pub async fn intake(api: &MeshClient, s: &Scenario) -> String {
    let r = api
        .post(
            "/patients",
            &json!({"patient": s.patient, "coverage": s.coverage}),
        )
        .await
        .expect("intake");
    assert_eq!(r.status, 201, "intake: {}", r.body);
    r.body["patient_id"]
        .as_str()
        .expect("patient_id")
        .to_string()
}

/// The body of `POST /visits` for the scenario's visit.
pub fn visit_body(patient_id: &str, s: &Scenario) -> Value {
    json!({"patient_id": patient_id, "visit": s.visit})
}

/// Runs the claim saga for the patient; the answer must be `status` (a
/// failure: 502, 503, 504); returns it for the caller's further checks.
pub async fn failed_visit(api: &MeshClient, patient_id: &str, s: &Scenario, status: u16) -> Answer {
    let r = api
        .post("/visits", &visit_body(patient_id, s))
        .await
        .expect("visit");
    assert_eq!(r.status, status, "visit: {}", r.body);
    r
}

/// Runs the claim saga for the patient; the answer must be 201.
pub async fn visit(api: &MeshClient, patient_id: &str, s: &Scenario) -> Answer {
    let r = api
        .post("/visits", &visit_body(patient_id, s))
        .await
        .expect("visit");
    assert_eq!(r.status, 201, "visit: {}", r.body);
    r
}

/// Runs the claim saga under the given request id (`X-Request-ID`); the
/// answer must be 201.
pub async fn visit_as(
    api: &MeshClient,
    patient_id: &str,
    s: &Scenario,
    request_id: &str,
) -> Answer {
    let r = api
        .request(
            reqwest::Method::POST,
            "/visits",
            Some(&visit_body(patient_id, s)),
            Some(request_id),
        )
        .await
        .expect("visit");
    assert_eq!(r.status, 201, "visit: {}", r.body);
    r
}

/// A claim billing accepts for the scenario's doctor and diagnoses (one
/// office visit, 125.00), about a patient and verification it does not check.
pub fn claim_body(s: &Scenario) -> Value {
    json!({
        "patient_id": "pat-x",
        "verification_id": "ver-x",
        "npi": s.visit.rendering_npi,
        "diagnoses": s.visit.diagnoses.iter().map(|d| d.code).collect::<Vec<_>>(),
        "procedures": [{"code": "99213", "charge_cents": 12500}],
    })
}

/// Every row the services' schemas hold for `tenant`, as text, with its
/// schema and table (every table that has a `tenant` column).
pub async fn tenant_rows(rows: &suites::Rows, tenant: &str) -> Vec<(String, String, String)> {
    let tables = rows
        .query(
            "SELECT DISTINCT table_schema, table_name FROM information_schema.columns
             WHERE column_name = 'tenant'
               AND table_schema IN ('api', 'insurance', 'billing', 'compliance', 'bi', 'doctor')",
            &[],
        )
        .await
        .expect("the services' tables");
    let mut out = Vec::new();
    for t in &tables {
        let (schema, table): (String, String) = (t.get(0), t.get(1));
        let texts = rows
            .query(
                &format!("SELECT t::text FROM {schema}.{table} t WHERE t.tenant = $1"),
                &[&tenant],
            )
            .await
            .expect("rows");
        for row in texts {
            out.push((schema.clone(), table.clone(), row.get(0)));
        }
    }
    out
}

/// The saga events of a request, in order, as `event_type:step`.
pub async fn saga_trail(monitor: &MeshClient, request_id: &str) -> Vec<String> {
    let r = monitor
        .get(&format!("/audit?request_id={request_id}&kind=saga_event"))
        .await
        .expect("audit query");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["event_type"].as_str().unwrap_or("?"),
                e["detail"]["step"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Polls `check` every 50 ms for up to 5 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let done = check();
        async move {
            if done.await {
                Ok(())
            } else {
                Err(format!("never happened: {what}"))
            }
        }
    })
    .await;
}

/// Polls `probe` every `every` until it answers `Ok`, for at most
/// `within` (its first try included); its value. Past the deadline it
/// fails the test with the last `Err`, which says what was still missing.
pub async fn poll_until<T, F, Fut>(within: Duration, every: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(done) => return done,
            Err(missing) => assert!(Instant::now() < deadline, "after {within:?}: {missing}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Discloses to business intelligence, through `monitor`, more than its
/// purpose needs (a generated minimum-necessary breach): the monitor's
/// answer (`201`, an incident opened) and the breach, whose `expected`
/// names the excess fields.
pub async fn disclose_a_breach(
    monitor: &MeshClient,
    g: &mut healthcare_data::Generator,
) -> (Answer, healthcare_data::ComplianceScenario) {
    let breach = g.compliance_scenario(healthcare_data::ComplianceKind::MinimumNecessaryBreach);
    let r = monitor
        .post(
            "/disclosures",
            &json!({
                "recipient": breach.evidence["recipient"],
                "purpose": breach.evidence["purpose"],
                "payload": breach.evidence["payload"],
            }),
        )
        .await
        .expect("disclosure");
    assert_eq!(r.status, 201, "the disclosure: {}", r.body["error"]);
    (r, breach)
}

/// How many of the failures injected into `service` for `tenant`
/// (`fail_next`) it has still to answer.
pub async fn failures_left(
    target: &suites::Target,
    service: sandbox::Service,
    tenant: &str,
) -> u64 {
    let plans = target
        .client(service, "admin")
        .get("/admin/faults")
        .await
        .expect("fault plans");
    plans
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["tenant"] == tenant)
        .filter_map(|p| p["fail_next"].as_u64())
        .sum()
}

/// An NPI with its check digit broken (billing refuses it).
pub fn broken_npi(npi: &str) -> String {
    let last = npi.as_bytes()[9] - b'0';
    format!("{}{}", &npi[..9], (last + 1) % 10)
}

/// What a set of request latencies shows, to hold against an SLO
/// (nearest-rank percentiles).
pub fn observed(samples: &[Duration], failed: usize, elapsed: Duration) -> deployment::Observed {
    deployment::Observed::from_samples(samples, failed, elapsed)
}

/// The load generator's figures, to hold against an SLO (corrected latency).
pub fn observed_load(r: &traffic::load::LoadReport) -> deployment::Observed {
    deployment::Observed {
        p50_ms: r.corrected.p50,
        p95_ms: r.corrected.p95,
        p99_ms: r.corrected.p99,
        error_rate: r.error_rate(),
        throughput_rps: r.achieved_rps,
    }
}

/// Each connection's bytes: (client to server, server to client).
type Recorded = std::sync::Arc<std::sync::Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

/// A TCP relay in front of `upstream` that keeps every byte of every
/// connection, each way: what a network observer between two services
/// would see.
pub struct Tap {
    addr: std::net::SocketAddr,
    conns: Recorded,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tap {
    /// Listens on loopback and relays each connection to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> Tap {
        use tokio::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("tap bind");
        let addr = listener.local_addr().expect("tap addr");
        let conns: Recorded = Default::default();
        let kept = std::sync::Arc::clone(&conns);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let index = {
                    let mut all = kept
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    all.push((Vec::new(), Vec::new()));
                    all.len() - 1
                };
                let kept = std::sync::Arc::clone(&kept);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::join!(
                        relay(&mut cr, &mut sw, &kept, index, true),
                        relay(&mut sr, &mut cw, &kept, index, false)
                    );
                });
            }
        });
        Tap { addr, conns, task }
    }

    /// Where to connect instead of the upstream.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Every connection's bytes so far: (client to server, server to client).
    pub fn connections(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

async fn relay(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    kept: &std::sync::Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    index: usize,
    upstream: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => {
                if let Some(c) = kept
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_mut(index)
                {
                    let side = if upstream { &mut c.0 } else { &mut c.1 };
                    side.extend_from_slice(&buf[..n]);
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A failed visit's compensations were all made: each `completed`, except
/// that voiding a claim whose create went unanswered may be `pending`
/// (billing unreachable: the API keeps it and voids the claim once billing
/// answers). The verification, when there was one, is cancelled at once.
pub fn assert_compensated(body: &Value) {
    let all = body["compensations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in &all {
        let ok = c["outcome"] == "completed"
            || (c["step"] == "create_claim" && c["outcome"] == "pending");
        assert!(ok, "a compensation was not made: {c} in {body}");
    }
    if body["failed_step"] != "verify_insurance" {
        assert!(
            all.iter()
                .any(|c| c["step"] == "verify_insurance" && c["outcome"] == "completed"),
            "the verification was not cancelled: {body}"
        );
    }
}

/// The tenant's claims that stand (not cancelled), once they number
/// `want` or 15 s have passed (a claim behind a lost answer is voided by
/// the API's compensator once billing answers); the last count.
pub async fn standing_claims_settle(rows: &suites::Rows, tenant: &str, want: i64) -> i64 {
    let count = || async {
        rows.one::<i64>(
            "SELECT count(*) FROM billing.claims WHERE tenant = $1 AND status <> 'cancelled'",
            &[&tenant],
        )
        .await
        .expect("claims")
    };
    let settle = Instant::now() + Duration::from_secs(15);
    loop {
        let n = count().await;
        if n == want || Instant::now() >= settle {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records, for the report's service health section, what the `/health`
/// of `service` answered: its status and its stores' and, for a service
/// that calls others (the API), each dependency's status as it sees it
/// (under the dependency) and the breaker it keeps for it.
pub fn record_health(metrics: &harness::Metrics, service: sandbox::Service, health: &Value) {
    let name = service.name();
    metrics.service_state(name, "health", health["status"].as_str().unwrap_or("?"));
    for store in ["database", "redis"] {
        if let Some(state) = health[store].as_str() {
            metrics.service_state(name, store, state);
        }
    }
    if let Some(deps) = health["dependencies"].as_object() {
        for (dep, d) in deps {
            if let Some(state) = d["status"].as_str() {
                metrics.service_state(dep, &format!("health as {name} sees it"), state);
            }
            if let Some(state) = d["circuit_breaker"].as_str() {
                metrics.service_state(name, &format!("breaker to {dep}"), state);
            }
        }
    }
}

/// The API's call to `dependency` made for request `request_id`, as its
/// audit trail records it (audited in the background: awaited): target,
/// status, attempts, outcome.
pub async fn audited_call(
    target: &suites::Target,
    tenant: &sandbox::Tenant,
    request_id: &str,
    dependency: sandbox::Service,
) -> Value {
    let monitor = target.client(sandbox::Service::ComplianceMonitor, tenant);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = monitor
            .get(&format!("/audit?request_id={request_id}&kind=service_call"))
            .await
            .expect("audit");
        let found = r.body["events"].as_array().and_then(|events| {
            events
                .iter()
                .find(|e| e["detail"]["target"] == dependency.name())
                .map(|e| e["detail"].clone())
        });
        if let Some(call) = found {
            return call;
        }
        assert!(
            Instant::now() < deadline,
            "no call to {dependency} audited under {request_id}: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What of a journey's patient must never cross a tapped link in the
/// clear, labelled (the labels name a finding; the values never appear in
/// a message). Values shorter than 5 bytes are left out: they would match
/// ciphertext by chance.
pub fn patient_secrets(s: &Scenario, patient_id: &str) -> Vec<(&'static str, String)> {
    [
        ("the SSN", s.patient.ssn.clone()),
        ("the SSN's digits", s.patient.ssn.replace('-', "")),
        ("the last name", s.patient.last_name.clone()),
        ("the full name", s.patient.full_name()),
        ("the member id", s.coverage.member_id.clone()),
        ("the patient id", patient_id.to_string()),
    ]
    .into_iter()
    .filter(|(_, v)| v.len() >= 5)
    .collect()
}

/// What HTTP in the clear would show on a link between services: a
/// request line's end (ALPN's "http/1.1" is in every ClientHello) and a
/// bearer token.
pub const HTTP_TELLS: [(&str, &str); 2] =
    [("HTTP text", "HTTP/1.1\r\n"), ("a bearer token", "Bearer ")];

/// Is `needle` in `bytes` (ASCII case ignored)?
pub fn crosses(bytes: &[u8], needle: &str) -> bool {
    bytes
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Asserts no value of `secrets` is in either direction of `conns`
/// (`link` and the secrets' labels name the finding: no PHI in messages).
pub fn assert_nothing_in_clear(
    link: &str,
    conns: &[(Vec<u8>, Vec<u8>)],
    secrets: &[(&str, String)],
) {
    for (up, down) in conns {
        for (direction, bytes) in [("request", up), ("reply", down)] {
            for (what, value) in secrets {
                assert!(
                    !crosses(bytes, value),
                    "{link} {direction}: {what} crossed the wire in the clear"
                );
            }
        }
    }
}

/// Asserts each connection of `conns` opens with a TLS handshake record
/// (0x16) both ways: the client's ClientHello, the server's ServerHello
/// (or nothing yet).
pub fn assert_tls_handshakes(link: &str, conns: &[(Vec<u8>, Vec<u8>)]) {
    for (up, down) in conns {
        assert_eq!(
            up.first().copied(),
            Some(0x16),
            "{link}: a connection did not start with a ClientHello"
        );
        assert!(
            down.first().is_none_or(|b| *b == 0x16),
            "{link}: the server did not answer with a handshake"
        );
    }
}
