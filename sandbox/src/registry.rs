//! One entry per service: the routes it serves and the tables it owns.
//!
//! Adding a service is a [`Service`] variant (its name and schema in
//! `service::TABLE`), a module with `routes()` and `migrations()`, and an
//! entry here; the mesh starts whatever this table lists.

use std::sync::Arc;

use axum::Router;

use crate::ctx::Ctx;
use crate::service::Service;

/// A service's module.
pub(crate) struct Module {
    /// Which service.
    pub service: Service,
    /// Its own routes (the mesh adds `/metrics`, `/config`, the admin
    /// routes in test mode, and `/health` unless the module serves its own).
    pub routes: fn() -> Router<Arc<Ctx>>,
    /// Its schema's statements, run at start.
    pub migrations: fn() -> Vec<String>,
    /// The module serves `/health` itself (the API aggregates its peers').
    pub own_health: bool,
    /// Its own routes' OpenAPI document (see [`crate::openapi`]).
    pub openapi: fn() -> utoipa::openapi::OpenApi,
}

const MODULES: [Module; 6] = [
    Module {
        service: Service::HealthcareApi,
        routes: crate::api::routes,
        migrations: crate::api::migrations,
        own_health: true,
        openapi: <crate::api::Doc as utoipa::OpenApi>::openapi,
    },
    Module {
        service: Service::InsuranceVerification,
        routes: crate::insurance::routes,
        migrations: crate::insurance::migrations,
        own_health: false,
        openapi: <crate::insurance::Doc as utoipa::OpenApi>::openapi,
    },
    Module {
        service: Service::BillingEngine,
        routes: crate::billing::routes,
        migrations: crate::billing::migrations,
        own_health: false,
        openapi: <crate::billing::Doc as utoipa::OpenApi>::openapi,
    },
    Module {
        service: Service::ComplianceMonitor,
        routes: crate::compliance::routes,
        migrations: crate::compliance::migrations,
        own_health: false,
        openapi: <crate::compliance::Doc as utoipa::OpenApi>::openapi,
    },
    Module {
        service: Service::BusinessIntelligence,
        routes: crate::bi::routes,
        migrations: crate::bi::migrations,
        own_health: false,
        openapi: <crate::bi::Doc as utoipa::OpenApi>::openapi,
    },
    Module {
        service: Service::DoctorPersonalization,
        routes: crate::doctor::routes,
        migrations: crate::doctor::migrations,
        own_health: false,
        openapi: <crate::doctor::Doc as utoipa::OpenApi>::openapi,
    },
];

/// The module of `service`.
pub(crate) fn module(service: Service) -> &'static Module {
    // A variant without an entry is a programming error every mesh start
    // (and so every suite) would show at once.
    MODULES
        .iter()
        .find(|m| m.service == service)
        .unwrap_or_else(|| panic!("sandbox::registry has no entry for {service}"))
}
