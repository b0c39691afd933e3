//! healthcare-api, the orchestrator: patient intake (synced to the
//! services that hold patient data; sync failures audited), read a
//! patient, and visits, which run the **claim saga**:
//!
//! 1. verify insurance (insurance-verification),
//! 2. create the claim (billing-engine),
//! 3. record the analytics (business-intelligence; best effort).
//!
//! When a step fails, the completed steps are compensated in reverse order
//! (the verification is cancelled when the claim cannot be created). Every
//! saga event — started, step completed, failed, compensation completed or
//! failed, completed — is sent to the compliance monitor.
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

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::client::{Call, CallError, Method};
use crate::ctx::{Ctx, json_text};
use crate::error::{ApiError, ApiResult};
use crate::ops::storage_health;
use crate::service::Service;

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
    ]
    .into_iter()
    .chain(crate::visits::migrations())
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
                .route("/patients", post(intake))
                .route("/visits", post(visit))
                .route("/doctors/{npi}/preferences", get(doctor_preferences)),
            &CARE,
        ))
        .merge(allow(
            Router::new().route("/patients/{id}", get(read_patient)),
            &READ_PATIENT,
        ))
        .merge(allow(
            Router::new().route("/patients/{id}", axum::routing::put(update_patient)),
            &CARE,
        ))
        .merge(allow(
            Router::new().route("/visits/{id}", get(read_visit)),
            &READ_VISIT,
        ))
        .merge(allow(
            Router::new().route("/analytics/aggregates", get(analytics)),
            &ANALYTICS,
        ))
        .merge(allow(Router::new().route("/audit", get(audit)), &AUDIT))
        .merge(crate::visits::routes())
}

