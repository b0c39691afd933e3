//! The endpoints every business service has besides its own: `/health`,
//! `/metrics` (Prometheus text) and `/config` (the effective
//! configuration, secrets redacted, hashed).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::ctx::Ctx;

/// A service's `/health` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// The service's name.
    pub service: String,
    /// `healthy`, `degraded` (the API: a dependency is down or behind a
    /// breaker that is not closed) or `unhealthy` (its own storage is down).
    pub status: String,
    /// `up` or `down`.
    pub database: String,
    /// `up` or `down`.
    pub redis: String,
    /// The API only: each dependency's probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<std::collections::BTreeMap<String, Dependency>>,
}

/// One dependency in the API's `/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dependency {
    /// `healthy`, `unhealthy` or `unreachable`.
    pub status: String,
    /// Where it is reached.
    pub address: Option<String>,
    /// Its breaker's state (`closed`, `open`, `half_open`).
    pub circuit_breaker: Option<String>,
}

impl Health {
    /// The answer for storage `db` and `redis` up or down; `503` when
    /// either is down.
    pub fn answer(
        service: crate::service::Service,
        db: bool,
        redis: bool,
        dependencies: Option<std::collections::BTreeMap<String, Dependency>>,
    ) -> Response {
        let degraded = dependencies.as_ref().is_some_and(|d| {
            d.values()
                .any(|d| d.status != "healthy" || d.circuit_breaker.as_deref() != Some("closed"))
        });
        let status = match (db && redis, degraded) {
            (false, _) => "unhealthy",
            (true, true) => "degraded",
            (true, false) => "healthy",
        };
        let up = |b: bool| if b { "up" } else { "down" }.to_string();
        let code = if db && redis {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = Health {
            service: service.name().to_string(),
            status: status.to_string(),
            database: up(db),
            redis: up(redis),
            dependencies,
        };
        (code, axum::Json(body)).into_response()
    }
}

/// `GET /health` of a business service: its database and Redis.
#[utoipa::path(
    get,
    path = "/health",
    responses(
        (status = 200, description = "storage up", body = Health),
        (status = 503, description = "storage down", body = Health),
    )
)]
pub async fn health(State(ctx): State<Arc<Ctx>>) -> Response {
    let (db, redis) = storage_health(&ctx).await;
    Health::answer(ctx.service, db, redis, None)
}

