//! Which patient fields each holder receives (minimum necessary): the
//! policy the intake's sync follows and the compliance monitor checks,
//! below both.

use crate::service::Service;

/// The patient fields each holder needs (minimum necessary, 45 CFR
/// 164.502(b)): insurance verifies eligibility on name, sex and date of
/// birth; billing also needs the address and phone of the claim's
/// subscriber; personalisation greets by name in the patient's language;
/// the compliance monitor correlates by medical record number. No holder
/// receives the SSN; only insurance and billing receive the coverage.
pub const FIELDS_NEEDED: [(Service, &[&str]); 4] = [
    (
        Service::InsuranceVerification,
        &["mrn", "first_name", "last_name", "sex", "birth_date"],
    ),
    (
        Service::BillingEngine,
        &[
            "mrn",
            "first_name",
            "last_name",
            "sex",
            "birth_date",
            "address",
            "phone",
        ],
    ),
    (
        Service::DoctorPersonalization,
        &["first_name", "last_name", "preferred_language"],
    ),
    (Service::ComplianceMonitor, &["mrn"]),
];
