//! The compliance monitor's violation workflow (seed 000 scenario 3): every
//! violation it records opens an **incident** with a severity, notifies
//! business intelligence (a `compliance_incidents` event it counts; sent
//! again until it arrives, see [`crate::compliance::notifier`]), and
//! moves open → acknowledged → resolved by a compliance officer; each step
//! is written to the audit trail.
//!
//! Violations come from the log pipeline (`phi_in_log`), a scan of a
//! response (`phi_in_response`), the API's refusal of another tenant's
//! patient (`cross_tenant_access`), a disclosure with more fields than its
//! purpose needs (`minimum_necessary`, `POST /disclosures`) and a request
//! whose audit trail has a gap (`missing_audit_event`, `POST /audit/verify`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::json::Json;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::ctx::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::service::Service;
use crate::states::{IncidentState, Severity, ViolationCode};

pub(crate) fn migrations() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS compliance.incidents (
            id BIGSERIAL PRIMARY KEY,
            tenant TEXT NOT NULL,
            violation TEXT NOT NULL,
            severity TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open',
            violation_id BIGINT,
            request_id TEXT,
            summary TEXT NOT NULL,
            notified BOOLEAN NOT NULL DEFAULT false,
            opened_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            acknowledged_at TIMESTAMPTZ,
            acknowledged_by TEXT,
            resolved_at TIMESTAMPTZ,
            resolved_by TEXT,
            resolution TEXT)"
            .to_string(),
        "CREATE INDEX IF NOT EXISTS incidents_tenant ON compliance.incidents (tenant, status)"
            .to_string(),
    ]
}

pub(crate) fn routes() -> Router<Arc<Ctx>> {
    use crate::auth::{API, Access, MESH, Role::*, allow};
    static REVIEW: Access = Access {
        services: MESH,
        roles: &[ComplianceOfficer, Admin],
    };
    static HANDLE: Access = Access {
        services: API,
        roles: &[ComplianceOfficer, Admin],
    };
    Router::new()
        .merge(allow(
            Router::new()
                .route("/incidents", get(list))
                .route("/disclosures", post(disclosure)),
            &REVIEW,
        ))
        .merge(allow(
            Router::new()
                .route("/incidents/{id}/acknowledge", post(acknowledge))
                .route("/incidents/{id}/resolve", post(resolve)),
            &HANDLE,
        ))
}

/// Records a violation (its excerpt redacted again: whatever a caller
/// sends, no PHI is kept); returns its id.
pub(crate) async fn insert_violation(
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

/// The violation a report's channel stands for.
pub fn violation_code(channel: &str) -> ViolationCode {
    match channel {
        "log" => ViolationCode::PhiInLog,
        "response" => ViolationCode::PhiInResponse,
        "access" => ViolationCode::CrossTenantAccess,
        "disclosure" => ViolationCode::MinimumNecessary,
        "audit" => ViolationCode::MissingAuditEvent,
        _ => ViolationCode::PhiDetected,
    }
}

/// How bad a violation is: another tenant reached, or an SSN out, is
/// critical; other PHI out is high; a gap in the trail or an excess field
/// is medium.
pub fn severity(violation: ViolationCode, kinds: &[&str]) -> Severity {
    use ViolationCode::*;
    match violation {
        CrossTenantAccess => Severity::Critical,
        _ if kinds.contains(&phi::Kind::Ssn.label()) => Severity::Critical,
        PhiInLog | PhiInResponse | PhiDetected => Severity::High,
        MinimumNecessary if kinds.iter().any(|k| !k.is_empty()) => Severity::High,
        _ => Severity::Medium,
    }
}

/// Opens an incident for a recorded violation about request `about`
/// (the request that broke the rule), audits the opening and
/// notifies business intelligence (`notified` says whether it arrived; one
/// that did not is sent again by the monitor's notifier,
/// [`crate::compliance::notifier`]). Returns the incident id.
pub(crate) async fn open(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    about: &str,
    violation: ViolationCode,
    kinds: &[&str],
    violation_id: Option<i64>,
    summary: &str,
) -> Result<i64, ApiError> {
    let severity = severity(violation, kinds);
    let summary = phi::redact(summary);
    let row = ctx
        .db
        .query_one(
            "INSERT INTO compliance.incidents (tenant, violation, severity, violation_id, request_id, summary)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[
                &caller.tenant,
                &violation.as_str(),
                &severity.as_str(),
                &violation_id,
                &about,
                &summary,
            ],
        )
        .await?;
    let id: i64 = row.get(0);
    audit(
        ctx,
        caller,
        id,
        "incident_opened",
        json!({"violation": violation, "severity": severity}),
    )
    .await?;
    let notified = crate::compliance::notifier::notify(
        ctx,
        &caller.tenant,
        &caller.request_id,
        id,
        violation.as_str(),
        severity.as_str(),
    )
    .await;
    if !notified && let Some(notifier) = &ctx.unnotified {
        // Sent again until analytics takes it.
        let _ = notifier.send(id);
    }
    tracing::warn!(tenant = %caller.tenant, request_id = %caller.request_id, incident = id, violation = %violation, severity = %severity, "incident opened");
    Ok(id)
}

