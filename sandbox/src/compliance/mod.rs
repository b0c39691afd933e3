//! compliance-monitor: the audit trail (service calls, saga events, sync
//! failures, closed requests), queried by request id, tenant or patient,
//! and checked for completeness. Its PHI scanner and the violations are
//! in [`crate::violations`], incidents in [`crate::incidents`].
//!
//! Nothing stored here holds PHI: details are redacted before they are
//! written, violations keep the kinds and a redacted excerpt.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::json::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::client::{CallRecords, Records};
use crate::ctx::{Ctx, json_text};
use crate::error::{ApiError, ApiResult};
use crate::service::Service;
use crate::states::AuditKind;

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
    .into_iter()
    .chain(crate::compliance::incidents::migrations())
    .collect()
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
                .route("/audit/sync-failures", post(sync_failure))
                .route("/audit/request-closed", post(request_closed)),
            &RECORD,
        ))
        .merge(allow(
            Router::new().route("/audit/verify", post(verify)),
            &REVIEW,
        ))
        .merge(crate::compliance::incidents::routes())
        .merge(crate::compliance::access::routes())
        .merge(allow(
            Router::new()
                .route("/audit", get(query))
                .route("/audit/completeness", get(completeness)),
            &READ,
        ))
        .merge(allow(
            Router::new()
                .route("/phi/scan", post(violations::scan))
                .route(
                    "/violations",
                    get(violations::list).post(violations::report),
                ),
            &REVIEW,
        ))
        .merge(crate::ctx::sync_routes())
}

pub mod access;
pub(crate) mod incidents;
pub(crate) mod notifier;
pub(crate) mod violations;

mod wire;
pub use wire::{
    Recorded, RequestClosed, SagaDetails, SagaEventRecord, SyncFailure, ViolationReport,
};

/// A record kept as an audit row: its text is the row's detail, and these
/// ids (when it names them) are the row's columns it is queried by.
///
/// The detail is redacted as serialized and read back as a tree, whose
/// keys are in name order; the PHI scan reads a value in the context of
/// what precedes it. So every audited type (and every type it holds)
/// declares its fields in name order: its text is then the tree's text,
/// which the test `audited_records_serialize_as_their_sorted_tree` checks.
trait Audited: Serialize {
    /// The patient it concerns.
    fn patient_id(&self) -> Option<&str> {
        None
    }
    /// The saga it concerns.
    fn saga_id(&self) -> Option<&str> {
        None
    }
    /// A saga event's type.
    fn event_type(&self) -> Option<&str> {
        None
    }
}

impl Audited for crate::client::CallRecord {}

impl Audited for SagaEventRecord {
    fn patient_id(&self) -> Option<&str> {
        Some(&self.patient_id)
    }
    fn saga_id(&self) -> Option<&str> {
        Some(&self.saga_id)
    }
    fn event_type(&self) -> Option<&str> {
        Some(self.event_type.as_str())
    }
}

impl Audited for RequestClosed {
    fn patient_id(&self) -> Option<&str> {
        Some(&self.patient_id)
    }
    fn saga_id(&self) -> Option<&str> {
        Some(&self.saga_id)
    }
}

impl Audited for SyncFailure {
    fn patient_id(&self) -> Option<&str> {
        Some(&self.patient_id)
    }
}

/// The row recording `detail` of `kind` for `caller`.
fn audit_row(
    caller: &Caller,
    kind: AuditKind,
    detail: &impl Audited,
) -> crate::audit_writer::AuditRow {
    // The wire types are structs of strings, numbers and lists: they
    // always serialize.
    let text = serde_json::to_string(detail).unwrap_or_else(|_| "null".into());
    let (actor, actor_role) = caller.actor();
    crate::audit_writer::AuditRow {
        tenant: caller.tenant.clone(),
        request_id: caller.request_id.clone(),
        kind,
        source: caller.source.clone(),
        patient_id: detail.patient_id().map(str::to_string),
        saga_id: detail.saga_id().map(str::to_string),
        event_type: detail.event_type().map(str::to_string),
        detail: phi::redact(&text),
        actor: Some(actor),
        actor_role: Some(actor_role),
        occurred_at_ms: None,
    }
}

