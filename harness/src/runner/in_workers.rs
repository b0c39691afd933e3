//! Running tests in supervised worker processes (see [`crate::supervisor`]),
//! each record streamed to its console trial, the reports and the progress
//! line as it comes; tests left without a record are reported not run.

use std::collections::HashMap;

use super::in_process::{Job, Stream};
use super::main_role::Ran;
use crate::events::{Outcome, TestRecord};

/// Runs the jobs in supervised worker processes (see [`crate::supervisor`]),
/// streaming each record to the console, the reports and the progress line.
pub(super) fn run(plan: crate::supervisor::Plan, jobs: Vec<Job>, mut stream: Stream) -> Ran {
    let max_fail = plan.max_fail;
    let mut waiting: HashMap<String, Job> = jobs.into_iter().map(|j| (j.name.clone(), j)).collect();
    let order = plan.names.clone();
    let mut records = Vec::new();
    let mut last_failure: Option<String> = None;
    let ended = crate::supervisor::run(plan, &mut |mut record| {
        if let Some(job) = waiting.remove(&record.name) {
            crate::guards::judge_output(job.def, &mut record);
            if record.outcome.is_failure() {
                last_failure = Some(record.name.clone());
            }
            stream.finished(job.def, &record);
            let _ = job.tx.send(record.clone());
            records.push(record);
        }
    });
    let why = match (ended.interrupted, max_fail) {
        (Some(sig), _) => format!("not run: the run was interrupted (signal {sig})"),
        (None, Some(n)) => format!(
            "not run: {} stopped the run after `{}` failed",
            if n == 1 {
                "--fail-fast".to_string()
            } else {
                format!("--max-fail {n}")
            },
            last_failure.as_deref().unwrap_or("a test")
        ),
        (None, None) => "not run: no worker process ran it".to_string(),
    };
    for name in order {
        if let Some(job) = waiting.remove(&name) {
            let record = TestRecord::without_run(name, Outcome::NotRun(why.clone()));
            stream.finished(job.def, &record);
            let _ = job.tx.send(record.clone());
            records.push(record);
        }
    }
    stream.progress.clear();
    Ran {
        records,
        teardown_failures: ended.teardown_failures,
        interrupted: ended.interrupted,
    }
}
