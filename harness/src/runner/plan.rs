//! The run plan: the command line, the environment's settings (see
//! [`crate::env`]) and the config file's profile, weighed once into what
//! every stage reads. After [`RunPlan::settle`] nothing reads [`Cli`] or
//! the profile's run settings again; each test's settings come from
//! [`RunPlan::policy`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::Cli;
use crate::config::{Config, Isolation, Leaks};
use crate::execute::TestPolicy;
use crate::marker::{Expr, known_markers};
use crate::partition::Partition;
use crate::registry::TestDef;

/// When a test still running is shown `SLOW`, unless the profile says otherwise.
const DEFAULT_SLOW_TIMEOUT: Duration = Duration::from_secs(60);

/// What the command line asks for, settled.
pub(crate) enum Settled {
    /// `--markers`: list the markers (before any config file is read).
    ListMarkers,
    /// Run (or list) the tests under this plan.
    Run(Box<RunPlan>),
}

/// One run, settled: flags over environment variables over the profile.
pub(crate) struct RunPlan {
    /// The profile in force (its per-test settings and overrides are read
    /// through [`RunPlan::policy`]).
    pub(crate) config: Config,
    /// The marker expression as given, and parsed.
    pub(crate) marker: Option<(String, Expr)>,
    /// The run seed (given, or fresh).
    pub(crate) seed: u64,
    /// The shard this run is, if one.
    pub(crate) partition: Option<Partition>,
    /// The target file, found (see [`crate::cli::resolve_target`]).
    pub(crate) target: Option<PathBuf>,
    /// libtest's flags, for the console; with several name filters, its
    /// own filter is taken out (they are applied by [`RunPlan::filters`]).
    pub(crate) libtest: libtest_mimic::Arguments,
    /// Several name filters and `--exact`: a test runs if any matches.
    pub(crate) filters: Option<(Vec<String>, bool)>,
    /// `--last-failed`.
    pub(crate) last_failed: bool,
    /// `--failed-first`.
    pub(crate) failed_first: bool,
    /// `--history FILE`.
    pub(crate) history: Option<PathBuf>,
    /// `--durations N`.
    pub(crate) durations: Option<usize>,
    /// `--format junit`.
    pub(crate) junit: bool,
    /// `--report-dir`, else the profile's (relative to the config's root).
    pub(crate) report_dir: Option<PathBuf>,
    /// How many tests run at once in a process.
    pub(crate) concurrency: usize,
    /// After how many failures no new test starts.
    pub(crate) max_fail: Option<usize>,
    /// `--isolation`, else the profile's.
    pub(crate) isolation: Isolation,
    /// How many isolated tests run at once: `--test-threads`, else
    /// `RUST_TEST_THREADS`, else the profile's, else a default of its own
    /// (isolated tests wait in other processes, not on this one's threads).
    pub(crate) isolated_at_once: usize,
    /// How much of each stream of an isolated test is kept.
    pub(crate) capture_limit: usize,
    /// How long processes a worker left get before they are a leak.
    pub(crate) leak_timeout: Duration,
    /// `--timeout`.
    timeout: Option<Duration>,
    /// `--retries`.
    retries: Option<u32>,
    /// nextest retries each test itself.
    nextest_retries: bool,
    /// `--require-services` or its variable.
    require_services: bool,
}

impl RunPlan {
    /// Weighs the command line against the environment and the config
    /// file, in the order their errors are reported: the marker expression,
    /// the seed, (`--markers` stops here), the config file, the partition.
    /// `Err` is a usage error's message.
    pub(crate) fn settle(mut cli: Cli) -> Result<Settled, String> {
        let marker = match cli.marker_expression() {
            None => None,
            Some(src) => {
                let expr = parse_checked(&src)?;
                Some((src, expr))
            }
        };
        let seed = cli.seed()?.unwrap_or_else(crate::seed::fresh_seed);
        if cli.markers {
            return Ok(Settled::ListMarkers);
        }
        let config = Config::discover(cli.profile().as_deref()).map_err(|e| e.to_string())?;
        let partition = cli.partition()?;
        // Several name filters (libtest-mimic applies one): a test runs if
        // any matches; they are applied by `filters` and libtest-mimic is
        // given none.
        let filters: Option<(Vec<String>, bool)> = (!cli.more_filters.is_empty()).then(|| {
            let filters = cli.filters().into_iter().map(str::to_string).collect();
            (filters, cli.libtest.exact)
        });
        if filters.is_some() {
            cli.libtest.filter = None;
        }
        let report_dir = cli.report_dir.clone().or_else(|| {
            let dir = config.run.report_dir.as_ref()?;
            Some(match config.root() {
                Some(root) if dir.is_relative() => root.join(dir),
                _ => dir.clone(),
            })
        });
        let max_fail = if cli.fail_fast {
            Some(1)
        } else {
            cli.max_fail
                .map(|n| n as usize)
                .or(config.run.max_fail)
                .or(config.run.fail_fast.unwrap_or(false).then_some(1))
        };
        Ok(Settled::Run(Box::new(RunPlan {
            marker,
            seed,
            partition,
            target: cli.target(),
            filters,
            last_failed: cli.last_failed,
            failed_first: cli.failed_first,
            history: cli.history.clone(),
            durations: cli.durations,
            junit: cli.junit,
            report_dir,
            concurrency: cli.concurrency(config.run.test_threads),
            max_fail,
            isolation: cli.isolation.or(config.run.isolation).unwrap_or_default(),
            isolated_at_once: cli.isolated_concurrency(config.run.test_threads),
            capture_limit: config
                .run
                .capture_limit
                .unwrap_or(crate::supervisor::CAPTURE_LIMIT),
            leak_timeout: config
                .run
                .leak_timeout
                .map_or(crate::supervisor::LEAK_TIMEOUT, |d| d.0),
            timeout: cli.timeout,
            retries: cli.retries,
            nextest_retries: cli.nextest_retries(),
            require_services: cli.require_services(),
            libtest: cli.libtest,
            config,
        })))
    }

