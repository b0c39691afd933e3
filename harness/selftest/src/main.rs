//! A test binary with deliberately failing, panicking, slow and flaky tests.
//! It is not run by `cargo test` directly (it is a `[[bin]]`); the tests in
//! `tests/runner.rs` run it with chosen arguments and assert on its output
//! and exit code. Lines starting with `EVENT ` on stderr record what
//! happened (setups, teardowns, draws) for those assertions.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use harness::{
    Fixture, FixtureCx, FixtureError, Scope, TestInfo, TestRng, fixture, marker, service_test,
};
use rand_core::RngCore;

marker!(
    broken,
    "deliberately failing tests, for the harness's own tests"
);
marker!(
    teardown_order,
    "fixtures that record their setup and teardown order"
);
marker!(grouping, "tests that prove group limits hold");
marker!(seeding, "tests that print their seeded draws");
marker!(slowlane, "tests that run one at a time, slowly");
marker!(parametrized, "tests with rstest-style #[case]s");
marker!(hosting, "isolated tests sharing a hosted session fixture");

fn event(what: &str) {
    eprintln!("EVENT {what}");
}

/// A test-scoped fixture with no dependencies.
pub struct Inner(String);

#[fixture]
async fn inner(cx: &mut FixtureCx) -> Inner {
    let test = cx.test_name().unwrap_or("?").to_string();
    event(&format!("setup Inner {test}"));
    let t = test.clone();
    cx.on_teardown(async move { event(&format!("teardown Inner {t}")) });
    Inner(test)
}

/// A test-scoped fixture that depends on `Inner`: set up after it, torn down before it.
pub struct Outer;

#[fixture]
async fn outer(inner: &Inner, cx: &mut FixtureCx) -> Result<Outer, FixtureError> {
    event(&format!("setup Outer {}", inner.0));
    let t = inner.0.clone();
    cx.on_teardown(async move { event(&format!("teardown Outer {t}")) });
    Ok(Outer)
}

mod order {
    use super::*;

    #[service_test(teardown_order)]
    async fn after_pass(_outer: Outer) {}

    #[service_test(teardown_order, broken)]
    async fn after_failure(_outer: Outer) -> Result<(), String> {
        Err("the claim was rejected".into())
    }

    #[service_test(teardown_order, broken)]
    async fn after_panic(_outer: Outer) {
        panic!("boom in the middle of a saga");
    }

    #[service_test(teardown_order, broken, timeout = "200ms")]
    async fn after_timeout(_outer: Outer) {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// One per module: set up once however many tests of the module use it.
pub struct ModuleDb;

static MODULE_DB_SETUPS: AtomicU32 = AtomicU32::new(0);

#[fixture(suite)]
async fn module_db(cx: &mut FixtureCx) -> ModuleDb {
    let n = MODULE_DB_SETUPS.fetch_add(1, Ordering::SeqCst) + 1;
    event(&format!(
        "setup ModuleDb {} #{n}",
        cx.module().unwrap_or("?")
    ));
    cx.on_teardown(async { event("teardown ModuleDb") });
    ModuleDb
}

/// One per run.
pub struct SessionMesh;

#[fixture(scope = session)]
async fn session_mesh(cx: &mut FixtureCx) -> SessionMesh {
    event("setup SessionMesh");
    cx.on_teardown(async { event("teardown SessionMesh") });
    SessionMesh
}

mod scopes {
    use super::*;

    #[service_test(teardown_order)]
    async fn first(_db: &ModuleDb, _mesh: &SessionMesh) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[service_test(teardown_order)]
    async fn second(_db: &ModuleDb, _mesh: &SessionMesh) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[service_test(teardown_order)]
    fn third_sync(_db: &ModuleDb, _mesh: &SessionMesh) {}
}

/// Counts its setups, to show `&T` is one per test and `T` a fresh one.
pub struct Counted(u32);

static COUNTED: AtomicU32 = AtomicU32::new(0);

#[fixture]
async fn counted() -> Counted {
    Counted(COUNTED.fetch_add(1, Ordering::SeqCst))
}

/// Takes `&Counted`: the same instance as the test's `&Counted`.
pub struct SeesCounted(u32);

#[fixture]
async fn sees_counted(c: &Counted) -> SeesCounted {
    SeesCounted(c.0)
}

mod sharing {
    use super::*;

    #[service_test(unit)]
    async fn by_reference_is_one_instance_per_test(
        a: &Counted,
        b: &Counted,
        seen: SeesCounted,
        fresh: Counted,
    ) -> Result<(), String> {
        if a.0 != b.0 || seen.0 != a.0 {
            return Err(format!(
                "&Counted differed within one test: {} {} {}",
                a.0, b.0, seen.0
            ));
        }
        if fresh.0 == a.0 {
            return Err("a by-value Counted reused the shared instance".into());
        }
        Ok(())
    }
}

/// A fixture whose setup fails.
pub struct Broken;

#[fixture]
async fn broken_fixture() -> Result<Broken, String> {
    Err("database refused the connection".to_string())
}

/// Depends on the failing one.
pub struct NeedsBroken;

#[fixture]
async fn needs_broken(_b: &Broken) -> NeedsBroken {
    NeedsBroken
}

/// Panics in setup.
pub struct Exploding;

#[fixture]
fn exploding() -> Exploding {
    panic!("the fixture exploded");
}

/// A session fixture that (wrongly) asks for a test-scoped one: only a
/// hand-written impl can do this; `#[fixture]` rejects it at compile time.
pub struct Wide;

impl Fixture for Wide {
    const SCOPE: Scope = Scope::Session;
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let _narrow: Inner = cx.get::<Inner>().await?;
        Ok(Wide)
    }
}

/// Cannot be had here: the test is skipped, with the reason.
pub struct Unavailable;

#[fixture]
async fn unavailable() -> Result<Unavailable, FixtureError> {
    Err(FixtureError::skip(
        "no PostgreSQL here (DATABASE_URL unset, no initdb on PATH)",
    ))
}

mod fixture_errors {
    use super::*;

