//! The supervisor: by default a test binary does not run its tests itself.
//! It starts itself again as a worker ([`crate::worker`]), hands it the
//! selected tests, and reads each test's start and result as they happen.
//!
//! When the worker dies — an abort, a segfault, a stack overflow, a test
//! calling `exit()`, the OOM killer — the supervisor knows which tests were
//! in flight. It re-runs each of them alone in a fresh worker: the one that
//! kills its worker again is reported [`Outcome::Crashed`] with how it died
//! and the last lines it printed; the others keep their real outcome. The
//! tests not yet started go on in another fresh worker. Every selected test
//! thus ends with exactly one result, whatever happens to a process.
//!
//! SIGINT and SIGTERM are forwarded to every worker and to the host of
//! session fixtures; the supervisor then reports the unfinished tests
//! `not-run` and the run exits 130 or 143. A second SIGINT ends the
//! supervisor at once.
//!
//! Each worker runs in a process group of its own, and its event channel
//! is not inherited by what its tests start: the supervisor stops reading
//! at the worker's final event, and processes a test left behind are
//! reported as a leak and killed with the group (see [`LEAK_TIMEOUT`]).
//!
//! Not supervised: one test under `--exact` (nextest's way, one process per
//! test already), `--list`, and runs with `SERVICE_TEST_SUPERVISOR=0`.

mod host;
mod watchdog;

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use std::time::Instant;

use crate::env::{HOSTED_FILE_ENV, SEED_ENV, STARTED_MAP_ENV, STDOUT_FILE_ENV, WORKER_ENV};
use crate::events::Event;
use crate::events::{Outcome, TestRecord};

/// How many of a crashed test's last output lines its message keeps.
const CRASH_TAIL: usize = 30;

/// The signal that interrupted the run (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);
/// Every live child (workers, isolated or shared, and the host), for
/// forwarding signals.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Signals forwarded to `pid` from now until [`untrack`].
pub(crate) fn track(pid: i32) {
    CHILDREN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(pid);
}

/// `pid` has been reaped: no more signals to it.
pub(crate) fn untrack(pid: i32) {
    CHILDREN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|p| *p != pid);
}

/// Should this run be supervised?
pub(crate) fn wanted() -> bool {
    !crate::env::is_worker() && !crate::env::supervisor_off()
}

/// What the supervisor needs to start workers.
pub(crate) struct Plan {
    /// The tests, in the order to offer them.
    pub(crate) names: Vec<String>,
    /// This binary's own arguments, passed on to every worker.
    pub(crate) args: Vec<OsString>,
    /// The run seed, so every worker draws the same data.
    pub(crate) seed: u64,
    /// Start no new worker after this many failures.
    pub(crate) max_fail: Option<usize>,
    /// The tests that run each in a process of its own (a subset of `names`).
    pub(crate) isolated: HashSet<String>,
    /// How many isolated tests run at once.
    pub(crate) isolated_at_once: usize,
    /// Isolated tests that run alone, after the others (`exclusive`).
    pub(crate) exclusive: HashSet<String>,
    /// Each test's timeout: a worker still running a test this long after
    /// [`KILL_AFTER`] more is killed (SIGTERM, then SIGKILL).
    pub(crate) timeouts: std::collections::HashMap<String, Duration>,
    /// `--nocapture`: isolated tests print live instead of being captured.
    pub(crate) live_output: bool,
    /// How much of each stream of an isolated test is kept (its end).
    pub(crate) capture_limit: usize,
    /// How long processes left in a worker's group get to end before they
    /// are reported as a leak and killed.
    pub(crate) leak_timeout: Duration,
}

/// The default of [`Plan::leak_timeout`] (the profile's `leak-timeout`).
pub const LEAK_TIMEOUT: Duration = Duration::from_millis(500);

/// How many workers a test is handed to, at most, when they end without
/// its result (a worker that dies has its tests re-run alone instead).
const MAX_OFFERS: u32 = 3;

