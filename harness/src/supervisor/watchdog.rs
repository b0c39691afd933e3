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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long a worker has between SIGTERM and its group's SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// A worker being watched, until [`Watch::finish`] (or the drop).
pub(super) struct Watch {
    id: u64,
    killed: Arc<AtomicBool>,
}

impl Watch {
    /// The worker has been reaped: it is signalled no more. `true` when
    /// its deadline passed and it was signalled.
    pub(super) fn finish(self) -> bool {
        self.forget();
        self.killed.load(Ordering::SeqCst)
    }

    /// Out of the watchdog's list (the watchdog signals under the same
    /// lock, so nothing is sent after this returns).
    fn forget(&self) {
        let Some(shared) = SHARED.get() else { return };
        let mut watched = shared.lock();
        if let Some(at) = watched.iter().position(|w| w.id == self.id) {
            watched.swap_remove(at);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.forget();
    }
}

/// Signals `pid` past `after` from now (see the module docs), until the
/// returned watch is finished.
pub(super) fn watch(pid: i32, after: Duration) -> Watch {
    static IDS: AtomicU64 = AtomicU64::new(0);
    let id = IDS.fetch_add(1, Ordering::Relaxed);
    let killed = Arc::new(AtomicBool::new(false));
    let shared = SHARED.get_or_init(Shared::start);
    let next = Instant::now() + after;
    let mut watched = shared.lock();
    // The thread sleeps until the earliest deadline it knows: wake it only
    // when this one comes sooner.
    let sooner = watched.iter().all(|w| next < w.next);
    watched.push(Watched {
        id,
        pid,
        next,
        terminated: false,
        killed: Arc::clone(&killed),
    });
    drop(watched);
    if sooner {
        shared.wake.notify_one();
    }
    Watch { id, killed }
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

struct Watched {
    id: u64,
    pid: i32,
    /// When it is signalled next.
    next: Instant,
    /// SIGTERM sent; SIGKILL next.
    terminated: bool,
    killed: Arc<AtomicBool>,
}

struct Shared {
    watched: Mutex<Vec<Watched>>,
    wake: Condvar,
}

impl Shared {
    fn start() -> Arc<Shared> {
        let shared = Arc::new(Shared {
            watched: Mutex::new(Vec::new()),
            wake: Condvar::new(),
        });
        let serving = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("service-test-watchdog".into())
            .spawn(move || serving.serve());
        if let Err(e) = spawned {
            // Without it no deadline is enforced; the run still ends when
            // its tests do.
            eprintln!(
                "service-test: cannot start the watchdog thread ({e}): a worker stuck past its test's timeout will not be killed"
            );
        }
        shared
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Watched>> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The watchdog's loop: signals whoever is due, sleeps until the next.
    fn serve(&self) {
        let mut watched = self.lock();
        loop {
            let now = Instant::now();
            // Signalled under the lock, so that a watch finished (its
            // worker reaped) is never signalled after.
            watched.retain_mut(|w| {
                if now < w.next {
                    return true;
                }
                w.killed.store(true, Ordering::SeqCst);
                let (target, signal) = if w.terminated {
                    (-w.pid, libc::SIGKILL)
                } else {
                    (w.pid, libc::SIGTERM)
                };
                // SAFETY: signals a worker (or its group) that has not been
                // reaped yet: its watch is finished only after its wait.
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
