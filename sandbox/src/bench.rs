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

use std::collections::BTreeMap;

use crate::mesh::{Mesh, MeshClient};
use crate::service::Service;
use crate::timing::{Part, Sample};

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
    /// CPU time of this process (the six services and the bench's clients;
    /// not PostgreSQL or Redis) per request, milliseconds: unlike latency,
    /// it does not depend on what else the machine runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms_per_request: Option<f64>,
    /// Where the time went, by service and route (with `--breakdown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Value>,
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
            cpu_ms_per_request: None,
            breakdown: None,
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

/// The latencies of the successes and the failures. An intake answered
/// with a holder that did not take its copy (`sync_failed`) is a failure:
/// every sync must be made.
fn split(results: &[Result<(Duration, Value), String>]) -> (Vec<Duration>, Vec<String>) {
    let mut ms = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok((_, body))
                if body["sync_failed"]
                    .as_array()
                    .is_some_and(|failed| !failed.is_empty()) =>
            {
                errors.push(format!("201 but sync_failed {}", body["sync_failed"]));
            }
            Ok((t, _)) => ms.push(*t),
            Err(e) => errors.push(e.clone()),
        }
    }
    (ms, errors)
}

/// This process's CPU time so far (user and system; Linux `/proc`).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command's `(name)`: state is field 3; utime, stime are 14, 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux the mesh runs on.
    Some(Duration::from_millis(ticks * 10))
}

fn cpu_per_request(before: Option<Duration>, requests: u64) -> Option<f64> {
    let used = process_cpu()?.checked_sub(before?)?;
    Some(ms(used.as_secs_f64() * 1e3 / requests.max(1) as f64))
}