/// The run's error for processes a shared worker's tests left running:
/// each named with the tests that were running when it started (`windows`:
/// each test's run in milliseconds since the worker started).
fn leak_in_shared_worker(leaked: &[Leaked], windows: &[(String, u64, u64)]) -> String {
    // The worker counts from its set-up, a little after it was spawned,
    // and `/proc` dates processes to its clock ticks.
    const SLACK_MS: u64 = 50;
    let mut lines = vec![format!(
        "LEAK: {} process(es) were still running after their worker's tests ended; killed:",
        leaked.len()
    )];
    for l in leaked {
        let during: Vec<&str> = windows
            .iter()
            .filter(|(_, began, ended)| {
                l.started_ms
                    .is_some_and(|t| t + SLACK_MS >= *began && t <= *ended + SLACK_MS)
            })
            .map(|(name, _, _)| name.as_str())
            .collect();
        let by = match during.as_slice() {
            [] => "started while none of its tests ran (a fixture's?)".to_string(),
            [one] => format!("left by `{one}`"),
            many if many.len() <= 5 => format!("left by one of `{}`", many.join("`, `")),
            many => format!(
                "left by one of `{}` and {} more tests running then (--test-threads 1 or --isolation process names it)",
                many[..5].join("`, `"),
                many.len() - 5
            ),
        };
        lines.push(format!(
            "  {} — {by}",
            describe_leaked(std::slice::from_ref(l))
        ));
    }
    lines.join("\n")
}

/// How long past its timeout an isolated test's process may run (its own
/// timeout fires first; this is for one whose thread cannot be stopped).
pub const KILL_AFTER: Duration = Duration::from_secs(5);

/// How a supervised run ended.
pub(crate) struct Ended {
    /// Suite and session teardowns that failed, in any worker.
    pub(crate) teardown_failures: Vec<String>,
    /// The signal that interrupted the run, if one did.
    pub(crate) interrupted: Option<i32>,
}

/// Runs `plan` in workers, handing every record to `deliver` as it comes.
/// Tests left without a record (interrupted, or stopped by `max_fail`)
/// are the caller's to report.
pub(crate) fn run(plan: Plan, deliver: &mut dyn FnMut(TestRecord)) -> Ended {
    watch_signals();
    let mut pending: VecDeque<String> = plan
        .names
        .iter()
        .filter(|n| !plan.isolated.contains(*n))
        .cloned()
        .collect();
    let mut teardown_failures = Vec::new();
    let mut tally = Tally {
        delivered: HashSet::new(),
        failures: 0,
        sink: deliver,
    };
    // How many workers each test was handed to: one that keeps ending
    // without a result for it is not handed to another forever.
    let mut offered: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    while !pending.is_empty() && interrupted().is_none() {
        if plan.max_fail.is_some_and(|n| tally.failures >= n) {
            break;
        }
        let mut batch: Vec<String> = Vec::with_capacity(pending.len());
        for name in pending.drain(..) {
            let n = offered.entry(name.clone()).or_insert(0);
            *n += 1;
            if *n > MAX_OFFERS {
                tally.deliver(TestRecord {
                    attempts: 1,
                    ..TestRecord::without_run(
                        &name,
                        Outcome::Error(format!(
                            "harness: {MAX_OFFERS} worker processes ended without a result for this test; not run again"
                        )),
                    )
                });
            } else {
                batch.push(name);
            }
        }
        if batch.is_empty() {
            break;
        }
        let before = tally.delivered.len();
        let map = StartedMap::create(batch.len());
        // When each test ran, to name the ones a leaked process started under.
        let mut windows: Vec<(String, u64, u64)> = Vec::new();
        let result = run_worker(
            &plan,
            &batch,
            None,
            None,
            map.as_ref().map(|m| m.path.as_path()),
            None,
            &mut |event| match event {
                Event::Finished { record, ran_ms } => {
                    if let Some((began, ended)) = ran_ms {
                        windows.push((record.name.clone(), began, ended));
                    }
                    tally.deliver(record);
                }
                Event::Canaries { entries } => register_canaries(entries),
                // The end is read by `run_worker`.
                Event::Recycle { .. } | Event::Done { .. } => {}
            },
        );
        let result = match result {
            Ok((end, leaked)) => {
                if !leaked.is_empty() {
                    teardown_failures.push(leak_in_shared_worker(&leaked, &windows));
                }
                Ok(end)
            }
            Err(e) => Err(e),
        };
        // Started (marked in the map) but without a result.
        let in_flight: Vec<String> = match &map {
            Some(m) => m
                .started(&batch)
                .into_iter()
                .filter(|n| !tally.delivered.contains(n))
                .collect(),
            None => Vec::new(),
        };
        drop(map);
        match result {
            Ok(WorkerEnd::Done(failures)) => teardown_failures.extend(failures),
            Ok(WorkerEnd::Recycled(failures)) => {
                teardown_failures.extend(failures);
                eprintln!(
                    "service-test: a timed-out test left a thread blocked; the remaining tests go on in a fresh worker"
                );
            }
            Err(e) => {
                teardown_failures.push(format!("cannot start a worker process: {e}"));
                break;
            }
            Ok(WorkerEnd::Died(_) | WorkerEnd::Killed(_)) if interrupted().is_some() => break,
            Ok(WorkerEnd::Killed(_)) => unreachable!("the shared worker has no deadline"),
            Ok(WorkerEnd::Died(status)) => {
                let how = describe(status);
                eprintln!(
                    "service-test: the worker process died ({how}) with {} test(s) in flight; re-running each alone",
                    in_flight.len()
                );
                let progressed = tally.delivered.len() > before;
                for name in &in_flight {
                    if interrupted().is_some() {
                        break;
                    }
                    tally.deliver(run_alone(&plan, name, None, None));
                }
                if !progressed && in_flight.is_empty() {
                    // Died before starting any test: another worker would too.
                    let left: Vec<String> = batch
                        .iter()
                        .filter(|n| !tally.delivered.contains(*n))
                        .cloned()
                        .collect();
                    for name in left {
                        tally.deliver(crashed(
                            &name,
                            format!("the worker process died ({how}) before this test started"),
                        ));
                    }
                }
            }
        }
        // Whatever this worker did not finish goes to the next one.
        pending.extend(batch.into_iter().filter(|n| !tally.delivered.contains(n)));
    }
    run_isolated(&plan, &mut tally);
    Ended {
        teardown_failures,
        interrupted: interrupted(),
    }
}

