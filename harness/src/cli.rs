//! The test binary's command line: libtest's flags (so `cargo test` and
//! `cargo nextest run` drive it) plus the harness's own.
//!
//! nextest passes no custom flags when it lists tests, so the marker
//! expression, the seed and others can also come from the environment
//! (`SERVICE_TEST_MARKER`, `SERVICE_TEST_SEED`, …: the `env` module); the
//! methods here weigh each flag against its variable.

use std::time::Duration;

use clap::Parser;

/// Removes `--format junit` (or `--format=junit`) from a command line, and
/// says whether it was there: libtest-mimic's `--format` knows only
/// pretty, terse and json.
pub fn take_junit_format(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> (Vec<std::ffi::OsString>, bool) {
    let mut out = Vec::new();
    let mut junit = false;
    let mut args = args.into_iter().peekable();
    while let Some(a) = args.next() {
        if a == "--format=junit" {
            junit = true;
        } else if a == "--format" && args.peek().is_some_and(|v| v == "junit") {
            args.next();
            junit = true;
        } else {
            out.push(a);
        }
    }
    (out, junit)
}

/// The default per-test timeout (a test's own `timeout =` wins, `--timeout` sets it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Command-line arguments of a harness test binary.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "service-test",
    about = "A service test binary (libtest-compatible). Runs #[service_test] functions concurrently.",
    disable_version_flag = true
)]
pub struct Cli {
    /// libtest's own flags and the positional name filter.
    #[command(flatten)]
    pub libtest: libtest_mimic::Arguments,

    /// More name filters (libtest takes one; Bazel's sharding wrapper and
    /// others pass several): a test runs if any filter matches it.
    #[arg(value_name = "FILTERS")]
    pub more_filters: Vec<String>,

    /// Select tests by marker expression: names, `and`, `or`, `not`,
    /// parentheses (e.g. "integration and not slow"). Repeated flags are
    /// combined with `and`. Also read from SERVICE_TEST_MARKER.
    #[arg(long = "marker", short = 'm', value_name = "EXPR")]
    pub marker: Vec<String>,

    /// List every marker with its description and how many tests carry it.
    #[arg(long = "markers")]
    pub markers: bool,

    /// The run seed: same seed, same generated data. Printed at start and in
    /// every failure. Also read from SERVICE_TEST_SEED; random otherwise.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Default per-test timeout, e.g. 30s or 500ms (a test's own `timeout =` wins).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_timeout)]
    pub timeout: Option<Duration>,

    /// Re-run a failing test up to N more times; a pass after a failure is reported as flaky.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Stop starting tests after the first failure (the rest are reported not run).
    #[arg(long = "fail-fast")]
    pub fail_fast: bool,

    /// Stop starting tests after N failures (the rest are reported not run).
    #[arg(long = "max-fail", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_fail: Option<u64>,

    /// Run the tests that failed last time first, then the rest (pytest's --ff).
    #[arg(long = "failed-first")]
    pub failed_first: bool,

    /// At the end, print the N slowest tests with their durations.
    #[arg(long, value_name = "N")]
    pub durations: Option<usize>,

    /// How tests run: in-process (default: in one supervised worker that
    /// shares fixtures) or process (each test in a process of its own, its
    /// output captured, hidden on pass).
    #[arg(long, value_name = "in-process|process", value_parser = parse_isolation)]
    pub isolation: Option<crate::config::Isolation>,

    /// The profile of .config/service-test.toml to apply (default: `default`).
    /// Also read from SERVICE_TEST_PROFILE.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Write results.jsonl (streamed), runs.jsonl, junit.xml and report.md into DIR.
    #[arg(long = "report-dir", value_name = "DIR")]
    pub report_dir: Option<std::path::PathBuf>,

    /// Run one shard of N: hash:K/N, slice:K/N or duration:K/N (by recorded
    /// durations, so shards finish together). Also read from SERVICE_TEST_PARTITION.
    #[arg(long, value_name = "hash:K/N|slice:K/N|duration:K/N")]
    pub partition: Option<crate::partition::Partition>,

    /// Run only the tests that failed the last time they ran (all, if none did).
    #[arg(long = "last-failed")]
    pub last_failed: bool,

    /// Read durations and last outcomes (for duration:K/N, --last-failed,
    /// --failed-first, the longest-first order) from FILE instead of
    /// target/service-test/history/<binary>.json: a history that `cargo
    /// xtask report merge --history DIR` wrote, or a results.jsonl.
    /// The run still saves its own history to the usual place.
    #[arg(long, value_name = "FILE")]
    pub history: Option<std::path::PathBuf>,

    /// A test whose service (PostgreSQL, Redis, …) cannot be had fails
    /// instead of being skipped. Also set by SERVICE_TEST_REQUIRE_SERVICES=1.
    #[arg(long = "require-services")]
    pub require_services: bool,

    /// `--format junit` (libtest's, which libtest-mimic lacks): JUnit XML
    /// on stdout, or in `--logfile`, instead of the console. Taken from the
    /// command line by [`take_junit_format`] before it is parsed.
    #[arg(skip)]
    pub junit: bool,

    /// The system under test, described by a target file (TOML). Fixtures
    /// read it through `FixtureCx::target_file`; registered preflight checks
    /// run against it before any test. Also read from SERVICE_TEST_TARGET.
    #[arg(long, value_name = "FILE")]
    pub target: Option<std::path::PathBuf>,
}

