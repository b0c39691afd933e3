//! compliance-monitor: the audit trail (service calls, saga events, sync
//! failures), queried by request id, tenant or patient; a PHI scanner (the
//! `phi` library); the violations it and the log redaction found.
//!
//! Nothing stored here holds PHI: details are redacted before they are
//! written, violations keep the kinds and a redacted excerpt.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::ctx::{Ctx, json_text};
use crate::error::{ApiError, ApiResult};
use crate::service::Service;

pub(crate) fn migrations() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS compliance.audit_events (
            id BIGSERIAL PRIMARY KEY,
            tenant TEXT NOT NULL,
            request_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            source TEXT NOT NULL,
            patient_id TEXT,
            saga_id TEXT,
            event_type TEXT,
            detail TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL DEFAULT now())"
            .to_string(),
        "CREATE INDEX IF NOT EXISTS audit_request ON compliance.audit_events (tenant, request_id)"
            .to_string(),
        "CREATE INDEX IF NOT EXISTS audit_patient ON compliance.audit_events (tenant, patient_id)"
            .to_string(),
        "CREATE TABLE IF NOT EXISTS compliance.violations (
            id BIGSERIAL PRIMARY KEY,
            tenant TEXT NOT NULL,
            source TEXT NOT NULL,
            channel TEXT NOT NULL,
            kinds TEXT NOT NULL,
            excerpt TEXT NOT NULL,
            request_id TEXT,
            at TIMESTAMPTZ NOT NULL DEFAULT now())"
            .to_string(),
        crate::store::patient_copies(Service::ComplianceMonitor),
    ]
}

pub(crate) fn routes() -> Router<Arc<Ctx>> {
    use crate::auth::{API, Access, MESH, Role::*, allow};
    static RECORD: Access = Access {
        services: MESH,
        roles: &[Admin],
    };
    static REVIEW: Access = Access {
        services: MESH,
        roles: &[ComplianceOfficer, Admin],
    };
    static READ: Access = Access {
        services: API,
        roles: &[ComplianceOfficer, Admin],
    };
    Router::new()
        .merge(allow(
            Router::new()
                .route("/audit/service-calls", post(service_call))
                .route("/audit/saga-events", post(saga_event))
                .route("/audit/sync-failures", post(sync_failure)),
            &RECORD,
        ))
        .merge(allow(Router::new().route("/audit", get(query)), &READ))
        .merge(allow(
            Router::new()
                .route("/phi/scan", post(scan))
                .route("/violations", get(violations).post(report_violation)),
            &REVIEW,
        ))
        .merge(crate::ctx::sync_routes())
}

async fn record(
    ctx: &Ctx,
    caller: &Caller,
    kind: &str,
    detail: &Value,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let text = |k: &str| detail.get(k).and_then(Value::as_str).map(str::to_string);
    let redacted = phi::redact(&detail.to_string());
    let row = ctx
        .db
        .query_one(
            "INSERT INTO compliance.audit_events
                (tenant, request_id, kind, source, patient_id, saga_id, event_type, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &caller.tenant,
                &caller.request_id,
                &kind,
                &caller.source,
                &text("patient_id"),
                &text("saga_id"),
                &text("event_type"),
                &redacted,
            ],
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"audit_id": row.get::<_, i64>(0)})),
    ))
}

async fn service_call(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(detail): Json<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    record(&ctx, &caller, "service_call", &detail).await
}

async fn saga_event(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(detail): Json<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if detail.get("event_type").and_then(Value::as_str).is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            "a saga event needs an event_type",
        ));
    }
    record(&ctx, &caller, "saga_event", &detail).await
}

async fn sync_failure(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(detail): Json<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    record(&ctx, &caller, "sync_failure", &detail).await
}

/// `GET /audit?request_id=…&patient_id=…&saga_id=…&kind=…` (the tenant is
/// the caller's).
#[derive(Debug, Deserialize)]
struct AuditQuery {
    request_id: Option<String>,
    patient_id: Option<String>,
    saga_id: Option<String>,
    kind: Option<String>,
}

