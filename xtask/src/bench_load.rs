//! `cargo xtask bench load`: closed-model throughput of our load generator
//! against `wrk` (Debian package, installed when missing) on the same
//! loopback server, with the same connections, in the same run.
//!
//! The server runs in its own process (2 tokio workers); each tool runs
//! alone against it, in turns, and the best of the rounds is kept (this
//! VM's speed drifts). Writes `target/bench/load.json`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::generated::{build_binary, manifest, path_dep, share_lock_file, write_if_changed};
use crate::{Figure, target_dir};

const CONNECTIONS: usize = 32;
const SECONDS: u64 = 5;
const ROUNDS: usize = 2;

const BENCH_MAIN: &str = include_str!("../assets/load_bench.rs");

/// The server process; killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run() -> Result<()> {
    ensure_wrk()?;
    let out_dir = target_dir().join("bench");
    let dir = out_dir.join("load-suite");
    generate(&dir)?;
    eprintln!("[bench load] building the benchmark crate (release)…");
    let bin = build_binary(&dir, &["build"], "load-bench", "the load benchmark")?;

    let mut child = Command::new(&bin)
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the server")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
    let _server = Server(child);
    let addr = line.trim().to_string();
    if !addr.starts_with("127.0.0.1:") {
        bail!("the server did not report a loopback address: {addr:?}");
    }
    eprintln!(
        "[bench load] server at {addr}; {CONNECTIONS} connections, {SECONDS} s per run, best of {ROUNDS}"
    );

    let (mut ours, mut wrk) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        let out = Command::new(&bin)
            .args([
                "load",
                &addr,
                &CONNECTIONS.to_string(),
                &SECONDS.to_string(),
            ])
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("our load run failed ({})", out.status);
        }
        ours = ours.max(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .context("our load run printed no rate")?,
        );
        let out = Command::new("wrk")
            .args([
                "-t2",
                &format!("-c{CONNECTIONS}"),
                &format!("-d{SECONDS}s"),
                &format!("http://{addr}/"),
            ])
            .output()
            .context("running wrk")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rate: f64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("wrk printed no Requests/sec:\n{text}"))?;
        eprintln!("[bench load] wrk: {rate:.0} req/s");
        wrk = wrk.max(rate);
    }
    let mut peers = serde_json::Map::new();
    peers.insert("wrk".into(), wrk.into());
    let figure = Figure {
        id: "L1",
        what: format!(
            "closed model, {CONNECTIONS} connections, {SECONDS} s, keep-alive GET on loopback"
        ),
        unit: "requests/s",
        ours,
        peers,
    };
    let path = out_dir.join("load.json");
    std::fs::write(&path, serde_json::to_string_pretty(&[&figure])?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nid   unit          ours        wrk   ours / wrk");
    println!("L1   req/s   {ours:>10.0} {wrk:>10.0} {:>12.2}", ours / wrk);
    println!("\nwritten: {}", path.display());
    Ok(())
}

fn ensure_wrk() -> Result<()> {
    if Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return Ok(());
    }
    eprintln!("[bench load] installing wrk (Debian package)…");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "wrk"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if install()
        || (Command::new("apt-get")
            .args(["update", "-q"])
            .status()
            .is_ok_and(|s| s.success())
            && install())
    {
        return Ok(());
    }
    bail!("wrk is not installed and apt-get could not install it: install the `wrk` package")
}

fn generate(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    let manifest = manifest(
        "bench load",
        "load-bench",
        &(path_dep("traffic", "traffic", "service-test-traffic")
            + "tokio = { version = \"1\", features = [\"rt-multi-thread\", \"macros\", \"io-std\"] }\n"),
        "",
    );
    write_if_changed(&dir.join("Cargo.toml"), &manifest)?;
    share_lock_file(dir)?;
    write_if_changed(&dir.join("src/main.rs"), BENCH_MAIN)
}
