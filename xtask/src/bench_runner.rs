//! `cargo xtask bench runner`: how fast our runner runs generated suites,
//! as ratios against peers measured in the same run on the same machine.
//!
//! - P1: 1000 tests that each await 50 ms. Peers: the libtest binary at its
//!   default threads and at our concurrency, and `cargo nextest run` at its
//!   default `-j`. Bound: 1000 × 50 ms / our concurrency. The libtest tests
//!   are `#[tokio::test]`s awaiting the same `tokio::time::sleep`, so both
//!   sides pay tokio's 1 ms timer resolution; the same tests written with
//!   `std::thread::sleep` are measured too (`libtest_thread_sleep_same_concurrency`).
//! - P2: 10 000 no-op tests. Peers: the libtest binary and `cargo nextest run`.
//! - P3: 300 tests with heavy-tailed durations, the longest (3 s) registered
//!   last. Bound: max(longest, total / slots). Measured after one warm-up run,
//!   since longest-first ordering uses the previous run's durations (the cold
//!   run is reported too).
//! - P7: P1 and P2 with `--isolation process` (a process per test, as
//!   nextest runs them) against `cargo nextest run` at its defaults, each
//!   side the best of three runs (nextest in P1 and P2 too: one noisy run
//!   of either side decided a ratio). Goals ≥ 20× and ≥ 5×. P2 is also run
//!   with `SERVICE_TEST_SUPERVISOR=0` (`ours_without_supervisor`): the
//!   supervisor's cost.
//! - P8: the shipped suites (`cargo test -p suites`, debug, the same binary
//!   for both) with `--isolation process`, a process per test attaching to
//!   one hosted mesh, against `cargo nextest run -p suites` (a process per
//!   test, each setting up its own), goal ≥ 10×; and against the same
//!   binary in process (`in_process`), goal ≤ 1.1× its time. All use whatever
//!   PostgreSQL/Redis the environment gives (private instances when
//!   `DATABASE_URL`/`REDIS_URL` are unset). A run in which tests failed is
//!   timed all the same, and the figure says so (`failing_runs` in the
//!   JSON, a `!` line under it in the table): not a clean measurement.
//! - P9: P3 dealt into 3 shards by `--partition duration:K/3`, each shard
//!   run at 8 tests at once so its wall follows the test time it holds.
//!   Peer: `hash:K/3`. Reported: the slowest shard and the spread
//!   (slowest / fastest − 1); the goal is a spread within 10 %.
//!
//! The suites are generated under `target/bench/runner-suite/` (a workspace
//! of its own, built in release with the shared target directory), and run
//! with their output discarded, so printing costs the same for everyone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::generated::{build_release, manifest, path_dep, share_lock_file, write_if_changed};
use crate::target_dir;

const P1_TESTS: usize = 1_000;
const P1_WAIT_MS: u64 = 50;
const P2_TESTS: usize = 10_000;
const P3_TESTS: usize = 300;
const P3_LONGEST_MS: u64 = 3_000;

/// Durations of P3: a spread of 100..1000 ms, and the longest last.
fn p3_durations_ms() -> Vec<u64> {
    (0..P3_TESTS)
        .map(|i| {
            if i == P3_TESTS - 1 {
                P3_LONGEST_MS
            } else {
                100 + (i as u64 * 37) % 900
            }
        })
        .collect()
}

#[derive(Serialize, Default)]
struct Figure {
    id: &'static str,
    what: String,
    ours_s: f64,
    peers: serde_json::Map<String, serde_json::Value>,
    bound_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ours_cold_s: Option<f64>,
    concurrency: usize,
    /// The runs of this figure in which tests failed: timed all the same,
    /// but not a clean measurement (printed under the table, kept here).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failing_runs: Vec<String>,
}

