//! A test harness for distributed services: `#[service_test]` functions with
//! markers and fixtures, run concurrently on tokio, speaking libtest's
//! protocol so `cargo test` and `cargo nextest run` drive it.
//!
//! A test binary is a `harness = false` test target:
//!
//! ```ignore
//! // Cargo.toml:  [[test]] name = "suites"  harness = false
//! use service_test::{service_test, fixture, marker, FixtureCx, FixtureError, TestRng};
//! use rand_core::RngCore;
//!
//! marker!(billing_rules, "claim validation rules of the billing engine");
//!
//! pub struct Claim { pub total_cents: u64 }
//!
//! #[fixture]
//! async fn claim(cx: &mut FixtureCx) -> Result<Claim, FixtureError> {
//!     Ok(Claim { total_cents: 1_000 + cx.rng().next_u64() % 10_000 })
//! }
//!
//! #[service_test(unit, billing_rules, timeout = "5s")]
//! async fn a_claim_has_a_positive_total(claim: Claim) {
//!     assert!(claim.total_cents > 0);
//! }
//!
//! #[service_test(unit)]
//! fn sync_tests_run_on_the_blocking_pool(mut rng: TestRng) -> Result<(), String> {
//!     (rng.next_u32() != rng.next_u32()).then_some(()).ok_or("same draw twice".into())
//! }
//!
//! service_test::main!();
//! ```
//!
//! The pipeline, one module per stage: the command line, the environment
//! and the config file are settled once into a run plan (`runner::plan`),
//! the process's role is chosen in one place (`runner`), then [`registry`]
//! → [`marker`](mod@marker) filter and selection → [`schedule`] → the executor (with
//! [`fixture`](mod@fixture)s), in this process or in supervised workers → the libtest
//! console and the [`report`]s → [`history`] for the next run's order. What
//! passes between the stages (an [`Outcome`], a [`TestRecord`], a worker's
//! event) lives in a leaf module, `events`, that none of them owns; the
//! `SERVICE_TEST_*` variables are named and read in one, `env`. The stages
//! are private: what other crates use is re-exported here or lives in a
//! public module.
#![deny(missing_docs)]

// The stages and what passes between them: private rooms (see
// `runner`); what other crates use is re-exported below or lives in
// one of the public modules.
mod capture;
pub mod cli;
pub mod config;
mod duration;
mod env;
mod events;
mod execute;
pub mod fixture;
mod guards;
pub mod history;
pub mod host;
mod leak;
pub mod marker;
mod metrics;
mod output;
mod panic;
pub mod partition;
pub mod preflight;
mod redaction;
pub mod registry;
pub mod report;
pub mod retry;
mod runner;
pub mod schedule;
pub mod seed;
mod select;
mod signals;
mod supervisor;
mod worker;
mod zygote;

use std::future::Future;
use std::pin::Pin;

pub use events::{Outcome, OutcomeLabel, TestRecord};
pub use fixture::{
    Fixture, FixtureCx, FixtureError, Held, Scope, TeardownOutput, TestInfo, TestRng,
};
pub use harness_macros::{fixture, service_test};
pub use marker::{Marker, markers};
pub use metrics::{Metric, Metrics};
pub use runner::{run, run_with};

/// A boxed, sendable future, as test bodies and teardowns are stored.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a test may return: `Ok(())` passes, an error fails with its `Debug` text.
pub type TestResult<E = Box<dyn std::error::Error + Send + Sync>> = Result<(), E>;

/// Declares a user marker, usable in `#[service_test(...)]` and in marker
/// expressions, and listed by `--markers`.
///
/// ```ignore
/// service_test::marker!(tenant_isolation, "one tenant never sees another's data");
/// ```
#[macro_export]
macro_rules! marker {
    ($name:ident, $description:literal $(,)?) => {
        #[allow(non_upper_case_globals, dead_code)]
        pub const $name: $crate::Marker = $crate::Marker {
            name: ::core::stringify!($name),
            description: $description,
        };
        $crate::__private::inventory::submit! {
            $crate::Marker { name: ::core::stringify!($name), description: $description }
        }
    };
}

