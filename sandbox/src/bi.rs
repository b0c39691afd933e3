//! business-intelligence: analytics events in, aggregates per tenant and
//! metric out.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::service::{ApiError, ApiResult, Caller, Ctx};

pub(crate) fn migrations() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS bi.events (
            id BIGSERIAL PRIMARY KEY,
            tenant TEXT NOT NULL,
            metric TEXT NOT NULL,
            value DOUBLE PRECISION NOT NULL,
            dimensions TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL DEFAULT now())"
            .to_string(),
        "CREATE INDEX IF NOT EXISTS events_metric ON bi.events (tenant, metric)".to_string(),
    ]
}

pub(crate) fn routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/events", post(ingest))
        .route("/aggregates", get(aggregates))
}

/// One event (the `AnalyticsEvent` fixture's shape; extra fields ignored).
#[derive(Debug, Deserialize)]
struct Event {
    metric: String,
    value: f64,
    /// When given, must be the caller's tenant.
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    dimensions: Value,
}

#[derive(Debug, Deserialize)]
struct Batch {
    events: Vec<Event>,
}

async fn ingest(
    State(ctx): State<Arc<Ctx>>,
    Extension(caller): Extension<Caller>,
    Json(batch): Json<Batch>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    for (i, e) in batch.events.iter().enumerate() {
        let problem = if e.metric.is_empty() || e.metric.len() > 100 {
            Some("metric must be 1 to 100 characters")
        } else if !e.value.is_finite() {
            Some("value must be a finite number")
        } else if e.tenant.as_ref().is_some_and(|t| *t != caller.tenant) {
            Some("event belongs to another tenant")
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_event",
                format!("events[{i}]: {p}"),
            ));
        }
    }
    let stmt = ctx
        .db
        .prepare(
            "INSERT INTO bi.events (tenant, metric, value, dimensions) VALUES ($1, $2, $3, $4)",
        )
        .await?;
    for e in &batch.events {
        let dims = if e.dimensions.is_null() {
            "{}".to_string()
        } else {
            phi::redact(&e.dimensions.to_string())
        };
        ctx.db
            .execute(&stmt, &[&caller.tenant, &e.metric, &e.value, &dims])
            .await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"ingested": batch.events.len()})),
    ))
}

#[derive(Debug, Deserialize)]
struct AggQuery {
    metric: Option<String>,
}

async fn aggregates(
    State(ctx): State<Arc<Ctx>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<AggQuery>,
) -> ApiResult<Json<Value>> {
    let rows = ctx
        .db
        .query(
            "SELECT metric, count(*), sum(value), avg(value), min(value), max(value)
             FROM bi.events WHERE tenant = $1 AND ($2::text IS NULL OR metric = $2)
             GROUP BY metric ORDER BY metric",
            &[&caller.tenant, &q.metric],
        )
        .await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "metric": r.get::<_, String>(0),
                "count": r.get::<_, i64>(1),
                "sum": r.get::<_, f64>(2),
                "avg": r.get::<_, f64>(3),
                "min": r.get::<_, f64>(4),
                "max": r.get::<_, f64>(5),
            })
        })
        .collect();
    Ok(Json(json!({"tenant": caller.tenant, "aggregates": list})))
}
