//! The binary as a worker (see [`crate::worker`]), started by its
//! supervisor or forked by the zygote.

use std::collections::HashMap;
use std::process::ExitCode;

use tokio::sync::oneshot;

use super::in_process::{Job, Stream, start_in_process, supervise};
use super::plan::RunPlan;
use crate::events::Event;
use crate::fixture::RunShared;

/// A worker (see [`crate::worker`]): runs the tests named on standard
/// input in this process and reports to the supervisor; never prints the
/// console, writes reports or history, or runs preflight checks (the
/// supervisor did).
pub(super) fn run(plan: &RunPlan) -> ExitCode {
    give_way_to_the_host();
    if let Err(e) = crate::worker::install() {
        eprintln!("error: worker: cannot set up the event channel: {e}");
        return ExitCode::FAILURE;
    }
    let names = crate::worker::read_names();
    if let Err(e) = crate::worker::map_started(&names) {
        eprintln!("error: worker: cannot map the started-tests file: {e}");
        return ExitCode::FAILURE;
    }
    let concurrency = plan.concurrency;
    let one_at_a_time = concurrency == 1 || names.len() == 1;
    let max_fail = plan.max_fail;
    let run_leaks = plan.run_leak_check(one_at_a_time);
    let jobs: Vec<Job> = crate::registry::find_by_names(&names)
        .into_iter()
        .map(|(name, def)| {
            let (tx, _) = oneshot::channel();
            Job {
                name,
                def,
                policy: plan.job_policy(def, one_at_a_time),
                tx,
            }
        })
        .collect();
    let stream = Stream {
        binary: crate::history::binary_name(),
        seed: plan.seed,
        recent: HashMap::new(),
        sink: None,
        progress: crate::report::console::Progress::disabled(),
    };
    let runtime = match start_in_process() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = RunShared::new(plan.seed, plan.target.clone());
    let (_, teardown_failures) = runtime.block_on(supervise(
        run,
        jobs,
        concurrency,
        max_fail,
        run_leaks,
        stream,
    ));
    let teardown_failures: Vec<String> = teardown_failures
        .iter()
        .map(|f| crate::redaction::redact(f))
        .collect();
    crate::output::sync();
    if crate::worker::recycling() {
        crate::worker::emit(&Event::Recycle { teardown_failures });
    } else {
        crate::worker::emit(&Event::Done { teardown_failures });
    }
    // A timed-out sync test may still hold a thread: don't wait for it.
    std::process::exit(0)
}

/// With a host serving session fixtures (the system under test: a mesh,
/// its stores), an isolated test's process runs at a lower priority
/// (nice +10), forked or exec'd alike: in process the tests and the system
/// share one runtime and cannot crowd it out, but dozens of test processes
/// at once, each with its own runtime threads, would leave the host a
/// sliver of the CPU, and its answers would miss the tests' deadlines (on
/// two cores, 4 to 8 of the shipped suites' 115 tests failed isolated, none
/// in process). Without a host nothing changes.
fn give_way_to_the_host() {
    if crate::env::hosted_file().is_none() {
        return;
    }
    #[cfg(unix)]
    // SAFETY: lowers this process's own scheduling priority; a failure
    // (-1) leaves it as it was, which is only slower.
    let _ = unsafe { libc::nice(10) };
}