/// Runs the isolated tests, `plan.isolated_at_once` processes at a time.
fn run_isolated(plan: &Plan, tally: &mut Tally<'_>) {
    let queue: Mutex<VecDeque<String>> = Mutex::new(
        plan.names
            .iter()
            .filter(|n| plan.isolated.contains(*n))
            .cloned()
            .collect(),
    );
    if queue
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_empty()
    {
        return;
    }
    // Two or more isolated tests share the hosted session fixtures.
    let isolated = queue.lock().unwrap_or_else(PoisonError::into_inner).len();
    let host = if isolated >= 2 && crate::fixture::any_registered() {
        match host::Host::start(&plan.args, plan.seed) {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!(
                    "service-test: hosting session fixtures failed ({e}); each isolated test sets up its own"
                );
                None
            }
        }
    } else {
        None
    };
    let hosted = host.as_ref().map(|h| h.file.as_path());
    let zygote = start_zygote(plan, isolated, hosted);
    let zygote = zygote.as_ref();
    // Exclusive ones wait for the shared ones, then run one at a time.
    let exclusive: VecDeque<String> = {
        let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
        let (alone, shared): (VecDeque<String>, VecDeque<String>) =
            q.drain(..).partition(|n| plan.exclusive.contains(n));
        *q = shared;
        alone
    };
    run_queue(plan, tally, &queue, plan.isolated_at_once, hosted, zygote);
    *queue.lock().unwrap_or_else(PoisonError::into_inner) = exclusive;
    run_queue(plan, tally, &queue, 1, hosted, zygote);
    drop(host);
}

/// A zygote to fork the isolated tests from (see [`crate::zygote`]), when
/// two or more are captured and forking is allowed; otherwise each starts
/// with exec, and the run says why once.
fn start_zygote(
    plan: &Plan,
    isolated: usize,
    hosted: Option<&std::path::Path>,
) -> Option<crate::zygote::Zygote> {
    if isolated < 2 {
        return None;
    }
    let exec_because = if plan.live_output {
        Some("--nocapture: each test's output goes to this terminal")
    } else if crate::env::fork_disabled() {
        Some("SERVICE_TEST_FORK=0")
    } else {
        None
    };
    if let Some(reason) = exec_because {
        eprintln!("service-test: isolated tests start with exec, not fork: {reason}");
        return None;
    }
    let mut env = vec![(SEED_ENV, OsString::from(plan.seed.to_string()))];
    if let Some(file) = hosted {
        env.push((HOSTED_FILE_ENV, file.as_os_str().to_owned()));
    }
    match crate::zygote::Zygote::start(&plan.args, &env) {
        Ok(z) => Some(z),
        Err(reason) => {
            eprintln!("service-test: isolated tests start with exec, not fork: {reason}");
            None
        }
    }
}

