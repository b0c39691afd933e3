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
//! SIGINT and SIGTERM are forwarded to the worker; the supervisor then
//! reports the unfinished tests `not-run` and the run exits 130 or 143. A
//! second SIGINT ends the supervisor at once.
//!
//! Not supervised: one test under `--exact` (nextest's way, one process per
//! test already), `--list`, and runs with `SERVICE_TEST_SUPERVISOR=0`.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::execute::{Outcome, TestRecord};
use crate::worker::{Event, WORKER_ENV};

/// Set to `0` to run tests in this process, without a supervisor.
pub const SUPERVISOR_ENV: &str = "SERVICE_TEST_SUPERVISOR";

/// How many of a crashed test's last output lines its message keeps.
const CRASH_TAIL: usize = 30;

/// The signal that interrupted the run (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);
/// The running worker's pid (0: none), for forwarding signals.
static WORKER_PID: AtomicI32 = AtomicI32::new(0);

/// Should this run be supervised?
pub(crate) fn wanted() -> bool {
    !crate::worker::is_worker() && std::env::var_os(SUPERVISOR_ENV).is_none_or(|v| v != "0")
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
    while !pending.is_empty() && interrupted().is_none() {
        if plan.max_fail.is_some_and(|n| tally.failures >= n) {
            break;
        }
        let batch: Vec<String> = pending.drain(..).collect();
        let before = tally.delivered.len();
        let map = StartedMap::create(batch.len());
        let result = run_worker(
            &plan,
            &batch,
            None,
            None,
            map.as_ref().map(|m| m.path.as_path()),
            None,
            &mut |event| match event {
                Event::Finished { record } => tally.deliver(record),
                // Only an isolated worker sends its canaries; the end is
                // read by `run_worker`.
                Event::Canaries { .. } | Event::Recycle { .. } | Event::Done { .. } => {}
            },
        );
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
                    tally.deliver(run_alone(&plan, name, None));
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
    let host = if isolated >= 2 && crate::host::any_registered() {
        match crate::host::Host::start(&plan.args, plan.seed) {
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
    // Exclusive ones wait for the shared ones, then run one at a time.
    let exclusive: VecDeque<String> = {
        let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
        let (alone, shared): (VecDeque<String>, VecDeque<String>) =
            q.drain(..).partition(|n| plan.exclusive.contains(n));
        *q = shared;
        alone
    };
    run_queue(plan, tally, &queue, plan.isolated_at_once, hosted);
    *queue.lock().unwrap_or_else(PoisonError::into_inner) = exclusive;
    run_queue(plan, tally, &queue, 1, hosted);
    drop(host);
}

/// Runs the queued isolated tests, `at_once` processes at a time.
fn run_queue(
    plan: &Plan,
    tally: &mut Tally<'_>,
    queue: &Mutex<VecDeque<String>>,
    at_once: usize,
    hosted: Option<&std::path::Path>,
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
                    let record = run_alone(plan, &name, hosted);
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

/// The most of each stream an isolated test's capture keeps (the end of it,
/// past this).
const CAPTURE_LIMIT: usize = 4 << 20;

/// Where an isolated test's output goes while it runs: its stdout to a
/// private file (mode 0600) the worker points file descriptor 1 at, its
/// stderr through a pipe into memory.
struct Capture {
    stdout_file: std::path::PathBuf,
    stderr: Arc<Mutex<String>>,
}

static CAPTURES: AtomicU64 = AtomicU64::new(0);

impl Capture {
    fn new() -> std::io::Result<Capture> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!(
            "service-test-stdout-{}-{}-{:016x}",
            std::process::id(),
            CAPTURES.fetch_add(1, Ordering::Relaxed),
            crate::host::random_u64()
        ));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Capture {
            stdout_file: path,
            stderr: Arc::default(),
        })
    }

    /// The two streams, each at most [`CAPTURE_LIMIT`] (its end); the file
    /// is removed.
    fn finish(self) -> (String, String) {
        let stdout = std::fs::read(&self.stdout_file).unwrap_or_default();
        let _ = std::fs::remove_file(&self.stdout_file);
        let from = stdout.len().saturating_sub(CAPTURE_LIMIT);
        let stdout = String::from_utf8_lossy(&stdout[from..]).into_owned();
        let stderr =
            std::mem::take(&mut *self.stderr.lock().unwrap_or_else(PoisonError::into_inner));
        (stdout, stderr)
    }
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
/// killed past its timeout if it hangs.
fn run_alone(plan: &Plan, name: &str, hosted: Option<&std::path::Path>) -> TestRecord {
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
    let result = run_worker(
        plan,
        &[name.to_string()],
        capture.as_ref(),
        deadline,
        None,
        hosted,
        &mut |event| match event {
            Event::Finished { record: r } => record = Some(r),
            // The test's generated values: found in its printed output too
            // (registered here, in the supervisor, which runs no test).
            Event::Canaries { entries } => {
                for (kind, value) in entries {
                    if let Some(kind) = phi::Kind::from_label(&kind) {
                        phi::canaries().register(kind, &value);
                    }
                }
            }
            Event::Recycle { .. } | Event::Done { .. } => {}
        },
    );
    let captured = capture.map(Capture::finish);
    let tail = || match &captured {
        Some((out, err)) => format!("{}\n{}", tail_of("stderr", err), tail_of("stdout", out)),
        None => "its output went to the console (--nocapture)".to_string(),
    };
    let mut record = match (result, record) {
        (_, Some(r)) => r,
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
    record
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

/// Starts a worker for `names`, feeds its events to `on_event` until it
/// ends. With `capture`, its standard error is kept (the last lines) rather
/// than shown.
fn run_worker(
    plan: &Plan,
    names: &[String],
    capture: Option<&Capture>,
    deadline: Option<Duration>,
    started_map: Option<&std::path::Path>,
    hosted: Option<&std::path::Path>,
    on_event: &mut dyn FnMut(Event),
) -> std::io::Result<WorkerEnd> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    if let Some(map) = started_map {
        command.env(crate::worker::STARTED_MAP_ENV, map);
    }
    if let Some(c) = capture {
        command.env(crate::worker::STDOUT_FILE_ENV, &c.stdout_file);
    }
    if let Some(file) = hosted {
        command.env(crate::host::HOSTED_FILE_ENV, file);
    }
    let mut child: Child = command
        .args(&plan.args)
        .env(WORKER_ENV, "1")
        .env(crate::cli::SEED_ENV, plan.seed.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if capture.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn()?;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    if deadline.is_none() {
        // The shared worker: signals are forwarded to it.
        WORKER_PID.store(pid, Ordering::SeqCst);
    }
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(after) = deadline {
        let (finished, killed) = (finished.clone(), killed.clone());
        std::thread::spawn(move || watchdog(pid, after, &finished, &killed));
    }
    if let Some(mut stdin) = child.stdin.take() {
        let list: String = names.iter().map(|n| format!("{n}\n")).collect();
        // A worker that died at once is found below by its exit status.
        let _ = stdin.write_all(list.as_bytes());
    }
    let stderr_reader = match (capture, child.stderr.take()) {
        (Some(c), Some(stderr)) => {
            let keep = Arc::clone(&c.stderr);
            Some(std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut k = keep.lock().unwrap_or_else(PoisonError::into_inner);
                    k.push_str(&line);
                    k.push('\n');
                    if k.len() > 2 * CAPTURE_LIMIT {
                        // Keep the end: a cut at a character boundary.
                        let mut cut = k.len() - CAPTURE_LIMIT;
                        while !k.is_char_boundary(cut) {
                            cut += 1;
                        }
                        k.drain(..cut);
                    }
                }
            }))
        }
        _ => None,
    };
    let mut done = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match serde_json::from_str::<Event>(&line) {
                Ok(Event::Done { teardown_failures }) => done = Some((teardown_failures, false)),
                Ok(Event::Recycle { teardown_failures }) => {
                    done = Some((teardown_failures, true));
                }
                Ok(event) => on_event(event),
                Err(_) => eprintln!("{line}"),
            }
        }
    }
    let status = child.wait()?;
    finished.store(true, Ordering::SeqCst);
    if deadline.is_none() {
        WORKER_PID.store(0, Ordering::SeqCst);
    }
    if let Some(t) = stderr_reader {
        let _ = t.join();
    }
    Ok(match (done, deadline) {
        (Some((failures, true)), _) => WorkerEnd::Recycled(failures),
        (Some((failures, false)), _) => WorkerEnd::Done(failures),
        (None, Some(after)) if killed.load(Ordering::SeqCst) => WorkerEnd::Killed(after),
        (None, _) => WorkerEnd::Died(status),
    })
}

/// Kills worker `pid` if it still runs `after` from now: SIGTERM, then
/// SIGKILL two seconds later.
fn watchdog(
    pid: i32,
    after: Duration,
    finished: &std::sync::atomic::AtomicBool,
    killed: &std::sync::atomic::AtomicBool,
) {
    let start = std::time::Instant::now();
    while start.elapsed() < after {
        if finished.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (sig, wait) in [
        (libc::SIGTERM, Duration::from_secs(2)),
        (libc::SIGKILL, Duration::ZERO),
    ] {
        if finished.load(Ordering::SeqCst) {
            return;
        }
        killed.store(true, Ordering::SeqCst);
        // SAFETY: signals our own child, which has not been reaped yet
        // (`finished` is set only after `wait` returns).
        unsafe {
            libc::kill(pid, sig);
        }
        std::thread::sleep(wait);
    }
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
                let pid = WORKER_PID.load(Ordering::SeqCst);
                if pid > 0 {
                    // SAFETY: sends a signal to our own child.
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
