//! The services' logs: `tracing` events go through a layer that redacts
//! PHI before a line is kept or printed, counts each redaction, and reports
//! it as a violation to the compliance monitor.
//!
//! Each service runs under its own dispatcher (its connections are wrapped
//! with it), so the layer knows which service wrote a line, and a mesh
//! started inside a test keeps its logs to itself ([`LogBook`]).

use std::collections::VecDeque;
use std::fmt::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc::UnboundedSender;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::metrics::ServiceMetrics;
use crate::service::Service;

/// PHI found in a log line, reported to the compliance monitor. Holds the
/// kinds and the redacted line, never the value.
#[derive(Debug, Clone)]
pub struct LogViolation {
    /// Who wrote it.
    pub service: Service,
    /// The tenant the line was about, when the event named one.
    pub tenant: Option<String>,
    /// The request, when the event named one.
    pub request_id: Option<String>,
    /// The kinds of PHI found.
    pub kinds: Vec<String>,
    /// The line, redacted.
    pub excerpt: String,
}

const KEEP: usize = 10_000;

/// The redacted log lines of a mesh (the last 10,000), optionally echoed
/// to stderr.
pub struct LogBook {
    lines: Mutex<VecDeque<String>>,
    echo: bool,
    violations: UnboundedSender<LogViolation>,
}

impl LogBook {
    /// A book; `echo` also prints each line to stderr.
    pub fn new(echo: bool, violations: UnboundedSender<LogViolation>) -> Self {
        LogBook {
            lines: Mutex::new(VecDeque::new()),
            echo,
            violations,
        }
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn push(&self, line: String) {
        if self.echo {
            eprintln!("{line}");
        }
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

/// The layer: formats, redacts, keeps, reports.
pub struct RedactingLayer {
    service: Service,
    book: Arc<LogBook>,
    metrics: Arc<ServiceMetrics>,
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    tenant: Option<String>,
    request_id: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            name => {
                if name == "tenant" {
                    self.tenant = Some(value.clone());
                } else if name == "request_id" {
                    self.request_id = Some(value.clone());
                }
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for RedactingLayer {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        if *event.metadata().level() > tracing::Level::INFO {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = format!(
            "{:>5} {}: {}{}",
            event.metadata().level(),
            self.service.name(),
            fields.message,
            fields.rest
        );
        let (findings, excerpt) = off_the_runtime(line.len(), || {
            let findings = phi::scan(&line);
            let excerpt = (!findings.is_empty()).then(|| phi::redact(&line));
            (findings, excerpt)
        });
        let Some(excerpt) = excerpt else {
            self.book.push(line);
            return;
        };
        self.metrics.incr("phi_log_redactions_total", "");
        let mut kinds: Vec<String> = findings
            .iter()
            .map(|f| f.kind.label().to_string())
            .collect();
        kinds.sort();
        kinds.dedup();
        let _ = self.book.violations.send(LogViolation {
            service: self.service,
            tenant: fields.tenant,
            request_id: fields.request_id,
            kinds,
            excerpt: excerpt.clone(),
        });
        self.book.push(excerpt);
    }
}

/// Lines longer than this are scanned with the runtime told that the
/// thread blocks (its other tasks move to other threads meanwhile).
const LONG_LINE: usize = 64 << 10;

/// Runs `scan` (of a line of `len` bytes) in place, on a runtime thread
/// marked as blocking when the line is long and the runtime allows it: the
/// log stays in order, and one long line does not stall other requests.
fn off_the_runtime<T>(len: usize, scan: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if len > LONG_LINE && multi_thread {
        tokio::task::block_in_place(scan)
    } else {
        scan()
    }
}

/// The dispatcher a service runs under.
pub fn dispatch(
    service: Service,
    book: Arc<LogBook>,
    metrics: Arc<ServiceMetrics>,
) -> tracing::Dispatch {
    let layer = RedactingLayer {
        service,
        book,
        metrics,
    };
    tracing::Dispatch::new(tracing_subscriber::registry().with(layer))
}