/// One step of an incident, into the audit trail (kind `incident`).
async fn audit(
    ctx: &Ctx,
    caller: &Caller,
    incident: i64,
    event_type: &str,
    detail: Value,
) -> Result<(), ApiError> {
    let mut detail = detail;
    detail["incident_id"] = json!(incident);
    detail["by"] = json!(actor(caller));
    ctx.db
        .execute(
            "INSERT INTO compliance.audit_events (tenant, request_id, kind, source, event_type, detail)
             VALUES ($1, $2, $6, $3, $4, $5)",
            &[
                &caller.tenant,
                &caller.request_id,
                &caller.source,
                &event_type,
                &phi::redact(&detail.to_string()),
                &crate::states::AuditKind::Incident.as_str(),
            ],
        )
        .await?;
    Ok(())
}

/// Who acted: the role of a person, else the calling service.
fn actor(caller: &Caller) -> String {
    match caller.role {
        Some(role) => format!("{}:{role}", caller.source),
        None => caller.source.clone(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    status: Option<String>,
    violation: Option<String>,
}

/// `GET /incidents`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Incidents {
    /// The caller's tenant.
    pub tenant: String,
    /// In the order opened (at most 10 000).
    pub incidents: Vec<Incident>,
}

/// One incident.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Incident {
    /// Its id.
    pub id: i64,
    /// The violation (`phi_in_log`, `minimum_necessary`, …).
    pub violation: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// `open`, `acknowledged` or `resolved`.
    pub status: String,
    /// The violation recorded with it.
    pub violation_id: Option<i64>,
    /// The request it is about.
    pub request_id: Option<String>,
    /// What happened, redacted.
    pub summary: String,
    /// Business intelligence was told.
    pub notified: bool,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// How, redacted.
    pub resolution: Option<String>,
}

/// An incident's step taken.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Stepped {
    /// The incident.
    pub incident_id: i64,
    /// Its status now.
    pub status: String,
    /// Who took the step.
    pub by: String,
}

/// `POST /disclosures` answered.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DisclosureChecked {
    /// The payload's fields beyond the recipient's purpose (empty: none).
    pub excess_fields: Vec<String>,
    /// The violation recorded, when there were any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violation_id: Option<i64>,
    /// The incident opened, when there were any.
    pub incident_id: Option<i64>,
}

