//! What a test emitted: `tracing` events raised inside the test (its task,
//! and the thread of a sync test), captured per test. A `phi_safe` test's
//! capture is scanned for PHI afterwards; a failing test's capture is shown
//! with its failure, redacted.
//!
//! The harness installs a global `tracing` subscriber that only records
//! into the running test's capture. If the binary installed its own
//! subscriber first, nothing is captured and a warning says so. Events from
//! tasks a test spawns itself, or from servers running in their own tasks,
//! are not the test's; servers redact their own logs.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Once, PoisonError};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The lines one test attempt emitted.
pub(crate) type Lines = Arc<Mutex<Vec<String>>>;

tokio::task_local! {
    static CAPTURE: Lines;
}

thread_local! {
    static SYNC_CAPTURE: RefCell<Option<Lines>> = const { RefCell::new(None) };
}

/// Installs the capturing subscriber once per process.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if tracing_subscriber::registry().with(CaptureLayer).try_init().is_err() {
            eprintln!("warning: a tracing subscriber was already installed; phi_safe tests cannot see tracing events");
        }
    });
}

/// The capture of the test running on this task or thread.
pub(crate) fn current() -> Option<Lines> {
    CAPTURE
        .try_with(Arc::clone)
        .ok()
        .or_else(|| SYNC_CAPTURE.with(|c| c.borrow().clone()))
}

/// Runs `fut` with `lines` as the current capture.
pub(crate) async fn scope<F: std::future::Future>(lines: Lines, fut: F) -> F::Output {
    CAPTURE.scope(lines, fut).await
}

/// Runs `f` on this thread with `lines` as the current capture.
pub(crate) fn with_sync<R>(lines: Option<Lines>, f: impl FnOnce() -> R) -> R {
    SYNC_CAPTURE.with(|c| *c.borrow_mut() = lines);
    let out = f();
    SYNC_CAPTURE.with(|c| *c.borrow_mut() = None);
    out
}

struct CaptureLayer;

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(lines) = current() else { return };
        let meta = event.metadata();
        let mut line = format!("{} {}:", meta.level(), meta.target());
        event.record(&mut LineVisitor(&mut line));
        lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}

struct LineVisitor<'a>(&'a mut String);

impl Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

/// The PHI findings in what a test emitted, described without the values:
/// `SSN in line 2 (pattern)`, and each offending line redacted.
pub(crate) fn phi_findings(lines: &[String]) -> Option<String> {
    let mut report = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let findings = phi::scan(line);
        if findings.is_empty() {
            continue;
        }
        let kinds: Vec<String> = findings
            .iter()
            .map(|f| {
                format!(
                    "{} ({})",
                    f.kind,
                    if f.via == phi::Via::Canary {
                        "registered value"
                    } else {
                        "pattern"
                    }
                )
            })
            .collect();
        report.push(format!(
            "  line {}: {} — {}",
            i + 1,
            kinds.join(", "),
            phi::redact(line)
        ));
    }
    (!report.is_empty()).then(|| format!("phi_safe: the test emitted PHI:\n{}", report.join("\n")))
}
