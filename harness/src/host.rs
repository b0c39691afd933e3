//! Hosted session fixtures: session fixtures set up once, in a host
//! process the supervisor starts, and shared with the isolated test
//! processes, which *attach* to them instead of setting up their own. An
//! isolated test then costs a process, not a mesh.
//!
//! A session fixture is hostable when it can describe itself as a handle
//! (addresses, a secret, a database URL, a key prefix: JSON) and be
//! rebuilt from one in another process ([`Hostable`]), and is registered
//! with [`hostable!`](crate::hostable!):
//!
//! ```ignore
//! use service_test::host::Hostable;
//!
//! impl Hostable for Broker {
//!     fn handle(&self) -> Result<serde_json::Value, FixtureError> {
//!         Ok(serde_json::json!({"addr": self.addr.to_string()}))
//!     }
//!     async fn attach(handle: serde_json::Value, _cx: &mut FixtureCx) -> Result<Self, FixtureError> {
//!         let addr = handle["addr"].as_str().and_then(|a| a.parse().ok())
//!             .ok_or_else(|| FixtureError::new("Broker handle: no addr"))?;
//!         Ok(Broker { addr, _server: None })
//!     }
//! }
//! service_test::hostable!(Broker);
//! ```
//!
//! When two or more tests of a run are isolated and the binary registers
//! hostable fixtures, the supervisor starts the binary once more as the
//! host: it sets up every registered hostable fixture (with what they
//! depend on), writes their handles to a private file (mode 0600) and
//! waits; each isolated test process reads the file, and a session fixture
//! with a handle there is attached rather than set up. When the isolated
//! tests are done the host tears its fixtures down (private instances
//! included) and exits; it dies with the supervisor whatever ends it. A
//! fixture the host could not set up is not hosted: each process sets it
//! up itself (or skips, with the reason).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, Write};
use std::pin::Pin;
use std::sync::OnceLock;

use serde_json::Value;

use crate::fixture::{Fixture, FixtureCx, FixtureError, TestCx};

use crate::env::{HOST_ENV, HOSTED_FILE_ENV};

/// A session fixture that isolated test processes can share.
pub trait Hostable: Fixture {
    /// Describes the live value so that another process can attach to it.
    /// It may hold a secret: the handles file is readable by this user only.
    fn handle(&self) -> Result<Value, FixtureError>;

    /// Rebuilds the value in another process from its handle. It does not
    /// own what the host set up (nothing is torn down here).
    fn attach(
        handle: Value,
        cx: &mut FixtureCx,
    ) -> impl Future<Output = Result<Self, FixtureError>> + Send;
}

type Hosted = Result<Value, FixtureError>;
type Attached<'a> =
    Pin<Box<dyn Future<Output = Result<Box<dyn Any + Send + Sync>, FixtureError>> + Send + 'a>>;

/// A hostable fixture's registration ([`hostable!`](crate::hostable!)).
pub struct HostDef {
    /// The fixture's name, the key of its handle.
    pub name: &'static str,
    /// Its type.
    pub type_id: fn() -> TypeId,
    /// Sets it up in the host and describes it.
    pub host: fn(TestCx) -> crate::BoxFuture<Hosted>,
    /// Rebuilds it from a handle.
    pub attach: for<'a> fn(Value, &'a mut FixtureCx) -> Attached<'a>,
}

inventory::collect!(HostDef);

/// Registers a [`Hostable`] session fixture: `service_test::hostable!(Postgres);`
#[macro_export]
macro_rules! hostable {
    ($t:ty) => {
        $crate::__private::inventory::submit! {
            $crate::host::HostDef {
                name: ::core::stringify!($t),
                type_id: || ::std::any::TypeId::of::<$t>(),
                host: |cx| ::std::boxed::Box::pin(async move {
                    let held = cx.held::<$t>().await?;
                    <$t as $crate::host::Hostable>::handle(&*held)
                }),
                attach: |handle, cx| ::std::boxed::Box::pin(async move {
                    let value = <$t as $crate::host::Hostable>::attach(handle, cx).await?;
                    ::core::result::Result::Ok(::std::boxed::Box::new(value)
                        as ::std::boxed::Box<dyn ::std::any::Any + ::core::marker::Send + ::core::marker::Sync>)
                }),
            }
        }
    };
}

/// Are hostable fixtures registered in this binary?
pub(crate) fn any_registered() -> bool {
    inventory::iter::<HostDef>.into_iter().next().is_some()
}

/// The handles this (isolated test) process may attach to, read once from
/// the file the supervisor named.
fn handles() -> &'static HashMap<String, Value> {
    static HANDLES: OnceLock<HashMap<String, Value>> = OnceLock::new();
    HANDLES.get_or_init(|| {
        let Some(path) = crate::env::hosted_file() else {
            return HashMap::new();
        };
        std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    })
}

