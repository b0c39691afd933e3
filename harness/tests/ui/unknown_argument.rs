extern crate service_test_harness as harness;
use harness::service_test;

#[service_test(unit, timeot = "1s", retries = 2, services(insurance, billing::v2))]
async fn misspelt_key() {}

harness::main!();
