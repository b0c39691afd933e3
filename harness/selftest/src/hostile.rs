//! Ordinary tests that misbehave the way tests in the wild do: they show
//! generated patients in failures, leave processes running, record NaN,
//! print a two-megabyte line, invalid UTF-8 or terminal escapes. Driven by
//! `tests/hostile.rs` in every mode (supervised, `--isolation process`,
//! one test per process as nextest runs them, the supervisor off,
//! `--nocapture`): each run must end promptly with one result per test and
//! no generated value anywhere. The one honest slow test sets the pace.
//!
//! Every generated value a test sees is also written, one per line, to
//! the file named by `HOSTILE_VALUES` (when set), so that the driver can
//! search every output for the values themselves.

use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use harness::{FixtureCx, Metrics, TestInfo, fixture, marker, service_test};

marker!(hostile, "tests that misbehave; see the module docs");
marker!(leaks_processes, "tests that leave a process running");

/// A patient whose identifying values are written where the driver finds
/// them (and nowhere else).
pub struct Shown(healthcare_data::Patient);

#[fixture]
async fn shown(patient: healthcare_data::Patient, _cx: &mut FixtureCx) -> Shown {
    if let Some(path) = std::env::var_os("HOSTILE_VALUES") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            // One write of whole lines: tests in other processes append to
            // the same file at the same time (O_APPEND keeps one write
            // whole; piecewise `writeln!`s interleaved and cut values).
            let record: String = [
                &patient.first_name,
                &patient.last_name,
                &patient.ssn,
                &patient.mrn,
                &patient.phone,
                &patient.email,
            ]
            .iter()
            .map(|v| format!("{v}\n"))
            .collect();
            let _ = f.write_all(record.as_bytes());
        }
    }
    Shown(patient)
}

/// A fixture whose teardown fails naming the patient it set up.
pub struct TornNoisily(String);

#[fixture]
async fn torn_noisily(shown: &Shown, cx: &mut FixtureCx) -> TornNoisily {
    let who = format!("{} {}", shown.0.first_name, shown.0.last_name);
    let said = who.clone();
    cx.on_teardown(async move { Err::<(), String>(format!("could not delete {said}")) });
    TornNoisily(who)
}

#[service_test(hostile)]
async fn an_assert_shows_a_generated_name_and_ssn(p: Shown) {
    let p = &p.0;
    assert_eq!(
        format!("{} {}", p.last_name, p.ssn),
        "Nobody 000-00-0000",
        "the wrong patient came back"
    );
}

#[service_test(hostile)]
async fn an_error_names_the_patient(p: Shown) -> Result<(), String> {
    Err(format!(
        "no coverage for {} {} (MRN {}, phone {})",
        p.0.first_name, p.0.last_name, p.0.mrn, p.0.phone
    ))
}

static FLAKY: AtomicU32 = AtomicU32::new(0);

#[service_test(hostile, retries = 1)]
async fn a_flaky_first_attempt_names_the_patient(p: Shown, info: TestInfo) -> Result<(), String> {
    FLAKY.fetch_add(1, Ordering::SeqCst);
    if info.attempt == 1 {
        return Err(format!("{} was not found on the first try", p.0.email));
    }
    Ok(())
}

#[service_test(hostile)]
async fn prints_the_patient_and_passes(p: Shown) {
    println!("synced {} {}", p.0.first_name, p.0.last_name);
    eprintln!("ssn on file: {}", p.0.ssn);
}

#[service_test(hostile)]
async fn a_teardown_fails_naming_the_patient(t: TornNoisily) {
    assert!(!t.0.is_empty());
}

#[service_test(hostile)]
async fn a_metric_is_named_after_the_patient(p: Shown, metrics: Metrics) {
    metrics.record(&format!("latency of {}", p.0.last_name), 12.0, "ms", None);
}

#[service_test(hostile)]
async fn records_a_nan_metric(metrics: Metrics) {
    metrics.record("p99_ms", f64::NAN, "ms", Some("POST /patients"));
}

#[service_test(hostile, leaks_processes)]
#[allow(clippy::zombie_processes)] // the point of the test
fn leaves_a_child_process_running() {
    let _child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep starts");
}

#[service_test(hostile, leaks_processes)]
fn leaves_an_orphan_running() {
    // The shell exits at once; its `sleep` is orphaned but stays in the
    // process group, holding whatever descriptors it inherited.
    let status = std::process::Command::new("sh")
        .args(["-c", "sleep 60 &"])
        .status()
        .expect("sh runs");
    assert!(status.success());
}

#[service_test(hostile, isolated)]
fn prints_one_two_megabyte_line() {
    let line = "4".repeat(2 << 20);
    println!("{line}");
    println!("after the long line");
}

#[service_test(hostile, isolated)]
fn writes_invalid_utf8_to_stderr() {
    let mut err = std::io::stderr();
    let _ = err.write_all(b"a byte that is not UTF-8: \xff\xfe here\n");
    let _ = err.write_all(b"the line after it\n");
}

#[service_test(hostile)]
fn prints_terminal_escapes() {
    println!("\x1b[2J\x1b[H\x1b]0;owned title\x07cleared the screen");
}

#[service_test(hostile, phi_safe)]
async fn a_phi_safe_test_prints_a_generated_ssn(p: Shown) {
    println!("checking {}", p.0.ssn);
}

#[service_test(hostile)]
async fn an_honest_slow_test() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

harness::main!();