    /// What the plan sets for the whole process: the log level captured
    /// and whether output is redacted.
    pub(crate) fn apply_to_process(&self) {
        crate::capture::set_level(self.config.run.log_level.unwrap_or_default());
        crate::redaction::set(self.config.redacts());
    }

    /// The marker expression as given.
    pub(crate) fn marker_source(&self) -> Option<&str> {
        self.marker.as_ref().map(|(src, _)| src.as_str())
    }

    /// `--exact NAME` with one name and no `--skip`: the one test asked for.
    pub(crate) fn exact(&self) -> Option<&str> {
        match (
            &self.libtest.filter,
            self.libtest.exact,
            self.libtest.skip.is_empty(),
        ) {
            (Some(name), true, true) => Some(name.as_str()),
            _ => None,
        }
    }

    /// One test under `--exact` (nextest's way): it reads no history.
    pub(crate) fn lone(&self) -> bool {
        self.exact().is_some()
            && self.partition.is_none()
            && !self.last_failed
            && !self.failed_first
    }

    /// The leak check at the run's end: only when tests run several at once
    /// (one at a time, each test is checked itself; see [`crate::leak`]).
    pub(crate) fn run_leak_check(&self, one_at_a_time: bool) -> Leaks {
        if one_at_a_time {
            Leaks::Off
        } else {
            self.config.settings.leaks.unwrap_or_default()
        }
    }

    /// The policy of one test: its attribute, then the command line, then
    /// the profile's overrides and the profile (see [`crate::config`]).
    pub(crate) fn policy(&self, def: &TestDef) -> TestPolicy {
        let s = self.config.settings_for(def.markers);
        let mut retry =
            crate::retry::RetryPolicy::from_settings(s.retries.as_ref(), s.retry_on.as_ref());
        if let Some(n) = def.retries.or(self.retries) {
            retry.count = n;
        }
        if self.nextest_retries {
            // nextest retries this test itself: one layer of retries, not two.
            retry.count = 0;
        }
        TestPolicy {
            timeout: def
                .timeout
                .or(self.timeout)
                .or(s.timeout.map(|d| d.0))
                .unwrap_or(crate::cli::DEFAULT_TIMEOUT),
            slow_timeout: Some(s.slow_timeout.map_or(DEFAULT_SLOW_TIMEOUT, |d| d.0))
                .filter(|d| !d.is_zero()),
            retry,
            flaky_fails: s.flaky_result == Some(crate::config::FlakyResult::Fail),
            require_services: self.require_services,
            leaks: s.leaks.unwrap_or_default(),
        }
    }

    /// The policy a test runs under: [`RunPlan::policy`], with the per-test
    /// leak check only when tests run one at a time (otherwise leaks are
    /// checked once at the run's end; see [`crate::leak`]).
    pub(crate) fn job_policy(&self, def: &TestDef, one_at_a_time: bool) -> Arc<TestPolicy> {
        let mut policy = self.policy(def);
        if !one_at_a_time {
            policy.leaks = Leaks::Off;
        }
        Arc::new(policy)
    }
}

fn parse_checked(src: &str) -> Result<Expr, String> {
    let expr = Expr::parse(src).map_err(|e| e.to_string())?;
    let known = known_markers();
    let names: Vec<&str> = known.iter().map(|m| m.name).collect();
    expr.check_known(src, &names).map_err(|e| e.to_string())?;
    Ok(expr)
}
