extern crate service_test_harness as harness;
use harness::service_test;

#[service_test(unit, timeout = "10 parsecs")]
async fn fast_enough() {}

#[service_test(unit, timeout = "0s")]
async fn no_time_at_all() {}

harness::main!();
