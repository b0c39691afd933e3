//! Revocation: logging a person out and changing a person's role, in force
//! on every service within [`REVOCATION_BOUND`].
//!
//! A person's token names the person (`sub`, see [`crate::auth::token::Claims`]).
//! The API records a logout as the person's *not before* (every token of
//! theirs issued at or before that second is refused, `401`) and a role
//! change as the person's role in the directory (it replaces the role their
//! tokens state, narrowing or widening what they may do), both in the
//! mesh's Redis, per tenant. Every service's request gate
//! (`gate`) reads a person's standing there, keeping it at most
//! [`CACHE_FOR`]; when Redis cannot be read and nothing fresh is kept, the
//! person's request is answered `503` (fail closed: a revoked token is
//! never let through for want of the list). Tokens without a `sub`
//! (services', and people's from a client that names no person) are not
//! affected.
//!
//! Routes (on the healthcare API):
//! - `POST /auth/logout`: the caller logs themselves out.
//! - `POST /users/{sub}/logout`: an admin logs `sub` out.
//! - `PUT /users/{sub}/role` `{"role": "billing_clerk"}`: an admin sets
//!   `sub`'s role; `DELETE /users/{sub}/role` gives back the role the
//!   tokens state.
//!
//! Each is audited (`kind = access`, `action` `logout` or `role_change`).
//! A token issued in the same second as a logout is refused too (token
//! times are whole seconds): log in again a second later.

use crate::compliance::access::AccessReport;
use crate::store::escape_part;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::json::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde::{Deserialize, Serialize};

use crate::auth::token;
use crate::auth::{Caller, Role};
use crate::ctx::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::store::StoreError;

pub use crate::auth::standing::{CACHE_FOR, SessionCache, Standing};

/// How long after a logout or a role change is answered every service
/// enforces it (the target file's `auth.revocation_bound_ms`): a standing
/// is kept [`CACHE_FOR`], and read from Redis in well under the rest.
pub const REVOCATION_BOUND: Duration = Duration::from_millis(1000);

/// How long a logout is kept: past it, every token it refuses has expired.
const LOGOUT_KEPT: Duration =
    Duration::from_secs(token::MAX_LIFETIME.as_secs() + 2 * token::LEEWAY + 60);

/// How long a role set by an admin is kept (a directory entry; set again
/// to keep it longer).
const ROLE_KEPT: Duration = Duration::from_secs(400 * 24 * 3600);

fn logout_key(tenant: &str, sub: &str) -> String {
    format!(
        "session:logout:{}:{}",
        escape_part(tenant),
        escape_part(sub)
    )
}

fn role_key(tenant: &str, sub: &str) -> String {
    format!("session:role:{}:{}", escape_part(tenant), escape_part(sub))
}

/// `sub`'s standing in `tenant`: kept, or read from Redis.
pub async fn standing(ctx: &Ctx, tenant: &str, sub: &str) -> Result<Standing, StoreError> {
    if let Some(s) = ctx.sessions.fresh(tenant, sub) {
        return Ok(s);
    }
    // Kept from when the read began: a change after it is read next time.
    let asked = Instant::now();
    let (logout_key, role_key) = (logout_key(tenant, sub), role_key(tenant, sub));
    let (logout, role) = tokio::join!(ctx.cache.get(&logout_key), ctx.cache.get(&role_key));
    let standing = Standing {
        logged_out_at: logout?.and_then(|v| v.parse().ok()),
        role: match role? {
            None => None,
            Some(name) => Some(Role::from_name(&name).ok_or_else(|| {
                StoreError::Failed(format!("the directory holds an unknown role `{name}`"))
            })?),
        },
    };
    ctx.sessions.keep(tenant, sub, asked, standing);
    Ok(standing)
}

/// The gate's check of a person's token: refused (`401`) when the person
/// was logged out after it was issued; the directory's role, when it holds
/// one, replaces the token's. `503` when the standing cannot be read.
pub async fn enforce(ctx: &Ctx, caller: &mut Caller) -> Result<(), Response> {
    let Some(sub) = caller.subject.as_deref() else {
        return Ok(());
    };
    let standing = match standing(ctx, &caller.tenant, sub).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(tenant = %caller.tenant, request_id = %caller.request_id, "a person's standing could not be read: {e}");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "revocation_unavailable",
                "whether this token was revoked cannot be checked now; retry",
            )
            .into_response());
        }
    };
    if standing
        .logged_out_at
        .is_some_and(|at| caller.issued_at <= at)
    {
        return Err(crate::auth::unauthorized(
            "token revoked: the person was logged out after it was issued",
        ));
    }
    if let Some(role) = standing.role {
        caller.role = Some(role);
    }
    Ok(())
}

/// The routes of revocation (the API's).
pub(crate) fn routes() -> axum::Router<Arc<Ctx>> {
    use crate::auth::{Access, Role::*, allow};
    static ANY_PERSON: Access = Access {
        services: &[],
        roles: &Role::ALL,
    };
    static ADMIN: Access = Access {
        services: &[],
        roles: &[Admin],
    };
    axum::Router::new()
        .merge(allow(
            axum::Router::new().route("/auth/logout", post(logout_self)),
            &ANY_PERSON,
        ))
        .merge(allow(
            axum::Router::new()
                .route("/users/{sub}/logout", post(logout_user))
                .route("/users/{sub}/role", put(set_role).delete(clear_role)),
            &ADMIN,
        ))
}