/// Passes a read to `target` and its answer back; a failed call answers
/// `503` (breaker open, bulkhead full), `504` (timeout) or `502`, with the
/// cause, or the target's own `4xx`.
async fn read_through(ctx: &Arc<Ctx>, caller: &Caller, target: Service, path: String) -> Response {
    let call = Call::new(
        target,
        Method::Get,
        path,
        &caller.tenant,
        &caller.request_id,
    );
    match ctx.client.call(call).await {
        Ok(reply) => (StatusCode::OK, Json(reply.body)).into_response(),
        Err(CallError::Status { status, body, .. }) if (400..500).contains(&status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            Json(body),
        )
            .into_response(),
        Err(e) => {
            let failure = StepFailure::from_call("read", &e);
            (
                failure.status,
                Json(json!({
                    "error": "dependency_failed",
                    "message": format!("{target} could not answer"),
                    "dependency": target.name(),
                    "cause": failure.cause,
                    "request_id": caller.request_id,
                })),
            )
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

#[derive(Debug, Deserialize)]
struct AnalyticsQuery {
    metric: Option<String>,
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

#[derive(Debug, Deserialize)]
struct AuditQuery {
    request_id: Option<String>,
    saga_id: Option<String>,
    kind: Option<String>,
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

/// The services a patient is synced to.
/// The patient fields each holder needs (minimum necessary, 45 CFR
/// 164.502(b)): insurance verifies eligibility on name, sex and date of
/// birth; billing also needs the address and phone of the claim's
/// subscriber; personalisation greets by name in the patient's language;
/// the compliance monitor correlates by medical record number. No holder
/// receives the SSN; only insurance and billing receive the coverage.
pub const FIELDS_NEEDED: [(Service, &[&str]); 4] = [
    (
        Service::InsuranceVerification,
        &["mrn", "first_name", "last_name", "sex", "birth_date"],
    ),
    (
        Service::BillingEngine,
        &[
            "mrn",
            "first_name",
            "last_name",
            "sex",
            "birth_date",
            "address",
            "phone",
        ],
    ),
    (
        Service::DoctorPersonalization,
        &["first_name", "last_name", "preferred_language"],
    ),
    (Service::ComplianceMonitor, &["mrn"]),
];

/// `patient` cut to what `holder` needs.
fn needed_by(holder: Service, patient: &Value) -> Value {
    let fields = FIELDS_NEEDED
        .iter()
        .find(|(s, _)| *s == holder)
        .map_or(&[][..], |(_, f)| *f);
    let Some(all) = patient.as_object() else {
        return Value::Null;
    };
    Value::Object(
        all.iter()
            .filter(|(k, _)| fields.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

const HOLDERS: [Service; 4] = [
    Service::BillingEngine,
    Service::InsuranceVerification,
    Service::DoctorPersonalization,
    Service::ComplianceMonitor,
];

/// `POST /patients`: `{"patient": {...}, "coverage": {...}}` (the
/// `Patient` and `Coverage` fixtures' shapes).
#[derive(Debug, Deserialize, ToSchema)]
pub struct Intake {
    /// The patient (the `Patient` fixture's shape; `mrn` required).
    patient: Value,
    coverage: Coverage,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Coverage {
    payer: Payer,
    #[serde(default)]
    member_id: String,
    effective: String,
    #[serde(default)]
    termination: Option<String>,
    #[serde(default)]
    coinsurance_pct: u8,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Payer {
    id: String,
    #[serde(default)]
    name: String,
}

/// What an intake or an update answers: the patient's id and where its
/// copies went.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientSynced {
    /// The API's patient id.
    pub patient_id: String,
    /// The holders that took their copy.
    pub synced: Vec<String>,
    /// The holders that did not (each audited for a manual resync).
    pub sync_failed: Vec<String>,
}

impl PatientSynced {
    fn new(patient_id: String, (synced, failed): (Vec<&str>, Vec<&str>)) -> Self {
        let names = |v: Vec<&str>| v.into_iter().map(str::to_string).collect();
        PatientSynced {
            patient_id,
            synced: names(synced),
            sync_failed: names(failed),
        }
    }
}

/// `GET /patients/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientRecord {
    /// The API's patient id.
    pub patient_id: String,
    /// The medical record number.
    pub mrn: String,
    /// The record as registered (the SSN only for clinicians and admins).
    #[schema(value_type = Object)]
    pub patient: Value,
    /// The coverage.
    pub coverage: Coverage,
}

/// `POST /patients`: registers the patient and syncs each holder its cut.
#[utoipa::path(
    post,
    path = "/patients",
    request_body = Intake,
    responses((status = 201, description = "registered", body = PatientSynced))
)]
async fn intake(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(intake): Json<Intake>,
) -> ApiResult<(StatusCode, Json<PatientSynced>)> {
    let Some(mrn) = intake.patient.get("mrn").and_then(Value::as_str) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_patient",
            "patient.mrn is required",
        ));
    };
    let id = ctx.ids.next("pat");
    let coverage = serde_json::to_string(&intake.coverage).unwrap_or_default();
    // At rest the SSN and date of birth are sealed (AES-256-GCM).
    let mut stored = intake.patient.clone();
    ctx.settings.vault.seal_record(&mut stored);
    ctx.db
        .execute(
            "INSERT INTO api.patients (id, tenant, mrn, record, coverage) VALUES ($1, $2, $3, $4, $5)",
            &[
                &id,
                &caller.tenant,
                &mrn,
                &stored.to_string(),
                &coverage,
            ],
        )
        .await?;
    tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, patient = %id, "patient registered");
    let coverage = serde_json::to_value(&intake.coverage).unwrap_or_default();
    let outcome = sync_to_holders(&ctx, &caller, &id, &intake.patient, &coverage, "sync").await;
    Ok((StatusCode::CREATED, Json(PatientSynced::new(id, outcome))))
}

/// Sends each holder its cut of the patient (minimum necessary), all at
/// once; a failed sync is audited for a manual resync. Returns the holders
/// synced and those that failed.
async fn sync_to_holders(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    id: &str,
    patient: &Value,
    coverage: &Value,
    key: &str,
) -> (Vec<&'static str>, Vec<&'static str>) {
    let sync = |target: Service| {
        // Minimum necessary: each holder receives the fields its work needs.
        let record = json!({
            "patient_id": id,
            "record": {
                "patient": needed_by(target, patient),
                "coverage": if matches!(target, Service::InsuranceVerification | Service::BillingEngine) {
                    coverage.clone()
                } else {
                    Value::Null
                },
            },
        });
        ctx.client.call(
            Call::new(
                target,
                Method::Post,
                "/patients/sync",
                &caller.tenant,
                &caller.request_id,
            )
            .json(record)
            .key(format!("{id}:{key}")),
        )
    };
    let (a, b, c, d) = tokio::join!(
        sync(HOLDERS[0]),
        sync(HOLDERS[1]),
        sync(HOLDERS[2]),
        sync(HOLDERS[3])
    );
    let mut synced = Vec::new();
    let mut failed = Vec::new();
    for (target, result) in HOLDERS.into_iter().zip([a, b, c, d]) {
        match result {
            Ok(_) => synced.push(target.name()),
            Err(e) => {
                failed.push(target.name());
                tracing::warn!(tenant = %caller.tenant, request_id = %caller.request_id, "patient sync to {target} failed: {e}");
                let audit = Call::new(
                    Service::ComplianceMonitor,
                    Method::Post,
                    "/audit/sync-failures",
                    &caller.tenant,
                    &caller.request_id,
                )
                .json(json!({
                    "service_name": target.name(),
                    "patient_id": id,
                    "error": e.to_string(),
                    "requires_manual_sync": true,
                }));
                if let Err(e) = ctx.client.call(audit).await {
                    tracing::error!(tenant = %caller.tenant, request_id = %caller.request_id, "auditing a sync failure failed: {e}");
                }
            }
        }
    }
    (synced, failed)
}

/// `PUT /patients/{id}`: `{"patient": {...}}`, the fields that change
/// (`mrn` cannot). The record is updated (sealed fields resealed) and each
/// holder receives its new cut; a failed sync is audited as at intake.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PatientUpdate {
    /// The fields that change.
    #[schema(value_type = Object)]
    patient: serde_json::Map<String, Value>,
}

/// `PUT /patients/{id}`.
#[utoipa::path(
    put,
    path = "/patients/{id}",
    request_body = PatientUpdate,
    responses((status = 200, description = "updated and re-synced", body = PatientSynced))
)]
async fn update_patient(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(update): Json<PatientUpdate>,
) -> ApiResult<Json<PatientSynced>> {
    if update.patient.contains_key("mrn") {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_patient",
            "patient.mrn cannot change",
        ));
    }
    let row = own_patient(
        &ctx,
        &caller,
        &id,
        "SELECT record, coverage FROM api.patients WHERE id = $1 AND tenant = $2",
    )
    .await?;
    let mut patient = opened(&ctx, &caller, &id, &row.get::<_, String>(0))?;
    if let Some(p) = patient.as_object_mut() {
        p.extend(update.patient);
    }
    let mut stored = patient.clone();
    ctx.settings.vault.seal_record(&mut stored);
    ctx.db
        .execute(
            "UPDATE api.patients SET record = $3 WHERE id = $1 AND tenant = $2",
            &[&id, &caller.tenant, &stored.to_string()],
        )
        .await?;
    tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, patient = %id, "patient updated");
    let coverage = json_text(&row.get::<_, String>(1));
    let key = format!("update:{}", caller.request_id);
    let outcome = sync_to_holders(&ctx, &caller, &id, &patient, &coverage, &key).await;
    Ok(Json(PatientSynced::new(id, outcome)))
}

