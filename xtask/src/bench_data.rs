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
/// Rounds of the fast measurements (the best is kept: this VM's speed drifts).
const ROUNDS: usize = 5;

pub fn run(args: &[&str]) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("`cargo xtask bench data` takes no arguments (got `{a}`)");
    }
    let out_dir = target_dir().join("bench");
    let dir = out_dir.join("data-suite");
    generate(&dir)?;
    eprintln!("[bench data] building the benchmark crate (release)…");
    let bin = build_binary(&dir, &["build"], "data-bench", "the data benchmark")?;

    eprintln!(
        "[bench data] G1: generating {RUST_RECORDS} records, ours and the fake crate alternately, best of {ROUNDS}"
    );
    let (mut ours_rate, mut fake_rate) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        ours_rate = ours_rate.max(rate_of(&bin, &["gen-ours", &RUST_RECORDS.to_string()])?);
        fake_rate = fake_rate.max(rate_of(&bin, &["gen-fake", &RUST_RECORDS.to_string()])?);
    }
    eprintln!("[bench data] G1: {FAKER_RECORDS} records with Python Faker, best of 2");
    let faker_rate = python_faker(&out_dir)?.max(python_faker(&out_dir)?);

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

    let mut g1 = serde_json::Map::new();
    g1.insert("python_faker".into(), faker_rate.into());
    g1.insert("fake_crate".into(), fake_rate.into());
    let mut s1 = serde_json::Map::new();
    s1.insert("grep_F".into(), grep_scan.into());
    let figures = vec![
        Figure {
            id: "G1",
            what: "patient+coverage+claim records generated per second".into(),
            unit: "records/s",
            ours: ours_rate,
            peers: g1,
        },
        Figure {
            id: "S1",
            what: format!("PHI scan of a {LOG_MB} MB log, {CANARIES} canaries + pattern detectors"),
            unit: "MB/s",
            ours: ours_scan,
            peers: s1,
        },
    ];
    let path = out_dir.join("data.json");
    std::fs::write(&path, serde_json::to_string_pretty(&figures)?)
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
        &(path_dep("fixtures") + &path_dep("phi") + "fake = \"5.1\"\n"),
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