/// A logout answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoggedOut {
    /// The person.
    pub subject: String,
    /// The second (since the Unix epoch) at or before which their tokens
    /// are refused.
    pub logged_out_at: u64,
    /// Every service refuses them within this many milliseconds.
    pub effective_within_ms: u64,
}

/// A role change answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoleSet {
    /// The person.
    pub subject: String,
    /// The role the directory now gives them (`null`: their tokens' own).
    pub role: Option<Role>,
    /// Every service applies it within this many milliseconds.
    pub effective_within_ms: u64,
}

/// `PUT /users/{sub}/role`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    /// `clinician`, `billing_clerk`, `compliance_officer` or `admin`.
    pub role: Role,
}

fn bound_ms() -> u64 {
    REVOCATION_BOUND.as_millis() as u64
}

fn checked_subject(sub: &str) -> ApiResult<()> {
    if sub.is_empty() || sub.len() > 128 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_subject",
            "a person's id is 1 to 128 characters",
        ));
    }
    Ok(())
}

async fn log_out(ctx: &Arc<Ctx>, caller: &Caller, sub: &str) -> ApiResult<Json<LoggedOut>> {
    checked_subject(sub)?;
    let at = token::unix_now();
    ctx.cache
        .set_ex(
            &logout_key(&caller.tenant, sub),
            &at.to_string(),
            LOGOUT_KEPT,
        )
        .await?;
    ctx.sessions.forget(&caller.tenant, sub);
    tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, "person {sub} logged out");
    crate::compliance::access::record(
        ctx,
        caller,
        AccessReport {
            action: "logout".to_string(),
            resource: "session".to_string(),
            subject: Some(sub.to_string()),
            ..AccessReport::default()
        },
    );
    Ok(Json(LoggedOut {
        subject: sub.to_string(),
        logged_out_at: at,
        effective_within_ms: bound_ms(),
    }))
}

/// `POST /auth/logout`: the calling person's tokens, every one issued
/// until now, refused by every service within the bound.
#[utoipa::path(
    post,
    path = "/auth/logout",
    responses(
        (status = 200, description = "logged out", body = LoggedOut),
        (status = 422, description = "the token names no person (no `sub`)"),
    )
)]
pub(crate) async fn logout_self(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
) -> ApiResult<Json<LoggedOut>> {
    let Some(sub) = caller.subject.clone() else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_subject",
            "this token names no person (no `sub`): there is no session to end",
        ));
    };
    log_out(&ctx, &caller, &sub).await
}

/// `POST /users/{sub}/logout` (admin): `sub`'s tokens, every one issued
/// until now, refused by every service within the bound.
#[utoipa::path(
    post,
    path = "/users/{sub}/logout",
    params(("sub" = String, Path, description = "the person")),
    responses((status = 200, description = "logged out", body = LoggedOut))
)]
pub(crate) async fn logout_user(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(sub): Path<String>,
) -> ApiResult<Json<LoggedOut>> {
    log_out(&ctx, &caller, &sub).await
}

/// `PUT /users/{sub}/role` (admin): `{"role"}`, the role every service
/// gives `sub` within the bound, whatever their tokens state.
#[utoipa::path(
    put,
    path = "/users/{sub}/role",
    params(("sub" = String, Path, description = "the person")),
    request_body = NewRole,
    responses((status = 200, description = "the role set", body = RoleSet))
)]
pub(crate) async fn set_role(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(sub): Path<String>,
    Json(new): Json<NewRole>,
) -> ApiResult<Json<RoleSet>> {
    change_role(&ctx, &caller, sub, Some(new.role)).await
}

/// `DELETE /users/{sub}/role` (admin): `sub`'s tokens' own roles apply
/// again, within the bound.
#[utoipa::path(
    delete,
    path = "/users/{sub}/role",
    params(("sub" = String, Path, description = "the person")),
    responses((status = 200, description = "the directory's role removed", body = RoleSet))
)]
pub(crate) async fn clear_role(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(sub): Path<String>,
) -> ApiResult<Json<RoleSet>> {
    change_role(&ctx, &caller, sub, None).await
}

/// Gives `sub` `role` in the directory (`None`: their tokens' own), audited.
async fn change_role(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    sub: String,
    role: Option<Role>,
) -> ApiResult<Json<RoleSet>> {
    checked_subject(&sub)?;
    let key = role_key(&caller.tenant, &sub);
    match role {
        Some(r) => ctx.cache.set_ex(&key, r.name(), ROLE_KEPT).await?,
        None => ctx.cache.del(&key).await?,
    }
    ctx.sessions.forget(&caller.tenant, &sub);
    let name = role.map(Role::name);
    tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, "person {sub}'s role set to {}", name.unwrap_or("their tokens' own"));
    crate::compliance::access::record(
        ctx,
        caller,
        AccessReport {
            action: "role_change".to_string(),
            resource: "role".to_string(),
            subject: Some(sub.to_string()),
            role: name.map(str::to_string),
            ..AccessReport::default()
        },
    );
    Ok(Json(RoleSet {
        subject: sub,
        role,
        effective_within_ms: bound_ms(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_tenants_and_people_apart() {
        assert_ne!(logout_key("a:b", "c"), logout_key("a", "b:c"));
        assert_eq!(role_key("t", "dr x"), "session:role:t:dr%20x");
    }
}
