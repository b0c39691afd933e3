//! The console reporter: each finished test as a libtest line (through
//! libtest-mimic, so IDEs and nextest read it), its failure with the
//! message, earlier attempts and captured output all PHI-redacted, and the
//! seed to reproduce it; `--durations N`; and a live progress line on
//! stderr when it is a terminal (done/total, failures so far, elapsed,
//! ETA; nothing otherwise, so CI logs stay plain).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use libtest_mimic::{Completion, Failed, Trial};
use tokio::sync::oneshot;

use crate::events::{Outcome, TestRecord};

/// `--durations N`: the N slowest tests, slowest first.
pub(crate) fn print_durations(records: &[TestRecord], n: usize) {
    let mut by_time: Vec<&TestRecord> = records
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Skipped(_) | Outcome::NotRun(_)))
        .collect();
    by_time.sort_by(|a, b| b.duration.cmp(&a.duration).then(a.name.cmp(&b.name)));
    eprintln!("\nslowest {} test(s):", n.min(by_time.len()));
    for r in by_time.into_iter().take(n) {
        eprintln!(
            "  {:>9.3}s  {}  {}",
            r.duration.as_secs_f64(),
            r.outcome.label(),
            r.name
        );
    }
}

/// A libtest-mimic trial whose body waits for the scheduler's result.
pub(crate) fn trial_waiting_for(
    name: String,
    seed: u64,
    rx: oneshot::Receiver<TestRecord>,
) -> Trial {
    let test_name = name.clone();
    Trial::ignorable_test(name, move || {
        let record = rx
            .blocking_recv()
            .map_err(|_| Failed::from("harness bug: the scheduler dropped this test's result"))?;
        if record.flaky {
            eprintln!(
                "FLAKY {test_name}: passed on attempt {} after: {}",
                record.attempts,
                crate::redaction::redact(&record.earlier_failures.join("; "))
            );
        }
        let prefix = match &record.outcome {
            Outcome::Passed => return Ok(Completion::Completed),
            Outcome::Skipped(reason) | Outcome::NotRun(reason) => {
                return Ok(Completion::ignored_with(crate::redaction::redact(reason)));
            }
            Outcome::Failed(_) => "failed",
            Outcome::Error(_) => "error",
            Outcome::TimedOut(_) => "timed out",
            Outcome::Crashed(_) => "crashed",
        };
        // No PHI reaches the console unredacted, not even synthetic PHI.
        let mut msg = format!(
            "[{prefix}] {}",
            crate::redaction::redact(&record.outcome.message().unwrap_or_default())
        );
        if !record.earlier_failures.is_empty() {
            msg.push_str(&format!(
                "\nall {} attempts failed; earlier: {}",
                record.attempts,
                crate::redaction::redact(&record.earlier_failures.join("; "))
            ));
        }
        if !matches!(record.outcome, Outcome::Crashed(_)) {
            for (stream, text) in [("stdout", &record.stdout), ("stderr", &record.stderr)] {
                if let Some(text) = text {
                    msg.push_str(&format!(
                        "\ncaptured {stream}{}:\n{}",
                        crate::redaction::label(),
                        crate::redaction::redact(text.trim_end())
                    ));
                }
            }
        }
        msg.push_str(&format!(
            "\nseed: {seed} (reproduce: --seed {seed} --exact {test_name})"
        ));
        Err(Failed::from(msg))
    })
}

pub(crate) struct Progress {
    enabled: bool,
    total: usize,
    done: usize,
    failed: usize,
    started: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    pub(crate) fn new(total: usize) -> Self {
        let enabled =
            std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
        Progress {
            enabled,
            total,
            done: 0,
            failed: 0,
            started: Instant::now(),
            drawn: None,
        }
    }

    /// Draws nothing (a worker process: its supervisor draws).
    pub(crate) fn disabled() -> Self {
        let mut p = Progress::new(0);
        p.enabled = false;
        p
    }

    pub(crate) fn finished(&mut self, failed: bool) {
        self.done += 1;
        self.failed += usize::from(failed);
        if !self.enabled
            || self
                .drawn
                .is_some_and(|d| d.elapsed() < Duration::from_millis(100))
                && self.done < self.total
        {
            return;
        }
        self.drawn = Some(Instant::now());
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = if self.done == 0 {
            0.0
        } else {
            elapsed / self.done as f64 * (self.total - self.done) as f64
        };
        // Ends with \r so the console's next line overwrites it.
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\x1b[2K[{}/{}] {} failed · {elapsed:.1}s elapsed · ETA {eta:.1}s\r",
            self.done, self.total, self.failed
        );
        let _ = err.flush();
    }

    pub(crate) fn clear(&self) {
        if self.enabled {
            let _ = write!(std::io::stderr(), "\x1b[2K\r");
        }
    }
}
