extern crate service_test_harness as harness;
use harness::service_test;

#[service_test(unit)]
fn needs_cases(#[case] payer: &str) {
    let _ = payer;
}

harness::main!();
