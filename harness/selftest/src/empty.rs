//! A harness binary with no registered tests: running it must fail loudly,
//! because an empty registry usually means the tests were never linked.

harness::main!();
