//! Business intelligence's wire types: the batch of events the claim saga
//! and the compliance monitor send to POST /events, and its answer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One event (the `AnalyticsEvent` fixture's shape; extra fields ignored).
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Event {
    /// What is measured.
    pub metric: String,
    /// Its value.
    pub value: f64,
    /// When given, must be the caller's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Free-form dimensions.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub dimensions: Value,
}

/// `POST /events`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Batch {
    /// The events, at most [`super::MAX_BATCH`].
    pub events: Vec<Event>,
}

/// `POST /events` answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ingested {
    /// Events stored.
    pub ingested: usize,
}
