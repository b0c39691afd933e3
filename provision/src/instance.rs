//! Private instances: where they live, how they start, how they end.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

/// A fresh directory for a private instance of this process: created here
/// (never reused: creating an existing one fails), mode 0700, named with
/// the process id (so a later run can tell a leftover) and a random part
/// (so another user cannot prepare it in advance).
pub(crate) fn instance_dir(kind: &str) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    remove_leftovers(kind);
    let root = instances_root();
    let dir = root.join(format!(
        "service-test-{kind}-{}-{:016x}",
        std::process::id(),
        random_u64()?
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Removes instance directories of processes that no longer exist, killing
/// a server they left running.
fn remove_leftovers(kind: &str) {
    let prefix = format!("service-test-{kind}-");
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
        if process_alive(pid) {
            continue;
        }
        let server_pid = std::fs::read_to_string(e.path().join("data/postmaster.pid"))
            .or_else(|_| std::fs::read_to_string(e.path().join("server.pid")))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()));
        if let Some(p) = server_pid {
            let _ = Command::new("kill")
                .args(["-9", &p.to_string()])
                .stderr(Stdio::null())
                .status();
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
pub(crate) fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// The uid/gid of the `postgres` user, when we are root (PostgreSQL will not run as root).
pub(crate) fn run_as() -> io::Result<Option<(u32, u32)>> {
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            io::Error::other("running as root and there is no `postgres` user to run PostgreSQL as")
        })
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
        // SIGINT is PostgreSQL's fast shutdown; Redis exits on it too.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