/// Is the database up, is Redis up?
pub async fn storage_health(ctx: &Ctx) -> (bool, bool) {
    let db = ctx.db.ping(Duration::from_secs(2)).await;
    let redis = ctx.cache.ping().await;
    (db, redis)
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(
    get,
    path = "/metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String))
)]
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
#[utoipa::path(
    get,
    path = "/config",
    responses((status = 200, description = "the effective configuration, secret redacted, hashed", body = EffectiveConfig))
)]
pub async fn config(State(ctx): State<Arc<Ctx>>) -> axum::Json<EffectiveConfig> {
    use sha2::{Digest, Sha256};
    let c = ctx.client.config();
    let ms = |d: Duration| d.as_millis() as u64;
    let pool = ctx.db.config();
    let settings = Settings {
        service: ctx.service.name().to_string(),
        schema: ctx.service.schema().to_string(),
        tls: ctx.client.scheme() == "https",
        client: ClientSettings {
            breaker: BreakerSettings {
                window_size: c.breaker.window_size,
                failure_rate_threshold: c.breaker.failure_rate_threshold,
                minimum_calls: c.breaker.minimum_calls,
                open_wait_ms: ms(c.breaker.open_wait),
                half_open_calls: c.breaker.half_open_calls,
            },
            retry: RetrySettings {
                max_attempts: c.retry.max_attempts,
                base_ms: ms(c.retry.base),
                max_delay_ms: ms(c.retry.max_delay),
            },
            attempt_timeout_ms: ms(c.attempt_timeout),
            call_timeout_ms: ms(c.call_timeout),
            token_ttl_ms: ms(c.token_ttl),
            bulkhead: BulkheadSettings {
                max_concurrent: c.bulkhead.max_concurrent,
                max_wait_ms: ms(c.bulkhead.max_wait),
            },
        },
        database_pool: PoolSettings {
            max_size: pool.max_size,
            wait_ms: ms(pool.wait),
            connect_ms: ms(pool.connect),
            query_ms: ms(pool.query),
        },
        server: ServerSettings {
            max_connections: ctx.settings.server.max_connections,
            header_read_timeout_ms: ms(ctx.settings.server.header_read_timeout),
            max_body_bytes: ctx.settings.server.max_body_bytes,
        },
        eligibility_ttl_ms: ms(ctx.settings.eligibility_ttl),
        idempotency_ttl_ms: ms(ctx.settings.idempotency_ttl),
        log_redaction: true,
        rate_limit: ctx.settings.rate_limit.as_ref().map(|l| l.limit()),
        revocation_bound_ms: crate::gate::sessions::REVOCATION_BOUND.as_millis() as u64,
        schema_version: ctx.settings.schema_version,
    };
    let text = serde_json::to_string(&settings).unwrap_or_default();
    let hash = Sha256::digest(text.as_bytes());
    axum::Json(EffectiveConfig {
        settings,
        secret: format!("[redacted: {} bytes]", ctx.settings.secret.len()),
        hash: hash.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// `GET /config` answered: the settings, the secret's length, the hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct EffectiveConfig {
    /// The settings.
    #[serde(flatten)]
    pub settings: Settings,
    /// `[redacted: N bytes]`.
    pub secret: String,
    /// SHA-256 of the settings' JSON, hex.
    pub hash: String,
}

/// A service's effective settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct Settings {
    /// The service.
    pub service: String,
    /// Its PostgreSQL schema.
    pub schema: String,
    /// It serves and calls over HTTPS.
    pub tls: bool,
    /// Its outgoing calls.
    pub client: ClientSettings,
    /// Its connection pool.
    pub database_pool: PoolSettings,
    /// Its HTTP server's limits.
    pub server: ServerSettings,
    /// How long an eligibility answer is cached.
    pub eligibility_ttl_ms: u64,
    /// How long an idempotency key is held.
    pub idempotency_ttl_ms: u64,
    /// Log lines are PHI-redacted (always).
    pub log_redaction: bool,
    /// Its per-tenant rate limit, if it has one (the API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::limits::RateLimit>,
    /// How long a logout or role change may take to reach it (the target
    /// file's `auth.revocation_bound_ms`).
    pub revocation_bound_ms: u64,
    /// Its schema's version (its latest migration applied).
    pub schema_version: u32,
}

/// The client's settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientSettings {
    /// Each target's breaker.
    pub breaker: BreakerSettings,
    /// Retries.
    pub retry: RetrySettings,
    /// One attempt's timeout.
    pub attempt_timeout_ms: u64,
    /// The whole call's.
    pub call_timeout_ms: u64,
    /// The tokens' validity.
    pub token_ttl_ms: u64,
    /// Each target's bulkhead.
    pub bulkhead: BulkheadSettings,
}

/// A circuit breaker's settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerSettings {
    /// Calls in the window.
    pub window_size: usize,
    /// Failure rate (percent) that opens it.
    pub failure_rate_threshold: f64,
    /// Calls before the rate counts.
    pub minimum_calls: usize,
    /// How long it stays open.
    pub open_wait_ms: u64,
    /// Probes while half-open.
    pub half_open_calls: usize,
}

/// Retry settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetrySettings {
    /// Attempts per call.
    pub max_attempts: u32,
    /// The first backoff.
    pub base_ms: u64,
    /// The longest backoff.
    pub max_delay_ms: u64,
}

/// A bulkhead's settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkheadSettings {
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// How long a call waits for a slot.
    pub max_wait_ms: u64,
}

/// An HTTP server's limits.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerSettings {
    /// Connections held at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// How long a client may take to send its request head.
    pub header_read_timeout_ms: u64,
    /// The largest request body (`413` beyond).
    pub max_body_bytes: usize,
}

/// A connection pool's settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolSettings {
    /// Connections at most.
    pub max_size: usize,
    /// How long a request waits for one.
    pub wait_ms: u64,
    /// How long connecting may take.
    pub connect_ms: u64,
    /// How long a statement may take.
    pub query_ms: u64,
}
