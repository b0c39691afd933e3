//! The harness seen from outside: run the `selftest` binary (tests that
//! fail, panic, time out, flake, share fixtures) with chosen arguments and
//! assert on its console, its `EVENT` lines and its exit code.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use harness::service_test;

mod common;
use common::*;

// ---- the libtest protocol -------------------------------------------------

#[service_test(unit)]
fn list_terse_prints_only_name_colon_test_lines() {
    let r = selftest(&["--list", "--format", "terse"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines.len() >= 40, "{lines:?}");
    for l in &lines {
        let (name, kind) = l
            .split_once(": ")
            .unwrap_or_else(|| panic!("bad line {l:?}"));
        assert_eq!(kind, "test", "{l:?}");
        assert!(!name.is_empty() && !name.contains(' '), "{l:?}");
    }
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "the list is sorted by name");
}

#[service_test(unit)]
fn list_ignored_lists_only_ignored_tests() {
    let r = selftest(&["--list", "--format", "terse", "--ignored"]);
    assert_eq!(r.stdout.trim(), "failures::ignored_with_reason: test");
}

#[service_test(unit)]
fn a_filter_selects_by_substring_and_skip_removes() {
    let r = selftest(&["--list", "--format", "terse", "order::"]);
    assert_eq!(r.listed().len(), 4, "{}", r.stdout);
    let r = selftest(&[
        "--list", "--format", "terse", "order::", "--skip", "after_p",
    ]);
    assert_eq!(
        r.listed(),
        ["order::after_failure", "order::after_timeout"]
            .map(String::from)
            .into()
    );
}

#[service_test(unit)]
fn exact_runs_exactly_one_test_as_nextest_does() {
    let r = selftest(&["--exact", "order::after_pass", "--nocapture"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("running 1 test"), "{}", r.stdout);
    assert_eq!(r.outcome("order::after_pass"), "ok");
    // A prefix is not an exact name.
    let r = selftest(&["--exact", "order::after_pas"]);
    assert!(r.stdout.contains("running 0 tests"), "{}", r.stdout);
}

#[service_test(unit)]
fn json_format_writes_json_lines() {
    let r = selftest(&["--format", "json", "--exact", "scopes::first"]);
    assert_eq!(r.code, 0);
    let events: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "test" && e["event"] == "ok" && e["name"] == "scopes::first")
    );
}