/// `GET /incidents?status=…&violation=…` (the caller's tenant).
#[utoipa::path(
    get,
    path = "/incidents",
    params(
        ("status" = Option<String>, Query, description = "open, acknowledged or resolved"),
        ("violation" = Option<String>, Query, description = "one kind of violation"),
    ),
    responses((status = 200, description = "the tenant's incidents", body = Incidents))
)]
pub(crate) async fn list(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Incidents>> {
    let rows = ctx
        .db
        .query(
            "SELECT id, violation, severity, status, violation_id, request_id, summary, notified,
                    acknowledged_by, resolved_by, resolution
             FROM compliance.incidents
             WHERE tenant = $1 AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR violation = $3)
             ORDER BY id LIMIT 10000",
            &[&caller.tenant, &q.status, &q.violation],
        )
        .await?;
    let incidents = rows
        .iter()
        .map(|r| Incident {
            id: r.get(0),
            violation: r.get(1),
            severity: r.get(2),
            status: r.get(3),
            violation_id: r.get(4),
            request_id: r.get(5),
            summary: r.get(6),
            notified: r.get(7),
            acknowledged_by: r.get(8),
            resolved_by: r.get(9),
            resolution: r.get(10),
        })
        .collect();
    Ok(Json(Incidents {
        tenant: caller.tenant,
        incidents,
    }))
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct StepBody {
    #[serde(default)]
    note: Option<String>,
}

/// `POST /incidents/{id}/acknowledge`: open → acknowledged (409 otherwise).
#[utoipa::path(
    post,
    path = "/incidents/{id}/acknowledge",
    responses((status = 200, description = "acknowledged", body = Stepped))
)]
pub(crate) async fn acknowledge(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<i64>,
    body: Option<axum::Json<StepBody>>,
) -> ApiResult<Json<Stepped>> {
    step(
        &ctx,
        &caller,
        id,
        &[IncidentState::Open],
        IncidentState::Acknowledged,
        body,
    )
    .await
}

/// `POST /incidents/{id}/resolve`: open or acknowledged → resolved.
#[utoipa::path(
    post,
    path = "/incidents/{id}/resolve",
    responses((status = 200, description = "resolved", body = Stepped))
)]
pub(crate) async fn resolve(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<i64>,
    body: Option<axum::Json<StepBody>>,
) -> ApiResult<Json<Stepped>> {
    step(
        &ctx,
        &caller,
        id,
        &[IncidentState::Open, IncidentState::Acknowledged],
        IncidentState::Resolved,
        body,
    )
    .await
}

async fn step(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    id: i64,
    from: &[IncidentState],
    to: IncidentState,
    body: Option<axum::Json<StepBody>>,
) -> ApiResult<Json<Stepped>> {
    let note = body.and_then(|b| b.0.note).map(|n| phi::redact(&n));
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let by = actor(caller);
    let acknowledging = to == IncidentState::Acknowledged;
    let sql = if acknowledging {
        "UPDATE compliance.incidents SET status = $5, acknowledged_at = now(), acknowledged_by = $4
         WHERE id = $1 AND tenant = $2 AND status = ANY($3) RETURNING status"
    } else {
        "UPDATE compliance.incidents SET status = $6, resolved_at = now(), resolved_by = $4, resolution = $5
         WHERE id = $1 AND tenant = $2 AND status = ANY($3) RETURNING status"
    };
    let updated = if acknowledging {
        ctx.db
            .query_opt(sql, &[&id, &caller.tenant, &from, &by, &to.as_str()])
            .await?
    } else {
        ctx.db
            .query_opt(sql, &[&id, &caller.tenant, &from, &by, &note, &to.as_str()])
            .await?
    };
    if updated.is_none() {
        let current = ctx
            .db
            .query_opt(
                "SELECT status FROM compliance.incidents WHERE id = $1 AND tenant = $2",
                &[&id, &caller.tenant],
            )
            .await?
            .ok_or_else(|| ApiError::not_found(format!("incident {id}")))?;
        let status: String = current.get(0);
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "incident_state",
            format!("incident {id} is {status}; it cannot become {to}"),
        ));
    }
    audit(
        ctx,
        caller,
        id,
        &format!("incident_{to}"),
        json!({"note": note}),
    )
    .await?;
    Ok(Json(Stepped {
        incident_id: id,
        status: to.to_string(),
        by,
    }))
}

