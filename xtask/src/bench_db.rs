//! `cargo xtask bench db`: the p50 time to get a fresh per-test database
//! (a clone of the migrated template, what `TestDb` does) against its peer,
//! creating an empty database and applying the migrations, measured by the
//! same probe in the same run against the same PostgreSQL (a private
//! instance, or DATABASE_URL when set). Writes `target/bench/db.json`.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::generated::build_binary;
use crate::{target_dir, workspace_root};

pub fn run() -> Result<()> {
    eprintln!("[bench db] building the service probe (release)…");
    let probe = build_binary(
        &workspace_root(),
        &[
            "build",
            "-p",
            "service-test-provision",
            "--bin",
            "services-probe",
        ],
        "services-probe",
        "the service probe",
    )?;
    let out = Command::new(&probe)
        .args(["--exact", "clone_timing", "--require-services"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running the service probe")?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("the probe failed ({}):\n{err}", out.status);
    }
    let line = err
        .lines()
        .find_map(|l| l.split_once("EVENT clone p50 ").map(|(_, r)| r.to_string()))
        .context("the probe printed no timing")?;
    // "27.10 ms; create+migrate p50 103.71 ms"
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [clone, fresh] = nums[..] else {
        bail!("unexpected timing line: {line}")
    };
    let json = serde_json::json!([{
        "id": "D1",
        "what": "p50 time to get a fresh per-test database (20 samples each)",
        "unit": "ms",
        "ours": clone,
        "peers": { "create_and_migrate": fresh },
        "goal_ms": 100.0,
    }]);
    let path = target_dir().join("bench").join("db.json");
    std::fs::create_dir_all(path.parent().context("bench dir")?)?;
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("\nid   unit   ours (clone)   create+migrate   peer / ours");
    println!(
        "D1   ms     {clone:>12.2}   {fresh:>14.2}   {:>11.2}",
        fresh / clone
    );
    println!(
        "goal: clone p50 <= 100 ms: {}",
        if clone <= 100.0 { "met" } else { "not met" }
    );
    println!("\nwritten: {}", path.display());
    Ok(())
}
