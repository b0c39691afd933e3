//! What the runner tests share: run the `selftest` binary with arguments
//! and environment, and read its console.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

pub const SELFTEST: &str = env!("CARGO_BIN_EXE_selftest");
pub const EMPTY: &str = env!("CARGO_BIN_EXE_empty");
pub const CRASHING: &str = env!("CARGO_BIN_EXE_crashing");
pub const OWN_SUBSCRIBER: &str = env!("CARGO_BIN_EXE_own-subscriber");
pub const SHARDABLE: &str = env!("CARGO_BIN_EXE_shardable");

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Text after `EVENT ` on each stderr line that has one (the harness
    /// runs with no capture, so a line may start with console output).
    pub fn events(&self) -> Vec<String> {
        self.stderr
            .lines()
            .chain(self.stdout.lines())
            .filter_map(|l| l.split_once("EVENT ").map(|(_, e)| e.trim().to_string()))
            .collect()
    }

    /// The outcome libtest printed for `name` (`ok`, `FAILED`, `ignored …`).
    pub fn outcome(&self, name: &str) -> String {
        let prefix = format!("test {name} ");
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no outcome line for {name} in:\n{}", self.stdout));
        let rest = line.split_once("... ").map(|(_, r)| r).unwrap_or("");
        // Strip an EVENT line that landed on the same console line.
        rest.split(" EVENT ")
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    }

    pub fn listed(&self) -> BTreeSet<String> {
        self.stdout
            .lines()
            .map(|l| l.trim_end_matches(": test").to_string())
            .collect()
    }
}

pub fn history_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("runner-history");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A config file with no profiles: the built-in defaults.
pub fn empty_config() -> PathBuf {
    let path = history_dir().join("empty-config.toml");
    if !path.exists() {
        std::fs::write(&path, "# built-in defaults\n").expect("write the empty config");
    }
    path
}

/// Writes `text` as a config file of this test's own, and returns its path.
pub fn config_file(name: &str, text: &str) -> String {
    let dir = history_dir().join(format!("config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("config dir");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write the config");
    path.to_string_lossy().into_owned()
}

pub fn run_bin(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("SERVICE_TEST_MARKER")
        .env_remove("SERVICE_TEST_SEED")
        .env_remove("RUST_TEST_THREADS")
        .env_remove("SERVICE_TEST_PROFILE")
        // The workspace's own .config/service-test.toml must not steer these
        // runs: an empty config unless a test names its own.
        .env("SERVICE_TEST_CONFIG", empty_config())
        .env("RUST_BACKTRACE", "0")
        .env("SERVICE_TEST_HISTORY_DIR", history_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn selftest(args: &[&str]) -> Run {
    run_bin(SELFTEST, args, &[])
}
