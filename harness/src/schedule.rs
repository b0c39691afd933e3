//! The scheduler: in what order tests start, and how many run at once.
//!
//! Tests are started longest-first (durations from the previous run, see
//! [`crate::history`]) as tasks on tokio's multi-thread, work-stealing
//! runtime. At most `concurrency` run at once; a test in a group waits while
//! its group is full, without holding up tests behind it in the queue.
//! After a failure under `--fail-fast`, nothing more is started.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::events::TestRecord;
use crate::history::History;

/// The default number of tests running at once: 32 per core, between 32 and
/// 256. Service tests mostly wait on sockets, so many more than one per core
/// keeps the machine busy; `--test-threads N` sets it.
pub fn default_concurrency() -> usize {
    (cores() * 32).clamp(32, 256)
}

/// How many isolated tests (each a process) run at once by default: as
/// many as tests in process ([`default_concurrency`]) when each is forked
/// from a zygote (a process then costs a fork, see `crate::zygote`); 16 per
/// core when `SERVICE_TEST_FORK=0` has each one exec'd and start up.
pub fn default_isolated_concurrency() -> usize {
    if crate::env::fork_disabled() {
        (cores() * 16).min(default_concurrency())
    } else {
        default_concurrency()
    }
}

/// The machine's cores (2 when it cannot be told).
pub fn cores() -> usize {
    // Asked once: the answer reads cgroup files, and a forked worker
    // (see `crate::zygote`) inherits it instead of reading them again.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2)
    })
}

/// Orders tests longest first. Tests with no recorded duration go first (in
/// their given order), since a new test may well be long.
pub fn longest_first<T>(tests: &mut [T], history: &History, name: impl Fn(&T) -> &str) {
    tests.sort_by(|a, b| {
        let da = history.duration_s(name(a));
        let db = history.duration_s(name(b));
        match (da, db) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => y.total_cmp(&x),
        }
    });
}

/// One test waiting to be started.
pub(crate) struct Pending<J> {
    pub(crate) group: Option<&'static str>,
    /// Runs alone: starts when nothing runs, and nothing starts beside it.
    pub(crate) exclusive: bool,
    pub(crate) job: J,
}

/// The queue the slot workers share.
struct Queue<J> {
    pending: VecDeque<Pending<J>>,
    in_group: HashMap<&'static str, usize>,
    running: usize,
    exclusive_running: bool,
    failures: usize,
    stopped: bool,
}

impl<J> Queue<J> {
    /// The first pending job whose group has room, taking its group place.
    /// Shared jobs go first; an exclusive job is taken only when nothing
    /// runs and no shared job can start, and while it runs nothing else is.
    fn take_next(&mut self, limits: &HashMap<&'static str, usize>) -> Option<Pending<J>> {
        if self.exclusive_running {
            return None;
        }
        let in_group = &self.in_group;
        let has_room = |p: &Pending<J>| {
            p.group.is_none_or(|g| {
                in_group.get(g).copied().unwrap_or(0) < limits.get(g).copied().unwrap_or(1)
            })
        };
        let i = match self
            .pending
            .iter()
            .position(|p| !p.exclusive && has_room(p))
        {
            Some(i) => i,
            None if self.running == 0 => self.pending.iter().position(has_room)?,
            None => return None,
        };
        let next = self.pending.remove(i)?;
        if let Some(g) = next.group {
            *self.in_group.entry(g).or_insert(0) += 1;
        }
        self.running += 1;
        self.exclusive_running = next.exclusive;
        Some(next)
    }

    /// A job taken by [`Queue::take_next`] has finished.
    fn finished(&mut self, job: &Pending<()>) {
        if let Some(g) = job.group {
            if let Some(n) = self.in_group.get_mut(g) {
                *n -= 1;
            }
        }
        self.running -= 1;
        if job.exclusive {
            self.exclusive_running = false;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts `pending` in order through `start`, keeping at most `concurrency`
/// running and each group within its limit (a group not in `limits` allows
/// one at a time). `done` sees every record as it finishes. After
/// `max_fail` failures no new test starts (`--fail-fast`, `--max-fail`):
/// the worker that saw the last one stops the queue before it takes its
/// next test, so the count is exact with one worker. Returns the jobs
/// never started.
///
/// There is one worker task per slot, as libtest has one thread per slot: a
/// worker starts its next test as soon as its last one finished, with no
/// central dispatcher in between. A worker whose next tests are all held
/// back by full groups waits for a group place to free. Exclusive jobs run
/// alone, after the shared ones that can start.
pub(crate) async fn dispatch<J, F, Fut>(
    pending: Vec<Pending<J>>,
    concurrency: usize,
    limits: HashMap<&'static str, usize>,
    start: F,
    max_fail: Option<usize>,
    mut done: impl FnMut(TestRecord),
) -> Vec<J>
where
    J: Send + 'static,
    F: Fn(J) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TestRecord> + Send + 'static,
{
    let workers = concurrency.max(1).min(pending.len());
    let queue = Arc::new(Mutex::new(Queue {
        pending: pending.into(),
        in_group: HashMap::new(),
        running: 0,
        exclusive_running: false,
        failures: 0,
        stopped: false,
    }));
    let freed = Arc::new(Notify::new());
    let limits = Arc::new(limits);
    let start = Arc::new(start);
    let (tx, mut rx) = mpsc::unbounded_channel::<TestRecord>();
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (queue, freed, limits, start, tx) = (
            queue.clone(),
            freed.clone(),
            limits.clone(),
            start.clone(),
            tx.clone(),
        );
        tasks.spawn(async move {
            loop {
                let next = loop {
                    let notified = freed.notified();
                    {
                        let mut q = lock(&queue);
                        if q.stopped
                            || q.pending.is_empty()
                            || crate::signals::interrupted()
                            || crate::worker::recycling()
                        {
                            return;
                        }
                        if let Some(next) = q.take_next(&limits) {
                            break next;
                        }
                    }
                    notified.await;
                };
                let taken = Pending {
                    group: next.group,
                    exclusive: next.exclusive,
                    job: (),
                };
                let record = start(next.job).await;
                {
                    let mut q = lock(&queue);
                    if record.outcome.is_failure() {
                        q.failures += 1;
                        if max_fail.is_some_and(|n| q.failures >= n) {
                            q.stopped = true;
                        }
                    }
                    q.finished(&taken);
                }
                freed.notify_waiters();
                if tx.send(record).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    while let Some(record) = rx.recv().await {
        done(record);
    }
    while let Some(joined) = tasks.join_next().await {
        // The executor catches test panics itself; a panic here is a bug in
        // the harness, and must not pass silently.
        if let Err(e) = joined {
            panic!("harness bug: a scheduler worker failed: {e}");
        }
    }
    let rest = std::mem::take(&mut lock(&queue).pending);
    rest.into_iter().map(|p| p.job).collect()
}