#[service_test(unit)]
fn a_binary_with_no_registered_tests_fails_loudly() {
    let r = run_bin(EMPTY, &[], &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no registered tests"), "{}", r.stderr);
}

// ---- markers ---------------------------------------------------------------

#[service_test(unit)]
fn a_marker_and_its_negation_partition_the_list() {
    let all = selftest(&["--list", "--format", "terse"]).listed();
    let yes = selftest(&["--list", "--format", "terse", "--marker", "teardown_order"]).listed();
    let no = selftest(&["--list", "--format", "terse", "-m", "not teardown_order"]).listed();
    assert_eq!(yes.len(), 7, "{yes:?}");
    assert!(yes.is_disjoint(&no));
    assert_eq!(yes.union(&no).cloned().collect::<BTreeSet<_>>(), all);
}

#[service_test(unit)]
fn marker_expressions_combine_with_precedence() {
    let r = selftest(&[
        "--list",
        "--format",
        "terse",
        "-m",
        "teardown_order and not broken or seeding and not broken",
    ]);
    assert_eq!(
        r.listed(),
        [
            "order::after_pass",
            "scopes::first",
            "scopes::second",
            "scopes::third_sync",
            "seeding::draws",
            "seeding::other_draws"
        ]
        .map(String::from)
        .into()
    );
}

#[service_test(unit)]
fn the_environment_carries_the_expression_for_nextest() {
    let r = run_bin(
        SELFTEST,
        &["--list", "--format", "terse"],
        &[("SERVICE_TEST_MARKER", "seeding and broken")],
    );
    assert_eq!(r.stdout.trim(), "seeding::fails_with_seed: test");
}

#[service_test(unit)]
fn an_unknown_marker_exits_2_with_a_suggestion() {
    let r = selftest(&["-m", "grouping or brokne"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown marker `brokne`"), "{}", r.stderr);
    assert!(r.stderr.contains("did you mean `broken`?"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("  grouping or brokne\n              ^^^^^^"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "nothing runs: {}", r.stdout);
}

#[service_test(unit)]
fn a_syntax_error_exits_2_with_a_caret() {
    let r = selftest(&["--marker", "integration and (slow"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("never closed"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("  integration and (slow\n                       ^"),
        "{}",
        r.stderr
    );
}

#[service_test(unit)]
fn markers_lists_every_marker_with_counts() {
    let r = selftest(&["--markers"]);
    assert_eq!(r.code, 0);
    let line = |name: &str| {
        r.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from:\n{}", r.stdout))
            .to_string()
    };
    assert!(
        line("compliance").contains(" 0 tests"),
        "{}",
        line("compliance")
    );
    assert!(
        line("teardown_order").contains(" 7 tests"),
        "{}",
        line("teardown_order")
    );
    assert!(line("teardown_order").ends_with("(user)"));
    assert!(line("real_services").contains("PostgreSQL"));
}

// ---- execution -------------------------------------------------------------

#[service_test(unit)]
fn failures_panics_and_timeouts_are_reported_with_their_cause() {
    let r = selftest(&["failures::"]);
    assert_eq!(r.code, 101, "{}", r.stdout);
    assert!(
        r.stdout.contains("[failed] \"eligibility answered 503\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("[failed] test panicked at harness/selftest/src/main.rs"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("the claim total is negative"));
    assert!(r.stdout.contains("arithmetic is broken"), "sync panics too");
    assert_eq!(
        r.stdout
            .matches("[timed out] timed out after 200ms")
            .count(),
        2,
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("sync test `failures::sync_overrun` timed out"),
        "{}",
        r.stderr
    );
    assert_eq!(r.outcome("failures::ignored_with_reason"), "ignored");
}

#[service_test(unit)]
fn every_failure_carries_the_seed_and_how_to_reproduce() {
    let r = selftest(&["--seed", "4242", "seeding::fails_with_seed"]);
    assert!(
        r.stderr.contains("seed 4242"),
        "printed at start: {}",
        r.stderr
    );
    assert!(
        r.stdout
            .contains("seed: 4242 (reproduce: --seed 4242 --exact seeding::fails_with_seed)"),
        "{}",
        r.stdout
    );
}

#[service_test(unit)]
fn teardown_runs_in_reverse_order_after_pass_failure_panic_and_timeout() {
    let r = selftest(&["order::"]);
    let events = r.events();
    for test in [
        "after_pass",
        "after_failure",
        "after_panic",
        "after_timeout",
    ] {
        let name = format!("order::{test}");
        let mine: Vec<&str> = events
            .iter()
            .filter(|e| e.ends_with(&format!(" {name}")))
            .map(|e| e.rsplit_once(' ').map(|(what, _)| what).unwrap_or(e))
            .collect();
        assert_eq!(
            mine,
            [
                "setup Inner",
                "setup Outer",
                "teardown Outer",
                "teardown Inner"
            ],
            "{name}: {events:#?}"
        );
    }
}

#[service_test(unit)]
fn suite_and_session_fixtures_are_shared_and_torn_down_last() {
    let r = selftest(&["scopes::"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let events = r.events();
    let count = |prefix: &str| events.iter().filter(|e| e.starts_with(prefix)).count();
    assert_eq!(count("setup ModuleDb"), 1, "{events:?}");
    assert_eq!(count("setup SessionMesh"), 1, "{events:?}");
    assert_eq!(count("teardown ModuleDb"), 1, "{events:?}");
    assert_eq!(
        events.last().map(String::as_str),
        Some("teardown SessionMesh"),
        "{events:?}"
    );
}

#[service_test(unit)]
fn a_test_scoped_fixture_by_reference_is_shared_within_the_test() {
    let r = selftest(&["sharing::"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        r.outcome("sharing::by_reference_is_one_instance_per_test"),
        "ok"
    );
}

#[service_test(unit)]
fn a_fixture_that_cannot_be_set_up_is_an_error_naming_it() {
    let r = selftest(&["fixture_errors::"]);
    assert!(
        r.stdout
            .contains("[error] fixture `Broken` failed to set up: database refused the connection"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("[error] fixture `Broken` failed to set up (needed by `NeedsBroken`)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("[error] fixture `Exploding` panicked during setup: the fixture exploded"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "fixture `Wide` (session scope) asks for `Inner`, which has the narrower test scope"
        ),
        "{}",
        r.stdout
    );
}

#[service_test(unit)]
fn a_fixture_that_is_unavailable_skips_the_test_with_the_reason() {
    let r = selftest(&["fixture_errors::skipped_when_unavailable"]);
    assert_eq!(r.code, 0);
    let outcome = r.outcome("fixture_errors::skipped_when_unavailable");
    assert!(
        outcome.starts_with(
            "ignored (skipped: fixture `Unavailable` is unavailable: no PostgreSQL here"
        ),
        "{outcome}"
    );
}

#[service_test(unit)]
fn a_pass_after_a_failure_is_reported_flaky() {
    let r = selftest(&["--exact", "flaky::passes_on_second_attempt"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stderr
            .contains("FLAKY flaky::passes_on_second_attempt: passed on attempt 2"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("flaky: 1 test(s) passed only after failing"),
        "{}",
        r.stderr
    );
}

#[service_test(unit)]
fn retries_that_all_fail_report_every_attempt() {
    let r = selftest(&["--exact", "flaky::always_fails"]);
    assert_eq!(r.code, 101);
    assert!(
        r.stdout.contains("[failed] \"attempt 2 failed\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("all 2 attempts failed; earlier: attempt 1: \"attempt 1 failed\""),
        "{}",
        r.stdout
    );
}

#[service_test(unit)]
fn the_retries_flag_applies_to_tests_without_their_own() {
    let without = selftest(&["--exact", "flaky::needs_cli_retries"]);
    assert_eq!(without.code, 101);
    let with = selftest(&["--retries", "1", "--exact", "flaky::needs_cli_retries"]);
    assert_eq!(with.code, 0, "{}", with.stdout);
    assert!(with.stderr.contains("FLAKY flaky::needs_cli_retries"));
}

#[service_test(unit)]
fn fail_fast_stops_starting_tests_after_the_first_failure() {
    let r = selftest(&["--fail-fast", "--test-threads", "1", "failures::"]);
    assert_eq!(r.code, 101);
    assert!(
        r.stdout
            .contains("not run: --fail-fast stopped the run after"),
        "{}",
        r.stdout
    );
}

#[service_test(unit)]
fn the_same_seed_gives_the_same_data_whatever_else_runs() {
    let draw = |args: &[&str]| {
        let r = selftest(args);
        r.events()
            .into_iter()
            .find(|e| e.starts_with("draw seeding::draws"))
            .unwrap_or_else(|| panic!("no draw in {}", r.stderr))
    };
    let alone = draw(&["--seed", "7", "--exact", "seeding::draws"]);
    assert_eq!(alone, draw(&["--seed", "7", "--exact", "seeding::draws"]));
    assert_eq!(
        alone,
        draw(&["--seed", "7", "seeding::"]),
        "other tests running does not change it"
    );
    assert_ne!(alone, draw(&["--seed", "8", "--exact", "seeding::draws"]));
    let from_env = run_bin(
        SELFTEST,
        &["--exact", "seeding::draws"],
        &[("SERVICE_TEST_SEED", "7")],
    );
    assert!(from_env.events().contains(&alone));
}

#[service_test(unit)]
fn groups_never_exceed_their_limit_and_do_reach_it() {
    let r = selftest(&["groups::"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let peak = |group: &str| {
        r.events()
            .iter()
            .filter_map(|e| e.strip_prefix(&format!("group {group} active ")))
            .filter_map(|n| n.parse::<usize>().ok())
            .max()
            .unwrap_or(0)
    };
    assert_eq!(peak("serial"), 1, "an undeclared group runs one at a time");
    let events = r.events();
    let exclusive: Vec<&str> = events
        .iter()
        .filter_map(|e| e.strip_prefix("exclusive active "))
        .collect();
    assert_eq!(exclusive, ["1", "1"], "exclusive tests run alone");
    // Isolated too: each in a process of its own, after the others, one at
    // a time (the group tests' processes all ended first).
    let r = selftest(&[
        "groups::",
        "--isolation",
        "process",
        "--nocapture",
        "--test-threads",
        "4",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let events = r.events();
    let last_two: Vec<&String> = events.iter().rev().take(2).collect();
    assert!(
        last_two.iter().all(|e| e.starts_with("exclusive active")),
        "the exclusive tests ran last: {events:?}"
    );
    assert_eq!(
        peak("pair"),
        2,
        "test_group!(\"pair\", 2) runs two at a time"
    );
}

#[service_test(unit)]
fn tests_run_concurrently_up_to_the_test_threads_limit() {
    let peak = |args: &[&str]| {
        let r = selftest(args);
        assert_eq!(r.code, 0, "{}", r.stdout);
        r.events()
            .iter()
            .filter_map(|e| e.strip_prefix("overlap peak "))
            .filter_map(|n| n.parse::<usize>().ok())
            .max()
            .unwrap_or(0)
    };
    assert_eq!(
        peak(&["overlap::"]),
        8,
        "all eight (six async, two sync) run at once by default"
    );
    assert_eq!(peak(&["overlap::", "--test-threads", "3"]), 3);
}

/// Isolated, the tests' processes follow the same choice as in process
/// (`--test-threads`, else `RUST_TEST_THREADS`, else the profile's), and
/// the run's header says how many run at once, a process each.
#[service_test(unit)]
fn isolated_tests_run_as_many_at_once_as_chosen_and_the_header_says_so() {
    let header = |r: &Run| {
        r.stderr
            .lines()
            .find(|l| l.starts_with("service-test: seed"))
            .unwrap_or_default()
            .to_string()
    };
    let args = ["overlap::", "--isolation", "process"];
    let by_env = run_bin(SELFTEST, &args, &[("RUST_TEST_THREADS", "3")]);
    assert_eq!(by_env.code, 0, "{}", by_env.stdout);
    assert!(
        header(&by_env).contains("up to 3 at once, a process each"),
        "RUST_TEST_THREADS=3: {}",
        header(&by_env)
    );
    let by_flag = selftest(&[&args[..], &["--test-threads", "5"]].concat());
    assert_eq!(by_flag.code, 0, "{}", by_flag.stdout);
    assert!(
        header(&by_flag).contains("up to 5 at once, a process each"),
        "--test-threads 5: {}",
        header(&by_flag)
    );
    let in_process = selftest(&["overlap::", "--test-threads", "4"]);
    assert!(
        header(&in_process).contains("up to 4 at once;")
            || header(&in_process).ends_with("up to 4 at once"),
        "in process: {}",
        header(&in_process)
    );
}

#[service_test(unit)]
fn the_longest_test_of_the_last_run_starts_first() {
    let dir = history_dir().join(format!("ordering-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_s = dir.to_string_lossy().into_owned();
    let env = [("SERVICE_TEST_HISTORY_DIR", dir_s.as_str())];
    let first_line = |r: &Run| {
        r.stdout
            .lines()
            .find(|l| l.starts_with("test "))
            .unwrap_or("")
            .to_string()
    };
    let cold = run_bin(SELFTEST, &["order::", "--test-threads", "1"], &env);
    assert!(
        first_line(&cold).starts_with("test order::after_failure"),
        "no history: name order\n{}",
        cold.stdout
    );
    assert!(dir.join("selftest.json").exists(), "history is written");
    let warm = run_bin(SELFTEST, &["order::", "--test-threads", "1"], &env);
    assert!(
        first_line(&warm).starts_with("test order::after_timeout"),
        "longest first\n{}",
        warm.stdout
    );
}

// ---- PHI -------------------------------------------------------------------

#[service_test(unit, compliance)]
fn phi_safe_fails_a_test_that_logs_phi_and_redacts_it() {
    let r = selftest(&["phi_guard::"]);
    let both = format!("{}{}", r.stdout, r.stderr);
    for raw in [
        "123-45-6789",
        "555-0142",
        "Quentin",
        "QUENTIN",
        "219-09-9999",
        "987-65-4321",
        "321-54-9876",
        "456-12-7890",
    ] {
        assert!(!both.contains(raw), "{raw} reached the console:\n{both}");
    }
    assert_eq!(r.outcome("phi_guard::logs_an_ssn"), "FAILED");
    assert_eq!(r.outcome("phi_guard::sync_logs_a_phone"), "FAILED");
    assert_eq!(r.outcome("phi_guard::logs_a_registered_name"), "FAILED");
    assert_eq!(
        r.outcome("phi_guard::logs_an_ssn_through_the_log_crate"),
        "FAILED",
        "a `log` record is scanned like a tracing event"
    );
    assert!(
        r.stdout
            .contains("INFO selftest::phi_guard: eligibility lookup for ssn [PHI:SSN]"),
        "{}",
        r.stdout
    );
    assert_eq!(r.outcome("phi_guard::clean_logs_pass"), "ok");
    assert_eq!(
        r.outcome("phi_guard::without_the_marker_logs_are_not_scanned"),
        "ok"
    );
    assert!(r.stdout.contains("phi_safe: the test emitted PHI:\n  line 1: SSN (pattern) — INFO selftest::phi_guard: verifying eligibility for ssn [PHI:SSN] claim=CLM0000000042"), "{}", r.stdout);
    assert!(r.stdout.contains("NAME (registered value)"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("[failed] \"patient with ssn [PHI:SSN] was rejected\""),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("captured log (1 lines, PHI redacted):\n  INFO selftest::phi_guard: about to reject [PHI:SSN]"), "{}", r.stdout);
}

#[service_test(unit, compliance)]
fn phi_safe_fails_closed_when_the_capture_cannot_be_installed() {
    let r = run_bin(OWN_SUBSCRIBER, &[], &[]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.outcome("logs_nothing_the_harness_could_see"), "FAILED");
    assert_eq!(r.outcome("a_test_without_the_marker_is_unaffected"), "ok");
    assert!(
        r.stdout
            .contains("phi_safe: cannot see the test's tracing events")
            && r.stdout.contains("failing closed"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("123-45-6789") && !r.stderr.contains("123-45-6789"));
}

#[service_test(unit)]
fn isolated_tests_attach_to_hosted_session_fixtures() {
    // One at a time: their live stderr lines must not interleave.
    let r = selftest(&["hosting::", "--nocapture", "--test-threads", "1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let events = r.events();
    let seen: Vec<&String> = events
        .iter()
        .filter(|e| e.starts_with("hosted pid "))
        .collect();
    assert_eq!(seen.len(), 3, "{events:?}");
    let parse = |e: &str| {
        let w: Vec<&str> = e.split_whitespace().collect();
        (w[2].to_string(), w[4].to_string(), w[7].to_string())
    };
    let (host, attached, _) = parse(seen[0]);
    let mut own = std::collections::HashSet::new();
    for e in &seen {
        let (h, a, me) = parse(e);
        assert_eq!(h, host, "one host for all: {events:?}");
        assert_eq!(a, "true", "attached, not set up: {events:?}");
        assert_ne!(me, host, "the host is another process: {events:?}");
        own.insert(me);
    }
    assert_eq!(own.len(), 3, "three processes: {events:?}");
    assert_eq!(attached, "true");
    // One isolated test alone sets the fixture up itself (no host).
    let alone = selftest(&["hosting::first", "--exact", "--nocapture"]);
    let events = alone.events();
    assert!(
        events.iter().any(|e| e.contains("attached false")),
        "{events:?}"
    );
}

// ---- reports, sharding, history --------------------------------------------

fn fresh_dir(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("invalid line {l:?} in {}: {e}", path.display()))
        })
        .collect()
}

#[service_test(unit)]
fn report_dir_gets_results_junit_and_markdown_that_agree() {
    let dir = fresh_dir("reports");
    let d = dir.to_string_lossy().into_owned();
    let r = selftest(&[
        "--report-dir",
        &d,
        "--seed",
        "5",
        "-m",
        "teardown_order or (unit and not broken)",
    ]);
    assert_eq!(r.code, 101, "{}", r.stdout);
    let lines = jsonl(&dir.join("results.jsonl"));
    let ran = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("test ") && l.contains(" ... "))
        .count();
    assert_eq!(lines.len(), ran, "one line per finished test");
    let count = |o: &str| lines.iter().filter(|l| l["outcome"] == o).count();
    assert!(
        lines
            .iter()
            .all(|l| l["seed"] == 5 && l["binary"] == "selftest")
    );
    let flaky = lines
        .iter()
        .find(|l| l["name"] == "flaky::passes_on_second_attempt")
        .expect("flaky test line");
    assert_eq!(flaky["outcome"], "flaky");
    assert_eq!(flaky["attempts"], 2);
    let measured = lines
        .iter()
        .find(|l| l["name"] == "measured::records_latencies")
        .expect("measured line");
    assert!(
        measured["metrics"].as_array().is_some_and(|m| m
            .iter()
            .any(|x| x["name"] == "p99_ms" && x["value"] == 99.0)),
        "{measured}"
    );

    let xml = std::fs::read_to_string(dir.join("junit.xml")).expect("junit.xml");
    assert_eq!(xml.matches("<testcase ").count(), lines.len());
    assert_eq!(
        xml.matches("<failure").count(),
        count("failed") + count("timed-out")
    );
    assert_eq!(xml.matches("<error").count(), count("error"));
    assert_eq!(
        xml.matches("<skipped").count(),
        count("skipped") + count("not-run")
    );
    assert!(xml.contains("<flakyFailure"), "flaky reruns are recorded");
    assert!(xml.contains(r#"<property name="marker" value="teardown_order"/>"#));

    let md = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    for section in [
        "# Distributed System Test Report",
        "## Test Execution Summary",
        "## Results by Marker",
        "## Service Test Results",
        "## Integration Test Results",
        "## Performance",
        "## Slowest Tests",
        "## Flaky Tests",
        "## Recommendations",
    ] {
        assert!(md.contains(section), "report.md lacks {section}");
    }
    assert!(
        md.contains(&format!("| {} |", lines.len())),
        "summary total:\n{md}"
    );
    assert!(md.contains("| POST /v1/claims | `measured::records_latencies` | 50.0 ms | 95.0 ms | 99.0 ms | 850 req/s | 1.00% |"), "{md}");
    assert!(md.contains("- ✅ billing: 1/1 tests passed"), "{md}");
    assert!(
        md.contains("`flaky::passes_on_second_attempt`"),
        "flaky section:\n{md}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[service_test(unit, compliance)]
fn no_report_file_carries_phi() {
    let dir = fresh_dir("phi-reports");
    let d = dir.to_string_lossy().into_owned();
    selftest(&["--report-dir", &d, "phi_guard::"]);
    for file in ["results.jsonl", "junit.xml", "report.md"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(text.contains("[PHI:SSN]"), "{file} shows the redaction");
        for raw in [
            "123-45-6789",
            "555-0142",
            "219-09-9999",
            "Quentin",
            "QUENTIN",
        ] {
            assert!(!text.contains(raw), "{raw} in {file}");
        }
        assert!(
            phi::scan(&text).iter().all(|f| f.via == phi::Via::Pattern),
            "a registered value in {file}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[service_test(unit)]
fn shards_together_run_every_test_exactly_once() {
    let all = selftest(&["--list", "--format", "terse"]).listed();
    for kind in ["hash", "slice"] {
        let mut seen = BTreeSet::new();
        let mut total = 0;
        for k in 1..=3 {
            let shard = selftest(&[
                "--list",
                "--format",
                "terse",
                "--partition",
                &format!("{kind}:{k}/3"),
            ])
            .listed();
            assert!(!shard.is_empty(), "{kind}:{k}/3 is empty");
            total += shard.len();
            seen.extend(shard);
        }
        assert_eq!(total, all.len(), "{kind}: no test in two shards");
        assert_eq!(seen, all, "{kind}: every test in some shard");
    }
    let from_env = run_bin(
        SELFTEST,
        &["--list", "--format", "terse"],
        &[("SERVICE_TEST_PARTITION", "slice:2/3")],
    )
    .listed();
    assert_eq!(
        from_env,
        selftest(&["--list", "--format", "terse", "--partition", "slice:2/3"]).listed()
    );
    let bad = selftest(&["--partition", "hash:4/3"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("1 <= K <= N"), "{}", bad.stderr);
}

#[service_test(unit, slow)]
fn sigint_halfway_writes_every_report_with_the_unfinished_tests_not_run() {
    sigint_halfway(&[]);
}

/// The same with every test forked from the zygote: the signal reaches
/// the tests (the zygote ignores it), and the run ends the same way.
#[service_test(unit, slow)]
fn sigint_halfway_through_isolated_tests_ends_the_same_way() {
    sigint_halfway(&["--isolation", "process", "--test-threads", "2"]);
}

fn sigint_halfway(extra: &[&str]) {
    let dir = fresh_dir(&format!("sigint{}", extra.len()));
    let mut child = Command::new(SELFTEST)
        .args(extra)
        .args(["-m", "slowlane", "--report-dir"])
        .arg(&dir)
        .env("SERVICE_TEST_HISTORY_DIR", history_dir())
        .env("SERVICE_TEST_CONFIG", empty_config())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start selftest");
    let results = dir.join("results.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&results).map_or(0, |t| t.lines().count()) < 5
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert_eq!(exit.code(), Some(130), "SIGINT's exit code");
    // Every test has its line: the finished ones passed, the rest not-run.
    let lines = jsonl(&results);
    assert_eq!(lines.len(), 20, "{lines:?}");
    let passed = lines.iter().filter(|l| l["outcome"] == "passed").count();
    assert!(passed >= 5, "{passed} passed");
    assert!(passed < 20, "the run was interrupted halfway");
    assert!(lines.iter().all(|l| {
        l["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("slow_lane::"))
            && (l["outcome"] == "passed"
                || (l["outcome"] == "not-run"
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("interrupted"))))
    }));
    // And every report was written.
    for report in ["junit.xml", "report.md"] {
        assert!(dir.join(report).is_file(), "no {report} after SIGINT");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[service_test(unit)]
fn last_failed_reruns_only_what_failed_last_time() {
    let dir = history_dir().join(format!("last-failed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    let env = [("SERVICE_TEST_HISTORY_DIR", d.as_str())];
    let first = run_bin(SELFTEST, &["seeding::"], &env);
    assert_eq!(first.code, 101);
    let again = run_bin(SELFTEST, &["seeding::", "--last-failed"], &env);
    let ran: Vec<&str> = again
        .stdout
        .lines()
        .filter(|l| l.starts_with("test ") && l.contains(" ... "))
        .collect();
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0].starts_with("test seeding::fails_with_seed"));
}

/// A history directory of this test's own, empty.
fn fresh_history(what: &str) -> String {
    let dir = history_dir().join(format!("{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a history directory");
    dir.to_string_lossy().into_owned()
}

#[service_test(unit)]
fn history_file_that_is_missing_or_not_a_history_exits_2_naming_it() {
    let dir = fresh_history("history-file-errors");
    let refused = |file: &str, says: &str| {
        let r = selftest(&["--list", "--partition", "duration:1/3", "--history", file]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!("--history {file}{says}")),
            "{}",
            r.stderr
        );
    };
    refused(&format!("{dir}/nowhere.json"), ": cannot read it");
    let bad = format!("{dir}/bad.json");
    std::fs::write(&bad, "{\"version\": 1,\n \"tests\": {\"a\": 3}}\n").expect("write");
    refused(&bad, ", line 2: not a test history");
    let bad_lines = format!("{dir}/results.jsonl");
    std::fs::write(&bad_lines, "\n{\"name\": \"x\"}\n").expect("write");
    refused(&bad_lines, ", line 2: not a test history");
}

#[service_test(unit)]
fn a_history_file_given_deals_the_duration_shards() {
    let dir = fresh_history("history-file-deal");
    let heavy = "scopes::second";
    // Every test timed (one never timed would weigh the mean): one heavy,
    // the rest a second each.
    let tests: serde_json::Map<String, serde_json::Value> =
        selftest(&["--list", "--format", "terse"])
            .listed()
            .into_iter()
            .map(|name| {
                let d = if name == heavy { 1000.0 } else { 1.0 };
                let entry = serde_json::json!({"duration_s": d, "outcome": "passed"});
                (name, entry)
            })
            .collect();
    let file = format!("{dir}/carried.json");
    std::fs::write(
        &file,
        serde_json::json!({"version": 1, "tests": tests}).to_string(),
    )
    .expect("write");
    let env = [("SERVICE_TEST_HISTORY_DIR", dir.as_str())];
    let list = |k: u32, history: bool| {
        let p = format!("duration:{k}/3");
        let mut args = vec!["--list", "--format", "terse", "--partition", &p];
        if history {
            args.extend(["--history", &file]);
        }
        run_bin(SELFTEST, &args, &env).listed()
    };
    // Longest first, to the lightest shard: the heavy test has shard 1 to
    // itself; the rest share shards 2 and 3.
    let first = list(1, true);
    assert_eq!(
        first,
        std::iter::once(heavy.to_string()).collect(),
        "{first:?}"
    );
    // Without the file, the history directory (empty) deals otherwise.
    assert_ne!(list(1, false), first);
}

#[service_test(unit)]
fn last_failed_reads_a_results_file_given_as_history() {
    let dir = fresh_history("last-failed-from-results");
    let reports = format!("{dir}/reports");
    let env = [("SERVICE_TEST_HISTORY_DIR", dir.as_str())];
    let first = run_bin(SELFTEST, &["seeding::", "--report-dir", &reports], &env);
    assert_eq!(first.code, 101, "{}", first.stderr);
    // Another machine: no history of its own, the results as an artifact.
    let elsewhere = fresh_history("last-failed-elsewhere");
    let results = format!("{reports}/results.jsonl");
    let again = run_bin(
        SELFTEST,
        &["seeding::", "--last-failed", "--history", &results],
        &[("SERVICE_TEST_HISTORY_DIR", elsewhere.as_str())],
    );
    let ran: Vec<&str> = again
        .stdout
        .lines()
        .filter(|l| l.starts_with("test ") && l.contains(" ... "))
        .collect();
    assert_eq!(ran.len(), 1, "{ran:?}\n{}", again.stderr);
    assert!(ran[0].starts_with("test seeding::fails_with_seed"));
    assert!(
        again.stderr.contains(&format!("history from {results}")),
        "{}",
        again.stderr
    );
}

#[service_test(unit)]
fn a_wait_on_a_session_fixture_is_not_in_the_tests_history() {
    let dir = fresh_history("shared-setup");
    let reports = format!("{dir}/reports");
    // The only test asks for the session fixture, whose setup takes 300 ms;
    // the test itself 50 ms.
    let r = run_bin(
        SHARDABLE,
        &[
            "orders::lists_orders",
            "--test-threads",
            "1",
            "--report-dir",
            &reports,
        ],
        &[("SERVICE_TEST_HISTORY_DIR", dir.as_str())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = &jsonl(&PathBuf::from(&reports).join("results.jsonl"))[0];
    let wall = line["duration_s"].as_f64().expect("duration_s");
    let shared = line["shared_setup_s"].as_f64().expect("shared_setup_s");
    assert!(wall >= 0.35 && shared >= 0.3, "{line}");
    let history: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(&dir).join("shardable.json")).expect("history"),
    )
    .expect("JSON");
    let own = history["tests"]["orders::lists_orders"]["duration_s"]
        .as_f64()
        .expect("a duration");
    assert!(own < 0.2, "history keeps {own} s for a 50 ms test");
}

#[service_test(unit)]
fn fifty_thousand_parentheses_in_the_environment_exit_2() {
    let deep = format!("{}unit{}", "(".repeat(50_000), ")".repeat(50_000));
    let r = run_bin(SELFTEST, &["--list"], &[("SERVICE_TEST_MARKER", &deep)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("more than 4096"),
        "{}",
        &r.stderr[..r.stderr.len().min(300)]
    );
}

// ---- docs ------------------------------------------------------------------

#[service_test(unit)]
fn the_readme_quick_start_is_the_compiled_quickstart_test() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let compiled = std::fs::read_to_string(root.join("tests/quickstart/tests/quickstart.rs"))
        .expect("quickstart.rs");
    let section = readme
        .split("## Writing a test")
        .nth(1)
        .expect("a 'Writing a test' section");
    let snippet = section
        .split("```rust\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a rust block");
    assert_eq!(
        snippet, compiled,
        "README.md's quick start and tests/quickstart/tests/quickstart.rs differ"
    );
}

harness::main!();

/// With `RUST_BACKTRACE=1` a panicking test's failure message keeps the
/// frames of the test's own code and drops the runtime's and the
/// harness's (seventy frames of tokio say nothing about an assertion);
/// `RUST_BACKTRACE=full` keeps them all.
#[service_test(unit)]
fn a_failure_message_keeps_the_tests_own_frames_not_the_runtimes() {
    let short = run_bin(
        SELFTEST,
        &["--exact", "order::after_panic"],
        &[("RUST_BACKTRACE", "1")],
    );
    assert!(
        short.stdout.contains("boom in the middle of a saga"),
        "{}",
        short.stdout
    );
    assert!(
        short.stdout.contains("backtrace:") && short.stdout.contains("selftest/src/main.rs"),
        "the test's own frame is missing: {}",
        short.stdout
    );
    for foreign in [
        "tokio::runtime",
        "/rustc/",
        "harness::execute",
        "std::panicking",
    ] {
        assert!(
            !short.stdout.contains(foreign),
            "`{foreign}` in the failure message: {}",
            short.stdout
        );
    }
    let full = run_bin(
        SELFTEST,
        &["--exact", "order::after_panic"],
        &[("RUST_BACKTRACE", "full")],
    );
    assert!(full.stdout.contains("tokio"), "{}", full.stdout);
}