    #[service_test(broken)]
    async fn setup_fails(_b: Broken) {}

    #[service_test(broken)]
    async fn dependency_fails(_n: NeedsBroken) {}

    #[service_test(broken)]
    fn setup_panics(_e: Exploding) {}

    #[service_test(broken)]
    async fn narrower_scope(_w: &Wide) {}

    #[service_test(unit)]
    async fn skipped_when_unavailable(_u: Unavailable) {
        unreachable!("never runs: the fixture skips it");
    }
}

mod failures {
    use super::*;

    #[service_test(broken)]
    async fn returns_err() -> Result<(), String> {
        Err("eligibility answered 503".into())
    }

    #[service_test(broken)]
    async fn panics() {
        panic!("the claim total is negative");
    }

    #[service_test(broken)]
    fn sync_panics() {
        assert_eq!(1 + 1, 3, "arithmetic is broken");
    }

    #[service_test(broken, timeout = "200ms")]
    async fn async_overrun() {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }

    #[service_test(broken, timeout = "200ms")]
    fn sync_overrun() {
        std::thread::sleep(Duration::from_secs(5));
    }

    #[service_test(broken, ignore = "waiting for the billing engine")]
    async fn ignored_with_reason() {}
}

mod flaky {
    use super::*;

    static ATTEMPTS: AtomicU32 = AtomicU32::new(0);

    #[service_test(unit, retries = 2)]
    async fn passes_on_second_attempt(info: TestInfo) -> Result<(), String> {
        ATTEMPTS.fetch_add(1, Ordering::SeqCst);
        if info.attempt == 1 {
            Err("first attempt fails".into())
        } else {
            Ok(())
        }
    }

    #[service_test(broken, retries = 1)]
    async fn always_fails(info: TestInfo) -> Result<(), String> {
        Err(format!("attempt {} failed", info.attempt))
    }

    static CLI_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

    /// Fails its first attempt; passes only when `--retries` allows a second.
    #[service_test(broken)]
    async fn needs_cli_retries() -> Result<(), String> {
        if CLI_ATTEMPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            Err("first".into())
        } else {
            Ok(())
        }
    }
}

mod seeding {
    use super::*;

    #[service_test(seeding)]
    async fn draws(mut rng: TestRng, info: TestInfo) {
        event(&format!(
            "draw {} {} {}",
            info.name,
            rng.next_u64(),
            rng.next_u64()
        ));
    }

    #[service_test(seeding)]
    fn other_draws(mut rng: TestRng, info: TestInfo) {
        event(&format!("draw {} {}", info.name, rng.next_u64()));
    }

    #[service_test(seeding, broken)]
    async fn fails_with_seed() -> Result<(), String> {
        Err("reproduce me".into())
    }
}

harness::test_group!("pair", 2);

mod groups {
    use super::*;

    static SERIAL_ACTIVE: AtomicUsize = AtomicUsize::new(0);
    static PAIR_ACTIVE: AtomicUsize = AtomicUsize::new(0);
    /// Every test of this module running now.
    static ALL_ACTIVE: AtomicUsize = AtomicUsize::new(0);

