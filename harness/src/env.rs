//! The environment protocol: every `SERVICE_TEST_*` variable a test binary
//! reads or sets, and the variables of its drivers (cargo, nextest, CI) it
//! reads, named and read here only.
//!
//! Two kinds:
//!
//! - **Settings** a user (or nextest, which passes no custom flags when it
//!   lists tests) gives instead of a flag: [`MARKER_ENV`], [`SEED_ENV`],
//!   [`PARTITION_ENV`], [`TARGET_ENV`], [`PROFILE_ENV`], [`CONFIG_ENV`],
//!   [`HISTORY_DIR_ENV`], [`REQUIRE_SERVICES_ENV`], and the switches
//!   [`SUPERVISOR_ENV`] and [`FORK_ENV`]. The command line wins where both
//!   exist (see `runner::plan`, where they are settled once).
//! - **Roles** the binary sets for the processes it starts from itself: a
//!   worker ([`WORKER_ENV`], with [`STARTED_MAP_ENV`] and
//!   [`STDOUT_FILE_ENV`]), the zygote ([`ZYGOTE_ENV`]), the host of session
//!   fixtures ([`HOST_ENV`]), and the handles file isolated tests attach
//!   through ([`HOSTED_FILE_ENV`]). A worker removes its own before its
//!   tests run, so what they start does not inherit them.
//!
//! The readers here are the only places these variables are read.

use std::ffi::OsString;
use std::path::PathBuf;

/// A marker expression, used when no `--marker` is given
/// (`SERVICE_TEST_MARKER="compliance" cargo nextest run`).
pub const MARKER_ENV: &str = "SERVICE_TEST_MARKER";

/// The run seed, used when no `--seed` is given; also how the supervisor
/// hands the run's seed to its workers, zygote and host.
pub const SEED_ENV: &str = "SERVICE_TEST_SEED";

/// A partition (`hash:1/3`), used when no `--partition` is given (nextest
/// lists tests without custom flags).
pub const PARTITION_ENV: &str = "SERVICE_TEST_PARTITION";

/// A target file, used when no `--target` is given (so `cargo nextest run`
/// can point the suites at a deployment).
pub const TARGET_ENV: &str = "SERVICE_TEST_TARGET";

/// The profile of the config file to apply, used when no `--profile` is given.
pub const PROFILE_ENV: &str = "SERVICE_TEST_PROFILE";

/// The config file to read instead of looking for `.config/service-test.toml`.
pub const CONFIG_ENV: &str = "SERVICE_TEST_CONFIG";

/// Where history is kept instead of `target/service-test/history/`.
pub const HISTORY_DIR_ENV: &str = "SERVICE_TEST_HISTORY_DIR";

/// `1` (or `true`): as `--require-services`.
pub const REQUIRE_SERVICES_ENV: &str = "SERVICE_TEST_REQUIRE_SERVICES";

/// Set to `0` to run tests in this process, without a supervisor.
pub const SUPERVISOR_ENV: &str = "SERVICE_TEST_SUPERVISOR";

/// Set to `0` to start each isolated test with exec instead of forking it
/// from a zygote.
pub const FORK_ENV: &str = "SERVICE_TEST_FORK";

/// Set (to `1`) in the environment of a worker process.
pub const WORKER_ENV: &str = "SERVICE_TEST_WORKER";

/// Names the file whose bytes mark the tests a worker started.
pub const STARTED_MAP_ENV: &str = "SERVICE_TEST_STARTED_MAP";

/// Names the file an isolated test's standard output goes to.
pub(crate) const STDOUT_FILE_ENV: &str = "SERVICE_TEST_STDOUT_FILE";

/// Set (to `1`) for the zygote the supervisor forks isolated tests from.
pub(crate) const ZYGOTE_ENV: &str = "SERVICE_TEST_ZYGOTE";

/// Set (to `1`) for the host process of session fixtures.
pub(crate) const HOST_ENV: &str = "SERVICE_TEST_HOST";

/// Names the file holding the hosted fixtures' handles.
pub(crate) const HOSTED_FILE_ENV: &str = "SERVICE_TEST_HOSTED_FILE";

/// Set by nextest for every test process of one run (a UUID).
pub const NEXTEST_RUN_ID_ENV: &str = "NEXTEST_RUN_ID";

/// Set by nextest: how many attempts it gives a test (retries + 1).
pub const NEXTEST_TOTAL_ATTEMPTS_ENV: &str = "NEXTEST_TOTAL_ATTEMPTS";

/// libtest's: how many tests run at once, when `--test-threads` is not given.
pub const TEST_THREADS_ENV: &str = "RUST_TEST_THREADS";

/// Set to `true` under GitHub Actions (failures become annotations).
pub const GITHUB_ACTIONS_ENV: &str = "GITHUB_ACTIONS";

/// The process roles a test binary may have been started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The zygote: forks a worker per isolated test.
    Zygote,
    /// A worker: runs the tests named on its standard input.
    Worker,
    /// The host of session fixtures for isolated tests.
    Host,
    /// Started by cargo, nextest or a user: selects, runs and reports.
    Main,
}

/// This process's role, from the variables its parent set (a zygote's
/// children are workers: it sets [`WORKER_ENV`] in each).
pub(crate) fn role() -> Role {
    let on = |name: &str| std::env::var_os(name).is_some_and(|v| v == "1");
    if on(ZYGOTE_ENV) {
        Role::Zygote
    } else if on(WORKER_ENV) {
        Role::Worker
    } else if on(HOST_ENV) {
        Role::Host
    } else {
        Role::Main
    }
}

/// Is this process a worker?
pub(crate) fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some_and(|v| v == "1")
}