pub fn run() -> Result<()> {
    let out_dir = target_dir().join("bench");
    let suite_dir = out_dir.join("runner-suite");
    generate(&suite_dir).context("generating the benchmark suites")?;
    eprintln!("[bench runner] building the generated suites (release)…");
    let (ours, libtest) = build(&suite_dir)?;
    let history = out_dir.join("runner-history");
    let _ = std::fs::remove_dir_all(&history);

    let has_nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_nextest {
        eprintln!(
            "[bench runner] cargo-nextest is not installed: its columns are left empty (cargo install cargo-nextest)"
        );
    }
    let nextest = |filter: &str| -> Result<Option<f64>> {
        if !has_nextest {
            return Ok(None);
        }
        let make = || {
            let mut cmd = Command::new("cargo");
            cmd.args([
                "nextest",
                "run",
                "--release",
                "--no-fail-fast",
                "--test",
                "libtest",
                filter,
            ])
            .arg("--manifest-path")
            .arg(suite_dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", target_dir());
            cmd
        };
        // The peer of P1, P2 and P7: the best of three, as ours is in P7,
        // so that one noisy run of either side does not decide a ratio.
        Ok(Some(time_best_of(3, make, "cargo nextest run")?))
    };
    let ours_cmd = |filter: &str| {
        let mut c = Command::new(&ours);
        c.arg(filter)
            .env("SERVICE_TEST_HISTORY_DIR", &history)
            .env("SERVICE_TEST_SEED", "1");
        c
    };
    let concurrency = our_concurrency(&ours)?;

    let mut figures = Vec::new();

    eprintln!("[bench runner] P1: {P1_TESTS} tests × {P1_WAIT_MS} ms");
    let p1_ours = time_best(|| ours_cmd("p1::"), "ours P1")?;
    let p1_libtest = time_best(|| cmd_with(&libtest, &["p1::"]), "libtest P1")?;
    let threads = concurrency.to_string();
    let p1_libtest_same = time_best(
        || cmd_with(&libtest, &["p1::", "--test-threads", &threads]),
        "libtest P1 same concurrency",
    )?;
    let p1_blocking_same = time_best(
        || cmd_with(&libtest, &["p1_blocking::", "--test-threads", &threads]),
        "libtest P1 thread::sleep",
    )?;
    let p1_nextest = nextest("p1::")?;
    figures.push(Figure {
        id: "P1",
        what: format!("{P1_TESTS} tests each awaiting {P1_WAIT_MS} ms"),
        ours_s: p1_ours,
        peers: peers(&[
            ("libtest", Some(p1_libtest)),
            ("libtest_same_concurrency", Some(p1_libtest_same)),
            ("nextest", p1_nextest),
            (
                "libtest_thread_sleep_same_concurrency",
                Some(p1_blocking_same),
            ),
        ]),
        bound_s: Some(P1_TESTS as f64 * P1_WAIT_MS as f64 / 1000.0 / concurrency as f64),
        concurrency,
        ..Figure::default()
    });

    eprintln!("[bench runner] P2: {P2_TESTS} no-op tests");
    let p2_ours = time_best(|| ours_cmd("p2::"), "ours P2")?;
    let p2_in_process = time_best(
        || {
            let mut c = ours_cmd("p2::");
            c.env("SERVICE_TEST_SUPERVISOR", "0");
            c
        },
        "ours P2 without the supervisor",
    )?;
    let p2_libtest = time_best(|| cmd_with(&libtest, &["p2::"]), "libtest P2")?;
    let p2_nextest = nextest("p2::")?;
    figures.push(Figure {
        id: "P2",
        what: format!("{P2_TESTS} no-op tests"),
        ours_s: p2_ours,
        peers: peers(&[
            ("libtest", Some(p2_libtest)),
            ("nextest", p2_nextest),
            ("ours_without_supervisor", Some(p2_in_process)),
        ]),
        bound_s: None,
        concurrency,
        ..Figure::default()
    });

    eprintln!(
        "[bench runner] P3: {P3_TESTS} heavy-tailed tests, longest last (cold run, then warm)"
    );
    let durations = p3_durations_ms();
    let longest = *durations.iter().max().unwrap_or(&0) as f64 / 1000.0;
    let total: f64 = durations.iter().sum::<u64>() as f64 / 1000.0;
    let p3_cold = time_once(&mut ours_cmd("p3::"), "ours P3 cold")?;
    let p3_warm = time_best(|| ours_cmd("p3::"), "ours P3 warm")?;
    figures.push(Figure {
        id: "P3",
        what: format!(
            "{P3_TESTS} tests, {total:.0} s in all, longest {longest:.0} s registered last"
        ),
        ours_s: p3_warm,
        peers: serde_json::Map::new(),
        bound_s: Some(longest.max(total / concurrency as f64)),
        ours_cold_s: Some(p3_cold),
        concurrency,
        ..Figure::default()
    });

    // P7: a process per test, as nextest runs them, against nextest.
    eprintln!("[bench runner] P7: P1 and P2 with --isolation process");
    let isolated = |filter: &str, what: &str| {
        let make = || {
            let mut c = ours_cmd(filter);
            c.args(["--isolation", "process"]);
            c
        };
        time_best_of(3, make, what)
    };
    let p7_p1 = isolated("p1::", "ours P1 --isolation process")?;
    figures.push(Figure {
        id: "P7a",
        what: format!("P1 ({P1_TESTS} × {P1_WAIT_MS} ms) with --isolation process"),
        ours_s: p7_p1,
        peers: peers(&[("nextest", p1_nextest)]),
        bound_s: None,
        concurrency: harness::schedule::default_isolated_concurrency(),
        ..Figure::default()
    });
    let p7_p2 = isolated("p2::", "ours P2 --isolation process")?;
    figures.push(Figure {
        id: "P7b",
        what: format!("P2 ({P2_TESTS} no-ops) with --isolation process"),
        ours_s: p7_p2,
        peers: peers(&[("nextest", p2_nextest)]),
        bound_s: None,
        concurrency: harness::schedule::default_isolated_concurrency(),
        ..Figure::default()
    });

    // P8: the shipped suites, a process per test: one hosted mesh against
    // one per process.
    eprintln!("[bench runner] P8: the shipped suites with --isolation process");
    let suites = suites_binary()?;
    let mut c = Command::new(&suites);
    c.args(["--isolation", "process"])
        .env("SERVICE_TEST_HISTORY_DIR", &history)
        .env("SERVICE_TEST_SEED", "1");
    let mut p8_failing = Vec::new();
    let p8_ours =
        time_once_allowing_failures(&mut c, "ours suites --isolation process", &mut p8_failing)?;
    // The same binary in process (the default mode): issue 27's goal is
    // P8 within 1.1× of this.
    let mut c = Command::new(&suites);
    c.env("SERVICE_TEST_HISTORY_DIR", &history)
        .env("SERVICE_TEST_SEED", "1");
    let p8_in_process =
        time_once_allowing_failures(&mut c, "ours suites in process", &mut p8_failing)?;
    let p8_nextest = if has_nextest {
        let mut cmd = Command::new("cargo");
        cmd.args(["nextest", "run", "--no-fail-fast", "-p", "suites"]);
        Some(time_once_allowing_failures(
            &mut cmd,
            "cargo nextest run -p suites",
            &mut p8_failing,
        )?)
    } else {
        None
    };
    figures.push(Figure {
        id: "P8",
        what: "the shipped suites, a process per test (--isolation process, hosted fixtures)"
            .to_string(),
        ours_s: p8_ours,
        peers: peers(&[("nextest", p8_nextest), ("in_process", Some(p8_in_process))]),
        bound_s: None,
        concurrency: harness::schedule::default_isolated_concurrency(),
        failing_runs: p8_failing,
        ..Figure::default()
    });

    // P9: shards dealt by recorded duration finish together. Each shard of
    // P3 runs at 8 at once, so its wall time follows the test time it holds
    // (not just its longest test); `hash:K/3` is the peer.
    eprintln!("[bench runner] P9: P3 in 3 shards, duration:K/3 against hash:K/3");
    let shard_walls = |kind: &str| -> Result<Vec<f64>> {
        (1..=3)
            .map(|k| {
                let p = format!("{kind}:{k}/3");
                let mut c = ours_cmd("p3::");
                c.args(["--partition", &p, "--test-threads", "8"]);
                time_once(&mut c, &format!("ours P3 {p}"))
            })
            .collect()
    };
    let spread = |walls: &[f64]| {
        let max = walls.iter().copied().fold(f64::MIN, f64::max);
        let min = walls.iter().copied().fold(f64::MAX, f64::min);
        max / min - 1.0
    };
    let by_duration = shard_walls("duration")?;
    let by_hash = shard_walls("hash")?;
    eprintln!(
        "[bench runner] P9: shard walls duration {by_duration:.2?} (spread {:.1} %), hash {by_hash:.2?} (spread {:.1} %)",
        spread(&by_duration) * 100.0,
        spread(&by_hash) * 100.0
    );
    figures.push(Figure {
        id: "P9",
        what: "P3 in 3 shards at 8 at once: the slowest shard's wall".to_string(),
        ours_s: by_duration.iter().copied().fold(0.0, f64::max),
        peers: peers(&[
            (
                "hash_partition_slowest_shard",
                by_hash.iter().copied().reduce(f64::max),
            ),
            ("duration_spread", Some(spread(&by_duration))),
            ("hash_spread", Some(spread(&by_hash))),
        ]),
        bound_s: Some(p3_durations_ms().iter().sum::<u64>() as f64 / 1000.0 / 3.0 / 8.0),
        concurrency: 8,
        ..Figure::default()
    });

    let json_path = out_dir.join("runner.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&figures)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    print!("{}", table(&figures));
    println!("\nwritten: {}", json_path.display());
    Ok(())
}

/// The shipped suites' test binary (debug; built if needed).
fn suites_binary() -> Result<PathBuf> {
    let out = Command::new("cargo")
        .args(["test", "-p", "suites", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("building the suites (cargo test -p suites --no-run)")?;
    if !out.status.success() {
        bail!("cargo test -p suites --no-run failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "suites" && v["profile"]["test"] == true)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo did not name the suites test binary")
}

/// Wall time of one run whose tests may fail (load-sensitive suites on a
/// loaded machine): the time is what is compared; a run that failed is
/// said at once and added to `failing` (its figure is then marked).
fn time_once_allowing_failures(
    cmd: &mut Command,
    what: &str,
    failing: &mut Vec<String>,
) -> Result<f64> {
    let started = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("starting {what}"))?;
    let took = started.elapsed().as_secs_f64();
    if !status.success() {
        eprintln!("[bench runner] {what}: {status} (some tests failed); timed anyway");
        failing.push(format!("{what}: {status}"));
    }
    Ok(took)
}

fn peers(list: &[(&str, Option<f64>)]) -> serde_json::Map<String, serde_json::Value> {
    list.iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                v.map_or(serde_json::Value::Null, |x| round3(x).into()),
            )
        })
        .collect()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn table(figures: &[Figure]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:<4} {:>9}  {:<40} {:>9} {:>13}",
        "id", "ours (s)", "compared with", "them (s)", "ours faster ×"
    );
    for f in figures {
        let mut rows: Vec<(String, Option<f64>)> = f
            .peers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64()))
            .collect();
        if let Some(b) = f.bound_s {
            rows.push(("bound (ideal)".to_string(), Some(b)));
        }
        if let Some(c) = f.ours_cold_s {
            rows.push(("ours, cold (no history)".to_string(), Some(c)));
        }
        for (i, (name, them)) in rows.iter().enumerate() {
            let ours = if i == 0 {
                format!("{:.3}", f.ours_s)
            } else {
                String::new()
            };
            let id = if i == 0 { f.id } else { "" };
            let (them_s, ratio) = match them {
                Some(t) => (format!("{t:.3}"), format!("{:.2}", t / f.ours_s)),
                None => ("n/a".to_string(), "n/a".to_string()),
            };
            let _ = writeln!(s, "{id:<4} {ours:>9}  {name:<40} {them_s:>9} {ratio:>13}");
        }
        for run in &f.failing_runs {
            let _ = writeln!(
                s,
                "     ! tests failed in {run}: {} is not a clean measurement",
                f.id
            );
        }
    }
    let _ = writeln!(
        s,
        "\n(\"ours faster ×\" = their time / ours; against a bound it is ≤ 1, and 1/x is how far from ideal.)"
    );
    s
}

