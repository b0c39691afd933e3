//! Private instances: where they live, how they start, how they end.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A name unique in this run: `prefix_<pid>_<n>` (database and key names).
pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where private instances keep their data: `SERVICE_TEST_INSTANCE_DIR`,
/// else `/dev/shm` (memory: test databases need no durability, and cloning
/// them is then bound by memory, not by a slow disk), else the temp dir.
fn instances_root() -> PathBuf {
    if let Some(d) = std::env::var_os("SERVICE_TEST_INSTANCE_DIR") {
        return PathBuf::from(d);
    }
    let shm = PathBuf::from("/dev/shm");
    let writable = std::fs::metadata(&shm).is_ok_and(|m| m.is_dir() && !m.permissions().readonly());
    if writable { shm } else { std::env::temp_dir() }
}

/// 64 bits from the OS's random source.
fn random_u64() -> io::Result<u64> {
    use rand_core::TryRngCore;
    rand_core::OsRng
        .try_next_u64()
        .map_err(|e| io::Error::other(format!("the OS random source: {e}")))
}

/// The two kinds of private instance: where their directories are named,
/// which binary serves them, and whom they run as when we are root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Postgres,
    Redis,
}

impl Kind {
    /// The directory name's tag: `service-test-<tag>-<pid>-<random>`.
    fn tag(self) -> &'static str {
        match self {
            Kind::Postgres => "pg",
            Kind::Redis => "redis",
        }
    }

    /// The executable a leftover server of this kind runs (`/proc/PID/exe`).
    fn server_binary(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Redis => "redis-server",
        }
    }

    /// The unprivileged user the server runs as when we are root:
    /// PostgreSQL refuses root, and a Redis we start must not hold root's
    /// powers either (its `CONFIG SET dir` + `SAVE` can write files).
    fn service_user(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Redis => "nobody",
        }
    }
}

/// A fresh directory for a private instance of this process: created here
/// (never reused: creating an existing one fails), mode 0700, named with
/// the process id (so a later run can tell a leftover) and a random part
/// (so another user cannot prepare it in advance), owned by the user the
/// server runs as (`run_as`), who must write in it.
pub(crate) fn instance_dir(kind: Kind, owner: Option<(u32, u32)>) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    remove_leftovers(kind);
    let root = instances_root();
    let dir = root.join(format!(
        "service-test-{}-{}-{:016x}",
        kind.tag(),
        std::process::id(),
        random_u64()?
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| {
            let _ = std::fs::remove_dir(&dir);
            io::Error::new(
                e.kind(),
                format!("handing {} to uid {uid}: {e}", dir.display()),
            )
        })?;
    }
    Ok(dir)
}

/// Removes instance directories of runs that no longer exist, killing a
/// server they left running. The instances root may be world-writable
/// (`/dev/shm`, `/tmp`), so a directory there proves nothing by its name:
/// only a directory (not a symlink) of mode 0700 owned by the user our
/// instances of `kind` are owned by is touched, and the pid its file names
/// is killed only when that process runs the server's binary as that same
/// user: a planted pid file cannot make us kill anything else.
fn remove_leftovers(kind: Kind) {
    use std::os::unix::fs::MetadataExt;
    let Ok(owner) = owner_uid(kind) else {
        return;
    };
    let prefix = format!("service-test-{}-", kind.tag());
    let Ok(entries) = std::fs::read_dir(instances_root()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != owner || meta.mode() & 0o7777 != 0o700 {
            continue;
        }
        if process_alive(pid) {
            continue;
        }
        let server_pid = std::fs::read_to_string(e.path().join("data/postmaster.pid"))
            .or_else(|_| std::fs::read_to_string(e.path().join("server.pid")))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
            .filter(|&p| p > 0);
        if let Some(p) = server_pid
            && runs_our_server(p, kind, owner)
        {
            // SAFETY: kill(2) with a positive pid signals that one process.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(e.path());
    }
}

/// Is the process running? A zombie (dead, not yet reaped) is not.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the field after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Does process `pid` run `kind`'s server binary as user `owner`?
fn runs_our_server(pid: i32, kind: Kind, owner: u32) -> bool {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    // A binary replaced by an upgrade reads `postgres (deleted)`.
    let exe = PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)"));
    // The kernel names the resolved file: Debian's `redis-server` is a
    // symlink to `redis-check-rdb`, so the binary we would start counts
    // by its real path too.
    let ours = find_binary(kind.server_binary()).and_then(|b| std::fs::canonicalize(b).ok());
    let named = exe.file_name().is_some_and(|n| n == kind.server_binary());
    if !named && ours.as_deref() != Some(exe.as_path()) {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    // `Uid:\treal\teffective\tsaved\tfs`: every one must be the owner.
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|ids| ids.split_whitespace().all(|id| id.parse() == Ok(owner)))
}

/// The uid our instances of `kind` are owned by: ours, or as root the
/// server's user (an error when there is none: we start no such instances).
fn owner_uid(kind: Kind) -> io::Result<u32> {
    Ok(match run_as(kind)? {
        Some((uid, _)) => uid,
        // SAFETY: geteuid cannot fail and touches no memory.
        None => unsafe { libc::geteuid() },
    })
}

