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

use crate::events::{Outcome, TestRecord};
use crate::fixture::{RunShared, TestCx};
use crate::panic::panic_message;
use crate::registry::{TestDef, Verdict};

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
