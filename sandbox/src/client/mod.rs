//! The one client every service-to-service call goes through. The service
//! called is the *peer* (named `target` in [`Call`], [`CallError`], the
//! call records and the metrics' labels, as on the wire).
//!
//! Per attempt: the peer's circuit breaker is asked for permission, a
//! service token is signed (audience = the peer, the caller's tenant,
//! short expiry), `X-Request-ID` is propagated, and the attempt has its own
//! timeout. Failed attempts (connection errors, timeouts, `429`/`5xx`) are
//! retried with exponential backoff and full jitter — but only for
//! idempotent methods or requests carrying an idempotency key — as long as
//! the call's overall timeout allows. Each peer has a **bulkhead**: at
//! most [`BulkheadConfig::max_concurrent`] calls to it at once, a call
//! waiting longer than [`BulkheadConfig::max_wait`] for a slot is refused
//! (so a dependency that hangs holds a bounded share of the caller's
//! capacity). Every call but those to the compliance monitor is itself
//! audited there, in the background.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::auth::token;
use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use crate::clock::Clock;
use crate::metrics::ServiceMetrics;
use crate::retry::{AttemptFailure, Backoff, RetryPolicy};
use crate::service::Service;

mod lanes;
mod records;
pub use records::{CallRecord, CallRecords, Filed, Records};

/// Where each service is reached. Shared by the mesh's clients, so a
/// route can be changed while the mesh runs (to put a chaos proxy in
/// front of a service, say).
pub type Routes = Arc<RwLock<HashMap<Service, SocketAddr>>>;

/// The client's settings.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    /// Each peer's breaker.
    pub breaker: BreakerConfig,
    /// Retries.
    pub retry: RetryPolicy,
    /// Timeout of one attempt.
    pub attempt_timeout: Duration,
    /// Timeout of the whole call, retries and waits included.
    pub call_timeout: Duration,
    /// Validity of the tokens it signs.
    pub token_ttl: Duration,
    /// Each peer's bulkhead.
    pub bulkhead: BulkheadConfig,
}

/// A per-peer concurrency limit.
#[derive(Debug, Clone, Copy)]
pub struct BulkheadConfig {
    /// Calls to one peer in flight at once.
    pub max_concurrent: usize,
    /// How long a call waits for a slot before it is refused.
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent: 64,
            max_wait: Duration::from_millis(500),
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            breaker: BreakerConfig {
                window_size: 20,
                failure_rate_threshold: 50.0,
                minimum_calls: 10,
                open_wait: Duration::from_secs(30),
                half_open_calls: 3,
            },
            retry: RetryPolicy::default(),
            attempt_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            token_ttl: Duration::from_secs(60),
            bulkhead: BulkheadConfig::default(),
        }
    }
}

/// HTTP methods the mesh uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    fn reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

/// One call.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// To whom: the peer.
    pub target: Service,
    /// How.
    pub method: Method,
    /// The path (`/claims`).
    pub path: String,
    /// For which tenant.
    pub tenant: &'a str,
    /// The request id to propagate.
    pub request_id: &'a str,
    /// A JSON body, serialized once (each attempt sends it as it is).
    pub body: Option<axum::body::Bytes>,
    /// An idempotency key (makes a `POST` repeatable).
    pub idempotency_key: Option<String>,
}

impl<'a> Call<'a> {
    /// A call without body or key.
    pub fn new(
        peer: Service,
        method: Method,
        path: impl Into<String>,
        tenant: &'a str,
        request_id: &'a str,
    ) -> Self {
        Call {
            target: peer,
            method,
            path: path.into(),
            tenant,
            request_id,
            body: None,
            idempotency_key: None,
        }
    }

    /// With a JSON body.
    pub fn json(self, body: Value) -> Self {
        self.body(&body)
    }

    /// With a service's wire type as its JSON body, serialized straight to
    /// bytes.
    pub fn body(mut self, body: &impl serde::Serialize) -> Self {
        // The wire types are structs of strings, numbers and lists: they
        // always serialize.
        let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
        self.body = Some(bytes.into());
        self
    }

