//! Isolation at fork speed: a zygote forks a worker per isolated test.
//!
//! Starting an isolated test used to cost a process start: exec the test
//! binary, load it, parse the command line, read the config file, then run
//! one test. The zygote pays that once. The supervisor starts the test
//! binary with [`ZYGOTE_ENV`](crate::env::ZYGOTE_ENV); the binary gets as far as a worker would
//! (arguments parsed, config read, no thread and no runtime yet) and then,
//! instead of running tests, waits on its standard input for requests. For
//! each it forks: the child sets up exactly what an exec'd worker finds
//! (a process group of its own; its stderr, its stdout and its event
//! channel on the supervisor's private files; the test's name on its
//! standard input; [`crate::env::WORKER_ENV`] set) and returns into the
//! ordinary worker path, which builds its own runtime and runs the test.
//! The zygote reaps the child and tells the supervisor how it ended.
//!
//! Every guarantee of isolation stays: the child is still a process of its
//! own in a group of its own, so the watchdog's hard kill, crash naming
//! from the wait status, leak reaping by group, capture into files and
//! hosted session fixtures (the hosted file is in the zygote's environment)
//! work as they do for an exec'd worker. Events go to a file read when the
//! child has ended (the child's results survive its crash as far as they
//! were flushed, as on the pipe).
//!
//! Fork is only safe with one thread: a zygote that finds more (a test
//! binary that starts threads before `main`) refuses, and so does a run
//! with `SERVICE_TEST_FORK=0` or `--nocapture` (the child's output would
//! need the supervisor's terminal); the supervisor then starts each
//! isolated test with exec, as before, and says why once.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::env::ZYGOTE_ENV;

/// One isolated test to fork, as the supervisor asks for it.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: u64,
    name: String,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
    events: std::path::PathBuf,
}

/// What the zygote tells the supervisor, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
enum Reply {
    /// Set up and single-threaded: requests may come.
    Ready,
    /// It cannot fork safely; the supervisor uses exec.
    Refused { reason: String },
    /// Request `id` runs as process `pid` (its group's leader).
    Forked { id: u64, pid: i32 },
    /// The fork for request `id` failed.
    Failed { id: u64, error: String },
    /// Process `pid` (request `id`) ended with this raw wait status.
    Exited { id: u64, status: i32 },
}

// ---------------------------------------------------------------- zygote side

/// How [`serve`] ended, in this process.
pub(crate) enum Served {
    /// This is a forked child, set up as a worker: run as one.
    Child,
    /// The zygote's work is over: exit with this code.
    Exit(u8),
}

/// The zygote's loop. Returns in each forked child (as [`Served::Child`])
/// and, in the zygote itself, once its input has closed and every child
/// has been reaped.
pub(crate) fn serve() -> Served {
    // A zygote never outlives its supervisor.
    #[cfg(target_os = "linux")]
    // SAFETY: sets this process's own parent-death signal.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    if let Some(reason) = unsafe_to_fork() {
        reply(&Reply::Refused { reason });
        return Served::Exit(0);
    }
    // SIGINT and SIGTERM are for the tests, which the supervisor signals
    // itself (each winds down and tears its fixtures down); the zygote
    // ends when its input closes, or with the supervisor (parent-death
    // signal). Its children get the default dispositions back.
    // SAFETY: sets this process's own dispositions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    let Some(wake) = SelfPipe::install() else {
        reply(&Reply::Refused {
            reason: format!(
                "cannot watch for ended children: {}",
                std::io::Error::last_os_error()
            ),
        });
        return Served::Exit(0);
    };
    // What every child would otherwise work out again: its test among all
    // registered ones, the machine's cores, the binary's name; and what it
    // would set up again: the capturing `tracing` subscriber and `log`
    // logger, installed as each child would install them first thing (no
    // thread is started, and nothing of the test's has run yet).
    crate::registry::warm_index();
    crate::schedule::cores();
    crate::history::binary_name();
    crate::capture::install();
    reply(&Reply::Ready);
    let mut input = Vec::new();
    let mut open = true;
    let mut running: HashMap<i32, u64> = HashMap::new();
    loop {
        reap(&mut running);
        if !open && running.is_empty() {
            return Served::Exit(0);
        }
        let mut fds = [
            libc::pollfd {
                fd: if open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.read,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfd entries.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            continue; // EINTR: SIGCHLD arrived.
        }
        if fds[1].revents != 0 {
            wake.drain();
        }
        if open && fds[0].revents != 0 {
            let mut buf = [0u8; 8192];
            // SAFETY: reads into a buffer of its length.
            let got = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                open = got < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
                continue;
            }
            input.extend_from_slice(&buf[..usize::try_from(got).unwrap_or(0)]);
            while let Some(end) = input.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = input.drain(..=end).collect();
                let Ok(request) = serde_json::from_slice::<Request>(&line) else {
                    continue;
                };
                match fork_for(&request, &wake) {
                    Ok(Some(pid)) => {
                        running.insert(pid, request.id);
                        reply(&Reply::Forked {
                            id: request.id,
                            pid,
                        });
                    }
                    Ok(None) => return Served::Child,
                    Err(e) => reply(&Reply::Failed {
                        id: request.id,
                        error: e.to_string(),
                    }),
                }
            }
        }
    }
}

