//! The worker side of a supervised run: the test binary, started again by
//! its supervisor (see [`crate::supervisor`]) with [`WORKER_ENV`] set,
//! runs the tests named on its standard input in process and reports each
//! as it starts and finishes, one JSON [`Event`] a line.
//!
//! Events travel on the worker's original standard output; the worker
//! points its own file descriptor 1 at standard error first, so whatever a
//! test prints cannot corrupt the channel.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::FromRawFd;
use std::sync::{Mutex, OnceLock, PoisonError};

use serde::{Deserialize, Serialize};

use crate::execute::TestRecord;

/// Set (to `1`) in the environment of a worker process.
pub const WORKER_ENV: &str = "SERVICE_TEST_WORKER";

/// What a worker tells its supervisor.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub(crate) enum Event {
    /// A test began (its fixtures are being set up).
    Started {
        /// The test's name.
        name: String,
    },
    /// A test ended with this record.
    Finished {
        /// What happened.
        record: TestRecord,
    },
    /// Every test ran and suite and session fixtures were torn down.
    Done {
        /// Teardowns that failed.
        teardown_failures: Vec<String>,
    },
}

static CHANNEL: OnceLock<Mutex<File>> = OnceLock::new();

/// Is this process a worker?
pub(crate) fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some_and(|v| v == "1")
}

/// Takes standard output as the event channel and points file descriptor
/// 1 at standard error. Also asks the kernel to kill this process when its
/// supervisor dies, so a worker (and the private instances it started)
/// never outlives the run.
///
/// The variables the supervisor set for this worker ([`WORKER_ENV`], the
/// seed) are removed, so processes the tests start do not inherit them.
pub(crate) fn install() -> std::io::Result<()> {
    // SAFETY: called first thing in a worker, before its runtime or any
    // other thread exists, so nothing reads the environment concurrently.
    unsafe {
        std::env::remove_var(WORKER_ENV);
        std::env::remove_var(crate::cli::SEED_ENV);
    }
    // SAFETY: plain descriptor calls on this process's own descriptors 1
    // and 2; the duplicate is owned by the `File` from here on.
    let channel = unsafe {
        let fd = libc::dup(1);
        if fd < 0 || libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        #[cfg(target_os = "linux")]
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        File::from_raw_fd(fd)
    };
    let _ = CHANNEL.set(Mutex::new(channel));
    Ok(())
}

/// Sends one event to the supervisor (nothing outside a worker).
pub(crate) fn emit(event: &Event) {
    let Some(channel) = CHANNEL.get() else {
        return;
    };
    let Ok(mut line) = serde_json::to_string(event) else {
        return;
    };
    line.push('\n');
    let mut ch = channel.lock().unwrap_or_else(PoisonError::into_inner);
    // A supervisor that stopped reading has died; nothing is left to tell.
    let _ = ch.write_all(line.as_bytes()).and_then(|()| ch.flush());
}

/// The names of the tests to run, one a line on standard input.
pub(crate) fn read_names() -> Vec<String> {
    std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .collect()
}