/// Declares a concurrency group: at most `max_concurrent` tests with
/// `group = "name"` run at once. Groups that are used but never declared
/// allow one test at a time.
///
/// ```ignore
/// service_test::test_group!("postgres-admin", 2);
/// ```
#[macro_export]
macro_rules! test_group {
    ($name:literal, $max_concurrent:expr $(,)?) => {
        const _: () = ::core::assert!(
            $max_concurrent > 0,
            "test_group!: a group must allow at least one test at a time"
        );
        $crate::__private::inventory::submit! {
            $crate::registry::GroupDef { name: $name, max_concurrent: $max_concurrent }
        }
    };
}

/// Defines `main` for a `harness = false` test binary: parse the command
/// line, run the registered tests, exit with libtest's exit code.
#[macro_export]
macro_rules! main {
    () => {
        fn main() -> ::std::process::ExitCode {
            $crate::run()
        }
    };
}

/// Items the macros expand to. Not a public API.
#[doc(hidden)]
pub mod __private {
    use std::fmt::Debug;

    pub use crate::fixture::{Held, TestCx};
    pub use crate::registry::{BodyResult, Case, TestDef, Verdict};
    pub use inventory;

    use crate::fixture::{Fixture, FixtureError, Scope};

    /// What a `#[service_test]` function may return.
    #[diagnostic::on_unimplemented(
        message = "a #[service_test] function must return `()` or `Result<(), E>` with `E: Debug`, not `{Self}`",
        label = "unsupported return type"
    )]
    pub trait IntoVerdict {
        fn into_verdict(self) -> Verdict;
    }

    impl IntoVerdict for () {
        fn into_verdict(self) -> Verdict {
            Verdict::Pass
        }
    }

    impl<E: Debug> IntoVerdict for Result<(), E> {
        fn into_verdict(self) -> Verdict {
            match self {
                Ok(()) => Verdict::Pass,
                Err(e) => Verdict::Fail(format!("{e:?}")),
            }
        }
    }

    /// Turns a test's return value into a verdict (spanned on the return type).
    pub fn verdict<R: IntoVerdict>(r: R) -> Verdict {
        r.into_verdict()
    }

    /// Runs a sync test body on the blocking pool; a panic there resumes in
    /// the calling task, so it is reported like an async test's panic.
    pub async fn blocking<F>(body: F) -> Verdict
    where
        F: FnOnce() -> Verdict + Send + 'static,
    {
        let capture = crate::capture::current();
        let handle = tokio::task::spawn_blocking(move || crate::capture::with_sync(capture, body));
        let blocking_task = handle.id();
        match handle.await {
            Ok(v) => v,
            Err(e) if e.is_panic() => {
                if let Some(me) = tokio::task::try_id() {
                    crate::panic::move_location(blocking_task, me);
                }
                std::panic::resume_unwind(e.into_panic())
            }
            Err(_) => Verdict::Fail("the test's thread was cancelled".to_string()),
        }
    }

    /// For a compile-time check: may `T` be taken by value (test scope)?
    pub const fn is_test_scoped<T: Fixture>() -> bool {
        matches!(T::SCOPE, Scope::Test)
    }

    /// For a compile-time check: is `T`'s scope narrower than `scope`?
    pub const fn is_narrower<T: Fixture>(scope: Scope) -> bool {
        (T::SCOPE as u8) < (scope as u8)
    }

    /// A `#[fixture]` function's error, as a [`FixtureError`] (kept as it
    /// is when it already is one, so `FixtureError::skip` still skips).
    pub fn fixture_error<E: std::fmt::Display + 'static>(e: E) -> FixtureError {
        match (&e as &dyn std::any::Any).downcast_ref::<FixtureError>() {
            Some(fe) => fe.clone(),
            None => FixtureError::new(e),
        }
    }
}
