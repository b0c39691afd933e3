//! What nextest and pytest users reach for on day one, seen from outside:
//! the config file's profiles and overrides, rstest-style cases,
//! `--max-fail`, `--failed-first`, `--durations`, `--list --format json`,
//! `--partition duration:K/N`, retry backoff, and `SLOW` warnings.

use std::collections::BTreeSet;

use harness::service_test;

mod common;
use common::*;

const PROFILES: &str = r#"
[profile.default]
slow-timeout = "150ms"

[profile.ci]
timeout = "45s"
retries = { backoff = "exponential", count = 2, delay = "10ms", jitter = true, max-delay = "40ms" }
max-fail = 3

[[profile.ci.overrides]]
marker = "parametrized and not slowlane"
timeout = "90s"
retries = 4
"#;

fn json_list(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut all = vec!["--list", "--format", "json"];
    all.extend_from_slice(args);
    let r = run_bin(SELFTEST, &all, env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", r.stdout))
}

fn entry<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["tests"]
        .as_array()
        .and_then(|t| t.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in the list"))
}

// ---- profiles and overrides ------------------------------------------------

#[service_test(unit)]
fn a_profile_and_its_override_set_the_listed_timeout_and_retries() {
    let config = config_file("profiles", PROFILES);
    let env = [("SERVICE_TEST_CONFIG", config.as_str())];
    let doc = json_list(&["--profile", "ci"], &env);
    assert_eq!(doc["profile"], "ci");
    // The override (parametrized) wins over the profile.
    let case = entry(&doc, "cases::adds::case_1_small");
    assert_eq!(case["timeout_s"], 90.0);
    assert_eq!(case["retries"], 4);
    // Other tests take the profile's, and inherit default's slow-timeout.
    let plain = entry(&doc, "measured::records_latencies");
    assert_eq!(plain["timeout_s"], 45.0);
    assert_eq!(plain["retries"], 2);
    assert_eq!(plain["slow_timeout_s"], 0.15);
    // The attribute wins over everything.
    let attr = entry(&doc, "flaky::passes_on_second_attempt");
    assert_eq!(attr["retries"], 2);
    // The environment selects the profile as --profile does (for nextest).
    let by_env = json_list(
        &[],
        &[
            ("SERVICE_TEST_CONFIG", config.as_str()),
            ("SERVICE_TEST_PROFILE", "ci"),
        ],
    );
    assert_eq!(by_env["profile"], "ci");
    // And the command line wins over the profile.
    let cli = json_list(&["--profile", "ci", "--timeout", "7s"], &env);
    assert_eq!(entry(&cli, "measured::records_latencies")["timeout_s"], 7.0);
}

#[service_test(unit)]
fn a_misspelt_key_exits_2_naming_the_file_line_and_key() {
    let config = config_file(
        "misspelt",
        "[profile.default]\ntimeout = \"5s\"\n\n[profile.ci]\nretires = 2\n",
    );
    let r = run_bin(
        SELFTEST,
        &["--profile", "ci"],
        &[("SERVICE_TEST_CONFIG", &config)],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(&config), "{}", r.stderr);
    assert!(r.stderr.contains("line 5"), "{}", r.stderr);
    assert!(r.stderr.contains("key `retires`"), "{}", r.stderr);
}

#[service_test(unit)]
fn bad_values_and_unknown_profiles_are_errors_naming_them() {
    for (text, profile, wanted) in [
        (
            "[profile.default]\ntimeout = \"soon\"\n",
            "default",
            "line 2",
        ),
        (
            "[profile.default]\ntimeout = \"0s\"\n",
            "default",
            "at least 1ms",
        ),
        (
            "[[profile.default.overrides]]\nmarker = \"resilence\"\n",
            "default",
            "did you mean",
        ),
        (
            "[profile.default]\nretry-on = { message = \"(unclosed\" }\n",
            "default",
            "retry-on.message",
        ),
        ("[profile.default]\n", "nightly", "no profile `nightly`"),
    ] {
        let config = config_file("bad", text);
        let r = run_bin(
            SELFTEST,
            &["--profile", profile],
            &[("SERVICE_TEST_CONFIG", &config)],
        );
        assert_eq!(r.code, 2, "{text}: {}", r.stderr);
        assert!(r.stderr.contains(wanted), "{text}: {}", r.stderr);
    }
}

// ---- cases -------------------------------------------------------------------

#[service_test(unit)]
fn three_cases_list_as_three_tests_with_rstests_names() {
    let r = selftest(&["--list", "--format", "terse", "cases::adds"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let listed = r.listed();
    let want: BTreeSet<String> = [
        "cases::adds::case_1_small",
        "cases::adds::case_2",
        "cases::adds::case_3_large",
    ]
    .map(String::from)
    .into();
    assert_eq!(listed, want);
    let doc = json_list(&["cases::"], &[]);
    let case = entry(&doc, "cases::adds::case_3_large");
    assert_eq!(case["function"], "adds");
    assert_eq!(case["case"]["index"], 3);
    assert_eq!(case["case"]["name"], "large");
}

#[service_test(unit)]
fn each_case_runs_alone_with_exact() {
    let r = selftest(&["--exact", "cases::adds::case_2", "--nocapture"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.events(), vec!["adds 2+2".to_string()]);
    let r = selftest(&[
        "--exact",
        "cases::mixes_fixtures_and_cases::case_2_self_pay",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.events(),
        vec!["case cases::mixes_fixtures_and_cases::case_2_self_pay payer=".to_string()]
    );
}

// ---- the command line ------------------------------------------------------

#[service_test(unit)]
fn max_fail_stops_after_that_many_failures_and_reports_the_rest_not_run() {
    let r = selftest(&["-m", "broken", "--test-threads", "1", "--max-fail", "2"]);
    assert_eq!(r.code, 101, "{}", r.stderr);
    let failed = r
        .stdout
        .lines()
        .filter(|l| l.ends_with("... FAILED"))
        .count();
    assert_eq!(failed, 2, "{}", r.stdout);
    let not_run = r
        .stdout
        .lines()
        .filter(|l| l.contains("not run: --max-fail 2 stopped the run"))
        .count();
    assert!(not_run > 5, "{}", r.stdout);
    let bad = selftest(&["--max-fail", "0"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}

#[service_test(unit)]
fn list_format_json_is_one_document_with_every_field() {
    let doc = json_list(&[], &[]);
    let tests = doc["tests"].as_array().expect("tests");
    assert!(tests.len() >= 40);
    let e = entry(&doc, "failures::ignored_with_reason");
    for field in [
        "name",
        "function",
        "case",
        "markers",
        "services",
        "group",
        "timeout_s",
        "retries",
        "ignored",
        "ignore_reason",
        "source",
    ] {
        assert!(e.get(field).is_some(), "no `{field}` in {e}");
    }
    assert_eq!(e["ignored"], true);
    assert_eq!(e["ignore_reason"], "waiting for the billing engine");
    assert!(
        e["source"]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("main.rs"))
    );
    assert!(e["source"]["line"].as_u64().is_some_and(|l| l > 1));
    assert_eq!(
        entry(&doc, "measured::records_latencies")["services"][0],
        "billing"
    );
}

#[service_test(unit)]
fn duration_partitions_together_run_every_test_once() {
    let dir = history_dir().join(format!("partition-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    let env = [("SERVICE_TEST_HISTORY_DIR", d.as_str())];
    // Durations to deal by: one run of the slow lane.
    let first = run_bin(SELFTEST, &["-m", "slowlane"], &env);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let all = run_bin(SELFTEST, &["--list", "--format", "terse"], &env).listed();
    let mut seen = BTreeSet::new();
    for k in 1..=3 {
        let p = format!("duration:{k}/3");
        let shard = run_bin(
            SELFTEST,
            &["--list", "--format", "terse", "--partition", &p],
            &env,
        );
        assert_eq!(shard.code, 0, "{}", shard.stderr);
        for name in shard.listed() {
            assert!(seen.insert(name.clone()), "{name} is in two shards");
        }
    }
    assert_eq!(seen, all);
}

#[service_test(unit)]
fn durations_prints_the_slowest_and_failed_first_runs_last_failures_first() {
    let dir = history_dir().join(format!("failed-first-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    let env = [("SERVICE_TEST_HISTORY_DIR", d.as_str())];
    let first = run_bin(SELFTEST, &["seeding::", "--durations", "2"], &env);
    assert_eq!(first.code, 101);
    assert!(
        first.stderr.contains("slowest 2 test(s):"),
        "{}",
        first.stderr
    );
    let again = run_bin(
        SELFTEST,
        &["seeding::", "--failed-first", "--test-threads", "1"],
        &env,
    );
    let ran: Vec<&str> = again
        .stdout
        .lines()
        .filter(|l| l.starts_with("test ") && l.contains(" ... "))
        .collect();
    assert!(ran.len() >= 3, "{ran:?}");
    assert!(
        ran[0].starts_with("test seeding::fails_with_seed"),
        "{ran:?}"
    );
}

// ---- retries and slow tests ------------------------------------------------

#[service_test(unit)]
fn a_fixed_retry_delay_is_waited_before_the_second_attempt() {
    let config = config_file(
        "backoff",
        "[profile.default]\nretries = { count = 1, delay = \"400ms\" }\n",
    );
    let env = [("SERVICE_TEST_CONFIG", config.as_str())];
    let started = std::time::Instant::now();
    let r = run_bin(SELFTEST, &["--exact", "flaky::needs_cli_retries"], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("FLAKY"), "{}", r.stderr);
    // A behaviour, not a speed claim: the delay was honoured.
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
}

#[service_test(unit)]
fn retry_on_timeout_leaves_plain_failures_unretried() {
    let config = config_file(
        "retry-on",
        "[profile.default]\nretries = 3\nretry-on = \"timeout\"\n",
    );
    let env = [("SERVICE_TEST_CONFIG", config.as_str())];
    let r = run_bin(SELFTEST, &["--exact", "flaky::needs_cli_retries"], &env);
    assert_eq!(r.code, 101, "{}", r.stdout);
    assert!(!r.stdout.contains("all 2 attempts"), "{}", r.stdout);
}

#[service_test(unit)]
fn a_flaky_pass_fails_the_run_when_the_profile_says_so() {
    let config = config_file(
        "flaky-fail",
        "[profile.default]\nretries = 1\nflaky-result = \"fail\"\n",
    );
    let env = [("SERVICE_TEST_CONFIG", config.as_str())];
    let r = run_bin(SELFTEST, &["--exact", "flaky::needs_cli_retries"], &env);
    assert_eq!(r.code, 101, "{}", r.stdout);
    assert!(r.stdout.contains("flaky-result"), "{}", r.stdout);
}

#[service_test(unit)]
fn a_test_past_its_slow_timeout_is_shown_slow() {
    let config = config_file("slow", "[profile.default]\nslow-timeout = \"100ms\"\n");
    let env = [("SERVICE_TEST_CONFIG", config.as_str())];
    let r = run_bin(SELFTEST, &["--exact", "sluggish::takes_its_time"], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("SLOW [> 100ms] sluggish::takes_its_time"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("1 test(s) ran past their slow-timeout"),
        "{}",
        r.stderr
    );
}

#[service_test(unit)]
fn a_task_left_running_after_teardown_is_reported_as_a_leak() {
    let warn = config_file("leaks-warn", "[profile.default]\nleaks = \"warn\"\n");
    let r = run_bin(
        SELFTEST,
        &["--exact", "leaky::spawns_and_forgets"],
        &[("SERVICE_TEST_CONFIG", &warn)],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("LEAK leaky::spawns_and_forgets: 1 task(s)"),
        "{}",
        r.stderr
    );
    let clean = run_bin(
        SELFTEST,
        &["--exact", "leaky::spawns_and_waits"],
        &[("SERVICE_TEST_CONFIG", &warn)],
    );
    assert!(!clean.stderr.contains("LEAK"), "{}", clean.stderr);
    let fail = config_file("leaks-fail", "[profile.default]\nleaks = \"fail\"\n");
    let r = run_bin(
        SELFTEST,
        &["--exact", "leaky::spawns_and_forgets"],
        &[("SERVICE_TEST_CONFIG", &fail)],
    );
    assert_eq!(r.code, 101, "{}", r.stdout);
    // Several at once: the run's end names the count and how to find it.
    let r = run_bin(SELFTEST, &["leaky::"], &[("SERVICE_TEST_CONFIG", &warn)]);
    assert!(
        r.stderr.contains("--test-threads 1 to name the test"),
        "{}",
        r.stderr
    );
}

harness::main!();
