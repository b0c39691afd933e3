extern crate service_test_harness as harness;
use harness::service_test;

pub struct NotAFixture;

#[service_test(unit)]
async fn needs_something(_x: NotAFixture) {}

harness::main!();