/// `GET /patients/{id}`.
#[utoipa::path(
    get,
    path = "/patients/{id}",
    responses((status = 200, description = "the patient", body = PatientRecord))
)]
async fn read_patient(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<PatientRecord>> {
    let row = own_patient(
        &ctx,
        &caller,
        &id,
        "SELECT mrn, record, coverage FROM api.patients WHERE id = $1 AND tenant = $2",
    )
    .await?;
    let mut patient = opened(&ctx, &caller, &id, &row.get::<_, String>(1))?;
    if !caller.sees_ssn() {
        // Minimum necessary: only clinicians and admins see the SSN.
        if let Some(p) = patient.as_object_mut() {
            p.remove("ssn");
        }
    }
    let coverage = serde_json::from_str(&row.get::<_, String>(2))
        .map_err(|e| ApiError::internal("reading coverage", e))?;
    Ok(Json(PatientRecord {
        patient_id: id,
        mrn: row.get(0),
        patient,
        coverage,
    }))
}

/// The caller's patient `id`, as `sql` (bound to the id and the tenant)
/// selects it; another tenant's id is reported and answered as unknown.
async fn own_patient(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    id: &str,
    sql: &str,
) -> ApiResult<tokio_postgres::Row> {
    match ctx.db.query_opt(sql, &[&id, &caller.tenant]).await? {
        Some(row) => Ok(row),
        None => {
            report_cross_tenant(ctx, caller, id).await;
            Err(ApiError::not_found(format!("patient {id}")))
        }
    }
}

/// A stored patient record with its sealed fields opened (`500
/// sealed_field` when the configured key does not open them).
fn opened(ctx: &Ctx, caller: &Caller, id: &str, text: &str) -> ApiResult<Value> {
    let mut patient = json_text(text);
    ctx.settings.vault.open_record(&mut patient).map_err(|e| {
        tracing::error!(tenant = %caller.tenant, request_id = %caller.request_id, patient = %id, "{e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "sealed_field",
            "a sealed field of this record does not open with the configured data key",
        )
    })?;
    Ok(patient)
}

/// A caller asked for a patient that is not its tenant's: when the id is
/// another tenant's, that tenant's compliance monitor is told (a
/// `cross_tenant_access` violation, in the background). The caller's answer
/// stays a plain 404, the same as for an id that does not exist.
async fn report_cross_tenant(ctx: &Arc<Ctx>, caller: &Caller, id: &str) {
    let owner = ctx
        .db
        .query_opt("SELECT tenant FROM api.patients WHERE id = $1", &[&id])
        .await;
    let Ok(Some(owner)) = owner else {
        return;
    };
    let owner: String = owner.get(0);
    let excerpt = format!(
        "GET /patients/{id} by tenant `{}` ({}) for a patient of this tenant; answered 404",
        caller.tenant, caller.source
    );
    let client = Arc::clone(&ctx.client);
    let request_id = caller.request_id.clone();
    tokio::spawn(async move {
        let call = Call::new(
            Service::ComplianceMonitor,
            Method::Post,
            "/violations",
            &owner,
            &request_id,
        )
        .json(json!({
            "source": Service::HealthcareApi.name(),
            "channel": "access",
            "kinds": ["cross_tenant_access"],
            "excerpt": excerpt,
        }));
        let _ = client.call(call).await;
    });
}

/// `POST /visits`: `{"patient_id": …, "visit": {...}}` (the `Visit`
/// fixture's shape: `rendering_npi`, `date_of_service`, `diagnoses[].code`,
/// `lines[].procedure_code`, `lines[].charge_cents`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct VisitRequest {
    patient_id: String,
    visit: VisitIn,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VisitIn {
    rendering_npi: String,
    date_of_service: String,
    diagnoses: Vec<DiagnosisIn>,
    lines: Vec<LineIn>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DiagnosisIn {
    code: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LineIn {
    procedure_code: String,
    charge_cents: i64,
}

/// One saga's bookkeeping.
struct Saga<'a> {
    ctx: &'a Arc<Ctx>,
    caller: &'a Caller,
    id: String,
    patient_id: String,
}

impl Saga<'_> {
    /// Sends a saga event to the compliance monitor (awaited: the trail is
    /// complete when the visit answers; a failure to audit is logged, not
    /// fatal).
    async fn event(&self, event_type: &str, step: &str, details: Value) {
        let call = Call::new(
            Service::ComplianceMonitor,
            Method::Post,
            "/audit/saga-events",
            &self.caller.tenant,
            &self.caller.request_id,
        )
        .json(json!({
            "saga_id": self.id,
            "saga_name": "claim",
            "event_type": event_type,
            "step": step,
            "patient_id": self.patient_id,
            "details": details,
        }))
        .key(format!("{}:{event_type}:{step}", self.id));
        if let Err(e) = self.ctx.client.call(call).await {
            tracing::error!(tenant = %self.caller.tenant, request_id = %self.caller.request_id, saga = %self.id, "auditing saga event {event_type} failed: {e}");
        }
    }

    /// Tells the compliance monitor how many audited calls this request
    /// made, so that its trail can be checked complete
    /// (`GET /audit/completeness`).
    async fn close(&self) {
        let made = self.ctx.client.calls_made(&self.caller.request_id);
        let call = Call::new(
            Service::ComplianceMonitor,
            Method::Post,
            "/audit/request-closed",
            &self.caller.tenant,
            &self.caller.request_id,
        )
        .json(json!({"saga_id": self.id, "patient_id": self.patient_id, "service_calls": made}))
        .key(format!("{}:closed", self.id));
        if let Err(e) = self.ctx.client.call(call).await {
            tracing::error!(tenant = %self.caller.tenant, request_id = %self.caller.request_id, saga = %self.id, "closing the audit of the request failed: {e}");
        }
    }

    fn call(&self, target: Service, method: Method, path: String) -> Call<'_> {
        Call::new(
            target,
            method,
            path,
            &self.caller.tenant,
            &self.caller.request_id,
        )
    }
}

