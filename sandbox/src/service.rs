//! The six services of the mesh: their names, and what every one of them
//! shares (storage, the outgoing client, the request gate that checks
//! tokens, counts requests and applies injected faults).

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::ServiceClient;
use crate::metrics::ServiceMetrics;
use crate::store::Cache;
use crate::token;

/// One of the mesh's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// The orchestrator in front: intake, visits, the claim saga.
    HealthcareApi,
    /// Eligibility checks, cached in Redis.
    InsuranceVerification,
    /// Claims, validated, with idempotency keys in Redis.
    BillingEngine,
    /// The audit trail, the PHI scanner, violations.
    ComplianceMonitor,
    /// Analytics events and aggregates.
    BusinessIntelligence,
    /// Doctors' preferences by NPI.
    DoctorPersonalization,
}

impl Service {
    /// All six, the API first.
    pub const ALL: [Service; 6] = [
        Service::HealthcareApi,
        Service::InsuranceVerification,
        Service::BillingEngine,
        Service::ComplianceMonitor,
        Service::BusinessIntelligence,
        Service::DoctorPersonalization,
    ];

    /// The service's name (`billing-engine`): the token audience and the
    /// name in `/health` and logs.
    pub fn name(self) -> &'static str {
        match self {
            Service::HealthcareApi => "healthcare-api",
            Service::InsuranceVerification => "insurance-verification",
            Service::BillingEngine => "billing-engine",
            Service::ComplianceMonitor => "compliance-monitor",
            Service::BusinessIntelligence => "business-intelligence",
            Service::DoctorPersonalization => "doctor-personalization",
        }
    }

    /// Its PostgreSQL schema.
    pub fn schema(self) -> &'static str {
        match self {
            Service::HealthcareApi => "api",
            Service::InsuranceVerification => "insurance",
            Service::BillingEngine => "billing",
            Service::ComplianceMonitor => "compliance",
            Service::BusinessIntelligence => "bi",
            Service::DoctorPersonalization => "doctor",
        }
    }

    /// The service of a name.
    pub fn from_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error answer: a status and a JSON body `{"error": code, "message": …}`
/// (plus details). Messages pass through PHI redaction.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
}

impl ApiError {
    /// An error with a machine-readable `code` and a message.
    pub fn new(status: StatusCode, code: &str, message: impl fmt::Display) -> Self {
        ApiError {
            status,
            body: json!({"error": code, "message": phi::redact(&message.to_string())}),
        }
    }

    /// `404 not_found`.
    pub fn not_found(what: impl fmt::Display) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
    }

    /// `400 bad_request`.
    pub fn bad_request(message: impl fmt::Display) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// `500 internal`: logged, and answered without the detail.
    pub fn internal(context: &str, e: impl fmt::Display) -> Self {
        tracing::error!("{context}: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context} failed"),
        )
    }

    /// Adds a field to the body.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        if let Some(o) = self.body.as_object_mut() {
            o.insert(key.to_string(), value);
        }
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match &e {
            StoreError::Redis { .. } => {
                tracing::warn!("storage unavailable: {e}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cache_unavailable",
                    "Redis is unavailable; the request was not carried out, retry later",
                )
            }
            _ if e.is_unavailable() => {
                tracing::warn!("storage unavailable: {e}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    format!("the database is unavailable ({e}); retry later"),
                )
            }
            _ => ApiError::internal("storage", e),
        }
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

/// Who is calling, as established by the request gate from a verified token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant (token and `X-Tenant-ID` agree).
    pub tenant: String,
    /// The calling service (the token's issuer).
    pub source: String,
    /// The request id (`X-Request-ID`, propagated or made here).
    pub request_id: String,
}

/// Settings every service of a mesh shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The token secret.
    pub secret: Arc<[u8]>,
    /// How long an eligibility answer stays cached.
    pub eligibility_ttl: Duration,
    /// How long an idempotency key is held.
    pub idempotency_ttl: Duration,
}

/// One running service's state, shared by its handlers.
pub struct Ctx {
    /// Which service.
    pub service: Service,
    /// Its database pool (its own schema).
    pub db: crate::store::Db,
    /// Its Redis.
    pub cache: Cache,
    /// Its outgoing calls.
    pub client: Arc<ServiceClient>,
    /// Shared settings.
    pub settings: Settings,
    /// Its counters.
    pub metrics: Arc<ServiceMetrics>,
    /// Injected faults (test mode): at most one plan per tenant, and one
    /// for every tenant (`tenant: None`).
    pub faults: Mutex<Vec<FaultPlan>>,
    /// Ids of the resources it makes.
    pub ids: Ids,
    /// The mesh's (redacted) log lines.
    pub book: Arc<crate::logs::LogBook>,
}

