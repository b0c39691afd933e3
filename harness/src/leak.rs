//! Leak checks: tasks a test spawned that still run after its teardown.
//!
//! tokio counts the runtime's alive tasks ([`alive_tasks`]); it does not
//! say who spawned them. So a test's leak is attributed only when one test
//! runs at a time (`--test-threads 1`, or one selected test, as under
//! nextest): its count after teardown, given [`GRACE`] to settle, is
//! compared with its count before it started, less the tasks that suite
//! and session fixtures started while the test set them up (they belong to
//! the fixture, not the test). With several tests at once, the run checks
//! once at its end, after every teardown, and says how to find the test.
//!
//! Off unless the profile says `leaks = "warn"` or `leaks = "fail"`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a test's tasks get to finish after its teardown.
pub const GRACE: Duration = Duration::from_millis(100);

/// Tasks alive on the current tokio runtime (0 outside one).
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_alive_tasks())
}

/// Tasks started by shared (suite and session) fixtures' setup, run-wide.
#[derive(Debug, Default)]
pub(crate) struct FixtureTasks(AtomicUsize);

impl FixtureTasks {
    pub(crate) fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Waits up to [`GRACE`] for the alive count to fall to `allowed`, and
/// returns how many tasks are still over it.
pub(crate) async fn over_after_grace(allowed: usize) -> usize {
    let deadline = Instant::now() + GRACE;
    loop {
        let over = alive_tasks().saturating_sub(allowed);
        if over == 0 || Instant::now() >= deadline {
            return over;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
