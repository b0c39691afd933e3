//! Fixtures: values a test asks for by parameter type.
//!
//! A test declares what it needs as parameters; the harness provides each by
//! its type through the [`Fixture`] trait, the way axum extracts a handler's
//! arguments. A type with no `Fixture` impl is a compile error.
//!
//! ```ignore
//! use harness::{fixture, service_test, FixtureCx, FixtureError};
//!
//! pub struct Ledger { pub entries: Vec<String> }
//!
//! // A test-scoped fixture: every test gets its own, owned value.
//! #[fixture]
//! async fn ledger(cx: &mut FixtureCx) -> Result<Ledger, FixtureError> {
//!     cx.on_teardown(async { /* runs after the test, whatever happened */ });
//!     Ok(Ledger { entries: Vec::new() })
//! }
//!
//! #[service_test(unit)]
//! async fn a_new_ledger_is_empty(ledger: Ledger) {
//!     assert!(ledger.entries.is_empty());
//! }
//! ```
//!
//! # Scopes
//! - [`Scope::Test`] (default): set up for each test (and each retry). Taken
//!   by value (`T`, `&mut T`) it is a fresh value each time it is asked for;
//!   taken by reference (`&T`) it is one value per test attempt, shared by
//!   the test and every fixture that asks for `&T` (so a `Visit` fixture
//!   taking `&Patient` describes the same patient as the test's `&Patient`).
//! - [`Scope::Suite`]: one value per module of tests, shared as `&T`; torn
//!   down after the module's last selected test finished.
//! - [`Scope::Session`]: one value per run of the binary, shared as `&T`;
//!   torn down at the end. Under nextest (one process per test) a session is
//!   one test.
//!
//! A fixture may depend on fixtures of its own or a wider scope; asking for a
//! narrower one (a session fixture wanting a test's `Patient`) is an error
//! naming both. Teardowns registered with [`FixtureCx::on_teardown`] run in
//! reverse order of setup, after a pass, a failure, a panic or a timeout.
//! A fixture that fails to set up makes the test an *error* naming the
//! fixture, distinct from a test *failure*.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use tokio::sync::OnceCell;

use crate::BoxFuture;
use crate::panic::{CatchUnwind, panic_message};
use crate::seed::derive_seed;

/// How long one teardown may take before it is abandoned and reported.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a fixture lives and who shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// One value per test attempt, owned by the test.
    Test = 0,
    /// One value per module of tests, shared by reference.
    Suite = 1,
    /// One value per run of the binary, shared by reference.
    Session = 2,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Test => "test",
            Scope::Suite => "suite",
            Scope::Session => "session",
        })
    }
}

/// A value the harness can set up for a test that asks for it by type.
///
/// Implement it directly, or let `#[fixture]` implement it from an async
/// function. Setup receives a [`FixtureCx`] to ask for other fixtures, draw
/// seeded random data and register teardown.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a fixture: no fixture provides a value of this type",
    label = "no fixture for this parameter type",
    note = "declare one with `#[harness::fixture] async fn make(..) -> Result<{Self}, FixtureError>` or `impl harness::Fixture for {Self}`"
)]
pub trait Fixture: Send + Sync + Sized + 'static {
    /// The fixture's scope; [`Scope::Test`] unless said otherwise.
    const SCOPE: Scope = Scope::Test;

    /// Sets up one value.
    fn setup(cx: &mut FixtureCx) -> impl Future<Output = Result<Self, FixtureError>> + Send;
}

/// Why a fixture could not provide its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureError {
    fixture: String,
    chain: Vec<String>,
    kind: FixtureErrorKind,
}

