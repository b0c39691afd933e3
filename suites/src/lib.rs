//! The shipped suites live in `tests/suites.rs` (one harness = false binary).
