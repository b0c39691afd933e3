//! `cargo xtask bench mesh`: seed 004's criteria on the sandbox mesh, in
//! release: 100 clients × 100 requests on `POST /patients`, then as many
//! claim sagas on `POST /visits`; p50/p95/p99, errors and throughput per
//! endpoint with the seed's thresholds beside them, over plain HTTP and
//! over TLS, side by side, each with its breakdown (where a request's time
//! goes, by service, route and part), written to `target/bench/mesh.json`.
//! Each endpoint is measured after a warm-up of one request per client,
//! not counted and reported apart (`--warmup N`; 0 measures a cold mesh).
//! Arguments (`--clients N`, `--requests N`, `--warmup N`, `--pool N`) pass
//! to `sandbox bench`; `--tls` or `--plain` runs one mode only.

use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{target_dir, workspace_root};

/// Seed 004's criteria on the sandbox, in release, plain and TLS (target/bench/mesh.json)
///
/// CLIENTS clients x REQUESTS requests on POST /patients, then as many claim sagas on
/// POST /visits: p50/p95/p99, errors and throughput per endpoint beside the seed's thresholds,
/// over plain HTTP and over TLS side by side, with where the time goes (by service, route and
/// part). The options pass to `sandbox bench`, which checks them.
#[derive(clap::Args)]
pub struct Options {
    /// Concurrent clients [default: 100]
    #[arg(long, value_name = "N")]
    clients: Option<usize>,
    /// Requests per client on each endpoint [default: 100]
    #[arg(long, value_name = "N")]
    requests: Option<usize>,
    /// Requests per client on each endpoint before it is measured, not counted and
    /// reported apart (a cold mesh's first requests) [default: 1]
    #[arg(long, value_name = "N")]
    warmup: Option<usize>,
    /// PostgreSQL connections per service, 1 to 32 [default: 8]
    #[arg(long, value_name = "N")]
    pool: Option<usize>,
    /// Only the run over TLS
    #[arg(long, conflicts_with = "plain")]
    tls: bool,
    /// Only the run over plain HTTP
    #[arg(long)]
    plain: bool,
    /// Without the per-request breakdown (it is recorded by default; it costs a
    /// few clock reads per step)
    #[arg(long)]
    no_breakdown: bool,
}

impl Options {
    /// The arguments of `sandbox bench` common to both modes.
    fn sandbox_args(&self) -> Vec<String> {
        let mut pass = Vec::new();
        for (flag, value) in [
            ("--clients", self.clients),
            ("--requests", self.requests),
            ("--warmup", self.warmup),
            ("--pool", self.pool),
        ] {
            if let Some(n) = value {
                pass.extend([flag.to_string(), n.to_string()]);
            }
        }
        if !self.no_breakdown {
            pass.push("--breakdown".into());
        }
        pass
    }

    /// The modes to run: `(name, TLS on)`.
    fn modes(&self) -> Vec<(&'static str, bool)> {
        match (self.plain, self.tls) {
            (true, _) => vec![("plain", false)],
            (_, true) => vec![("tls", true)],
            _ => vec![("plain", false), ("tls", true)],
        }
    }
}

pub fn run(options: &Options) -> Result<()> {
    let pass = options.sandbox_args();
    eprintln!("[bench mesh] building the sandbox (release)…");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "sandbox",
            "--bin",
            "sandbox",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the sandbox in release failed ({status})");
    }
    let bin = target_dir().join("release").join("sandbox");
    let dir = target_dir().join("bench");
    let mut runs = serde_json::Map::new();
    for (mode, tls) in options.modes() {
        let part = dir.join(format!("mesh-{mode}.json"));
        let mut cmd = Command::new(&bin);
        cmd.arg("bench").args(&pass).arg("--json").arg(&part);
        if tls {
            cmd.arg("--tls");
        }
        eprintln!("[bench mesh] {mode}");
        let status = cmd
            .status()
            .with_context(|| format!("running {}", bin.display()))?;
        if !status.success() {
            bail!("`sandbox bench` ({mode}) failed ({status})");
        }
        let text = std::fs::read_to_string(&part)
            .with_context(|| format!("reading {}", part.display()))?;
        let doc: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", part.display()))?;
        let _ = std::fs::remove_file(&part);
        runs.insert(mode.to_string(), doc);
    }
    let (side_by_side, pass) = side_by_side(&runs);
    let out = dir.join("mesh.json");
    let doc = json!({
        "bench": "mesh",
        "criteria": "seed 004: p99 < 100 ms on each endpoint, errors < 1 %, intake > 1000 req/s",
        "pass": pass,
        "side_by_side": side_by_side,
        "runs": runs,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!();
    println!(
        "{:<16} {:<6} {:>9} {:>9} {:>9} {:>8} {:>10}  pass",
        "endpoint", "mode", "p50 ms", "p99 ms", "req/s", "errors", "cpu ms/req"
    );
    for row in doc["side_by_side"].as_array().into_iter().flatten() {
        for (mode, f) in row["modes"].as_object().into_iter().flatten() {
            println!(
                "{:<16} {:<6} {:>9.1} {:>9.1} {:>9.0} {:>7.2}% {:>10.2}  {}",
                row["endpoint"].as_str().unwrap_or(""),
                mode,
                f["p50_ms"].as_f64().unwrap_or(0.0),
                f["p99_ms"].as_f64().unwrap_or(0.0),
                f["throughput_rps"].as_f64().unwrap_or(0.0),
                f["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                f["cpu_ms_per_request"].as_f64().unwrap_or(f64::NAN),
                if f["pass"] == true { "yes" } else { "NO" }
            );
        }
    }
    println!(
        "seed 004 {}: written {}",
        if pass { "met" } else { "NOT met" },
        out.display()
    );
    Ok(())
}

/// Each endpoint's figures per mode with pass/fail (every threshold met),
/// and whether all passed.
fn side_by_side(runs: &serde_json::Map<String, Value>) -> (Vec<Value>, bool) {
    let mut rows: Vec<Value> = Vec::new();
    let mut all = true;
    for (mode, doc) in runs {
        for e in doc["endpoints"].as_array().into_iter().flatten() {
            let endpoint = e["endpoint"].as_str().unwrap_or("").to_string();
            let met = e["thresholds"]
                .as_object()
                .is_some_and(|t| t.values().all(|c| c["met"] == true));
            all &= met;
            let figures = json!({
                "p50_ms": e["p50_ms"],
                "p95_ms": e["p95_ms"],
                "p99_ms": e["p99_ms"],
                "throughput_rps": e["throughput_rps"],
                "error_rate": e["error_rate"],
                "cpu_ms_per_request": e["cpu_ms_per_request"],
                "thresholds": e["thresholds"],
                "pass": met,
            });
            match rows.iter_mut().find(|r| r["endpoint"] == endpoint.as_str()) {
                Some(row) => {
                    row["modes"][mode.as_str()] = figures;
                }
                None => rows.push(json!({"endpoint": endpoint, "modes": {mode.as_str(): figures}})),
            }
        }
    }
    (rows, all && !runs.is_empty())
}