    /// With an idempotency key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// A peer's successful (`2xx`) answer to a service-to-service call (the
/// tests' client's is [`crate::Answer`]: "answer" is the one word for a
/// status and its body).
#[derive(Debug, Clone)]
pub struct PeerAnswer {
    /// The status.
    pub status: u16,
    /// The body (`null` when empty or not JSON).
    pub body: Value,
    /// Attempts made.
    pub attempts: u32,
}

impl PeerAnswer {
    /// The body read as the peer's wire type `T`, a tolerant reader: the
    /// fields the body lacks are `T::default()`'s (a peer, or a test's stub
    /// of it, may answer only what the caller needs; the caller checks the
    /// ones it cannot do without). `Err`: a body that is not a `T`.
    pub fn read<T>(self) -> Result<T, serde_json::Error>
    where
        T: Default + serde::Serialize + serde::de::DeserializeOwned,
    {
        // A whole answer (our own peers') reads as it is.
        if let Ok(whole) = <T as serde::Deserialize>::deserialize(&self.body) {
            return Ok(whole);
        }
        let mut whole = serde_json::to_value(T::default())?;
        match (whole.as_object_mut(), self.body) {
            (Some(fields), Value::Object(given)) => fields.extend(given),
            (_, other) => whole = other,
        }
        serde_json::from_value(whole)
    }
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The peer's breaker refused the call.
    #[error("{target}: circuit breaker {} (next probe in {retry_after:?})", state.label())]
    NotPermitted {
        /// The peer called.
        target: Service,
        /// The breaker's state.
        state: BreakerState,
        /// How long until it lets a probe through.
        retry_after: Duration,
    },
    /// The last attempt timed out.
    #[error("{target}: no answer within {timeout:?} (after {attempts} attempt(s))")]
    Timeout {
        /// The peer called.
        target: Service,
        /// The attempt timeout.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// The last attempt could not connect or broke.
    #[error("{target}: connection failed after {attempts} attempt(s): {message}")]
    Connection {
        /// The peer called.
        target: Service,
        /// Why.
        message: String,
        /// Attempts made.
        attempts: u32,
        /// Whether an attempt may have reached the peer (a connection
        /// made, then broken or timed out before the answer), so that its
        /// effect may have happened; `false` when every attempt failed to
        /// connect.
        maybe_delivered: bool,
    },
    /// The peer answered with an error status.
    #[error("{target} answered {status} after {attempts} attempt(s)")]
    Status {
        /// The peer called.
        target: Service,
        /// The status.
        status: u16,
        /// The error body.
        body: Value,
        /// Attempts made.
        attempts: u32,
    },
    /// The peer's bulkhead was full for longer than the wait.
    #[error("{target}: bulkhead full ({limit} calls in flight; waited {waited:?})")]
    BulkheadFull {
        /// The peer called.
        target: Service,
        /// Its limit.
        limit: usize,
        /// How long the call waited.
        waited: Duration,
    },
    /// No address is known for the peer.
    #[error("{0}: no route")]
    NoRoute(Service),
}

impl CallError {
    /// The peer's error status, when it answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Attempts made before giving up (0 when none was allowed).
    pub fn attempts(&self) -> u32 {
        match self {
            CallError::Timeout { attempts, .. }
            | CallError::Connection { attempts, .. }
            | CallError::Status { attempts, .. } => *attempts,
            CallError::NotPermitted { .. }
            | CallError::BulkheadFull { .. }
            | CallError::NoRoute(_) => 0,
        }
    }

