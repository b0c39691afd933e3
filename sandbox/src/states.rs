//! The states things of the mesh move through, as enums serialized exactly
//! as the strings the wire and the database hold: a visit's status (and
//! the change the visit streams announce). Below the service state
//! ([`crate::ctx::Ctx`] carries the changes), so any module may name them.

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