fn writer(ctx: &Ctx) -> ApiResult<&crate::audit_writer::AuditWriter> {
    ctx.audit
        .as_ref()
        .ok_or_else(|| ApiError::internal("audit", "no audit writer on this service"))
}

async fn record(
    ctx: &Ctx,
    caller: &Caller,
    kind: AuditKind,
    detail: impl Audited,
) -> ApiResult<(StatusCode, Json<Recorded>)> {
    record_all(ctx, caller, kind, vec![(caller.request_id.clone(), detail)]).await
}

#[utoipa::path(
    post,
    path = "/audit/service-calls",
    request_body = Object,
    responses((status = 201, description = "recorded", body = Recorded))
)]
// `POST /audit/service-calls`: one audited call, or `{"events": [...]}`,
// a caller's calls queued together, of one tenant and one or more requests
// (one row each, committed together; the answer names the first row). Plain comments: utoipa would
// make doc comments the operation's description, which the contract holds.
async fn service_call(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    body: CallRecords,
) -> ApiResult<(StatusCode, Json<Recorded>)> {
    // A record of another request than the exchange's is filed under its
    // own (same tenant: the token's).
    let kept = body
        .filed(&caller.request_id)
        .into_iter()
        .filter(|(request_id, e)| !dropped_by_fault(&ctx, &caller.tenant, request_id, e.seq))
        .collect();
    record_all(&ctx, &caller, AuditKind::ServiceCall, kept).await
}

/// Records `records`, each under the request it is filed under, committed
/// together; the answer names the first row (none when none is kept).
async fn record_all<T: Audited>(
    ctx: &Ctx,
    caller: &Caller,
    kind: AuditKind,
    records: Vec<(String, T)>,
) -> ApiResult<(StatusCode, Json<Recorded>)> {
    let rows: Vec<_> = records
        .into_iter()
        .map(|(request_id, r)| {
            let mut row = audit_row(caller, kind, &r);
            row.request_id = request_id;
            row
        })
        .collect();
    let writer = writer(ctx)?;
    let ids = crate::timing::measure(crate::timing::Part::AuditWrite, writer.write_all(rows)).await;
    let mut first = None;
    for id in ids {
        first = first.or(Some(id?));
    }
    Ok((StatusCode::CREATED, Json(Recorded { audit_id: first })))
}

/// Test mode: is this the audit event a fault plan says to lose?
fn dropped_by_fault(ctx: &Ctx, tenant: &str, request_id: &str, seq: u64) -> bool {
    let mut plans = ctx
        .faults
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let hit = plans.iter_mut().find(|p| {
        p.drop_audit_seq == Some(seq) && p.matches(tenant, "/audit/service-calls", request_id)
    });
    match hit {
        Some(plan) => {
            plan.drop_audit_seq = None;
            true
        }
        None => false,
    }
}

/// `POST /audit/request-closed`: `{"service_calls": n}`, how many audited
/// calls the caller made under this request id.
#[utoipa::path(
    post,
    path = "/audit/request-closed",
    request_body = Object,
    responses((status = 201, description = "recorded", body = Recorded))
)]
async fn request_closed(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    closed: Records<RequestClosed>,
) -> ApiResult<(StatusCode, Json<Recorded>)> {
    let closed = closed.filed(&caller.request_id);
    record_all(&ctx, &caller, AuditKind::RequestClosed, closed).await
}

/// Which request's trail.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CompletenessQuery {
    /// The request id.
    request_id: String,
}