/// The kinds of [`FixtureError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixtureErrorKind {
    /// Setup failed; the message says why.
    Failed(String),
    /// Setup panicked.
    Panicked(String),
    /// The fixture cannot be had here and the test should be skipped, not
    /// failed (a missing PostgreSQL, say). Carries the reason shown.
    Skip(String),
    /// The fixture asked for a fixture of a narrower scope.
    NarrowerScope {
        /// The scope of the fixture that asked.
        wanted_by: Scope,
        /// The narrower fixture's name.
        dependency: String,
        /// The narrower fixture's scope.
        dependency_scope: Scope,
    },
    /// Fixtures depend on each other in a cycle.
    Cycle,
    /// A shared fixture was asked for by value.
    SharedByValue(Scope),
}

impl FixtureError {
    /// Setup failed for the reason given.
    pub fn new(message: impl fmt::Display) -> Self {
        FixtureError {
            fixture: String::new(),
            chain: Vec::new(),
            kind: FixtureErrorKind::Failed(message.to_string()),
        }
    }

    /// The fixture cannot be had in this environment: the test is reported
    /// skipped with this reason (e.g. "PostgreSQL: no DATABASE_URL and no initdb on PATH").
    pub fn skip(reason: impl fmt::Display) -> Self {
        FixtureError {
            fixture: String::new(),
            chain: Vec::new(),
            kind: FixtureErrorKind::Skip(reason.to_string()),
        }
    }

    fn with_kind(fixture: &str, kind: FixtureErrorKind) -> Self {
        FixtureError {
            fixture: fixture.to_string(),
            chain: Vec::new(),
            kind,
        }
    }

    /// The fixture that failed.
    pub fn fixture(&self) -> &str {
        &self.fixture
    }

    /// What went wrong.
    pub fn kind(&self) -> &FixtureErrorKind {
        &self.kind
    }

    /// True when the test should be skipped rather than fail.
    pub fn is_skip(&self) -> bool {
        matches!(self.kind, FixtureErrorKind::Skip(_))
    }

    /// Records that `fixture` needed the failing one ("" is the test itself).
    fn named(mut self, fixture: &str) -> Self {
        if fixture.is_empty() {
            return self;
        }
        if self.fixture.is_empty() {
            self.fixture = fixture.to_string();
        } else if self.fixture != fixture && !self.chain.iter().any(|c| c == fixture) {
            self.chain.push(fixture.to_string());
        }
        self
    }
}

impl fmt::Display for FixtureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = if self.chain.is_empty() {
            String::new()
        } else {
            format!(
                " (needed by {})",
                self.chain
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(" ← ")
            )
        };
        let name = &self.fixture;
        match &self.kind {
            FixtureErrorKind::Failed(m) => write!(f, "fixture `{name}` failed to set up{via}: {m}"),
            FixtureErrorKind::Panicked(m) => {
                write!(f, "fixture `{name}` panicked during setup{via}: {m}")
            }
            FixtureErrorKind::Skip(m) => {
                write!(f, "skipped: fixture `{name}` is unavailable{via}: {m}")
            }
            FixtureErrorKind::NarrowerScope {
                wanted_by,
                dependency,
                dependency_scope,
            } => write!(
                f,
                "fixture `{name}` ({wanted_by} scope) asks for `{dependency}`, which has the narrower {dependency_scope} scope{via}: \
                 a fixture may only depend on fixtures of its own or a wider scope"
            ),
            FixtureErrorKind::Cycle => {
                write!(f, "fixtures depend on each other in a cycle: {name}")
            }
            FixtureErrorKind::SharedByValue(scope) => write!(
                f,
                "fixture `{name}` has {scope} scope and is shared: take it by reference (`&{name}`), not by value"
            ),
        }
    }
}

impl std::error::Error for FixtureError {}

/// The short name of a fixture type, for messages (`Patient`, not `fixtures::patient::Patient`).
pub fn fixture_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    // Keep generic arguments readable: strip paths before the outermost `<`.
    let head = full.split('<').next().unwrap_or(full);
    let short_head = head.rsplit("::").next().unwrap_or(head);
    if head.len() == full.len() {
        short_head
    } else {
        // Leak-free: type_name is 'static; slice from the start of the short head.
        let start = head.len() - short_head.len();
        &full[start..]
    }
}

