extern crate service_test_harness as harness;
use harness::service_test;

#[service_test(unit)]
#[case(1, 2)]
#[case::too_few(3)]
#[case(4, 5, 6)]
fn adds(#[case] a: u32, #[case] b: u32) {
    let _ = a + b;
}

harness::main!();
