extern crate service_test_harness as harness;
use harness::service_test;

#[service_test(unit)]
async fn generic<T: Default>() {}

#[service_test(unit)]
const unsafe fn const_and_unsafe() {}

#[service_test(unit)]
fn takes_impl_trait(x: impl std::fmt::Debug) {}

#[service_test(unit)]
fn returns_a_number() -> i32 {
    4
}

harness::main!();
