//! The compliance monitor's wire types: what the other services send it
//! (saga events, closed requests, sync failures, violations, accesses) and
//! what it answers them, taken by its handlers and sent by every caller.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /audit/saga-events`: one event of a saga (the claim saga sends
/// them; the monitor keeps the body as the audit row's detail).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SagaEventRecord {
    /// The event's details (ids, the cause of a failure).
    #[serde(default)]
    pub details: SagaDetails,
    /// What happened.
    pub event_type: crate::states::SagaEvent,
    /// The patient it is about.
    pub patient_id: String,
    /// The request it belongs to, when it is not the exchange's own (the
    /// events of several sagas of one tenant sent together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The saga.
    pub saga_id: String,
    /// Which saga (`claim`).
    pub saga_name: crate::states::SagaStep,
    /// At which step.
    pub step: crate::states::SagaStep,
}

impl crate::client::Filed for SagaEventRecord {
    fn take_request_id(&mut self) -> Option<String> {
        self.request_id.take()
    }
}

/// What a saga event records besides its type and step: the ids the step
/// made or undid, or why it failed. Absent fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SagaDetails {
    /// Whether the eligibility answer came from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
    /// Why the step or compensation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<crate::client::Cause>,
    /// The claim created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_id: Option<String>,
    /// The idempotency key of a claim voided (or to be voided) by its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_key: Option<String>,
    /// The steps completed (`saga_completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<crate::states::SagaStep>>,
    /// The verification made or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_id: Option<String>,
    /// The visit the saga runs for (`saga_started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit_id: Option<String>,
}

/// `POST /audit/sync-failures`: a patient sync a holder did not take,
/// for a manual resync.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncFailure {
    /// Why the sync failed.
    pub error: String,
    /// The patient.
    pub patient_id: String,
    /// Always `true`: someone must sync it by hand.
    pub requires_manual_sync: bool,
    /// The holder.
    pub service_name: String,
}

/// `POST /audit/request-closed`: how many audited calls a request made, so
/// that its trail can be checked complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestClosed {
    /// The patient it was about.
    pub patient_id: String,
    /// The request closed, when it is not the exchange's own (the closes
    /// of several requests of one tenant sent together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The saga the request ran.
    pub saga_id: String,
    /// The audited calls it made.
    pub service_calls: u64,
}

impl crate::client::Filed for RequestClosed {
    fn take_request_id(&mut self) -> Option<String> {
        self.request_id.take()
    }
}

/// One access as a service reports it to the compliance monitor
/// (`POST /audit/access`): what was done to what, by whom, where and when.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AccessReport {
    /// `read`, `logout`, `role_change`.
    #[serde(default)]
    pub action: String,
    /// What was accessed: a route (`GET /claims/{id}`), `session`, `role`.
    #[serde(default)]
    pub resource: String,
    /// The patient whose data was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    /// The person a logout or role change concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The role a role change gives (absent: back to their tokens' own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Who acted: a person's id, or a service's name (set by [`record`](super::access::record)).
    #[serde(default)]
    pub actor: String,
    /// The person's role, or `service` (set by [`record`](super::access::record)).
    #[serde(default)]
    pub actor_role: String,
    /// The service that served the access (set by [`record`](super::access::record)).
    #[serde(default)]
    pub service: String,
    /// When, milliseconds since the Unix epoch (set by [`record`](super::access::record)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at_ms: Option<u64>,
    /// The report's own id: a report sent twice is answered once (set by
    /// [`record`](super::access::record)).
    #[serde(default)]
    pub access_id: String,
}

/// An audit event recorded.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Recorded {
    /// Its id (`null` when a test-mode fault plan dropped it).
    pub audit_id: Option<i64>,
}

/// `POST /violations` (from a service's log redaction, or the API's
/// cross-tenant guard).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ViolationReport {
    /// The reporting service.
    pub source: String,
    /// Where it was found (`log` by default).
    #[serde(default = "log_channel")]
    pub channel: String,
    /// The PHI kinds (or the rule) found.
    pub kinds: Vec<String>,
    /// A redacted excerpt.
    pub excerpt: String,
}

/// A violation recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViolationRecorded {
    /// The violation.
    pub violation_id: i64,
    /// The incident it opened.
    pub incident_id: i64,
}

fn log_channel() -> String {
    "log".into()
}
