//! The compliance monitor's PHI scanner (`POST /phi/scan`, the `phi`
//! library) and the violations it and the services' log redaction found
//! (`POST`/`GET /violations`). Each violation opens an incident
//! ([`crate::incidents`]); nothing here keeps PHI: kinds and redacted
//! excerpts only.

use std::sync::Arc;

use crate::json::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::wire::{ViolationRecorded, ViolationReport};
use crate::auth::Caller;
use crate::ctx::Ctx;
use crate::error::ApiResult;

/// `POST /phi/scan`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ScanRequest {
    /// The text to scan.
    text: String,
    /// Where the text came from (recorded with a violation).
    #[serde(default)]
    source: Option<String>,
    /// What the text is: `response` (a response body), `log`, or a scan.
    #[serde(default)]
    channel: Option<String>,
}

/// `POST /phi/scan` answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Scanned {
    /// Any PHI found.
    pub phi_found: bool,
    /// Where, and what kind.
    pub findings: Vec<Finding>,
    /// The text with each finding replaced by its kind.
    pub redacted: String,
    /// The violation recorded, when PHI was found.
    pub violation_id: Option<i64>,
    /// The incident opened, when PHI was found.
    pub incident_id: Option<i64>,
}

/// One finding of a scan.
#[derive(Debug, Serialize, ToSchema)]
pub struct Finding {
    /// Its kind (`SSN`, `NAME`, `DATE`, …).
    pub kind: String,
    /// Byte offset of its start.
    pub start: usize,
    /// Byte offset past its end.
    pub end: usize,
    /// `canary` (a registered synthetic value) or `pattern`.
    #[schema(value_type = String)]
    pub via: crate::states::FoundVia,
}

/// `POST /phi/scan`: scans a text; PHI found is a violation and opens an
/// incident.
#[utoipa::path(
    post,
    path = "/phi/scan",
    request_body = ScanRequest,
    responses((status = 200, description = "the findings", body = Scanned))
)]
pub(crate) async fn scan(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(r): Json<ScanRequest>,
) -> ApiResult<Json<Scanned>> {
    // Scanning is linear but a body may be megabytes: off the runtime's
    // threads, so one large scan does not stall other requests.
    let text = r.text.clone();
    let (findings, redacted) = tokio::task::spawn_blocking(move || {
        let findings = phi::scan(&text);
        let redacted = phi::redact(&text);
        (findings, redacted)
    })
    .await
    .map_err(|e| crate::error::ApiError::internal("the PHI scan", e))?;
    let list = findings
        .iter()
        .map(|f| Finding {
            kind: f.kind.label().to_string(),
            start: f.span.start,
            end: f.span.end,
            via: f.via.into(),
        })
        .collect();
    let mut violation = None;
    let mut incident = None;
    if !findings.is_empty() {
        let mut kinds: Vec<&str> = findings.iter().map(|f| f.kind.label()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let source = r.source.clone().unwrap_or_else(|| caller.source.clone());
        let channel = r.channel.as_deref().unwrap_or("scan");
        let id = crate::compliance::incidents::insert_violation(
            &ctx,
            &caller,
            &source,
            channel,
            &kinds.join(","),
            &redacted,
        )
        .await?;
        let code = crate::compliance::incidents::violation_code(channel);
        let summary = format!("{source}: {code} ({})", kinds.join(", "));
        incident = Some(
            crate::compliance::incidents::open(
                &ctx,
                &caller,
                &caller.request_id,
                code,
                &kinds,
                Some(id),
                &summary,
            )
            .await?,
        );
        violation = Some(id);
    }
    Ok(Json(Scanned {
        phi_found: !findings.is_empty(),
        findings: list,
        redacted,
        violation_id: violation,
        incident_id: incident,
    }))
}

/// `POST /violations`: records a violation a service found (its log
/// redaction) and opens an incident.
#[utoipa::path(
    post,
    path = "/violations",
    request_body = ViolationReport,
    responses((status = 201, description = "recorded; an incident opened", body = ViolationRecorded))
)]
pub(crate) async fn report(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(r): Json<ViolationReport>,
) -> ApiResult<(StatusCode, Json<ViolationRecorded>)> {
    let id = crate::compliance::incidents::insert_violation(
        &ctx,
        &caller,
        &r.source,
        &r.channel,
        &r.kinds.join(","),
        &r.excerpt,
    )
    .await?;
    let kinds: Vec<&str> = r.kinds.iter().map(String::as_str).collect();
    let violation = crate::compliance::incidents::violation_code(&r.channel);
    let summary = format!("{} reported {violation}: {}", r.source, r.excerpt);
    let incident = crate::compliance::incidents::open(
        &ctx,
        &caller,
        &caller.request_id,
        violation,
        &kinds,
        Some(id),
        &summary,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(ViolationRecorded {
            violation_id: id,
            incident_id: incident,
        }),
    ))
}

/// `GET /violations?source=…`.
#[derive(Debug, Deserialize)]
pub(crate) struct ViolationQuery {
    source: Option<String>,
}

/// `GET /violations` answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Violations {
    /// The caller's tenant.
    pub tenant: String,
    /// In the order recorded (at most 10 000).
    pub violations: Vec<Violation>,
}

/// One violation: kinds and a redacted excerpt, never the PHI.
#[derive(Debug, Serialize, ToSchema)]
pub struct Violation {
    /// Its id.
    pub id: i64,
    /// The service it was found in.
    pub source: String,
    /// `log`, `response`, `scan`, `audit`, `disclosure`, …
    pub channel: String,
    /// The PHI kinds found.
    pub kinds: Vec<String>,
    /// A redacted excerpt.
    pub excerpt: String,
    /// The request it was found in.
    pub request_id: Option<String>,
}

/// `GET /violations`.
#[utoipa::path(
    get,
    path = "/violations",
    params(("source" = Option<String>, Query, description = "one service's")),
    responses((status = 200, description = "the tenant's violations", body = Violations))
)]
pub(crate) async fn list(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Query(q): Query<ViolationQuery>,
) -> ApiResult<Json<Violations>> {
    let rows = ctx
        .db
        .query(
            "SELECT id, source, channel, kinds, excerpt, request_id FROM compliance.violations
             WHERE tenant = $1 AND ($2::text IS NULL OR source = $2) ORDER BY id LIMIT 10000",
            &[&caller.tenant, &q.source],
        )
        .await?;
    let violations = rows
        .iter()
        .map(|r| Violation {
            id: r.get(0),
            source: r.get(1),
            channel: r.get(2),
            kinds: r
                .get::<_, String>(3)
                .split(',')
                .map(str::to_string)
                .collect(),
            excerpt: r.get(4),
            request_id: r.get(5),
        })
        .collect();
    Ok(Json(Violations {
        tenant: caller.tenant,
        violations,
    }))
}
