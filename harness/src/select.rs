//! Selection: which registered tests this run considers, and in what
//! order they are offered to the scheduler.
//!
//! The stages, in order: `--exact NAME` alone looks the test up by name (as
//! nextest runs each test); otherwise every registered test, then the
//! marker expression, the partition, `--last-failed`, and `--failed-first`.
//! Name filters, `--skip` and ignored tests are libtest's and applied by the
//! console after this.

use crate::history::History;
use crate::marker::Expr;
use crate::partition::Partition;
use crate::registry::{TestDef, find_by_names, registered_tests};

/// The tests one run considers, with how they were chosen.
#[derive(Debug)]
pub struct Selection {
    /// The tests, in the order the run offers them.
    pub tests: Vec<(String, &'static TestDef)>,
    /// How many tests were registered (or looked up, under `--exact`).
    pub total: usize,
    /// One test looked up by `--exact NAME`: no history, no reordering.
    pub single: bool,
    /// Lines for the run's header (e.g. `--last-failed` found nothing).
    pub notes: Vec<String>,
}

/// What selection reads from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Criteria<'a> {
    /// `--exact` with a name and no `--skip`.
    pub exact: Option<&'a str>,
    /// The marker expression.
    pub marker: Option<&'a Expr>,
    /// The shard.
    pub partition: Option<Partition>,
    /// `--last-failed`.
    pub last_failed: bool,
    /// `--failed-first`.
    pub failed_first: bool,
}

/// Selects the tests `criteria` asks for. `history` gives durations (for
/// `duration:K/N`) and last outcomes.
pub fn select(criteria: Criteria<'_>, history: &History) -> Selection {
    let mut notes = Vec::new();
    // nextest runs each test as `--exact NAME`: look it up, don't build the
    // list (a partition needs the whole list to deal from).
    let candidates: Vec<(String, &'static TestDef)> = match (criteria.exact, criteria.partition) {
        (Some(name), None) => find_by_names(&[name.to_string()]),
        _ => registered_tests(),
    };
    let total = candidates.len();
    let mut tests: Vec<(String, &'static TestDef)> = match criteria.marker {
        Some(e) => candidates
            .into_iter()
            .filter(|(_, d)| e.matches(d.markers))
            .collect(),
        None => candidates,
    };
    if let Some(p) = criteria.partition {
        let recorded = |ts: &[(String, &'static TestDef)]| -> (f64, usize) {
            let known: Vec<f64> = ts
                .iter()
                .filter_map(|(n, _)| history.duration_s(n))
                .collect();
            (known.iter().sum(), ts.len() - known.len())
        };
        let (all_s, _) = recorded(&tests);
        let of = tests.len();
        tests = p.select(tests, |(name, _)| name.as_str(), |n| history.duration_s(n));
        if let Partition::Duration { .. } = p {
            // What this shard was dealt, for comparing shards' logs: shards
            // that read different histories deal differently.
            let (mine_s, untimed) = recorded(&tests);
            notes.push(format!(
                "{p}: {} of {of} tests, {mine_s:.1} s of the {all_s:.1} s recorded ({untimed} never timed)",
                tests.len()
            ));
        }
    }
    let single = criteria.exact.is_some() && tests.len() == 1;
    if criteria.last_failed {
        let failed: Vec<(String, &'static TestDef)> = tests
            .iter()
            .filter(|(name, _)| history.failed_last(name))
            .cloned()
            .collect();
        if failed.is_empty() {
            notes.push(format!(
                "--last-failed: no test failed last time; running all {} selected",
                tests.len()
            ));
        } else {
            tests = failed;
        }
    }
    if criteria.failed_first {
        let n = tests.iter().filter(|(n, _)| history.failed_last(n)).count();
        notes.push(format!(
            "--failed-first: {n} test(s) that failed last time go first"
        ));
    }
    Selection {
        tests,
        total,
        single,
        notes,
    }
}
