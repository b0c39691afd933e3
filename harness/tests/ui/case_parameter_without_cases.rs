use harness::service_test;

#[service_test(unit)]
fn needs_cases(#[case] payer: &str) {
    let _ = payer;
}

harness::main!();
