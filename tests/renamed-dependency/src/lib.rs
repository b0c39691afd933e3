//! Nothing here: the crate exists for `tests/renamed.rs`, which uses the
//! `service-test` facade under the name `st`.
