extern crate service_test_harness as harness;
use harness::service_test;

#[service_test(integration, complaince)]
async fn audit_trail_is_complete() {}

harness::main!();
