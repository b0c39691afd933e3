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
