extern crate service_test_harness as harness;
use harness::service_test;

#[service_test(unit, timeout = "1s", integration, timeout = "2s", unit, retries = 1, retries = 2)]
async fn said_twice() {}

harness::main!();
