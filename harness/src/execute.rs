//! The executor: runs one test to its outcome.
//!
//! Each attempt is its own tokio task (a panic stays inside it), bounded by
//! the test's timeout. An async test that overruns is cancelled: its future
//! is dropped at its current `.await`. A sync test runs on the blocking pool;
//! a thread cannot be stopped, so an overrunning sync test is *reported*
//! timed out at its deadline and its thread keeps running, detached, until
//! the process exits. In every case the test-scoped teardowns run afterwards,
//! in reverse order of setup. A failure is retried up to the retry count; a
//! pass after a failure is reported as flaky.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fixture::{RunShared, TestCx};
use crate::panic::panic_message;
use crate::registry::{TestDef, Verdict};

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
    pub metrics: Vec<crate::metrics::Metric>,
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

/// How long a timed-out test's task gets to be dropped before the run goes
/// on without it.
const ABORT_GRACE: Duration = Duration::from_millis(250);

/// How one test runs: its settings after the attribute, the command line,
/// the profile's overrides and the profile have been weighed (see
/// [`crate::config`]).
#[derive(Debug, Clone)]
pub struct TestPolicy {
    /// Hard per-attempt timeout.
    pub timeout: Duration,
    /// When a still-running test is shown `SLOW` (None: never).
    pub slow_timeout: Option<Duration>,
    /// How failures are retried.
    pub retry: crate::retry::RetryPolicy,
    /// A pass after a failure fails the run.
    pub flaky_fails: bool,
    /// A fixture's "skip" (a missing service) is an error instead.
    pub require_services: bool,
    /// Tasks left running after teardown: off, a warning, or a failure.
    /// Checked per test only when tests run one at a time (see [`crate::leak`]).
    pub leaks: crate::config::Leaks,
}

/// Runs a test, retrying failures, and returns its record.
pub(crate) async fn run_test(
    run: Arc<RunShared>,
    name: String,
    def: &'static TestDef,
    policy: Arc<TestPolicy>,
) -> TestRecord {
    let started = Instant::now();
    let (tasks_before, fixture_tasks_before) =
        (crate::leak::alive_tasks(), run.fixture_tasks.get());
    let slow = policy.slow_timeout.map(|after| {
        let name = name.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            eprintln!(
                "SLOW [> {}] {name} is still running",
                crate::duration::format(after)
            );
        })
    });
    let mut earlier_failures = Vec::new();
    let mut attempt = 0;
    let mut shared_setup = Duration::ZERO;
    let (outcome, metrics) = loop {
        attempt += 1;
        let (outcome, metrics, waited) =
            run_attempt(&run, &name, def, attempt, policy.timeout).await;
        shared_setup += waited;
        if attempt > policy.retry.count || !policy.retry.retries(&outcome) {
            break (outcome, metrics);
        }
        earlier_failures.push(format!(
            "attempt {attempt}: {}",
            outcome.message().unwrap_or_default()
        ));
        let draw = crate::seed::derive_seed(run.seed, &[&name, "retry", &attempt.to_string()]);
        let wait = policy.retry.delay_before(attempt, draw);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    };
    let was_slow = slow.is_some_and(|task| {
        let fired = task.is_finished();
        task.abort();
        fired
    });
    let outcome = match check_leaks(&run, &name, &policy, tasks_before, fixture_tasks_before).await
    {
        Some(leak) if outcome == Outcome::Passed => Outcome::Failed(leak),
        _ => outcome,
    };
    let outcome = match outcome {
        Outcome::Skipped(reason) if policy.require_services => Outcome::Error(format!(
            "a required service is unavailable (--require-services): {reason}"
        )),
        Outcome::Passed if policy.flaky_fails && !earlier_failures.is_empty() => {
            Outcome::Failed(format!(
                "flaky: passed on attempt {attempt} after failing, and this profile counts a flaky pass as a failure (flaky-result = \"fail\")"
            ))
        }
        other => other,
    };
    TestRecord {
        flaky: outcome == Outcome::Passed && !earlier_failures.is_empty(),
        name,
        outcome,
        attempts: attempt,
        earlier_failures,
        duration: started.elapsed(),
        shared_setup,
        metrics,
        slow: was_slow,
        stdout: None,
        stderr: None,
    }
}

/// The leak check after a test (see [`crate::leak`]): a warning, or with
/// `leaks = "fail"` the message that fails the test.
async fn check_leaks(
    run: &RunShared,
    name: &str,
    policy: &TestPolicy,
    tasks_before: usize,
    fixture_tasks_before: usize,
) -> Option<String> {
    use crate::config::Leaks;
    if policy.leaks == Leaks::Off {
        return None;
    }
    let by_fixtures = run.fixture_tasks.get().saturating_sub(fixture_tasks_before);
    let over = crate::leak::over_after_grace(tasks_before + by_fixtures).await;
    if over == 0 {
        return None;
    }
    let message = format!(
        "LEAK {name}: {over} task(s) it spawned were still running {} after its teardown",
        crate::duration::format(crate::leak::GRACE)
    );
    match policy.leaks {
        Leaks::Fail => Some(message),
        _ => {
            eprintln!("{message}");
            None
        }
    }
}

