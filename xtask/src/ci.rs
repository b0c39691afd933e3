//! `cargo xtask ci`: the pipeline. Lint (fmt, clippy, `cargo xtask cycles`),
//! the workspace's own tests, then the suites tier by tier, every report
//! merged into `target/reports/`.
//!
//! On a CI matrix that builds once (`.github/workflows/ci.yml`), each shard
//! runs `ci --suites-bin FILE --partition duration:K/N --history FILE`: the
//! prebuilt suites binary, tier by tier, its shard dealt by the durations
//! the last run's merge wrote.
//!
//! Its options are [`Options`] (`cargo xtask ci --help`).
//!
//! A test carrying several tier markers runs once, in the first of its
//! tiers; tests with none run in the last tier, `other`.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::target_dir;

/// The tiers, in order, by marker.
const TIERS: &[&str] = &[
    "unit",
    "integration",
    "e2e",
    "resilience",
    "compliance",
    "security",
    "performance",
];

/// The file that marks a reports directory as made by `cargo xtask ci`,
/// so a later run may clear it.
const OURS: &str = ".made-by-xtask-ci";

struct Stage {
    name: String,
    ok: bool,
    secs: f64,
}

/// The pipeline: fmt, clippy, workspace tests, suites by tier; reports in target/reports/
///
/// A test carrying several tier markers runs once, in the first of its tiers; tests with
/// none run in the last tier, `other`.
#[derive(clap::Args)]
pub struct Options {
    /// A CI matrix shard (hash:K/N, slice:K/N or duration:K/N): lint and workspace tests
    /// run on shard 1 only; the suites are sharded
    #[arg(long, value_name = "hash:K/N", value_parser = partition)]
    partition: Option<String>,
    /// Which tiers, comma-separated [default: all, in order: unit,integration,e2e,
    /// resilience,compliance,security,performance,other]
    #[arg(long, value_name = "unit,integration,...", value_delimiter = ',')]
    tiers: Option<Vec<String>>,
    /// One seed for every tier (printed) [default: a fresh one]
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// The reports directory instead of target/reports: new, empty or one this command
    /// made (a directory it did not create is never cleared)
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
    /// Skip cargo fmt --check and clippy
    #[arg(long)]
    no_lint: bool,
    /// Run the suites tiers against a deployment's target file
    #[arg(long, value_name = "FILE")]
    target: Option<std::path::PathBuf>,
    /// A profile of .config/service-test.toml, for every suites tier
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Run the suites tiers with this prebuilt suites test binary (a build job's, from
    /// `cargo test -p suites --test suites --no-run`) instead of building them: only the
    /// tiers run (lint and the workspace's own tests need the sources built)
    #[arg(long, value_name = "FILE")]
    suites_bin: Option<std::path::PathBuf>,
    /// Durations and last outcomes for every suites tier (duration:K/N, --last-failed)
    /// from FILE: a history `cargo xtask report merge --history DIR` wrote, or a
    /// results.jsonl
    #[arg(long, value_name = "FILE")]
    history: Option<std::path::PathBuf>,
    /// Run only the suites' tests that failed the last time they ran (with --history,
    /// as that file says)
    #[arg(long)]
    last_failed: bool,
}

/// `--partition`: checked as the harness parses it, passed on as written.
fn partition(text: &str) -> Result<String, String> {
    text.parse::<harness::partition::Partition>()?;
    Ok(text.to_string())
}

pub fn run(options: Options) -> Result<()> {
    let Options {
        partition,
        tiers,
        seed,
        out,
        no_lint,
        target,
        profile,
        suites_bin,
        history,
        last_failed,
    } = options;
    // The suites run from suites/: every path they are given is made
    // absolute here.
    let existing = |flag: &str, file: Option<std::path::PathBuf>| -> Result<_> {
        let Some(file) = file else { return Ok(None) };
        let file =
            std::path::absolute(&file).with_context(|| format!("--{flag} {}", file.display()))?;
        if !file.is_file() {
            bail!("--{flag} {}: no such file", file.display());
        }
        Ok(Some(file))
    };
    let suites_bin = existing("suites-bin", suites_bin)?;
    let history = existing("history", history)?;
    // A prebuilt binary: the sources are not built here, so no lint and no
    // workspace tests.
    let prebuilt = suites_bin.is_some();
    let lint = !no_lint && !prebuilt;
    let tiers = tiers.map(|t| t.iter().map(|t| t.trim().to_string()).collect::<Vec<_>>());
    let target = existing("target", target)?;
    let mut all_tiers: Vec<String> = TIERS.iter().map(|t| t.to_string()).collect();
    all_tiers.push("other".to_string());
    let tiers = tiers.unwrap_or_else(|| all_tiers.clone());
    if let Some(bad) = tiers.iter().find(|t| !all_tiers.contains(t)) {
        bail!(
            "unknown tier `{bad}`; the tiers are {}",
            all_tiers.join(", ")
        );
    }
    let first_shard = !prebuilt
        && partition
            .as_deref()
            .is_none_or(|p| p.split(':').nth(1).is_some_and(|s| s.starts_with("1/")));
    // One seed for every tier, so the whole run repeats with `--seed`.
    let seed = seed.unwrap_or_else(harness::seed::fresh_seed);
    eprintln!("cargo xtask ci: seed {seed} (repeat with --seed {seed})");
    let chosen = out.is_some();
    let reports = match out {
        Some(dir) => {
            std::path::absolute(&dir).with_context(|| format!("--out {}", dir.display()))?
        }
        None => target_dir().join("reports"),
    };
    clear_reports(&reports, chosen)?;

    let mut stages: Vec<Stage> = Vec::new();
    let total_stages =
        usize::from(lint && first_shard) * 3 + usize::from(first_shard) * 2 + 1 + tiers.len();
    let step = |name: &str, cmd: Option<&mut Command>, stages: &mut Vec<Stage>| -> Result<bool> {
        let n = stages.len() + 1;
        eprintln!("\n=== [{n}/{total_stages}] {name}");
        let started = Instant::now();
        let ok = match cmd {
            Some(c) => c
                .status()
                .with_context(|| format!("starting `{name}`"))?
                .success(),
            None => true,
        };
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "=== [{n}/{total_stages}] {name}: {} in {secs:.1}s",
            if ok { "ok" } else { "FAILED" }
        );
        stages.push(Stage {
            name: name.to_string(),
            ok,
            secs,
        });
        Ok(ok)
    };