/// `POST /disclosures`: `{"recipient", "purpose", "payload"}`, a payload
/// about to be (or that was) sent. Fields beyond what the recipient's
/// purpose needs are a `minimum_necessary` violation and open an incident.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Disclosure {
    /// The receiving service (`business-intelligence`, a holder).
    recipient: String,
    /// Why it receives it.
    #[serde(default)]
    purpose: String,
    /// What it receives (a JSON object).
    #[schema(value_type = Object)]
    payload: Value,
}

/// What each recipient may receive: the holders as the API's patient sync
/// cuts it, analytics the claim metrics of seed 001.
fn allowed_fields(recipient: &str) -> Option<Vec<&'static str>> {
    if recipient == Service::BusinessIntelligence.name() {
        return Some(vec![
            "claim_id",
            "total_charge_cents",
            "payer_id",
            "place_of_service",
            "metric",
            "value",
            "dimensions",
            "timestamp",
            "tenant",
        ]);
    }
    crate::minimum_necessary::FIELDS_NEEDED
        .iter()
        .find(|(s, _)| s.name() == recipient)
        .map(|(_, f)| f.to_vec())
}

#[utoipa::path(
    post,
    path = "/disclosures",
    request_body = Disclosure,
    responses(
        (status = 200, description = "within the recipient's purpose", body = DisclosureChecked),
        (status = 201, description = "fields beyond it: a violation recorded, an incident opened", body = DisclosureChecked),
    )
)]
pub(crate) async fn disclosure(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(d): Json<Disclosure>,
) -> ApiResult<(StatusCode, Json<DisclosureChecked>)> {
    let Some(allowed) = allowed_fields(&d.recipient) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_recipient",
            format!("no disclosure policy for `{}`", d.recipient),
        ));
    };
    let Some(payload) = d.payload.as_object() else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_disclosure",
            "payload must be a JSON object",
        ));
    };
    let mut excess: Vec<&str> = payload
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    excess.sort_unstable();
    if excess.is_empty() {
        return Ok((
            StatusCode::OK,
            Json(DisclosureChecked {
                excess_fields: Vec::new(),
                violation_id: None,
                incident_id: None,
            }),
        ));
    }
    let kinds: Vec<&'static str> = {
        let mut k: Vec<&'static str> = phi::scan(&d.payload.to_string())
            .iter()
            .map(|f| f.kind.label())
            .collect();
        k.sort_unstable();
        k.dedup();
        k
    };
    let summary = format!(
        "{} received fields beyond its purpose ({}): {}",
        d.recipient,
        d.purpose,
        excess.join(", ")
    );
    let violation_id = insert_violation(
        &ctx,
        &caller,
        &caller.source,
        "disclosure",
        &kinds.join(","),
        &summary,
    )
    .await?;
    let incident = open(
        &ctx,
        &caller,
        &caller.request_id,
        ViolationCode::MinimumNecessary,
        &kinds,
        Some(violation_id),
        &summary,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(DisclosureChecked {
            excess_fields: excess.into_iter().map(str::to_string).collect(),
            violation_id: Some(violation_id),
            incident_id: Some(incident),
        }),
    ))
}

/// The incident already opened for `violation` on `request_id`, if any.
pub(crate) async fn existing(
    ctx: &Ctx,
    tenant: &str,
    violation: &str,
    request_id: &str,
) -> Result<Option<i64>, ApiError> {
    let row = ctx
        .db
        .query_opt(
            "SELECT id FROM compliance.incidents
             WHERE tenant = $1 AND violation = $2 AND request_id = $3
             ORDER BY id LIMIT 1",
            &[&tenant, &violation, &request_id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}