/// Why this process must not fork (more than one thread), if so.
fn unsafe_to_fork() -> Option<String> {
    match std::fs::read_dir("/proc/self/task") {
        Ok(tasks) => {
            let n = tasks.count();
            (n != 1).then(|| {
                format!("the test binary runs {n} threads before its tests start, and fork copies only one")
            })
        }
        Err(e) => Some(format!(
            "cannot count this process's threads (/proc/self/task: {e})"
        )),
    }
}

/// Reaps every ended child and reports it.
fn reap(running: &mut HashMap<i32, u64>) {
    loop {
        let mut status = 0;
        // SAFETY: waits for any child without blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if let Some(id) = running.remove(&pid) {
            reply(&Reply::Exited { id, status });
        }
    }
}

/// One reply line on standard output, unbuffered (a child forked later
/// must not inherit half a line to write again).
fn reply(reply: &Reply) {
    let Ok(mut line) = serde_json::to_vec(reply) else {
        return;
    };
    line.push(b'\n');
    let mut rest = &line[..];
    while !rest.is_empty() {
        // SAFETY: writes from a live buffer of its length.
        let n = unsafe { libc::write(1, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        rest = &rest[usize::try_from(n).unwrap_or(rest.len())..];
    }
}

/// A pipe SIGCHLD writes a byte to, so the loop wakes when a child ends.
struct SelfPipe {
    read: i32,
    write: i32,
}

static WAKE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; a full pipe just drops it.
        unsafe {
            libc::write(fd, (&raw const byte).cast(), 1);
        }
    }
}

impl SelfPipe {
    fn install() -> Option<SelfPipe> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 fills the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return None;
        }
        WAKE_FD.store(fds[1], Ordering::Relaxed);
        // SAFETY: installs a handler that only writes to the pipe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigchld as *const () as usize;
            action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut()) != 0 {
                return None;
            }
        }
        Some(SelfPipe {
            read: fds[0],
            write: fds[1],
        })
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: non-blocking reads into a buffer of its length.
        while unsafe { libc::read(self.read, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }

    /// In a child: SIGCHLD back to its default, the pipe closed.
    fn forget(&self) {
        WAKE_FD.store(-1, Ordering::Relaxed);
        // SAFETY: restores the default dispositions; closes our own fds.
        unsafe {
            libc::signal(libc::SIGCHLD, libc::SIG_DFL);
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}

/// Forks for `request`: `Some(pid)` in the zygote, `None` in the child
/// once it is set up as the worker of that one test.
fn fork_for(request: &Request, wake: &SelfPipe) -> std::io::Result<Option<i32>> {
    // SAFETY: getpid has no preconditions.
    let zygote = unsafe { libc::getpid() };
    // SAFETY: this process has one thread (checked at start), so the
    // child's copy of memory is consistent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        // Also here, so the supervisor never signals a group not yet made.
        // SAFETY: our own child.
        unsafe {
            libc::setpgid(pid, pid);
        }
        return Ok(Some(pid));
    }
    wake.forget();
    // Dies with the zygote from the first instant: a child the supervisor
    // never heard of must not run beside the exec'd re-run of its test.
    #[cfg(target_os = "linux")]
    // SAFETY: sets this process's own parent-death signal, then checks
    // the parent did not die before it was set.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != zygote {
            libc::_exit(101);
        }
    }
    if let Err(e) = become_worker(request) {
        let message = format!("service-test: a forked worker could not set itself up: {e}\n");
        // SAFETY: writes to stderr, then ends the child without running
        // the zygote's destructors or flushing anything it inherited.
        unsafe {
            libc::write(2, message.as_ptr().cast(), message.len());
            libc::_exit(101);
        }
    }
    Ok(None)
}

/// In a forked child: what an exec'd worker would find.
fn become_worker(request: &Request) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain calls on this process's own descriptors and
    // environment; it has one thread.
    unsafe {
        libc::setpgid(0, 0);
        let stderr = std::fs::OpenOptions::new()
            .append(true)
            .open(&request.stderr)?;
        let events = std::fs::OpenOptions::new()
            .append(true)
            .open(&request.events)?;
        let mut names = [0i32; 2];
        if libc::pipe(names.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut line = request.name.clone().into_bytes();
        line.push(b'\n');
        // A test name fits a pipe's buffer many times over.
        let mut writer = {
            use std::os::fd::FromRawFd;
            std::fs::File::from_raw_fd(names[1])
        };
        writer.write_all(&line)?;
        drop(writer);
        if libc::dup2(names[0], 0) < 0
            || libc::dup2(events.as_raw_fd(), 1) < 0
            || libc::dup2(stderr.as_raw_fd(), 2) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(names[0]);
        // Their copies at 1 and 2 stay; these originals close.
        drop(events);
        drop(stderr);
        crate::env::become_forked_worker(&request.stdout);
    }
    Ok(())
}