/// A failed step: which, why, and what it means for the answer.
struct StepFailure {
    step: &'static str,
    status: StatusCode,
    cause: Value,
}

impl StepFailure {
    fn from_call(step: &'static str, e: &CallError) -> Self {
        let status = match e {
            CallError::Status { status: 422, .. } => StatusCode::UNPROCESSABLE_ENTITY,
            CallError::NotPermitted { .. } | CallError::BulkheadFull { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            CallError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        StepFailure {
            step,
            status,
            cause: e.to_json(),
        }
    }
}

/// `POST /visits` answered: the saga completed.
#[derive(Debug, Serialize, ToSchema)]
pub struct VisitCompleted {
    /// The visit.
    pub visit_id: String,
    /// Its claim saga.
    pub saga_id: String,
    /// `completed`.
    pub status: String,
    /// The insurance verification.
    pub verification_id: String,
    /// The claim.
    pub claim_id: String,
    /// The claim's total.
    pub total_cents: i64,
    /// The request's id (the `X-Request-ID` answered).
    pub request_id: String,
}

/// `POST /visits` answered: a step failed and the completed ones were
/// compensated (`502`, `503`, `504`, or the step's own `4xx`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaFailed {
    /// `saga_failed`.
    pub error: String,
    /// Which step failed, in words.
    pub message: String,
    /// The visit (stored as `failed`).
    pub visit_id: String,
    /// Its claim saga.
    pub saga_id: String,
    /// The step that failed.
    pub failed_step: String,
    /// The failure as the client saw it (service, status, body).
    #[schema(value_type = Object)]
    pub cause: Value,
    /// The compensations run, in order.
    pub compensations: Vec<Compensation>,
    /// The request's id.
    pub request_id: String,
}

/// One compensation of a failed saga.
#[derive(Debug, Serialize, ToSchema)]
pub struct Compensation {
    /// The step compensated.
    pub step: String,
    /// `completed` or `failed`.
    pub outcome: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub cause: Option<Value>,
}

/// `GET /visits/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Visit {
    /// The visit.
    pub visit_id: String,
    /// Its patient.
    pub patient_id: String,
    /// Its claim saga.
    pub saga_id: String,
    /// `pending`, `verifying`, `billing`, `completed` or `failed`.
    pub status: String,
    /// The verification, once made.
    pub verification_id: Option<String>,
    /// The claim, once made.
    pub claim_id: Option<String>,
    /// A failed saga's answer (redacted).
    #[schema(value_type = Option<Object>)]
    pub failure: Option<Value>,
}