/// `GET /audit/completeness?request_id=…`: per calling service, the calls
/// it declared when it closed the request, the audit events kept, the
/// numbers missing (a gap, or a tail short of the declared count) and
/// whether the calls were made in the order numbered. `complete` when
/// every caller declared and nothing is missing or out of order.
#[utoipa::path(
    get,
    path = "/audit/completeness",
    params(("request_id" = String, Query, description = "the request whose trail to check")),
    responses((status = 200, description = "per calling service: declared, kept, missing, order", body = Completeness))
)]
async fn completeness(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Query(q): Query<CompletenessQuery>,
) -> ApiResult<Json<Completeness>> {
    Ok(Json(
        check_completeness(&ctx, &caller, &q.request_id).await?,
    ))
}

/// `POST /audit/verify`: `{"request_id"}`, the completeness check; an
/// incomplete trail is a `missing_audit_event` violation and opens an
/// incident (once per request).
#[utoipa::path(
    post,
    path = "/audit/verify",
    request_body = CompletenessQuery,
    responses((status = 200, description = "the completeness report; an incident opened on a gap", body = Completeness))
)]
async fn verify(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(q): Json<CompletenessQuery>,
) -> ApiResult<Json<Completeness>> {
    let mut report = check_completeness(&ctx, &caller, &q.request_id).await?;
    let declared = report.sources.values().any(|s| s.declared.is_some());
    if !report.complete && declared {
        let incident = match crate::compliance::incidents::existing(
            &ctx,
            &caller.tenant,
            "missing_audit_event",
            &q.request_id,
        )
        .await?
        {
            Some(id) => id,
            None => {
                let gaps: Vec<String> = report
                    .sources
                    .iter()
                    .filter(|(_, s)| !s.missing.is_empty())
                    .map(|(k, s)| format!("{k} calls {:?}", s.missing))
                    .collect();
                let summary = format!(
                    "request {}: audit events missing ({})",
                    q.request_id,
                    gaps.join("; ")
                );
                let violation = crate::compliance::incidents::insert_violation(
                    &ctx,
                    &caller,
                    &caller.source,
                    "audit",
                    "",
                    &summary,
                )
                .await?;
                crate::compliance::incidents::open(
                    &ctx,
                    &caller,
                    &q.request_id,
                    crate::states::ViolationCode::MissingAuditEvent,
                    &[],
                    Some(violation),
                    &summary,
                )
                .await?
            }
        };
        report.incident_id = Some(incident);
    }
    Ok(Json(report))
}

/// A request's audit trail checked for completeness.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Completeness {
    /// The request.
    pub request_id: String,
    /// Every caller declared its calls, none is missing, duplicated or
    /// out of order.
    pub complete: bool,
    /// Per calling service.
    pub sources: std::collections::BTreeMap<String, SourceTrail>,
    /// `POST /audit/verify` on an incomplete trail: the incident opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<i64>,
}

/// One calling service's share of a request's trail.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SourceTrail {
    /// The calls it declared when it closed the request.
    pub declared: Option<u64>,
    /// The calls audited.
    pub audited: usize,
    /// The call numbers missing (a gap, or a tail short of the declared count).
    pub missing: Vec<u64>,
    /// Calls audited more than once.
    pub duplicates: usize,
    /// The calls were made in the order numbered.
    pub in_order: bool,
}