    /// Holds a place in the group for a while and reports how many of the
    /// group were running at that moment.
    async fn occupy(group: &str, active: &AtomicUsize, limit: usize) -> Result<(), String> {
        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
        ALL_ACTIVE.fetch_add(1, Ordering::SeqCst);
        event(&format!("group {group} active {now}"));
        tokio::time::sleep(Duration::from_millis(60)).await;
        active.fetch_sub(1, Ordering::SeqCst);
        ALL_ACTIVE.fetch_sub(1, Ordering::SeqCst);
        if now > limit {
            Err(format!(
                "{now} tests of group {group} ran at once; the limit is {limit}"
            ))
        } else {
            Ok(())
        }
    }

    macro_rules! group_tests {
        ($group:literal, $active:ident, $limit:expr, $($name:ident),*) => {$(
            #[service_test(grouping, group = $group)]
            async fn $name() -> Result<(), String> {
                occupy($group, &$active, $limit).await
            }
        )*};
    }

    /// An exclusive test: reports how many tests of the module ran beside it.
    async fn alone() -> Result<(), String> {
        let mut most = 0;
        let now = ALL_ACTIVE.fetch_add(1, Ordering::SeqCst) + 1;
        for _ in 0..6 {
            most = most.max(ALL_ACTIVE.load(Ordering::SeqCst));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ALL_ACTIVE.fetch_sub(1, Ordering::SeqCst);
        event(&format!("exclusive active {}", most.max(now)));
        Ok(())
    }

    #[service_test(grouping, exclusive)]
    async fn exclusive_1() -> Result<(), String> {
        alone().await
    }

    #[service_test(grouping, exclusive)]
    async fn exclusive_2() -> Result<(), String> {
        alone().await
    }

    group_tests!(
        "serial",
        SERIAL_ACTIVE,
        1,
        serial_1,
        serial_2,
        serial_3,
        serial_4
    );
    group_tests!(
        "pair",
        PAIR_ACTIVE,
        2,
        pair_1,
        pair_2,
        pair_3,
        pair_4,
        pair_5,
        pair_6
    );
}

/// Eight tests (two of them sync) that wait (up to 1 s) for each other: the
/// peak of how many ran at once shows concurrency and its limit.
mod overlap {
    use super::*;

    static ACTIVE: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    fn arrive() {
        let now = ACTIVE.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(now, Ordering::SeqCst);
    }

    fn leave() {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
        event(&format!("overlap peak {}", PEAK.load(Ordering::SeqCst)));
    }

    macro_rules! async_waiters {
        ($($name:ident),*) => {$(
            #[service_test(grouping)]
            async fn $name() {
                arrive();
                for _ in 0..200 {
                    if ACTIVE.load(Ordering::SeqCst) >= 8 { break; }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                leave();
            }
        )*};
    }

    macro_rules! sync_waiters {
        ($($name:ident),*) => {$(
            #[service_test(grouping)]
            fn $name() {
                arrive();
                for _ in 0..200 {
                    if ACTIVE.load(Ordering::SeqCst) >= 8 { break; }
                    std::thread::sleep(Duration::from_millis(5));
                }
                leave();
            }
        )*};
    }

    async_waiters!(a1, a2, a3, a4, a5, a6);
    sync_waiters!(s1, s2);
}

/// Hosted session fixtures: three isolated tests attach to one value the
/// host process set up.
mod hosting {
    use super::*;

    /// A session fixture that knows which process set it up.
    pub struct SetUpIn {
        pub pid: u32,
        pub attached: bool,
    }

    impl Fixture for SetUpIn {
        const SCOPE: Scope = Scope::Session;

        async fn setup(_cx: &mut FixtureCx) -> Result<Self, FixtureError> {
            Ok(SetUpIn {
                pid: std::process::id(),
                attached: false,
            })
        }
    }

    impl harness::host::Hostable for SetUpIn {
        fn handle(&self) -> Result<serde_json::Value, FixtureError> {
            Ok(serde_json::json!({ "pid": self.pid }))
        }

        async fn attach(
            handle: serde_json::Value,
            _cx: &mut FixtureCx,
        ) -> Result<Self, FixtureError> {
            let pid = handle["pid"]
                .as_u64()
                .ok_or_else(|| FixtureError::new("SetUpIn handle: no pid"))?;
            Ok(SetUpIn {
                pid: pid as u32,
                attached: true,
            })
        }
    }

