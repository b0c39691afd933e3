//! The reference system under test (the sandbox): a healthcare API in
//! front of five business services, as axum services on loopback, on real
//! PostgreSQL (a schema per service) and Redis (caches, idempotency keys).
//!
//! - [`mesh`]: start the six in-process ([`Mesh::start`], or the `Mesh`
//!   fixture), stop and restart one on its port, route one through a chaos
//!   proxy; `cargo run -p sandbox -- up` runs them as one binary. How to
//!   start one is [`config`] ([`MeshConfig`]); the tests' client of a
//!   running mesh is [`MeshClient`].
//! - The services, each a module with its routes and its wire types (the
//!   requests and answers its handlers take and give, which its callers
//!   send and read): [`api`] (routes, aggregated health, reads passed
//!   through; intake, sync and update of patients; visits and the claim
//!   saga with compensation), [`insurance`], [`billing`], the compliance
//!   monitor (audit trail, [`access`] log, violations, incidents), business
//!   intelligence, doctor personalisation.
//! - Below the services: [`states`] (a visit's status, the saga's steps
//!   and events, an incident's violation, severity and state, as enums
//!   serialized as the strings the wire and the database hold), the one
//!   error shape ([`ApiError`], its body [`ErrorBody`]), [`store`].
//! - Cross-cutting: [`client`] (every service-to-service call: per-target
//!   [`breaker`], [`retry`] with seeded full jitter, per-attempt and
//!   overall timeouts, `X-Request-ID`, signed [`token`]s that every service
//!   verifies), tenants bound to tokens, [`auth`] (the caller, per-route
//!   access by service and role, replayed tokens refused), logs through a
//!   PHI-redacting layer, a test-mode fault endpoint ([`FaultPlan`]),
//!   `/metrics` ([`metrics`]).
//! - [`target`]: the running mesh described as a target file.
//!
//! No module imports one that imports it back (`cargo xtask cycles`):
//! configuration, states and storage lie below the service state, the
//! services above it, and the registry, OpenAPI document and mesh above
//! the services. Modules other crates do not use are private; the types
//! they need are re-exported here.

mod admin;
pub mod api;
mod audit_writer;
pub mod auth;
pub mod bench;
mod bi;
pub mod billing;
pub mod breaker;
pub mod chaos;
pub mod client;
pub mod clock;
mod compliance;
pub mod config;
pub mod control;
mod ctx;
mod doctor;
mod error;
mod faults;
pub mod fixture;
mod gate;
pub mod insurance;
pub mod limits;
mod logs;
pub mod mesh;
mod mesh_client;
pub mod metrics;
mod minimum_necessary;
pub mod openapi;
mod ops;
mod registry;
pub mod retry;
pub mod schema;
mod service;
pub mod states;
pub mod store;
pub mod store_tls;
pub mod target;
pub mod timing;
pub mod tls;
pub mod vault;

pub use auth::{Role, token};
pub use compliance::access;
pub use config::{MeshConfig, PoolConfig, ServerLimits};
pub use error::{ApiError, ApiResult, ErrorBody};
pub use faults::FaultPlan;
pub use fixture::Tenant;
pub use gate::sessions;
pub use mesh::{
    Answer, AnswerCheck, Credentials, Mesh, MeshClient, MeshError, Minter, RequestError,
};
pub use service::Service;
pub use states::{
    CompensationOutcome, IncidentState, SagaEvent, SagaStep, Severity, ViolationCode, VisitStatus,
};
pub use tls::TlsMaterial;
