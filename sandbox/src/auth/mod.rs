//! Who is calling, and may they call this route.
//!
//! The request gate (`gate`) verifies the bearer token
//! ([`crate::auth::token`]) and leaves a [`Caller`] in the request: a mesh
//! service (the token's `iss` names one and carries no role) or a person
//! with a [`Role`]. Handlers take it as an extractor. Each route states its
//! [`Access`]: the services and the roles that may call it; anyone else
//! gets `403` with the reason. A mutating call's token is accepted once
//! ([`ReplayGuard`]).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::service::Service;

pub(crate) mod standing;
pub mod token;

pub use token::Role;
use token::{Claims, TokenError};

/// Who is calling, as established by the request gate from a verified token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant (token and `X-Tenant-ID` agree).
    pub tenant: String,
    /// The token's issuer: a service's name, or the client a person uses.
    pub source: String,
    /// The calling service, when the token is a service's.
    pub service: Option<Service>,
    /// The person's role, when the token is a person's (after a role
    /// change, the role the directory now gives the person: see
    /// [`crate::gate::sessions`]).
    pub role: Option<Role>,
    /// The request id (`X-Request-ID`, propagated or made here).
    pub request_id: String,
    /// The person (the token's `sub`), when the identity provider names
    /// one: what a logout or a role change applies to.
    pub subject: Option<String>,
    /// When the token was issued (`iat`, seconds since the Unix epoch).
    pub issued_at: u64,
}

impl Caller {
    /// From verified claims.
    pub fn from_claims(claims: Claims, request_id: &str) -> Caller {
        let service = match claims.role {
            Some(_) => None,
            None => Service::from_name(&claims.iss),
        };
        Caller {
            tenant: claims.tenant,
            source: claims.iss,
            service,
            role: claims.role,
            request_id: request_id.to_string(),
            subject: claims.sub.filter(|_| claims.role.is_some()),
            issued_at: claims.iat,
        }
    }

    /// A mesh service acting on its own (a background task).
    pub fn service(service: Service, tenant: &str, request_id: &str) -> Caller {
        Caller {
            tenant: tenant.to_string(),
            source: service.name().to_string(),
            service: Some(service),
            role: None,
            request_id: request_id.to_string(),
            subject: None,
            issued_at: token::unix_now(),
        }
    }

    /// Who acts, as the audit trail names it: a person (`sub`, or the
    /// client they came through when the token names no person) with their
    /// role, or a service with the role `service`.
    pub fn actor(&self) -> (String, String) {
        match self.role {
            Some(role) => (
                self.subject.clone().unwrap_or_else(|| self.source.clone()),
                role.name().to_string(),
            ),
            None => (self.source.clone(), "service".to_string()),
        }
    }

    /// May this caller see a patient's SSN? Minimum necessary: only the
    /// services that hold the record, clinicians and admins.
    pub fn sees_ssn(&self) -> bool {
        match self.role {
            Some(r) => matches!(r, Role::Clinician | Role::Admin),
            None => self.service == Some(Service::HealthcareApi),
        }
    }

    fn describe(&self) -> String {
        match (self.service, self.role) {
            (Some(s), _) => format!("service `{s}`"),
            (None, Some(r)) => format!("role `{r}`"),
            (None, None) => format!("`{}` (neither a mesh service nor a role)", self.source),
        }
    }
}

/// A handler asked for the [`Caller`] of a request the gate did not
/// authenticate (an open route): answered `401`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no authenticated caller")]
pub struct Unauthenticated;

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        unauthorized(self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Unauthenticated;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(Unauthenticated)
    }
}

/// `401 {"error": "unauthorized", "message": …, "reason": …}` (the one
/// error shape; `reason` kept for clients of the first version).
pub fn unauthorized(reason: impl std::fmt::Display) -> Response {
    crate::error::ApiError::unauthorized(reason).into_response()
}

/// The `jti`s of the mutating calls' tokens a service has accepted, each
/// kept until its token expires: a second use is refused.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    until: HashMap<String, u64>,
    /// The size at which expired entries are next swept out.
    sweep_at: usize,
}

/// Below this many entries, expired ones are left in place.
const SWEEP_MIN: usize = 4096;

