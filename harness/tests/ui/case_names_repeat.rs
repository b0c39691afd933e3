extern crate service_test_harness as harness;
use harness::service_test;

#[service_test(unit)]
#[case::small(1)]
#[case::small(2)]
fn twice(#[case] n: u32) {
    let _ = n;
}

harness::main!();
