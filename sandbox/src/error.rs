//! The one error shape every service answers: a status and a JSON body
//! `{"error": code, "message": …}`, messages PHI-redacted.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error answer: a status and a JSON body `{"error": code, "message": …}`
/// (plus details). Messages pass through PHI redaction.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
}

impl ApiError {
    /// An error with a machine-readable `code` and a message.
    pub fn new(status: StatusCode, code: &str, message: impl fmt::Display) -> Self {
        ApiError {
            status,
            body: json!({"error": code, "message": phi::redact(&message.to_string())}),
        }
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

    /// Adds a field to the body.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        if let Some(o) = self.body.as_object_mut() {
            o.insert(key.to_string(), value);
        }
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match &e {
            StoreError::Redis { .. } => {
                tracing::warn!("storage unavailable: {e}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cache_unavailable",
                    "Redis is unavailable; the request was not carried out, retry later",
                )
            }
            _ if e.is_unavailable() => {
                tracing::warn!("storage unavailable: {e}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    format!("the database is unavailable ({e}); retry later"),
                )
            }
            _ => ApiError::internal("storage", e),
        }
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;
