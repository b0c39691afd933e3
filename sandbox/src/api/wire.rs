//! The healthcare API's wire types: the requests its routes take from
//! clients (patient intake and update, visits, the query strings of its
//! reads) and the answers it gives, each deriving both `Serialize` and
//! `Deserialize` so that a client in Rust can send and read the same type.
//! The handlers are in `patients`, `saga` and `visits`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::states::{CompensationOutcome, VisitStatus};

/// `POST /patients`: `{"patient": {...}, "coverage": {...}}` (the
/// `Patient` and `Coverage` fixtures' shapes).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Intake {
    /// The patient (the `Patient` fixture's shape; `mrn` required).
    pub patient: Value,
    /// The patient's coverage.
    pub coverage: Coverage,
}

/// A patient's coverage (the `Coverage` fixture's shape).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Coverage {
    /// The payer.
    pub payer: Payer,
    /// Empty for self-pay.
    #[serde(default)]
    pub member_id: String,
    /// `YYYY-MM-DD`.
    pub effective: String,
    /// `YYYY-MM-DD`, when it ends.
    #[serde(default)]
    pub termination: Option<String>,
    /// The patient's share.
    #[serde(default)]
    pub coinsurance_pct: u8,
}

/// A payer.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Payer {
    /// Its id.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
}

/// What an intake or an update answers: the patient's id and where its
/// copies went.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PatientSynced {
    /// The API's patient id.
    pub patient_id: String,
    /// The holders that took their copy.
    pub synced: Vec<String>,
    /// The holders that did not (each audited for a manual resync).
    pub sync_failed: Vec<String>,
}

/// `GET /patients/{id}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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

/// `PUT /patients/{id}`: `{"patient": {...}}`, the fields that change
/// (`mrn` cannot). The record is updated (sealed fields resealed) and each
/// holder receives its new cut; a failed sync is audited as at intake.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PatientUpdate {
    /// The fields that change.
    #[schema(value_type = Object)]
    pub patient: serde_json::Map<String, Value>,
}

/// `POST /visits`: `{"patient_id": …, "visit": {...}}` (the `Visit`
/// fixture's shape: `rendering_npi`, `date_of_service`, `diagnoses[].code`,
/// `lines[].procedure_code`, `lines[].charge_cents`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VisitRequest {
    /// The API's patient id.
    pub patient_id: String,
    /// The visit.
    pub visit: VisitIn,
}

/// The visit of a [`VisitRequest`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VisitIn {
    /// The rendering provider's NPI.
    pub rendering_npi: String,
    /// `YYYY-MM-DD`.
    pub date_of_service: String,
    /// The diagnoses.
    pub diagnoses: Vec<DiagnosisIn>,
    /// The procedures.
    pub lines: Vec<LineIn>,
}

/// One diagnosis of a [`VisitIn`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DiagnosisIn {
    /// The ICD-10-CM code.
    pub code: String,
}

/// One procedure of a [`VisitIn`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LineIn {
    /// The CPT/HCPCS code.
    pub procedure_code: String,
    /// Its charge.
    pub charge_cents: i64,
}

/// `POST /visits` answered: the saga completed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    pub cause: crate::client::Cause,
    /// The compensations run, in order.
    pub compensations: Vec<Compensation>,
    /// The request's id.
    pub request_id: String,
}

/// One compensation of a failed saga.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Compensation {
    /// The step compensated.
    pub step: String,
    /// `completed`, `failed`, or `pending`: the peer could not be reached;
    /// the API keeps the compensation and makes it once the peer answers
    /// (a claim whose create went unanswered is voided by its key).
    #[schema(value_type = String)]
    pub outcome: CompensationOutcome,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub cause: Option<crate::client::Cause>,
}

/// `GET /visits/{id}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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

/// `GET /visits?request_id=…`: the query.
#[derive(Debug, Serialize, Deserialize)]
pub struct FindQuery {
    /// The request that started the visits.
    pub request_id: String,
}

/// `GET /visits?request_id=…`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VisitsFound {
    /// In the order they started.
    pub visits: Vec<VisitState>,
}

/// A visit's state; also each event of its stream.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VisitState {
    /// The visit.
    pub visit_id: String,
    /// `pending`, `verifying`, `billing`, `completed` or `failed`.
    #[schema(value_type = String)]
    pub status: VisitStatus,
}

/// `GET /analytics/aggregates?metric=…`: the query.
#[derive(Debug, Serialize, Deserialize)]
pub struct AnalyticsQuery {
    /// One metric; all when absent.
    pub metric: Option<String>,
}

/// `GET /audit?…`: the query.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditQuery {
    /// One request's trail.
    pub request_id: Option<String>,
    /// One saga's events.
    pub saga_id: Option<String>,
    /// One kind of entry.
    pub kind: Option<String>,
}
