//! A service's counters, rendered as Prometheus text at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Counters of one service.
#[derive(Default)]
pub struct ServiceMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    duration_us: AtomicU64,
    count: AtomicU64,
    counters: Mutex<BTreeMap<(String, String), u64>>,
    /// HTTP connections the service holds open now.
    pub connections_open: AtomicU64,
    /// Each request's breakdown by route, while [`crate::timing`] is on.
    pub breakdown: crate::timing::Table,
}

impl ServiceMetrics {
    /// Counts an answered request.
    pub fn record_request(&self, method: &str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((method.to_string(), status))
            .or_default() += 1;
        self.duration_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one to counter `name` with `labels` (`target="billing-engine"`).
    pub fn incr(&self, name: &str, labels: &str) {
        *self
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((name.to_string(), labels.to_string()))
            .or_default() += 1;
    }

    /// The value of counter `name` with `labels`.
    pub fn get(&self, name: &str, labels: &str) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(name.to_string(), labels.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus text of these counters for `service`.
    pub fn render(&self, service: &str) -> String {
        let mut out = String::new();
        out.push_str("# HELP http_requests_total Requests answered, by method and status.\n");
        out.push_str("# TYPE http_requests_total counter\n");
        for ((method, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "http_requests_total{{service=\"{service}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP http_request_duration_seconds Time to answer.\n");
        out.push_str("# TYPE http_request_duration_seconds summary\n");
        let _ = writeln!(
            out,
            "http_request_duration_seconds_sum{{service=\"{service}\"}} {:.6}",
            self.duration_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "http_request_duration_seconds_count{{service=\"{service}\"}} {}",
            self.count.load(Ordering::Relaxed)
        );
        out.push_str("# TYPE http_connections_open gauge\n");
        let _ = writeln!(
            out,
            "http_connections_open{{service=\"{service}\"}} {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let mut last = "";
        for ((name, labels), n) in counters.iter() {
            if name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let sep = if labels.is_empty() { "" } else { "," };
            let _ = writeln!(out, "{name}{{service=\"{service}\"{sep}{labels}}} {n}");
        }
        out
    }
}

/// The process's resources as Prometheus gauges: `process_open_fds` and
/// `process_resident_memory_bytes` (Linux `/proc/self`; absent elsewhere).
/// In-process meshes share the test binary's process, so these count it.
pub fn render_process(service: &str) -> String {
    let mut out = String::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        out.push_str("# TYPE process_open_fds gauge\n");
        let _ = writeln!(
            out,
            "process_open_fds{{service=\"{service}\"}} {}",
            dir.count()
        );
    }
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok());
    if let Some(pages) = rss_pages {
        out.push_str("# TYPE process_resident_memory_bytes gauge\n");
        let _ = writeln!(
            out,
            "process_resident_memory_bytes{{service=\"{service}\"}} {}",
            pages * 4096
        );
    }
    out
}
