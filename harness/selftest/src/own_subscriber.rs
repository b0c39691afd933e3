//! A test binary that installs its own `tracing` subscriber before the
//! harness can: the harness cannot see the tests' events, so a `phi_safe`
//! test fails closed instead of passing on what was not scanned.

use harness::service_test;

#[service_test(phi_safe)]
async fn logs_nothing_the_harness_could_see() {
    tracing::info!("ssn 123-45-6789, unseen by the harness");
}

#[service_test(unit)]
async fn a_test_without_the_marker_is_unaffected() {}

fn main() -> std::process::ExitCode {
    // Swallows every event: nothing reaches the harness's capture.
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    harness::run()
}