/// `POST /visits`: runs the claim saga.
#[utoipa::path(
    post,
    path = "/visits",
    request_body = VisitRequest,
    responses(
        (status = 201, description = "the saga completed", body = VisitCompleted),
        (status = 502, description = "a step failed; compensated", body = SagaFailed),
        (status = 503, description = "a dependency is unavailable; compensated", body = SagaFailed),
        (status = 504, description = "a step timed out; compensated", body = SagaFailed),
        (status = 422, description = "a step refused the visit; compensated", body = SagaFailed),
    )
)]
async fn visit(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(r): Json<VisitRequest>,
) -> ApiResult<Response> {
    let row = ctx
        .db
        .query_opt(
            "SELECT coverage FROM api.patients WHERE id = $1 AND tenant = $2",
            &[&r.patient_id, &caller.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("patient {}", r.patient_id)))?;
    let coverage: Coverage = serde_json::from_str(&row.get::<_, String>(0))
        .map_err(|e| ApiError::internal("reading coverage", e))?;
    let saga = Saga {
        ctx: &ctx,
        caller: &caller,
        id: ctx.ids.next("saga"),
        patient_id: r.patient_id.clone(),
    };
    let visit_id = ctx.ids.next("vis");
    crate::visits::open(&ctx, &caller, &visit_id, &r.patient_id, &saga.id).await?;
    saga.event("saga_started", "claim", json!({"visit_id": visit_id}))
        .await;
    crate::visits::transition(&ctx, &caller.tenant, &visit_id, "verifying").await;

    // Step 1: verify insurance.
    let procedures: Vec<&str> = r
        .visit
        .lines
        .iter()
        .map(|l| l.procedure_code.as_str())
        .collect();
    let verify = saga
        .call(
            Service::InsuranceVerification,
            Method::Post,
            "/verify".into(),
        )
        .json(json!({
            "patient_id": r.patient_id,
            "payer_id": coverage.payer.id,
            "member_id": coverage.member_id,
            "effective": coverage.effective,
            "termination": coverage.termination,
            "coinsurance_pct": coverage.coinsurance_pct,
            "date_of_service": r.visit.date_of_service,
            "procedures": procedures,
        }))
        .key(format!("{}:verify", saga.id));
    let verification = match ctx.client.call(verify).await {
        Ok(reply) => reply.body,
        Err(e) => {
            let failure = StepFailure::from_call("verify_insurance", &e);
            return finish_failed(&saga, &visit_id, None, failure, Vec::new()).await;
        }
    };
    // A reply without its id is a broken peer, not an empty id.
    let Some(verification_id) = verification
        .get("verification_id")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        let failure = StepFailure {
            step: "verify_insurance",
            status: StatusCode::BAD_GATEWAY,
            cause: json!({"message": "insurance-verification answered without a verification_id"}),
        };
        return finish_failed(&saga, &visit_id, None, failure, Vec::new()).await;
    };
    saga.event(
        "step_completed",
        "verify_insurance",
        json!({"verification_id": verification_id, "cached": verification.get("cached")}),
    )
    .await;
    let mut done = vec!["verify_insurance"];
    if verification.get("eligible") != Some(&Value::Bool(true)) {
        let failure = StepFailure {
            step: "verify_insurance",
            status: StatusCode::UNPROCESSABLE_ENTITY,
            cause: json!({"message": "not eligible", "reason": verification.get("reason")}),
        };
        return finish_failed(&saga, &visit_id, Some(&verification_id), failure, done).await;
    }

    // Step 2: create the claim.
    crate::visits::transition(&ctx, &caller.tenant, &visit_id, "billing").await;
    let claim = saga
        .call(Service::BillingEngine, Method::Post, "/claims".into())
        .json(json!({
            "patient_id": r.patient_id,
            "verification_id": verification_id,
            "npi": r.visit.rendering_npi,
            "diagnoses": r.visit.diagnoses.iter().map(|d| d.code.as_str()).collect::<Vec<_>>(),
            "procedures": r.visit.lines.iter().map(|l| json!({"code": l.procedure_code, "charge_cents": l.charge_cents})).collect::<Vec<_>>(),
        }))
        .key(format!("{}:claim", saga.id));
    let claim = match ctx.client.call(claim).await {
        Ok(reply) => reply.body,
        Err(e) => {
            let failure = StepFailure::from_call("create_claim", &e);
            return finish_failed(&saga, &visit_id, Some(&verification_id), failure, done).await;
        }
    };
    let Some(claim_id) = claim
        .get("claim_id")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        let failure = StepFailure {
            step: "create_claim",
            status: StatusCode::BAD_GATEWAY,
            cause: json!({"message": "billing-engine answered without a claim_id"}),
        };
        return finish_failed(&saga, &visit_id, Some(&verification_id), failure, done).await;
    };
    done.push("create_claim");
    saga.event(
        "step_completed",
        "create_claim",
        json!({"claim_id": claim_id}),
    )
    .await;

    // Step 3: analytics, best effort (a failure is logged, not compensated).
    let total = claim
        .get("total_cents")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let analytics = saga
        .call(
            Service::BusinessIntelligence,
            Method::Post,
            "/events".into(),
        )
        .json(json!({"events": [
            {"metric": "claims_created", "value": 1},
            {"metric": "claim_charge_cents", "value": total},
        ]}))
        .key(format!("{}:analytics", saga.id));
    if let Err(e) = ctx.client.call(analytics).await {
        tracing::warn!(tenant = %caller.tenant, request_id = %caller.request_id, saga = %saga.id, "analytics not recorded: {e}");
    }

    ctx.db
        .execute(
            "UPDATE api.visits SET status = 'completed', verification_id = $3, claim_id = $4
             WHERE id = $1 AND tenant = $2",
            &[&visit_id, &caller.tenant, &verification_id, &claim_id],
        )
        .await?;
    crate::visits::announce(&ctx, &caller.tenant, &visit_id, "completed");
    saga.event("saga_completed", "claim", json!({"steps": done}))
        .await;
    saga.close().await;
    ctx.metrics.incr("saga_total", "outcome=\"completed\"");
    tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, saga = %saga.id, claim = %claim_id, "claim saga completed");
    let done = VisitCompleted {
        visit_id,
        saga_id: saga.id.clone(),
        status: "completed".into(),
        verification_id,
        claim_id,
        total_cents: total,
        request_id: caller.request_id.clone(),
    };
    Ok((StatusCode::CREATED, Json(done)).into_response())
}

