//! One run of a test binary, from the command line to the exit code:
//! registry → filter → order → schedule → execute → report → history.
//!
//! libtest-mimic prints the console (so cargo and nextest read it as
//! libtest's) and applies libtest's name filters; execution is ours. Our
//! scheduler starts the selected tests on a tokio runtime before
//! libtest-mimic is called; libtest-mimic then walks the same tests on one
//! thread, each trial waiting for its result. Output therefore comes in
//! start order, while tests run concurrently.
//!
//! The stages, each a room of its own: this module chooses the process's
//! role in one place ([`crate::env::role`]) after the command line, the
//! environment and the config file are settled into one [`plan::RunPlan`];
//! every role and stage reads that plan, never the command line.
//!
//! - `plan`: the settled run and each test's policy.
//! - `main_role`: select, list or run, show, report (the binary as cargo
//!   or nextest started it); runs in this process (`in_process`) or in
//!   supervised workers (`in_workers`).
//! - `worker_role`, `host_role`: the binary started again by its supervisor.
//! - `listing`: `--markers` and `--list --format json`.

mod host_role;
mod in_process;
mod in_workers;
mod listing;
mod main_role;
mod plan;
mod worker_role;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::env::Role;
use crate::registry::TestDef;
use plan::{RunPlan, Settled};

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

/// Settles the plan, then runs this process's role under it.
fn run_cli(cli: Cli) -> ExitCode {
    if inventory::iter::<TestDef>.into_iter().next().is_none() {
        eprintln!(
            "error: this test binary has no registered tests.\n  \
             #[service_test] functions register themselves when their crate is linked; if they \
             live in another crate, name it from this binary (`use that_crate as _;`)."
        );
        return ExitCode::FAILURE;
    }
    let plan = match RunPlan::settle(cli) {
        Ok(Settled::Run(plan)) => plan,
        Ok(Settled::ListMarkers) => {
            listing::print_markers();
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    plan.apply_to_process();
    match crate::env::role() {
        // A zygote forks a worker per isolated test from here: the plan
        // settled, no thread or runtime yet (see `crate::zygote`). Each
        // child returns here a worker.
        Role::Zygote => match crate::zygote::serve() {
            crate::zygote::Served::Exit(code) => ExitCode::from(code),
            crate::zygote::Served::Child => worker_role::run(&plan),
        },
        Role::Worker => worker_role::run(&plan),
        Role::Host => host_role::run(&plan),
        Role::Main => main_role::run(&plan),
    }
}
