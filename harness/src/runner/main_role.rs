//! The binary as cargo, nextest or a user started it: select the tests,
//! list them or run them (in supervised workers, or in this process), show
//! them on the libtest console, and report: results, history, the exit code.

use std::collections::HashMap;
use std::process::ExitCode;

use libtest_mimic::Trial;
use tokio::sync::oneshot;

use super::EXIT_USAGE;
use super::in_process::{Job, Stream, start_in_process, supervise};
use super::plan::RunPlan;
use crate::events::TestRecord;
use crate::fixture::RunShared;
use crate::history::History;
use crate::registry::TestDef;
use crate::report::{self, JsonlSink, ResultLine};
use crate::schedule::longest_first;
use crate::select::Selection;

/// Where finished tests are reported.
struct Reporting {
    dir: std::path::PathBuf,
    sink: JsonlSink,
}

/// Selects the tests, then lists or runs them.
pub(super) fn run(plan: &RunPlan) -> ExitCode {
    // One test under `--exact` (nextest's way) reads no history.
    let lone = plan.lone();
    let mut history = if lone {
        History::default()
    } else if let Some(path) = &plan.history {
        match History::load_file(path, &crate::history::binary_name()) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    } else {
        History::load_for_current_exe()
    };
    let mut selection = crate::select::select(
        crate::select::Criteria {
            exact: plan.exact(),
            marker: plan.marker.as_ref().map(|(_, e)| e),
            partition: plan.partition,
            last_failed: plan.last_failed,
            failed_first: plan.failed_first,
        },
        &history,
    );
    if let (Some(path), false) = (&plan.history, lone) {
        selection.notes.insert(
            0,
            format!(
                "history from {} ({} tests)",
                path.display(),
                history.tests.len()
            ),
        );
    }
    if let Some((filters, exact)) = &plan.filters {
        selection.tests.retain(|(name, _)| {
            filters.iter().any(|f| {
                if *exact {
                    name == f
                } else {
                    name.contains(f.as_str())
                }
            })
        });
    }

    let args = &plan.libtest;
    if args.list {
        if matches!(args.format, Some(libtest_mimic::FormatSetting::Json)) {
            return super::listing::list_json(plan, &selection.tests);
        }
        let trials = selection
            .tests
            .iter()
            .map(|(name, def)| Trial::test(name.clone(), || Ok(())).with_ignored_flag(def.ignored))
            .collect();
        return libtest_mimic::run(args, trials).exit_code();
    }

    let reporting = match &plan.report_dir {
        None => None,
        Some(dir) => match JsonlSink::open(dir, report::RESULTS) {
            Ok(sink) => Some(Reporting {
                dir: dir.clone(),
                sink,
            }),
            Err(e) => {
                eprintln!("error: --report-dir: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    run_selected(plan, selection, &mut history, reporting)
}

/// The selected tests in the console's order, each trial waiting for its
/// test's record, and the jobs for the scheduler.
struct Ordered {
    trials: Vec<Trial>,
    jobs: Vec<Job>,
    /// Tests libtest will show ignored (not `--skip`ped or filtered out).
    ignored: Vec<(String, &'static TestDef)>,
    /// One test selected, or one at a time: each checked for leaks itself.
    one_at_a_time: bool,
}

/// Trials for libtest-mimic, each waiting on its result; the ones
/// libtest-mimic will actually run go to our scheduler, in the same order
/// (longest first, the failed first under `--failed-first`).
fn order(plan: &RunPlan, tests: Vec<(String, &'static TestDef)>, history: &History) -> Ordered {
    let args = &plan.libtest;
    let one_at_a_time = plan.concurrency == 1 || tests.len() == 1;
    let mut entries: Vec<(Trial, Option<Job>)> = tests
        .into_iter()
        .map(|(name, def)| {
            let (tx, rx) = oneshot::channel::<TestRecord>();
            let trial = crate::report::console::trial_waiting_for(name.clone(), plan.seed, rx)
                .with_ignored_flag(def.ignored);
            let policy = plan.job_policy(def, one_at_a_time);
            (
                trial,
                Some(Job {
                    name,
                    def,
                    policy,
                    tx,
                }),
            )
        })
        .collect();
    let mut ignored: Vec<(String, &'static TestDef)> = Vec::new();
    for (trial, job) in &mut entries {
        if args.is_filtered_out(trial) || args.is_ignored(trial) {
            if let Some(j) = job.take() {
                if !args.is_filtered_out(trial) {
                    ignored.push((j.name, j.def));
                }
            }
        }
    }
    longest_first(&mut entries, history, |(t, _)| t.name());
    if plan.failed_first {
        // Stable: the failed keep their longest-first order, as do the rest.
        entries.sort_by_key(|(t, _)| !history.failed_last(t.name()));
    }
    let mut trials = Vec::with_capacity(entries.len());
    let mut jobs = Vec::new();
    for (trial, job) in entries {
        trials.push(trial);
        jobs.extend(job);
    }
    Ordered {
        trials,
        jobs,
        ignored,
        one_at_a_time,
    }
}

/// The run's header: seed, selection, concurrency, profile, notes, target.
fn print_header(plan: &RunPlan, total: usize, shown: usize, to_run: usize, notes: &[String]) {
    let seed = plan.seed;
    let config = &plan.config;
    let selection = match plan.marker_source() {
        Some(src) => format!("{shown} of {total} tests match `{src}`"),
        None => format!("{total} tests"),
    };
    let profile = match &config.path {
        Some(path) => format!(
            "; profile `{}` ({}, {} override(s))",
            config.name,
            path.display(),
            config.overrides.len()
        ),
        None => String::new(),
    };
    let at_once = match plan.isolation {
        crate::config::Isolation::InProcess => format!("up to {} at once", plan.concurrency),
        crate::config::Isolation::Process => {
            format!("up to {} at once, a process each", plan.isolated_at_once)
        }
    };
    eprintln!(
        "service-test: seed {seed} (repeat with --seed {seed}); {selection}; {to_run} to run, {at_once}{profile}"
    );
    if !config.redacts() {
        eprintln!("{}", crate::redaction::notice(&config.name));
    }
    for note in notes {
        eprintln!("service-test: {note}");
    }
    if let Some(t) = &plan.target {
        let shown = std::fs::canonicalize(t).unwrap_or_else(|_| t.clone());
        eprintln!("service-test: target file {}", shown.display());
    }
}

fn run_selected(
    plan: &RunPlan,
    selection: Selection,
    history: &mut History,
    reporting: Option<Reporting>,
) -> ExitCode {
    let started = std::time::Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let seed = plan.seed;
    let Selection {
        tests,
        total,
        single,
        notes,
    } = selection;
    let Ordered {
        trials,
        jobs,
        ignored,
        one_at_a_time,
    } = order(plan, tests, history);
    print_header(plan, total, trials.len(), jobs.len(), &notes);
    if !jobs.is_empty() {
        let cx = crate::preflight::PreflightCx {
            target: plan.target.clone(),
        };
        match crate::preflight::run_all(&cx) {
            Ok(lines) => {
                for l in lines {
                    eprintln!("service-test: {l}");
                }
            }
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }

    let binary = crate::history::binary_name();
    let report_dir = reporting.as_ref().map(|r| r.dir.clone());
    let mut stream = Stream {
        binary: binary.clone(),
        seed,
        recent: jobs
            .iter()
            .map(|j| (j.name.clone(), history.recent(&j.name)))
            .collect(),
        sink: reporting.map(|r| r.sink),
        progress: crate::report::console::Progress::new(jobs.len()),
    };
    for (name, def) in &ignored {
        stream.ignored(name, def);
    }
    let defs: HashMap<String, &'static TestDef> =
        jobs.iter().map(|j| (j.name.clone(), j.def)).collect();
    let supervised = crate::supervisor::wanted() && !single && !jobs.is_empty();
    let run_leaks = plan.run_leak_check(one_at_a_time);
    let (conclusion, ran) = match execute(plan, supervised, run_leaks, jobs, trials, stream) {
        Ok(done) => done,
        Err(code) => return code,
    };
    let Ran {
        records,
        teardown_failures,
        interrupted,
    } = ran;
    let interrupted = interrupted.or(crate::signals::signal());
    if plan.junit || crate::env::github_actions() {
        let lines: Vec<ResultLine> = records
            .iter()
            .filter_map(|r| {
                let def = defs.get(&r.name)?;
                Some(ResultLine::new(&binary, def, r, seed, Default::default()))
            })
            .collect();
        if let Err(e) = ci_outputs(plan, &lines, &binary) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    print_summary(plan, &records);
    if !single {
        history.record(&records);
        history.save();
    }
    if let Some(dir) = report_dir {
        let info = report::RunInfo {
            binary,
            seed,
            wall_s: started.elapsed().as_secs_f64(),
            started_unix,
            partition: plan.partition.map(|p| p.to_string()),
        };
        let written = JsonlSink::open(&dir, report::RUNS)
            .and_then(|mut runs| runs.write(&info))
            .and_then(|()| report::read_dir(&dir))
            .and_then(|(lines, runs)| report::write_reports(&dir, &lines, &runs));
        match written {
            Ok(()) => eprintln!("service-test: reports written to {}", dir.display()),
            Err(e) => {
                eprintln!("error: writing reports: {e} (results.jsonl keeps every finished test)");
                return ExitCode::FAILURE;
            }
        }
    }
    if !teardown_failures.is_empty() {
        for f in &teardown_failures {
            eprintln!("error: {}", crate::redaction::redact(f));
        }
        return ExitCode::FAILURE;
    }
    if let Some(sig) = interrupted {
        eprintln!(
            "service-test: interrupted by signal {sig}; unfinished tests are reported not-run"
        );
        return ExitCode::from(128 + sig.clamp(0, 127) as u8);
    }
    conclusion.exit_code()
}

/// Runs the jobs, supervised (in worker processes, the console on this
/// thread) or in this process, while libtest-mimic shows the trials.
/// `Err` is the exit code of a run that could not start.
fn execute(
    plan: &RunPlan,
    supervised: bool,
    run_leaks: crate::config::Leaks,
    jobs: Vec<Job>,
    trials: Vec<Trial>,
    stream: Stream,
) -> Result<(libtest_mimic::Conclusion, Ran), ExitCode> {
    let args = &plan.libtest;
    let mut one_thread = args.clone();
    one_thread.test_threads = Some(1);
    if plan.junit {
        // The XML is the output, written at the end; the console is not.
        one_thread.logfile = Some("/dev/null".to_string());
    }
    if supervised {
        let isolation = plan.isolation;
        let supervisor_plan = crate::supervisor::Plan {
            names: jobs.iter().map(|j| j.name.clone()).collect(),
            args: std::env::args_os().skip(1).collect(),
            seed: plan.seed,
            max_fail: plan.max_fail,
            isolated: jobs
                .iter()
                .filter(|j| {
                    isolation == crate::config::Isolation::Process
                        || j.def.isolated
                        || crate::guards::needs_isolation(j.def)
                })
                .map(|j| j.name.clone())
                .collect(),
            exclusive: jobs
                .iter()
                .filter(|j| j.def.exclusive)
                .map(|j| j.name.clone())
                .collect(),
            isolated_at_once: plan.isolated_at_once,
            timeouts: jobs
                .iter()
                .map(|j| (j.name.clone(), j.policy.timeout))
                .collect(),
            live_output: args.nocapture,
            capture_limit: plan.capture_limit,
            leak_timeout: plan.leak_timeout,
        };
        let workers =
            std::thread::spawn(move || super::in_workers::run(supervisor_plan, jobs, stream));
        let conclusion = libtest_mimic::run(&one_thread, trials);
        return match workers.join() {
            Ok(ran) => Ok((conclusion, ran)),
            Err(_) => {
                eprintln!("error: harness bug: the supervisor thread panicked");
                Err(ExitCode::FAILURE)
            }
        };
    }
    // This process runs the tests and prints to the console itself: its
    // output is redacted here (see `crate::output`).
    if let Err(e) = crate::output::install() {
        eprintln!("error: cannot redirect the tests' output through redaction: {e}");
        return Err(ExitCode::FAILURE);
    }
    let run = RunShared::new(plan.seed, plan.target.clone());
    let runtime = match start_in_process() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return Err(ExitCode::FAILURE);
        }
    };
    let scheduler = runtime.spawn(supervise(
        run,
        jobs,
        plan.concurrency,
        plan.max_fail,
        run_leaks,
        stream,
    ));
    let conclusion = libtest_mimic::run(&one_thread, trials);
    let done = runtime.block_on(scheduler);
    // A sync test that timed out may still hold a blocking thread; don't wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match done {
        Ok((records, teardown_failures)) => Ok((
            conclusion,
            Ran {
                records,
                teardown_failures,
                interrupted: None,
            },
        )),
        Err(e) => {
            eprintln!("error: the scheduler failed: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// After the console: the flaky tests, `--durations`, the slow ones.
fn print_summary(plan: &RunPlan, records: &[TestRecord]) {
    let flaky: Vec<&TestRecord> = records.iter().filter(|r| r.flaky).collect();
    if !flaky.is_empty() {
        eprintln!(
            "\nflaky: {} test(s) passed only after failing:",
            flaky.len()
        );
        for r in &flaky {
            eprintln!(
                "    {} (passed on attempt {}; {})",
                r.name,
                r.attempts,
                crate::redaction::redact(&r.earlier_failures.join("; "))
            );
        }
    }
    if let Some(n) = plan.durations.filter(|n| *n > 0) {
        crate::report::console::print_durations(records, n);
    }
    let slow = records.iter().filter(|r| r.slow).count();
    if slow > 0 {
        eprintln!("service-test: {slow} test(s) ran past their slow-timeout (shown SLOW)");
    }
}

/// `--format junit` (to stdout or `--logfile`) and, under GitHub Actions,
/// an annotation per failure (on stderr when stdout carries the XML).
fn ci_outputs(plan: &RunPlan, lines: &[ResultLine], binary: &str) -> Result<(), String> {
    let annotations = crate::env::github_actions();
    let xml_on_stdout = plan.junit && plan.libtest.logfile.is_none();
    if annotations {
        let text = report::github_annotations(lines);
        if xml_on_stdout {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
    if !plan.junit {
        return Ok(());
    }
    let run = report::RunInfo {
        binary: binary.to_string(),
        seed: plan.seed,
        wall_s: 0.0,
        started_unix: 0,
        partition: None,
    };
    let xml = report::junit_xml(lines, &[run]).map_err(|e| format!("--format junit: {e}"))?;
    match &plan.libtest.logfile {
        Some(path) => std::fs::write(path, xml)
            .map_err(|e| format!("--format junit: writing --logfile {path}: {e}")),
        None => {
            println!("{xml}");
            Ok(())
        }
    }
}

/// What a run produced, in process or in workers.
pub(super) struct Ran {
    pub(super) records: Vec<TestRecord>,
    pub(super) teardown_failures: Vec<String>,
    pub(super) interrupted: Option<i32>,
}
