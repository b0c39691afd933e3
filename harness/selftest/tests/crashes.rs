//! The supervisor seen from outside: a test that takes its process down
//! (abort, `exit(0)`, stack overflow) is named `crashed`, and every other
//! test keeps its own result, in the console and in every report.

use harness::service_test;

mod common;
use common::*;

fn fresh_dir(what: &str) -> std::path::PathBuf {
    let dir = history_dir().join(format!("crash-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn results(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .expect("results.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Runs the thirty `fine` tests with the crashing one `marker` selects.
fn thirty_and(marker: &str, what: &str) -> (Run, Vec<serde_json::Value>, std::path::PathBuf) {
    let dir = fresh_dir(what);
    let d = dir.to_string_lossy().into_owned();
    let expr = format!("fine or {marker}");
    let r = run_bin(CRASHING, &["-m", &expr, "--report-dir", &d], &[]);
    let lines = results(&dir);
    (r, lines, dir)
}

fn assert_thirty_passed_and_one_crashed(r: &Run, lines: &[serde_json::Value], how: &str) {
    assert_eq!(r.code, 101, "a crash fails the run\n{}", r.stderr);
    assert_eq!(lines.len(), 31, "every test has its line");
    let passed = lines.iter().filter(|l| l["outcome"] == "passed").count();
    assert_eq!(passed, 30, "{lines:?}");
    let crashed: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["outcome"] == "crashed").collect();
    assert_eq!(crashed.len(), 1, "{lines:?}");
    let message = crashed[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(how), "{message}");
    assert!(
        r.stdout
            .contains("test result: FAILED. 30 passed; 1 failed"),
        "{}",
        r.stdout
    );
}

#[service_test(unit)]
fn an_abort_is_named_crashed_with_its_signal_and_the_others_keep_their_results() {
    let (r, lines, dir) = thirty_and("aborts", "abort");
    assert_thirty_passed_and_one_crashed(&r, &lines, "SIGABRT");
    let crashed = lines
        .iter()
        .find(|l| l["outcome"] == "crashed")
        .expect("one");
    assert_eq!(crashed["name"], "aborts_the_process");
    assert!(
        crashed["message"]
            .as_str()
            .is_some_and(|m| m.contains("about to abort")),
        "its captured output: {crashed}"
    );
    let junit = std::fs::read_to_string(dir.join("junit.xml")).expect("junit.xml");
    assert_eq!(junit.matches("<testcase ").count(), 31, "{junit}");
    assert!(junit.contains("crashed"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[service_test(unit)]
fn exit_zero_inside_a_test_is_a_crash_not_a_green_run() {
    let (r, lines, dir) = thirty_and("exits_zero", "exit");
    assert_thirty_passed_and_one_crashed(&r, &lines, "exit code 0");
    let _ = std::fs::remove_dir_all(&dir);
}

#[service_test(unit)]
fn a_stack_overflow_is_a_crash() {
    let (r, lines, dir) = thirty_and("overflows", "overflow");
    assert_thirty_passed_and_one_crashed(&r, &lines, "signal");
    let _ = std::fs::remove_dir_all(&dir);
}

#[service_test(unit)]
fn an_async_test_blocking_its_thread_times_out_and_the_run_ends_in_under_3s() {
    for supervisor in ["1", "0"] {
        let started = std::time::Instant::now();
        let r = run_bin(
            CRASHING,
            &["-m", "blocking or fine"],
            &[("SERVICE_TEST_SUPERVISOR", supervisor)],
        );
        let took = started.elapsed();
        assert_eq!(r.code, 101, "{}", r.stderr);
        assert!(
            r.stdout.contains("[timed out] timed out after 1s"),
            "{}",
            r.stdout
        );
        assert!(r.stdout.contains("30 passed; 1 failed"), "{}", r.stdout);
        // A behaviour bound, not a speed claim: the 8 s block does not hold the run.
        assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    }
}

/// A timed-out async test that still holds its runtime thread makes its
/// worker start no more tests: the rest go on in a fresh worker, with all
/// its threads. Run one at a time with the blocking test first (it failed
/// last time: `--failed-first`), so every other test comes after it.
#[service_test(unit)]
fn a_worker_with_a_stuck_thread_is_recycled() {
    let history = fresh_dir("recycle-history");
    let h = history.to_string_lossy().into_owned();
    let env = [("SERVICE_TEST_HISTORY_DIR", h.as_str())];
    let args = [
        "-m",
        "blocking or fine",
        "--test-threads",
        "1",
        "--failed-first",
    ];
    let _ = run_bin(CRASHING, &args, &env);
    let started = std::time::Instant::now();
    let r = run_bin(CRASHING, &args, &env);
    let took = started.elapsed();
    assert_eq!(r.code, 101, "{}", r.stderr);
    assert!(r.stdout.contains("30 passed; 1 failed"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("the remaining tests go on in a fresh worker"),
        "{}",
        r.stderr
    );
    // A behaviour bound: 30 tests of 50 ms one at a time, plus the 1 s
    // timeout, and not the 8 s block.
    assert!(took < std::time::Duration::from_secs(6), "took {took:?}");
    let _ = std::fs::remove_dir_all(&history);
}

/// Isolated, forked by the zygote (which installs the capturing `tracing`
/// subscriber before it forks): a test's own `tracing` event is still
/// captured in its process, and its SSN found and redacted.
#[service_test(unit)]
fn an_isolated_phi_safe_test_logging_an_ssn_fails_with_the_ssn_redacted() {
    let r = run_bin(
        CRASHING,
        &["-m", "prints_phi", "--isolation", "process"],
        &[],
    );
    assert_eq!(r.code, 101, "{}", r.stderr);
    assert_eq!(r.outcome("a_spawned_task_logs_a_generated_ssn"), "FAILED");
    assert_eq!(r.outcome("prints_nothing_sensitive"), "ok");
    assert!(
        r.stdout.contains("captured log (1 lines, PHI redacted)"),
        "{}",
        r.stdout
    );
    assert_no_ssn_in(&[r.stdout, r.stderr]);
}

/// Fails naming the first SSN-shaped number in any of `shown`.
fn assert_no_ssn_in(shown: &[String]) {
    let ssn = regex_free_ssn_finder();
    for text in shown {
        assert!(ssn(text).is_none(), "an SSN is shown: {:?}", ssn(text));
    }
}

#[service_test(unit)]
fn a_phi_safe_test_printing_an_ssn_fails_with_the_ssn_redacted_everywhere() {
    let dir = fresh_dir("phi");
    let d = dir.to_string_lossy().into_owned();
    let r = run_bin(CRASHING, &["-m", "prints_phi", "--report-dir", &d], &[]);
    assert_eq!(r.code, 101, "{}", r.stderr);
    for name in [
        "prints_a_generated_ssn",
        "eprints_a_generated_ssn",
        "a_spawned_task_prints_a_generated_ssn",
        "prints_a_generated_name",
        "a_spawned_task_logs_a_generated_ssn",
    ] {
        assert_eq!(r.outcome(name), "FAILED", "{}", r.stdout);
    }
    assert!(
        r.stdout.contains("NAME (registered value)"),
        "the name was found as a canary the test's process registered:\n{}",
        r.stdout
    );
    assert_eq!(r.outcome("prints_nothing_sensitive"), "ok");
    assert!(
        r.stdout.contains("phi_safe: the test emitted PHI"),
        "{}",
        r.stdout
    );
    // No SSN anywhere it is shown: console, results, JUnit, Markdown.
    let mut shown = vec![r.stdout.clone(), r.stderr.clone()];
    for f in ["results.jsonl", "junit.xml", "report.md"] {
        shown.push(std::fs::read_to_string(dir.join(f)).unwrap_or_default());
    }
    assert_no_ssn_in(&shown);
    // stdout and stderr are captured apart: JUnit's system-out and
    // system-err, the results' `stdout` and `stderr`.
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap_or_default();
    let case = |name: &str| {
        let at = junit.find(&format!("name=\"{name}\"")).unwrap_or(0);
        let end = junit[at..]
            .find("</testcase>")
            .map_or(junit.len(), |e| at + e);
        junit[at..end].to_string()
    };
    let printed = case("prints_a_generated_ssn");
    assert!(
        printed.contains("<system-out>checking patient [PHI:SSN]")
            && !printed.contains("<system-err>"),
        "{printed}"
    );
    let eprinted = case("eprints_a_generated_ssn");
    assert!(
        eprinted.contains("<system-err>rejected: ssn [PHI:SSN]")
            && !eprinted.contains("<system-out>"),
        "{eprinted}"
    );
    let results = std::fs::read_to_string(dir.join("results.jsonl")).unwrap_or_default();
    let line = results
        .lines()
        .find(|l| l.contains("eprints_a_generated_ssn"))
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    assert!(
        v["stderr"]
            .as_str()
            .unwrap_or_default()
            .contains("rejected: ssn [PHI:SSN]"),
        "{line}"
    );
    assert!(v.get("stdout").is_none(), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finds `ddd-dd-dddd` in a text (the generated SSNs' form).
fn regex_free_ssn_finder() -> impl Fn(&str) -> Option<String> {
    |text: &str| {
        let b = text.as_bytes();
        (0..b.len().saturating_sub(10)).find_map(|i| {
            let w = &b[i..i + 11];
            let shape = w.iter().enumerate().all(|(j, c)| match j {
                3 | 6 => *c == b'-',
                _ => c.is_ascii_digit(),
            });
            let bounded = i == 0 || !b[i - 1].is_ascii_digit();
            (shape && bounded).then(|| String::from_utf8_lossy(w).into_owned())
        })
    }
}

/// Runs the tests `expr` selects, each in a process of its own, with
/// `env`, their reports in a fresh directory named for `what`.
fn run_isolated(expr: &str, what: &str, env: &[(&str, &str)]) -> (Run, std::path::PathBuf) {
    let dir = fresh_dir(what);
    let d = dir.to_string_lossy().into_owned();
    let args = ["-m", expr, "--isolation", "process", "--report-dir", &d];
    (run_bin(CRASHING, &args, env), dir)
}

#[service_test(unit)]
fn isolation_process_runs_each_test_in_its_own_process() {
    let (r, dir) = run_isolated("fine or aborts", "isolated", &[]);
    assert_eq!(r.code, 101, "{}", r.stderr);
    let lines = results(&dir);
    assert_eq!(lines.len(), 31);
    let crashed: Vec<_> = lines.iter().filter(|l| l["outcome"] == "crashed").collect();
    assert_eq!(crashed.len(), 1, "{lines:?}");
    // Its own process's output, captured: in results.jsonl and JUnit.
    assert!(
        crashed[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("about to abort")),
        "{}",
        crashed[0]
    );
    let bad = run_bin(CRASHING, &["--isolation", "threads"], &[]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each isolated test's `pid= pgid= ppid= parent=` line, from results.jsonl.
fn processes(dir: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    results(dir)
        .iter()
        .map(|l| {
            let out = l["stdout"].as_str().unwrap_or_default();
            out.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Runs the two `whose_process` tests isolated with `env`; what each saw.
fn isolated_processes(
    name: &str,
    env: &[(&str, &str)],
) -> Vec<std::collections::HashMap<String, String>> {
    let (r, dir) = run_isolated("whose_process", name, env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let seen = processes(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(seen.len(), 2, "{seen:?}");
    for p in &seen {
        assert_eq!(
            p["pgid"], p["pid"],
            "a group of its own (the watchdog kills it): {p:?}"
        );
    }
    seen
}

#[service_test(unit)]
fn isolated_tests_are_forked_from_one_zygote_each_in_a_group_of_its_own() {
    let seen = isolated_processes("forked", &[]);
    assert_ne!(
        seen[0]["pid"], seen[1]["pid"],
        "one process per test: {seen:?}"
    );
    for p in &seen {
        assert_eq!(p["parent"], "zygote", "forked, not exec'd: {p:?}");
    }
    assert_eq!(seen[0]["ppid"], seen[1]["ppid"], "one zygote: {seen:?}");
    // SERVICE_TEST_FORK=0: each started with exec, by the supervisor.
    for p in isolated_processes("exec", &[("SERVICE_TEST_FORK", "0")]) {
        assert_eq!(p["parent"], "other", "exec'd by the supervisor: {p:?}");
    }
}

/// A worker that cannot end its own test (stopped: its timers never fire)
/// is ended by the supervisor's watchdog past the test's timeout and
/// the supervisor's grace (5 s): SIGTERM (pending while it is stopped),
/// then SIGKILL to its group. Forked and exec'd alike; the test is timed
/// out, the others pass, and the run ends.
#[service_test(unit)]
fn an_isolated_test_that_stops_its_process_is_killed_past_its_deadline() {
    for fork in ["1", "0"] {
        let started = std::time::Instant::now();
        let (r, dir) = run_isolated(
            "fine or stops",
            &format!("stopped-{fork}"),
            &[("SERVICE_TEST_FORK", fork)],
        );
        let took = started.elapsed();
        assert_eq!(r.code, 101, "{}", r.stderr);
        let lines = results(&dir);
        assert_eq!(lines.len(), 31, "{lines:?}");
        let stopped: Vec<_> = lines
            .iter()
            .filter(|l| l["name"] == "stops_its_own_process")
            .collect();
        assert_eq!(stopped.len(), 1, "{lines:?}");
        assert_eq!(stopped[0]["outcome"], "timed-out", "{}", stopped[0]);
        let passed = lines.iter().filter(|l| l["outcome"] == "passed").count();
        assert_eq!(passed, 30, "{lines:?}");
        // A behaviour bound: 1 s timeout + 5 s before the SIGTERM + 2 s
        // before the SIGKILL, not a stopped process holding the run.
        assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[service_test(unit)]
fn without_the_supervisor_a_crash_takes_the_run_down() {
    // The escape hatch stays honest: no worker, nobody to report the rest.
    let r = run_bin(
        CRASHING,
        &["-m", "fine or aborts"],
        &[("SERVICE_TEST_SUPERVISOR", "0")],
    );
    assert_ne!(r.code, 0);
    assert_ne!(r.code, 101);
}

harness::main!();
