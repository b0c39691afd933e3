//! business-intelligence: analytics events in, aggregates per tenant and
//! metric out.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::json::Json;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::ctx::Ctx;
use crate::error::{ApiError, ApiResult};

mod wire;

pub use wire::{Batch, Event, Ingested};

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
    use crate::auth::{API, Access, MESH, Role::*, allow};
    static INGEST: Access = Access {
        services: MESH,
        roles: &[Admin],
    };
    static READ: Access = Access {
        services: API,
        roles: &[BillingClerk, ComplianceOfficer, Admin],
    };
    Router::new()
        .merge(allow(Router::new().route("/events", post(ingest)), &INGEST))
        .merge(allow(
            Router::new().route("/aggregates", get(aggregates)),
            &READ,
        ))
}

impl Event {
    /// `metric` = `value`, of the caller's tenant, without dimensions.
    pub fn of(metric: &str, value: f64) -> Event {
        Event {
            metric: metric.to_string(),
            value,
            tenant: None,
            dimensions: Value::Null,
        }
    }
}

/// Events accepted in one batch.
pub const MAX_BATCH: usize = 1000;

/// `POST /events`: a batch of at most [`MAX_BATCH`] events.
#[utoipa::path(
    post,
    path = "/events",
    request_body = Batch,
    responses((status = 201, description = "stored", body = Ingested))
)]
async fn ingest(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(batch): Json<Batch>,
) -> ApiResult<(StatusCode, Json<Ingested>)> {
    if batch.events.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{} events in one batch; at most {MAX_BATCH} are accepted",
                batch.events.len()
            ),
        ));
    }
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
    // One row per event, committed with the events other requests send
    // meanwhile (one statement and one commit for all).
    const INSERT: &str = "INSERT INTO bi.events (tenant, metric, value, dimensions)
             SELECT t, m, v::float8, d FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                 AS e(t, m, v, d)";
    let rows = batch
        .events
        .iter()
        .map(|e| {
            let dimensions = if e.dimensions.is_null() {
                "{}".to_string()
            } else {
                phi::redact(&e.dimensions.to_string())
            };
            vec![
                Some(caller.tenant.clone()),
                Some(e.metric.clone()),
                // Finite (checked above); Display is the shortest text that
                // reads back as the same f64.
                Some(e.value.to_string()),
                Some(dimensions),
            ]
        })
        .collect();
    ctx.db.write_grouped_rows(INSERT, rows).await?;
    let ingested = batch.events.len();
    Ok((StatusCode::CREATED, Json(Ingested { ingested })))
}

#[derive(Debug, Deserialize)]
struct AggQuery {
    metric: Option<String>,
}

/// `GET /aggregates`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Aggregates {
    /// The caller's tenant.
    pub tenant: String,
    /// One per metric, by name.
    pub aggregates: Vec<Aggregate>,
}

/// One metric's figures.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Aggregate {
    /// The metric.
    pub metric: String,
    /// Events.
    pub count: i64,
    /// Sum of values.
    pub sum: f64,
    /// Mean value.
    pub avg: f64,
    /// Least value.
    pub min: f64,
    /// Greatest value.
    pub max: f64,
}

/// `GET /aggregates`.
#[utoipa::path(
    get,
    path = "/aggregates",
    params(("metric" = Option<String>, Query, description = "one metric")),
    responses((status = 200, description = "the tenant's aggregates", body = Aggregates))
)]
async fn aggregates(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Query(q): Query<AggQuery>,
) -> ApiResult<Json<Aggregates>> {
    let rows = ctx
        .db
        .query(
            "SELECT metric, count(*), sum(value), avg(value), min(value), max(value)
             FROM bi.events WHERE tenant = $1 AND ($2::text IS NULL OR metric = $2)
             GROUP BY metric ORDER BY metric",
            &[&caller.tenant, &q.metric],
        )
        .await?;
    let aggregates = rows
        .iter()
        .map(|r| Aggregate {
            metric: r.get(0),
            count: r.get(1),
            sum: r.get(2),
            avg: r.get(3),
            min: r.get(4),
            max: r.get(5),
        })
        .collect();
    Ok(Json(Aggregates {
        tenant: caller.tenant,
        aggregates,
    }))
}

/// The service's routes, documented.
#[derive(utoipa::OpenApi)]
#[openapi(paths(ingest, aggregates))]
pub(crate) struct Doc;
