//! The access log (HIPAA's "who accessed what"): every read of a patient's
//! data, and every logout and role change, is an audit event of kind
//! `access` naming its actor (a person's id and role, or a service with
//! the role `service`), the patient (the API's pseudonymous id, never PHI),
//! the service that served it, the route and when it happened.
//!
//! The service that serves a read reports it to the compliance monitor in
//! the background ([`read`]; `POST /audit/access`, mesh services only);
//! the monitor answers "who read this patient between `from` and `to`"
//! (`GET /audit/access?patient_id=…&from=…&to=…`, RFC 3339, `from`
//! inclusive, `to` exclusive) to compliance officers and admins, across
//! services, in the order the accesses happened.
//!
//! Audited reads: the API's `GET /patients/{id}` and `GET /visits/{id}`,
//! billing's `GET /claims/{id}`, insurance's `GET /verifications/{id}`.

use std::sync::Arc;

use crate::json::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

pub use super::wire::{AccessReport, Recorded};
use crate::auth::Caller;
use crate::client::{Call, Method};
use crate::ctx::{Ctx, json_text};
use crate::error::{ApiError, ApiResult};
use crate::service::Service;

/// The compliance monitor's schema version that has the access log's
/// columns (its step `audit_actors`); on an earlier one (a monitor started one
/// version back) events are written without them and the access log is
/// `503 schema_outdated`.
pub const SCHEMA_VERSION: u32 = 3;

/// The monitor's table gains who acted and when it happened (added in
/// place: rows from before have neither).
pub(crate) fn migrations() -> Vec<String> {
    vec![
        "ALTER TABLE compliance.audit_events
            ADD COLUMN IF NOT EXISTS actor TEXT,
            ADD COLUMN IF NOT EXISTS actor_role TEXT,
            ADD COLUMN IF NOT EXISTS occurred_at TIMESTAMPTZ"
            .to_string(),
        "CREATE INDEX IF NOT EXISTS audit_access ON compliance.audit_events
            (tenant, patient_id, occurred_at) WHERE kind = 'access'"
            .to_string(),
    ]
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reports an access by `caller` to the compliance monitor, in the
/// background: `access` (`action`, `resource`, `patient_id`, …) with the
/// actor, the serving service, the time and an id of its own (a report
/// sent twice is answered once).
pub fn record(ctx: &Arc<Ctx>, caller: &Caller, mut access: AccessReport) {
    let (actor, actor_role) = caller.actor();
    access.actor = actor;
    access.actor_role = actor_role;
    access.service = ctx.service.name().to_string();
    access.occurred_at_ms = Some(now_ms());
    access.access_id = ctx.id_mint.next("acc");
    let client = Arc::clone(&ctx.client);
    let (tenant, request_id) = (caller.tenant.clone(), caller.request_id.clone());
    tokio::spawn(async move {
        let call = Call::new(
            Service::ComplianceMonitor,
            Method::Post,
            "/audit/access",
            &tenant,
            &request_id,
        )
        .body(&access);
        if let Err(e) = client.send_audit(&call).await {
            tracing::error!(tenant = %tenant, request_id = %request_id, "an access could not be audited: {e}");
        }
    });
}

/// Reports that `caller` read patient `patient_id`'s data through
/// `resource` (`GET /claims/{id}`).
pub fn read(ctx: &Arc<Ctx>, caller: &Caller, patient_id: &str, resource: String) {
    record(
        ctx,
        caller,
        AccessReport {
            action: "read".to_string(),
            resource,
            patient_id: Some(patient_id.to_string()),
            ..AccessReport::default()
        },
    );
}

/// The monitor's routes: reports from the mesh's services, the query for
/// compliance officers and admins (and the API).
pub(crate) fn routes() -> axum::Router<Arc<Ctx>> {
    use crate::auth::{API, Access, MESH, Role::*, allow};
    static REPORT: Access = Access {
        services: MESH,
        roles: &[],
    };
    static READ: Access = Access {
        services: API,
        roles: &[ComplianceOfficer, Admin],
    };
    axum::Router::new()
        .merge(allow(
            axum::Router::new().route("/audit/access", post(report)),
            &REPORT,
        ))
        .merge(allow(
            axum::Router::new().route("/audit/access", get(query)),
            &READ,
        ))
}

/// `POST /audit/access` (mesh services): one access, as [`record`] sends it.
#[utoipa::path(
    post,
    path = "/audit/access",
    request_body = Object,
    responses((status = 201, description = "recorded", body = Recorded))
)]
pub(crate) async fn report(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(access): Json<AccessReport>,
) -> ApiResult<(StatusCode, Json<Recorded>)> {
    if [&access.actor, &access.actor_role, &access.action]
        .iter()
        .any(|v| v.is_empty())
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            "an access names its actor, actor_role and action",
        ));
    }
    let occurred_at_ms = access.occurred_at_ms.unwrap_or_else(now_ms) as i64;
    let detail = serde_json::to_value(&access).unwrap_or(Value::Null);
    let row = crate::audit_writer::AuditRow {
        tenant: caller.tenant.clone(),
        request_id: caller.request_id.clone(),
        kind: crate::states::AuditKind::Access,
        source: caller.source.clone(),
        patient_id: access.patient_id.clone(),
        saga_id: None,
        event_type: Some(access.action.clone()),
        detail: phi::redact(&detail.to_string()),
        actor: Some(access.actor.clone()),
        actor_role: Some(access.actor_role.clone()),
        occurred_at_ms: Some(occurred_at_ms),
    };
    let writer = ctx
        .audit
        .as_ref()
        .ok_or_else(|| ApiError::internal("audit", "no audit writer on this service"))?;
    let id = crate::timing::measure(crate::timing::Part::AuditWrite, writer.write(row)).await?;
    Ok((StatusCode::CREATED, Json(Recorded { audit_id: Some(id) })))
}

