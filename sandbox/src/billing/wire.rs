//! The billing engine's wire types: what the claim saga sends to `POST
//! /claims` and `POST /claims/void` and reads back.

use serde::{Deserialize, Serialize};

/// One procedure on a claim.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Line {
    /// The CPT/HCPCS code.
    pub code: String,
    /// Its charge.
    #[serde(default)]
    pub charge_cents: i64,
}

/// `POST /claims` (the claim saga's second step sends it).
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct CreateClaim {
    /// The patient.
    pub patient_id: String,
    /// The verification it follows.
    pub verification_id: String,
    /// The rendering provider's NPI.
    pub npi: String,
    /// ICD-10-CM codes.
    pub diagnoses: Vec<String>,
    /// The procedures and their charges.
    pub procedures: Vec<Line>,
}

/// A claim (read back by the claim saga).
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Claim {
    /// Its id.
    pub claim_id: String,
    /// The patient.
    pub patient_id: String,
    /// The verification it follows.
    pub verification_id: String,
    /// The rendering provider's NPI.
    pub npi: String,
    /// ICD-10-CM codes.
    pub diagnoses: Vec<String>,
    /// The procedures and their charges.
    pub procedures: Vec<Line>,
    /// The sum of the charges.
    pub total_cents: i64,
    /// `submitted` or `cancelled`.
    pub status: String,
    /// Present (`true`) when a repeated create answers the first one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<bool>,
}

/// `POST /claims/void`: which claim to void.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct VoidClaim {
    /// The idempotency key the claim was (or may have been) created with.
    pub idempotency_key: String,
}

/// `POST /claims/void` answered.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Voided {
    /// The claim cancelled, or none: no claim was made with that key.
    pub voided: Option<String>,
}

/// One problem of a claim refused with `422 invalid_claim` (the error
/// body's `fields`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct FieldProblem {
    /// The field (`npi`, `diagnoses[0]`, `procedures[1].code`).
    pub field: String,
    /// What is wrong with it (`npi_format`, `icd10cm_not_billable`, …).
    pub code: String,
    /// The same in words.
    pub message: String,
}
