//! Hostile tests (`src/hostile.rs`) in every mode a run can take: each run
//! ends within ten seconds of its slowest honest test with exactly one
//! result per test, and none of the values the tests generated appears in
//! the console, `results.jsonl`, `junit.xml` or `report.md` — found by
//! searching for the values themselves, not for patterns.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::service_test;

mod common;
use common::*;

const HOSTILE: &str = env!("CARGO_BIN_EXE_hostile");

/// The slowest honest test takes a second; every run gets ten more.
const BOUND: Duration = Duration::from_secs(11);

/// Every test of the hostile binary.
const TESTS: &[&str] = &[
    "a_flaky_first_attempt_names_the_patient",
    "a_metric_is_named_after_the_patient",
    "a_phi_safe_test_prints_a_generated_ssn",
    "a_teardown_fails_naming_the_patient",
    "an_assert_shows_a_generated_name_and_ssn",
    "an_error_names_the_patient",
    "an_honest_slow_test",
    "leaves_a_child_process_running",
    "leaves_an_orphan_running",
    "prints_one_two_megabyte_line",
    "prints_terminal_escapes",
    "prints_the_patient_and_passes",
    "records_a_nan_metric",
    "writes_invalid_utf8_to_stderr",
];

struct Ran {
    code: i32,
    console: String,
    took: Duration,
}

