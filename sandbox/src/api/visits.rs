//! A visit's lifecycle (seed 004): `pending` → `verifying` → `billing` →
//! `completed` or `failed`, stored as the saga moves (`GET /visits/{id}`
//! polls it) and pushed live on a Server-Sent Events stream per visit
//! (`GET /visits/{id}/events`, seed 004 scenario 6). A client that chose
//! its `X-Request-ID` finds its visit while the saga runs
//! (`GET /visits?request_id=…`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;

use crate::json::Json;
use serde_json::json;

use crate::api::wire::{FindQuery, VisitState, VisitsFound};
use crate::auth::Caller;
use crate::ctx::Ctx;
use crate::error::{ApiError, ApiResult};

pub use crate::states::{StatusChange, VisitStatus};

pub(crate) fn migrations() -> Vec<String> {
    vec![
        "ALTER TABLE api.visits ADD COLUMN IF NOT EXISTS request_id TEXT".to_string(),
        "CREATE INDEX IF NOT EXISTS visits_request ON api.visits (tenant, request_id)".to_string(),
    ]
}

pub(crate) fn routes() -> Router<Arc<Ctx>> {
    use crate::auth::{Access, Role::*, allow};
    static READ_VISIT: Access = Access {
        services: &[],
        roles: &[Clinician, BillingClerk, Admin],
    };
    allow(
        Router::new()
            .route("/visits", get(find))
            .route("/visits/{id}/events", get(events)),
        &READ_VISIT,
    )
}

/// Stores a new visit as `pending` under the caller's request id.
pub(crate) async fn open(
    ctx: &Ctx,
    caller: &Caller,
    visit_id: &str,
    patient_id: &str,
    saga_id: &str,
) -> Result<(), ApiError> {
    const OPEN: &str =
        "INSERT INTO api.visits (id, tenant, patient_id, saga_id, status, request_id)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                        $5::text[], $6::text[])";
    // Committed with the visits other requests open meanwhile.
    ctx.db
        .write_grouped(
            OPEN,
            vec![
                Some(visit_id.to_string()),
                Some(caller.tenant.clone()),
                Some(patient_id.to_string()),
                Some(saga_id.to_string()),
                Some(VisitStatus::Pending.as_str().to_string()),
                Some(caller.request_id.clone()),
            ],
        )
        .await?;
    announce(ctx, &caller.tenant, visit_id, VisitStatus::Pending);
    Ok(())
}

/// Moves a visit to `status` (a failure to store it is logged: the saga
/// goes on, the final state is written with its outcome).
pub(crate) async fn transition(ctx: &Ctx, tenant: &str, visit_id: &str, status: VisitStatus) {
    // A saga moves its visit one state at a time (each awaited), so a
    // visit is never twice in one batch.
    const MOVE: &str = "UPDATE api.visits v SET status = u.s
               FROM unnest($1::text[], $2::text[], $3::text[]) AS u(i, t, s)
               WHERE v.id = u.i AND v.tenant = u.t";
    let r = ctx
        .db
        .write_grouped(
            MOVE,
            vec![
                Some(visit_id.to_string()),
                Some(tenant.to_string()),
                Some(status.as_str().to_string()),
            ],
        )
        .await;
    match r {
        Ok(_) => announce(ctx, tenant, visit_id, status),
        Err(e) => {
            tracing::warn!(tenant = %tenant, visit = %visit_id, "visit state {status} not stored: {e}")
        }
    }
}

/// Tells the stream's subscribers (none listening is fine).
pub(crate) fn announce(ctx: &Ctx, tenant: &str, visit_id: &str, status: VisitStatus) {
    let _ = ctx.visit_events.send(StatusChange {
        tenant: tenant.to_string(),
        visit_id: visit_id.to_string(),
        status,
    });
}

/// `GET /visits?request_id=…`: the caller's visits started under that
/// request id, with their state.
#[utoipa::path(
    get,
    path = "/visits",
    params(("request_id" = String, Query, description = "the request that started them")),
    responses((status = 200, description = "the visits", body = VisitsFound))
)]
pub(crate) async fn find(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Query(q): Query<FindQuery>,
) -> ApiResult<Json<VisitsFound>> {
    let rows = ctx
        .db
        .query(
            "SELECT id, status FROM api.visits WHERE tenant = $1 AND request_id = $2 ORDER BY created_at",
            &[&caller.tenant, &q.request_id],
        )
        .await?;
    let visits = rows
        .iter()
        .map(|r| {
            Ok(VisitState {
                visit_id: r.get(0),
                status: stored_status(r.get(1))?,
            })
        })
        .collect::<ApiResult<_>>()?;
    Ok(Json(VisitsFound { visits }))
}

/// A status as `api.visits` stores it, read back.
fn stored_status(s: String) -> ApiResult<VisitStatus> {
    s.parse()
        .map_err(|e| ApiError::internal("reading a visit's status", e))
}

async fn current(ctx: &Ctx, tenant: &str, id: &str) -> Result<Option<VisitStatus>, ApiError> {
    ctx.db
        .query_opt(
            "SELECT status FROM api.visits WHERE id = $1 AND tenant = $2",
            &[&id, &tenant],
        )
        .await?
        .map(|r| stored_status(r.get(0)))
        .transpose()
}

/// `GET /visits/{id}/events`: Server-Sent Events, `event: status`, `data:
/// {"visit_id", "status"}`: the current state first, then each change, the
/// stream closing after a terminal one.
#[utoipa::path(
    get,
    path = "/visits/{id}/events",
    responses((status = 200, description = "`event: status` with a VisitState as `data`, until a terminal state", content_type = "text/event-stream", body = String))
)]
pub(crate) async fn events(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>> {
    // Subscribe before reading the state: no change can fall in between.
    let rx = ctx.visit_events.subscribe();
    let now = current(&ctx, &caller.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("visit {id}")))?;
    let event = |id: &str, status: VisitStatus| {
        Event::default().event("status").data(
            json!(VisitState {
                visit_id: id.to_string(),
                status,
            })
            .to_string(),
        )
    };
    let first = event(&id, now);
    let done = now.is_terminal();
    let tenant = caller.tenant.clone();
    // (pending first event, done, receiver)
    let stream = futures_util::stream::unfold(
        (Some(first), done, rx, id, tenant),
        move |(first, done, mut rx, id, tenant)| async move {
            if let Some(e) = first {
                return Some((Ok(e), (None, done, rx, id, tenant)));
            }
            if done {
                return None;
            }
            loop {
                match rx.recv().await {
                    Ok(c) if c.visit_id == id && c.tenant == tenant => {
                        let e = event(&id, c.status);
                        let end = c.status.is_terminal();
                        return Some((Ok(e), (None, end, rx, id, tenant)));
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(5))))
}
