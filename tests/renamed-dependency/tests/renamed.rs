//! The facade under another name (`st = { package = "service-test" }`):
//! `#[st::service_test]`, `#[st::fixture]`, `st::marker!` and `st::main!`
//! must expand to paths that start at `::st`, which `proc-macro-crate`
//! finds in this crate's Cargo.toml. If the macros named `::service_test`
//! or `::harness`, this file would not compile.

use st::{FixtureCx, FixtureError, TestInfo, fixture, marker, service_test};

marker!(renamed, "tests of the renamed facade");

/// A fixture declared through the renamed crate.
pub struct Greeting(String);

#[fixture]
async fn greeting(cx: &mut FixtureCx) -> Result<Greeting, FixtureError> {
    Ok(Greeting(format!(
        "hello from {}",
        cx.test_name().unwrap_or("a wider scope")
    )))
}

#[service_test(unit, renamed)]
async fn macros_expand_through_the_renamed_crate(greeting: Greeting, info: TestInfo) {
    assert!(greeting.0.starts_with("hello from "), "{}", greeting.0);
    assert!(
        info.name
            .ends_with("macros_expand_through_the_renamed_crate"),
        "{}",
        info.name
    );
}

#[service_test(unit, renamed, retries = 1, timeout = "5s")]
fn sync_tests_too() -> Result<(), String> {
    Ok(())
}

st::main!();
