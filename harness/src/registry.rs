//! The registry: every `#[service_test]` in the binary, collected through
//! [`inventory`] before `main` runs.
//!
//! `#[service_test]` expands to an [`inventory::submit!`] of a [`TestDef`];
//! [`registered_tests`] reads them back sorted by name (inventory's order is
//! unspecified, and `--list` must be deterministic). Test groups declared
//! with [`test_group!`](crate::test_group!) are collected the same way.

use std::collections::HashMap;
use std::time::Duration;

use crate::BoxFuture;
use crate::fixture::TestCx;

/// What a test body reports when it ran to its end: its own verdict, or the
/// fixture that could not be set up.
pub type BodyResult = Result<Verdict, crate::fixture::FixtureError>;

/// The verdict of a test body that returned (as opposed to panicking or
/// timing out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Returned `()` or `Ok(())`.
    Pass,
    /// Returned `Err(e)`; the message is `e`'s `Debug` form, as libtest prints it.
    Fail(String),
}

/// One registered test, as `#[service_test]` describes it.
#[derive(Debug)]
pub struct TestDef {
    /// The function's name.
    pub fn_name: &'static str,
    /// `module_path!()` where the function is defined.
    pub module: &'static str,
    /// Source file and line of the function, for messages.
    pub file: &'static str,
    /// Line of the function in `file`.
    pub line: u32,
    /// Marker names the test carries.
    pub markers: &'static [&'static str],
    /// Services the test exercises, as written in `services(...)` (reports
    /// name them by [`TestDef::service_names`]).
    pub services: &'static [&'static str],
    /// The test's own timeout; wins over `--timeout`.
    pub timeout: Option<Duration>,
    /// The test's own retry count; wins over `--retries`.
    pub retries: Option<u32>,
    /// `ignore` or `ignore = "reason"`.
    pub ignore: Option<&'static str>,
    /// Whether the test is ignored (`ignore` may come without a reason).
    pub ignored: bool,
    /// The concurrency group the test belongs to.
    pub group: Option<&'static str>,
    /// `async fn` (runs as a task) or `fn` (runs on the blocking pool).
    pub is_async: bool,
    /// Resolves the fixtures and runs the test body.
    pub body: fn(TestCx) -> BoxFuture<BodyResult>,
    /// For one case of a parametrized test (`#[case(...)]`): which.
    pub case: Option<Case>,
    /// `#[service_test(isolated)]`: runs in a process of its own.
    pub isolated: bool,
    /// `#[service_test(exclusive)]`: runs while no other test of its
    /// process runs (it changes what every test sees: a fault on a shared
    /// deployment, say). Exclusive tests start after the others.
    pub exclusive: bool,
}

/// One case of a parametrized test, named as rstest names it.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// 1-based position among the function's cases.
    pub index: u32,
    /// The description of `#[case::small(...)]`, if given.
    pub name: Option<&'static str>,
    /// The test name's last part: `case_1`, `case_2_small` (zero-padded
    /// to the number of cases, as rstest does: `case_01` … `case_10`).
    pub label: &'static str,
}

inventory::collect!(TestDef);

impl TestDef {
    /// The test's name as libtest and nextest see it: the module path without
    /// the crate name, then the function (`compliance::audit_is_complete`),
    /// then for a case its label (`billing::adds::case_1_small`).
    pub fn name(&self) -> String {
        let base = match self.module.split_once("::") {
            Some((_, rest)) => format!("{rest}::{}", self.fn_name),
            None => self.fn_name.to_string(),
        };
        match &self.case {
            Some(c) => format!("{base}::{}", c.label),
            None => base,
        }
    }

    /// Is `name` this test's [`TestDef::name`]? Compared part by part,
    /// without building the name.
    pub fn is_named(&self, name: &str) -> bool {
        let module = self.module.split_once("::").map(|(_, rest)| rest);
        let rest = match module {
            Some(m) => match name.strip_prefix(m).and_then(|r| r.strip_prefix("::")) {
                Some(r) => r,
                None => return false,
            },
            None => name,
        };
        match &self.case {
            None => rest == self.fn_name,
            Some(c) => rest
                .strip_prefix(self.fn_name)
                .and_then(|r| r.strip_prefix("::"))
                .is_some_and(|r| r == c.label),
        }
    }

    /// The services the test exercises as reports name them: each
    /// identifier of `services(...)` with `_` spelled `-`
    /// (`billing_engine` is `billing-engine`), since a service's name is
    /// usually a host name, which an identifier cannot spell.
    pub fn service_names(&self) -> Vec<String> {
        self.services.iter().map(|s| service_name(s)).collect()
    }

    /// Does the test carry `marker`?
    pub fn has_marker(&self, marker: &str) -> bool {
        self.markers.contains(&marker)
    }
}

/// A service identifier of `services(...)` as reports name the service:
/// `_` spelled `-`.
pub fn service_name(ident: &str) -> String {
    ident.replace('_', "-")
}

/// Every registered test, sorted by name, with the name computed once.
pub fn registered_tests() -> Vec<(String, &'static TestDef)> {
    let mut tests: Vec<(String, &'static TestDef)> = inventory::iter::<TestDef>
        .into_iter()
        .map(|d| (d.name(), d))
        .collect();
    tests.sort_by(|a, b| a.0.cmp(&b.0));
    tests
}

/// The tests named `names`, found by one pass over the registry that
/// builds no names (nextest runs each test as its own process with
/// `--exact NAME`, and an isolated worker gets one name: finding it must
/// not cost a name per registered test). Names not registered are left out.
pub fn find_by_names(names: &[String]) -> Vec<(String, &'static TestDef)> {
    if let Some(index) = WARM_INDEX.get() {
        return names
            .iter()
            .filter_map(|n| index.get(n).map(|d| (n.clone(), *d)))
            .collect();
    }
    if names.len() > 64 {
        let index = index_by_name();
        return names
            .iter()
            .filter_map(|n| index.get(n).map(|d| (n.clone(), *d)))
            .collect();
    }
    let mut found: Vec<Option<&'static TestDef>> = vec![None; names.len()];
    for d in inventory::iter::<TestDef> {
        if let Some(i) = names.iter().position(|n| d.is_named(n)) {
            found[i] = Some(d);
        }
    }
    names
        .iter()
        .zip(found)
        .filter_map(|(n, d)| d.map(|d| (n.clone(), d)))
        .collect()
}

/// The index, built once before a zygote forks (see `crate::zygote`): each
/// forked worker finds its test in it instead of scanning the registry.
static WARM_INDEX: std::sync::OnceLock<HashMap<String, &'static TestDef>> =
    std::sync::OnceLock::new();

/// Builds [`WARM_INDEX`].
pub(crate) fn warm_index() {
    WARM_INDEX.get_or_init(index_by_name);
}

/// An index of every test by name.
pub fn index_by_name() -> HashMap<String, &'static TestDef> {
    inventory::iter::<TestDef>
        .into_iter()
        .map(|d| (d.name(), d))
        .collect()
}

/// A concurrency group: tests with `group = "name"` never run more than
/// `max_concurrent` at a time. A group used by a test but never declared
/// allows one at a time.
#[derive(Debug, Clone, Copy)]
pub struct GroupDef {
    /// The group's name, as in `group = "name"`.
    pub name: &'static str,
    /// How many of its tests may run at once.
    pub max_concurrent: usize,
}

inventory::collect!(GroupDef);

/// The limit of each declared group.
pub fn group_limits() -> HashMap<&'static str, usize> {
    inventory::iter::<GroupDef>
        .into_iter()
        .map(|g| (g.name, g.max_concurrent.max(1)))
        .collect()
}
