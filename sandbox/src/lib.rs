//! The reference system under test (the sandbox): a healthcare API in
//! front of five business services, as axum services on loopback, on real
//! PostgreSQL (a schema per service) and Redis (caches, idempotency keys).
//!
//! - [`mesh`]: start the six in-process ([`Mesh::start`], or the `Mesh`
//!   fixture), stop and restart one on its port, route one through a chaos
//!   proxy; `cargo run -p sandbox -- up` runs them as one binary. How to
//!   start one is [`config`] ([`MeshConfig`]); the tests' client of a
//!   running mesh is [`MeshClient`].
//! - The services, each a folder whose `mod.rs` holds its routes and
//!   handlers and whose `wire.rs` its wire types (the requests and answers
//!   its handlers take and give, deriving both `Serialize` and
//!   `Deserialize`, which its callers send and read: no body between
//!   services is written as `json!`, no answer read by key): [`api`]
//!   (`api/`: routes, aggregated health, reads passed through; patients'
//!   intake, sync and update in `patients`; the claim saga with
//!   compensation in `saga`; a visit's lifecycle and its stream in
//!   `visits`), [`insurance`], [`billing`], business intelligence (`bi/`),
//!   doctor personalisation (`doctor/`), and the compliance monitor
//!   (`compliance/`: audit trail, [`access`] log, violations, incidents).
//! - Below the services: [`states`] (a visit's status, the saga's steps
//!   and events, an incident's violation, severity and state, as enums
//!   serialized as the strings the wire and the database hold), the one
//!   error shape ([`ApiError`], its body [`ErrorBody`]), [`store`], and
//!   [`auth`] (`auth/`: the [`Caller`](auth::Caller), per-route access by
//!   service and [`Role`], replayed tokens refused; the signed [`token`]s
//!   every service verifies; what a service keeps of people's standings).
//! - Every request passes the request gate (`gate/`: request id, token
//!   check, injected faults, counting, the one error shape for the
//!   framework's own rejections), which enforces [`sessions`] (logouts and
//!   role changes, in force within their bound; their routes are the
//!   API's).
//! - Cross-cutting: [`client`] (every call to a peer service: per-peer
//!   [`breaker`], [`retry`] with seeded full jitter, per-attempt and
//!   overall timeouts, `X-Request-ID`, a fresh token per attempt), tenants
//!   bound to tokens, logs through a PHI-redacting layer, a test-mode
//!   fault endpoint ([`FaultPlan`]), `/metrics` ([`metrics`]).
//! - [`target`]: the running mesh described as a target file.
//!
//! No module imports one that imports it back (`cargo xtask cycles`):
//! configuration, states, storage and `auth` lie below the service state,
//! the gate and the services above it, and the registry, OpenAPI document
//! and mesh above the services. Modules other crates do not use are private; the types
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
mod json;
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
mod shipper;
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