/// `GET /audit/access`: whose accesses (a patient's, an actor's, or both),
/// in which window.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessQuery {
    patient_id: Option<String>,
    actor: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// The accesses asked for.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AccessLog {
    /// The caller's tenant.
    pub tenant: String,
    /// The patient asked about, if one was.
    pub patient_id: Option<String>,
    /// The actor asked about, if one was.
    pub actor: Option<String>,
    /// The window's start (inclusive), as asked.
    pub from: Option<String>,
    /// The window's end (exclusive), as asked.
    pub to: Option<String>,
    /// In the order they happened (at most 10 000).
    pub accesses: Vec<Access>,
}

/// One access.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Access {
    /// The audit event's id.
    pub id: i64,
    /// When it happened, by the serving service's clock (UTC, RFC 3339).
    pub at: String,
    /// The service that served it.
    pub service: String,
    /// Who: a person's id (or the client they came through), or a service.
    pub actor: String,
    /// The person's role, or `service`.
    pub actor_role: String,
    /// `read`, `logout`, `role_change`.
    pub action: String,
    /// The route (`GET /claims/{id}`) or what changed.
    pub resource: String,
    /// The patient, for a read.
    pub patient_id: Option<String>,
    /// The request it was part of.
    pub request_id: String,
}

/// `GET /audit/access?patient_id=…&actor=…&from=…&to=…`.
#[utoipa::path(
    get,
    path = "/audit/access",
    params(
        ("patient_id" = Option<String>, Query, description = "the patient whose data was accessed"),
        ("actor" = Option<String>, Query, description = "the person (or service) who accessed it"),
        ("from" = Option<String>, Query, description = "window start, inclusive (RFC 3339)"),
        ("to" = Option<String>, Query, description = "window end, exclusive (RFC 3339)"),
    ),
    responses(
        (status = 200, description = "the accesses, in the order they happened", body = AccessLog),
        (status = 422, description = "neither patient_id nor actor, or a time that is not RFC 3339"),
    )
)]
pub(crate) async fn query(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Query(q): Query<AccessQuery>,
) -> ApiResult<Json<AccessLog>> {
    if ctx.settings.schema_version < SCHEMA_VERSION {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "schema_outdated",
            format!(
                "the access log needs schema version {SCHEMA_VERSION}; this monitor runs on {}",
                ctx.settings.schema_version
            ),
        ));
    }
    if q.patient_id.is_none() && q.actor.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            "name a patient_id, an actor, or both",
        ));
    }
    let bound = |v: &Option<String>, name: &str| -> ApiResult<Option<f64>> {
        match v {
            None => Ok(None),
            Some(s) => parse_rfc3339_ms(s)
                .map(|ms| Some(ms as f64))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_query",
                        format!("`{name}` is not an RFC 3339 time (2026-12-06T09:30:00.000Z)"),
                    )
                }),
        }
    };
    let (from, to) = (bound(&q.from, "from")?, bound(&q.to, "to")?);
    let rows = ctx
        .db
        .query(
            "SELECT id, request_id, source, actor, actor_role, patient_id, detail,
                    to_char(COALESCE(occurred_at, at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
             FROM compliance.audit_events
             WHERE tenant = $1 AND kind = 'access'
               AND ($2::text IS NULL OR patient_id = $2)
               AND ($3::text IS NULL OR actor = $3)
               AND ($4::float8 IS NULL OR COALESCE(occurred_at, at) >= to_timestamp($4::float8 / 1000))
               AND ($5::float8 IS NULL OR COALESCE(occurred_at, at) < to_timestamp($5::float8 / 1000))
             ORDER BY COALESCE(occurred_at, at), id LIMIT 10000",
            &[&caller.tenant, &q.patient_id, &q.actor, &from, &to],
        )
        .await?;
    let mut seen = std::collections::HashSet::new();
    let mut accesses = Vec::with_capacity(rows.len());
    for r in &rows {
        // Read field by field from the stored (redacted) text, so a value
        // redaction rewrote costs that value, not the whole record.
        let detail = json_text(&r.get::<_, String>(6));
        let text = |k: &str| {
            detail
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        // A report sent twice (a retried call) is one access.
        let access_id = text("access_id");
        if !access_id.is_empty() && !seen.insert(access_id) {
            continue;
        }
        accesses.push(Access {
            id: r.get(0),
            request_id: r.get(1),
            service: Some(text("service"))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| r.get(2)),
            actor: r.get::<_, Option<String>>(3).unwrap_or_default(),
            actor_role: r.get::<_, Option<String>>(4).unwrap_or_default(),
            patient_id: r.get(5),
            action: text("action"),
            resource: text("resource"),
            at: r.get(7),
        });
    }
    Ok(Json(AccessLog {
        tenant: caller.tenant,
        patient_id: q.patient_id,
        actor: q.actor,
        from: q.from,
        to: q.to,
        accesses,
    }))
}

/// Milliseconds since the Unix epoch of an RFC 3339 time
/// (`2026-12-06T09:30:00Z`, `…:00.123+01:00`); `None` when it is not one.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    // `+` arrives as a space when a query string was not encoded.
    let t = time::OffsetDateTime::parse(&s.replace(' ', "+"), &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `ms` since the Unix epoch as RFC 3339 UTC (a fraction when there is one)
/// (`2026-12-06T09:30:00.123Z`).
pub fn format_rfc3339_ms(ms: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for ms in [0, 1_765_013_400_123, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_rfc3339_ms("1970-01-01T01:00:00+01:00"),
            Some(0),
            "offsets"
        );
        assert_eq!(
            parse_rfc3339_ms("2026-12-06T09:30:00.5Z"),
            Some(1_796_549_400_500)
        );
        for bad in [
            "",
            "2026-12-06",
            "2026-13-06T00:00:00Z",
            "2026-12-06T09:30:00",
            "x026-12-06T09:30:00Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }
}
