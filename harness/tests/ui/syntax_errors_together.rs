extern crate service_test_harness as harness;
use harness::service_test;

// Three mistakes in one attribute: all three are reported, and the
// function is still defined (the call below raises no second error).
#[service_test(unit, timeout = 10, retries = "two", group = )]
async fn three_mistakes() {}

fn main() {
    let _ = three_mistakes;
}
