//! Doctor personalisation's wire types: what `PUT
//! /doctors/{npi}/preferences` takes and what it and `GET` answer (the
//! API passes the `GET` through to its callers as it is).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `PUT /doctors/{npi}/preferences`: the preferences themselves, a JSON
/// object (anything else is answered `422 invalid_preferences`).
/// (Documented as `Object`, as it was before it had a type.)
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NewPreferences(pub Value);

/// A doctor's preferences.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Preferences {
    /// The doctor's NPI.
    pub npi: String,
    /// The preferences as stored (a JSON object).
    #[schema(value_type = Object)]
    pub preferences: Value,
}
