//! The worker side of a supervised run: the test binary, started again by
//! its supervisor (see [`crate::supervisor`]) with [`WORKER_ENV`](crate::env::WORKER_ENV) set,
//! runs the tests named on its standard input in process and reports each
//! as it starts and finishes, one JSON [`Event`] a line.
//!
//! Events travel on the worker's original standard output; the worker
//! points its own file descriptor 1 at standard error first, so whatever a
//! test prints cannot corrupt the channel. A shared worker's are buffered
//! and flushed every [`FLUSH_EVERY`] (and at the end), so a pipe write per
//! test does not slow a run of no-op tests; a worker of one isolated test
//! writes each of its few events at once.
//!
//! Which tests have *started* must survive a crash without a write per
//! test: the supervisor hands the worker a file ([`STARTED_MAP_ENV`](crate::env::STARTED_MAP_ENV), one
//! byte per test in the order given), which the worker maps into memory
//! and marks as each test starts. A store to a shared mapping outlives the
//! process; a result still in the buffer when the process dies is lost,
//! and its test, started but unfinished, is re-run alone.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::FromRawFd;
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::events::Event;

/// How often buffered events are flushed to the supervisor.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

static CHANNEL: OnceLock<Mutex<std::io::BufWriter<File>>> = OnceLock::new();

/// The started-tests map: its memory and each test's byte in it.
struct StartedMap {
    bytes: *mut u8,
    len: usize,
    index: std::collections::HashMap<String, usize>,
}

// SAFETY: the mapping lives until the process ends (never unmapped), and
// each byte is only ever set to 1 with a volatile store.
unsafe impl Send for StartedMap {}
unsafe impl Sync for StartedMap {}

static STARTED: OnceLock<StartedMap> = OnceLock::new();
static STARTED_PATH: OnceLock<std::path::PathBuf> = OnceLock::new();

/// When this worker set itself up.
static STARTED_AT: OnceLock<std::time::Instant> = OnceLock::new();

/// When each test began (set by [`started`]).
static BEGAN: Mutex<Option<std::collections::HashMap<String, std::time::Instant>>> =
    Mutex::new(None);

/// When test `name`, which ran for `duration`, began and ended, in
/// milliseconds since this worker set itself up (`None` outside a worker).
pub(crate) fn ran_ms(name: &str, duration: std::time::Duration) -> Option<(u64, u64)> {
    let start = STARTED_AT.get()?;
    let began = BEGAN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()?
        .remove(name)?;
    let began = began.saturating_duration_since(*start);
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Some((ms(began), ms(began + duration)))
}

/// Is this worker running one isolated test (its output captured by the
/// supervisor)?
pub(crate) fn is_isolated() -> bool {
    ISOLATED.get().copied().unwrap_or(false)
}

static ISOLATED: OnceLock<bool> = OnceLock::new();

static RECYCLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A timed-out test is still holding a runtime thread: in a worker, start
/// no more tests here (the supervisor goes on in a fresh worker, with all
/// its threads).
pub(crate) fn thread_stuck() {
    if CHANNEL.get().is_some() {
        RECYCLE.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Is this worker winding down to be replaced?
pub(crate) fn recycling() -> bool {
    RECYCLE.load(std::sync::atomic::Ordering::SeqCst)
}

/// Takes standard output as the event channel and points file descriptor
/// 1 at the file the supervisor named in [`STDOUT_FILE_ENV`](crate::env::STDOUT_FILE_ENV) (an isolated
/// test: its stdout is captured apart from its stderr), else at standard
/// error. Also asks the kernel to kill this process when its
/// supervisor dies, so a worker (and the private instances it started)
/// never outlives the run.
///
/// The variables the supervisor set for this worker ([`WORKER_ENV`](crate::env::WORKER_ENV), the
/// seed) are removed, so processes the tests start do not inherit them.
pub(crate) fn install() -> std::io::Result<()> {
    let _ = STARTED_AT.set(std::time::Instant::now());
    // SAFETY: called first thing in a worker, before its runtime or any
    // other thread exists, so nothing reads the environment concurrently.
    unsafe {
        if let Some(path) = crate::env::started_map() {
            let _ = STARTED_PATH.set(path.into());
        }
        crate::env::forget_worker_vars();
    }
    // SAFETY: plain descriptor calls on this process's own descriptors 1
    // and 2; the duplicate is owned by the `File` from here on.
    let stdout_file = crate::env::stdout_file();
    let _ = ISOLATED.set(stdout_file.is_some());
    // SAFETY: as above.
    unsafe { crate::env::forget_stdout_file() };
    // The test's own standard output: a file of the supervisor's (kept
    // apart from standard error), else standard error.
    let test_stdout = match stdout_file {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", std::path::Path::new(&path).display()),
                    )
                })?,
        ),
        None => None,
    };
    let captured = test_stdout.is_some();
    let channel = unsafe {
        use std::os::fd::AsRawFd;
        let target = test_stdout.as_ref().map_or(2, |f| f.as_raw_fd());
        // Close-on-exec: a process a test starts (and leaves running) must
        // not hold the channel open, or the supervisor would wait for it.
        let fd = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 || libc::dup2(target, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        #[cfg(target_os = "linux")]
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        File::from_raw_fd(fd)
    };
    let _ = CHANNEL.set(Mutex::new(std::io::BufWriter::new(channel)));
    if captured {
        // An isolated test's output is captured raw by the supervisor: each
        // value the test generates goes there at once (`emit` flushes
        // every event of an isolated worker), before the test can print
        // it, to redact that output with.
        phi::on_register(|kind, value| {
            emit(&Event::Canaries {
                entries: vec![(kind.label().to_string(), value.to_string())],
            });
        });
    } else {
        // Output the supervisor does not capture (a shared worker's, or an
        // isolated test's under --nocapture) is redacted here, where the
        // values were generated; its events are flushed in bulk.
        crate::output::install()?;
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                flush();
            }
        });
    }
    Ok(())
}

/// Maps the started-tests file the supervisor named, for `names` (the
/// order the supervisor gave them). Without one, starts are not recorded.
pub(crate) fn map_started(names: &[String]) -> std::io::Result<()> {
    let Some(path) = STARTED_PATH.get() else {
        return Ok(());
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(0);
    if len == 0 || len < names.len() {
        return Ok(());
    }
    use std::os::fd::AsRawFd;
    // SAFETY: a shared, writable mapping of a file we opened read-write, of
    // its whole length; it is never unmapped, and the file may be closed.
    let bytes = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if bytes == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let index = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    let _ = STARTED.set(StartedMap {
        bytes: bytes.cast(),
        len,
        index,
    });
    Ok(())
}

/// Marks `name` started in the supervisor's map (nothing outside a worker).
pub(crate) fn started(name: &str) {
    if STARTED_AT.get().is_some() {
        BEGAN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(Default::default)
            .insert(name.to_string(), std::time::Instant::now());
    }
    let Some(map) = STARTED.get() else {
        return;
    };
    if let Some(&i) = map.index.get(name) {
        if i < map.len {
            // SAFETY: `i` is inside the mapping, which outlives every test.
            unsafe { map.bytes.add(i).write_volatile(1) };
        }
    }
}

/// Sends what is buffered to the supervisor.
pub(crate) fn flush() {
    if let Some(channel) = CHANNEL.get() {
        let _ = channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush();
    }
}

/// Queues one event for the supervisor (nothing outside a worker); `Done`
/// is flushed at once, and so is every event of a worker running one
/// isolated test (its result, its canaries: a handful, and no flushing
/// thread to start for them).
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
    let _ = ch.write_all(line.as_bytes());
    if is_isolated() || matches!(event, Event::Done { .. } | Event::Recycle { .. }) {
        let _ = ch.flush();
    }
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
