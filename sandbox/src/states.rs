//! The states things of the mesh move through, as enums serialized exactly
//! as the strings the wire and the database hold: a visit's status (and
//! the change the visit streams announce), the claim saga's steps and
//! events, a compensation's outcome, an incident's violation, severity
//! and state. Below the service state
//! (`ctx::Ctx` carries the changes), so any module may name them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A visit's status (seed 004): `pending` → `verifying` → `billing` →
/// `completed` or `failed`; the last two are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitStatus {
    /// Stored, the saga not yet started.
    Pending,
    /// Insurance is being verified.
    Verifying,
    /// The claim is being filed.
    Billing,
    /// Verified and billed (terminal).
    Completed,
    /// The saga failed and was compensated (terminal).
    Failed,
}

impl VisitStatus {
    /// Every status, in order.
    pub const ALL: [VisitStatus; 5] = [
        VisitStatus::Pending,
        VisitStatus::Verifying,
        VisitStatus::Billing,
        VisitStatus::Completed,
        VisitStatus::Failed,
    ];

    /// The string the wire and `api.visits.status` hold.
    pub fn as_str(self) -> &'static str {
        match self {
            VisitStatus::Pending => "pending",
            VisitStatus::Verifying => "verifying",
            VisitStatus::Billing => "billing",
            VisitStatus::Completed => "completed",
            VisitStatus::Failed => "failed",
        }
    }

    /// Is this a final state (the stream closes after it)?
    pub fn is_terminal(self) -> bool {
        matches!(self, VisitStatus::Completed | VisitStatus::Failed)
    }
}

impl fmt::Display for VisitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`VisitStatus`].
#[derive(Debug, thiserror::Error)]
#[error("not a visit status: {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for VisitStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VisitStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// A string enum: serialized, displayed and parsed as exactly the strings
/// the wire and the database hold.
macro_rules! named {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v,)+
        }

        impl $name {
            /// The string the wire and the database hold.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named! {
    /// A step of the claim saga, as its events and failures name it.
    SagaStep {
        /// The saga as a whole (its start and end events).
        Claim = "claim",
        /// Step 1: insurance eligibility (compensated by cancelling the
        /// verification).
        VerifyInsurance = "verify_insurance",
        /// Step 2: the claim (compensated by voiding it by its key).
        CreateClaim = "create_claim",
        /// Not a saga step: a read the API passes through to a peer, whose
        /// failure is answered in a step's shape.
        Read = "read",
    }
}

named! {
    /// What a saga event sent to the compliance monitor says happened.
    SagaEvent {
        /// The saga began.
        SagaStarted = "saga_started",
        /// A step completed.
        StepCompleted = "step_completed",
        /// Every step completed.
        SagaCompleted = "saga_completed",
        /// A step failed; compensations follow.
        SagaFailed = "saga_failed",
        /// A compensation is kept, to be made once the peer answers.
        CompensationPending = "compensation_pending",
        /// A compensation was made.
        CompensationCompleted = "compensation_completed",
        /// A compensation failed.
        CompensationFailed = "compensation_failed",
    }
}

named! {
    /// How a compensation of a failed saga went.
    CompensationOutcome {
        /// Made.
        Completed = "completed",
        /// Failed.
        Failed = "failed",
        /// The peer could not be reached: kept, made once it answers.
        Pending = "pending",
    }
}

named! {
    /// The rule a recorded violation broke (`compliance.incidents.violation`).
    ViolationCode {
        /// PHI in a log line.
        PhiInLog = "phi_in_log",
        /// PHI in a response.
        PhiInResponse = "phi_in_response",
        /// Another tenant's data reached.
        CrossTenantAccess = "cross_tenant_access",
        /// Fields beyond what a recipient's purpose needs.
        MinimumNecessary = "minimum_necessary",
        /// A call missing from the audit trail.
        MissingAuditEvent = "missing_audit_event",
        /// PHI found by a scan.
        PhiDetected = "phi_detected",
    }
}

named! {
    /// How bad an incident is.
    Severity {
        /// Low.
        Low = "low",
        /// Medium: a gap in the trail, an excess field.
        Medium = "medium",
        /// High: PHI out.
        High = "high",
        /// Critical: another tenant reached, or an SSN out.
        Critical = "critical",
    }
}

named! {
    /// Where an incident stands (`compliance.incidents.status`).
    IncidentState {
        /// Opened, nobody has looked.
        Open = "open",
        /// Someone is on it.
        Acknowledged = "acknowledged",
        /// Closed, with a resolution.
        Resolved = "resolved",
    }
}

named! {
    /// What an audit row records (`compliance.audit_events.kind`).
    AuditKind {
        /// A service-to-service call, reported by its caller.
        ServiceCall = "service_call",
        /// A request's count of audited calls (its trail can be checked).
        RequestClosed = "request_closed",
        /// An event of a saga.
        SagaEvent = "saga_event",
        /// A patient sync a holder did not take.
        SyncFailure = "sync_failure",
        /// A read of a patient's data (the access log).
        Access = "access",
        /// A step of an incident.
        Incident = "incident",
    }
}

named! {
    /// How a PHI finding was found: `phi::Via` as the scan answer spells it.
    FoundVia {
        /// A registered synthetic value.
        Canary = "canary",
        /// A pattern detector.
        Pattern = "pattern",
    }
}

impl From<phi::Via> for FoundVia {
    fn from(via: phi::Via) -> Self {
        match via {
            phi::Via::Canary => FoundVia::Canary,
            phi::Via::Pattern => FoundVia::Pattern,
        }
    }
}

/// A visit changed state.
#[derive(Debug, Clone)]
pub struct StatusChange {
    /// Whose.
    pub tenant: String,
    /// Which visit.
    pub visit_id: String,
    /// The new state.
    pub status: VisitStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_written_and_read_as_its_string() {
        for s in VisitStatus::ALL {
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
            assert_eq!(s.as_str().parse::<VisitStatus>().ok(), Some(s));
        }
        assert!("done".parse::<VisitStatus>().is_err());
        assert!(VisitStatus::Failed.is_terminal() && !VisitStatus::Billing.is_terminal());
    }
}