async fn check_completeness(
    ctx: &Ctx,
    caller: &Caller,
    request_id: &str,
) -> ApiResult<Completeness> {
    let rows = ctx
        .db
        .query(
            "SELECT kind, source, detail FROM compliance.audit_events
             WHERE tenant = $1 AND request_id = $2 AND kind IN ($3, $4)
             ORDER BY id",
            &[
                &caller.tenant,
                &request_id,
                &AuditKind::ServiceCall.as_str(),
                &AuditKind::RequestClosed.as_str(),
            ],
        )
        .await?;
    #[derive(Default)]
    struct Source {
        declared: Option<u64>,
        calls: Vec<(u64, u64)>,
    }
    let mut sources: std::collections::BTreeMap<String, Source> = Default::default();
    for r in &rows {
        let (kind, source): (String, String) = (r.get(0), r.get(1));
        let detail = json_text(&r.get::<_, String>(2));
        let entry = sources.entry(source).or_default();
        // Read field by field from the stored (redacted) text, so a value
        // redaction rewrote costs that value, not the whole record.
        if kind == AuditKind::RequestClosed.as_str() {
            entry.declared = detail.get("service_calls").and_then(Value::as_u64);
        } else if let Some(seq) = detail.get("seq").and_then(Value::as_u64) {
            let at = detail
                .get("started_at_ms")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            entry.calls.push((seq, at));
        }
    }
    let mut complete = !sources.is_empty();
    let mut out = std::collections::BTreeMap::new();
    for (source, mut s) in sources {
        s.calls.sort_unstable();
        let seqs: std::collections::BTreeSet<u64> = s.calls.iter().map(|(n, _)| *n).collect();
        let top = s
            .declared
            .unwrap_or(0)
            .max(seqs.iter().next_back().copied().unwrap_or(0));
        let missing: Vec<u64> = (1..=top).filter(|n| !seqs.contains(n)).collect();
        let in_order = s.calls.windows(2).all(|w| w[0].1 <= w[1].1);
        let duplicates = s.calls.len() - seqs.len();
        complete &= s.declared.is_some() && missing.is_empty() && in_order && duplicates == 0;
        let trail = SourceTrail {
            declared: s.declared,
            audited: seqs.len(),
            missing,
            duplicates,
            in_order,
        };
        out.insert(source, trail);
    }
    Ok(Completeness {
        request_id: request_id.to_string(),
        complete,
        sources: out,
        incident_id: None,
    })
}

#[utoipa::path(
    post,
    path = "/audit/saga-events",
    request_body = Object,
    responses((status = 201, description = "recorded", body = Recorded))
)]
async fn saga_event(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    events: Records<SagaEventRecord>,
) -> ApiResult<(StatusCode, Json<Recorded>)> {
    let events = events.filed(&caller.request_id);
    record_all(&ctx, &caller, AuditKind::SagaEvent, events).await
}

#[utoipa::path(
    post,
    path = "/audit/sync-failures",
    request_body = Object,
    responses((status = 201, description = "recorded", body = Recorded))
)]
async fn sync_failure(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(failure): Json<SyncFailure>,
) -> ApiResult<(StatusCode, Json<Recorded>)> {
    record(&ctx, &caller, AuditKind::SyncFailure, failure).await
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

/// A tenant's audit trail.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// The caller's tenant.
    pub tenant: String,
    /// In the order recorded (at most 10 000).
    pub events: Vec<AuditEvent>,
}

/// One audit event.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Its id (increasing).
    pub id: i64,
    /// The request it belongs to.
    pub request_id: String,
    /// `service_call`, `saga_event`, `sync_failure`, `request_closed`, …
    pub kind: String,
    /// The service that reported it.
    pub source: String,
    /// Who acted (a person's id, or a service), when recorded.
    pub actor: Option<String>,
    /// The person's role, or `service`, when recorded.
    pub actor_role: Option<String>,
    /// The patient, when it concerns one.
    pub patient_id: Option<String>,
    /// The saga, when it concerns one.
    pub saga_id: Option<String>,
    /// A saga event's type.
    pub event_type: Option<String>,
    /// What was reported, PHI-redacted.
    #[schema(value_type = Object)]
    pub detail: Value,
    /// When (UTC, RFC 3339).
    pub at: String,
}

