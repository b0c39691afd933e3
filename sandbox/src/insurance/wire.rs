//! Insurance verification's wire types: what the claim saga sends to `POST
//! /verify` and reads back.

use serde::{Deserialize, Serialize};

/// `POST /verify` (the claim saga's first step sends it).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerifyRequest {
    /// The patient.
    pub patient_id: String,
    /// The payer.
    pub payer_id: String,
    /// Empty for self-pay.
    #[serde(default)]
    pub member_id: String,
    /// Coverage period (`YYYY-MM-DD`).
    pub effective: String,
    /// The coverage's end (`YYYY-MM-DD`), if it has one.
    pub termination: Option<String>,
    /// The patient's share, percent.
    #[serde(default)]
    pub coinsurance_pct: u8,
    /// `YYYY-MM-DD`.
    pub date_of_service: String,
    /// The procedure codes.
    pub procedures: Vec<String>,
}

/// A verification (read back by the claim saga).
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verification {
    /// Its id.
    pub verification_id: String,
    /// The patient.
    pub patient_id: String,
    /// The payer.
    pub payer_id: String,
    /// `YYYY-MM-DD`.
    pub date_of_service: String,
    /// The procedures asked about.
    pub procedures: Vec<String>,
    /// Covered on that date.
    pub eligible: bool,
    /// The share the payer covers.
    pub coverage_pct: i32,
    /// Why.
    pub reason: String,
    /// Answered from the eligibility cache.
    pub cached: bool,
    /// `active` or `cancelled`.
    pub status: String,
    /// Present (`true`) when a repeated create answers the first one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<bool>,
}
