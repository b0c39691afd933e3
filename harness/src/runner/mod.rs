//! One run of a test binary, from the command line to the exit code:
//! registry → filter → order → schedule → execute → report → history.
//!
//! libtest-mimic prints the console (so cargo and nextest read it as
//! libtest's) and applies libtest's name filters; execution is ours. Our
//! scheduler starts the selected tests on a tokio runtime before
//! libtest-mimic is called; libtest-mimic then walks the same tests on one
//! thread, each trial waiting for its result. Output therefore comes in
//! start order, while tests run concurrently.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::Parser;
use libtest_mimic::Trial;
use tokio::sync::oneshot;

use crate::cli::Cli;
use crate::events::{Event, Outcome, TestRecord};
use crate::execute::{TestPolicy, run_test};
use crate::fixture::RunShared;
use crate::history::History;
use crate::marker::{Expr, known_markers};
use crate::registry::{TestDef, group_limits, registered_tests};
use crate::report::{self, JsonlSink, ResultLine};
use crate::schedule::{Pending, dispatch, longest_first};

/// Exit code for bad input (a malformed or unknown marker expression), as
/// clap uses for bad flags.
const EXIT_USAGE: u8 = 2;

/// Parses the command line and runs the registered tests. The body of
/// [`main!`](crate::main!).
pub fn run() -> ExitCode {
    let (args, junit) = crate::cli::take_junit_format(std::env::args_os());
    let mut cli = Cli::parse_from(args);
    cli.junit = junit;
    run_with(cli)
}

/// Runs the registered tests with already-parsed arguments.
pub fn run_with(cli: Cli) -> ExitCode {
    let code = run_cli(cli);
    // What the tests and the console printed, through the pumps, before
    // the process ends.
    crate::output::sync();
    code
}

