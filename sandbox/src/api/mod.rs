//! healthcare-api, the orchestrator: its routes, its aggregated
//! `/health`, and the reads it passes through. Patients (intake, sync,
//! update, read) are in `patients`; visits and the **claim saga**
//! (verify insurance → create the claim → record the analytics, completed
//! steps compensated in reverse when one fails, every event sent to the
//! compliance monitor) in `saga`.
//!
//! Reads are passed through to the services that own them
//! (`GET /doctors/{npi}/preferences` → doctor-personalization,
//! `GET /analytics/aggregates` → business-intelligence, `GET /audit` →
//! compliance-monitor), so every dependency has a route of the API that
//! needs it, and one that does not.
//!
//! `/health` aggregates the dependencies and shows each circuit breaker.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::json::Json;
use serde_json::Value;

use crate::auth::Caller;
use crate::client::{Call, CallError, Method};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::ops::storage_health;
use crate::service::Service;

pub(crate) mod patients;
pub(crate) mod saga;
pub(crate) mod visits;
mod wire;

pub use patients::FIELDS_NEEDED;
pub use wire::{
    AnalyticsQuery, AuditQuery, Compensation, Coverage, DiagnosisIn, FindQuery, Intake, LineIn,
    PatientRecord, PatientSynced, PatientUpdate, Payer, SagaFailed, Visit, VisitCompleted, VisitIn,
    VisitRequest, VisitState, VisitsFound,
};

pub(crate) fn migrations() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS api.patients (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            mrn TEXT NOT NULL,
            record TEXT NOT NULL,
            coverage TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            .to_string(),
        "CREATE INDEX IF NOT EXISTS patients_tenant ON api.patients (tenant)".to_string(),
        "CREATE TABLE IF NOT EXISTS api.visits (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            patient_id TEXT NOT NULL,
            saga_id TEXT NOT NULL,
            status TEXT NOT NULL,
            verification_id TEXT,
            claim_id TEXT,
            failure TEXT,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            .to_string(),
        // Compensations that could not be made when the saga failed (the
        // peer unreachable), retried until they are.
        "CREATE TABLE IF NOT EXISTS api.pending_compensations (
            saga_id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            request_id TEXT NOT NULL,
            claim_key TEXT NOT NULL,
            attempts INT NOT NULL DEFAULT 0,
            next_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            .to_string(),
        "ALTER TABLE api.pending_compensations
            ADD COLUMN IF NOT EXISTS next_at TIMESTAMPTZ NOT NULL DEFAULT now()"
            .to_string(),
    ]
    .into_iter()
    .chain(crate::api::visits::migrations())
    .collect()
}

pub(crate) fn routes() -> Router<Arc<Ctx>> {
    use crate::auth::{Access, Role::*, allow};
    static CARE: Access = Access {
        services: &[],
        roles: &[Clinician, Admin],
    };
    static READ_PATIENT: Access = Access {
        services: &[],
        roles: &[Clinician, BillingClerk, ComplianceOfficer, Admin],
    };
    static READ_VISIT: Access = Access {
        services: &[],
        roles: &[Clinician, BillingClerk, Admin],
    };
    static ANALYTICS: Access = Access {
        services: &[],
        roles: &[BillingClerk, ComplianceOfficer, Admin],
    };
    static AUDIT: Access = Access {
        services: &[],
        roles: &[ComplianceOfficer, Admin],
    };
    Router::new()
        .route("/health", get(health))
        .merge(allow(
            Router::new()
                .route("/patients", post(patients::intake))
                .route("/visits", post(saga::visit))
                .route("/doctors/{npi}/preferences", get(doctor_preferences)),
            &CARE,
        ))
        .merge(allow(
            Router::new().route("/patients/{id}", get(patients::read_patient)),
            &READ_PATIENT,
        ))
        .merge(allow(
            Router::new().route(
                "/patients/{id}",
                axum::routing::put(patients::update_patient),
            ),
            &CARE,
        ))
        .merge(allow(
            Router::new().route("/visits/{id}", get(saga::read_visit)),
            &READ_VISIT,
        ))
        .merge(allow(
            Router::new().route("/analytics/aggregates", get(analytics)),
            &ANALYTICS,
        ))
        .merge(allow(Router::new().route("/audit", get(audit)), &AUDIT))
        .merge(crate::api::visits::routes())
        .merge(crate::gate::sessions::routes())
}