/// Nearest-rank percentile `q` of sorted `v`.
fn rank(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn ms(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One route of one service: its requests' total time (mean, p50, p99)
/// and, per part, the mean time per request, the p99 and the mean entries
/// per request; then the same parts' means over its slowest 1 % of
/// requests; `waiting_ms`, the mean time during which at least one part
/// was under way (parts a handler waits on at once counted once); and
/// `own_ms`, the mean total less that (the handler's own work and
/// scheduling).
fn summarise(samples: &[Sample]) -> Value {
    let n = samples.len().max(1) as f64;
    let mut totals: Vec<f64> = samples
        .iter()
        .map(|s| f64::from(s.total_us) / 1e3)
        .collect();
    totals.sort_by(f64::total_cmp);
    let mean_total = totals.iter().sum::<f64>() / n;
    let cut = rank(&totals, 0.99);
    let slowest: Vec<&Sample> = samples
        .iter()
        .filter(|s| f64::from(s.total_us) / 1e3 >= cut)
        .collect();
    let mut parts = serde_json::Map::new();
    let mut slow_parts = serde_json::Map::new();
    let waiting = samples
        .iter()
        .map(|s| f64::from(s.spans.waiting_us) / 1e3)
        .sum::<f64>()
        / n;
    for p in Part::all() {
        let i = p.index();
        let entered: u64 = samples.iter().map(|s| u64::from(s.spans.n[i])).sum();
        if entered == 0 {
            continue;
        }
        let mut each: Vec<f64> = samples
            .iter()
            .map(|s| f64::from(s.spans.us[i]) / 1e3)
            .collect();
        let mean = each.iter().sum::<f64>() / n;
        each.sort_by(f64::total_cmp);
        parts.insert(
            p.name(),
            json!({
                "mean_ms": ms(mean),
                "p99_ms": ms(rank(&each, 0.99)),
                "per_request": ms(entered as f64 / n),
            }),
        );
        let slow = slowest
            .iter()
            .map(|s| f64::from(s.spans.us[i]) / 1e3)
            .sum::<f64>()
            / slowest.len().max(1) as f64;
        slow_parts.insert(p.name(), json!(ms(slow)));
    }
    let slow_total = slowest
        .iter()
        .map(|s| f64::from(s.total_us) / 1e3)
        .sum::<f64>()
        / slowest.len().max(1) as f64;
    json!({
        "requests": samples.len(),
        "total_ms": {"mean": ms(mean_total), "p50": ms(rank(&totals, 0.5)), "p99": ms(cut)},
        "parts": parts,
        "waiting_ms": ms(waiting),
        "own_ms": ms((mean_total - waiting).max(0.0)),
        "slowest_1pct": {"total_ms": ms(slow_total), "parts_ms": slow_parts},
    })
}

/// The breakdown of one endpoint's run: each service's routes, and how
/// much of the client's time the API's handler does not account for
/// (connections, the HTTP stack, scheduling).
fn breakdown(
    taken: BTreeMap<Service, BTreeMap<String, Vec<Sample>>>,
    endpoint: &str,
    client: &[Duration],
) -> Value {
    let mut services = serde_json::Map::new();
    let mut api_mean = None;
    for (service, routes) in taken {
        let mut by_route = serde_json::Map::new();
        for (route, samples) in routes {
            if samples.is_empty() {
                continue;
            }
            let s = summarise(&samples);
            if service == Service::HealthcareApi && route == endpoint {
                api_mean = s["total_ms"]["mean"].as_f64();
            }
            by_route.insert(route, s);
        }
        if !by_route.is_empty() {
            services.insert(service.name().to_string(), Value::Object(by_route));
        }
    }
    let mut seen: Vec<f64> = client.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    seen.sort_by(f64::total_cmp);
    let client_mean = seen.iter().sum::<f64>() / seen.len().max(1) as f64;
    json!({
        "client_ms": {"mean": ms(client_mean), "p50": ms(rank(&seen, 0.5)), "p99": ms(rank(&seen, 0.99))},
        "outside_api_handler_mean_ms": api_mean.map(|a| ms(client_mean - a)),
        "services": services,
    })
}

/// Prints a breakdown (as the run collected it) for a reader.
pub fn print_breakdown(endpoint: &str, b: &Value) {
    println!(
        "breakdown of {endpoint}: client mean {} ms (p99 {}), outside the API's handler {} ms",
        b["client_ms"]["mean"], b["client_ms"]["p99"], b["outside_api_handler_mean_ms"]
    );
    let Some(services) = b["services"].as_object() else {
        return;
    };
    for (service, routes) in services {
        let Some(routes) = routes.as_object() else {
            continue;
        };
        for (route, s) in routes {
            let mut line = format!(
                "  {service:<23} {route:<32} n={:<6} total mean {:>7.2} p99 {:>7.2} | own {:>6.2} | waiting {:>6.2}",
                s["requests"],
                s["total_ms"]["mean"].as_f64().unwrap_or(0.0),
                s["total_ms"]["p99"].as_f64().unwrap_or(0.0),
                s["own_ms"].as_f64().unwrap_or(0.0),
                s["waiting_ms"].as_f64().unwrap_or(0.0),
            );
            if let Some(parts) = s["parts"].as_object() {
                for (p, v) in parts {
                    line.push_str(&format!(
                        " | {p} {:.2}×{}",
                        v["mean_ms"].as_f64().unwrap_or(0.0),
                        v["per_request"]
                    ));
                }
            }
            println!("{line}");
        }
    }
}

/// A run's figures: each endpoint measured, and its warm-up beside it.
#[derive(Debug, Clone)]
pub struct Run {
    /// `POST /patients`, then `POST /visits`: what the seed's thresholds
    /// are held against.
    pub measured: Vec<Figures>,
    /// The same endpoints' warm-up rounds (not counted in `measured`),
    /// when there were any: a cold mesh's first requests.
    pub warmup: Vec<Figures>,
}

/// Each endpoint in turn: `clients` × `warmup` requests not counted
/// (the clients' connections opened, the services' peer connections and
/// caches warm), then `clients` × `requests` measured. Intakes first,
/// then one visit per patient registered. With the breakdown on
/// ([`crate::timing::enable`]) each measured endpoint carries it.
pub async fn run(mesh: &Mesh, clients: usize, requests: usize, warmup: usize, seed: u64) -> Run {
    let tenant = format!("bench-{}-{seed:x}", std::process::id());
    let api = mesh.client(Service::HealthcareApi, &tenant);
    let mut g = healthcare_data::Generator::new(seed);
    let cold: Vec<healthcare_data::Scenario> =
        (0..clients * warmup).map(|_| g.scenario()).collect();
    let scenarios: Vec<healthcare_data::Scenario> =
        (0..clients * requests).map(|_| g.scenario()).collect();
    let intakes = endpoint(
        mesh,
        &api,
        "/patients",
        intake_bodies(&cold),
        intake_bodies(&scenarios),
        clients,
    )
    .await;
    settle().await;
    let visits = endpoint(
        mesh,
        &api,
        "/visits",
        visit_bodies(&intakes.warm_results, &cold),
        visit_bodies(&intakes.results, &scenarios),
        clients,
    )
    .await;
    Run {
        measured: vec![intakes.measured, visits.measured],
        warmup: intakes.warmup.into_iter().chain(visits.warmup).collect(),
    }
}

/// One endpoint's rounds: its warm-up and its measured round.
struct Endpoint {
    measured: Figures,
    results: Vec<Result<(Duration, Value), String>>,
    /// None without a warm-up.
    warmup: Option<Figures>,
    warm_results: Vec<Result<(Duration, Value), String>>,
}

/// `warm` to `POST path`, not counted (when there is any), then, once its
/// background audits settled, `bodies` measured.
async fn endpoint(
    mesh: &Mesh,
    api: &MeshClient,
    path: &'static str,
    warm: Vec<Value>,
    bodies: Vec<Value>,
    clients: usize,
) -> Endpoint {
    let (mut warmup, mut warm_results) = (None, Vec::new());
    if !warm.is_empty() {
        let (f, results) = round(mesh, api, path, warm, clients, false).await;
        (warmup, warm_results) = (Some(f), results);
        settle().await;
    }
    let (measured, results) = round(mesh, api, path, bodies, clients, true).await;
    Endpoint {
        measured,
        results,
        warmup,
        warm_results,
    }
}

/// One round of `bodies` to `POST path`, each answered `201`: its figures
/// (a `measured` round's with the CPU per request and, when on, the
/// breakdown) and each request's result.
async fn round(
    mesh: &Mesh,
    api: &MeshClient,
    path: &'static str,
    bodies: Vec<Value>,
    clients: usize,
    measured: bool,
) -> (Figures, Vec<Result<(Duration, Value), String>>) {
    let endpoint = format!("POST {path}");
    let _ = mesh.take_breakdown();
    let cpu = process_cpu();
    let (results, wall) = drive(api, path, bodies, clients, 201).await;
    let (ms, errors) = split(&results);
    let mut f = Figures::from(&endpoint, ms.clone(), errors, wall);
    if measured {
        f.cpu_ms_per_request = cpu_per_request(cpu, f.requests);
        if crate::timing::on() {
            f.breakdown = Some(breakdown(mesh.take_breakdown(), &endpoint, &ms));
        }
    }
    (f, results)
}

/// Lets a round's background audits settle before the next round starts.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn intake_bodies(scenarios: &[healthcare_data::Scenario]) -> Vec<Value> {
    scenarios
        .iter()
        .map(|s| json!({"patient": s.patient, "coverage": s.coverage}))
        .collect()
}

/// A visit for each patient an intake registered.
fn visit_bodies(
    results: &[Result<(Duration, Value), String>],
    scenarios: &[healthcare_data::Scenario],
) -> Vec<Value> {
    results
        .iter()
        .zip(scenarios)
        .filter_map(|(r, s)| {
            let id = r.as_ref().ok()?.1["patient_id"].as_str()?.to_string();
            Some(json!({"patient_id": id, "visit": s.visit}))
        })
        .collect()
}
