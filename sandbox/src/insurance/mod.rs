//! insurance-verification: eligibility for a patient and procedures
//! (answers cached in Redis with a TTL), cancel, read.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

use crate::json::Json;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::ctx::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::service::Service;

mod wire;

pub use wire::{Verification, VerifyRequest};

pub(crate) fn migrations() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS insurance.verifications (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            patient_id TEXT NOT NULL,
            payer_id TEXT NOT NULL,
            member_id TEXT NOT NULL,
            date_of_service TEXT NOT NULL,
            procedures TEXT NOT NULL,
            eligible BOOLEAN NOT NULL,
            coverage_pct INT NOT NULL,
            reason TEXT NOT NULL,
            cached BOOLEAN NOT NULL,
            status TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            cancelled_at TIMESTAMPTZ)"
            .to_string(),
        "CREATE INDEX IF NOT EXISTS verifications_tenant ON insurance.verifications (tenant, patient_id)"
            .to_string(),
        crate::store::patient_copies(Service::InsuranceVerification),
    ]
}

pub(crate) fn routes() -> Router<Arc<Ctx>> {
    use crate::auth::{API, Access, Role::*, allow};
    static CHECK: Access = Access {
        services: API,
        roles: &[Admin],
    };
    static READ: Access = Access {
        services: API,
        roles: &[Clinician, BillingClerk, Admin],
    };
    Router::new()
        .merge(allow(
            Router::new()
                .route("/verify", post(verify))
                .route("/verifications/{id}/cancel", post(cancel)),
            &CHECK,
        ))
        .merge(allow(
            Router::new().route("/verifications/{id}", get(read)),
            &READ,
        ))
        .merge(crate::ctx::sync_routes())
}

/// An eligibility answer, as cached.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Eligibility {
    eligible: bool,
    coverage_pct: i32,
    reason: String,
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// The payer's rule, as this sandbox models it: covered when the date of
/// service falls in the coverage period; self-pay (no member id) is
/// eligible with no coverage.
fn decide(r: &VerifyRequest) -> Eligibility {
    if r.member_id.is_empty() {
        return Eligibility {
            eligible: true,
            coverage_pct: 0,
            reason: "self-pay".into(),
        };
    }
    if r.date_of_service < r.effective {
        return Eligibility {
            eligible: false,
            coverage_pct: 0,
            reason: "coverage not yet effective on the date of service".into(),
        };
    }
    if r.termination
        .as_ref()
        .is_some_and(|t| r.date_of_service > *t)
    {
        return Eligibility {
            eligible: false,
            coverage_pct: 0,
            reason: "coverage terminated before the date of service".into(),
        };
    }
    Eligibility {
        eligible: true,
        coverage_pct: 100 - i32::from(r.coinsurance_pct.min(100)),
        reason: "active coverage".into(),
    }
}

