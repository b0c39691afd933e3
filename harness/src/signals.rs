//! SIGINT and SIGTERM in the process that runs the tests (a worker, or the
//! binary itself when unsupervised): start no new test, give the running
//! ones [`GRACE`] to finish, tear down suite and session fixtures (private
//! PostgreSQL and Redis included), and exit `128 + signal`. Tests never
//! started are reported `not-run` ("interrupted").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use crate::fixture::RunShared;

/// How long running tests get after a signal before teardown goes ahead.
pub const GRACE: Duration = Duration::from_secs(3);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Has a signal asked the run to stop?
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The signal that stopped the run, if one did.
pub(crate) fn signal() -> Option<i32> {
    interrupted().then(|| SIGNAL.load(Ordering::SeqCst))
}

/// Watches for SIGINT and SIGTERM on the current runtime. The scheduler
/// stops starting tests at the first; after [`GRACE`], fixtures are torn
/// down and the process exits, whatever the tests are doing.
pub(crate) fn watch(run: Arc<RunShared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        let sig = tokio::select! {
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        };
        SIGNAL.store(sig, Ordering::SeqCst);
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!(
            "service-test: signal {sig}: starting no new test; running ones get {}s",
            GRACE.as_secs()
        );
        tokio::time::sleep(GRACE).await;
        eprintln!("service-test: tearing down fixtures after the signal");
        for suite in run.take_all_suites() {
            for f in suite.tear_down().await {
                eprintln!("error: suite: {f}");
            }
        }
        for f in run.session.tear_down().await {
            eprintln!("error: session: {f}");
        }
        crate::output::sync();
        std::process::exit(128 + sig);
    });
}
