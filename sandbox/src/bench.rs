//! `sandbox bench`: seed 004's performance criteria against a running mesh
//! — `clients` concurrent clients each sending `requests` requests to
//! `POST /patients`, then the same to `POST /visits` (one claim saga per
//! registered patient) — with p50/p95/p99, errors and throughput per
//! endpoint and the seed's thresholds beside them. `cargo xtask bench mesh`
//! runs it in release and writes `target/bench/mesh.json`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::mesh::{Mesh, MeshClient};
use crate::service::Service;

/// Seed 004's criteria.
pub const P99_MS: f64 = 100.0;
/// At most this share of requests may fail.
pub const MAX_ERROR_RATE: f64 = 0.01;
/// Intake must sustain this many requests per second.
pub const MIN_INTAKE_RPS: f64 = 1000.0;

/// One endpoint's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// `POST /patients`, `POST /visits`.
    pub endpoint: String,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed (a transport error or an unexpected status).
    pub errors: u64,
    /// Share of failed requests.
    pub error_rate: f64,
    /// Latency percentiles, milliseconds (nearest rank).
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Successful requests per second of wall time.
    pub throughput_rps: f64,
    /// The first few failures, for the reader.
    pub first_errors: Vec<String>,
}

impl Figures {
    fn from(
        endpoint: &str,
        samples: Vec<Duration>,
        errors: Vec<String>,
        wall: Duration,
    ) -> Figures {
        let seen = deployment::Observed::from_samples(&samples, errors.len(), wall);
        Figures {
            endpoint: endpoint.to_string(),
            requests: (samples.len() + errors.len()) as u64,
            errors: errors.len() as u64,
            error_rate: seen.error_rate,
            p50_ms: seen.p50_ms,
            p95_ms: seen.p95_ms,
            p99_ms: seen.p99_ms,
            throughput_rps: seen.throughput_rps,
            first_errors: errors.into_iter().take(3).collect(),
        }
    }

    /// The thresholds this endpoint's figures are held to, and whether each is met.
    pub fn against_seed(&self) -> Value {
        let mut t = json!({
            "p99_ms": {"threshold": P99_MS, "met": self.p99_ms < P99_MS},
            "error_rate": {"threshold": MAX_ERROR_RATE, "met": self.error_rate < MAX_ERROR_RATE},
        });
        if self.endpoint == "POST /patients" {
            t["throughput_rps"] =
                json!({"threshold": MIN_INTAKE_RPS, "met": self.throughput_rps > MIN_INTAKE_RPS});
        }
        t
    }
}

/// Runs `bodies` through `clients` workers, each taking the next body;
/// each request must answer `ok`. Returns per-request results in body order.
async fn drive(
    client: &MeshClient,
    path: &'static str,
    bodies: Vec<Value>,
    clients: usize,
    ok: u16,
) -> (Vec<Result<(Duration, Value), String>>, Duration) {
    let n = bodies.len();
    let queue = Arc::new(std::sync::Mutex::new(bodies.into_iter().enumerate()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (client, queue) = (client.clone(), Arc::clone(&queue));
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let next = queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .next();
                let Some((i, body)) = next else { break };
                let t = Instant::now();
                let r = match client.post(path, &body).await {
                    Ok(a) if a.status == ok => Ok((t.elapsed(), a.body)),
                    Ok(a) => Err(format!("{} {}", a.status, a.body["error"])),
                    Err(e) => Err(e.to_string()),
                };
                done.push((i, r));
            }
            done
        });
    }
    let mut results: Vec<Option<Result<(Duration, Value), String>>> =
        (0..n).map(|_| None).collect();
    while let Some(Ok(done)) = workers.join_next().await {
        for (i, r) in done {
            results[i] = Some(r);
        }
    }
    let wall = started.elapsed();
    (
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("not sent".into())))
            .collect(),
        wall,
    )
}

fn split(results: &[Result<(Duration, Value), String>]) -> (Vec<Duration>, Vec<String>) {
    let mut ms = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok((t, _)) => ms.push(*t),
            Err(e) => errors.push(e.clone()),
        }
    }
    (ms, errors)
}

/// `clients` × `requests` intakes, then as many visits (one per patient
/// registered), each endpoint measured on its own.
pub async fn run(mesh: &Mesh, clients: usize, requests: usize, seed: u64) -> Vec<Figures> {
    let tenant = format!("bench-{}-{seed:x}", std::process::id());
    let api = mesh.client(Service::HealthcareApi, &tenant);
    let mut g = healthcare_data::Generator::new(seed);
    let scenarios: Vec<healthcare_data::Scenario> =
        (0..clients * requests).map(|_| g.scenario()).collect();
    let intakes: Vec<Value> = scenarios
        .iter()
        .map(|s| json!({"patient": s.patient, "coverage": s.coverage}))
        .collect();
    let (results, wall) = drive(&api, "/patients", intakes, clients, 201).await;
    let (ms, errors) = split(&results);
    let intake = Figures::from("POST /patients", ms, errors, wall);
    let visits: Vec<Value> = results
        .iter()
        .zip(&scenarios)
        .filter_map(|(r, s)| {
            let id = r.as_ref().ok()?.1["patient_id"].as_str()?.to_string();
            Some(json!({"patient_id": id, "visit": s.visit}))
        })
        .collect();
    let (results, wall) = drive(&api, "/visits", visits, clients, 201).await;
    let (ms, errors) = split(&results);
    let visit = Figures::from("POST /visits", ms, errors, wall);
    vec![intake, visit]
}
