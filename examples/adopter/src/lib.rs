//! The adopter's code would live here; its tests are in `tests/clinic.rs`.
