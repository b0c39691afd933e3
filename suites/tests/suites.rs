//! The shipped suites: one `harness = false` binary, laid out as seed 000's
//! tree (plus seed 001's contracts, config and health), run against the
//! [`suites::Target`]: the in-process sandbox by default, or a running system
//! with `--target FILE`.
//!
//! ```text
//! cargo test -p suites                             # against the in-process sandbox
//! cargo test -p suites -- --marker resilience      # one folder's marker
//! cargo test -p suites -- --target t.toml          # against `sandbox up --write-target t.toml`
//! ```
//!
//! Tests that need what a target may not allow ask for it as a fixture
//! (`Faults`, `Logs`, `Rows`, `CacheKeys`, `SignTokens`, `LoadBudget`,
//! `PrivateMesh`) and are skipped with the reason when it lacks it.

mod common;

mod compliance;
mod config;
mod contracts;
mod health;
mod integration;
mod performance;
mod resilience;
mod security;
mod unit;

harness::main!();
