//! The `chaos-proxy` binary's command line as a user meets it: help, a
//! version, bad usage as one line (exit 2, never a backtrace), and both
//! spellings of `--api`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use harness::service_test;

fn chaos_proxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chaos-proxy"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run chaos-proxy")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[service_test(unit)]
fn help_exits_0_and_names_api() {
    let out = chaos_proxy(&["--help"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("Usage: chaos-proxy"), "{stdout}");
    assert!(stdout.contains("--api <HOST:PORT>"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:8474"), "the default: {stdout}");
}

#[service_test(unit)]
fn version_exits_0_with_the_crate_version() {
    let out = chaos_proxy(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("chaos-proxy {}", env!("CARGO_PKG_VERSION"))
    );
}

#[service_test(unit)]
fn an_unknown_flag_exits_2_with_one_error_line_and_no_backtrace() {
    let out = chaos_proxy(&["--no-such-flag"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("--no-such-flag"), "{stderr}");
    assert!(
        !stderr.contains("backtrace") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[service_test(unit)]
fn an_api_off_loopback_is_bad_usage() {
    let out = chaos_proxy(&["--api", "0.0.0.0:0"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("loopback only"), "{stderr}");
}

#[service_test(unit, timeout = "30s")]
fn the_one_dash_spelling_still_serves_the_api() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chaos-proxy"))
        .args(["-api", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chaos-proxy");
    let stderr = child.stderr.take().expect("stderr");
    let first = BufReader::new(stderr).lines().next();
    let _ = child.kill();
    let _ = child.wait();
    let first = first.expect("a line").expect("utf-8");
    assert!(
        first.starts_with("chaos-proxy: Toxiproxy API") && first.contains("http://127.0.0.1:"),
        "{first}"
    );
}

harness::main!();