/// The hosted value of session fixture `T`, when the host holds one:
/// `None` to set it up here.
pub(crate) async fn attach<T: Fixture>(cx: &mut FixtureCx) -> Option<Result<T, FixtureError>> {
    let handles = handles();
    if handles.is_empty() {
        return None;
    }
    let def = inventory::iter::<HostDef>
        .into_iter()
        .find(|d| (d.type_id)() == TypeId::of::<T>())?;
    let handle = handles.get(def.name)?.clone();
    Some(match (def.attach)(handle, cx).await {
        Ok(value) => value.downcast::<T>().map(|b| *b).map_err(|_| {
            FixtureError::new(format!(
                "hosted `{}`: the handle built another type",
                def.name
            ))
        }),
        Err(e) => Err(e),
    })
}

/// The host process: sets up every registered hostable fixture, writes
/// their handles to the file in [`HOSTED_FILE_ENV`](crate::env::HOSTED_FILE_ENV) (mode 0600), prints
/// `ready` on stdout, and waits for its standard input to close; then
/// tears the fixtures down.
pub(crate) fn run_as_host(seed: u64, target: Option<std::path::PathBuf>) -> std::process::ExitCode {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain prctl on this process: it dies with its supervisor.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let Some(path) = crate::env::hosted_file() else {
        eprintln!("error: host: {HOSTED_FILE_ENV} is unset");
        return std::process::ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: host: cannot start the tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    crate::panic::install_hook();
    // What the hosted fixtures print is redacted with the values they
    // generate, like a worker's.
    if let Err(e) = crate::output::install() {
        eprintln!("error: host: cannot redirect its output through redaction: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let run = crate::fixture::RunShared::new(seed, target);
    runtime.block_on(async {
        let cx = TestCx::new(run.clone(), "(host)".into(), "(host)", 1);
        let mut handles = serde_json::Map::new();
        for def in inventory::iter::<HostDef> {
            match (def.host)(cx.clone()).await {
                Ok(handle) => {
                    handles.insert(def.name.to_string(), handle);
                }
                Err(e) => eprintln!(
                    "service-test: not hosting `{}`: {}",
                    def.name,
                    crate::redaction::redact(&e.to_string())
                ),
            }
        }
        if let Err(e) = write_private(std::path::Path::new(&path), &Value::Object(handles)) {
            eprintln!("error: host: writing the handles: {e}");
        }
        println!("ready");
        let _ = std::io::stdout().flush();
        // Until the supervisor closes our standard input, or passes on a
        // signal: either way the fixtures are torn down.
        let input_closed = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin()
                .lock()
                .read_line(&mut line)
                .is_ok_and(|n| n > 0)
            {
                line.clear();
            }
        });
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = input_closed => {}
                    _ = int.recv() => eprintln!("service-test: host: SIGINT: tearing down"),
                    _ = term.recv() => eprintln!("service-test: host: SIGTERM: tearing down"),
                }
            }
            _ => {
                let _ = input_closed.await;
            }
        }
        for failure in run.session.tear_down().await {
            eprintln!("service-test: host: {}", crate::redaction::redact(&failure));
        }
    });
    crate::output::sync();
    std::process::exit(0)
}

/// 64 unpredictable bits (std's per-process random hasher keys), for
/// private file names.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Writes `value` to `path`, readable by this user only.
fn write_private(path: &std::path::Path, value: &Value) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(value.to_string().as_bytes())
}

/// The host, from the supervisor's side: started with the run's arguments,
/// ready when it said so; dropping it closes its input (it tears down and
/// exits) and removes the handles file.
pub(crate) struct Host {
    child: std::process::Child,
    pub(crate) file: std::path::PathBuf,
}

impl Host {
    /// Starts the host and waits (at most two minutes) until it is ready.
    pub(crate) fn start(args: &[std::ffi::OsString], seed: u64) -> std::io::Result<Host> {
        use std::process::{Command, Stdio};
        // Made here, never reused: a file planted at the name fails this.
        let file = crate::supervisor::private_file("hosted")?;
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .process_group(0)
            .env(HOST_ENV, "1")
            .env(HOSTED_FILE_ENV, &file)
            .env(crate::env::SEED_ENV, seed.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take();
        crate::supervisor::track(i32::try_from(child.id()).unwrap_or(0));
        let host = Host { child, file };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = std::io::BufReader::new(out).read_line(&mut line);
            }
            let _ = tx.send(line);
        });
        match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(line) if line.trim() == "ready" => Ok(host),
            Ok(_) => Err(std::io::Error::other(
                "the host process ended before it was ready",
            )),
            Err(_) => Err(std::io::Error::other(
                "the host process was not ready within 120 s",
            )),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(70);
        while std::time::Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        crate::supervisor::untrack(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}
