//! Nothing here: the crate exists for `tests/quickstart.rs`, the README's
//! quick start as a user compiles it.
