//! # service-test
//!
//! Tests for a mesh of services, in one crate: `#[service_test]` functions
//! with compile-time markers, fixtures resolved by parameter type, a
//! supervised parallel runner that speaks libtest's protocol (so
//! `cargo test` and `cargo nextest run` drive it unchanged), redaction of
//! PHI in every failure message, and — behind features, all on by default —
//! synthetic healthcare data, PHI detection, real PostgreSQL and Redis per
//! test, traffic shaping and load, and target files for a deployment under
//! test.
//!
//! A test binary is a `harness = false` test target ending in
//! [`main!`]:
//!
//! ```toml
//! [dev-dependencies]
//! service-test = "0.1"
//!
//! [[test]]
//! name = "services"
//! harness = false
//! ```
//!
//! ```ignore
//! use service_test::{FixtureCx, FixtureError, fixture, marker, service_test};
//!
//! marker!(billing_rules, "claim validation rules of the billing engine");
//!
//! pub struct Claim {
//!     pub total_cents: u64,
//! }
//!
//! #[fixture]
//! async fn claim(_cx: &mut FixtureCx) -> Result<Claim, FixtureError> {
//!     Ok(Claim { total_cents: 1_250 })
//! }
//!
//! #[service_test(unit, billing_rules, timeout = "5s")]
//! async fn a_claim_has_a_positive_total(claim: Claim) {
//!     assert!(claim.total_cents > 0);
//! }
//!
//! service_test::main!();
//! ```
//!
//! Run it with `cargo test --test services -- --marker unit` (name the
//! target: a library's libtest target would refuse the harness's flags).
//!
//! The macros find this crate under the name your `Cargo.toml` gives it, so
//! `st = { package = "service-test", version = "0.1" }` works with
//! `#[st::service_test]` and `st::main!()`.
//!
//! Everything the harness offers is re-exported at the root (see
//! [`service_test_harness`]'s items below); the companion crates are
//! modules:
//!
//! | feature | module | what |
//! |---|---|---|
//! | `phi` | [`phi`] | PHI detection: validators, Safe Harbor detectors, canaries, redaction |
//! | `healthcare-data` | [`healthcare_data`] | synthetic patients, visits and claims, as fixtures and in bulk |
//! | `provision` | [`provision`] | real PostgreSQL and Redis: [`provision::TestDb`], [`provision::TestRedis`], `migration!` |
//! | `traffic` | [`traffic`] | a chaos proxy with Toxiproxy's API, HTTP stubs, a load generator |
//! | `deployment` | [`deployment`] | the target file that describes a deployment under test |
#![deny(missing_docs)]

pub use harness::*;

/// The harness itself, for paths that name it (`service_test::service_test_harness::cli`).
pub use harness as service_test_harness;

#[cfg(feature = "phi")]
pub use phi;

#[cfg(feature = "healthcare-data")]
pub use healthcare_data;

#[cfg(feature = "provision")]
pub use provision;

#[cfg(feature = "traffic")]
pub use traffic;

#[cfg(feature = "deployment")]
pub use deployment;
