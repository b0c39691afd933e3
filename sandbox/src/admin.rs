//! Test mode's `/admin/*` endpoints: injected faults and the mesh's log
//! lines. They answer only a request with an admin token (a user token
//! with the `admin` role) whose `Host` is a loopback address: a browser
//! page that reaches a loopback port by DNS rebinding names another host.

use std::sync::{Arc, PoisonError};

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Access, Role, allow};
use crate::ctx::Ctx;
use crate::faults::FaultPlan;

/// The `/admin/*` routes: an admin's token, a loopback `Host`.
pub fn routes() -> axum::Router<Arc<Ctx>> {
    use axum::routing::get;
    static ADMIN: Access = Access {
        services: &[],
        roles: &[Role::Admin],
    };
    let r = axum::Router::new()
        .route(
            "/admin/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .route("/admin/logs", get(logs))
        .route_layer(axum::middleware::from_fn(crate::auth::loopback_host_only));
    allow(r, &ADMIN)
}

/// `GET /admin/logs` (test mode): the mesh's log lines so far, redacted,
/// as `{"lines": [...]}`.
pub async fn logs(State(ctx): State<Arc<Ctx>>) -> axum::Json<Value> {
    axum::Json(json!({"lines": ctx.book.lines()}))
}

/// `POST /admin/faults`: replaces the plan of the plan's tenant (or the
/// one for every tenant), leaving other tenants' plans alone: tests on a
/// shared deployment fault their own tenant without disturbing each other.
pub async fn set_faults(
    State(ctx): State<Arc<Ctx>>,
    axum::Json(plan): axum::Json<FaultPlan>,
) -> axum::Json<FaultPlan> {
    let mut plans = ctx.faults.lock().unwrap_or_else(PoisonError::into_inner);
    plans.retain(|p| p.tenant != plan.tenant);
    plans.push(plan.clone());
    axum::Json(plan)
}

/// `GET /admin/faults`: the plans in force.
pub async fn get_faults(State(ctx): State<Arc<Ctx>>) -> axum::Json<Vec<FaultPlan>> {
    axum::Json(
        ctx.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    )
}

/// Which plans `DELETE /admin/faults` removes.
#[derive(Debug, Default, Deserialize)]
pub struct ClearFaults {
    /// Only this tenant's (all plans when absent).
    pub tenant: Option<String>,
}

/// `DELETE /admin/faults[?tenant=T]`: no faults (for `T`).
pub async fn clear_faults(
    State(ctx): State<Arc<Ctx>>,
    axum::extract::Query(q): axum::extract::Query<ClearFaults>,
) -> StatusCode {
    let mut plans = ctx.faults.lock().unwrap_or_else(PoisonError::into_inner);
    match q.tenant {
        Some(t) => plans.retain(|p| p.tenant.as_deref() != Some(t.as_str())),
        None => plans.clear(),
    }
    StatusCode::NO_CONTENT
}
