//! Injected faults (test mode): what `POST /admin/faults` sets and the
//! request gate applies.

use serde::Deserialize;

/// Faults to inject into a service (test mode only), set through
/// `POST /admin/faults`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FaultPlan {
    /// Fail this many of the next matching requests.
    pub fail_next: u32,
    /// With this status (default 503).
    pub status: Option<u16>,
    /// Delay every matching request by this much.
    pub latency_ms: u64,
    /// The `fail_next` matching requests are handled, and their answers
    /// lost: the connection breaks after the status line, before the body
    /// (a reply lost on the way back, the request's effect made).
    #[serde(default)]
    pub lose_reply: bool,
    /// Write this text into a log line of the next matching request (a PHI
    /// leak the log redaction and the compliance monitor must catch).
    pub leak_phi: Option<String>,
    /// The compliance monitor acknowledges the service-call audit event
    /// numbered this (`seq`) but does not keep it: a dropped audit event
    /// that `/audit/completeness` must detect.
    pub drop_audit_seq: Option<u64>,
    /// Only requests of this tenant match.
    pub tenant: Option<String>,
    /// Only requests whose path starts with this match.
    pub path_prefix: Option<String>,
    /// Only requests with this `X-Request-ID` match (the calls a service
    /// makes for a request carry its id).
    pub request_id: Option<String>,
}

impl FaultPlan {
    /// Does a request of `tenant` to `path`, with `request_id`, match?
    pub fn matches(&self, tenant: &str, path: &str, request_id: &str) -> bool {
        self.tenant.as_ref().is_none_or(|t| t == tenant)
            && self.request_id.as_ref().is_none_or(|r| r == request_id)
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| path.starts_with(p.as_str()))
    }
}