/// Records the failure, compensates the completed steps in reverse order,
/// stores the visit as failed, and answers.
async fn finish_failed(
    saga: &Saga<'_>,
    visit_id: &str,
    verification_id: Option<&str>,
    failure: StepFailure,
    done: Vec<&'static str>,
) -> ApiResult<Response> {
    let ctx = saga.ctx;
    saga.event("saga_failed", failure.step, json!({"cause": failure.cause}))
        .await;
    let mut compensations = Vec::new();
    for step in done.iter().rev() {
        let outcome = match (*step, verification_id) {
            ("verify_insurance", Some(vid)) => {
                let cancel = saga
                    .call(
                        Service::InsuranceVerification,
                        Method::Post,
                        format!("/verifications/{vid}/cancel"),
                    )
                    .key(format!("{}:cancel-verification", saga.id));
                ctx.client.call(cancel).await.map(|_| ())
            }
            _ => Ok(()),
        };
        match outcome {
            Ok(()) => {
                saga.event(
                    "compensation_completed",
                    step,
                    json!({"verification_id": verification_id}),
                )
                .await;
                compensations.push(Compensation {
                    step: step.to_string(),
                    outcome: "completed".into(),
                    cause: None,
                });
            }
            Err(e) => {
                saga.event("compensation_failed", step, json!({"cause": e.to_json()}))
                    .await;
                compensations.push(Compensation {
                    step: step.to_string(),
                    outcome: "failed".into(),
                    cause: Some(e.to_json()),
                });
            }
        }
    }
    let body = SagaFailed {
        error: "saga_failed".into(),
        message: format!("the claim saga failed at step {}", failure.step),
        visit_id: visit_id.to_string(),
        saga_id: saga.id.clone(),
        failed_step: failure.step.to_string(),
        cause: failure.cause,
        compensations,
        request_id: saga.caller.request_id.clone(),
    };
    let stored = serde_json::to_string(&body).unwrap_or_default();
    ctx.db
        .execute(
            "UPDATE api.visits SET status = 'failed', verification_id = $3, failure = $4
             WHERE id = $1 AND tenant = $2",
            &[
                &visit_id,
                &saga.caller.tenant,
                &verification_id,
                &phi::redact(&stored),
            ],
        )
        .await?;
    crate::visits::announce(ctx, &saga.caller.tenant, visit_id, "failed");
    saga.close().await;
    ctx.metrics.incr("saga_total", "outcome=\"failed\"");
    tracing::info!(tenant = %saga.caller.tenant, request_id = %saga.caller.request_id, saga = %saga.id, step = failure.step, "claim saga failed and was compensated");
    Ok((failure.status, Json(body)).into_response())
}

/// `GET /visits/{id}`.
#[utoipa::path(
    get,
    path = "/visits/{id}",
    responses((status = 200, description = "the visit", body = Visit))
)]
async fn read_visit(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Visit>> {
    let row = ctx
        .db
        .query_opt(
            "SELECT patient_id, saga_id, status, verification_id, claim_id, failure
             FROM api.visits WHERE id = $1 AND tenant = $2",
            &[&id, &caller.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("visit {id}")))?;
    Ok(Json(Visit {
        visit_id: id,
        patient_id: row.get(0),
        saga_id: row.get(1),
        status: row.get(2),
        verification_id: row.get(3),
        claim_id: row.get(4),
        failure: row.get::<_, Option<String>>(5).map(|f| json_text(&f)),
    }))
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
    intake,
    read_patient,
    update_patient,
    visit,
    read_visit,
    doctor_preferences,
    analytics,
    audit,
    crate::visits::find,
    crate::visits::events
))]
pub(crate) struct Doc;
