//! The scheduler: in what order tests start, and how many run at once.
//!
//! Tests are started longest-first (durations from the previous run, see
//! [`crate::history`]) as tasks on tokio's multi-thread, work-stealing
//! runtime. At most `concurrency` run at once; a test in a group waits while
//! its group is full, without holding up tests behind it in the queue.
//! After a failure under `--fail-fast`, nothing more is started.

use std::collections::{HashMap, VecDeque};
use std::future::Future;

use tokio::task::JoinSet;

use crate::execute::TestRecord;
use crate::history::History;

/// The default number of tests running at once: 32 per core, between 32 and
/// 256. Service tests mostly wait on sockets, so many more than one per core
/// keeps the machine busy; `--test-threads N` sets it.
pub fn default_concurrency() -> usize {
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2);
    (cores * 32).clamp(32, 256)
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
    pub(crate) job: J,
}

/// Starts `pending` in order through `start`, keeping at most `concurrency`
/// running and each group within its limit (a group not in `limits` allows
/// one at a time). `done` sees every record as it finishes; it returns
/// `true` to stop starting new tests (fail-fast). Returns the jobs never
/// started.
pub(crate) async fn dispatch<J, F, Fut>(
    pending: Vec<Pending<J>>,
    concurrency: usize,
    limits: &HashMap<&'static str, usize>,
    mut start: F,
    mut done: impl FnMut(TestRecord) -> bool,
) -> Vec<J>
where
    F: FnMut(J) -> Fut,
    Fut: Future<Output = TestRecord> + Send + 'static,
{
    let concurrency = concurrency.max(1);
    let mut queue: VecDeque<Pending<J>> = pending.into();
    let mut running: JoinSet<(Option<&'static str>, TestRecord)> = JoinSet::new();
    let mut in_group: HashMap<&'static str, usize> = HashMap::new();
    let mut stopped = false;
    loop {
        if !stopped {
            let mut i = 0;
            while running.len() < concurrency && i < queue.len() {
                let group = queue[i].group;
                let fits = group.is_none_or(|g| {
                    in_group.get(g).copied().unwrap_or(0) < limits.get(g).copied().unwrap_or(1)
                });
                if !fits {
                    i += 1;
                    continue;
                }
                let Some(next) = queue.remove(i) else { break };
                if let Some(g) = group {
                    *in_group.entry(g).or_insert(0) += 1;
                }
                let fut = start(next.job);
                running.spawn(async move { (group, fut.await) });
            }
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        match joined {
            Ok((group, record)) => {
                if let Some(g) = group {
                    if let Some(n) = in_group.get_mut(g) {
                        *n -= 1;
                    }
                }
                if done(record) {
                    stopped = true;
                }
            }
            // The executor catches test panics itself; a panic here is a bug
            // in the harness, and must not pass silently.
            Err(e) => panic!("harness bug: a test's supervising task failed: {e}"),
        }
    }
    queue.into_iter().map(|p| p.job).collect()
}
