//! The endpoints every business service has besides its own: `/health`,
//! `/metrics` (Prometheus text) and `/config` (the effective
//! configuration, secrets redacted, hashed).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::ctx::Ctx;

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
        "schema": ctx.service.schema(),
        "tls": ctx.client.scheme() == "https",
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