type Cell = Arc<OnceCell<Result<Arc<dyn Any + Send + Sync>, FixtureError>>>;

/// A registered teardown: which fixture, and the work to do.
struct Teardown {
    fixture: &'static str,
    work: BoxFuture<Result<(), String>>,
}

/// The fixtures of one scope instance (a test attempt, a module, the session)
/// and the teardowns they registered, in setup order.
#[derive(Default)]
pub(crate) struct Store {
    cells: Mutex<HashMap<TypeId, Cell>>,
    teardowns: Mutex<Vec<Teardown>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    fn cell(&self, id: TypeId) -> Cell {
        lock(&self.cells).entry(id).or_default().clone()
    }

    fn push_teardowns(&self, more: Vec<Teardown>) {
        lock(&self.teardowns).extend(more);
    }

    /// Runs every registered teardown in reverse order of registration. Each
    /// is caught (a panic is reported, not propagated) and bounded in time.
    /// Returns `fixture: message` for each one that failed.
    pub(crate) async fn tear_down(&self) -> Vec<String> {
        let teardowns = std::mem::take(&mut *lock(&self.teardowns));
        let mut failures = Vec::new();
        for td in teardowns.into_iter().rev() {
            let result = tokio::time::timeout(
                TEARDOWN_TIMEOUT,
                CatchUnwind::new(AssertUnwindSafe(td.work)),
            )
            .await;
            let problem = match result {
                Err(_) => Some(format!("timed out after {TEARDOWN_TIMEOUT:?}")),
                Ok(Err(payload)) => Some(format!("panicked: {}", panic_message(&*payload))),
                Ok(Ok(Err(msg))) => Some(msg),
                Ok(Ok(Ok(()))) => None,
            };
            if let Some(p) = problem {
                failures.push(format!("teardown of fixture `{}` failed: {p}", td.fixture));
            }
        }
        lock(&self.cells).clear();
        failures
    }
}

/// State shared by every test of one run: the seed, the session store and
/// the per-module suite stores.
pub(crate) struct RunShared {
    pub(crate) seed: u64,
    pub(crate) target: Option<std::path::PathBuf>,
    pub(crate) session: Arc<Store>,
    suites: Mutex<HashMap<&'static str, Arc<Store>>>,
    /// Tasks suite and session fixtures started while being set up (not a
    /// test's leak).
    pub(crate) fixture_tasks: crate::leak::FixtureTasks,
}

impl RunShared {
    pub(crate) fn new(seed: u64, target: Option<std::path::PathBuf>) -> Arc<Self> {
        Arc::new(RunShared {
            seed,
            target,
            session: Arc::default(),
            suites: Mutex::default(),
            fixture_tasks: crate::leak::FixtureTasks::default(),
        })
    }

    fn suite(&self, module: &'static str) -> Arc<Store> {
        lock(&self.suites).entry(module).or_default().clone()
    }

    /// Removes a module's suite store, for teardown after its last test.
    pub(crate) fn take_suite(&self, module: &str) -> Option<Arc<Store>> {
        lock(&self.suites).remove(module)
    }

    /// Every suite store still open (at the end of a run).
    pub(crate) fn take_all_suites(&self) -> Vec<Arc<Store>> {
        lock(&self.suites).drain().map(|(_, s)| s).collect()
    }
}

/// Identity of the test being set up, shared by its fixtures.
pub(crate) struct TestIdent {
    pub(crate) run: Arc<RunShared>,
    pub(crate) name: String,
    pub(crate) module: &'static str,
    pub(crate) attempt: u32,
    pub(crate) store: Arc<Store>,
    pub(crate) metrics: Arc<Mutex<Vec<crate::metrics::Metric>>>,
    instances: Mutex<HashMap<TypeId, u64>>,
}

/// The context a test body resolves its fixtures from. Generated code uses
/// it; test authors meet it only through [`TestInfo`].
#[derive(Clone)]
pub struct TestCx {
    pub(crate) ident: Arc<TestIdent>,
}