    if lint && first_shard {
        step(
            "cargo fmt --check",
            Some(Command::new("cargo").args(["fmt", "--all", "--", "--check"])),
            &mut stages,
        )?;
        step(
            "cargo clippy -D warnings",
            Some(Command::new("cargo").args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])),
            &mut stages,
        )?;
        // No import circle between the top-level modules of any crate
        // (issue 25): the layout stays a house of rooms.
        step(
            "cargo xtask cycles",
            Some(Command::new("cargo").args(["xtask", "cycles"])),
            &mut stages,
        )?;
    }
    services_check(&mut stages);
    if first_shard {
        step(
            "workspace tests",
            Some(Command::new("cargo").args(["test", "--workspace", "--exclude", "suites"])),
            &mut stages,
        )?;
        // Libraries set `test = false` for the same reason as `doctest`
        // below; the unit tests in their modules (plain `#[test]`s, no
        // markers) run here, or nothing would run them.
        step(
            "library unit tests",
            Some(Command::new("cargo").args([
                "test",
                "-q",
                "--lib",
                "--workspace",
                "--exclude",
                "suites",
            ])),
            &mut stages,
        )?;
        // Libraries set `doctest = false` so that `cargo test -- --marker X`
        // never reaches rustdoc's libtest; their examples still run here.
        step(
            "doctests",
            Some(Command::new("cargo").args(["test", "-q", "--doc", "--workspace"])),
            &mut stages,
        )?;
    }
    let mut tier_dirs = Vec::new();
    for tier in &tiers {
        let expr = tier_expression(tier);
        let dir = reports.join("tiers").join(tier);
        let mut cmd = match &suites_bin {
            Some(bin) => {
                // Where cargo runs it.
                let mut cmd = Command::new(bin);
                cmd.current_dir(crate::workspace_root().join("suites"));
                cmd
            }
            None => {
                let mut cmd = Command::new("cargo");
                cmd.args(["test", "-q", "-p", "suites", "--test", "suites", "--"]);
                cmd
            }
        };
        cmd.args(["--marker", &expr, "--report-dir"]).arg(&dir);
        cmd.args(["--seed", &seed.to_string()]);
        if let Some(p) = &partition {
            cmd.args(["--partition", p]);
        }
        if let Some(t) = &target {
            cmd.arg("--target").arg(t);
        }
        if let Some(p) = &profile {
            cmd.args(["--profile", p]);
        }
        if let Some(h) = &history {
            cmd.arg("--history").arg(h);
        }
        if last_failed {
            cmd.arg("--last-failed");
        }
        step(
            &format!("suites tier `{tier}` ({expr})"),
            Some(&mut cmd),
            &mut stages,
        )?;
        if dir.join(harness::report::RESULTS).exists() {
            tier_dirs.push(dir);
        }
    }

    if tier_dirs.is_empty() {
        eprintln!("\nno tier ran a test; nothing to report");
    } else {
        crate::report::merge(&tier_dirs, &reports)?;
        let md =
            std::fs::read_to_string(reports.join(harness::report::MARKDOWN)).unwrap_or_default();
        let summary: String = md
            .split("## ")
            .filter(|s| s.starts_with("Test Execution Summary") || s.starts_with("Recommendations"))
            .map(|s| format!("## {s}"))
            .collect();
        println!("\n{summary}");
        println!(
            "reports: {}/{{results.jsonl, junit.xml, report.md}}",
            reports.display()
        );
    }
    println!("\nstages:");
    for s in &stages {
        println!(
            "  {} {:<70} {:>6.1}s",
            if s.ok { "ok    " } else { "FAILED" },
            s.name,
            s.secs
        );
    }
    let failed: Vec<&str> = stages
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("{} stage(s) failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

/// Empties the reports directory for this run, and marks it ours. A
/// directory that exists, holds files and lacks our mark was not made by
/// this command: it is left alone, and the run stops. (`target/reports`,
/// the default, is the build's own and always cleared.)
fn clear_reports(reports: &std::path::Path, chosen: bool) -> Result<()> {
    let has_files = std::fs::read_dir(reports).is_ok_and(|mut d| d.next().is_some());
    if has_files {
        if chosen && !reports.join(OURS).exists() {
            bail!(
                "--out {}: the directory holds files that `cargo xtask ci` did not write; refusing to clear it (name a new or empty directory)",
                reports.display()
            );
        }
        std::fs::remove_dir_all(reports)
            .with_context(|| format!("clearing {}", reports.display()))?;
    }
    std::fs::create_dir_all(reports).with_context(|| format!("creating {}", reports.display()))?;
    std::fs::write(
        reports.join(OURS),
        "reports of `cargo xtask ci`; cleared on its next run\n",
    )
    .with_context(|| format!("marking {}", reports.display()))?;
    Ok(())
}

/// The marker expression of a tier: its marker, and none of the earlier
/// tiers' (so a test runs in exactly one tier); `other` is none of them.
fn tier_expression(tier: &str) -> String {
    let pos = TIERS.iter().position(|t| *t == tier).unwrap_or(TIERS.len());
    let earlier = &TIERS[..pos];
    if pos == TIERS.len() {
        return format!("not ({})", TIERS.join(" or "));
    }
    if earlier.is_empty() {
        tier.to_string()
    } else {
        format!("{tier} and not ({})", earlier.join(" or "))
    }
}

/// Reports whether PostgreSQL and Redis answer (from DATABASE_URL /
/// REDIS_URL, else the default local ports).
fn services_check(stages: &mut Vec<Stage>) {
    let started = Instant::now();
    let probe = |env: &str, default: &str| -> (String, bool) {
        let target = std::env::var(env)
            .ok()
            .and_then(|u| {
                u.split('@')
                    .next_back()
                    .map(|h| h.split('/').next().unwrap_or(h).to_string())
            })
            .unwrap_or_else(|| default.to_string());
        let ok = target
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a: SocketAddr| {
                TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok()
            });
        (target, ok)
    };
    let (pg, pg_ok) = probe("DATABASE_URL", "127.0.0.1:5432");
    let (redis, redis_ok) = probe("REDIS_URL", "127.0.0.1:6379");
    eprintln!(
        "\n=== PostgreSQL at {pg}: {}",
        if pg_ok { "answering" } else { "not answering" }
    );
    eprintln!(
        "=== Redis at {redis}: {}",
        if redis_ok {
            "answering"
        } else {
            "not answering"
        }
    );
    if !(pg_ok && redis_ok) {
        eprintln!("=== real_services tests will be reported skipped with the reason");
    }
    stages.push(Stage {
        name: format!("services: PostgreSQL {pg_ok}, Redis {redis_ok}"),
        ok: true,
        secs: started.elapsed().as_secs_f64(),
    });
}