fn cmd_with(bin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args);
    c
}

/// Runs a command with its output discarded and returns the wall time in seconds.
fn time_once(cmd: &mut Command, what: &str) -> Result<f64> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!("{what} failed ({}):\n{}", out.status, tail.join("\n"));
    }
    Ok(secs)
}

/// The best of `n` runs, however long each takes.
fn time_best_of(n: usize, mut make: impl FnMut() -> Command, what: &str) -> Result<f64> {
    let mut best = time_once(&mut make(), what)?;
    for _ in 1..n {
        best = best.min(time_once(&mut make(), what)?);
    }
    Ok(best)
}

/// The best of three runs for short measurements (under 5 s), else one.
fn time_best(mut make: impl FnMut() -> Command, what: &str) -> Result<f64> {
    let first = time_once(&mut make(), what)?;
    if first > 5.0 {
        return Ok(first);
    }
    Ok(first.min(time_best_of(2, make, what)?))
}

/// Our binary prints "up to N at once" at start; the bound and the
/// same-concurrency peer use that N.
fn our_concurrency(ours: &Path) -> Result<usize> {
    let out = Command::new(ours)
        .args(["--exact", "p2::t00000"])
        .output()
        .context("running our suite")?;
    let err = String::from_utf8_lossy(&out.stderr);
    err.split("up to ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("cannot read the concurrency from our start line: {err}"))
}

fn generate(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let manifest = manifest(
        "bench runner",
        "runner-bench-suite",
        &(path_dep("harness", "harness", "service-test-harness")
            + "tokio = { version = \"1\", features = [\"time\", \"rt\", \"macros\"] }\n"),
        "[[test]]\nname = \"ours\"\npath = \"ours.rs\"\nharness = false\n\n[[test]]\nname = \"libtest\"\npath = \"libtest.rs\"\n",
    );
    write_if_changed(&dir.join("Cargo.toml"), &manifest)?;
    share_lock_file(dir)?;

    let mut ours = String::from(
        "// Generated by `cargo xtask bench runner`.\nuse std::time::Duration;\nuse harness::service_test;\n\n",
    );
    let mut libtest = String::from(
        "// Generated by `cargo xtask bench runner`.\n#![allow(non_snake_case)]\nuse std::time::Duration;\n\n",
    );
    ours.push_str("mod p1 {\n    use super::*;\n");
    libtest.push_str("mod p1 {\n    use super::*;\n");
    for i in 0..P1_TESTS {
        let _ = writeln!(
            ours,
            "    #[service_test(unit)] async fn t{i:04}() {{ tokio::time::sleep(Duration::from_millis({P1_WAIT_MS})).await; }}"
        );
        let _ = writeln!(
            libtest,
            "    #[tokio::test] async fn t{i:04}() {{ tokio::time::sleep(Duration::from_millis({P1_WAIT_MS})).await; }}"
        );
    }
    libtest.push_str("}\n\nmod p1_blocking {\n    use super::*;\n");
    for i in 0..P1_TESTS {
        let _ = writeln!(
            libtest,
            "    #[test] fn t{i:04}() {{ std::thread::sleep(Duration::from_millis({P1_WAIT_MS})); }}"
        );
    }
    ours.push_str("}\n\nmod p2 {\n    use super::*;\n");
    libtest.push_str("}\n\nmod p2 {\n");
    for i in 0..P2_TESTS {
        let _ = writeln!(ours, "    #[service_test(unit)] async fn t{i:05}() {{}}");
        let _ = writeln!(libtest, "    #[test] fn t{i:05}() {{}}");
    }
    ours.push_str("}\n\nmod p3 {\n    use super::*;\n");
    for (i, ms) in p3_durations_ms().into_iter().enumerate() {
        let _ = writeln!(
            ours,
            "    #[service_test(unit)] async fn t{i:03}() {{ tokio::time::sleep(Duration::from_millis({ms})).await; }}"
        );
    }
    ours.push_str("}\n\nharness::main!();\n");
    libtest.push_str("}\n");
    write_if_changed(&dir.join("ours.rs"), &ours)?;
    write_if_changed(&dir.join("libtest.rs"), &libtest)?;
    Ok(())
}

/// Builds both test binaries and returns their paths (ours, libtest).
fn build(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let built = build_release(dir, &["test", "--no-run"], "the benchmark suites")?;
    let exe = |target: &str| {
        built
            .iter()
            .find(|(name, _)| name == target)
            .map(|(_, exe)| exe.clone())
    };
    match (exe("ours"), exe("libtest")) {
        (Some(o), Some(l)) => Ok((o, l)),
        _ => bail!("cargo built the suites but did not name both test executables"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(failing_runs: Vec<String>) -> Figure {
        Figure {
            id: "P8",
            what: "the shipped suites".to_string(),
            ours_s: 10.0,
            peers: peers(&[("in_process", Some(9.5))]),
            bound_s: None,
            concurrency: 64,
            failing_runs,
            ..Figure::default()
        }
    }

    #[test]
    fn a_figure_timed_over_failing_tests_says_so_in_the_table_and_the_json() {
        let failed = figure(vec!["ours suites in process: exit status: 101".to_string()]);
        let printed = table(std::slice::from_ref(&failed));
        assert!(
            printed.contains(
                "! tests failed in ours suites in process: exit status: 101: P8 is not a clean measurement"
            ),
            "{printed}"
        );
        let json = serde_json::to_value(&failed).expect("serializes");
        assert_eq!(
            json["failing_runs"][0],
            "ours suites in process: exit status: 101"
        );
        let clean = figure(Vec::new());
        assert!(!table(std::slice::from_ref(&clean)).contains('!'));
        let json = serde_json::to_value(&clean).expect("serializes");
        assert!(json.get("failing_runs").is_none());
    }
}
