extern crate service_test_harness as harness;
use harness::{fixture, service_test};

pub struct Ledger;

// A wrong scope: one message. The stub `impl Fixture` keeps the test that
// asks for `Ledger` from raising a second one.
#[fixture(scope = forever)]
async fn ledger() -> Ledger {
    Ledger
}

#[service_test(unit)]
async fn uses_the_ledger(_l: Ledger) {}

harness::main!();
