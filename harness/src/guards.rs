//! Marker behaviour: a [`Guard`] registered against a marker judges what a
//! test carrying that marker emitted, and may ask for the test to run in a
//! process of its own. `phi_safe` is the first; the next marker with
//! behaviour is one more entry in [`GUARDS`].
//!
//! A guard sees two things: the `tracing` events and `log` records the
//! test raised in the worker, with its failure text last (a panic's
//! payload, the error it returned) ([`Guard::on_events`], after the body,
//! whatever its outcome), and, for an isolated test, everything its process printed
//! to stdout and stderr, its threads' and tasks' included
//! ([`Guard::on_output`], in the supervisor). A finding fails the test — a
//! pass becomes a failure, a failure or timeout keeps its message and
//! gains the finding — and is shown redacted.

use crate::events::{Outcome, TestRecord};
use crate::registry::TestDef;

/// Behaviour attached to a marker.
pub(crate) struct Guard {
    /// The marker it is registered against.
    pub(crate) marker: &'static str,
    /// Tests with the marker run in a process of their own (so that what
    /// they print can be judged).
    pub(crate) isolate: bool,
    /// Judges the test's captured events: `Some(finding)` fails it.
    pub(crate) on_events: fn(&[String]) -> Option<String>,
    /// Judges what an isolated test's process printed.
    pub(crate) on_output: fn(&str) -> Option<String>,
    /// Judges the lines that held PHI among those this process printed
    /// while the test ran (each described, redacted).
    pub(crate) on_printed: fn(&[String]) -> Option<String>,
}

/// Every guard.
pub(crate) const GUARDS: &[Guard] = &[Guard {
    marker: "phi_safe",
    isolate: true,
    on_events: phi_safe_events,
    on_output: phi_safe_output,
    on_printed: phi_safe_printed,
}];

/// `phi_safe` on the lines of this process's output that held PHI.
fn phi_safe_printed(lines: &[String]) -> Option<String> {
    (!lines.is_empty()).then(|| {
        format!(
            "phi_safe: the test printed PHI:\n  {}\n(in what the test printed)",
            lines.join("\n  ")
        )
    })
}

/// `phi_safe` on events: any PHI (patterns and registered canaries) fails;
/// so does a capture that could not be installed (it fails closed).
fn phi_safe_events(lines: &[String]) -> Option<String> {
    if let Some(missing) = crate::capture::not_installed() {
        return Some(format!(
            "phi_safe: cannot see the test's {missing}; failing closed rather than pass unseen output"
        ));
    }
    crate::capture::phi_findings(lines)
}

/// `phi_safe` on printed output: PHI by its patterns, and the values the
/// test's process registered as canaries (its worker sent them before the
/// result; the supervisor registered them).
fn phi_safe_output(output: &str) -> Option<String> {
    let lines: Vec<String> = output.lines().map(str::to_string).collect();
    crate::capture::phi_findings(&lines).map(|leak| format!("{leak}\n(in what the test printed)"))
}

fn guards_of(def: &TestDef) -> impl Iterator<Item = &'static Guard> + '_ {
    GUARDS.iter().filter(|g| def.has_marker(g.marker))
}

/// Does a guard of this test ask for a process of its own?
pub(crate) fn needs_isolation(def: &TestDef) -> bool {
    guards_of(def).any(|g| g.isolate)
}

/// `outcome` failed by `finding`: a pass becomes a failure; a failure, an
/// error or a crash keeps its message and gains the finding; a timeout
/// becomes a failure saying it timed out, with the finding (so the PHI hit
/// is reported); a test that did not run stays as it is.
fn fail_with(outcome: Outcome, finding: &str) -> Outcome {
    match outcome {
        Outcome::Passed => Outcome::Failed(finding.to_string()),
        o @ (Outcome::Skipped(_) | Outcome::NotRun(_)) => o,
        Outcome::Failed(m) => Outcome::Failed(format!("{m}\n{finding}")),
        Outcome::Error(m) => Outcome::Error(format!("{m}\n{finding}")),
        t @ Outcome::TimedOut(_) => {
            Outcome::Failed(format!("{}\n{finding}", t.message().unwrap_or_default()))
        }
        Outcome::Crashed(m) => Outcome::Crashed(format!("{m}\n{finding}")),
    }
}

/// The test's guards on its captured events, and on its own failure text
/// (a panic's payload, the error it returned) as the last line.
pub(crate) fn judge_events(def: &TestDef, outcome: Outcome, lines: &[String]) -> Outcome {
    let mut seen = lines.to_vec();
    if let Some(text) = outcome.message() {
        seen.push(format!("(the test's failure) {text}"));
    }
    guards_of(def).fold(outcome, |o, g| match (g.on_events)(&seen) {
        Some(finding) => fail_with(o, &finding),
        None => o,
    })
}

/// The test's guards on what was printed while it ran, when this process
/// judges its own output (see [`crate::output`]: a single test under
/// nextest or `--exact`, the supervisor off, `--nocapture`). With several
/// tests at once, a line is charged to every guarded test running then.
pub(crate) fn judge_printed(def: &TestDef, outcome: Outcome, from: u64) -> Outcome {
    if !crate::output::installed() || !guards_of(def).any(|g| g.isolate) {
        return outcome;
    }
    crate::output::sync();
    let printed = crate::output::findings_since(from);
    if printed.is_empty() {
        return outcome;
    }
    guards_of(def).fold(outcome, |o, g| match (g.on_printed)(&printed) {
        Some(finding) => fail_with(o, &finding),
        None => o,
    })
}

/// The test's guards on what its process printed to stdout and stderr
/// (isolated tests).
pub(crate) fn judge_output(def: &TestDef, record: &mut TestRecord) {
    let streams = [
        ("stdout", record.stdout.clone()),
        ("stderr", record.stderr.clone()),
    ];
    for g in guards_of(def) {
        for (stream, text) in &streams {
            let Some(text) = text else { continue };
            if let Some(finding) = (g.on_output)(text) {
                let o = std::mem::replace(&mut record.outcome, Outcome::Passed);
                record.outcome = fail_with(o, &format!("{finding} ({stream})"));
            }
        }
    }
}