async fn query(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    let rows = ctx
        .db
        .query(
            "SELECT id, request_id, kind, source, patient_id, saga_id, event_type, detail,
                    to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
             FROM compliance.audit_events
             WHERE tenant = $1
               AND ($2::text IS NULL OR request_id = $2)
               AND ($3::text IS NULL OR patient_id = $3)
               AND ($4::text IS NULL OR saga_id = $4)
               AND ($5::text IS NULL OR kind = $5)
             ORDER BY id LIMIT 10000",
            &[
                &caller.tenant,
                &q.request_id,
                &q.patient_id,
                &q.saga_id,
                &q.kind,
            ],
        )
        .await?;
    let events: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, i64>(0),
                "request_id": r.get::<_, String>(1),
                "kind": r.get::<_, String>(2),
                "source": r.get::<_, String>(3),
                "patient_id": r.get::<_, Option<String>>(4),
                "saga_id": r.get::<_, Option<String>>(5),
                "event_type": r.get::<_, Option<String>>(6),
                "detail": json_text(&r.get::<_, String>(7)),
                "at": r.get::<_, String>(8),
            })
        })
        .collect();
    Ok(Json(json!({"tenant": caller.tenant, "events": events})))
}

/// `POST /phi/scan`.
#[derive(Debug, Deserialize)]
struct ScanRequest {
    text: String,
    /// Where the text came from (recorded with a violation).
    #[serde(default)]
    source: Option<String>,
}

async fn scan(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(r): Json<ScanRequest>,
) -> ApiResult<Json<Value>> {
    let findings = phi::scan(&r.text);
    let redacted = phi::redact(&r.text);
    let list: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "kind": f.kind.label(),
                "start": f.span.start,
                "end": f.span.end,
                "via": match f.via { phi::Via::Canary => "canary", phi::Via::Pattern => "pattern" },
            })
        })
        .collect();
    let mut violation = Value::Null;
    if !findings.is_empty() {
        let mut kinds: Vec<&str> = findings.iter().map(|f| f.kind.label()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let source = r.source.clone().unwrap_or_else(|| caller.source.clone());
        violation = json!(
            insert_violation(&ctx, &caller, &source, "scan", &kinds.join(","), &redacted).await?
        );
    }
    Ok(Json(json!({
        "phi_found": !findings.is_empty(),
        "findings": list,
        "redacted": redacted,
        "violation_id": violation,
    })))
}

async fn insert_violation(
    ctx: &Ctx,
    caller: &Caller,
    source: &str,
    channel: &str,
    kinds: &str,
    excerpt: &str,
) -> Result<i64, ApiError> {
    // The excerpt is redacted again: whatever a caller sends, no PHI is kept.
    let excerpt = phi::redact(excerpt);
    let row = ctx
        .db
        .query_one(
            "INSERT INTO compliance.violations (tenant, source, channel, kinds, excerpt, request_id)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[
                &caller.tenant,
                &source,
                &channel,
                &kinds,
                &excerpt,
                &caller.request_id,
            ],
        )
        .await?;
    tracing::warn!(tenant = %caller.tenant, source = %source, channel = %channel, kinds = %kinds, "PHI violation recorded");
    Ok(row.get(0))
}

/// `POST /violations` (from a service's log redaction).
#[derive(Debug, Deserialize)]
struct ViolationReport {
    source: String,
    #[serde(default = "log_channel")]
    channel: String,
    kinds: Vec<String>,
    excerpt: String,
}

fn log_channel() -> String {
    "log".into()
}

async fn report_violation(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(r): Json<ViolationReport>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = insert_violation(
        &ctx,
        &caller,
        &r.source,
        &r.channel,
        &r.kinds.join(","),
        &r.excerpt,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"violation_id": id}))))
}

/// `GET /violations?source=…`.
#[derive(Debug, Deserialize)]
struct ViolationQuery {
    source: Option<String>,
}

async fn violations(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Query(q): Query<ViolationQuery>,
) -> ApiResult<Json<Value>> {
    let rows = ctx
        .db
        .query(
            "SELECT id, source, channel, kinds, excerpt, request_id FROM compliance.violations
             WHERE tenant = $1 AND ($2::text IS NULL OR source = $2) ORDER BY id LIMIT 10000",
            &[&caller.tenant, &q.source],
        )
        .await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            let kinds: String = r.get(3);
            json!({
                "id": r.get::<_, i64>(0),
                "source": r.get::<_, String>(1),
                "channel": r.get::<_, String>(2),
                "kinds": kinds.split(',').collect::<Vec<_>>(),
                "excerpt": r.get::<_, String>(4),
                "request_id": r.get::<_, Option<String>>(5),
            })
        })
        .collect();
    Ok(Json(json!({"tenant": caller.tenant, "violations": list})))
}
