//! The binary as the host of session fixtures (see [`crate::host`]),
//! started by the supervisor for the isolated tests to attach to.

use std::io::{BufRead, Write};

use serde_json::Value;

use super::plan::RunPlan;
use crate::env::HOSTED_FILE_ENV;
use crate::fixture::{HostDef, TestCx};

/// The host process: sets up every registered hostable fixture, writes
/// their handles to the file in [`HOSTED_FILE_ENV`](crate::env::HOSTED_FILE_ENV) (mode 0600), prints
/// `ready` on stdout, and waits for its standard input to close; then
/// tears the fixtures down.
pub(super) fn run(plan: &RunPlan) -> std::process::ExitCode {
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
    let run = crate::fixture::RunShared::new(plan.seed, plan.target.clone());
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
