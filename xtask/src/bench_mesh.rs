//! `cargo xtask bench mesh`: seed 004's criteria on the sandbox mesh, in
//! release: 100 clients × 100 requests on `POST /patients`, then as many
//! claim sagas on `POST /visits`; p50/p95/p99, errors and throughput per
//! endpoint with the seed's thresholds beside them, written to
//! `target/bench/mesh.json`. Arguments (`--clients N`, `--requests N`,
//! `--pool N`, `--tls`) pass to `sandbox bench`.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{target_dir, workspace_root};

pub fn run(args: &[&str]) -> Result<()> {
    let mut pass = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i] {
            "--clients" | "--requests" | "--pool" => {
                let v = args
                    .get(i + 1)
                    .with_context(|| format!("{} needs a number", args[i]))?;
                pass.extend([args[i].to_string(), (*v).to_string()]);
                i += 1;
            }
            "--tls" => pass.push("--tls".into()),
            other => bail!(
                "`cargo xtask bench mesh` takes --clients N, --requests N, --pool N and --tls (got `{other}`)"
            ),
        }
        i += 1;
    }
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
    let out = target_dir().join("bench").join("mesh.json");
    let status = Command::new(&bin)
        .arg("bench")
        .args(&pass)
        .arg("--json")
        .arg(&out)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("`sandbox bench` failed ({status})");
    }
    Ok(())
}
