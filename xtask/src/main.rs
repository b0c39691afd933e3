//! Project automation, run through the cargo alias: `cargo xtask <task>`.
//!
//! - `cargo xtask ci`: the CI pipeline, reports in `target/reports/`.
//! - `cargo xtask report merge DIR...`: one report set from several.
//!
//! - `cargo xtask bench runner`: the runner benchmarks (P1, P2, P3), each a
//!   ratio against peers measured in the same run; writes `target/bench/runner.json`.
//! - `cargo xtask bench data`: generation and scanning against Python Faker,
//!   the `fake` crate and `grep -F`; writes `target/bench/data.json`.
//! - `cargo xtask data <kind> --count N --seed S`: synthetic data as JSON lines;
//!   `cargo xtask data validate FILE` checks exported claims.

mod bench_data;
mod bench_db;
mod bench_load;
mod bench_mesh;
mod bench_runner;
mod ci;
mod data;
mod generated;
mod report;

use std::path::PathBuf;

use anyhow::{Result, bail};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci              the pipeline: fmt, clippy, workspace tests, suites by tier; reports in target/reports/
                  [--partition hash:K/N] [--tiers unit,integration,...] [--no-lint]
  report merge    merge report directories (shards, tiers) into one set: cargo xtask report merge DIR... [--out DIR]
  bench runner    runner benchmarks P1-P3 against libtest and nextest (target/bench/runner.json)
  bench data      generation and PHI-scan benchmarks against Python Faker, the fake crate, grep -F (target/bench/data.json)
  bench load      load generator throughput against wrk (target/bench/load.json)
  bench db        p50 time to get a per-test database: template clone vs create+migrate (target/bench/db.json)
  bench mesh      seed 004's criteria on the sandbox (release): 100 clients x 100 requests on POST /patients
                  and POST /visits, p50/p95/p99, errors, throughput beside the thresholds (target/bench/mesh.json)
                  [--clients N] [--requests N] [--tls]
  data <kind>     synthetic data as JSON lines (--count N --seed S [--out FILE]); `data validate FILE` checks claims";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["bench", "runner", rest @ ..] => bench_runner::run(rest),
        ["bench", "data", rest @ ..] => bench_data::run(rest),
        ["bench", "load", rest @ ..] => bench_load::run(rest),
        ["bench", "db", rest @ ..] => bench_db::run(rest),
        ["bench", "mesh", rest @ ..] => bench_mesh::run(rest),
        ["bench"] | ["bench", "all"] => {
            bench_runner::run(&[])?;
            bench_data::run(&[])?;
            bench_load::run(&[])?;
            bench_db::run(&[])
        }
        ["data", rest @ ..] => data::run(rest),
        ["ci", rest @ ..] => ci::run(rest),
        ["report", rest @ ..] => report::run(rest),
        ["-h" | "--help" | "help"] | [] => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task `{}`\n\n{USAGE}", other.join(" ")),
    }
}

/// One figure of `target/bench/<name>.json`: ours against named peers,
/// measured in the same run.
#[derive(serde::Serialize)]
pub struct Figure {
    pub id: &'static str,
    pub what: String,
    pub unit: &'static str,
    pub ours: f64,
    pub peers: serde_json::Map<String, serde_json::Value>,
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The shared target directory (`CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}
