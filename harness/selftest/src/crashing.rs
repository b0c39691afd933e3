//! Thirty passing tests and a few that take their process down, block
//! their thread or print PHI, for the supervisor's tests
//! (`tests/crashes.rs`). Select the misbehaviour with a marker.

use std::time::Duration;

use harness::{marker, service_test};

marker!(fine, "passes after a short wait");
marker!(aborts, "calls std::process::abort()");
marker!(exits_zero, "calls std::process::exit(0) mid-run");
marker!(overflows, "overflows its stack");
marker!(
    blocking,
    "an async test that blocks its thread past its timeout"
);
marker!(
    prints_phi,
    "phi_safe tests that print a generated patient's SSN"
);

marker!(
    stops,
    "stops its own process (SIGSTOP): only the supervisor's watchdog ends it; run it isolated"
);

marker!(
    whose_process,
    "prints its process, group and parent, and whether the parent is a zygote"
);

/// `pid=… pgid=… ppid=… parent=zygote|other` on stdout.
fn print_whose_process() {
    // SAFETY: plain queries of this process.
    let (pid, pgid, ppid) = unsafe { (libc::getpid(), libc::getpgrp(), libc::getppid()) };
    let environ = std::fs::read(format!("/proc/{ppid}/environ")).unwrap_or_default();
    let zygote = environ
        .split(|b| *b == 0)
        .any(|v| v == b"SERVICE_TEST_ZYGOTE=1");
    println!(
        "pid={pid} pgid={pgid} ppid={ppid} parent={}",
        if zygote { "zygote" } else { "other" }
    );
}

#[service_test(whose_process)]
fn first_process() {
    print_whose_process();
}

#[service_test(whose_process)]
async fn second_process() {
    print_whose_process();
}

macro_rules! fine {
    ($($name:ident),*) => {$(
        #[service_test(fine)]
        async fn $name() {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    )*};
}

fine!(
    ok_01, ok_02, ok_03, ok_04, ok_05, ok_06, ok_07, ok_08, ok_09, ok_10, ok_11, ok_12, ok_13,
    ok_14, ok_15, ok_16, ok_17, ok_18, ok_19, ok_20, ok_21, ok_22, ok_23, ok_24, ok_25, ok_26,
    ok_27, ok_28, ok_29, ok_30
);

#[service_test(aborts)]
async fn aborts_the_process() {
    tokio::time::sleep(Duration::from_millis(10)).await;
    eprintln!("about to abort");
    std::process::abort();
}

#[service_test(exits_zero)]
async fn exits_with_zero() {
    tokio::time::sleep(Duration::from_millis(10)).await;
    println!("leaving early");
    std::process::exit(0);
}

#[allow(unconditional_recursion)]
fn deeper(frame: [u8; 256]) -> u8 {
    let next = std::hint::black_box(frame);
    deeper(next).wrapping_add(next[0])
}

#[service_test(overflows)]
fn overflows_the_stack() {
    let _ = deeper([1; 256]);
}

#[service_test(prints_phi, phi_safe)]
async fn prints_a_generated_ssn(patient: healthcare_data::Patient) {
    println!("checking patient {}", patient.ssn);
}

#[service_test(prints_phi, phi_safe)]
async fn eprints_a_generated_ssn(patient: healthcare_data::Patient) {
    eprintln!("rejected: ssn {}", patient.ssn);
}

#[service_test(prints_phi, phi_safe)]
async fn a_spawned_task_prints_a_generated_ssn(patient: healthcare_data::Patient) {
    let ssn = patient.ssn.clone();
    let _ = tokio::spawn(async move { println!("background sync of {ssn}") }).await;
}

#[service_test(prints_phi, phi_safe)]
async fn a_spawned_task_logs_a_generated_ssn(patient: healthcare_data::Patient) {
    let ssn = patient.ssn.clone();
    let _ = tokio::spawn(async move { tracing::info!("background check of {ssn}") }).await;
}

/// A name alone matches no PHI pattern: only the canary registered when
/// the patient was generated (in the test's process) finds it.
#[service_test(prints_phi, phi_safe)]
async fn prints_a_generated_name(patient: healthcare_data::Patient) {
    println!("{} {} is next", patient.first_name, patient.last_name);
}

#[service_test(prints_phi, phi_safe)]
async fn prints_nothing_sensitive(patient: healthcare_data::Patient) {
    println!("checked a patient of {} chars", patient.ssn.len());
}

#[service_test(blocking, timeout = "1s")]
async fn blocks_its_thread_for_eight_seconds() {
    std::thread::sleep(Duration::from_secs(8));
}

#[service_test(stops, timeout = "1s")]
async fn stops_its_own_process() {
    // SAFETY: signals this process; every thread stops, its own timeout
    // included, until its group is killed.
    unsafe {
        libc::raise(libc::SIGSTOP);
    }
}

harness::main!();