/// Runs the queued isolated tests, `at_once` processes at a time.
fn run_queue(
    plan: &Plan,
    tally: &mut Tally<'_>,
    queue: &Mutex<VecDeque<String>>,
    at_once: usize,
    hosted: Option<&std::path::Path>,
    zygote: Option<&crate::zygote::Zygote>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<TestRecord>();
    let failures = std::sync::atomic::AtomicUsize::new(tally.failures);
    std::thread::scope(|scope| {
        for _ in 0..at_once.max(1) {
            let (tx, failures) = (tx.clone(), &failures);
            scope.spawn(move || {
                loop {
                    if interrupted().is_some()
                        || plan
                            .max_fail
                            .is_some_and(|n| failures.load(Ordering::SeqCst) >= n)
                    {
                        return;
                    }
                    let next = queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    let Some(name) = next else { return };
                    let record = run_alone(plan, &name, hosted, zygote);
                    if record.outcome.is_failure() {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    if tx.send(record).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        for record in rx {
            tally.deliver(record);
        }
    });
}

/// Records delivered so far.
struct Tally<'a> {
    delivered: HashSet<String>,
    failures: usize,
    sink: &'a mut dyn FnMut(TestRecord),
}

impl Tally<'_> {
    fn deliver(&mut self, record: TestRecord) {
        if !self.delivered.insert(record.name.clone()) {
            return;
        }
        self.failures += usize::from(record.outcome.is_failure());
        (self.sink)(record);
    }
}

/// The most of each stream an isolated test's capture keeps (the end of
/// it, past this), unless the profile's `capture-limit` says otherwise.
pub const CAPTURE_LIMIT: usize = 4 << 20;

/// Where an isolated test's output goes while it runs: its stdout and its
/// stderr each to a private file (mode 0600), read when it ended. Files,
/// not pipes: a process the test leaves running cannot hold the run open.
struct Capture {
    stdout_file: std::path::PathBuf,
    stderr_file: std::path::PathBuf,
}

static CAPTURES: AtomicU64 = AtomicU64::new(0);

impl Capture {
    fn new() -> std::io::Result<Capture> {
        let stdout_file = private_file("stdout")?;
        match private_file("stderr") {
            Ok(stderr_file) => Ok(Capture {
                stdout_file,
                stderr_file,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&stdout_file);
                Err(e)
            }
        }
    }

    /// The two streams, each the last `limit` bytes at most, as safe text
    /// ([`crate::output::sanitize`]); the files are removed.
    fn finish(self, limit: usize) -> (String, String) {
        let read = |path: &std::path::Path| {
            let bytes = read_tail(path, limit).unwrap_or_default();
            let _ = std::fs::remove_file(path);
            crate::output::sanitize(&bytes)
        };
        (read(&self.stdout_file), read(&self.stderr_file))
    }
}

/// A new, empty file only this user can read, made here (a file planted at
/// the name fails this).
pub(crate) fn private_file(what: &str) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::temp_dir().join(format!(
        "service-test-{what}-{}-{}-{:016x}",
        std::process::id(),
        CAPTURES.fetch_add(1, Ordering::Relaxed),
        crate::seed::random_u64()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok(path)
}

/// The last `limit` bytes of a file, starting at a line when the cut
/// fell inside one.
fn read_tail(path: &std::path::Path, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let from = len.saturating_sub(limit as u64);
    f.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity(usize::try_from(len - from).unwrap_or(0));
    f.read_to_end(&mut bytes)?;
    if from > 0 {
        let start = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        let mut kept = format!("[… {} earlier bytes not kept]\n", from + start as u64).into_bytes();
        kept.extend_from_slice(&bytes[start..]);
        return Ok(kept);
    }
    Ok(bytes)
}

/// The last [`CRASH_TAIL`] lines of a stream, indented, under `title`.
fn tail_of(title: &str, text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(CRASH_TAIL);
    let mut t = format!("captured {title} (last {} lines):", lines.len() - from);
    for l in &lines[from..] {
        t.push_str("\n  ");
        t.push_str(l);
    }
    t
}

/// Runs one test in a worker of its own, its stdout and stderr captured
/// apart (unless `plan.live_output`): its own record with the output
/// attached if the process survives, [`Outcome::Crashed`] if it dies,
/// killed past its timeout if it hangs; failed with a leak if it left
/// processes running.
fn run_alone(
    plan: &Plan,
    name: &str,
    hosted: Option<&std::path::Path>,
    zygote: Option<&crate::zygote::Zygote>,
) -> TestRecord {
    let capture = if plan.live_output {
        None
    } else {
        match Capture::new() {
            Ok(c) => Some(c),
            Err(e) => {
                // Fail closed: a test whose output cannot be captured is
                // not run with its output on the console.
                return crashed(name, format!("cannot capture its output: {e}"));
            }
        }
    };
    let mut record = None;
    let deadline = plan.timeouts.get(name).map(|t| *t + KILL_AFTER);
    let mut on_event = |event| match event {
        Event::Finished { record: r, .. } => record = Some(r),
        Event::Canaries { entries } => register_canaries(entries),
        Event::Recycle { .. } | Event::Done { .. } => {}
    };
    let forked = match (zygote, capture.as_ref()) {
        (Some(z), Some(c)) => run_forked(plan, z, name, c, deadline, &mut on_event),
        _ => None,
    };
    let result = match forked {
        Some(result) => result,
        None => run_worker(
            plan,
            &[name.to_string()],
            capture.as_ref(),
            deadline,
            None,
            hosted,
            &mut on_event,
        ),
    };
    let captured = capture.map(|c| c.finish(plan.capture_limit));
    let tail = || match &captured {
        Some((out, err)) => format!("{}\n{}", tail_of("stderr", err), tail_of("stdout", out)),
        None => "its output went to the console (--nocapture)".to_string(),
    };
    let (result, leaked) = match result {
        Ok((end, leaked)) => (Ok(end), leaked),
        Err(e) => (Err(e), Vec::new()),
    };
    let mut record = match (result, record) {
        (_, Some(r)) => r,
        (Ok(WorkerEnd::Died(_)), None) if interrupted().is_some() => TestRecord::without_run(
            name,
            Outcome::NotRun("not run: the run was interrupted".to_string()),
        ),
        (Ok(WorkerEnd::Died(status)), None) => crashed(
            name,
            format!(
                "the test process died ({}) while this test ran alone\n{}",
                describe(status),
                tail()
            ),
        ),
        (Ok(WorkerEnd::Done(_) | WorkerEnd::Recycled(_)), None) => {
            crashed(name, "its worker ended without a result for it".to_string())
        }
        (Ok(WorkerEnd::Killed(after)), None) => TestRecord {
            outcome: Outcome::TimedOut(after),
            ..crashed(name, String::new())
        },
        (Err(e), None) => crashed(name, format!("cannot start a worker process: {e}")),
    };
    if let Some((out, err)) = captured {
        record.stdout = Some(out).filter(|t| !t.is_empty());
        record.stderr = Some(err).filter(|t| !t.is_empty());
    }
    if !leaked.is_empty() {
        let leak = format!(
            "LEAK: this test left {} process(es) running after it ended ({}); killed",
            leaked.len(),
            describe_leaked(&leaked)
        );
        record.outcome = match record.outcome {
            Outcome::Passed => Outcome::Failed(leak),
            other => other.map_message(|m| format!("{m}\n{leak}")),
        };
    }
    record
}

/// Values a worker registered: the supervisor redacts its output with them.
fn register_canaries(entries: Vec<(String, String)>) {
    for (kind, value) in entries {
        if let Some(kind) = phi::Kind::from_label(&kind) {
            phi::canaries().register(kind, &value);
        }
    }
}

/// The file a worker marks its started tests in (see [`crate::worker`]):
/// one zero byte per test, removed when dropped.
struct StartedMap {
    path: std::path::PathBuf,
}

impl StartedMap {
    /// A fresh map for `n` tests, in `/dev/shm` when there is one (it
    /// never touches a disk). None if it cannot be made: crashes are then
    /// attributed to no test, and the batch is re-run.
    fn create(n: usize) -> Option<StartedMap> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = Some(std::path::PathBuf::from("/dev/shm"))
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!(
            "service-test-started-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&path).ok()?;
        file.set_len(n.max(1) as u64).ok()?;
        Some(StartedMap { path })
    }

    /// The names whose byte the worker set.
    fn started(&self, names: &[String]) -> Vec<String> {
        let bytes = std::fs::read(&self.path).unwrap_or_default();
        names
            .iter()
            .zip(bytes)
            .filter(|(_, b)| *b != 0)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

impl Drop for StartedMap {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn crashed(name: &str, message: String) -> TestRecord {
    TestRecord {
        attempts: 1,
        ..TestRecord::without_run(name, Outcome::Crashed(message))
    }
}

enum WorkerEnd {
    /// Sent `Done`: every test it was given has a record.
    Done(Vec<String>),
    /// Sent `Recycle`: a test left a thread blocked; the tests it did not
    /// start go to a fresh worker.
    Recycled(Vec<String>),
    /// Ended without `Done`.
    Died(ExitStatus),
    /// Killed by the supervisor after running this long.
    Killed(Duration),
}

impl WorkerEnd {
    /// How a worker ended: its final event (`Recycle` with `true`) if it
    /// sent one, else killed after `killed_after` if its watchdog killed
    /// it, else died with `status`.
    fn of(
        done: Option<(Vec<String>, bool)>,
        killed_after: Option<Duration>,
        status: ExitStatus,
    ) -> WorkerEnd {
        match (done, killed_after) {
            (Some((failures, true)), _) => WorkerEnd::Recycled(failures),
            (Some((failures, false)), _) => WorkerEnd::Done(failures),
            (None, Some(after)) => WorkerEnd::Killed(after),
            (None, None) => WorkerEnd::Died(status),
        }
    }
}

/// How long a worker may take to exit after its final event before its
/// group is killed.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// Starts a worker for `names` in a process group of its own, feeds its
/// events to `on_event` until its final one (or its end), waits for it, and
/// returns how it ended with the processes left in its group (killed).
fn run_worker(
    plan: &Plan,
    names: &[String],
    capture: Option<&Capture>,
    deadline: Option<Duration>,
    started_map: Option<&std::path::Path>,
    hosted: Option<&std::path::Path>,
    on_event: &mut dyn FnMut(Event),
) -> std::io::Result<(WorkerEnd, Vec<Leaked>)> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    if let Some(map) = started_map {
        command.env(STARTED_MAP_ENV, map);
    }
    let stderr = match capture {
        Some(c) => {
            command.env(STDOUT_FILE_ENV, &c.stdout_file);
            Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&c.stderr_file)?,
            )
        }
        None => Stdio::inherit(),
    };
    if let Some(file) = hosted {
        command.env(HOSTED_FILE_ENV, file);
    }
    let mut child: Child = command
        .args(&plan.args)
        .env(WORKER_ENV, "1")
        .env(SEED_ENV, plan.seed.to_string())
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    track(pid);
    // `/proc` dates processes in clock ticks: a leaked one is dated from
    // the worker's start.
    let worker_ticks = start_ticks(pid);
    let watch = deadline.map(|after| watchdog::watch(pid, after));
    if let Some(mut stdin) = child.stdin.take() {
        let list: String = names.iter().map(|n| format!("{n}\n")).collect();
        // A worker that died at once is found below by its exit status.
        let _ = stdin.write_all(list.as_bytes());
    }
    let mut done = None;
    if let Some(stdout) = child.stdout.take() {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if let Some(end) = take_event(&line, on_event) {
                done = Some(end);
                break;
            }
        }
    }
    // After its final event a worker only exits; it gets a bounded time.
    let status = if done.is_some() {
        let until = Instant::now() + EXIT_GRACE;
        loop {
            match child.try_wait()? {
                Some(status) => break status,
                None if Instant::now() >= until => {
                    // SAFETY: signals our own child's group (its leader not
                    // yet reaped, so the id is not reused).
                    unsafe {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                    break child.wait()?;
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    } else {
        child.wait()?
    };
    untrack(pid);
    let killed = watch.is_some_and(watchdog::Watch::finish);
    let leaked = reap_group(pid, plan.leak_timeout, worker_ticks);
    let end = WorkerEnd::of(done, deadline.filter(|_| killed), status);
    Ok((end, leaked))
}

/// Hands one line of a worker's events to `on_event`; its final event
/// (`Done`, or `Recycle` with `true`) is returned instead.
fn take_event(line: &[u8], on_event: &mut dyn FnMut(Event)) -> Option<(Vec<String>, bool)> {
    match serde_json::from_slice::<Event>(line) {
        Ok(Event::Done { teardown_failures }) => Some((teardown_failures, false)),
        Ok(Event::Recycle { teardown_failures }) => Some((teardown_failures, true)),
        Ok(event) => {
            on_event(event);
            None
        }
        Err(e) => {
            match undecodable_result(line, &e) {
                Some(record) => on_event(Event::Finished {
                    record,
                    ran_ms: None,
                }),
                None => eprintln!(
                    "service-test: a worker sent a line that is not an event ({e}): {}",
                    crate::redaction::redact(&crate::output::sanitize_line(line, 0))
                ),
            }
            None
        }
    }
}

/// Runs one isolated test in a worker forked by `zygote`, as
/// [`run_worker`] does with exec: tracked for signals, killed by its
/// watchdog past `deadline`, its group reaped for leaks, its events read
/// from a private file once it has ended. `None` when the zygote could not
/// fork it (the caller starts it with exec).
fn run_forked(
    plan: &Plan,
    zygote: &crate::zygote::Zygote,
    name: &str,
    capture: &Capture,
    deadline: Option<Duration>,
    on_event: &mut dyn FnMut(Event),
) -> Option<std::io::Result<(WorkerEnd, Vec<Leaked>)>> {
    let events = private_file("events").ok()?;
    let mut watch = None;
    let mut worker_ticks = None;
    let ended = zygote.run(
        name,
        &capture.stdout_file,
        &capture.stderr_file,
        &events,
        &mut |pid| {
            track(pid);
            worker_ticks = start_ticks(pid);
            watch = deadline.map(|after| watchdog::watch(pid, after));
        },
    );
    let (pid, status) = match ended {
        crate::zygote::Ended::Exited { pid, status } => (pid, status),
        crate::zygote::Ended::Lost { pid } => {
            // Run again with exec, from empty files: what it printed and
            // sent so far belonged to a run that was cut short.
            untrack(pid);
            drop(watch);
            let _ = reap_group(pid, Duration::ZERO, worker_ticks);
            let _ = std::fs::remove_file(&events);
            for file in [&capture.stdout_file, &capture.stderr_file] {
                let _ = std::fs::File::create(file);
            }
            static LOST: std::sync::Once = std::sync::Once::new();
            LOST.call_once(|| {
                eprintln!(
                    "service-test: the zygote ended while tests ran; they run again, started with exec"
                );
            });
            return None;
        }
        crate::zygote::Ended::Unavailable(reason) => {
            let _ = std::fs::remove_file(&events);
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!("service-test: starting isolated tests with exec from here: {reason}");
            });
            return None;
        }
    };
    untrack(pid);
    let killed = watch.is_some_and(watchdog::Watch::finish);
    let leaked = reap_group(pid, plan.leak_timeout, worker_ticks);
    let lines = std::fs::read(&events).unwrap_or_default();
    let _ = std::fs::remove_file(&events);
    let mut done = None;
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if let Some(end) = take_event(line, on_event) {
            done = Some(end);
            break;
        }
    }
    let end = WorkerEnd::of(done, deadline.filter(|_| killed), status);
    Some(Ok((end, leaked)))
}

/// A result line that does not decode is an error for its test, once (it
/// is never re-run: the same test would send the same line). `None` when
/// the line does not even name a test.
fn undecodable_result(line: &[u8], error: &serde_json::Error) -> Option<TestRecord> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let name = value.get("record")?.get("name")?.as_str()?;
    Some(TestRecord {
        attempts: 1,
        ..TestRecord::without_run(
            name,
            Outcome::Error(format!(
                "harness: this test's result could not be decoded ({error}); it is not re-run"
            )),
        )
    })
}

/// A process left in a worker's group after the worker ended.
pub(crate) struct Leaked {
    pid: i32,
    command: String,
    /// When it started, in milliseconds since its worker did (as far as
    /// `/proc`'s clock ticks tell).
    started_ms: Option<u64>,
}

/// `pid 4242 (sleep), pid 4243 (sh)`.
fn describe_leaked(leaked: &[Leaked]) -> String {
    leaked
        .iter()
        .map(|l| format!("pid {} ({})", l.pid, crate::redaction::redact(&l.command)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits up to `grace` for the processes left in group `pgid` to end, then
/// kills the group; returns the ones that had to be killed, dated from
/// `worker_ticks` (the worker's start, in `/proc`'s clock ticks).
fn reap_group(pgid: i32, grace: Duration, worker_ticks: Option<u64>) -> Vec<Leaked> {
    let until = Instant::now() + grace;
    loop {
        // SAFETY: signal 0 only asks whether the group has any process.
        let any = pgid > 0 && unsafe { libc::kill(-pgid, 0) } == 0;
        let left = if any {
            group_members(pgid, worker_ticks)
        } else {
            Vec::new()
        };
        if left.is_empty() {
            return left;
        }
        if Instant::now() >= until {
            // SAFETY: the group was ours; its leader is reaped and every
            // member left is a process one of our tests started.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `pid 4242 (sleep) state ...` after the command's closing parenthesis
/// (the command may hold anything), split into fields: state, ppid, pgrp,
/// ..., start time (the 20th).
fn stat_fields(pid: i32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields = stat[close + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Some((stat[open + 1..close].to_string(), fields))
}

/// When `pid` started, in clock ticks since boot.
fn start_ticks(pid: i32) -> Option<u64> {
    stat_fields(pid)?.1.get(19)?.parse().ok()
}

/// The live processes (not zombies) of group `pgid`, from `/proc`.
fn group_members(pgid: i32, worker_ticks: Option<u64>) -> Vec<Leaked> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // SAFETY: a plain sysconf query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Some((command, fields)) = stat_fields(pid) else {
            continue;
        };
        let (Some(state), Some(group)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        if state == "Z" || group.parse::<i32>().ok() != Some(pgid) {
            continue;
        }
        let started_ms = fields
            .get(19)
            .and_then(|t| t.parse::<u64>().ok())
            .zip(worker_ticks)
            .map(|(ticks, base)| (ticks.saturating_sub(base) as f64 * 1000.0 / hz) as u64);
        out.push(Leaked {
            pid,
            command,
            started_ms,
        });
    }
    out
}

/// "signal 6 (SIGABRT)", "exit code 0".
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.signal(), status.code()) {
        (Some(sig), _) => {
            let name = match sig {
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGILL => " (SIGILL)",
                libc::SIGFPE => " (SIGFPE)",
                libc::SIGKILL => " (SIGKILL: the OOM killer, or a kill -9)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGINT => " (SIGINT)",
                _ => "",
            };
            format!("signal {sig}{name}")
        }
        (None, Some(code)) => format!("exit code {code}"),
        (None, None) => "no exit status".to_string(),
    }
}

fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Catches SIGINT and SIGTERM (on a thread of its own): the first is
/// passed to the worker and stops the run; a second SIGINT ends it at once.
fn watch_signals() {
    static WATCHING: std::sync::Once = std::sync::Once::new();
    WATCHING.call_once(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        else {
            return;
        };
        // Register the handlers here, before any worker starts.
        let _guard = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let watch = async move {
            loop {
                let sig = tokio::select! {
                    _ = int.recv() => libc::SIGINT,
                    _ = term.recv() => libc::SIGTERM,
                };
                if INTERRUPTED.swap(sig, Ordering::SeqCst) != 0 && sig == libc::SIGINT {
                    eprintln!("service-test: second SIGINT: stopping now");
                    std::process::exit(130);
                }
                let children = CHILDREN
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                for pid in children.into_iter().filter(|p| *p > 0) {
                    // SAFETY: signals our own child, not reaped yet (it
                    // leaves the list before it is waited for).
                    unsafe {
                        libc::kill(pid, sig);
                    }
                }
            }
        };
        drop(_guard);
        std::thread::spawn(move || rt.block_on(watch));
    });
}
