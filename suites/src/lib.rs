//! What the shipped suites stand on: the system under test as the
//! [`Target`] fixture (the in-process sandbox, or a running system described by
//! a target file), and what a test may do to it as fixtures
//! ([`capabilities`]): a target without a capability skips the test that
//! asks for it, with the reason.
//!
//! The suites themselves are `tests/suites.rs`, one `harness = false`
//! binary laid out as seed 000's tree.

pub mod capabilities;
pub mod contract;
pub mod target;
pub mod turns;

pub use capabilities::{
    Breakers, CacheKeys, ClientPolicy, Edge, Faults, LoadBudget, Logs, OwnMesh, PrivateMesh,
    Restarts, Revocation, Rows, SignTokens, StoreToxics, TlsTarget, Toxics,
};
pub use target::{Capability, Restarter, Target, TargetError};

/// An error with its causes, `a: b: c`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cause = c.source();
    }
    s
}