/// The cache key of an eligibility question: the tenant (one tenant never
/// reads another's answers), then a SHA-256 of the question, so the member
/// id (PHI) is not spelled out in Redis.
pub fn eligibility_key(
    tenant: &str,
    payer: &str,
    member: &str,
    dos: &str,
    procs: &[String],
) -> String {
    use sha2::{Digest, Sha256};
    let mut procs = procs.to_vec();
    procs.sort();
    let question = format!("{payer}\u{1f}{member}\u{1f}{dos}\u{1f}{}", procs.join(","));
    let digest = Sha256::digest(question.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("elig:{tenant}:{hex}")
}

impl crate::ctx::Replayable for Verification {
    fn replayed(self) -> Self {
        Verification {
            replayed: Some(true),
            ..self
        }
    }
}

/// `POST /verify`: an eligibility question, answered and recorded.
#[utoipa::path(
    post,
    path = "/verify",
    request_body = VerifyRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters")),
    responses(
        (status = 201, description = "verified", body = Verification),
        (status = 200, description = "the first answer to this idempotency key", body = Verification),
    )
)]
async fn verify(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    headers: HeaderMap,
    Json(r): Json<VerifyRequest>,
) -> ApiResult<(StatusCode, Json<Verification>)> {
    if !is_date(&r.date_of_service) || !is_date(&r.effective) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "dates must be YYYY-MM-DD",
        ));
    }
    if r.procedures.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "no procedures to verify",
        ));
    }
    let id = ctx.id_mint.next("ver");
    let key = crate::ctx::idempotency_key(&headers)?;
    let ckey = eligibility_key(
        &caller.tenant,
        &r.payer_id,
        &r.member_id,
        &r.date_of_service,
        &r.procedures,
    );
    // The key's first use and the cache are asked at once (one round trip
    // to Redis for both, pipelined on its connection).
    let (first, cached) = tokio::join!(
        crate::ctx::replay(
            &ctx,
            "verify",
            &caller.tenant,
            key.as_deref(),
            &id,
            |first| {
                let ctx = &ctx;
                let tenant = &caller.tenant;
                async move { load(ctx, tenant, &first).await }
            },
        ),
        ctx.cache.get(&ckey),
    );
    if let Some(first) = first? {
        return Ok((StatusCode::OK, Json(first)));
    }
    // The cache is an optimisation: unreachable, it is a miss.
    let cached: Option<Eligibility> = match cached {
        Ok(text) => text.and_then(|t| serde_json::from_str(&t).ok()),
        Err(e) => {
            ctx.metrics.incr("cache_errors_total", "op=\"get\"");
            tracing::warn!(tenant = %caller.tenant, request_id = %caller.request_id, "eligibility cache unavailable, treated as a miss: {e}");
            None
        }
    };
    let was_cached = cached.is_some();
    let answer = match cached {
        Some(a) => a,
        None => {
            let a = decide(&r);
            let text = serde_json::to_string(&a).unwrap_or_default();
            if let Err(e) = ctx
                .cache
                .set_ex(&ckey, &text, ctx.settings.eligibility_ttl)
                .await
            {
                ctx.metrics.incr("cache_errors_total", "op=\"set\"");
                tracing::warn!(tenant = %caller.tenant, request_id = %caller.request_id, "eligibility answer not cached: {e}");
            }
            a
        }
    };
    const INSERT: &str = "INSERT INTO insurance.verifications (id, tenant, patient_id, payer_id,
                    member_id, date_of_service, procedures, eligible, coverage_pct, reason,
                    cached, status)
                   SELECT i, t, p, y, m, d, c, e::boolean, g::int, r, h::boolean, 'active'
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                               $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                               $11::text[])
                        AS u(i, t, p, y, m, d, c, e, g, r, h)";
    // Committed with the verifications other requests make meanwhile.
    let inserted = ctx
        .db
        .write_grouped(
            INSERT,
            vec![
                Some(id.clone()),
                Some(caller.tenant.clone()),
                Some(r.patient_id.clone()),
                Some(r.payer_id.clone()),
                Some(r.member_id.clone()),
                Some(r.date_of_service.clone()),
                Some(r.procedures.join(",")),
                Some(answer.eligible.to_string()),
                Some(answer.coverage_pct.to_string()),
                Some(answer.reason.clone()),
                Some(was_cached.to_string()),
            ],
        )
        .await;
    if let Err(e) = inserted {
        if let Some(k) = &key {
            let _ = ctx.cache.release("verify", &caller.tenant, k).await;
        }
        return Err(e.into());
    }
    tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, verification = %id, eligible = answer.eligible, cached = was_cached, "verified eligibility");
    // The verification as committed (what `load` would read back, without
    // the round trip): the columns written above, the list as stored.
    let v = Verification {
        verification_id: id,
        patient_id: r.patient_id,
        payer_id: r.payer_id,
        date_of_service: r.date_of_service,
        procedures: r
            .procedures
            .join(",")
            .split(',')
            .map(str::to_string)
            .collect(),
        eligible: answer.eligible,
        coverage_pct: answer.coverage_pct,
        reason: answer.reason,
        cached: was_cached,
        status: "active".to_string(),
        replayed: None,
    };
    Ok((StatusCode::CREATED, Json(v)))
}

async fn load(ctx: &Ctx, tenant: &str, id: &str) -> Result<Option<Verification>, ApiError> {
    let row = ctx
        .db
        .query_opt(
            "SELECT id, patient_id, payer_id, date_of_service, procedures, eligible,
                    coverage_pct, reason, cached, status
             FROM insurance.verifications WHERE id = $1 AND tenant = $2",
            &[&id, &tenant],
        )
        .await?;
    Ok(row.map(|r| {
        let procs: String = r.get(4);
        Verification {
            verification_id: r.get(0),
            patient_id: r.get(1),
            payer_id: r.get(2),
            date_of_service: r.get(3),
            procedures: procs.split(',').map(str::to_string).collect(),
            eligible: r.get(5),
            coverage_pct: r.get(6),
            reason: r.get(7),
            cached: r.get(8),
            status: r.get(9),
            replayed: None,
        }
    }))
}

/// `GET /verifications/{id}`.
#[utoipa::path(
    get,
    path = "/verifications/{id}",
    responses((status = 200, description = "the verification", body = Verification))
)]
async fn read(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Verification>> {
    let verification = load(&ctx, &caller.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("verification {id}")))?;
    crate::compliance::access::read(
        &ctx,
        &caller,
        &verification.patient_id,
        format!("GET /verifications/{id}"),
    );
    Ok(Json(verification))
}

/// `POST /verifications/{id}/cancel` (a saga's compensation; twice is fine).
#[utoipa::path(
    post,
    path = "/verifications/{id}/cancel",
    responses((status = 200, description = "cancelled", body = Verification))
)]
async fn cancel(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Verification>> {
    crate::ctx::mark_cancelled(
        &ctx,
        "insurance.verifications",
        "verification",
        &id,
        &caller,
    )
    .await?;
    load(&ctx, &caller.tenant, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("verification {id}")))
}

/// The service's routes, documented.
#[derive(utoipa::OpenApi)]
#[openapi(paths(verify, read, cancel, crate::ctx::sync_patient))]
pub(crate) struct Doc;