/// `GET /audit`.
#[utoipa::path(
    get,
    path = "/audit",
    params(
        ("request_id" = Option<String>, Query, description = "one request's trail"),
        ("patient_id" = Option<String>, Query, description = "one patient's"),
        ("saga_id" = Option<String>, Query, description = "one saga's events"),
        ("kind" = Option<String>, Query, description = "one kind of entry"),
    ),
    responses((status = 200, description = "the tenant's trail", body = AuditPage))
)]
async fn query(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    // A monitor started on the schema before the actors' columns has none.
    let actors = if ctx.settings.schema_version >= crate::compliance::access::SCHEMA_VERSION {
        "actor, actor_role"
    } else {
        "NULL::text, NULL::text"
    };
    let sql = format!(
        "SELECT id, request_id, kind, source, patient_id, saga_id, event_type, detail,
                    to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                    {actors}
             FROM compliance.audit_events
             WHERE tenant = $1
               AND ($2::text IS NULL OR request_id = $2)
               AND ($3::text IS NULL OR patient_id = $3)
               AND ($4::text IS NULL OR saga_id = $4)
               AND ($5::text IS NULL OR kind = $5)
             ORDER BY id LIMIT 10000"
    );
    let rows = ctx
        .db
        .query(
            &sql,
            &[
                &caller.tenant,
                &q.request_id,
                &q.patient_id,
                &q.saga_id,
                &q.kind,
            ],
        )
        .await?;
    let events = rows
        .iter()
        .map(|r| AuditEvent {
            id: r.get(0),
            request_id: r.get(1),
            kind: r.get(2),
            source: r.get(3),
            patient_id: r.get(4),
            saga_id: r.get(5),
            event_type: r.get(6),
            detail: json_text(&r.get::<_, String>(7)),
            at: r.get(8),
            actor: r.get(9),
            actor_role: r.get(10),
        })
        .collect();
    Ok(Json(AuditPage {
        tenant: caller.tenant,
        events,
    }))
}

/// The service's routes, documented.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    service_call,
    saga_event,
    sync_failure,
    request_closed,
    verify,
    query,
    completeness,
    crate::compliance::violations::scan,
    crate::compliance::violations::report,
    crate::compliance::violations::list,
    crate::compliance::incidents::list,
    crate::compliance::incidents::disclosure,
    crate::compliance::incidents::acknowledge,
    crate::compliance::incidents::resolve,
    crate::compliance::access::report,
    crate::compliance::access::query,
    crate::ctx::sync_patient
))]
pub(crate) struct Doc;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{CallRecord, Cause};
    use crate::states::{SagaEvent, SagaStep};

    /// `record`'s text, and the text of its tree (keys in name order).
    fn both(record: &impl Audited) -> (String, String) {
        let text = serde_json::to_string(record).expect("serializes");
        let tree = serde_json::to_value(record)
            .expect("serializes")
            .to_string();
        (text, tree)
    }

    #[test]
    fn audited_records_serialize_as_their_sorted_tree() {
        let call = CallRecord {
            target: "billing-engine".into(),
            method: "POST".into(),
            path: "/claims".into(),
            status: Some(201),
            attempts: 2,
            duration_ms: 3,
            outcome: "ok".into(),
            seq: 4,
            started_at_ms: 5,
            request_id: Some("req-1".into()),
        };
        let event = SagaEventRecord {
            saga_id: "saga-1".into(),
            saga_name: SagaStep::Claim,
            event_type: SagaEvent::SagaFailed,
            step: SagaStep::CreateClaim,
            patient_id: "pat-1".into(),
            details: SagaDetails {
                visit_id: Some("vis-1".into()),
                verification_id: Some("ver-1".into()),
                cached: Some(true),
                claim_id: Some("clm-1".into()),
                claim_key: Some("key-1".into()),
                steps: Some(vec![SagaStep::VerifyInsurance]),
                cause: Some(Cause {
                    message: "refused".into(),
                    status: Some(422),
                    body: Some(serde_json::json!({"error": "x", "message": "y"})),
                    reason: Some("z".into()),
                }),
            },
            request_id: Some("req-2".into()),
        };
        let closed = RequestClosed {
            saga_id: "saga-1".into(),
            patient_id: "pat-1".into(),
            service_calls: 3,
            request_id: Some("req-3".into()),
        };
        let failure = SyncFailure {
            service_name: "billing-engine".into(),
            patient_id: "pat-1".into(),
            error: "down".into(),
            requires_manual_sync: true,
        };
        for (text, tree) in [both(&call), both(&event), both(&closed), both(&failure)] {
            assert_eq!(text, tree, "declare the fields in name order");
        }
    }
}