    /// The failure described for an answer and the audit trail.
    pub fn cause(&self) -> Cause {
        match self {
            CallError::Status { status, body, .. } => Cause {
                status: Some(*status),
                body: Some(body.clone()),
                ..Cause::new(self.to_string())
            },
            _ => Cause::new(self.to_string()),
        }
    }
}

/// Why a call, or a step of a saga, failed: in a saga's failed answer, its
/// compensations and its audited events.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cause {
    /// The peer's error body, as it came (any service's error shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// What failed, in words.
    pub message: String,
    /// Why a step refused (a verification's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The peer's status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl Cause {
    /// A cause in words only.
    pub fn new(message: impl Into<String>) -> Cause {
        Cause {
            message: message.into(),
            status: None,
            body: None,
            reason: None,
        }
    }
}

/// A service's outgoing client.
pub struct ServiceClient {
    from: &'static str,
    http: reqwest::Client,
    /// `http`, or `https` after [`ServiceClient::with_tls`].
    scheme: &'static str,
    routes: Routes,
    breakers: BTreeMap<Service, CircuitBreaker>,
    bulkheads: BTreeMap<Service, Bulkhead>,
    /// The background audits' own bulkhead (to the compliance monitor, with
    /// the same limit): under load they are most of the calls to it, and in
    /// the peer's bulkhead they queued the requests' own calls (a patient's
    /// sync, a saga's events) behind them.
    audits: Bulkhead,
    /// The records on their way to the compliance monitor, by lane
    /// ([`lanes`]).
    lanes: lanes::Lanes,
    /// Read once per call: a reload (`PUT /admin/config`) applies to the
    /// calls that start after it; calls in flight keep what they began with.
    config: RwLock<ClientConfig>,
    secret: Arc<[u8]>,
    seed: u64,
    calls: AtomicU64,
    metrics: Arc<ServiceMetrics>,
    /// Audited calls made per request id (two generations, so that the
    /// map stays bounded without forgetting a request in flight).
    seqs: std::sync::Mutex<[HashMap<String, u64>; 2]>,
}

/// Request ids remembered per generation of [`ServiceClient`]'s call counts.
const SEQ_GENERATION: usize = 10_000;

impl ServiceClient {
    /// A client calling as `from`, with a breaker per peer on `clock`,
    /// backoff jitter seeded from `seed`.
    pub fn new(
        from: &'static str,
        routes: Routes,
        config: ClientConfig,
        secret: Arc<[u8]>,
        clock: Arc<dyn Clock>,
        seed: u64,
        metrics: Arc<ServiceMetrics>,
    ) -> Self {
        let breakers = Service::ALL
            .into_iter()
            .map(|s| {
                (
                    s,
                    CircuitBreaker::with_clock(config.breaker, Arc::clone(&clock)),
                )
            })
            .collect();
        let bulkheads = Service::ALL
            .into_iter()
            .map(|s| (s, Bulkhead::new(config.bulkhead.max_concurrent)))
            .collect();
        let http = Self::http_builder()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        ServiceClient {
            from,
            http,
            scheme: "http",
            routes,
            breakers,
            bulkheads,
            audits: Bulkhead::new(config.bulkhead.max_concurrent),
            lanes: lanes::Lanes::default(),
            config: RwLock::new(config),
            secret,
            seed,
            calls: AtomicU64::new(0),
            metrics,
            seqs: Default::default(),
        }
    }

    fn http_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            // Below the servers' header-read timeout, which closes idle
            // connections: the client lets go of them first.
            .pool_idle_timeout(Duration::from_secs(4))
            .tcp_nodelay(true)
    }

    /// Calls over HTTPS, trusting only the mesh's CA (plain HTTP is
    /// refused by the client as well as by the servers).
    pub fn with_tls(mut self, tls: &crate::tls::TlsMaterial) -> Self {
        if let Ok(http) = tls.trust(Self::http_builder()).build() {
            self.http = http;
            self.scheme = "https";
        }
        self
    }

    /// Calls over HTTPS with `config` (a target's CA, say): for a
    /// client built outside the mesh, against a target's services.
    pub fn with_client_tls(mut self, config: &Arc<rustls::ClientConfig>) -> Self {
        let built = Self::http_builder()
            .use_preconfigured_tls((**config).clone())
            .build();
        if let Ok(http) = built {
            self.http = http;
            self.scheme = "https";
        }
        self
    }

