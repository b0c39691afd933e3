//! The events that pass between the stages of a run and its reporters
//! (after nextest's `reporter/events.rs`): how a test ended ([`Outcome`],
//! in one word [`OutcomeLabel`]), its [`TestRecord`], what a worker process
//! tells its supervisor ([`Event`]), and what history hands a test's result
//! line ([`Recent`], [`FigureHistory`]).
//!
//! A leaf: the executor, the supervisor, the worker, the reporters and
//! history all read these types, and this module reads none of theirs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::Metric;

/// How a test ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum Outcome {
    /// The body returned `()` or `Ok(())` (possibly after retries: see [`TestRecord::flaky`]).
    Passed,
    /// The body returned an error or panicked; the message says which.
    Failed(String),
    /// A fixture could not be set up or torn down: the test could not be judged.
    Error(String),
    /// The body ran past its timeout.
    TimedOut(Duration),
    /// A fixture said the test cannot run here (e.g. no PostgreSQL).
    Skipped(String),
    /// Never started (`--fail-fast` stopped the run first, or it was interrupted).
    NotRun(String),
    /// The process running it died (abort, signal, `exit()`): found by
    /// re-running the tests in flight one at a time; the message says how
    /// it died and what it printed.
    Crashed(String),
}

impl Outcome {
    /// Failed, error, timed out or crashed: the kinds that fail a run.
    pub fn is_failure(&self) -> bool {
        self.label().is_failure()
    }

    /// Its kind, as reports name it (a flaky pass is [`TestRecord::label`]'s).
    pub fn label(&self) -> OutcomeLabel {
        match self {
            Outcome::Passed => OutcomeLabel::Passed,
            Outcome::Failed(_) => OutcomeLabel::Failed,
            Outcome::Error(_) => OutcomeLabel::Error,
            Outcome::TimedOut(_) => OutcomeLabel::TimedOut,
            Outcome::Skipped(_) => OutcomeLabel::Skipped,
            Outcome::NotRun(_) => OutcomeLabel::NotRun,
            Outcome::Crashed(_) => OutcomeLabel::Crashed,
        }
    }

    /// The same outcome with its message passed through `f` (to redact it).
    pub fn map_message(&self, f: impl Fn(&str) -> String) -> Outcome {
        match self {
            Outcome::Passed => Outcome::Passed,
            Outcome::Failed(m) => Outcome::Failed(f(m)),
            Outcome::Error(m) => Outcome::Error(f(m)),
            Outcome::TimedOut(d) => Outcome::TimedOut(*d),
            Outcome::Skipped(m) => Outcome::Skipped(f(m)),
            Outcome::NotRun(m) => Outcome::NotRun(f(m)),
            Outcome::Crashed(m) => Outcome::Crashed(f(m)),
        }
    }

    /// The human message, for failures, errors, skips.
    pub fn message(&self) -> Option<String> {
        match self {
            Outcome::Passed => None,
            Outcome::Failed(m)
            | Outcome::Error(m)
            | Outcome::Skipped(m)
            | Outcome::NotRun(m)
            | Outcome::Crashed(m) => Some(m.clone()),
            Outcome::TimedOut(d) => {
                Some(format!("timed out after {}", crate::duration::format(*d)))
            }
        }
    }
}

/// The one word every report and history use for how a test ended:
/// [`Outcome`]'s kind, with `flaky` for a pass after a failure. Written as
/// `passed`, `flaky`, `failed`, `error`, `timed-out`, `crashed`,
/// `skipped`, `not-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeLabel {
    /// Passed on its first attempt.
    Passed,
    /// Passed after failing.
    Flaky,
    /// The body failed.
    Failed,
    /// A fixture failed: not judged.
    Error,
    /// Ran past its timeout.
    TimedOut,
    /// Its process died.
    Crashed,
    /// Could not run here.
    Skipped,
    /// Never started.
    NotRun,
}

impl OutcomeLabel {
    /// Failed, error, timed out or crashed: the kinds that fail a run.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            OutcomeLabel::Failed
                | OutcomeLabel::Error
                | OutcomeLabel::TimedOut
                | OutcomeLabel::Crashed
        )
    }

    /// Passed, flaky or not.
    pub fn is_pass(self) -> bool {
        matches!(self, OutcomeLabel::Passed | OutcomeLabel::Flaky)
    }

    /// Skipped or never started: tells nothing about the test.
    pub fn is_skip(self) -> bool {
        matches!(self, OutcomeLabel::Skipped | OutcomeLabel::NotRun)
    }

    /// The word, as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeLabel::Passed => "passed",
            OutcomeLabel::Flaky => "flaky",
            OutcomeLabel::Failed => "failed",
            OutcomeLabel::Error => "error",
            OutcomeLabel::TimedOut => "timed-out",
            OutcomeLabel::Crashed => "crashed",
            OutcomeLabel::Skipped => "skipped",
            OutcomeLabel::NotRun => "not-run",
        }
    }
}

