//! Crates the benchmarks generate under `target/bench/`: writing their
//! files without needless rebuilds, and building them in release with the
//! shared target directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{target_dir, workspace_root};

/// Writes `content` unless the file already holds it (so cargo does not rebuild).
pub fn write_if_changed(path: &Path, content: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))
}

/// Seeds a generated crate with the workspace's lock file, so it resolves
/// the same dependency versions and shares their compiled artefacts.
pub fn share_lock_file(dir: &Path) -> Result<()> {
    if !dir.join("Cargo.lock").exists() {
        if let Ok(lock) = std::fs::read(workspace_root().join("Cargo.lock")) {
            std::fs::write(dir.join("Cargo.lock"), lock)?;
        }
    }
    Ok(())
}

/// Runs `cargo <args> --release` on the crate in `dir` and returns the
/// executables it built, by target name.
pub fn build_release(dir: &Path, args: &[&str], what: &str) -> Result<Vec<(String, PathBuf)>> {
    let out = Command::new("cargo")
        .args(args)
        .args(["--release", "--message-format=json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo to build {what}"))?;
    if !out.status.success() {
        bail!("building {what} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| {
            Some((
                m["target"]["name"].as_str()?.to_string(),
                PathBuf::from(m["executable"].as_str()?),
            ))
        })
        .collect())
}
