//! Test mode's `/admin/*` endpoints: injected faults and the mesh's log
//! lines. They answer only a request with an admin token (a user token
//! with the `admin` role) whose `Host` is a loopback address: a browser
//! page that reaches a loopback port by DNS rebinding names another host.

use std::sync::{Arc, PoisonError};

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

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
        .route("/admin/config", axum::routing::put(reload_config))
        .route("/admin/breakers/reset", axum::routing::post(reset_breakers))
        .route("/admin/pool/hold", axum::routing::post(hold_pool))
        .route_layer(axum::middleware::from_fn(crate::auth::loopback_host_only));
    allow(r, &ADMIN)
}

/// `PUT /admin/config` (test mode): `{"attempt_timeout_ms", "call_timeout_ms",
/// "retry_max_attempts"}`, each optional: the service's outgoing calls use
/// them from the next call on (calls in flight finish with what they began
/// with). Bounds are checked: an attempt no longer than the call, 1 to 5
/// attempts, timeouts from 1 ms to 60 s. Answers the effective client
/// settings.
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reload {
    /// One attempt's timeout.
    attempt_timeout_ms: Option<u64>,
    /// The whole call's, retries included.
    call_timeout_ms: Option<u64>,
    /// Attempts per call.
    retry_max_attempts: Option<u32>,
}

/// `POST /admin/breakers/reset` (test mode): closes every breaker of the
/// service's outgoing client (on the compliance monitor, the log
/// pipeline's too), with an empty window: a suite's teardown
/// after a test that tripped one on purpose, so that the next test meets
/// the service as it was.
#[utoipa::path(
    post,
    path = "/admin/breakers/reset",
    responses((status = 204, description = "every breaker closed"))
)]
pub async fn reset_breakers(State(ctx): State<Arc<Ctx>>) -> StatusCode {
    ctx.client.reset_breakers();
    if let Some(shipper) = &ctx.log_shipper {
        shipper.reset_breakers();
    }
    StatusCode::NO_CONTENT
}

/// `GET /admin/logs` answered.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LogLines {
    /// The mesh's log lines so far, redacted.
    pub lines: Vec<String>,
}

#[utoipa::path(
    put,
    path = "/admin/config",
    request_body = Reload,
    responses((status = 200, description = "the effective client settings", body = Reload))
)]
pub async fn reload_config(
    State(ctx): State<Arc<Ctx>>,
    axum::Json(r): axum::Json<Reload>,
) -> Result<axum::Json<Reload>, crate::error::ApiError> {
    use std::time::Duration;
    let now = ctx.client.config();
    let attempt = r
        .attempt_timeout_ms
        .map_or(now.attempt_timeout, Duration::from_millis);
    let call = r
        .call_timeout_ms
        .map_or(now.call_timeout, Duration::from_millis);
    let attempts = r.retry_max_attempts.unwrap_or(now.retry.max_attempts);
    let bounds = Duration::from_millis(1)..=Duration::from_secs(60);
    let problem = if !bounds.contains(&attempt) || !bounds.contains(&call) {
        Some("timeouts must be between 1 ms and 60 s")
    } else if attempt > call {
        Some("an attempt cannot outlast the call (attempt_timeout_ms > call_timeout_ms)")
    } else if !(1..=5).contains(&attempts) {
        Some("retry_max_attempts must be 1 to 5")
    } else {
        None
    };
    if let Some(why) = problem {
        return Err(crate::error::ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            why,
        ));
    }
    let c = ctx.client.reload(|c| {
        c.attempt_timeout = attempt;
        c.call_timeout = call;
        c.retry.max_attempts = attempts;
    });
    tracing::info!(
        "client settings reloaded: attempt {:?}, call {:?}, {} attempts",
        c.attempt_timeout,
        c.call_timeout,
        c.retry.max_attempts
    );
    Ok(axum::Json(Reload {
        attempt_timeout_ms: Some(c.attempt_timeout.as_millis() as u64),
        call_timeout_ms: Some(c.call_timeout.as_millis() as u64),
        retry_max_attempts: Some(c.retry.max_attempts),
    }))
}

/// `GET /admin/logs` (test mode): the mesh's log lines so far, redacted,
/// as `{"lines": [...]}`.
#[utoipa::path(
    get,
    path = "/admin/logs",
    responses((status = 200, description = "the redacted log lines so far", body = LogLines))
)]
pub async fn logs(State(ctx): State<Arc<Ctx>>) -> axum::Json<LogLines> {
    axum::Json(LogLines {
        lines: ctx.book.lines(),
    })
}

/// `POST /admin/faults`: replaces the plan of the plan's tenant (or the
/// one for every tenant), leaving other tenants' plans alone: tests on a
/// shared deployment fault their own tenant without disturbing each other.
#[utoipa::path(
    post,
    path = "/admin/faults",
    request_body = FaultPlan,
    responses((status = 200, description = "the plan now in force", body = FaultPlan))
)]
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
#[utoipa::path(
    get,
    path = "/admin/faults",
    responses((status = 200, description = "the plans in force", body = Vec<FaultPlan>))
)]
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
#[utoipa::path(
    delete,
    path = "/admin/faults",
    params(("tenant" = Option<String>, Query, description = "only this tenant's plans")),
    responses((status = 204, description = "cleared"))
)]
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

/// `POST /admin/pool/hold` (test mode): `{"ms": M}`.
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolHold {
    /// How long every connection is held, 1 ms to 60 s.
    pub ms: u64,
    /// Connections held: answered (all of the pool's).
    #[serde(default)]
    pub held: usize,
}

/// `POST /admin/pool/hold` (test mode): checks out every connection of
/// the service's pool and holds them for `ms`, then lets them go; answers
/// once all are held. Meanwhile a request needing the database waits the
/// pool's wait and is answered `503 database_unavailable`: the saturated
/// pool of seed 000's resource limits, made on purpose.
#[utoipa::path(
    post,
    path = "/admin/pool/hold",
    request_body = PoolHold,
    responses(
        (status = 200, description = "every connection held", body = PoolHold),
        (status = 503, description = "the connections could not all be had")
    )
)]
pub async fn hold_pool(
    axum::extract::State(ctx): axum::extract::State<std::sync::Arc<crate::ctx::Ctx>>,
    axum::Json(h): axum::Json<PoolHold>,
) -> Result<axum::Json<PoolHold>, crate::error::ApiError> {
    if !(1..=60_000).contains(&h.ms) {
        return Err(crate::error::ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_hold",
            "ms must be from 1 to 60000",
        ));
    }
    let n = ctx.db.config().max_size;
    let held = ctx
        .db
        .hold(n, std::time::Duration::from_millis(h.ms))
        .await?;
    Ok(axum::Json(PoolHold { ms: h.ms, held }))
}