impl TestCx {
    pub(crate) fn new(
        run: Arc<RunShared>,
        name: String,
        module: &'static str,
        attempt: u32,
    ) -> Self {
        TestCx {
            ident: Arc::new(TestIdent {
                run,
                name,
                module,
                attempt,
                store: Arc::default(),
                metrics: Arc::default(),
                instances: Mutex::default(),
            }),
        }
    }

    fn root(&self) -> FixtureCx {
        FixtureCx {
            ident: self.ident.clone(),
            scope: Scope::Test,
            fixture: "",
            chain: Vec::new(),
            rng_seed: 0,
            rng: None,
            teardowns: Vec::new(),
        }
    }

    /// Resolves a test-scoped fixture by value (for a `T` or `&mut T` parameter).
    pub async fn owned<T: Fixture>(&self) -> Result<T, FixtureError> {
        self.root().get::<T>().await
    }

    /// Resolves a fixture of any scope for a `&T` parameter.
    pub async fn held<T: Fixture>(&self) -> Result<Held<T>, FixtureError> {
        self.root().get_ref::<T>().await
    }
}

/// A fixture value held for the duration of a test: owned (test scope) or
/// shared (suite and session scopes). Dereferences to `T`.
pub enum Held<T> {
    /// A test-scoped value.
    Owned(T),
    /// A suite- or session-scoped value.
    Shared(Arc<T>),
}

impl<T> Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Held::Owned(v) => v,
            Held::Shared(v) => v,
        }
    }
}

/// What a fixture's setup can use: other fixtures, the run's seed and a
/// seeded RNG of its own, and teardown registration.
pub struct FixtureCx {
    ident: Arc<TestIdent>,
    scope: Scope,
    fixture: &'static str,
    chain: Vec<(TypeId, &'static str)>,
    rng_seed: u64,
    rng: Option<TestRng>,
    teardowns: Vec<Teardown>,
}

impl FixtureCx {
    /// Where the test's recorded figures go (see [`crate::metrics::Metrics`]).
    pub fn metrics(&self) -> crate::metrics::Metrics {
        crate::metrics::Metrics::new(self.ident.metrics.clone())
    }

    /// The run's seed (`--seed`).
    pub fn run_seed(&self) -> u64 {
        self.ident.run.seed
    }

    /// The target file of the run (`--target`, or `SERVICE_TEST_TARGET`):
    /// the system under test, for the fixtures that stand for it. `None`
    /// means the default, in-process system.
    pub fn target_file(&self) -> Option<&std::path::Path> {
        self.ident.run.target.as_deref()
    }

    /// The scope of the fixture being set up.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The name of the test this fixture is set up for; `None` for suite and
    /// session fixtures, which belong to no single test.
    pub fn test_name(&self) -> Option<&str> {
        (self.scope == Scope::Test).then_some(self.ident.name.as_str())
    }

    /// The module whose tests share a suite fixture (also set for test scope).
    pub fn module(&self) -> Option<&'static str> {
        (self.scope != Scope::Session).then_some(self.ident.module)
    }

    /// A random number generator for this fixture, seeded from the run seed,
    /// the test (or module, for suite scope) and the fixture's type, so a
    /// value does not depend on which other tests or fixtures ran before it.
    pub fn rng(&mut self) -> &mut TestRng {
        let seed = self.rng_seed;
        self.rng.get_or_insert_with(|| TestRng::from_seed_u64(seed))
    }

    /// Registers work to run when this fixture's scope ends: after the test
    /// for test scope, after the module's last test for suite scope, at the
    /// end of the run for session scope. Teardowns run in reverse order of
    /// setup, whatever the test's outcome. The work may return `()` or a
    /// `Result<(), E: Display>`; an error or a panic is reported.
    pub fn on_teardown<F>(&mut self, work: F)
    where
        F: Future + Send + 'static,
        F::Output: TeardownOutput,
    {
        self.teardowns.push(Teardown {
            fixture: self.fixture,
            work: Box::pin(async move { work.await.into_teardown_result() }),
        });
    }

