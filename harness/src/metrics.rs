//! Figures a test records (latency percentiles, throughput, error rates,
//! counts), and the states it saw its services in (a service's health, a
//! breaker), carried with its result into every report.
//!
//! ```ignore
//! #[service_test(performance, services(billing))]
//! async fn claims_are_fast(metrics: Metrics) {
//!     let samples: Vec<Duration> = /* time 200 requests */;
//!     metrics.latencies("POST /v1/claims", &samples);
//!     metrics.throughput("POST /v1/claims", 850.0);
//!     metrics.error_rate("POST /v1/claims", 0.0);
//!     // What `/health` answered: the report's service health section.
//!     metrics.service_state("billing-engine", "health", "healthy");
//! }
//! ```

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One recorded figure, or one state a service was seen in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// What was measured (`p95_ms`, `throughput_rps`, `error_rate`, or your
    /// own); for a state, what it is the state of (`health`,
    /// `breaker to billing-engine`).
    pub name: String,
    /// The figure (1 for a state).
    pub value: f64,
    /// Its unit (`ms`, `rps`, `ratio`, `count`, …; `"state"` for a state).
    pub unit: String,
    /// The endpoint or operation it belongs to, if any (`GET /health`); for
    /// a state, the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The state seen (`healthy`, `open`), which makes this a state rather
    /// than a figure: see [`Metrics::service_state`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// The unit of a state seen (a [`Metric`] with a `state`).
pub const STATE: &str = "state";

impl Metric {
    /// A state seen, not a figure: reports list it under service health,
    /// not performance, and history keeps no trend of it.
    pub fn is_state(&self) -> bool {
        self.state.is_some()
    }
}

/// Where a test's figures go: ask for `metrics: Metrics` (or `&Metrics`).
#[derive(Clone, Default)]
pub struct Metrics {
    sink: Arc<Mutex<Vec<Metric>>>,
}

impl Metrics {
    pub(crate) fn new(sink: Arc<Mutex<Vec<Metric>>>) -> Self {
        Metrics { sink }
    }

    /// Records a named figure.
    pub fn record(&self, name: &str, value: f64, unit: &str, endpoint: Option<&str>) {
        self.sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Metric {
                name: name.to_string(),
                value,
                unit: unit.to_string(),
                endpoint: endpoint.map(str::to_string),
                state: None,
            });
    }

    /// Records a state the test saw `service` in: `what` is what the state
    /// is of (`health`, `breaker to billing-engine`), `state` what it was
    /// (`healthy`, `degraded`, `open`). The report's service health section
    /// lists every state seen, by service, with the tests that saw it.
    pub fn service_state(&self, service: &str, what: &str, state: &str) {
        self.sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Metric {
                name: what.to_string(),
                value: 1.0,
                unit: STATE.to_string(),
                endpoint: Some(service.to_string()),
                state: Some(state.to_string()),
            });
    }

    /// Records latency percentiles (p50, p95, p99, max, in milliseconds) and
    /// the sample count of an endpoint. Nothing is recorded for no samples.
    pub fn latencies(&self, endpoint: &str, samples: &[Duration]) {
        if samples.is_empty() {
            return;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        for (name, q) in [("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)] {
            self.record(name, percentile(&ms, q), "ms", Some(endpoint));
        }
        self.record("max_ms", ms[ms.len() - 1], "ms", Some(endpoint));
        self.record("samples", ms.len() as f64, "count", Some(endpoint));
    }

    /// Records an endpoint's throughput, requests per second.
    pub fn throughput(&self, endpoint: &str, requests_per_second: f64) {
        self.record("throughput_rps", requests_per_second, "rps", Some(endpoint));
    }

    /// Records an endpoint's error rate (0.0–1.0).
    pub fn error_rate(&self, endpoint: &str, rate: f64) {
        self.record("error_rate", rate, "ratio", Some(endpoint));
    }

    /// What has been recorded so far.
    pub fn recorded(&self) -> Vec<Metric> {
        self.sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