/// Passes a read to `peer` and its answer back; a failed call answers
/// `503` (breaker open, bulkhead full), `504` (timeout) or `502`, with the
/// cause, or the peer's own `4xx`.
async fn read_through(ctx: &Arc<Ctx>, caller: &Caller, peer: Service, path: String) -> Response {
    let call = Call::new(peer, Method::Get, path, &caller.tenant, &caller.request_id);
    match ctx.client.call(call).await {
        Ok(answer) => (StatusCode::OK, Json(answer.body)).into_response(),
        Err(CallError::Status { status, body, .. }) if (400..500).contains(&status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            Json(body),
        )
            .into_response(),
        Err(e) => {
            let failure = saga::StepFailure::from_call(crate::states::SagaStep::Read, &e);
            ApiError::new(
                failure.status,
                "dependency_failed",
                format!("{peer} could not answer"),
            )
            .with("dependency", Value::String(peer.name().to_string()))
            .with(
                "cause",
                serde_json::to_value(failure.cause).unwrap_or_default(),
            )
            .with("request_id", Value::String(caller.request_id.clone()))
            .into_response()
        }
    }
}

/// Keeps a query value inside its parameter.
fn query_value(v: &str) -> String {
    v.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        .collect()
}

/// `GET /doctors/{npi}/preferences`, passed to doctor-personalization.
#[utoipa::path(
    get,
    path = "/doctors/{npi}/preferences",
    responses((status = 200, description = "the doctor's preferences", body = crate::doctor::Preferences))
)]
async fn doctor_preferences(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(npi): Path<String>,
) -> Response {
    let path = format!("/doctors/{}/preferences", query_value(&npi));
    read_through(&ctx, &caller, Service::DoctorPersonalization, path).await
}

/// `GET /analytics/aggregates`, passed to business-intelligence.
#[utoipa::path(
    get,
    path = "/analytics/aggregates",
    params(("metric" = Option<String>, Query, description = "one metric")),
    responses((status = 200, description = "the tenant's aggregates", body = crate::bi::Aggregates))
)]
async fn analytics(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    axum::extract::Query(q): axum::extract::Query<AnalyticsQuery>,
) -> Response {
    let path = match q.metric {
        Some(m) => format!("/aggregates?metric={}", query_value(&m)),
        None => "/aggregates".to_string(),
    };
    read_through(&ctx, &caller, Service::BusinessIntelligence, path).await
}

/// `GET /audit`, passed to compliance-monitor.
#[utoipa::path(
    get,
    path = "/audit",
    params(
        ("request_id" = Option<String>, Query, description = "one request's trail"),
        ("saga_id" = Option<String>, Query, description = "one saga's events"),
        ("kind" = Option<String>, Query, description = "one kind of entry"),
    ),
    responses((status = 200, description = "the tenant's trail", body = crate::compliance::AuditPage))
)]
async fn audit(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Response {
    let mut params = Vec::new();
    for (k, v) in [
        ("request_id", &q.request_id),
        ("saga_id", &q.saga_id),
        ("kind", &q.kind),
    ] {
        if let Some(v) = v {
            params.push(format!("{k}={}", query_value(v)));
        }
    }
    let path = if params.is_empty() {
        "/audit".to_string()
    } else {
        format!("/audit?{}", params.join("&"))
    };
    read_through(&ctx, &caller, Service::ComplianceMonitor, path).await
}

/// `GET /health` of the API: its storage, each dependency's `/health`
/// (1 s timeout; not through the breakers) and each breaker's state;
/// `degraded` when a dependency is down or its breaker is not closed.
#[utoipa::path(
    get,
    path = "/health",
    responses(
        (status = 200, description = "storage up; `degraded` when a dependency is not", body = crate::ops::Health),
        (status = 503, description = "storage down", body = crate::ops::Health),
    )
)]
pub async fn health(State(ctx): State<Arc<Ctx>>) -> Response {
    let (db, redis) = storage_health(&ctx).await;
    let probes = Service::ALL
        .into_iter()
        .filter(|s| *s != Service::HealthcareApi)
        .map(|s| {
            let client = Arc::clone(&ctx.client);
            async move { (s, client.probe_health(s, Duration::from_secs(1)).await) }
        });
    let states = ctx.client.breaker_states();
    let deps = join_all(probes)
        .await
        .into_iter()
        .map(|(s, status)| {
            let probe = crate::ops::Dependency {
                status: status.to_string(),
                address: ctx.client.route(s).map(|a| a.to_string()),
                circuit_breaker: states.get(&s).map(|b| b.label().to_string()),
            };
            (s.name().to_string(), probe)
        })
        .collect();
    crate::ops::Health::answer(Service::HealthcareApi, db, redis, Some(deps))
}

/// Runs futures concurrently and collects their outputs in order.
async fn join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// The API's routes, documented.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    health,
    crate::api::patients::intake,
    crate::api::patients::read_patient,
    crate::api::patients::update_patient,
    crate::api::saga::visit,
    crate::api::saga::read_visit,
    doctor_preferences,
    analytics,
    audit,
    crate::api::visits::find,
    crate::api::visits::events,
    crate::gate::sessions::logout_self,
    crate::gate::sessions::logout_user,
    crate::gate::sessions::set_role,
    crate::gate::sessions::clear_role
))]
pub(crate) struct Doc;
