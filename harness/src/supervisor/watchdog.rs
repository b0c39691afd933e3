//! Workers' deadlines, watched by one thread for the whole run.
//!
//! A worker given a deadline (an isolated test's timeout and its grace) is
//! [`watch`]ed: past the deadline it gets SIGTERM (so its test can wind
//! down and its fixtures tear down), and [`TERM_GRACE`] later its whole
//! process group gets SIGKILL. Once the worker has been reaped its
//! [`Watch`] is finished, after which nothing is ever sent to its pid
//! (which the system may give to another process).
//!
//! One thread serves every worker: it sleeps until the earliest deadline
//! and is woken when an earlier one arrives. A thread per worker, as
//! before, cost a thread start and its stack per isolated test, a
//! noticeable share of a fork-started no-op test. (Tested from outside, in
//! `harness/selftest/tests/crashes.rs`: a test that stops its own process
//! is ended by it, among thirty others with later deadlines.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once, PoisonError};
use std::time::{Duration, Instant};

/// How long a worker has between SIGTERM and its group's SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// A worker being watched, until [`Watch::finish`] (or the drop).
pub(super) struct Watch {
    id: u64,
}

impl Watch {
    /// The worker has been reaped: it is signalled no more. `true` when
    /// its deadline passed and it was signalled.
    pub(super) fn finish(self) -> bool {
        // Gone from the list already: removed after its SIGKILL.
        let signalled = SHARED.forget(self.id).unwrap_or(true);
        std::mem::forget(self);
        signalled
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        SHARED.forget(self.id);
    }
}

/// Signals `pid` past `after` from now (see the module docs), until the
/// returned watch is finished.
pub(super) fn watch(pid: i32, after: Duration) -> Watch {
    static IDS: AtomicU64 = AtomicU64::new(0);
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("service-test-watchdog".into())
            .spawn(|| SHARED.serve());
        if let Err(e) = spawned {
            // Without it no deadline is enforced; the run still ends when
            // its tests do.
            eprintln!(
                "service-test: cannot start the watchdog thread ({e}): a worker stuck past its test's timeout will not be killed"
            );
        }
    });
    let id = IDS.fetch_add(1, Ordering::Relaxed);
    let next = Instant::now() + after;
    let mut watched = SHARED.lock();
    // The thread sleeps until the earliest deadline it knows: wake it only
    // when this one comes sooner.
    let sooner = watched.iter().all(|w| next < w.next);
    watched.push(Watched {
        id,
        pid,
        next,
        terminated: false,
    });
    drop(watched);
    if sooner {
        SHARED.wake.notify_one();
    }
    Watch { id }
}

static SHARED: Shared = Shared {
    watched: Mutex::new(Vec::new()),
    wake: Condvar::new(),
};

struct Watched {
    id: u64,
    pid: i32,
    /// When it is signalled next.
    next: Instant,
    /// SIGTERM sent; SIGKILL next.
    terminated: bool,
}

struct Shared {
    watched: Mutex<Vec<Watched>>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<Watched>> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes watch `id` out of the list (the watchdog signals under the
    /// same lock, so nothing is sent after this returns): whether it was
    /// signalled, `None` when it was no longer there.
    fn forget(&self, id: u64) -> Option<bool> {
        let mut watched = self.lock();
        let at = watched.iter().position(|w| w.id == id)?;
        Some(watched.swap_remove(at).terminated)
    }

    /// The watchdog's loop: signals whoever is due, sleeps until the next.
    fn serve(&self) {
        let mut watched = self.lock();
        loop {
            let now = Instant::now();
            // Signalled under the lock, so that a watch finished is never
            // signalled after.
            watched.retain_mut(|w| {
                if now < w.next {
                    return true;
                }
                let (target, signal) = if w.terminated {
                    (-w.pid, libc::SIGKILL)
                } else {
                    (w.pid, libc::SIGTERM)
                };
                // SAFETY: signals a worker (or its group) whose watch is not
                // finished. A watch is finished just after its worker is
                // reaped, so in that instant the pid could name another
                // process: the window a watchdog has always had.
                unsafe {
                    libc::kill(target, signal);
                }
                if w.terminated {
                    return false;
                }
                w.terminated = true;
                w.next = now + TERM_GRACE;
                true
            });
            watched = match watched.iter().map(|w| w.next).min() {
                None => self
                    .wake
                    .wait(watched)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(next) => {
                    let wait = next.saturating_duration_since(Instant::now());
                    self.wake
                        .wait_timeout(watched, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}