    /// Asks for a test-scoped fixture by value.
    pub async fn get<T: Fixture>(&mut self) -> Result<T, FixtureError> {
        match self.resolve::<T>(false).await? {
            Resolved::Owned(v) => Ok(v),
            Resolved::Shared(_) => Err(FixtureError::with_kind(
                fixture_name::<T>(),
                FixtureErrorKind::SharedByValue(T::SCOPE),
            )),
        }
    }

    /// Asks for a suite- or session-scoped fixture, shared.
    pub async fn get_shared<T: Fixture>(&mut self) -> Result<Arc<T>, FixtureError> {
        match self.get_ref::<T>().await? {
            Held::Shared(v) => Ok(v),
            Held::Owned(v) => Ok(Arc::new(v)),
        }
    }

    /// Asks for a fixture of any scope, held for as long as needed.
    pub async fn get_ref<T: Fixture>(&mut self) -> Result<Held<T>, FixtureError> {
        Ok(match self.resolve::<T>(true).await? {
            Resolved::Owned(v) => Held::Owned(v),
            Resolved::Shared(v) => Held::Shared(v.downcast::<T>().map_err(|_| {
                FixtureError::new("internal error: a shared fixture has the wrong type")
                    .named(fixture_name::<T>())
            })?),
        })
    }

    fn child<T: Fixture>(&self, scope: Scope, discriminator: u64) -> FixtureCx {
        let name = fixture_name::<T>();
        let mut chain = self.chain.clone();
        chain.push((TypeId::of::<T>(), name));
        let owner = match scope {
            Scope::Test => self.ident.name.as_str(),
            Scope::Suite => self.ident.module,
            Scope::Session => "",
        };
        let rng_seed = derive_seed(
            self.ident.run.seed,
            &[
                owner,
                std::any::type_name::<T>(),
                &discriminator.to_string(),
            ],
        );
        FixtureCx {
            ident: self.ident.clone(),
            scope,
            fixture: name,
            chain,
            rng_seed,
            rng: None,
            teardowns: Vec::new(),
        }
    }

    async fn resolve<T: Fixture>(&mut self, shared_ok: bool) -> Result<Resolved<T>, FixtureError> {
        let name = fixture_name::<T>();
        let id = TypeId::of::<T>();
        if self.chain.iter().any(|(t, _)| *t == id) {
            let cycle: Vec<&str> = self
                .chain
                .iter()
                .map(|(_, n)| *n)
                .chain(std::iter::once(name))
                .collect();
            return Err(FixtureError::with_kind(
                &cycle.join(" → "),
                FixtureErrorKind::Cycle,
            ));
        }
        if T::SCOPE < self.scope {
            return Err(FixtureError::with_kind(
                self.fixture,
                FixtureErrorKind::NarrowerScope {
                    wanted_by: self.scope,
                    dependency: name.to_string(),
                    dependency_scope: T::SCOPE,
                },
            ));
        }
        if T::SCOPE != Scope::Test && !shared_ok {
            return Err(FixtureError::with_kind(
                name,
                FixtureErrorKind::SharedByValue(T::SCOPE),
            ));
        }
        match T::SCOPE {
            Scope::Test if !shared_ok => {
                let n = {
                    let mut inst = lock(&self.ident.instances);
                    let n = inst.entry(id).or_insert(0);
                    *n += 1;
                    *n
                };
                let mut cx = self.child::<T>(Scope::Test, n);
                let value = setup_caught::<T>(&mut cx)
                    .await
                    .map_err(|e| e.named(self.fixture))?;
                // Registered only once setup succeeded, after its dependencies'
                // teardowns: reverse order then tears down dependents first.
                self.ident.store.push_teardowns(cx.teardowns);
                Ok(Resolved::Owned(value))
            }
            scope => {
                // Shared: one per suite, per session, or (for `&T` of a
                // test-scoped fixture) one per test attempt.
                let store = match scope {
                    Scope::Test => self.ident.store.clone(),
                    Scope::Suite => self.ident.run.suite(self.ident.module),
                    Scope::Session => self.ident.run.session.clone(),
                };
                let cell = store.cell(id);
                let mut cx = self.child::<T>(scope, 0);
                let result = cell
                    .get_or_init(|| async {
                        let before = crate::leak::alive_tasks();
                        let value = setup_caught::<T>(&mut cx).await;
                        if scope != Scope::Test {
                            let started = crate::leak::alive_tasks().saturating_sub(before);
                            self.ident.run.fixture_tasks.add(started);
                        }
                        let value = value?;
                        store.push_teardowns(std::mem::take(&mut cx.teardowns));
                        Ok(Arc::new(value) as Arc<dyn Any + Send + Sync>)
                    })
                    .await;
                match result {
                    Ok(v) => Ok(Resolved::Shared(v.clone())),
                    Err(e) => Err(e.clone().named(self.fixture)),
                }
            }
        }
    }
}