/// Makes ids unique across restarts: a prefix, the start time and a counter.
pub struct Ids {
    epoch: u64,
    next: AtomicU64,
}

impl Default for Ids {
    fn default() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ids {
            epoch: nanos & 0xffff_ffff_ffff,
            next: AtomicU64::new(0),
        }
    }
}

impl Ids {
    /// `prefix-<epoch><counter>`.
    pub fn next(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{:012x}{:06x}",
            self.epoch,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Faults to inject into a service (test mode only), set through
/// `POST /admin/faults`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FaultPlan {
    /// Fail this many of the next matching requests.
    pub fail_next: u32,
    /// With this status (default 503).
    pub status: Option<u16>,
    /// Delay every matching request by this much.
    pub latency_ms: u64,
    /// Write this text into a log line of the next matching request (a PHI
    /// leak the log redaction and the compliance monitor must catch).
    pub leak_phi: Option<String>,
    /// Only requests of this tenant match.
    pub tenant: Option<String>,
    /// Only requests whose path starts with this match.
    pub path_prefix: Option<String>,
}

impl FaultPlan {
    fn matches(&self, caller: &Caller, path: &str) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == caller.tenant)
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| path.starts_with(p.as_str()))
    }
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(0);

/// A fresh request id.
pub fn new_request_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "req-{:08x}{:08x}",
        nanos,
        REQUEST_IDS.fetch_add(1, Ordering::Relaxed)
    )
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn unauthorized(reason: impl fmt::Display) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "unauthorized", "reason": reason.to_string()})),
    )
        .into_response()
}

/// Checks the bearer token: signed with the mesh's secret, for this
/// service, unexpired, for the tenant named in `X-Tenant-ID`.
fn authenticate(ctx: &Ctx, req: &Request, request_id: &str) -> Result<Caller, String> {
    let Some(tenant) = header(req, "x-tenant-id").filter(|t| !t.is_empty()) else {
        return Err("missing X-Tenant-ID".into());
    };
    let Some(bearer) = header(req, "authorization").and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err("missing bearer token".into());
    };
    let source = header(req, "x-source-service");
    match token::verify_from(
        &ctx.settings.secret,
        bearer,
        ctx.service.name(),
        tenant,
        source,
    ) {
        Ok(claims) => Ok(Caller {
            tenant: claims.tenant,
            source: claims.iss,
            request_id: request_id.to_string(),
        }),
        Err(e) => Err(e.to_string()),
    }
}