// ------------------------------------------------------------ supervisor side

/// How a forked test's process ended, as the zygote saw it.
pub(crate) enum Ended {
    /// Forked as `pid`, then ended with this status.
    Exited { pid: i32, status: ExitStatus },
    /// The zygote could not fork it, or went away first: start it with
    /// exec instead.
    Unavailable(String),
    /// The zygote died while process `pid` ran (which died with it, by its
    /// parent-death signal): its test is run again with exec.
    Lost { pid: i32 },
}

enum Message {
    Forked(i32),
    Failed(String),
    Exited(i32),
    Gone,
}

/// A running zygote, shared by the supervisor's threads.
pub(crate) struct Zygote {
    child: Mutex<Child>,
    input: Mutex<Option<ChildStdin>>,
    waiting: Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>>,
    next: AtomicU64,
}

impl Zygote {
    /// Starts a zygote with the run's arguments and environment (`env`:
    /// the seed, the hosted-fixtures file). `Err` says why forking is not
    /// used; the caller starts each test with exec.
    pub(crate) fn start(
        args: &[std::ffi::OsString],
        env: &[(&str, std::ffi::OsString)],
    ) -> Result<Zygote, String> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let mut command = Command::new(exe);
        command
            .args(args)
            .env(ZYGOTE_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start it: {e}"))?;
        // Not tracked for signals: the supervisor forwards SIGINT and
        // SIGTERM to the tests, which wind down; the zygote ignores them.
        let stdout = child.stdout.take().ok_or("no pipe from it")?;
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        let ready = reader.read_line(&mut first).map_err(|e| e.to_string())?;
        match serde_json::from_str::<Reply>(first.trim()) {
            Ok(Reply::Ready) if ready > 0 => {}
            Ok(Reply::Refused { reason }) => {
                let _ = child.wait();
                return Err(reason);
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("it did not start (a test binary whose main does not call service_test::main!?)".to_string());
            }
        }
        let waiting: Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>> = Arc::default();
        let by_id = waiting.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let (id, message) = match serde_json::from_str::<Reply>(line.trim()) {
                    Ok(Reply::Forked { id, pid }) => (id, Message::Forked(pid)),
                    Ok(Reply::Failed { id, error }) => (id, Message::Failed(error)),
                    Ok(Reply::Exited { id, status }) => (id, Message::Exited(status)),
                    _ => continue,
                };
                let map = by_id.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(tx) = map.get(&id) {
                    let _ = tx.send(message);
                }
            }
            for tx in by_id
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
            {
                let _ = tx.send(Message::Gone);
            }
        });
        let input = child.stdin.take();
        Ok(Zygote {
            child: Mutex::new(child),
            input: Mutex::new(input),
            waiting,
            next: AtomicU64::new(1),
        })
    }

    /// Forks a worker for test `name` with its streams and events on the
    /// given files; `on_start` gets its pid as soon as it runs (to track it
    /// and arm its watchdog). Blocks until it has ended.
    pub(crate) fn run(
        &self,
        name: &str,
        stdout: &std::path::Path,
        stderr: &std::path::Path,
        events: &std::path::Path,
        on_start: &mut dyn FnMut(i32),
    ) -> Ended {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        let forget = || {
            self.waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        };
        let request = Request {
            id,
            name: name.to_string(),
            stdout: stdout.to_path_buf(),
            stderr: stderr.to_path_buf(),
            events: events.to_path_buf(),
        };
        let sent = serde_json::to_vec(&request)
            .map_err(|e| e.to_string())
            .and_then(|mut line| {
                line.push(b'\n');
                match self
                    .input
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_mut()
                {
                    Some(input) => input.write_all(&line).map_err(|e| e.to_string()),
                    None => Err("the zygote's input is closed".to_string()),
                }
            });
        if let Err(e) = sent {
            forget();
            return Ended::Unavailable(format!("cannot reach the zygote: {e}"));
        }
        let pid = match rx.recv() {
            Ok(Message::Forked(pid)) => pid,
            Ok(Message::Failed(e)) => {
                forget();
                return Ended::Unavailable(format!("fork failed: {e}"));
            }
            _ => {
                forget();
                return Ended::Unavailable("the zygote ended".to_string());
            }
        };
        on_start(pid);
        let ended = loop {
            match rx.recv() {
                Ok(Message::Exited(status)) => {
                    use std::os::unix::process::ExitStatusExt;
                    break Ended::Exited {
                        pid,
                        status: ExitStatus::from_raw(status),
                    };
                }
                Ok(Message::Forked(_) | Message::Failed(_)) => continue,
                // Its children die with it (parent-death signal); this
                // one's group is reaped by the caller.
                Ok(Message::Gone) | Err(_) => break Ended::Lost { pid },
            }
        };
        forget();
        ended
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // Closing its input ends it once its children are reaped.
        drop(
            self.input
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = child.wait();
    }
}
