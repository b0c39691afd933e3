//! Project automation, run through the cargo alias: `cargo xtask <task>`.
//!
//! - `cargo xtask ci`: the CI pipeline, reports in `target/reports/`.
//! - `cargo xtask report merge DIR...`: one report set from several.
//!
//! - `cargo xtask bench runner`: the runner benchmarks (P1, P2, P3), each a
//!   ratio against peers measured in the same run; writes `target/bench/runner.json`.
//! - `cargo xtask bench data`: generation and scanning against Python Faker,
//!   the `fake` crate and `grep -F`; writes `target/bench/data.json`.
//! - `cargo xtask bench shards`: three CI shards of a suite, `hash` and then
//!   `duration` from a carried history, their wall times and spread;
//!   writes `target/bench/shards.json`.
//! - `cargo xtask cycles [--crate NAME]`: import circles between the
//!   top-level modules of each workspace crate; exit 1 on any (in the named
//!   crates only, with `--crate`).
//! - `cargo xtask package`: `cargo package -p <crate>` for every crate meant
//!   for users.
//! - `cargo xtask data <kind> --count N --seed S`: synthetic data as JSON lines;
//!   `cargo xtask data validate FILE` checks exported claims.
//!
//! `cargo xtask --help` (and `--help` after any task) lists the options.

mod bench_data;
mod bench_db;
mod bench_load;
mod bench_mesh;
mod bench_runner;
mod bench_shards;
mod ci;
mod cycles;
mod data;
mod generated;
mod package;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

/// Project automation: the CI pipeline, report sets, benchmarks, synthetic data.
#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    task: Option<Task>,
}

#[derive(Subcommand)]
enum Task {
    Ci(ci::Options),
    /// Import circles between the top-level modules of each workspace crate (exit 1 on any)
    Cycles(cycles::Options),
    /// Report sets: merge the reports of shards or tiers into one
    Report {
        #[command(subcommand)]
        command: report::Command,
    },
    /// Benchmarks, each a ratio against peers measured in the same run (target/bench/)
    ///
    /// Without a benchmark, runs runner, data, load and db in turn (as `bench all`).
    Bench {
        #[command(subcommand)]
        bench: Option<Bench>,
    },
    /// `cargo package -p <crate>` for every crate meant for users, each alone
    Package(package::Options),
    /// Synthetic data as JSON lines; `data validate FILE` checks exported claims
    ///
    /// Same seed, byte-identical output.
    Data {
        #[command(subcommand)]
        command: data::Command,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Runner benchmarks P1-P9 against libtest and nextest (target/bench/runner.json)
    Runner,
    /// Generation and PHI-scan benchmarks against Python Faker, the fake crate, grep -F
    /// (target/bench/data.json)
    Data(BenchData),
    /// Load generator throughput against wrk (target/bench/load.json)
    Load,
    /// p50 time to get a per-test database: template clone vs create+migrate
    /// (target/bench/db.json)
    Db,
    Mesh(bench_mesh::Options),
    Shards(bench_shards::Options),
    /// runner, data, load and db in turn (what `bench` alone runs)
    All,
}

/// `cargo xtask bench data`'s options, passed on to `bench_data::run`.
#[derive(clap::Args)]
struct BenchData {
    /// Only these figures: `scan` is S1 and S2 (G1 needs Python Faker and takes minutes)
    #[arg(long, value_name = "FIGURES")]
    only: Option<DataFigures>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DataFigures {
    /// S1 and S2, the PHI scans
    Scan,
}

impl BenchData {
    /// The arguments `bench_data::run` reads.
    fn args(&self) -> Vec<&'static str> {
        match self.only {
            None => Vec::new(),
            Some(DataFigures::Scan) => vec!["--only", "scan"],
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Option<Task>) -> Result<()> {
    match task {
        Some(Task::Ci(options)) => ci::run(options),
        Some(Task::Cycles(options)) => cycles::run(&options),
        Some(Task::Report { command }) => report::run(command),
        Some(Task::Data { command }) => data::run(command),
        Some(Task::Package(options)) => package::run(&options),
        Some(Task::Bench { bench }) => match bench {
            Some(Bench::Runner) => bench_runner::run(),
            Some(Bench::Data(options)) => bench_data::run(&options.args()),
            Some(Bench::Load) => bench_load::run(),
            Some(Bench::Db) => bench_db::run(),
            Some(Bench::Mesh(options)) => bench_mesh::run(&options),
            Some(Bench::Shards(options)) => bench_shards::run(&options),
            Some(Bench::All) | None => {
                bench_runner::run()?;
                bench_data::run(&[])?;
                bench_load::run()?;
                bench_db::run()
            }
        },
        None => {
            Cli::command().print_help()?;
            Ok(())
        }
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