/// Finds a server binary: `PATH`, then well-known install directories
/// (unless `SERVICE_TEST_SYSTEM_BINARIES=0`).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(p) = std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
    {
        return Some(p);
    }
    if std::env::var("SERVICE_TEST_SYSTEM_BINARIES").is_ok_and(|v| v == "0") {
        return None;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// A free loopback port.
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Ports a server is started on before its start is given up.
const PORT_ATTEMPTS: u32 = 5;

/// Why a server did not start: the step, and what it said.
#[derive(Debug)]
pub(crate) struct StartFailure {
    pub(crate) step: String,
    pub(crate) detail: String,
}

/// Starts a server on a loopback port chosen free, `spawn(port)`, and waits
/// up to `wait` until `ready(port)` answers; the port, the running server
/// and what `ready` answered.
///
/// A port free when it is chosen may be taken before the server binds it
/// (by another test's server, another run's: many start at once under
/// nextest); such a server exits at once. One that exits before it is
/// ready is started again on another port, up to [`PORT_ATTEMPTS`] times,
/// rather than waited for. A server still not ready at `wait` is killed.
pub(crate) async fn start_on_a_free_port<T, Fut>(
    mut spawn: impl FnMut(u16) -> io::Result<Child>,
    mut ready: impl FnMut(u16) -> Fut,
    wait: Duration,
) -> Result<(u16, Child, T), StartFailure>
where
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let failed = |step: String, detail: &dyn std::fmt::Display| StartFailure {
        step,
        detail: detail.to_string(),
    };
    let mut exited = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port().map_err(|e| failed("finding a free port".into(), &e))?;
        let mut child = spawn(port).map_err(|e| failed("starting the server".into(), &e))?;
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                exited = format!("it exited ({status}) on port {port}");
                break;
            }
            match ready(port).await {
                Ok(answer) => return Ok((port, child, answer)),
                Err(e) if Instant::now() > deadline => {
                    stop(&mut child);
                    return Err(failed(format!("waiting for the server on port {port}"), &e));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }
    Err(failed(
        format!("starting the server on {PORT_ATTEMPTS} ports in turn"),
        &format!("each exited before it was ready; the last: {exited}"),
    ))
}

/// Whom a server of `kind` runs as: `None` (ourselves) unless we are root,
/// then `kind`'s unprivileged user (uid, gid).
pub(crate) fn run_as(kind: Kind) -> io::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = kind.service_user();
    user_ids(name).map(Some).ok_or_else(|| {
        io::Error::other(format!(
            "running as root and there is no `{name}` user to run {} as",
            kind.server_binary()
        ))
    })
}

/// The uid and gid of user `name` (the system's user database, NSS included).
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data; all-zero is a valid (empty) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives our use of
    // pwd's strings (we read only the numeric ids).
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

/// Runs `cmd` as `user` (uid, gid) when given.
pub(crate) fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// The server dies with the thread that started it (Linux's parent-death
/// signal), so a private instance never outlives its run, whatever killed
/// the run: `signal` is the server's fast shutdown (SIGQUIT for
/// PostgreSQL, SIGTERM for Redis). Runtime and main threads live as long as
/// the run; the leftover sweep at the next start covers the rest.
pub(crate) fn dies_with_us(cmd: &mut Command, signal: i32) -> &mut Command {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; this runs between fork and
        // exec (after std has set the uid and gid, so the setting holds).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = signal;
    cmd
}

/// A server process started for this run (a private instance); stopped
/// and its directory removed when dropped.
pub struct Instance {
    pub(crate) child: Child,
    pub(crate) dir: PathBuf,
}

impl Instance {
    /// The instance's directory (data, log).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stops a server and reaps it: SIGINT (PostgreSQL's fast shutdown; Redis
/// exits on it too), up to 5 s for it to exit, then SIGKILL.
pub(crate) fn stop(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// `sh -c script`, as a stand-in server.
    fn sh(script: &str) -> io::Result<Child> {
        Command::new("sh").args(["-c", script]).spawn()
    }

    #[tokio::test]
    async fn a_server_that_exits_before_it_is_ready_starts_again_on_another_port() {
        // The first server exits at once (its port taken); the second runs
        // and is ready.
        let spawned = RefCell::new(Vec::new());
        let spawn = |port: u16| {
            let mut ports = spawned.borrow_mut();
            ports.push(port);
            sh(if ports.len() == 1 {
                "exit 1"
            } else {
                "exec sleep 30"
            })
        };
        let second = |port: u16| spawned.borrow().get(1) == Some(&port);
        let ready = |port: u16| {
            let ok = second(port);
            async move {
                if ok {
                    Ok(port)
                } else {
                    Err("refused".to_string())
                }
            }
        };
        let (port, mut child, answered) =
            start_on_a_free_port(spawn, ready, Duration::from_secs(5))
                .await
                .expect("started on the second port");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(answered, port);
        assert!(second(port), "ready on the second server's port");
    }

    /// How starting `sh -c script`, never ready, fails within `wait`.
    async fn never_ready(script: &str, wait: Duration) -> StartFailure {
        start_on_a_free_port(
            |_| sh(script),
            |_| async { Err::<(), _>("refused".to_string()) },
            wait,
        )
        .await
        .expect_err("never ready")
    }

    #[tokio::test]
    async fn a_server_that_always_exits_fails_naming_the_attempts() {
        let failure = never_ready("exit 3", Duration::from_secs(5)).await;
        assert!(failure.step.contains("5 ports"), "{failure:?}");
        assert!(failure.detail.contains("exited"), "{failure:?}");
    }

    #[tokio::test]
    async fn a_server_never_ready_is_killed_at_the_wait() {
        let failure = never_ready("exec sleep 30", Duration::from_millis(200)).await;
        assert!(
            failure.step.starts_with("waiting for the server on port"),
            "{failure:?}"
        );
        assert_eq!(failure.detail, "refused");
    }
}
