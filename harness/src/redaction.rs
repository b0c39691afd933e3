//! Whether what leaves a test process is redacted: failure messages,
//! captured output, log lines, reports.
//!
//! On by default: the shipped suites generate synthetic patients, and a
//! failure that shows one is treated as PHI. A team whose data is not
//! health data turns it off per profile (`redact = false` in
//! `.config/service-test.toml`); the run then says so once, at its start,
//! and every message is shown as the test wrote it.
//!
//! Every process of a run (supervisor, workers, the host) reads the same
//! config file and profile, and calls [`set`] once before any test runs.
//! What redaction does not switch off: the `phi_safe` guard still judges a
//! test's output (it is the test's own assertion that its code emits no
//! PHI); with redaction off its finding shows the offending line as written.

use std::sync::atomic::{AtomicBool, Ordering};

/// Off only when a profile said `redact = false`.
static OFF: AtomicBool = AtomicBool::new(false);

/// Sets redaction for this process (from the profile in force).
pub(crate) fn set(on: bool) {
    OFF.store(!on, Ordering::SeqCst);
}

/// Is redaction on in this process?
pub fn is_on() -> bool {
    !OFF.load(Ordering::SeqCst)
}

/// `text` as it may leave the process: [`phi::redact`]ed, unless
/// redaction is off.
pub fn redact(text: &str) -> String {
    if is_on() {
        phi::redact(text)
    } else {
        text.to_string()
    }
}

/// ` (PHI redacted)` after a label of shown text, when it was.
pub(crate) fn label() -> &'static str {
    if is_on() { " (PHI redacted)" } else { "" }
}

/// The line a run prints once at its start when redaction is off.
pub(crate) fn notice(profile: &str) -> String {
    format!(
        "service-test: redaction is off (profile `{profile}`): failure messages and output are shown as written"
    )
}