fn run_cli(mut cli: Cli) -> ExitCode {
    if inventory::iter::<TestDef>.into_iter().next().is_none() {
        eprintln!(
            "error: this test binary has no registered tests.\n  \
             #[service_test] functions register themselves when their crate is linked; if they \
             live in another crate, name it from this binary (`use that_crate as _;`)."
        );
        return ExitCode::FAILURE;
    }

    let expr_src = cli.marker_expression();
    let expr = match expr_src.as_deref().map(parse_checked) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(message)) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let seed = match cli.seed() {
        Ok(s) => s.unwrap_or_else(crate::seed::fresh_seed),
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };

    if cli.markers {
        print_markers();
        return ExitCode::SUCCESS;
    }

    let config = match crate::config::Config::discover(cli.profile().as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    crate::capture::set_level(config.run.log_level.unwrap_or_default());
    crate::redaction::set(config.redacts());
    // A zygote forks a worker per isolated test from here: arguments and
    // config settled, no thread or runtime yet (see `crate::zygote`).
    if crate::env::role() == crate::env::Role::Zygote {
        match crate::zygote::serve() {
            crate::zygote::Served::Exit(code) => return ExitCode::from(code),
            crate::zygote::Served::Child => {}
        }
    }
    if crate::env::is_worker() {
        return run_as_worker(&cli, &config, seed);
    }
    if crate::env::role() == crate::env::Role::Host {
        return crate::host::run_as_host(seed, cli.target());
    }
    let partition = match cli.partition() {
        Ok(p) => p,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };

    // Several name filters (libtest-mimic applies one): a test runs if any
    // matches; they are applied here and libtest-mimic is given none.
    let several: Option<(Vec<String>, bool)> = (!cli.more_filters.is_empty()).then(|| {
        let filters = cli.filters().into_iter().map(str::to_string).collect();
        (filters, cli.libtest.exact)
    });
    if several.is_some() {
        cli.libtest.filter = None;
    }
    let args = &cli.libtest;
    let exact = match (&args.filter, args.exact, args.skip.is_empty()) {
        (Some(name), true, true) => Some(name.as_str()),
        _ => None,
    };
    // One test under `--exact` (nextest's way) reads no history.
    let lone = exact.is_some() && partition.is_none() && !cli.last_failed && !cli.failed_first;
    let mut history = if lone {
        History::default()
    } else if let Some(path) = &cli.history {
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
            exact,
            marker: expr.as_ref(),
            partition,
            last_failed: cli.last_failed,
            failed_first: cli.failed_first,
        },
        &history,
    );
    if let (Some(path), false) = (&cli.history, lone) {
        selection.notes.insert(
            0,
            format!(
                "history from {} ({} tests)",
                path.display(),
                history.tests.len()
            ),
        );
    }
    if let Some((filters, exact)) = &several {
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

    if args.list {
        if matches!(args.format, Some(libtest_mimic::FormatSetting::Json)) {
            return list_json(&cli, &config, &selection.tests);
        }
        let trials = selection
            .tests
            .iter()
            .map(|(name, def)| Trial::test(name.clone(), || Ok(())).with_ignored_flag(def.ignored))
            .collect();
        return libtest_mimic::run(args, trials).exit_code();
    }

    let report_dir = cli.report_dir.clone().or_else(|| {
        let dir = config.run.report_dir.as_ref()?;
        Some(match config.root() {
            Some(root) if dir.is_relative() => root.join(dir),
            _ => dir.clone(),
        })
    });
    let reporting = match report_dir {
        None => None,
        Some(dir) => match JsonlSink::open(&dir, report::RESULTS) {
            Ok(sink) => Some(Reporting { dir, sink }),
            Err(e) => {
                eprintln!("error: --report-dir: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    run_selected(
        &cli,
        &config,
        selection,
        expr_src.as_deref(),
        seed,
        &mut history,
        reporting,
        partition,
    )
}

/// A worker (see [`crate::worker`]): runs the tests named on standard
/// input in this process and reports to the supervisor; never prints the
/// console, writes reports or history, or runs preflight checks (the
/// supervisor did).
fn run_as_worker(cli: &Cli, config: &crate::config::Config, seed: u64) -> ExitCode {
    if let Err(e) = crate::worker::install() {
        eprintln!("error: worker: cannot set up the event channel: {e}");
        return ExitCode::FAILURE;
    }
    let names = crate::worker::read_names();
    if let Err(e) = crate::worker::map_started(&names) {
        eprintln!("error: worker: cannot map the started-tests file: {e}");
        return ExitCode::FAILURE;
    }
    let concurrency = cli.concurrency(config.run.test_threads);
    let one_at_a_time = concurrency == 1 || names.len() == 1;
    let max_fail = max_fail(cli, config);
    let run_leaks = run_leak_check(config, one_at_a_time);
    let jobs: Vec<Job> = crate::registry::find_by_names(&names)
        .into_iter()
        .map(|(name, def)| {
            let (tx, _) = oneshot::channel();
            Job {
                name,
                def,
                policy: job_policy(cli, config, def, one_at_a_time),
                tx,
            }
        })
        .collect();
    let stream = Stream {
        binary: crate::history::binary_name(),
        seed,
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
    let run = RunShared::new(seed, cli.target());
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

/// After how many failures no new test starts: `--fail-fast` (1), else
/// `--max-fail`, else the profile's `max-fail`, else its `fail-fast`.
fn max_fail(cli: &Cli, config: &crate::config::Config) -> Option<usize> {
    if cli.fail_fast {
        return Some(1);
    }
    cli.max_fail
        .map(|n| n as usize)
        .or(config.run.max_fail)
        .or(config.run.fail_fast.unwrap_or(false).then_some(1))
}

/// The leak check at the run's end: only when tests run several at once
/// (one at a time, each test is checked itself; see [`crate::leak`]).
fn run_leak_check(config: &crate::config::Config, one_at_a_time: bool) -> crate::config::Leaks {
    if one_at_a_time {
        crate::config::Leaks::Off
    } else {
        config.settings.leaks.unwrap_or_default()
    }
}

/// The policy of one test: its attribute, then the command line, then the
/// profile's overrides and the profile (see [`crate::config`]).
fn policy_for(cli: &Cli, config: &crate::config::Config, def: &TestDef) -> TestPolicy {
    let s = config.settings_for(def.markers);
    let mut retry =
        crate::retry::RetryPolicy::from_settings(s.retries.as_ref(), s.retry_on.as_ref());
    if let Some(n) = def.retries.or(cli.retries) {
        retry.count = n;
    }
    if cli.nextest_retries() {
        // nextest retries this test itself: one layer of retries, not two.
        retry.count = 0;
    }
    TestPolicy {
        timeout: def
            .timeout
            .or(cli.timeout)
            .or(s.timeout.map(|d| d.0))
            .unwrap_or(crate::cli::DEFAULT_TIMEOUT),
        slow_timeout: Some(s.slow_timeout.map_or(DEFAULT_SLOW_TIMEOUT, |d| d.0))
            .filter(|d| !d.is_zero()),
        retry,
        flaky_fails: s.flaky_result == Some(crate::config::FlakyResult::Fail),
        require_services: cli.require_services(),
        leaks: s.leaks.unwrap_or_default(),
    }
}

/// The policy a test runs under: [`policy_for`], with the per-test leak
/// check only when tests run one at a time (otherwise leaks are checked
/// once at the run's end; see [`crate::leak`]).
fn job_policy(
    cli: &Cli,
    config: &crate::config::Config,
    def: &TestDef,
    one_at_a_time: bool,
) -> Arc<TestPolicy> {
    let mut policy = policy_for(cli, config, def);
    if !one_at_a_time {
        policy.leaks = crate::config::Leaks::Off;
    }
    Arc::new(policy)
}

/// When a test still running is shown `SLOW`, unless the profile says otherwise.
const DEFAULT_SLOW_TIMEOUT: Duration = Duration::from_secs(60);

/// `--list --format json`: one JSON document describing every selected test.
fn list_json(
    cli: &Cli,
    config: &crate::config::Config,
    tests: &[(String, &'static TestDef)],
) -> ExitCode {
    let entries: Vec<serde_json::Value> = tests
        .iter()
        .map(|(name, def)| {
            let p = policy_for(cli, config, def);
            serde_json::json!({
                "name": name,
                "function": def.fn_name,
                "case": def.case.map(|c| serde_json::json!({"index": c.index, "name": c.name})),
                "markers": def.markers,
                "services": def.services,
                "group": def.group,
                "exclusive": def.exclusive,
                "isolated": def.isolated,
                "timeout_s": p.timeout.as_secs_f64(),
                "slow_timeout_s": p.slow_timeout.map(|d| d.as_secs_f64()),
                "retries": p.retry.count,
                "ignored": def.ignored,
                "ignore_reason": def.ignore,
                "source": {"file": def.file, "line": def.line},
            })
        })
        .collect();
    let doc = serde_json::json!({
        "binary": crate::history::binary_name(),
        "profile": config.name,
        "config": config.path.as_ref().map(|p| p.display().to_string()),
        "tests": entries,
    });
    match serde_json::to_string_pretty(&doc) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: --list --format json: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where finished tests are reported.
struct Reporting {
    dir: std::path::PathBuf,
    sink: JsonlSink,
}

fn parse_checked(src: &str) -> Result<Expr, String> {
    let expr = Expr::parse(src).map_err(|e| e.to_string())?;
    let known = known_markers();
    let names: Vec<&str> = known.iter().map(|m| m.name).collect();
    expr.check_known(src, &names).map_err(|e| e.to_string())?;
    Ok(expr)
}

fn print_markers() {
    let tests = registered_tests();
    let known = known_markers();
    let width = known.iter().map(|m| m.name.len()).max().unwrap_or(0);
    println!("{} markers, {} tests:", known.len(), tests.len());
    for m in &known {
        let n = tests.iter().filter(|(_, d)| d.has_marker(m.name)).count();
        let builtin = if crate::marker::markers::ALL.contains(m) {
            ""
        } else {
            " (user)"
        };
        println!(
            "  {:width$}  {n:>5} test{}  {}{builtin}",
            m.name,
            if n == 1 { " " } else { "s" },
            m.description
        );
    }
}

/// A selected test on its way to the scheduler.
struct Job {
    name: String,
    def: &'static TestDef,
    policy: Arc<TestPolicy>,
    tx: oneshot::Sender<TestRecord>,
}

#[allow(clippy::too_many_arguments)]
fn run_selected(
    cli: &Cli,
    config: &crate::config::Config,
    selection: crate::select::Selection,
    expr_src: Option<&str>,
    seed: u64,
    history: &mut History,
    reporting: Option<Reporting>,
    partition: Option<crate::partition::Partition>,
) -> ExitCode {
    let started = std::time::Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let args = &cli.libtest;
    let single = selection.single;
    let total = selection.total;
    let concurrency = cli.concurrency(config.run.test_threads);
    let one_at_a_time = concurrency == 1 || selection.tests.len() == 1;
    let run_leaks = run_leak_check(config, one_at_a_time);
    let max_fail = max_fail(cli, config);

    // Trials for libtest-mimic, each waiting on its result; the ones
    // libtest-mimic will actually run go to our scheduler, in the same order.
    let mut entries: Vec<(Trial, Option<Job>)> = selection
        .tests
        .into_iter()
        .map(|(name, def)| {
            let (tx, rx) = oneshot::channel::<TestRecord>();
            let trial = crate::report::console::trial_waiting_for(name.clone(), seed, rx)
                .with_ignored_flag(def.ignored);
            let policy = job_policy(cli, config, def, one_at_a_time);
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
    if cli.failed_first {
        // Stable: the failed keep their longest-first order, as do the rest.
        entries.sort_by_key(|(t, _)| !history.failed_last(t.name()));
    }

    let mut trials = Vec::with_capacity(entries.len());
    let mut jobs = Vec::new();
    for (trial, job) in entries {
        trials.push(trial);
        jobs.extend(job);
    }

    let selection_notes = selection.notes;
    let selection = match expr_src {
        Some(src) => format!("{} of {total} tests match `{src}`", trials.len()),
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
    eprintln!(
        "service-test: seed {seed} (repeat with --seed {seed}); {selection}; {} to run, up to {concurrency} at once{profile}",
        jobs.len()
    );
    if !config.redacts() {
        eprintln!("{}", crate::redaction::notice(&config.name));
    }
    for note in &selection_notes {
        eprintln!("service-test: {note}");
    }

    let target = cli.target();
    if let Some(t) = &target {
        let shown = std::fs::canonicalize(t).unwrap_or_else(|_| t.clone());
        eprintln!("service-test: target file {}", shown.display());
    }
    if !jobs.is_empty() {
        let cx = crate::preflight::PreflightCx {
            target: target.clone(),
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

    let mut one_thread = args.clone();
    one_thread.test_threads = Some(1);
    let defs: HashMap<String, &'static TestDef> =
        jobs.iter().map(|j| (j.name.clone(), j.def)).collect();
    if cli.junit {
        // The XML is the output, written at the end; the console is not.
        one_thread.logfile = Some("/dev/null".to_string());
    }
    let supervised = crate::supervisor::wanted() && !single && !jobs.is_empty();
    let (conclusion, ran) = if supervised {
        let isolation = cli.isolation.or(config.run.isolation).unwrap_or_default();
        let plan = crate::supervisor::Plan {
            names: jobs.iter().map(|j| j.name.clone()).collect(),
            args: std::env::args_os().skip(1).collect(),
            seed,
            max_fail,
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
            isolated_at_once: args
                .test_threads
                .or(config.run.test_threads)
                .unwrap_or_else(crate::schedule::default_isolated_concurrency),
            timeouts: jobs
                .iter()
                .map(|j| (j.name.clone(), j.policy.timeout))
                .collect(),
            live_output: args.nocapture,
            capture_limit: config
                .run
                .capture_limit
                .unwrap_or(crate::supervisor::CAPTURE_LIMIT),
            leak_timeout: config
                .run
                .leak_timeout
                .map_or(crate::supervisor::LEAK_TIMEOUT, |d| d.0),
        };
        let workers = std::thread::spawn(move || in_workers(plan, jobs, stream));
        let conclusion = libtest_mimic::run(&one_thread, trials);
        match workers.join() {
            Ok(ran) => (conclusion, ran),
            Err(_) => {
                eprintln!("error: harness bug: the supervisor thread panicked");
                return ExitCode::FAILURE;
            }
        }
    } else {
        // This process runs the tests and prints to the console itself:
        // its output is redacted here (see `crate::output`).
        if let Err(e) = crate::output::install() {
            eprintln!("error: cannot redirect the tests' output through redaction: {e}");
            return ExitCode::FAILURE;
        }
        let run = RunShared::new(seed, target);
        let runtime = match start_in_process() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the tokio runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let scheduler = runtime.spawn(supervise(
            run,
            jobs,
            concurrency,
            max_fail,
            run_leaks,
            stream,
        ));
        let conclusion = libtest_mimic::run(&one_thread, trials);
        let done = runtime.block_on(scheduler);
        // A sync test that timed out may still hold a blocking thread; don't wait for it.
        runtime.shutdown_timeout(Duration::from_millis(200));
        match done {
            Ok((records, teardown_failures)) => (
                conclusion,
                Ran {
                    records,
                    teardown_failures,
                    interrupted: None,
                },
            ),
            Err(e) => {
                eprintln!("error: the scheduler failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let Ran {
        records,
        teardown_failures,
        interrupted,
    } = ran;
    let interrupted = interrupted.or(crate::signals::signal());
    if cli.junit || crate::env::github_actions() {
        let lines: Vec<ResultLine> = records
            .iter()
            .filter_map(|r| {
                let def = defs.get(&r.name)?;
                Some(ResultLine::new(&binary, def, r, seed, Default::default()))
            })
            .collect();
        if let Err(e) = ci_outputs(cli, &lines, seed, &binary) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }

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
    if let Some(n) = cli.durations.filter(|n| *n > 0) {
        crate::report::console::print_durations(&records, n);
    }
    let slow = records.iter().filter(|r| r.slow).count();
    if slow > 0 {
        eprintln!("service-test: {slow} test(s) ran past their slow-timeout (shown SLOW)");
    }
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
            partition: partition.map(|p| p.to_string()),
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

/// `--format junit` (to stdout or `--logfile`) and, under GitHub Actions,
/// an annotation per failure (on stderr when stdout carries the XML).
fn ci_outputs(cli: &Cli, lines: &[ResultLine], seed: u64, binary: &str) -> Result<(), String> {
    let annotations = crate::env::github_actions();
    let xml_on_stdout = cli.junit && cli.libtest.logfile.is_none();
    if annotations {
        let text = report::github_annotations(lines);
        if xml_on_stdout {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
    if !cli.junit {
        return Ok(());
    }
    let run = report::RunInfo {
        binary: binary.to_string(),
        seed,
        wall_s: 0.0,
        started_unix: 0,
        partition: None,
    };
    let xml = report::junit_xml(lines, &[run]).map_err(|e| format!("--format junit: {e}"))?;
    match &cli.libtest.logfile {
        Some(path) => std::fs::write(path, xml)
            .map_err(|e| format!("--format junit: writing --logfile {path}: {e}")),
        None => {
            println!("{xml}");
            Ok(())
        }
    }
}

/// What a run produced, in process or in workers.
struct Ran {
    records: Vec<TestRecord>,
    teardown_failures: Vec<String>,
    interrupted: Option<i32>,
}

/// Installs what in-process execution needs (panic locations, log capture)
/// and starts the runtime tests run on.
fn start_in_process() -> std::io::Result<tokio::runtime::Runtime> {
    crate::panic::install_hook();
    crate::capture::install();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(crate::schedule::cores())
        .enable_all()
        .build()
}

/// Runs the jobs in supervised worker processes (see [`crate::supervisor`]),
/// streaming each record to the console, the reports and the progress line.
fn in_workers(plan: crate::supervisor::Plan, jobs: Vec<Job>, mut stream: Stream) -> Ran {
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

/// Runs the jobs through the scheduler, tearing down each module's suite
/// fixtures after its last test and the session's at the end. Returns every
/// record and the failures of suite and session teardowns.
/// Where each finished test goes as it finishes: the results stream and
/// the progress line.
struct Stream {
    binary: String,
    seed: u64,
    recent: HashMap<String, crate::events::Recent>,
    sink: Option<JsonlSink>,
    progress: crate::report::console::Progress,
}

impl Stream {
    /// An ignored test is reported skipped, with its reason.
    fn ignored(&mut self, name: &str, def: &TestDef) {
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

    fn finished(&mut self, def: &TestDef, record: &TestRecord) {
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

async fn supervise(
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