impl std::fmt::Display for OutcomeLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TestRecord {
    /// The record of a test that did not run its attempts (skipped,
    /// not run, crashed, killed): no attempt figures, no output.
    pub fn without_run(name: impl Into<String>, outcome: Outcome) -> TestRecord {
        TestRecord {
            name: name.into(),
            outcome,
            attempts: 0,
            flaky: false,
            earlier_failures: Vec::new(),
            duration: Duration::ZERO,
            shared_setup: Duration::ZERO,
            metrics: Vec::new(),
            slow: false,
            stdout: None,
            stderr: None,
        }
    }

    /// How it ended, in one word (`flaky` for a pass after a failure).
    pub fn label(&self) -> OutcomeLabel {
        match (&self.outcome, self.flaky) {
            (Outcome::Passed, true) => OutcomeLabel::Flaky,
            (o, _) => o.label(),
        }
    }
}

/// The result of running one test, over all its attempts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TestRecord {
    /// The test's full name.
    pub name: String,
    /// The final outcome.
    pub outcome: Outcome,
    /// How many attempts ran (1 when the first settled it).
    pub attempts: u32,
    /// Passed only after at least one failed attempt.
    pub flaky: bool,
    /// Messages of the failed attempts before the last one.
    pub earlier_failures: Vec<String>,
    /// Wall time of all attempts, teardown included.
    pub duration: Duration,
    /// Of `duration`, the time spent waiting on suite and session fixtures
    /// being set up: its process pays that once, whichever test asks first,
    /// so [`crate::history`] leaves it out of what the test costs a shard.
    #[serde(default, skip_serializing_if = "Duration::is_zero")]
    pub shared_setup: Duration,
    /// Figures the last attempt recorded through [`crate::Metrics`].
    pub metrics: Vec<Metric>,
    /// Ran past its slow-timeout (shown `SLOW` while it ran).
    pub slow: bool,
    /// What the test's process printed to its standard output, when it ran
    /// in a process of its own (`--isolation process`,
    /// `#[service_test(isolated)]`, `phi_safe`). Shown redacted, and only
    /// when the test did not pass (or with `--nocapture`, live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// What it printed to its standard error, as [`TestRecord::stdout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

/// What a worker tells its supervisor.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub(crate) enum Event {
    /// A test ended with this record.
    Finished {
        /// What happened.
        record: TestRecord,
        /// When it began and ended, in milliseconds since the worker
        /// started (to name the test that started a leaked process).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ran_ms: Option<(u64, u64)>,
    },
    /// PHI values an isolated test's generators registered as canaries
    /// (kind label, value), sent as each is registered, so that the
    /// supervisor redacts what the test printed and finds them in it (also
    /// when the worker then crashes). Synthetic, and only ever on this
    /// private pipe.
    Canaries {
        /// `(kind, value)` pairs.
        entries: Vec<(String, String)>,
    },
    /// A test left a runtime thread blocked: the worker started no more
    /// tests, finished the ones in flight, tore down its fixtures and
    /// ends; the supervisor runs the rest in a fresh worker.
    Recycle {
        /// Teardowns that failed.
        teardown_failures: Vec<String>,
    },
    /// Every test ran and suite and session fixtures were torn down.
    Done {
        /// Teardowns that failed.
        teardown_failures: Vec<String>,
    },
}

/// One figure a test records (`p99_ms` of `GET /health`), over its last
/// runs: what the report's trends are drawn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureHistory {
    /// The figure's name (`p99_ms`).
    pub name: String,
    /// Its endpoint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Its unit.
    #[serde(default)]
    pub unit: String,
    /// Its values in the runs that recorded it, oldest first (at most
    /// [`RECENT`](crate::history::RECENT)).
    pub values: Vec<f64>,
}

impl FigureHistory {
    /// Is this the history of `m`?
    pub fn is_of(&self, m: &Metric) -> bool {
        self.name == m.name && self.endpoint == m.endpoint
    }
}

/// What history knows of a test's earlier runs, handed to its result line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recent {
    /// Its outcomes, oldest first.
    pub outcomes: Vec<OutcomeLabel>,
    /// Its figures.
    pub figures: Vec<FigureHistory>,
    /// What it took the last time it ran (see [`Entry::duration_s`](crate::history::Entry::duration_s)).
    pub duration_s: Option<f64>,
}