enum Resolved<T> {
    Owned(T),
    Shared(Arc<dyn Any + Send + Sync>),
}

/// Runs `T::setup`, turning a panic into a [`FixtureError`] naming `T`.
/// Boxed so fixtures that depend on fixtures do not make an infinitely
/// nested future type.
async fn setup_caught<T: Fixture>(cx: &mut FixtureCx) -> Result<T, FixtureError> {
    let name = fixture_name::<T>();
    let fut: std::pin::Pin<Box<dyn Future<Output = Result<T, FixtureError>> + Send + '_>> =
        Box::pin(T::setup(cx));
    match CatchUnwind::new(AssertUnwindSafe(fut)).await {
        Ok(result) => result.map_err(|e| e.named(name)),
        Err(payload) => Err(FixtureError::with_kind(
            name,
            FixtureErrorKind::Panicked(panic_message(&*payload)),
        )),
    }
}

/// What a teardown may return: `()`, or a `Result` whose error is reported.
pub trait TeardownOutput {
    /// `Ok(())` or the message to report.
    fn into_teardown_result(self) -> Result<(), String>;
}

impl TeardownOutput for () {
    fn into_teardown_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> TeardownOutput for Result<(), E> {
    fn into_teardown_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// A deterministic random number generator (ChaCha8), seeded from the run
/// seed and the test's name. It dereferences to `rand_chacha::ChaCha8Rng`,
/// so it is a `rand_core::RngCore` (and a `rand::Rng`) itself. As a fixture parameter (`rng: TestRng`) it gives
/// the same sequence for the same `--seed`, whatever else ran.
#[derive(Debug, Clone)]
pub struct TestRng(ChaCha8Rng);

impl TestRng {
    /// A generator seeded from a 64-bit seed.
    pub fn from_seed_u64(seed: u64) -> Self {
        TestRng(ChaCha8Rng::seed_from_u64(seed))
    }
}

impl Deref for TestRng {
    type Target = ChaCha8Rng;
    fn deref(&self) -> &ChaCha8Rng {
        &self.0
    }
}

impl DerefMut for TestRng {
    fn deref_mut(&mut self) -> &mut ChaCha8Rng {
        &mut self.0
    }
}

impl Fixture for TestRng {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        Ok(cx.rng().clone())
    }
}

/// Who is running: the test's name, the run seed and the attempt number.
#[derive(Debug, Clone)]
pub struct TestInfo {
    /// The test's full name (`module::function`).
    pub name: String,
    /// The run's seed.
    pub seed: u64,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
}

impl Fixture for TestInfo {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        Ok(TestInfo {
            name: cx.ident.name.clone(),
            seed: cx.ident.run.seed,
            attempt: cx.ident.attempt,
        })
    }
}
