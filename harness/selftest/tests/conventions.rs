//! libtest's and CI's conventions, seen from outside: several positional
//! filters (as Bazel's sharding wrapper passes them), `--format junit` with
//! each test case's file and line, GitHub annotations, one seed per nextest
//! run, and one layer of retries under nextest.

use harness::service_test;

mod common;
use common::*;

const HOSTILE: &str = env!("CARGO_BIN_EXE_hostile");

fn hostile(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut env = env.to_vec();
    env.push(("SERVICE_TEST_SUPERVISOR", "1"));
    run_bin(HOSTILE, args, &env)
}

/// The tests a run reported, sorted.
fn ran(r: &Run) -> Vec<String> {
    let mut names: Vec<String> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test "))
        .filter(|l| l.contains(" ... "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[service_test(unit)]
fn a_test_runs_if_any_of_several_filters_matches_it() {
    let r = hostile(&["prints_terminal", "an_honest"], &[]);
    let names = ran(&r);
    assert_eq!(
        names,
        ["an_honest_slow_test", "prints_terminal_escapes"],
        "{}",
        r.stdout
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = hostile(
        &[
            "--exact",
            "prints_terminal_escapes",
            "an_honest_slow_test",
            "an_honest",
        ],
        &[],
    );
    let names = ran(&r);
    assert_eq!(
        names,
        ["an_honest_slow_test", "prints_terminal_escapes"],
        "{}",
        r.stdout
    );
}

#[service_test(unit)]
fn format_junit_prints_xml_with_each_cases_file_and_line() {
    let r = hostile(
        &[
            "--format",
            "junit",
            "an_error_names_the_patient",
            "prints_terminal",
        ],
        &[],
    );
    assert_eq!(r.code, 101, "a failure still fails the run\n{}", r.stderr);
    let xml = r.stdout.trim();
    assert!(xml.starts_with("<?xml"), "stdout is the XML alone:\n{xml}");
    assert!(xml.ends_with("</testsuites>"), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 2, "{xml}");
    assert!(
        xml.contains(r#"name="an_error_names_the_patient" classname="hostile::""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"file="harness/selftest/src/hostile.rs" line=""#),
        "{xml}"
    );
    assert!(xml.contains("<failure "), "{xml}");

    let path = history_dir().join(format!("junit-{}.xml", std::process::id()));
    let p = path.to_string_lossy().into_owned();
    let r = hostile(&["--format=junit", "--logfile", &p, "prints_terminal"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let xml = std::fs::read_to_string(&path).expect("the logfile");
    assert!(xml.contains(r#"name="prints_terminal_escapes""#), "{xml}");
    assert!(!r.stdout.contains("<?xml"), "{}", r.stdout);
}

#[service_test(unit)]
fn under_github_actions_each_failure_is_annotated_at_its_line() {
    let r = hostile(
        &["an_error_names_the_patient"],
        &[("GITHUB_ACTIONS", "true")],
    );
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("::error "))
        .unwrap_or_else(|| panic!("no annotation in:\n{}", r.stdout));
    assert!(
        line.starts_with("::error file=harness/selftest/src/hostile.rs,line="),
        "{line}"
    );
    assert!(
        line.contains("title=failed an_error_names_the_patient::"),
        "{line}"
    );
    assert!(line.contains("[PHI:NAME]"), "redacted: {line}");
    let r = hostile(&["an_error_names_the_patient"], &[]);
    assert!(!r.stdout.contains("::error "), "only under GitHub Actions");
}

#[service_test(unit)]
fn one_nextest_run_is_one_seed_and_nextest_alone_retries() {
    let env = [("NEXTEST_RUN_ID", "1f79aa0d-4ec8-4a5c-aa83-5e8dc2f36573")];
    let seed = |r: &Run| {
        r.stderr
            .lines()
            .find_map(|l| l.strip_prefix("service-test: seed "))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no seed in:\n{}", r.stderr))
    };
    let a = hostile(&["--exact", "prints_terminal_escapes"], &env);
    let b = hostile(&["--exact", "an_honest_slow_test"], &env);
    assert_eq!(seed(&a), seed(&b), "two processes of one nextest run");
    let other = hostile(
        &["--exact", "prints_terminal_escapes"],
        &[("NEXTEST_RUN_ID", "7859d0ee-55ab-4892-9127-24f4bf805f36")],
    );
    assert_ne!(seed(&a), seed(&other));

    // Its attribute asks for a retry; under nextest's retries it gets none.
    let flaky = "a_flaky_first_attempt_names_the_patient";
    let alone = hostile(&["--exact", flaky], &[]);
    assert_eq!(alone.code, 0, "{}", alone.stdout);
    let under = hostile(&["--exact", flaky], &[("NEXTEST_TOTAL_ATTEMPTS", "3")]);
    assert_eq!(
        under.code, 101,
        "nextest retries it, not the harness:\n{}",
        under.stdout
    );
}

harness::main!();
