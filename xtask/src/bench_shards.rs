//! `cargo xtask bench shards`: C1, the issue's acceptance line "three
//! duration shards from a carried history finish within 15 % of each
//! other", measured on a real test binary of the workspace.
//!
//! It plays two CI runs of `harness-selftest`'s `shardable` suite (64
//! tests, long-tailed durations, one session fixture), the way
//! `.github/workflows/ci.yml` runs them:
//!
//! 1. the first run knows no history: three `hash:K/3` shards (the peer);
//!    their reports are merged with `cargo xtask report merge`'s code, which
//!    writes the history the next run reads (the CI artifact);
//! 2. the next run: three `duration:K/3` shards, each reading that history
//!    with `--history FILE`.
//!
//! Each shard is its own process run one after the other (as separate CI
//! machines would run them), timed from start to exit: startup, the
//! fixture and every test included. The spread is slowest / fastest - 1.
//! All shards run with the same `--test-threads` (2 by default, the cores of
//! a CI runner): sharding pays when a run is bound by how many tests it can
//! run at once; with every test of a shard running at once, a shard takes
//! as long as its longest test whatever the partition. Writes
//! `target/bench/shards.json`; fails when the duration shards' spread is over
//! `--limit`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use harness::report::{self, ResultLine};

use crate::{Figure, target_dir, workspace_root};

/// Three shards from a carried history within 15 % of each other (target/bench/shards.json)
///
/// Runs harness-selftest's `shardable` suite as two CI runs: hash:K/N shards with no
/// history, merged into a history; then duration:K/N shards reading it with --history.
/// Prints each shard's wall time and the spread (slowest / fastest - 1).
#[derive(clap::Args)]
pub struct Options {
    /// How many shards
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=16))]
    shards: u64,
    /// Tests at once in each shard (as every shard of a CI matrix gets the same)
    #[arg(long, value_name = "N", default_value_t = 2)]
    test_threads: usize,
    /// The largest spread of the duration shards that passes, in percent
    #[arg(long, value_name = "PERCENT", default_value_t = 15.0)]
    limit: f64,
}

/// One shard's run.
struct Shard {
    partition: String,
    wall_s: f64,
    lines: Vec<ResultLine>,
}

pub fn run(options: &Options) -> Result<()> {
    let Options {
        shards,
        test_threads,
        limit,
    } = *options;
    eprintln!("[bench shards] building harness-selftest's `shardable` suite…");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "harness-selftest",
            "--bin",
            "shardable",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building harness-selftest's `shardable` failed ({status})");
    }
    let bin = target_dir().join("debug").join("shardable");
    let work = target_dir().join("bench").join("shards");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let config = work.join("empty-config.toml");
    std::fs::write(&config, "# built-in defaults\n")
        .with_context(|| format!("writing {}", config.display()))?;
    let runner = Runner {
        bin,
        work: work.clone(),
        config,
        test_threads,
    };

    // The first run: no history yet.
    let first: Vec<Shard> = (1..=shards)
        .map(|k| runner.shard(&format!("hash:{k}/{shards}"), None))
        .collect::<Result<_>>()?;
    let dirs: Vec<PathBuf> = first.iter().map(|s| runner.reports(&s.partition)).collect();
    let merged = work.join("merged");
    crate::report::merge(&dirs, &merged)?;
    let carried = work.join("history");
    crate::report::update_histories(&merged, &carried)?;
    let history = carried.join("shardable.json");

    // The next run: duration shards from the carried history.
    let next: Vec<Shard> = (1..=shards)
        .map(|k| runner.shard(&format!("duration:{k}/{shards}"), Some(&history)))
        .collect::<Result<_>>()?;

    let all: BTreeSet<&str> = first
        .iter()
        .flat_map(|s| s.lines.iter().map(|l| l.name.as_str()))
        .collect();
    let mut seen = BTreeSet::new();
    for s in &next {
        for l in &s.lines {
            if !seen.insert(l.name.as_str()) {
                bail!("{} ran in two duration shards", l.name);
            }
        }
    }
    if seen != all {
        bail!(
            "the duration shards ran {} of the {} tests",
            seen.len(),
            all.len()
        );
    }

    let total_s: f64 = first
        .iter()
        .flat_map(|s| &s.lines)
        .map(ResultLine::own_duration_s)
        .sum();
    println!(
        "\nC1: {shards} shards of harness-selftest's `shardable` ({} tests, {total_s:.1} s of tests), --test-threads {test_threads}, one process per shard, one after the other\n",
        all.len()
    );
    println!("partition        tests   tests' own time   wall (start to exit)");
    for s in first.iter().chain(&next) {
        let sum: f64 = s.lines.iter().map(ResultLine::own_duration_s).sum();
        println!(
            "{:<16} {:>5} {:>15.2} s {:>12.2} s",
            s.partition,
            s.lines.len(),
            sum,
            s.wall_s
        );
    }
    let hash = spread(&first);
    let ours = spread(&next);
    println!(
        "\nspread (slowest / fastest - 1): hash {hash:.1} %, duration from the carried history {ours:.1} % (limit {limit} %)"
    );

    let path = target_dir().join("bench").join("shards.json");
    let figure = Figure {
        id: "C1",
        what: format!(
            "spread of {shards} duration shards' wall times from a carried history (slowest / fastest - 1), --test-threads {test_threads}"
        ),
        unit: "%",
        ours,
        peers: [("hash".to_string(), serde_json::json!(hash))]
            .into_iter()
            .collect(),
    };
    std::fs::write(&path, serde_json::to_string_pretty(&[&figure])?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("written: {}", path.display());
    if ours > limit {
        bail!("the duration shards' spread is {ours:.1} %, over {limit} %");
    }
    Ok(())
}

/// Slowest / fastest - 1, in percent.
fn spread(shards: &[Shard]) -> f64 {
    let walls = shards.iter().map(|s| s.wall_s);
    let max = walls.clone().fold(f64::MIN, f64::max);
    let min = walls.fold(f64::MAX, f64::min);
    (max / min - 1.0) * 100.0
}

/// Runs shards of the suite, each into a report directory of its own.
struct Runner {
    bin: PathBuf,
    work: PathBuf,
    config: PathBuf,
    test_threads: usize,
}

impl Runner {
    fn reports(&self, partition: &str) -> PathBuf {
        self.work
            .join("reports")
            .join(partition.replace([':', '/'], "-"))
    }

    fn shard(&self, partition: &str, history: Option<&Path>) -> Result<Shard> {
        let dir = self.reports(partition);
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--partition", partition, "--test-threads"])
            .arg(self.test_threads.to_string())
            .arg("--report-dir")
            .arg(&dir)
            .env_remove("SERVICE_TEST_MARKER")
            .env_remove("SERVICE_TEST_PARTITION")
            .env_remove("SERVICE_TEST_PROFILE")
            .env_remove("RUST_TEST_THREADS")
            .env("SERVICE_TEST_CONFIG", &self.config)
            // The shard's own history (what it saves) stays out of the way:
            // a CI machine starts with none.
            .env(
                "SERVICE_TEST_HISTORY_DIR",
                self.work
                    .join("own-history")
                    .join(partition.replace([':', '/'], "-")),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(h) = history {
            cmd.arg("--history").arg(h);
        }
        eprintln!("[bench shards] {partition}…");
        let started = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        let wall_s = started.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "shard {partition} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (lines, _) = report::read_dir(&dir)?;
        Ok(Shard {
            partition: partition.to_string(),
            wall_s,
            lines,
        })
    }
}
