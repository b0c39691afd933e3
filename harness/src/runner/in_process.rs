//! Running tests in this process: the jobs go through the scheduler on a
//! tokio runtime, each finished test streams to its console trial, the
//! results file, the progress line and (in a worker) the supervisor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::events::{Event, Outcome, TestRecord};
use crate::execute::{TestPolicy, run_test};
use crate::fixture::RunShared;
use crate::registry::{TestDef, group_limits};
use crate::report::{JsonlSink, ResultLine};
use crate::schedule::{Pending, dispatch};

/// A selected test on its way to the scheduler.
pub(super) struct Job {
    pub(super) name: String,
    pub(super) def: &'static TestDef,
    pub(super) policy: Arc<TestPolicy>,
    pub(super) tx: oneshot::Sender<TestRecord>,
}

/// Installs what in-process execution needs (panic locations, log capture)
/// and starts the runtime tests run on.
pub(super) fn start_in_process() -> std::io::Result<tokio::runtime::Runtime> {
    crate::panic::install_hook();
    crate::capture::install();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(crate::schedule::cores())
        .enable_all()
        .build()
}

/// Where each finished test goes as it finishes: the results stream and
/// the progress line.
pub(super) struct Stream {
    pub(super) binary: String,
    pub(super) seed: u64,
    pub(super) recent: HashMap<String, crate::events::Recent>,
    pub(super) sink: Option<JsonlSink>,
    pub(super) progress: crate::report::console::Progress,
}

impl Stream {
    /// An ignored test is reported skipped, with its reason.
    pub(super) fn ignored(&mut self, name: &str, def: &TestDef) {
        let reason = def
            .ignore
            .map_or_else(|| "ignored".to_string(), |r| format!("ignored: {r}"));
        let record = TestRecord::without_run(name.to_string(), Outcome::Skipped(reason));
        if let Some(sink) = &mut self.sink {
            let line = ResultLine::new(&self.binary, def, &record, self.seed, Default::default());
            if let Err(e) = sink.write(&line) {
                eprintln!("warning: {e}");
            }
        }
    }

    pub(super) fn finished(&mut self, def: &TestDef, record: &TestRecord) {
        // Redacted here, with this process's canaries, before it leaves:
        // the supervisor never saw the values the test generated.
        crate::worker::emit(&Event::Finished {
            record: crate::report::redacted(record),
            ran_ms: crate::worker::ran_ms(&record.name, record.duration),
        });
        self.progress.finished(record.outcome.is_failure());
        if let Some(sink) = &mut self.sink {
            let recent = self.recent.remove(&record.name).unwrap_or_default();
            let line = ResultLine::new(&self.binary, def, record, self.seed, recent);
            if let Err(e) = sink.write(&line) {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// Runs the jobs through the scheduler, tearing down each module's suite
/// fixtures after its last test and the session's at the end. Returns every
/// record and the failures of suite and session teardowns.
pub(super) async fn supervise(
    run: Arc<RunShared>,
    jobs: Vec<Job>,
    concurrency: usize,
    max_fail: Option<usize>,
    leaks: crate::config::Leaks,
    mut stream: Stream,
) -> (Vec<TestRecord>, Vec<String>) {
    let tasks_before = crate::leak::alive_tasks();
    crate::signals::watch(run.clone());
    let limits = group_limits();
    let mut per_module: HashMap<&'static str, usize> = HashMap::new();
    for j in &jobs {
        *per_module.entry(j.def.module).or_insert(0) += 1;
    }
    let per_module = Arc::new(Mutex::new(per_module));
    let teardown_failures = Arc::new(Mutex::new(Vec::new()));
    let mut senders: HashMap<String, oneshot::Sender<TestRecord>> =
        HashMap::with_capacity(jobs.len());
    let mut defs: HashMap<String, &'static TestDef> = HashMap::with_capacity(jobs.len());
    let mut pending = Vec::with_capacity(jobs.len());
    for j in jobs {
        senders.insert(j.name.clone(), j.tx);
        defs.insert(j.name.clone(), j.def);
        pending.push(Pending {
            group: j.def.group,
            exclusive: j.def.exclusive,
            job: (j.name, j.def, j.policy),
        });
    }
    let mut records = Vec::new();

    let (start_run, start_failures) = (run.clone(), teardown_failures.clone());
    let start = move |(name, def, policy): (String, &'static TestDef, Arc<TestPolicy>)| {
        let run = start_run.clone();
        let per_module = per_module.clone();
        let teardown_failures = start_failures.clone();
        async move {
            crate::worker::started(&name);
            let record = run_test(run.clone(), name, def, policy).await;
            let last_in_module = {
                let mut counts = per_module.lock().unwrap_or_else(PoisonError::into_inner);
                let n = counts.entry(def.module).or_insert(1);
                *n -= 1;
                *n == 0
            };
            if last_in_module {
                if let Some(suite) = run.take_suite(def.module) {
                    let failures = suite.tear_down().await;
                    teardown_failures
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend(
                            failures
                                .into_iter()
                                .map(|f| format!("suite `{}`: {f}", def.module)),
                        );
                }
            }
            record
        }
    };
    let mut failures_seen: Vec<String> = Vec::new();
    let not_started = dispatch(pending, concurrency, limits, start, max_fail, |record| {
        let failed = record.outcome.is_failure();
        if failed {
            failures_seen.push(record.name.clone());
        }
        if let Some(def) = defs.get(&record.name) {
            stream.finished(def, &record);
        }
        if let Some(tx) = senders.remove(&record.name) {
            let _ = tx.send(record.clone());
        }
        records.push(record);
    })
    .await;
    let stopped_by = match max_fail {
        Some(1) => "--fail-fast".to_string(),
        Some(n) => format!("--max-fail {n}"),
        None => "the run".to_string(),
    };
    // A worker being recycled leaves the tests it did not start to the
    // next worker: no record for them here.
    let not_started = if crate::worker::recycling() {
        Vec::new()
    } else {
        not_started
    };
    for (name, _, _) in not_started {
        let record = TestRecord::without_run(
            name,
            Outcome::NotRun(match crate::signals::signal() {
                Some(sig) => format!("not run: the run was interrupted (signal {sig})"),
                None => format!(
                    "not run: {stopped_by} stopped the run after `{}` failed",
                    failures_seen.last().map_or("a test", String::as_str)
                ),
            }),
        );
        if let Some(def) = defs.get(&record.name) {
            stream.finished(def, &record);
        }
        if let Some(tx) = senders.remove(&record.name) {
            let _ = tx.send(record.clone());
        }
        records.push(record);
    }
    let mut failures = std::mem::take(
        &mut *teardown_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    for suite in run.take_all_suites() {
        failures.extend(
            suite
                .tear_down()
                .await
                .into_iter()
                .map(|f| format!("suite: {f}")),
        );
    }
    failures.extend(
        run.session
            .tear_down()
            .await
            .into_iter()
            .map(|f| format!("session: {f}")),
    );
    if leaks != crate::config::Leaks::Off {
        let over = crate::leak::over_after_grace(tasks_before).await;
        if over > 0 {
            let message = format!(
                "LEAK: {over} task(s) spawned by tests were still running after every test and fixture was torn down; run with --test-threads 1 to name the test"
            );
            match leaks {
                crate::config::Leaks::Fail => failures.push(message),
                _ => eprintln!("{message}"),
            }
        }
    }
    stream.progress.clear();
    (records, failures)
}
