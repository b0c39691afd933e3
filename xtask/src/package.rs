//! `cargo xtask package`: `cargo package` for every crate meant for users
//! (the workspace members whose `publish` is not `false`), in one
//! invocation.
//!
//! Until they are on crates.io, a crate cannot be packaged alone: cargo
//! resolves the packaged manifest against the registry, where its sibling
//! `service-test-*` dependencies are not yet. Packaged together, cargo
//! serves each to the others from a local registry (`target/package/
//! tmp-registry`) and verifies each `.crate` by building it as a user
//! would. Publishing is the same set: `cargo publish --workspace`. Both
//! need Cargo 1.90 or later (multi-package packaging).
//!
//! Then each crate is packaged alone, as `cargo package -p <crate>` would,
//! but without its lock file and unverified (`--no-verify
//! --exclude-lockfile`, into `target/package-alone/`): the two steps that
//! need the siblings on a registry. This shows each crate's manifest, files
//! and licences make a package on their own.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// `cargo xtask package [--no-verify] [--allow-dirty]`
#[derive(clap::Args)]
pub struct Options {
    /// Write the .crate files without building each one as a user would
    #[arg(long)]
    no_verify: bool,
    /// Package uncommitted changes too
    #[arg(long)]
    allow_dirty: bool,
}

/// The workspace members meant for users, from `cargo metadata`.
pub fn published() -> Result<Vec<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(crate::workspace_root())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading cargo metadata's output")?;
    let mut names: Vec<String> = meta["packages"]
        .as_array()
        .context("cargo metadata has no packages")?
        .iter()
        // `publish = false` reads as an empty list of registries.
        .filter(|p| !p["publish"].as_array().is_some_and(Vec::is_empty))
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    names.sort();
    Ok(names)
}

/// Runs `cargo package` over every published crate.
pub fn run(options: &Options) -> Result<()> {
    let crates = published()?;
    if crates.is_empty() {
        bail!("no workspace member is meant for users (every one has publish = false)");
    }
    eprintln!("[package] {}", crates.join(", "));
    let mut cargo = Command::new(env!("CARGO"));
    cargo.arg("package").current_dir(crate::workspace_root());
    for name in &crates {
        cargo.args(["-p", name]);
    }
    if options.no_verify {
        cargo.arg("--no-verify");
    }
    if options.allow_dirty {
        cargo.arg("--allow-dirty");
    }
    let status = cargo.status().context("running cargo package")?;
    if !status.success() {
        bail!("cargo package failed ({status})");
    }
    let alone = crate::target_dir().join("package-alone");
    for name in &crates {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["package", "--no-verify", "--exclude-lockfile", "-p", name])
            .env("CARGO_TARGET_DIR", &alone)
            .current_dir(crate::workspace_root());
        if options.allow_dirty {
            cargo.arg("--allow-dirty");
        }
        let status = cargo
            .status()
            .with_context(|| format!("running cargo package -p {name}"))?;
        if !status.success() {
            bail!(
                "cargo package -p {name} (alone, --no-verify --exclude-lockfile) failed ({status})"
            );
        }
    }
    eprintln!(
        "[package] {} crates in {}{}, and each alone in {}",
        crates.len(),
        crate::target_dir().join("package").display(),
        if options.no_verify {
            " (not verified: --no-verify)"
        } else {
            ", each built as a user would"
        },
        alone.join("package").display()
    );
    Ok(())
}
