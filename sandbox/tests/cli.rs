//! The `sandbox` binary's command line as a user meets it: help on every
//! command, a version, bad usage as one line (exit 2, never a backtrace),
//! and shell completions. None of these start the mesh.

use std::process::{Command, Output, Stdio};

use harness::service_test;

/// Runs `sandbox ARGS` with backtraces asked for, so a panic or an error
/// returned from `main` would show one.
fn sandbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run the sandbox binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[service_test(unit)]
fn up_help_exits_0_and_names_every_flag() {
    let out = sandbox(&["up", "--help"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("Usage: sandbox up"), "{stdout}");
    for flag in [
        "--port-base",
        "--test-mode",
        "--tls",
        "--tenant",
        "--write-target",
        "--chaos-api",
    ] {
        assert!(stdout.contains(flag), "`up --help` names {flag}: {stdout}");
    }
}

#[service_test(unit)]
fn every_command_has_help() {
    for command in ["bench", "token", "openapi", "completions"] {
        let out = sandbox(&[command, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{command} --help");
        assert!(
            text(&out.stdout).contains(&format!("Usage: sandbox {command}")),
            "{command} --help: {}",
            text(&out.stdout)
        );
    }
}

#[service_test(unit)]
fn version_exits_0_with_the_crate_version() {
    let out = sandbox(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("sandbox {}", env!("CARGO_PKG_VERSION"))
    );
}

#[service_test(unit)]
fn an_unknown_flag_exits_2_with_one_error_line_and_no_backtrace() {
    let out = sandbox(&["up", "--no-such-flag"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("--no-such-flag"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[service_test(unit)]
fn a_bad_value_is_named_in_the_error() {
    let out = sandbox(&["token", "--service", "nope", "--tenant", "demo"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'nope'"), "{stderr}");
    assert!(
        stderr.contains("billing-engine"),
        "the services are listed: {stderr}"
    );

    let out = sandbox(&["bench", "--pool", "40"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'40'") && stderr.contains("1 to 32"),
        "{stderr}"
    );
}

#[service_test(unit)]
fn a_failing_command_prints_its_error_chain_and_exits_1() {
    // `token` needs SANDBOX_SECRET: a runtime error, not a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["token", "--service", "billing-engine", "--tenant", "demo"])
        .env("RUST_BACKTRACE", "1")
        .env_remove("SANDBOX_SECRET")
        .output()
        .expect("run the sandbox binary");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: SANDBOX_SECRET is unset"),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

#[service_test(unit)]
fn completions_bash_prints_a_script() {
    let out = sandbox(&["completions", "bash"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("complete -F"), "{stdout}");
    assert!(stdout.contains("--write-target"), "{stdout}");
}

#[service_test(unit)]
fn a_reader_that_stops_early_is_not_an_error() {
    // `sandbox completions bash | head`: the reader is gone before the
    // script is written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["completions", "bash"])
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the sandbox binary");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

harness::main!();
