//! `cargo xtask package`: `cargo package -p <crate>` for every crate meant
//! for users (the workspace members whose `publish` is not `false`), each
//! alone, as a user or a release script would run it.
//!
//! A packaged manifest keeps only the version of each sibling
//! `service-test-*` dependency, so cargo resolves it against crates.io, both
//! to write the package's lock file and to verify it by building it as a
//! user would. `.cargo/config.toml` patches crates.io with this checkout's
//! crates, so both steps find the siblings here before they are published
//! (and build against this checkout's, not the published, once they are).
//! This task checks that the patch names every published crate another
//! one depends on, then packages each one.

use std::path::Path;
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

/// The workspace members meant for users, from `cargo metadata`, each with
/// the names of its sibling dependencies (any kind) that are published too.
fn published() -> Result<Vec<(String, Vec<String>)>> {
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
    let members: Vec<&serde_json::Value> = meta["packages"]
        .as_array()
        .context("cargo metadata has no packages")?
        .iter()
        // `publish = false` reads as an empty list of registries.
        .filter(|p| !p["publish"].as_array().is_some_and(Vec::is_empty))
        .collect();
    let names: Vec<&str> = members.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut crates: Vec<(String, Vec<String>)> = members
        .iter()
        .filter_map(|p| {
            let name = p["name"].as_str()?.to_string();
            let mut siblings: Vec<String> = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                // A dev-dependency on a sibling is path-only: packaging
                // drops it.
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .filter_map(|d| d["name"].as_str())
                .filter(|d| names.contains(d))
                .map(String::from)
                .collect();
            siblings.sort();
            siblings.dedup();
            Some((name, siblings))
        })
        .collect();
    crates.sort();
    Ok(crates)
}

/// The published crates that another published crate depends on and that
/// `.cargo/config.toml`'s `[patch.crates-io]` does not serve from this
/// checkout (read line by line: one `name = { path = "…" }` entry each).
fn unpatched(config: &str, crates: &[(String, Vec<String>)]) -> Vec<String> {
    let mut in_patch = false;
    let mut patched = Vec::new();
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            in_patch = line == "[patch.crates-io]";
        } else if in_patch
            && let Some((name, value)) = line.split_once('=')
            && value.contains("path")
        {
            patched.push(name.trim().trim_matches('"').to_string());
        }
    }
    let mut missing: Vec<String> = crates
        .iter()
        .flat_map(|(_, siblings)| siblings)
        .filter(|name| !patched.contains(name))
        .cloned()
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// Runs `cargo package -p <crate>` for every published crate.
pub fn run(options: &Options) -> Result<()> {
    let crates = published()?;
    if crates.is_empty() {
        bail!("no workspace member is meant for users (every one has publish = false)");
    }
    let names: Vec<&str> = crates.iter().map(|(name, _)| name.as_str()).collect();
    let root = crate::workspace_root();
    let config_path = root.join(".cargo").join("config.toml");
    let config = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let missing = unpatched(&config, &crates);
    if !missing.is_empty() {
        bail!(
            "{}: [patch.crates-io] has no path entry for {}; `cargo package -p` could not \
             resolve a sibling that depends on it before it is published",
            config_path.display(),
            missing.join(", ")
        );
    }
    eprintln!("[package] {}", names.join(", "));
    for name in names {
        package(&root, name, options)?;
    }
    eprintln!(
        "[package] {} crates in {}{}",
        crates.len(),
        crate::target_dir().join("package").display(),
        if options.no_verify {
            " (not verified: --no-verify)"
        } else {
            ", each built as a user would"
        },
    );
    Ok(())
}

/// `cargo package -p <name>`, as a user would type it.
fn package(root: &Path, name: &str, options: &Options) -> Result<()> {
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["package", "-p", name]).current_dir(root);
    if options.no_verify {
        cargo.arg("--no-verify");
    }
    if options.allow_dirty {
        cargo.arg("--allow-dirty");
    }
    let status = cargo
        .status()
        .with_context(|| format!("running cargo package -p {name}"))?;
    if !status.success() {
        bail!("cargo package -p {name} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_of(name: &str, siblings: &[&str]) -> (String, Vec<String>) {
        (
            name.to_string(),
            siblings.iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn a_published_dependency_missing_from_the_patch_is_named() {
        let config = "[alias]\nx = \"run\"\n\n[patch.crates-io]\n\"service-test-phi\" = { path = \"phi\" }\n\n[env]\nservice-test-traffic = { path = \"traffic\" }\n";
        let crates = [
            crate_of(
                "service-test",
                &["service-test-phi", "service-test-traffic"],
            ),
            crate_of("service-test-phi", &[]),
            crate_of("service-test-traffic", &["service-test-phi"]),
        ];
        assert_eq!(unpatched(config, &crates), ["service-test-traffic"]);
    }

    #[test]
    fn the_repository_patch_serves_every_published_dependency() {
        let root = crate::workspace_root();
        let config = std::fs::read_to_string(root.join(".cargo/config.toml"))
            .expect("the repository has .cargo/config.toml");
        let crates = published().expect("cargo metadata runs");
        let facade = crates.iter().find(|(name, _)| name == "service-test");
        assert!(
            facade.is_some_and(|(_, siblings)| siblings.len() >= 2),
            "{crates:?}"
        );
        assert_eq!(unpatched(&config, &crates), Vec::<String>::new());
    }
}
