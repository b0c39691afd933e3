//! Compile errors of the macros are part of the API: each case in `ui/`
//! must fail to compile with exactly the message beside it (`.stderr`).
//! Regenerate after an intended change with `TRYBUILD=overwrite`.

extern crate service_test_harness as harness;

use harness::service_test;

#[service_test(unit, slow)]
fn macro_errors_point_at_the_mistake() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

harness::main!();
