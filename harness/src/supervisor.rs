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
use std::sync::atomic::{AtomicI32, Ordering};
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
}

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
    let mut pending: VecDeque<String> = plan.names.iter().cloned().collect();
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
        let mut in_flight: Vec<String> = Vec::new();
        let before = tally.delivered.len();
        let result = run_worker(&plan, &batch, None, &mut |event| match event {
            Event::Started { name } => in_flight.push(name),
            Event::Finished { record } => {
                in_flight.retain(|n| *n != record.name);
                tally.deliver(record);
            }
            Event::Done { .. } => {}
        });
        match result {
            Ok(WorkerEnd::Done(failures)) => teardown_failures.extend(failures),
            Err(e) => {
                teardown_failures.push(format!("cannot start a worker process: {e}"));
                break;
            }
            Ok(WorkerEnd::Died(_)) if interrupted().is_some() => break,
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
                    rerun_alone(&plan, name, &mut |r| tally.deliver(r));
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
    Ended {
        teardown_failures,
        interrupted: interrupted(),
    }
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

/// Runs one test in a worker of its own, capturing its output: its real
/// record if it survives, [`Outcome::Crashed`] if it kills this worker too.
fn rerun_alone(plan: &Plan, name: &str, deliver: &mut dyn FnMut(TestRecord)) {
    let output = Arc::new(Mutex::new(VecDeque::new()));
    let mut record = None;
    let result = run_worker(
        plan,
        &[name.to_string()],
        Some(output.clone()),
        &mut |event| {
            if let Event::Finished { record: r } = event {
                record = Some(r);
            }
        },
    );
    let tail = || {
        let lines = output.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = format!("captured output (last {} lines):", lines.len());
        for l in lines.iter() {
            text.push_str("\n  ");
            text.push_str(l);
        }
        text
    };
    match (result, record) {
        (_, Some(r)) => deliver(r),
        (Ok(WorkerEnd::Died(status)), None) => deliver(crashed(
            name,
            format!(
                "the test process died ({}) while this test ran alone\n{}",
                describe(status),
                tail()
            ),
        )),
        (Ok(WorkerEnd::Done(_)), None) => deliver(crashed(
            name,
            "its worker ended without a result for it".to_string(),
        )),
        (Err(e), None) => deliver(crashed(name, format!("cannot start a worker process: {e}"))),
    }
}

fn crashed(name: &str, message: String) -> TestRecord {
    TestRecord {
        name: name.to_string(),
        outcome: Outcome::Crashed(message),
        attempts: 1,
        flaky: false,
        earlier_failures: Vec::new(),
        duration: Duration::ZERO,
        metrics: Vec::new(),
        slow: false,
    }
}

enum WorkerEnd {
    /// Sent `Done`: every test it was given has a record.
    Done(Vec<String>),
    /// Ended without `Done`.
    Died(ExitStatus),
}

/// Starts a worker for `names`, feeds its events to `on_event` until it
/// ends. With `capture`, its standard error is kept (the last lines) rather
/// than shown.
fn run_worker(
    plan: &Plan,
    names: &[String],
    capture: Option<Arc<Mutex<VecDeque<String>>>>,
    on_event: &mut dyn FnMut(Event),
) -> std::io::Result<WorkerEnd> {
    let exe = std::env::current_exe()?;
    let mut child: Child = Command::new(exe)
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
    WORKER_PID.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
    if let Some(mut stdin) = child.stdin.take() {
        let list: String = names.iter().map(|n| format!("{n}\n")).collect();
        // A worker that died at once is found below by its exit status.
        let _ = stdin.write_all(list.as_bytes());
    }
    let stderr_reader = match (capture, child.stderr.take()) {
        (Some(keep), Some(stderr)) => Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut k = keep.lock().unwrap_or_else(PoisonError::into_inner);
                k.push_back(line);
                if k.len() > CRASH_TAIL {
                    k.pop_front();
                }
            }
        })),
        _ => None,
    };
    let mut done = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match serde_json::from_str::<Event>(&line) {
                Ok(Event::Done { teardown_failures }) => done = Some(teardown_failures),
                Ok(event) => on_event(event),
                Err(_) => eprintln!("{line}"),
            }
        }
    }
    let status = child.wait()?;
    WORKER_PID.store(0, Ordering::SeqCst);
    if let Some(t) = stderr_reader {
        let _ = t.join();
    }
    Ok(match done {
        Some(failures) => WorkerEnd::Done(failures),
        None => WorkerEnd::Died(status),
    })
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
