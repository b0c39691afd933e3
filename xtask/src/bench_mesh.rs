//! `cargo xtask bench mesh`: seed 004's criteria on the sandbox mesh, in
//! release: 100 clients × 100 requests on `POST /patients`, then as many
//! claim sagas on `POST /visits`; p50/p95/p99, errors and throughput per
//! endpoint with the seed's thresholds beside them, written to
//! `target/bench/mesh.json`. Arguments (`--clients N`, `--requests N`,
//! `--pool N`, `--tls`) pass to `sandbox bench`.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{target_dir, workspace_root};

/// Seed 004's criteria on the sandbox, in release (target/bench/mesh.json)
///
/// CLIENTS clients x REQUESTS requests on POST /patients, then as many claim sagas on
/// POST /visits: p50/p95/p99, errors and throughput per endpoint beside the seed's thresholds. The
/// options pass to `sandbox bench`, which checks them.
#[derive(clap::Args)]
pub struct Options {
    /// Concurrent clients [default: 100]
    #[arg(long, value_name = "N")]
    clients: Option<usize>,
    /// Requests per client on each endpoint [default: 100]
    #[arg(long, value_name = "N")]
    requests: Option<usize>,
    /// PostgreSQL connections per service, 1 to 32 [default: 8]
    #[arg(long, value_name = "N")]
    pool: Option<usize>,
    /// Serve and call over HTTPS
    #[arg(long)]
    tls: bool,
}

impl Options {
    /// The arguments of `sandbox bench`.
    fn sandbox_args(&self) -> Vec<String> {
        let mut pass = Vec::new();
        for (flag, value) in [
            ("--clients", self.clients),
            ("--requests", self.requests),
            ("--pool", self.pool),
        ] {
            if let Some(n) = value {
                pass.extend([flag.to_string(), n.to_string()]);
            }
        }
        if self.tls {
            pass.push("--tls".into());
        }
        pass
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