/// Has the user turned the supervisor off (`SERVICE_TEST_SUPERVISOR=0`)?
pub(crate) fn supervisor_off() -> bool {
    std::env::var_os(SUPERVISOR_ENV).is_some_and(|v| v == "0")
}

/// Has the user turned forking off (`SERVICE_TEST_FORK=0`)?
pub(crate) fn fork_disabled() -> bool {
    std::env::var_os(FORK_ENV).is_some_and(|v| v == "0")
}

/// The marker expression of [`MARKER_ENV`], unless empty.
pub(crate) fn marker() -> Option<String> {
    std::env::var(MARKER_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// The seed of [`SEED_ENV`] (an error naming it when it is not a number);
/// else, under nextest (a process per test), one from [`NEXTEST_RUN_ID_ENV`],
/// so every process of one nextest run draws the same data.
pub(crate) fn seed() -> Result<Option<u64>, String> {
    match std::env::var(SEED_ENV) {
        Ok(v) => v.trim().parse().map(Some).map_err(|_| {
            format!("{SEED_ENV}={v:?} is not a seed: expected a whole number like 42")
        }),
        Err(_) => Ok(std::env::var(NEXTEST_RUN_ID_ENV)
            .ok()
            .filter(|id| !id.trim().is_empty())
            .map(|id| seed_of_run_id(&id))),
    }
}

/// A run seed from a nextest run id: short enough to type, as
/// [`crate::seed::fresh_seed`]'s are.
pub fn seed_of_run_id(id: &str) -> u64 {
    crate::seed::derive_seed(0, &["nextest-run", id.trim()]) % 1_000_000_000
}

/// The partition of [`PARTITION_ENV`], unless empty; an error names it.
pub(crate) fn partition() -> Result<Option<crate::partition::Partition>, String> {
    match std::env::var(PARTITION_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .parse()
            .map(Some)
            .map_err(|e| format!("{PARTITION_ENV}: {e}")),
        _ => Ok(None),
    }
}

/// The target file of [`TARGET_ENV`], unless empty.
pub(crate) fn target() -> Option<PathBuf> {
    std::env::var_os(TARGET_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The directory the user ran cargo from (`PWD`, which cargo passes on).
pub(crate) fn invoked_from() -> Option<PathBuf> {
    std::env::var_os("PWD").map(PathBuf::from)
}

/// The profile of [`PROFILE_ENV`], unless empty.
pub(crate) fn profile() -> Option<String> {
    std::env::var(PROFILE_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// The config file of [`CONFIG_ENV`], unless empty.
pub(crate) fn config_file() -> Option<PathBuf> {
    std::env::var_os(CONFIG_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The history directory of [`HISTORY_DIR_ENV`].
pub(crate) fn history_dir() -> Option<PathBuf> {
    std::env::var_os(HISTORY_DIR_ENV).map(PathBuf::from)
}

/// [`REQUIRE_SERVICES_ENV`] is `1` or `true`.
pub(crate) fn require_services() -> bool {
    std::env::var(REQUIRE_SERVICES_ENV).is_ok_and(|v| v == "1" || v == "true")
}

/// Does nextest retry this test itself (its [`NEXTEST_TOTAL_ATTEMPTS_ENV`]
/// is above 1)?
pub(crate) fn nextest_retries() -> bool {
    std::env::var(NEXTEST_TOTAL_ATTEMPTS_ENV)
        .ok()
        .and_then(|n| n.trim().parse::<u32>().ok())
        .is_some_and(|n| n > 1)
}

/// libtest's [`TEST_THREADS_ENV`], when a number.
pub(crate) fn test_threads() -> Option<usize> {
    std::env::var(TEST_THREADS_ENV).ok()?.parse().ok()
}

/// Under GitHub Actions?
pub(crate) fn github_actions() -> bool {
    std::env::var(GITHUB_ACTIONS_ENV).is_ok_and(|v| v == "true")
}

/// The started-tests file a worker was handed ([`STARTED_MAP_ENV`]).
pub(crate) fn started_map() -> Option<OsString> {
    std::env::var_os(STARTED_MAP_ENV)
}

/// The file an isolated test's standard output goes to ([`STDOUT_FILE_ENV`]).
pub(crate) fn stdout_file() -> Option<OsString> {
    std::env::var_os(STDOUT_FILE_ENV)
}

/// The hosted fixtures' handles file ([`HOSTED_FILE_ENV`]).
pub(crate) fn hosted_file() -> Option<OsString> {
    std::env::var_os(HOSTED_FILE_ENV)
}

/// Removes the variables the supervisor set for this worker, so the
/// processes its tests start do not inherit them.
///
/// # Safety
///
/// As [`std::env::remove_var`]: no other thread may read or write the
/// environment meanwhile (call it before any runtime or thread exists).
pub(crate) unsafe fn forget_worker_vars() {
    // SAFETY: the caller's promise.
    unsafe {
        std::env::remove_var(WORKER_ENV);
        std::env::remove_var(SEED_ENV);
        std::env::remove_var(STARTED_MAP_ENV);
    }
}

/// Removes [`STDOUT_FILE_ENV`] once read.
///
/// # Safety
///
/// As [`forget_worker_vars`].
pub(crate) unsafe fn forget_stdout_file() {
    // SAFETY: the caller's promise.
    unsafe { std::env::remove_var(STDOUT_FILE_ENV) };
}

/// In a zygote's child: it is a worker now, its test's standard output
/// going to `stdout`.
///
/// # Safety
///
/// As [`forget_worker_vars`] (the child of a fork has one thread).
pub(crate) unsafe fn become_forked_worker(stdout: &std::path::Path) {
    // SAFETY: the caller's promise.
    unsafe {
        std::env::remove_var(ZYGOTE_ENV);
        std::env::set_var(WORKER_ENV, "1");
        std::env::set_var(STDOUT_FILE_ENV, stdout);
    }
}