    harness::hostable!(SetUpIn);

    fn report(f: &SetUpIn) {
        event(&format!(
            "hosted pid {} attached {} own pid {}",
            f.pid,
            f.attached,
            std::process::id()
        ));
    }

    #[service_test(hosting, isolated)]
    async fn first(f: &SetUpIn) {
        report(f);
    }

    #[service_test(hosting, isolated)]
    async fn second(f: &SetUpIn) {
        report(f);
    }

    #[service_test(hosting, isolated)]
    async fn third(f: &SetUpIn) {
        report(f);
    }
}

/// What `phi_safe` catches, and that failures never print PHI.
mod phi_guard {
    use super::*;

    #[service_test(phi_safe, broken)]
    async fn logs_an_ssn() {
        tracing::info!(
            claim = "CLM0000000042",
            "verifying eligibility for ssn 123-45-6789"
        );
    }

    #[service_test(phi_safe, broken)]
    fn sync_logs_a_phone() {
        tracing::warn!("callback requested at (217) 555-0142");
    }

    #[service_test(phi_safe, broken)]
    async fn logs_a_registered_name() {
        phi::canaries().register(phi::Kind::Name, "Quentin Vasquez-Ortiz");
        tracing::info!(patient = "VASQUEZ-ORTIZ, QUENTIN", "claim rejected");
    }

    #[service_test(phi_safe, broken)]
    async fn panics_with_an_ssn() {
        panic!("no coverage for ssn 456-12-7890");
    }

    #[service_test(phi_safe, broken)]
    async fn logs_an_ssn_through_the_log_crate() {
        log::info!("eligibility lookup for ssn 321-54-9876");
    }

    #[service_test(phi_safe)]
    async fn clean_logs_pass() {
        tracing::info!(
            npi = "1234567893",
            cpt = "99213",
            "claim line priced at 135.00"
        );
    }

    #[service_test(unit)]
    async fn without_the_marker_logs_are_not_scanned() {
        tracing::info!("ssn 123-45-6789 in a test that is not phi_safe");
    }

    #[service_test(broken)]
    async fn failure_message_is_redacted() -> Result<(), String> {
        tracing::info!("about to reject 987-65-4321");
        Err("patient with ssn 219-09-9999 was rejected".into())
    }
}

/// Twenty tests that run one at a time, 100 ms each: a run long enough to
/// interrupt halfway.
mod slow_lane {
    use super::*;

    macro_rules! lane {
        ($($name:ident),*) => {$(
            #[service_test(slowlane, group = "lane")]
            async fn $name() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        )*};
    }

    lane!(
        l01, l02, l03, l04, l05, l06, l07, l08, l09, l10, l11, l12, l13, l14, l15, l16, l17, l18,
        l19, l20
    );
}

/// Records figures through the Metrics fixture.
mod measured {
    use super::*;

    #[service_test(unit, services(billing))]
    async fn records_latencies(metrics: harness::Metrics) {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        metrics.latencies("POST /v1/claims", &samples);
        metrics.throughput("POST /v1/claims", 850.0);
        metrics.error_rate("POST /v1/claims", 0.01);
    }
}

/// rstest-style cases: each case is its own test.
mod cases {
    use super::*;

    #[service_test(parametrized)]
    #[case::small(1, 2, 3)]
    #[case(2, 2, 4)]
    #[case::large(1000, 2000, 3000)]
    fn adds(#[case] a: u64, #[case] b: u64, #[case] sum: u64) {
        event(&format!("adds {a}+{b}"));
        assert_eq!(a + b, sum);
    }

    /// Cases and fixtures together, in any order.
    #[service_test(parametrized)]
    #[case::payer("aetna")]
    #[case::self_pay("")]
    async fn mixes_fixtures_and_cases(info: TestInfo, #[case] payer: &str) {
        event(&format!("case {} payer={payer}", info.name));
    }
}

/// Spawns a task and forgets it: a leak.
mod leaky {
    use super::*;

    #[service_test(unit)]
    async fn spawns_and_forgets() {
        tokio::spawn(async { tokio::time::sleep(Duration::from_secs(30)).await });
    }

    #[service_test(unit)]
    async fn spawns_and_waits() {
        let task = tokio::spawn(async { tokio::time::sleep(Duration::from_millis(5)).await });
        let _ = task.await;
    }
}

/// Sleeps past a short slow-timeout (set by the runner tests' config).
mod sluggish {
    use super::*;

    #[service_test(slow)]
    async fn takes_its_time() {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

harness::main!();
