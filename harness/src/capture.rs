//! What a test emitted: `tracing` events raised inside the test (its task,
//! and the thread of a sync test), captured per test, from the profile's
//! `log-level` up (`info` by default) and bounded (the newest
//! [`MAX_LINES`], each line cut at [`crate::output::LINE_LIMIT`]). A `phi_safe` test's
//! capture is scanned for PHI afterwards; a failing test's capture is shown
//! with its failure, redacted.
//!
//! The harness installs a global `tracing` subscriber and a `log` logger
//! that only record into the running test's capture. If the binary
//! installed its own first, that source is not captured: a warning says so
//! and [`installed`] reports it, so that `phi_safe` fails closed rather
//! than pass on what it could not see. Events from tasks a test spawns
//! itself, or from servers running in their own tasks, are not the test's
//! (an isolated test's process output covers those), except in an isolated
//! worker, which runs one test: there, events from anywhere in the process
//! are that test's. Servers redact their own logs.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
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

static TRACING: AtomicBool = AtomicBool::new(false);
static LOG: AtomicBool = AtomicBool::new(false);

/// The least severe record kept, as `log`'s filter (Info by default).
static LEVEL: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(log::LevelFilter::Info as usize);

/// The most lines one attempt's capture keeps; past it the oldest half is
/// dropped (lines that held PHI are kept, for `phi_safe`).
const MAX_LINES: usize = 4096;

/// Sets the least severe record captured (the profile's `log-level`).
pub(crate) fn set_level(level: crate::config::LogLevel) {
    use crate::config::LogLevel;
    let filter = match level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    };
    LEVEL.store(filter as usize, Ordering::Relaxed);
    if LOG.load(Ordering::Relaxed) {
        log::set_max_level(filter);
    }
}

fn level_filter() -> log::LevelFilter {
    match LEVEL.load(Ordering::Relaxed) {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Is a `tracing` event at `level` kept?
fn keeps(level: &tracing::Level) -> bool {
    let as_log = match *level {
        tracing::Level::ERROR => log::Level::Error,
        tracing::Level::WARN => log::Level::Warn,
        tracing::Level::INFO => log::Level::Info,
        tracing::Level::DEBUG => log::Level::Debug,
        tracing::Level::TRACE => log::Level::Trace,
    };
    as_log <= level_filter()
}

/// Adds a line to a capture, each cut at [`crate::output::LINE_LIMIT`],
/// the capture bounded at [`MAX_LINES`].
fn push(lines: &Lines, line: String) {
    let line = if line.len() > crate::output::LINE_LIMIT {
        crate::output::sanitize_line(line.as_bytes(), 0)
    } else {
        line
    };
    let mut lines = lines.lock().unwrap_or_else(PoisonError::into_inner);
    if lines.len() >= MAX_LINES {
        let dropped: Vec<String> = lines.drain(..MAX_LINES / 2).collect();
        let kept: Vec<String> = dropped
            .iter()
            .filter(|l| !phi::scan(l).is_empty())
            .cloned()
            .collect();
        let note = format!("[… {} earlier lines not kept]", dropped.len() - kept.len());
        lines.splice(0..0, std::iter::once(note).chain(kept));
    }
    lines.push(line);
}

/// Installs the capturing `tracing` subscriber and `log` logger once per
/// process.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if tracing_subscriber::registry().with(CaptureLayer).try_init().is_ok() {
            TRACING.store(true, Ordering::Relaxed);
        } else {
            eprintln!("warning: a tracing subscriber was already installed; phi_safe tests cannot see tracing events and will fail");
        }
        if log::set_logger(&CaptureLogger).is_ok() {
            log::set_max_level(level_filter());
            LOG.store(true, Ordering::Relaxed);
        } else {
            eprintln!("warning: a `log` logger was already installed; phi_safe tests cannot see log records and will fail");
        }
    });
}

/// What could not be captured, if anything (`None`: `tracing` events and
/// `log` records both are).
pub(crate) fn not_installed() -> Option<&'static str> {
    match (TRACING.load(Ordering::Relaxed), LOG.load(Ordering::Relaxed)) {
        (true, true) => None,
        (false, true) => Some("tracing events (another subscriber was installed first)"),
        (true, false) => Some("log records (another logger was installed first)"),
        (false, false) => Some(
            "tracing events and log records (another subscriber and logger were installed first)",
        ),
    }
}

/// Records `log` records into the running test's capture, as the
/// `tracing` layer does events.
struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= level_filter()
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() > level_filter() {
            return;
        }
        let Some(lines) = current() else { return };
        push(
            &lines,
            format!("{} {}: {}", record.level(), record.target(), record.args()),
        );
    }

    fn flush(&self) {}
}

/// In a process running one test (an isolated worker), that test's
/// capture: events from tasks and threads the test spawned (which carry no
/// test's scope) are the test's too.
static PROCESS: Mutex<Option<Lines>> = Mutex::new(None);

/// Makes `lines` the capture of everything this process emits outside any
/// test's scope (called for the attempt of an isolated worker's one test).
pub(crate) fn adopt_for_process(lines: &Lines) {
    *PROCESS.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(lines));
}

/// The capture of the test running on this task or thread (or, in an
/// isolated worker, of its one test).
pub(crate) fn current() -> Option<Lines> {
    CAPTURE
        .try_with(Arc::clone)
        .ok()
        .or_else(|| SYNC_CAPTURE.with(|c| c.borrow().clone()))
        .or_else(|| {
            PROCESS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
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
        let meta = event.metadata();
        if !keeps(meta.level()) {
            return;
        }
        let Some(lines) = current() else { return };
        let mut line = format!("{} {}:", meta.level(), meta.target());
        event.record(&mut LineVisitor(&mut line));
        push(&lines, line);
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
            crate::redaction::redact(line)
        ));
    }
    (!report.is_empty()).then(|| format!("phi_safe: the test emitted PHI:\n{}", report.join("\n")))
}
