//! `cargo xtask bench data`: synthetic data generation and PHI scanning,
//! as ratios against peers measured in the same run.
//!
//! - G1, generation: complete patient + coverage + claim records per second
//!   (ours: a full scenario, which also has a provider, a visit and a
//!   remittance), against Python Faker generating the same fields with its
//!   default settings (installed with pip when missing), and against the
//!   `fake` crate generating the same fields without validity rules.
//! - S1, scanning: MB/s over a generated service log with 10 000
//!   registered canaries plus the pattern detectors, against
//!   `grep -F -f canaries` over the same file.
//! - S2, one long line: MB/s over 2 MB of that log written as one line
//!   (newlines turned into spaces), against the same bytes as the short
//!   lines they were. A scan linear in its input keeps the two close
//!   (goal: the long line takes at most 1.5x the time); one whose
//!   look-backs reach to the line's start does not finish.
//!
//! `--only scan` runs S1 and S2 alone (G1 needs Python Faker and takes
//! minutes); without it every figure runs.
//!
//! The Rust side is a crate generated under `target/bench/data-suite/`
//! (so `fake` stays out of the workspace), built in release.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::generated::{build_binary, manifest, path_dep, share_lock_file, write_if_changed};
use crate::{Figure, target_dir};

const RUST_RECORDS: u64 = 200_000;
const FAKER_RECORDS: u64 = 10_000;
const LOG_MB: u64 = 64;
const CANARIES: u64 = 10_000;
const LONG_LINE_MB: u64 = 2;
/// Rounds of the fast measurements (the best is kept: this VM's speed drifts).
const ROUNDS: usize = 5;

pub fn run(args: &[&str]) -> Result<()> {
    let only_scan = match args {
        [] => false,
        ["--only", "scan"] => true,
        other => bail!(
            "`cargo xtask bench data` takes no arguments or `--only scan` (got `{}`)",
            other.join(" ")
        ),
    };
    let out_dir = target_dir().join("bench");
    let dir = out_dir.join("data-suite");
    generate(&dir)?;
    eprintln!("[bench data] building the benchmark crate (release)…");
    let bin = build_binary(&dir, &["build"], "data-bench", "the data benchmark")?;

    let mut figures = Vec::new();
    if !only_scan {
        figures.push(generation(&bin, &out_dir)?);
    }

    eprintln!("[bench data] S1: writing a {LOG_MB} MB log with {CANARIES} canaries");
    let log = out_dir.join("scan.log");
    let canaries = out_dir.join("canaries.txt");
    run_ok(
        Command::new(&bin)
            .args(["make-log"])
            .arg(&log)
            .arg(&canaries)
            .args([&LOG_MB.to_string(), &CANARIES.to_string()]),
        "make-log",
    )?;
    let scan_args = [
        "scan",
        &*log.to_string_lossy(),
        &*canaries.to_string_lossy(),
    ]
    .map(str::to_string);
    let scan_args: Vec<&str> = scan_args.iter().map(String::as_str).collect();
    let mut ours_scan = 0f64;
    for _ in 0..3 {
        ours_scan = ours_scan.max(rate_of(&bin, &scan_args)?);
    }
    let grep_scan = grep_rate(&log, &canaries)?;
    let mut s1 = serde_json::Map::new();
    s1.insert("grep_F".into(), grep_scan.into());
    figures.push(Figure {
        id: "S1",
        what: format!("PHI scan of a {LOG_MB} MB log, {CANARIES} canaries + pattern detectors"),
        unit: "MB/s",
        ours: ours_scan,
        peers: s1,
    });

    eprintln!(
        "[bench data] S2: {LONG_LINE_MB} MB of the log as one line and as its short lines, alternately, best of 3"
    );
    let line_args = |shape: &'static str| {
        [
            "scan-lines".to_string(),
            log.to_string_lossy().into_owned(),
            canaries.to_string_lossy().into_owned(),
            LONG_LINE_MB.to_string(),
            shape.to_string(),
        ]
    };
    let (long_args, short_args) = (line_args("long"), line_args("short"));
    let (mut long_rate, mut short_rate) = (0f64, 0f64);
    for _ in 0..3 {
        long_rate = long_rate.max(rate_of(&bin, &long_args.each_ref().map(String::as_str))?);
        short_rate = short_rate.max(rate_of(&bin, &short_args.each_ref().map(String::as_str))?);
    }
    let mut s2 = serde_json::Map::new();
    s2.insert("short_lines".into(), short_rate.into());
    figures.push(Figure {
        id: "S2",
        what: format!(
            "PHI scan of {LONG_LINE_MB} MB as one line, against the same bytes as short lines (goal: ratio >= 0.67, i.e. at most 1.5x the time)"
        ),
        unit: "MB/s",
        ours: long_rate,
        peers: s2,
    });
    let path = out_dir.join("data.json");
    let mut written: Vec<serde_json::Value> = figures
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    // `--only scan` keeps the figures of an earlier full run it did not remeasure.
    if only_scan {
        let earlier: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let remeasured = |v: &serde_json::Value| figures.iter().any(|f| v["id"] == f.id);
        let kept: Vec<serde_json::Value> = earlier.into_iter().filter(|v| !remeasured(v)).collect();
        written.splice(0..0, kept);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&written)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "\n{:<4} {:<12} {:>14}  {:<14} {:>14} {:>12}",
        "id", "unit", "ours", "compared with", "them", "ours / them"
    );
    for f in &figures {
        for (i, (name, v)) in f.peers.iter().enumerate() {
            let them = v.as_f64().unwrap_or(f64::NAN);
            let (id, unit, ours) = if i == 0 {
                (f.id, f.unit, format!("{:.1}", f.ours))
            } else {
                ("", "", String::new())
            };
            println!(
                "{id:<4} {unit:<12} {ours:>14}  {name:<14} {them:>14.1} {:>12.2}",
                f.ours / them
            );
        }
    }
    println!("\nwritten: {}", path.display());
    Ok(())
}