    /// `https` when it calls over TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Its settings now.
    pub fn config(&self) -> ClientConfig {
        *self.config.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes its timeouts and retries live (the breakers and bulkheads
    /// keep the limits they were made with).
    pub fn reload(&self, change: impl FnOnce(&mut ClientConfig)) -> ClientConfig {
        let mut c = self.config.write().unwrap_or_else(PoisonError::into_inner);
        change(&mut c);
        *c
    }

    /// The breaker guarding calls to `peer`.
    pub fn breaker(&self, peer: Service) -> &CircuitBreaker {
        &self.breakers[&peer]
    }

    /// Where `peer` is reached now.
    pub fn route(&self, peer: Service) -> Option<SocketAddr> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .copied()
    }

    /// `GET /health` of `peer` (through its route, not its breaker: a
    /// health probe is no call), answered within `timeout`:
    /// `healthy`, `unhealthy` (an error status), `unreachable` or `unknown`
    /// (no route).
    pub async fn probe_health(&self, peer: Service, timeout: Duration) -> &'static str {
        let Some(addr) = self.route(peer) else {
            return "unknown";
        };
        let probe = self
            .http
            .get(format!("{}://{addr}/health", self.scheme))
            .send();
        match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(r)) if r.status().is_success() => "healthy",
            Ok(Ok(_)) => "unhealthy",
            _ => "unreachable",
        }
    }

    /// Numbers the next audited call of `request_id` (1, 2, …).
    fn next_seq(&self, request_id: &str) -> u64 {
        let mut gens = self.seqs.lock().unwrap_or_else(PoisonError::into_inner);
        if !gens[0].contains_key(request_id) {
            if let Some(n) = gens[1].remove(request_id) {
                gens[0].insert(request_id.to_string(), n);
            } else if gens[0].len() >= SEQ_GENERATION {
                let current = std::mem::take(&mut gens[0]);
                gens[1] = current;
            }
        }
        let n = gens[0].entry(request_id.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    /// How many audited calls this client has made under `request_id`:
    /// what the compliance monitor's trail must hold (`/audit/completeness`).
    pub fn calls_made(&self, request_id: &str) -> u64 {
        let gens = self.seqs.lock().unwrap_or_else(PoisonError::into_inner);
        gens[0]
            .get(request_id)
            .or_else(|| gens[1].get(request_id))
            .copied()
            .unwrap_or(0)
    }

    /// Makes the call (see the module docs), then audits it to the
    /// compliance monitor in the background, numbered within its request
    /// id so that a missing audit event shows as a gap.
    pub async fn call(self: &Arc<Self>, call: Call<'_>) -> Result<PeerAnswer, CallError> {
        let (result, audit) = self.call_audit_later(&call).await;
        if let Some(record) = audit {
            self.ship(call.tenant, call.request_id, vec![record]);
        }
        result
    }

    /// Makes the call as [`ServiceClient::call`] does and returns its audit
    /// record (`None` for a call to the compliance monitor) for the caller to
    /// [`ServiceClient::ship`]: calls made together (an intake's syncs) are
    /// then audited in one exchange.
    pub async fn call_audit_later(
        &self,
        call: &Call<'_>,
    ) -> (Result<PeerAnswer, CallError>, Option<CallRecord>) {
        self.audited(call, self.send(call)).await
    }

    /// Makes `call` by `sending` it, numbered within its request (a call to
    /// the compliance monitor is not audited), timed; with its audit record.
    async fn audited(
        &self,
        call: &Call<'_>,
        sending: impl std::future::Future<Output = Result<PeerAnswer, CallError>>,
    ) -> (Result<PeerAnswer, CallError>, Option<CallRecord>) {
        let started = Instant::now();
        let started_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let seq =
            (call.target != Service::ComplianceMonitor).then(|| self.next_seq(call.request_id));
        let result = crate::timing::measure(crate::timing::Part::Call(call.target), sending).await;
        let audit = seq.map(|seq| {
            let (status, attempts, outcome) = match &result {
                Ok(r) => (Some(r.status), r.attempts, "ok".to_string()),
                Err(e) => (e.status(), e.attempts(), e.to_string()),
            };
            CallRecord {
                target: call.target.name().to_string(),
                method: call.method.as_str().to_string(),
                path: call.path.to_string(),
                status,
                attempts,
                duration_ms: started.elapsed().as_millis() as u64,
                outcome,
                seq,
                started_at_ms,
                request_id: None,
            }
        });
        (result, audit)
    }

    /// Sends a record to the compliance monitor in the background, through
    /// the background audits' bulkhead (not queued with the calls a request
    /// waits for), without auditing it.
    pub async fn send_audit(&self, call: &Call<'_>) -> Result<PeerAnswer, CallError> {
        self.send_through(call, &self.audits).await
    }

    /// Makes the call without auditing it.
    pub async fn send(&self, call: &Call<'_>) -> Result<PeerAnswer, CallError> {
        self.send_through(call, &self.bulkheads[&call.target]).await
    }

    /// [`ServiceClient::send`] holding a slot of `bulkhead`.
    async fn send_through(
        &self,
        call: &Call<'_>,
        bulkhead: &Bulkhead,
    ) -> Result<PeerAnswer, CallError> {
        let target = call.target;
        let config = self.config();
        let label = format!("target=\"{}\"", target.name());
        let waited = Instant::now();
        let slot = crate::timing::measure(
            crate::timing::Part::Bulkhead,
            tokio::time::timeout(config.bulkhead.max_wait, bulkhead.slots.acquire()),
        )
        .await;
        let Ok(Ok(_slot)) = slot else {
            self.metrics.incr("client_bulkhead_rejected_total", &label);
            return Err(CallError::BulkheadFull {
                target,
                limit: config.bulkhead.max_concurrent,
                waited: waited.elapsed(),
            });
        };
        let _in_flight = InFlight::enter(bulkhead);
        self.attempts(call, &label, &config).await
    }

    async fn attempts(
        &self,
        call: &Call<'_>,
        label: &str,
        config: &ClientConfig,
    ) -> Result<PeerAnswer, CallError> {
        let target = call.target;
        let deadline = Instant::now() + config.call_timeout;
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut backoff = Backoff::new(
            config.retry,
            self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let breaker = self.breaker(target);
        let mut attempt = 0u32;
        let mut maybe_delivered = false;
        // The failure of the attempt before, while its retry waits.
        let mut previous: Option<CallError> = None;
        loop {
            attempt += 1;
            if let Err(refused) = breaker.try_acquire() {
                self.metrics.incr("client_not_permitted_total", label);
                // A retry the breaker (opened meanwhile) refuses: the call
                // failed as its last attempt did (which may have reached
                // the peer: what the caller must know to compensate).
                if let Some(failed) = previous {
                    return Err(failed);
                }
                return Err(CallError::NotPermitted {
                    target,
                    state: refused.state,
                    retry_after: refused.retry_after,
                });
            }
            let Some(addr) = self.route(target) else {
                breaker.record(false);
                return Err(CallError::NoRoute(target));
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let per_attempt = config.attempt_timeout.min(remaining);
            let token = token::sign(
                &self.secret,
                self.from,
                target.name(),
                call.tenant,
                config.token_ttl,
            );
            let mut req = self
                .http
                .request(
                    call.method.reqwest(),
                    format!("{}://{addr}{}", self.scheme, call.path),
                )
                .header("authorization", format!("Bearer {token}"))
                .header("x-tenant-id", call.tenant)
                .header("x-request-id", call.request_id)
                .header("x-source-service", self.from);
            if let Some(k) = &call.idempotency_key {
                req = req.header("idempotency-key", k);
            }
            if let Some(b) = &call.body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let outcome = tokio::time::timeout(per_attempt, async {
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await?;
                Ok::<_, reqwest::Error>((status, bytes))
            })
            .await;
            let (failure, error) = match outcome {
                Err(_) => {
                    breaker.record(false);
                    maybe_delivered = true;
                    (
                        AttemptFailure::Timeout,
                        CallError::Timeout {
                            target,
                            timeout: per_attempt,
                            attempts: attempt,
                        },
                    )
                }
                Ok(Err(e)) => {
                    breaker.record(false);
                    maybe_delivered |= !e.is_connect();
                    let mut message = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        let _ = write!(message, ": {s}");
                        source = s.source();
                    }
                    (
                        AttemptFailure::Connection,
                        CallError::Connection {
                            target,
                            message,
                            attempts: attempt,
                            maybe_delivered,
                        },
                    )
                }
                Ok(Ok((status, bytes))) => {
                    // A 4xx is the caller's fault, not the peer's.
                    breaker.record(status < 500);
                    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    if (200..300).contains(&status) {
                        return Ok(PeerAnswer {
                            status,
                            body,
                            attempts: attempt,
                        });
                    }
                    (
                        AttemptFailure::Status(status),
                        CallError::Status {
                            target,
                            status,
                            body,
                            attempts: attempt,
                        },
                    )
                }
            };
            match backoff.next_delay(
                attempt,
                call.method.as_str(),
                call.idempotency_key.is_some(),
                failure,
            ) {
                Some(wait) if Instant::now() + wait < deadline => {
                    self.metrics.incr("client_retries_total", label);
                    tokio::time::sleep(wait).await;
                    previous = Some(error);
                }
                _ => return Err(error),
            }
        }
    }

    /// Closes every peer's breaker (test mode's `/admin/breakers/reset`).
    pub fn reset_breakers(&self) {
        for b in self.breakers.values() {
            b.reset();
        }
    }

    /// Every peer's breaker state.
    pub fn breaker_states(&self) -> BTreeMap<Service, BreakerState> {
        self.breakers.iter().map(|(s, b)| (*s, b.state())).collect()
    }

    /// The most calls to `peer` that were in flight at once.
    pub fn peak_in_flight(&self, peer: Service) -> u64 {
        self.bulkheads[&peer].peak.load(Ordering::Relaxed)
    }

    /// The breakers and bulkheads as Prometheus text.
    pub fn render_metrics(&self) -> String {
        let mut out = String::from(
            "# HELP circuit_breaker_state 1 for the state each target's breaker is in.\n# TYPE circuit_breaker_state gauge\n",
        );
        for (s, b) in &self.breakers {
            let state = b.state();
            for st in [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::HalfOpen,
            ] {
                let _ = writeln!(
                    out,
                    "circuit_breaker_state{{service=\"{}\",target=\"{}\",state=\"{}\"}} {}",
                    self.from,
                    s.name(),
                    st.label(),
                    u8::from(st == state)
                );
            }
        }
        out.push_str("# HELP client_in_flight Calls in flight to each target now, and the peak.\n# TYPE client_in_flight gauge\n");
        for (s, b) in &self.bulkheads {
            let _ = writeln!(
                out,
                "client_in_flight{{service=\"{}\",target=\"{}\"}} {}\nclient_in_flight_peak{{service=\"{}\",target=\"{}\"}} {}",
                self.from,
                s.name(),
                b.in_flight.load(Ordering::Relaxed),
                self.from,
                s.name(),
                b.peak.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Counts a call in flight while it lives (a dropped call included).
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(b: &'a Bulkhead) -> Self {
        let now = b.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        b.peak.fetch_max(now, Ordering::Relaxed);
        InFlight(&b.in_flight)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One peer's bulkhead: its slots and what is in flight.
struct Bulkhead {
    slots: tokio::sync::Semaphore,
    in_flight: AtomicU64,
    peak: AtomicU64,
}

impl Bulkhead {
    fn new(max: usize) -> Self {
        Bulkhead {
            slots: tokio::sync::Semaphore::new(max.max(1)),
            in_flight: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        }
    }
}