async fn run_attempt(
    run: &Arc<RunShared>,
    name: &str,
    def: &'static TestDef,
    attempt: u32,
    timeout: Duration,
) -> (Outcome, Vec<crate::metrics::Metric>, Duration) {
    let cx = TestCx::new(run.clone(), name.to_string(), def.module, attempt);
    let printed_from = crate::output::mark();
    let captured = crate::capture::Lines::default();
    if crate::worker::is_isolated() {
        crate::capture::adopt_for_process(&captured);
    }
    let mut task = tokio::spawn(crate::capture::scope(
        captured.clone(),
        (def.body)(cx.clone()),
    ));
    let task_id = task.id();
    let outcome = match tokio::time::timeout(timeout, &mut task).await {
        Err(_elapsed) => {
            task.abort();
            // Wait for the cancelled future to be dropped, so the test's own
            // values are gone before its fixtures are torn down; but an async
            // test blocking its thread cannot be dropped until it yields, and
            // must not hold the run: give it a moment, then go on without it.
            if tokio::time::timeout(ABORT_GRACE, &mut task).await.is_err() {
                eprintln!(
                    "warning: `{name}` timed out while blocking its thread (no `.await` for {}); it is left running, detached",
                    crate::duration::format(timeout)
                );
                crate::worker::thread_stuck();
            }
            Outcome::TimedOut(timeout)
        }
        Ok(Ok(Ok(Verdict::Pass))) => Outcome::Passed,
        Ok(Ok(Ok(Verdict::Fail(msg)))) => Outcome::Failed(msg),
        Ok(Ok(Err(fixture_error))) if fixture_error.is_skip() => {
            Outcome::Skipped(fixture_error.to_string())
        }
        Ok(Ok(Err(fixture_error))) => Outcome::Error(fixture_error.to_string()),
        Ok(Err(join)) if join.is_panic() => {
            let message = panic_message(&*join.into_panic());
            Outcome::Failed(match crate::panic::take_location(task_id) {
                Some(where_) => match where_.split_once('\n') {
                    Some((location, backtrace)) => {
                        format!("test panicked at {location}:\n{message}\n{backtrace}")
                    }
                    None => format!("test panicked at {where_}:\n{message}"),
                },
                None => format!("test panicked: {message}"),
            })
        }
        Ok(Err(_cancelled)) => Outcome::Failed("the test's task was cancelled".to_string()),
    };
    let outcome = match (outcome, def.is_async) {
        (Outcome::TimedOut(d), false) => {
            eprintln!(
                "warning: sync test `{name}` timed out after {}; its thread cannot be stopped and keeps running detached",
                crate::duration::format(d)
            );
            Outcome::TimedOut(d)
        }
        (o, _) => o,
    };
    // A panic caught inside the task (in a fixture's setup) left its record.
    let _ = crate::panic::take_location(task_id);
    let lines = std::mem::take(
        &mut *captured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let outcome = crate::guards::judge_events(def, outcome, &lines);
    let outcome = crate::guards::judge_printed(def, outcome, printed_from);
    let outcome = match outcome {
        Outcome::Failed(m) if !lines.is_empty() => {
            Outcome::Failed(format!("{m}\n{}", captured_tail(&lines)))
        }
        other => other,
    };
    let teardown_failures = cx.ident.store.tear_down().await;
    let metrics = std::mem::take(
        &mut *cx
            .ident
            .metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let (metrics, outcome) = refuse_non_finite(metrics, outcome);
    let shared_setup = cx.shared_setup();
    if teardown_failures.is_empty() {
        return (outcome, metrics, shared_setup);
    }
    let teardown = teardown_failures.join("; ");
    let outcome = match outcome {
        Outcome::Passed => Outcome::Error(teardown),
        Outcome::Failed(m) => Outcome::Failed(format!("{m}\nalso: {teardown}")),
        Outcome::Error(m) => Outcome::Error(format!("{m}\nalso: {teardown}")),
        other => {
            eprintln!("warning: `{name}`: {teardown}");
            other
        }
    };
    (outcome, metrics, shared_setup)
}

/// A figure that is not a number (NaN, infinite) cannot be reported: the
/// test errors, naming it, and the figure is dropped.
fn refuse_non_finite(
    metrics: Vec<crate::metrics::Metric>,
    outcome: Outcome,
) -> (Vec<crate::metrics::Metric>, Outcome) {
    let (kept, refused): (Vec<_>, Vec<_>) = metrics.into_iter().partition(|m| m.value.is_finite());
    if refused.is_empty() {
        return (kept, outcome);
    }
    let named: Vec<String> = refused
        .iter()
        .map(|m| match &m.endpoint {
            Some(e) => format!("`{}` of `{e}` = {}", m.name, m.value),
            None => format!("`{}` = {}", m.name, m.value),
        })
        .collect();
    let why = format!(
        "the test recorded a metric that is not a finite number ({}); reports cannot carry it",
        named.join(", ")
    );
    let outcome = match outcome {
        Outcome::Passed => Outcome::Error(why),
        other => other.map_message(|m| format!("{m}\nalso: {why}")),
    };
    (kept, outcome)
}

/// The last lines a failed test emitted, redacted, for its failure message.
fn captured_tail(lines: &[String]) -> String {
    const SHOWN: usize = 20;
    let skipped = lines.len().saturating_sub(SHOWN);
    let mut out = format!(
        "captured log ({} lines{}{}):",
        lines.len(),
        if skipped > 0 { ", last 20 shown" } else { "" },
        if crate::redaction::is_on() {
            ", PHI redacted"
        } else {
            ""
        }
    );
    for l in &lines[skipped..] {
        out.push_str("\n  ");
        out.push_str(&crate::redaction::redact(l));
    }
    out
}