fn parse_isolation(s: &str) -> Result<crate::config::Isolation, String> {
    match s {
        "in-process" => Ok(crate::config::Isolation::InProcess),
        "process" => Ok(crate::config::Isolation::Process),
        other => Err(format!("`{other}`: expected in-process or process")),
    }
}

impl Cli {
    /// The marker expression to apply: the `--marker` flags joined with
    /// `and`, else the environment variable, else none.
    pub fn marker_expression(&self) -> Option<String> {
        match self.marker.as_slice() {
            [] => crate::env::marker(),
            [one] => Some(one.clone()),
            many => Some(
                many.iter()
                    .map(|m| format!("({m})"))
                    .collect::<Vec<_>>()
                    .join(" and "),
            ),
        }
    }

    /// The seed from `--seed` or the environment; an unparsable environment
    /// value is an error naming the variable. Under nextest, which starts a
    /// process per test, a run given no seed takes one from `NEXTEST_RUN_ID`,
    /// so every process of one nextest run draws the same data.
    pub fn seed(&self) -> Result<Option<u64>, String> {
        if let Some(s) = self.seed {
            return Ok(Some(s));
        }
        crate::env::seed()
    }

    /// Does nextest retry this test itself (`--retries`, or a profile's)?
    /// Then the harness does not retry it too.
    pub fn nextest_retries(&self) -> bool {
        crate::env::nextest_retries()
    }

    /// Every positional name filter: libtest's one and the ones after it.
    pub fn filters(&self) -> Vec<&str> {
        self.libtest
            .filter
            .iter()
            .chain(&self.more_filters)
            .map(String::as_str)
            .collect()
    }

    /// `--require-services` or `SERVICE_TEST_REQUIRE_SERVICES=1`.
    pub fn require_services(&self) -> bool {
        self.require_services || crate::env::require_services()
    }

    /// The profile from `--profile` or the environment, if any.
    pub fn profile(&self) -> Option<String> {
        self.profile.clone().or_else(crate::env::profile)
    }

    /// The target file from `--target` or the environment, if any, found
    /// as [`resolve_target`] says (`PWD` is the directory the user ran
    /// cargo from, which cargo passes on unchanged).
    pub fn target(&self) -> Option<std::path::PathBuf> {
        let given = self.target.clone().or_else(crate::env::target)?;
        let cwd = std::env::current_dir().ok()?;
        let invoked = crate::env::invoked_from();
        Some(resolve_target(given, &cwd, invoked.as_deref()))
    }

    /// The partition from `--partition` or the environment.
    pub fn partition(&self) -> Result<Option<crate::partition::Partition>, String> {
        if self.partition.is_some() {
            return Ok(self.partition);
        }
        crate::env::partition()
    }

    /// How many tests may run at once: `--test-threads`, else
    /// `RUST_TEST_THREADS`, else the profile's `test-threads`, else
    /// [`crate::schedule::default_concurrency`].
    pub fn concurrency(&self, profile: Option<usize>) -> usize {
        self.chosen_concurrency(profile)
            .unwrap_or_else(crate::schedule::default_concurrency)
    }

    /// How many isolated tests may run at once (a process each): as
    /// [`Cli::concurrency`] chooses, else
    /// [`crate::schedule::default_isolated_concurrency`].
    pub fn isolated_concurrency(&self, profile: Option<usize>) -> usize {
        self.chosen_concurrency(profile)
            .unwrap_or_else(crate::schedule::default_isolated_concurrency)
    }

    /// The concurrency the user chose, if they chose one: `--test-threads`,
    /// else `RUST_TEST_THREADS`, else the profile's (0 is no choice).
    fn chosen_concurrency(&self, profile: Option<usize>) -> Option<usize> {
        self.libtest
            .test_threads
            .or_else(crate::env::test_threads)
            .filter(|n| *n > 0)
            .or(profile.filter(|n| *n > 0))
    }
}

/// Where a target file named `given` is: as given when absolute or found
/// from `cwd`; else in `invoked` (the directory the user ran cargo from:
/// `cargo test -p suites -- --target t.toml` runs the binary in `suites/`,
/// while the user named a file where they stand); else in a parent
/// directory of `cwd` up to the workspace root (the nearest holding a
/// `Cargo.lock`, or a `Cargo.toml` with `[workspace]`), never above it;
/// else as given (the error names it).
pub fn resolve_target(
    given: std::path::PathBuf,
    cwd: &std::path::Path,
    invoked: Option<&std::path::Path>,
) -> std::path::PathBuf {
    if given.is_absolute() || cwd.join(&given).exists() {
        return given;
    }
    if let Some(found) = invoked
        .filter(|d| d.is_absolute())
        .map(|d| d.join(&given))
        .filter(|p| p.is_file())
    {
        return found;
    }
    let Some(root) = cwd.ancestors().find(|d| is_workspace_root(d)) else {
        return given;
    };
    cwd.ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(root))
        .map(|d| d.join(&given))
        .find(|p| p.is_file())
        .unwrap_or(given)
}

/// Does `dir` hold a cargo workspace's root?
fn is_workspace_root(dir: &std::path::Path) -> bool {
    dir.join("Cargo.lock").is_file()
        || std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
}
