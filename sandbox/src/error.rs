//! The one error shape every service answers: a status and a JSON body
//! `{"error": code, "message": …}` ([`ErrorBody`], plus details), messages
//! PHI-redacted. The handlers, the gate and the access checks all answer
//! through [`ApiError`]; a caller reads a peer's error as an [`ErrorBody`].

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// The one error shape: every `4xx`/`5xx` of every service is JSON with a
/// machine-readable `error` and a PHI-redacted `message`, plus details
/// (`fields`, `reason`, `cause`, …) that depend on the error.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The machine-readable code (`not_found`, `invalid_claim`, …).
    pub error: String,
    /// A human-readable explanation, PHI-redacted.
    pub message: String,
    /// The details that depend on the error (`fields`, `reason`, …), beside
    /// `error` and `message` in the JSON.
    #[serde(flatten)]
    #[schema(ignore)]
    pub details: Map<String, Value>,
}

/// An error answer: a status and an [`ErrorBody`]. Messages pass through
/// PHI redaction.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with a machine-readable `code` and a message (redacted).
    pub fn new(status: StatusCode, code: &str, message: impl fmt::Display) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: code.to_string(),
                message: phi::redact(&message.to_string()),
                details: Map::new(),
            },
        }
    }

    /// `401 unauthorized`, its reason also as `reason` (kept for clients of
    /// the first version).
    pub fn unauthorized(reason: impl fmt::Display) -> Self {
        let e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason);
        let reason = Value::String(e.body.message.clone());
        e.with("reason", reason)
    }

    /// `403 forbidden`, its reason also as `reason` (kept for clients of the
    /// first version).
    pub fn forbidden(reason: impl fmt::Display) -> Self {
        let e = ApiError::new(StatusCode::FORBIDDEN, "forbidden", reason);
        let reason = Value::String(e.body.message.clone());
        e.with("reason", reason)
    }

    /// `404 not_found`.
    pub fn not_found(what: impl fmt::Display) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
    }

    /// `400 bad_request`.
    pub fn bad_request(message: impl fmt::Display) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// `500 internal`: logged, and answered without the detail.
    pub fn internal(context: &str, e: impl fmt::Display) -> Self {
        tracing::error!("{context}: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context} failed"),
        )
    }

    /// Adds a detail to the body.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.body.details.insert(key.to_string(), value);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;
