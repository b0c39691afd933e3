extern crate service_test_harness as harness;
harness::test_group!("nobody", 0);

#[harness::service_test(unit, group = "nobody")]
async fn would_wait_forever() {}

harness::main!();
