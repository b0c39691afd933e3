extern crate service_test_harness as harness;
use harness::service_test;

#[service_test(unit)]
#[case(1)]
#[case(2)]
fn nothing_receives_them() {}

harness::main!();
