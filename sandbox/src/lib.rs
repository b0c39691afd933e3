//! The reference system under test (the sandbox): a healthcare API in
//! front of five business services, as axum services on loopback, on real
//! PostgreSQL (a schema per service) and Redis (caches, idempotency keys).
//!
//! - [`mesh`]: start the six in-process ([`Mesh::start`], or the `Mesh`
//!   fixture), stop and restart one on its port, route one through a chaos
//!   proxy; `cargo run -p sandbox -- up` runs them as one binary.
//! - The services: [`api`] (routes, aggregated health, reads passed
//!   through; [`patients`]: intake, sync, update; [`saga`]: visits and the
//!   claim saga with compensation), [`insurance`], [`billing`],
//!   [`compliance`], [`bi`], [`doctor`].
//! - Cross-cutting: [`client`] (every service-to-service call: per-target
//!   [`breaker`], [`retry`] with seeded full jitter, per-attempt and
//!   overall timeouts, `X-Request-ID`, signed [`token`]s that every service
//!   verifies), tenants bound to tokens, [`auth`] (the caller, per-route
//!   access by service and role, replayed tokens refused), [`logs`] through a PHI-redacting
//!   layer, a test-mode fault endpoint ([`faults::FaultPlan`]),
//!   `/metrics` ([`metrics`]).
//! - [`target`]: the running mesh described as a target file.

pub mod access;
pub mod admin;
pub mod api;
pub mod audit_writer;
pub mod auth;
pub mod bench;
pub mod bi;
pub mod billing;
pub mod breaker;
pub mod chaos;
pub mod client;
pub mod clock;
pub mod compliance;
pub mod config;
pub mod control;
pub mod ctx;
pub mod doctor;
pub mod error;
pub mod faults;
pub mod fixture;
pub mod gate;
pub mod incidents;
pub mod insurance;
pub mod limits;
pub mod logs;
pub mod mesh;
mod mesh_client;
pub mod metrics;
mod minimum_necessary;
pub mod openapi;
pub mod ops;
pub mod patients;
mod registry;
pub mod retry;
pub mod saga;
pub mod schema;
pub mod service;
pub mod sessions;
mod standing;
pub mod states;
pub mod store;
pub mod store_tls;
pub mod target;
pub mod timing;
pub mod tls;
pub mod token;
pub mod vault;
pub mod violations;
pub mod visits;

pub use auth::Role;
pub use faults::FaultPlan;
pub use fixture::Tenant;
pub use mesh::{Answer, Credentials, Mesh, MeshClient, MeshConfig, MeshError};
pub use service::Service;
pub use tls::TlsMaterial;