/// G1: records per second, ours against the `fake` crate and Python Faker.
fn generation(bin: &Path, out_dir: &Path) -> Result<Figure> {
    eprintln!(
        "[bench data] G1: generating {RUST_RECORDS} records, ours and the fake crate alternately, best of {ROUNDS}"
    );
    let (mut ours_rate, mut fake_rate) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        ours_rate = ours_rate.max(rate_of(bin, &["gen-ours", &RUST_RECORDS.to_string()])?);
        fake_rate = fake_rate.max(rate_of(bin, &["gen-fake", &RUST_RECORDS.to_string()])?);
    }
    eprintln!("[bench data] G1: {FAKER_RECORDS} records with Python Faker, best of 2");
    let faker_rate = python_faker(out_dir)?.max(python_faker(out_dir)?);
    let mut peers = serde_json::Map::new();
    peers.insert("python_faker".into(), faker_rate.into());
    peers.insert("fake_crate".into(), fake_rate.into());
    Ok(Figure {
        id: "G1",
        what: "patient+coverage+claim records generated per second".into(),
        unit: "records/s",
        ours: ours_rate,
        peers,
    })
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The bench binary prints one number: a rate.
fn rate_of(bin: &Path, args: &[&str]) -> Result<f64> {
    let out = run_ok(Command::new(bin).args(args), args[0])?;
    out.trim()
        .parse()
        .with_context(|| format!("{} printed {out:?}, not a rate", args[0]))
}

fn python_faker(out_dir: &Path) -> Result<f64> {
    let has = Command::new("python3")
        .args(["-c", "import faker"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        eprintln!("[bench data] installing Python Faker with pip…");
        run_ok(
            Command::new("python3").args(["-m", "pip", "install", "--quiet", "faker"]),
            "pip install faker",
        )?;
    }
    let script = out_dir.join("faker_bench.py");
    std::fs::write(&script, FAKER_SCRIPT)?;
    let out = run_ok(
        Command::new("python3")
            .arg(&script)
            .arg(FAKER_RECORDS.to_string()),
        "Python Faker",
    )?;
    out.trim()
        .parse()
        .with_context(|| format!("the Faker script printed {out:?}"))
}

fn grep_rate(log: &Path, canaries: &Path) -> Result<f64> {
    let size = std::fs::metadata(log)?.len() as f64 / 1e6;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let out = Command::new("grep")
            .arg("-F")
            .arg("-c")
            .arg("-f")
            .arg(canaries)
            .arg(log)
            .stdout(Stdio::piped())
            .output()?;
        // grep exits 1 when nothing matched; both 0 and 1 are a finished scan.
        if !matches!(out.status.code(), Some(0 | 1)) {
            bail!("grep failed ({})", out.status);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(size / best)
}

fn generate(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    let manifest = manifest(
        "bench data",
        "data-bench",
        &(path_dep(
            "healthcare_data",
            "healthcare-data",
            "service-test-healthcare-data",
        ) + &path_dep("phi", "phi", "service-test-phi")
            + "fake = \"5.1\"\n"),
        "",
    );
    write_if_changed(&dir.join("Cargo.toml"), &manifest)?;
    share_lock_file(dir)?;
    write_if_changed(&dir.join("src/main.rs"), BENCH_MAIN)
}

/// The benchmark program (built in its own crate so `fake` stays out of the workspace).
const BENCH_MAIN: &str = include_str!("../assets/data_bench.rs");

/// The same fields with Python Faker's defaults.
const FAKER_SCRIPT: &str = include_str!("../assets/faker_bench.py");