/// Applies the fault plan to a request; `Some` is the failure to answer.
async fn apply_faults(ctx: &Ctx, caller: &Caller, path: &str) -> Option<Response> {
    let (latency, leak, fail) = {
        let mut plans = ctx.faults.lock().unwrap_or_else(PoisonError::into_inner);
        // A tenant's own plan first, then the one for every tenant.
        let plan = plans
            .iter_mut()
            .filter(|p| p.matches(caller, path))
            .min_by_key(|p| p.tenant.is_none())?;
        let fail = if plan.fail_next > 0 {
            plan.fail_next -= 1;
            Some(plan.status.unwrap_or(503))
        } else {
            None
        };
        (plan.latency_ms, plan.leak_phi.take(), fail)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some(text) = leak {
        tracing::info!(
            tenant = %caller.tenant,
            request_id = %caller.request_id,
            "handling {path} for {text}"
        );
    }
    let status = fail?;
    ctx.metrics.incr("faults_injected_total", "");
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    Some(
        (
            status,
            axum::Json(json!({"error": "injected_fault", "message": "fault injected by the test"})),
        )
            .into_response(),
    )
}

/// The gate every request passes: request id, token check (except
/// `/health`, `/metrics`, `/admin/…`), faults, counting.
pub async fn gate(State(ctx): State<Arc<Ctx>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let request_id = header(&req, "x-request-id")
        .filter(|r| !r.is_empty() && r.len() <= 128)
        .map_or_else(new_request_id, str::to_string);
    let open = path == "/health" || path == "/metrics" || path.starts_with("/admin/");
    let mut resp = if open {
        next.run(req).await
    } else {
        match authenticate(&ctx, &req, &request_id) {
            Err(reason) => unauthorized(reason),
            Ok(caller) => match apply_faults(&ctx, &caller, &path).await {
                Some(resp) => resp,
                None => {
                    req.extensions_mut().insert(caller);
                    next.run(req).await
                }
            },
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    ctx.metrics
        .record_request(&method, resp.status().as_u16(), started.elapsed());
    resp
}

/// Gives every error answer one JSON shape, `{"error", "message"}`: the
/// framework's own rejections (malformed JSON, a body over the limit, an
/// unknown route, a wrong method) are plain text and may quote the input;
/// they are rewritten without it (quoted values are cut, PHI redacted).
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::BAD_REQUEST => "malformed_request",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        s if s.is_server_error() => "internal_error",
        _ => "rejected",
    };
    let message = match status {
        StatusCode::NOT_FOUND => "no such route".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_string(),
        _ => without_quoted(&String::from_utf8_lossy(&text)),
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = json!({"error": code, "message": phi::redact(&message)}).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// `text` with every `"…"`-quoted value cut out (serde quotes the input it
/// could not take).
fn without_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if !inside {
                out.push_str("\"…\"");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out.chars().take(300).collect()
}

/// `GET /health` of a business service: its database and Redis.
pub async fn health(State(ctx): State<Arc<Ctx>>) -> Response {
    let (db, redis) = storage_health(&ctx).await;
    let ok = db && redis;
    let body = json!({
        "service": ctx.service.name(),
        "status": if ok { "healthy" } else { "unhealthy" },
        "database": if db { "up" } else { "down" },
        "redis": if redis { "up" } else { "down" },
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Is the database up, is Redis up?
pub async fn storage_health(ctx: &Ctx) -> (bool, bool) {
    let db = ctx.db.ping(Duration::from_secs(2)).await;
    let redis = ctx.cache.ping().await;
    (db, redis)
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    let mut text = ctx.metrics.render(ctx.service.name());
    text.push_str(&ctx.client.render_metrics());
    let pool = ctx.db.status();
    let name = ctx.service.name();
    let _ = write!(
        text,
        "# HELP db_pool_connections PostgreSQL connections of the service's pool, by state.\n\
         # TYPE db_pool_connections gauge\n\
         db_pool_connections{{service=\"{name}\",state=\"in_use\"}} {}\n\
         db_pool_connections{{service=\"{name}\",state=\"idle\"}} {}\n\
         # TYPE db_pool_max_connections gauge\n\
         db_pool_max_connections{{service=\"{name}\"}} {}\n\
         # TYPE db_pool_waiting gauge\n\
         db_pool_waiting{{service=\"{name}\"}} {}\n\
         # TYPE db_pool_timeouts_total counter\n\
         db_pool_timeouts_total{{service=\"{name}\"}} {}\n",
        pool.size.saturating_sub(pool.idle),
        pool.idle,
        pool.max_size,
        pool.waiting,
        pool.timeouts,
    );
    text.push_str(&crate::metrics::render_process(ctx.service.name()));
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /config`: the service's effective configuration — its client's
/// breaker, retry, timeouts and bulkhead, its pool, its TTLs — with the
/// secret redacted (only its length shown), and a SHA-256 `hash` of the
/// rest, so two services (or two runs) can be compared at a glance.
pub async fn config(State(ctx): State<Arc<Ctx>>) -> axum::Json<Value> {
    use sha2::{Digest, Sha256};
    let c = ctx.client.config();
    let ms = |d: Duration| d.as_millis() as u64;
    let pool = ctx.db.config();
    let mut body = json!({
        "service": ctx.service.name(),
        "client": {
            "breaker": {
                "window_size": c.breaker.window_size,
                "failure_rate_threshold": c.breaker.failure_rate_threshold,
                "minimum_calls": c.breaker.minimum_calls,
                "open_wait_ms": ms(c.breaker.open_wait),
                "half_open_calls": c.breaker.half_open_calls,
            },
            "retry": {
                "max_attempts": c.retry.max_attempts,
                "base_ms": ms(c.retry.base),
                "max_delay_ms": ms(c.retry.max_delay),
            },
            "attempt_timeout_ms": ms(c.attempt_timeout),
            "call_timeout_ms": ms(c.call_timeout),
            "token_ttl_ms": ms(c.token_ttl),
            "bulkhead": {
                "max_concurrent": c.bulkhead.max_concurrent,
                "max_wait_ms": ms(c.bulkhead.max_wait),
            },
        },
        "database_pool": {
            "max_size": pool.max_size,
            "wait_ms": ms(pool.wait),
            "connect_ms": ms(pool.connect),
            "query_ms": ms(pool.query),
        },
        "eligibility_ttl_ms": ms(ctx.settings.eligibility_ttl),
        "idempotency_ttl_ms": ms(ctx.settings.idempotency_ttl),
        "log_redaction": true,
    });
    let hash = Sha256::digest(body.to_string().as_bytes());
    body["secret"] = json!(format!("[redacted: {} bytes]", ctx.settings.secret.len()));
    body["hash"] = json!(hash.iter().map(|b| format!("{b:02x}")).collect::<String>());
    axum::Json(body)
}

/// `GET /admin/logs` (test mode): the mesh's log lines so far, redacted,
/// as `{"lines": [...]}`.
pub async fn logs(State(ctx): State<Arc<Ctx>>) -> axum::Json<Value> {
    axum::Json(json!({"lines": ctx.book.lines()}))
}

/// `POST /admin/faults`: replaces the plan of the plan's tenant (or the
/// one for every tenant), leaving other tenants' plans alone: tests on a
/// shared deployment fault their own tenant without disturbing each other.
pub async fn set_faults(
    State(ctx): State<Arc<Ctx>>,
    axum::Json(plan): axum::Json<FaultPlan>,
) -> axum::Json<FaultPlan> {
    let mut plans = ctx.faults.lock().unwrap_or_else(PoisonError::into_inner);
    plans.retain(|p| p.tenant != plan.tenant);
    plans.push(plan.clone());
    axum::Json(plan)
}

/// `GET /admin/faults`: the plans in force.
pub async fn get_faults(State(ctx): State<Arc<Ctx>>) -> axum::Json<Vec<FaultPlan>> {
    axum::Json(
        ctx.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    )
}

/// Which plans `DELETE /admin/faults` removes.
#[derive(Debug, Default, Deserialize)]
pub struct ClearFaults {
    /// Only this tenant's (all plans when absent).
    pub tenant: Option<String>,
}

/// `DELETE /admin/faults[?tenant=T]`: no faults (for `T`).
pub async fn clear_faults(
    State(ctx): State<Arc<Ctx>>,
    axum::extract::Query(q): axum::extract::Query<ClearFaults>,
) -> StatusCode {
    let mut plans = ctx.faults.lock().unwrap_or_else(PoisonError::into_inner);
    match q.tenant {
        Some(t) => plans.retain(|p| p.tenant.as_deref() != Some(t.as_str())),
        None => plans.clear(),
    }
    StatusCode::NO_CONTENT
}

/// A patient copy sent by the API (`POST /patients/sync`).
#[derive(Debug, Deserialize)]
pub struct PatientSync {
    /// The API's patient id.
    pub patient_id: String,
    /// The record.
    pub record: Value,
}

/// `POST /patients/sync` of a service that holds patient data: upserts its
/// copy.
pub async fn sync_patient(
    State(ctx): State<Arc<Ctx>>,
    axum::Extension(caller): axum::Extension<Caller>,
    axum::Json(sync): axum::Json<PatientSync>,
) -> ApiResult<axum::Json<Value>> {
    let sql = format!(
        "INSERT INTO {}.patients (tenant, patient_id, record) VALUES ($1, $2, $3)
         ON CONFLICT (tenant, patient_id) DO UPDATE SET record = EXCLUDED.record, synced_at = now()",
        ctx.service.schema()
    );
    ctx.db
        .execute(
            &sql,
            &[&caller.tenant, &sync.patient_id, &sync.record.to_string()],
        )
        .await?;
    Ok(axum::Json(
        json!({"service": ctx.service.name(), "patient_id": sync.patient_id, "synced": true}),
    ))
}

/// Reads a JSON text column.
pub fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// The request's `Idempotency-Key` header.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// For a create carrying idempotency key `key`: holds the key for `new_id`
/// and answers `None` (go ahead), or answers the resource the key's first
/// create made, as `load` reads it (waiting up to half a second while that
/// create is still writing it; `409` after that).
pub async fn replay<F, Fut>(
    ctx: &Ctx,
    scope: &str,
    tenant: &str,
    key: Option<&str>,
    new_id: &str,
    load: F,
) -> ApiResult<Option<Value>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ApiResult<Option<Value>>>,
{
    let Some(key) = key else {
        return Ok(None);
    };
    let ttl = ctx.settings.idempotency_ttl;
    let Some(first) = ctx
        .cache
        .idempotent(scope, tenant, key, new_id, ttl)
        .await?
    else {
        return Ok(None);
    };
    for _ in 0..20 {
        if let Some(mut found) = load(first.clone()).await? {
            found["replayed"] = json!(true);
            return Ok(Some(found));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "a create with this idempotency key is still in progress",
    ))
}

/// Marks row `id` of `table` (with `status` and `cancelled_at` columns)
/// cancelled for the caller's tenant; cancelling twice is fine; `404` naming `what`
/// when the tenant has no such row.
pub async fn mark_cancelled(
    ctx: &Ctx,
    table: &str,
    what: &str,
    id: &str,
    caller: &Caller,
) -> ApiResult<()> {
    let sql = format!(
        "UPDATE {table} SET status = 'cancelled', cancelled_at = COALESCE(cancelled_at, now())
         WHERE id = $1 AND tenant = $2"
    );
    if ctx.db.execute(&sql, &[&id, &caller.tenant]).await? == 0 {
        return Err(ApiError::not_found(format!("{what} {id}")));
    }
    tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, "{what} {id} cancelled");
    Ok(())
}