impl ReplayGuard {
    /// Records `jti` (valid until `exp`) at `now`; `false` when it was
    /// already used.
    ///
    /// Expired entries are swept when the map has doubled since the last
    /// sweep: each sweep is paid for by the insertions before it. (It was
    /// swept on every insertion past 4096 entries; under load, with a
    /// minute of tokens live, that was a full pass per mutating request.)
    pub fn first_use(&self, jti: &str, exp: u64, now: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.until.len() >= seen.sweep_at.max(SWEEP_MIN) {
            seen.until.retain(|_, until| *until + token::LEEWAY >= now);
            seen.sweep_at = seen.until.len() * 2;
        }
        if seen.until.contains_key(jti) {
            return false;
        }
        seen.until.insert(jti.to_string(), exp);
        true
    }
}

/// What a request shows of its caller: its headers and method.
pub struct Presented<'a> {
    /// `X-Tenant-ID`.
    pub tenant: Option<&'a str>,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// `X-Source-Service`.
    pub source_service: Option<&'a str>,
    /// Whether the method changes state (`POST`, `PUT`, `PATCH`, `DELETE`).
    pub mutating: bool,
}

/// Checks the bearer token: signed with the mesh's secret, for
/// `audience`, valid now, for the tenant named in `X-Tenant-ID`, issued by
/// `X-Source-Service` when named, and, for a mutating call, not used before.
pub fn authenticate(
    secret: &[u8],
    audience: Service,
    replay: &ReplayGuard,
    p: &Presented<'_>,
    request_id: &str,
) -> Result<Caller, String> {
    let Some(tenant) = p.tenant.filter(|t| !t.is_empty()) else {
        return Err("missing X-Tenant-ID".into());
    };
    let Some(bearer) = p.authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err("missing bearer token".into());
    };
    let claims = token::verify_from(secret, bearer, audience.name(), tenant, p.source_service)
        .map_err(|e| e.to_string())?;
    if p.mutating {
        if claims.jti.is_empty() {
            return Err(TokenError::NoJti.to_string());
        }
        if !replay.first_use(&claims.jti, claims.exp, token::unix_now()) {
            return Err(TokenError::Replayed.to_string());
        }
    }
    Ok(Caller::from_claims(claims, request_id))
}

/// Who may call a route: these services, and people with these roles.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    /// The calling services allowed.
    pub services: &'static [Service],
    /// The roles allowed.
    pub roles: &'static [Role],
}

impl Access {
    /// Does it let `caller` in?
    pub fn permits(&self, caller: &Caller) -> bool {
        caller.service.is_some_and(|s| self.services.contains(&s))
            || caller.role.is_some_and(|r| self.roles.contains(&r))
    }
}

/// Every mesh service (those that write to the compliance monitor and BI).
pub const MESH: &[Service] = &[
    Service::HealthcareApi,
    Service::InsuranceVerification,
    Service::BillingEngine,
    Service::ComplianceMonitor,
    Service::BusinessIntelligence,
    Service::DoctorPersonalization,
];

/// Only the API (the orchestrator) calls the business services' own
/// routes.
pub const API: &[Service] = &[Service::HealthcareApi];

/// Applies `access` to every route of `router` (a `route_layer`: an
/// unknown route stays a 404, not a 403).
pub fn allow<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    access: &'static Access,
) -> Router<S> {
    router.route_layer(axum::middleware::from_fn(
        move |req: Request, next: Next| async move {
            let Some(caller) = req.extensions().get::<Caller>() else {
                return Unauthenticated.into_response();
            };
            if access.permits(caller) {
                return next.run(req).await;
            }
            let reason = format!(
                "{} may not call {} {}",
                caller.describe(),
                req.method(),
                req.uri().path()
            );
            crate::error::ApiError::forbidden(reason).into_response()
        },
    ))
}

/// Is `host` (a `Host` header) a loopback name or address, with or
/// without a port?
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The `/admin/*` guard: an admin's token (checked by [`allow`] around
/// it) and a loopback `Host` (a page reaching a loopback port by DNS
/// rebinding names another host).
pub async fn loopback_host_only(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if is_loopback_host(host) {
        return next.run(req).await;
    }
    crate::error::ApiError::forbidden("the admin endpoints answer only a loopback Host")
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_accepted_once_and_forgotten_after_expiry() {
        let g = ReplayGuard::default();
        assert!(g.first_use("a", 100, 50));
        assert!(!g.first_use("a", 100, 60));
        assert!(g.first_use("b", 100, 60));
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9",
            "127.0.0.2",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "",
            "evil.example:80",
            "10.0.0.1:80",
            "[2001:db8::1]:1",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