fn fresh_dir(what: &str) -> PathBuf {
    let dir = history_dir().join(format!("hostile-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a fresh directory");
    dir
}

/// Runs the hostile binary with its console going to files (a process a
/// test leaves behind cannot hold a pipe of ours open), killed past
/// [`BOUND`].
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (out, err) = (dir.join(format!("out-{n}")), dir.join(format!("err-{n}")));
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(HOSTILE);
    // Its own process group, as nextest gives each test: what it leaves
    // behind (unsupervised, nothing kills it) is killed with the group.
    cmd.process_group(0);
    cmd.args(args)
        .env_remove("SERVICE_TEST_MARKER")
        .env_remove("SERVICE_TEST_SEED")
        .env_remove("RUST_TEST_THREADS")
        .env_remove("SERVICE_TEST_PROFILE")
        .env_remove("SERVICE_TEST_SUPERVISOR")
        .env("SERVICE_TEST_CONFIG", empty_config())
        .env("RUST_BACKTRACE", "0")
        .env("SERVICE_TEST_HISTORY_DIR", history_dir())
        .env("HOSTILE_VALUES", dir.join("values.txt"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("the hostile binary starts");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`hostile {}` did not end within {BOUND:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Ran {
        code: status.code().unwrap_or(-1),
        console: format!("{}\n{}", read(&out), read(&err)),
        took,
    }
}

/// The end of a console, for a failure message (a test prints 2 MB).
fn end(console: &str) -> &str {
    let mut from = console.len().saturating_sub(4000);
    while !console.is_char_boundary(from) {
        from += 1;
    }
    &console[from..]
}

/// The values the tests were handed (the fixture wrote them down).
fn values(dir: &Path) -> BTreeSet<String> {
    let values: BTreeSet<String> = std::fs::read_to_string(dir.join("values.txt"))
        .expect("the tests wrote down their values")
        .lines()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect();
    assert!(values.len() >= 6, "{values:?}");
    values
}

/// Where `value` stands in `text` as a value of its own: not inside a
/// longer word or number (a generated first name `Mark` is not found in the
/// report's `Markers`).
fn find_standing(text: &str, value: &str) -> Option<usize> {
    let stands = |c: Option<char>| !c.is_some_and(char::is_alphanumeric);
    text.match_indices(value).map(|(at, _)| at).find(|&at| {
        stands(text[..at].chars().next_back()) && stands(text[at + value.len()..].chars().next())
    })
}

/// None of the generated values appears in `text` (named `what`).
fn assert_no_value(dir: &Path, what: &str, text: &str) {
    for v in values(dir) {
        if let Some(at) = find_standing(text, &v) {
            let end = (at + 60).min(text.len());
            let end = (end..=text.len())
                .find(|&e| text.is_char_boundary(e))
                .unwrap_or(text.len());
            panic!(
                "a generated value appears raw in {what} (its redacted neighbourhood: {})",
                phi::redact(&text[at..end])
            );
        }
    }
}

/// One line per test in `results.jsonl`, and none of the values in the
/// reports; the outcome of each test by name.
fn check_reports(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let results = std::fs::read_to_string(dir.join("reports/results.jsonl")).expect("results");
    let mut outcomes = std::collections::BTreeMap::new();
    for line in results.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let name = v["name"].as_str().expect("a name").to_string();
        let outcome = v["outcome"].as_str().expect("an outcome").to_string();
        assert!(
            outcomes.insert(name.clone(), outcome).is_none(),
            "{name} has two results"
        );
    }
    let names: BTreeSet<&str> = outcomes.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        TESTS.iter().copied().collect(),
        "one result per test"
    );
    for file in ["results.jsonl", "junit.xml", "report.md"] {
        let text = std::fs::read_to_string(dir.join("reports").join(file)).expect(file);
        assert_no_value(dir, file, &text);
    }
    outcomes
}

fn reports_arg(dir: &Path) -> String {
    dir.join("reports").to_string_lossy().into_owned()
}

/// What every supervised mode agrees on.
fn check_outcomes(outcomes: &std::collections::BTreeMap<String, String>) {
    let is = |name: &str, want: &str| {
        assert_eq!(outcomes[name], want, "{name}: {outcomes:?}");
    };
    is("an_honest_slow_test", "passed");
    is("an_assert_shows_a_generated_name_and_ssn", "failed");
    is("an_error_names_the_patient", "failed");
    is("a_flaky_first_attempt_names_the_patient", "flaky");
    is("a_phi_safe_test_prints_a_generated_ssn", "failed");
    is("a_teardown_fails_naming_the_patient", "error");
    // Refused when recorded, once: never a crash, never re-run.
    is("records_a_nan_metric", "error");
    is("prints_one_two_megabyte_line", "passed");
    // A byte that is not UTF-8 does not fail a passing test.
    is("writes_invalid_utf8_to_stderr", "passed");
    is("prints_terminal_escapes", "passed");
    is("prints_the_patient_and_passes", "passed");
}

#[service_test(unit)]
fn supervised_a_hostile_run_ends_with_one_redacted_result_per_test() {
    let dir = fresh_dir("supervised");
    let r = run(&dir, &["--report-dir", &reports_arg(&dir)], &[]);
    assert_ne!(r.code, 0, "{}", end(&r.console));
    assert!(r.took < BOUND, "took {:?}", r.took);
    let outcomes = check_reports(&dir);
    check_outcomes(&outcomes);
    assert_no_value(&dir, "the console", &r.console);
    // The processes the tests left are reported (they ran side by side in
    // one worker: named among those running when they started) and killed.
    assert!(
        r.console
            .contains("LEAK: 2 process(es) were still running after their worker's tests ended"),
        "{}",
        end(&r.console)
    );
    assert!(
        !r.console.contains("\u{1b}["),
        "terminal escapes reach the console"
    );
}

#[service_test(unit)]
fn isolated_a_hostile_run_names_each_leak_and_keeps_bad_output_bounded() {
    let dir = fresh_dir("isolated");
    let r = run(
        &dir,
        &["--isolation", "process", "--report-dir", &reports_arg(&dir)],
        &[],
    );
    assert_ne!(r.code, 0, "{}", end(&r.console));
    assert!(r.took < BOUND, "took {:?}", r.took);
    let outcomes = check_reports(&dir);
    check_outcomes(&outcomes);
    assert_eq!(outcomes["leaves_a_child_process_running"], "failed");
    assert_eq!(outcomes["leaves_an_orphan_running"], "failed");
    assert_no_value(&dir, "the console", &r.console);
    let results = std::fs::read_to_string(dir.join("reports/results.jsonl")).expect("results");
    let line = |name: &str| -> serde_json::Value {
        results
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
            .find(|v| v["name"] == name)
            .expect("its line")
    };
    let leak = line("leaves_a_child_process_running");
    assert!(
        leak["message"]
            .as_str()
            .is_some_and(|m| m.contains("LEAK") && m.contains("sleep")),
        "{leak}"
    );
    // The 2 MB line is kept cut, not whole, and scanning it did not hang.
    let long = line("prints_one_two_megabyte_line");
    let stdout = long["stdout"].as_str().unwrap_or_default();
    assert!(stdout.len() < 64 << 10, "{} bytes kept", stdout.len());
    assert!(stdout.contains("more bytes of this line not kept"));
    assert!(stdout.contains("after the long line"));
    // Invalid UTF-8 is kept lossily, and what follows it is not lost.
    let bad = line("writes_invalid_utf8_to_stderr");
    let stderr = bad["stderr"].as_str().unwrap_or_default();
    assert!(stderr.contains('\u{fffd}'), "{bad}");
    assert!(stderr.contains("the line after it"), "{bad}");
}

#[service_test(unit)]
fn one_test_per_process_as_nextest_runs_them() {
    let dir = fresh_dir("nextest");
    // Nextest runs each test alone, `--exact NAME --nocapture`, several at once.
    let started = Instant::now();
    let runs: Vec<(String, Ran)> = std::thread::scope(|s| {
        let handles: Vec<_> = TESTS
            .iter()
            .map(|name| {
                let dir = &dir;
                s.spawn(move || {
                    (
                        name.to_string(),
                        run(dir, &["--exact", name, "--nocapture"], &[]),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a runner thread"))
            .collect()
    });
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    for (name, r) in &runs {
        assert_no_value(&dir, &format!("the console of `{name}`"), &r.console);
        assert_eq!(
            // (a test's own output may follow on the same line)
            r.console
                .lines()
                .filter(|l| l.starts_with(&format!("test {name} ...")))
                .count(),
            1,
            "one result for {name}:\n{}",
            end(&r.console)
        );
        let failed = r.code != 0;
        let should_fail = matches!(
            name.as_str(),
            "an_assert_shows_a_generated_name_and_ssn"
                | "an_error_names_the_patient"
                | "a_phi_safe_test_prints_a_generated_ssn"
                | "a_teardown_fails_naming_the_patient"
                | "records_a_nan_metric"
        );
        assert_eq!(
            failed,
            should_fail,
            "{name} exit {}:\n{}",
            r.code,
            end(&r.console)
        );
    }
    // phi_safe judges printed output in this mode too.
    let (_, phi) = runs
        .iter()
        .find(|(n, _)| n == "a_phi_safe_test_prints_a_generated_ssn")
        .expect("ran");
    assert!(
        phi.console.contains("phi_safe: the test printed PHI"),
        "{}",
        end(&phi.console)
    );
}

#[service_test(unit)]
fn supervisor_off_and_nocapture_still_redact_and_judge() {
    let dir = fresh_dir("unsupervised");
    let r = run(&dir, &[], &[("SERVICE_TEST_SUPERVISOR", "0")]);
    assert!(r.took < BOUND, "took {:?}", r.took);
    assert_no_value(&dir, "the console (supervisor off)", &r.console);
    assert!(
        r.console
            .contains("\n    a_phi_safe_test_prints_a_generated_ssn\n"),
        "{}",
        end(&r.console)
    );
    assert!(r.console.contains("phi_safe: the test printed PHI"));
    assert!(
        r.console
            .contains("test result: FAILED. 9 passed; 5 failed"),
        "{}",
        end(&r.console)
    );

    let dir = fresh_dir("nocapture");
    let r = run(
        &dir,
        &["--nocapture", "--report-dir", &reports_arg(&dir)],
        &[],
    );
    assert!(r.took < BOUND, "took {:?}", r.took);
    assert_no_value(&dir, "the console (--nocapture)", &r.console);
    let outcomes = check_reports(&dir);
    assert_eq!(outcomes["a_phi_safe_test_prints_a_generated_ssn"], "failed");
}
/// The tests the redaction runs take: a failure naming the patient, a
/// passing test printing one, and a `phi_safe` test printing an SSN.
const REDACTION_TESTS: &[&str] = &[
    "an_error_names_the_patient",
    "prints_the_patient_and_passes",
    "a_phi_safe_test_prints_a_generated_ssn",
];

/// The values standing in `text`.
fn values_in(dir: &Path, text: &str) -> Vec<String> {
    values(dir)
        .into_iter()
        .filter(|v| find_standing(text, v).is_some())
        .collect()
}

#[service_test(unit)]
fn a_profile_with_redact_false_shows_generated_values_and_says_so_once() {
    let line_of = |dir: &Path, name: &str| -> serde_json::Value {
        std::fs::read_to_string(dir.join("reports/results.jsonl"))
            .expect("results")
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no line for {name}"))
    };
    let mut args: Vec<&str> = REDACTION_TESTS.to_vec();
    args.extend(["--isolation", "process", "--report-dir"]);

    // The default profile redacts: no value anywhere, no notice.
    let dir = fresh_dir("redact-default");
    let reports = reports_arg(&dir);
    let r = run(&dir, &[args.as_slice(), &[reports.as_str()]].concat(), &[]);
    assert_eq!(r.code, 101, "{}", end(&r.console));
    assert_no_value(&dir, "the console", &r.console);
    for file in ["results.jsonl", "junit.xml", "report.md"] {
        let text = std::fs::read_to_string(dir.join("reports").join(file)).expect(file);
        assert_no_value(&dir, file, &text);
    }
    assert!(
        !r.console.contains("redaction is off"),
        "{}",
        end(&r.console)
    );

    // A profile with `redact = false`: the values as written, said once.
    let config = config_file(
        "redact-off",
        "[profile.default]\nslow-timeout = \"30s\"\n\n[profile.logistics]\nredact = false\n",
    );
    let dir = fresh_dir("redact-off");
    let reports = reports_arg(&dir);
    let mut off = args.clone();
    off.push(reports.as_str());
    off.extend(["--profile", "logistics"]);
    let r = run(&dir, &off, &[("SERVICE_TEST_CONFIG", config.as_str())]);
    assert_eq!(r.code, 101, "{}", end(&r.console));
    let notice = "service-test: redaction is off (profile `logistics`): failure messages and output are shown as written";
    assert_eq!(
        r.console.matches(notice).count(),
        1,
        "the notice, once:\n{}",
        end(&r.console)
    );
    assert!(!r.console.contains("[PHI:"), "{}", end(&r.console));
    // The failure message names first and last name, MRN and phone.
    let error = line_of(&dir, "an_error_names_the_patient");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(values_in(&dir, message).len() >= 4, "{error}");
    assert!(
        values_in(&dir, &r.console).len() >= 4,
        "{}",
        end(&r.console)
    );
    // The captured output of a passing test keeps its name and SSN.
    let printed = line_of(&dir, "prints_the_patient_and_passes");
    let output = format!(
        "{}{}",
        printed["stdout"].as_str().unwrap_or_default(),
        printed["stderr"].as_str().unwrap_or_default()
    );
    assert!(values_in(&dir, &output).len() >= 3, "{printed}");
    // phi_safe still judges (the test's own assertion), showing the line
    // as written.
    let guarded = line_of(&dir, "a_phi_safe_test_prints_a_generated_ssn");
    assert_eq!(guarded["outcome"], "failed", "{guarded}");
    let finding = guarded["message"].as_str().unwrap_or_default();
    assert!(finding.contains("phi_safe:"), "{guarded}");
    assert!(!values_in(&dir, finding).is_empty(), "{guarded}");
    for file in ["junit.xml", "report.md"] {
        let text = std::fs::read_to_string(dir.join("reports").join(file)).expect(file);
        assert!(!values_in(&dir, &text).is_empty(), "no value in {file}");
    }
}

harness::main!();
