//! billing-engine: create a claim (NPI check digit, ICD-10-CM and CPT
//! validated; `422` with a structured body when invalid; an idempotency key
//! held in Redis makes a repeated create return the same claim), cancel,
//! read.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

use crate::json::Json;

use crate::auth::Caller;
use crate::ctx::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::service::Service;

mod wire;

pub use wire::{Claim, CreateClaim, FieldProblem, Line, VoidClaim, Voided};

pub(crate) fn migrations() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS billing.claims (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            patient_id TEXT NOT NULL,
            verification_id TEXT NOT NULL,
            npi TEXT NOT NULL,
            diagnoses TEXT NOT NULL,
            procedures TEXT NOT NULL,
            total_cents BIGINT NOT NULL,
            status TEXT NOT NULL,
            idempotency_key TEXT,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            cancelled_at TIMESTAMPTZ)"
            .to_string(),
        "CREATE INDEX IF NOT EXISTS claims_tenant ON billing.claims (tenant, patient_id)"
            .to_string(),
        "CREATE INDEX IF NOT EXISTS claims_key ON billing.claims (tenant, idempotency_key)"
            .to_string(),
        crate::store::patient_copies(Service::BillingEngine),
    ]
}

pub(crate) fn routes() -> Router<Arc<Ctx>> {
    use crate::auth::{API, Access, Role::*, allow};
    static CLAIMS: Access = Access {
        services: API,
        roles: &[BillingClerk, Admin],
    };
    Router::new()
        .merge(allow(
            Router::new()
                .route("/claims", post(create))
                .route("/claims/void", post(void))
                .route("/claims/{id}", get(read))
                .route("/claims/{id}/cancel", post(cancel)),
            &CLAIMS,
        ))
        .merge(crate::ctx::sync_routes())
}

/// The problems of a claim, one per field (empty: valid).
fn problems(c: &CreateClaim) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    let mut bad = |field: String, code: &str, message: &str| {
        out.push(FieldProblem {
            field,
            code: code.to_string(),
            message: message.to_string(),
        });
    };
    if c.npi.len() != 10 || !c.npi.bytes().all(|b| b.is_ascii_digit()) {
        bad("npi".into(), "npi_format", "an NPI is 10 digits");
    } else if !phi::ids::is_valid_npi(&c.npi) {
        bad(
            "npi".into(),
            "npi_check_digit",
            "the NPI's check digit (Luhn, prefix 80840) does not match",
        );
    }
    if c.diagnoses.is_empty() {
        bad("diagnoses".into(), "required", "at least one diagnosis");
    }
    for (i, d) in c.diagnoses.iter().enumerate() {
        if !phi::ids::is_icd10cm_shape(d) {
            bad(
                format!("diagnoses[{i}]"),
                "icd10cm_format",
                "not an ICD-10-CM code (letter, digit, digit or letter, up to 4 more after the dot)",
            );
        } else if !healthcare_data::icd10::is_billable(d) {
            bad(
                format!("diagnoses[{i}]"),
                "icd10cm_not_billable",
                "not a billable code of the ICD-10-CM FY2026 table",
            );
        }
    }
    if c.procedures.is_empty() {
        bad("procedures".into(), "required", "at least one procedure");
    }
    for (i, p) in c.procedures.iter().enumerate() {
        if !phi::ids::is_cpt_or_hcpcs_shape(&p.code) {
            bad(
                format!("procedures[{i}].code"),
                "cpt_format",
                "not a CPT (5 digits, or 4 digits and F/T/U) or HCPCS Level II code",
            );
        }
        if p.charge_cents <= 0 {
            bad(
                format!("procedures[{i}].charge_cents"),
                "charge",
                "a charge is a positive number of cents",
            );
        }
    }
    // Checked: charges that add up beyond a BIGINT are refused, never wrapped
    // or panicked on.
    if c.procedures
        .iter()
        .try_fold(0i64, |total, p| total.checked_add(p.charge_cents))
        .is_none()
    {
        bad(
            "procedures".into(),
            "total_overflow",
            "the charges add up beyond what a claim can total",
        );
    }
    if c.verification_id.is_empty() {
        bad(
            "verification_id".into(),
            "required",
            "a claim follows a verification",
        );
    }
    out
}

impl crate::ctx::Replayable for Claim {
    fn replayed(self) -> Self {
        Claim {
            replayed: Some(true),
            ..self
        }
    }
}

/// `POST /claims`: validates and stores a claim.
#[utoipa::path(
    post,
    path = "/claims",
    request_body = CreateClaim,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters")),
    responses(
        (status = 201, description = "created", body = Claim),
        (status = 200, description = "the first answer to this idempotency key", body = Claim),
        (status = 422, description = "invalid; `fields` lists each problem", body = crate::error::ErrorBody),
    )
)]
async fn create(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    headers: HeaderMap,
    Json(c): Json<CreateClaim>,
) -> ApiResult<(StatusCode, Json<Claim>)> {
    let problems = problems(&c);
    if !problems.is_empty() {
        tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, problems = problems.len(), "claim refused");
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_claim",
            format!("the claim has {} problem(s)", problems.len()),
        )
        .with("fields", serde_json::to_value(problems).unwrap_or_default()));
    }
    let id = ctx.id_mint.next("clm");
    let key = crate::ctx::idempotency_key(&headers)?;
    let first = crate::ctx::replay(
        &ctx,
        "claim",
        &caller.tenant,
        key.as_deref(),
        &id,
        |first| {
            let ctx = &ctx;
            let tenant = &caller.tenant;
            async move { load(ctx, tenant, &first).await }
        },
    )
    .await?;
    if let Some(first) = first {
        return Ok((StatusCode::OK, Json(first)));
    }
    // Validated above: the sum does not overflow.
    let total: i64 = c
        .procedures
        .iter()
        .fold(0i64, |t, p| t.saturating_add(p.charge_cents));
    const INSERT: &str = "INSERT INTO billing.claims (id, tenant, patient_id, verification_id, npi,
                    diagnoses, procedures, total_cents, status, idempotency_key)
                   SELECT i, t, p, v, n, d, c, s::bigint, 'submitted', k
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                               $6::text[], $7::text[], $8::text[], $9::text[])
                        AS u(i, t, p, v, n, d, c, s, k)";
    // Committed with the claims other requests create meanwhile.
    let inserted = ctx
        .db
        .write_grouped(
            INSERT,
            vec![
                Some(id.clone()),
                Some(caller.tenant.clone()),
                Some(c.patient_id.clone()),
                Some(c.verification_id.clone()),
                Some(c.npi.clone()),
                Some(c.diagnoses.join(",")),
                Some(serde_json::to_string(&c.procedures).unwrap_or_default()),
                Some(total.to_string()),
                key.clone(),
            ],
        )
        .await;
    if let Err(e) = inserted {
        if let Some(k) = &key {
            let _ = ctx.cache.release("claim", &caller.tenant, k).await;
        }
        return Err(e.into());
    }
    tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, claim = %id, total_cents = total, "claim created");
    // The claim as committed (what `load` would read back, without the
    // round trip): the columns written above, the lists as stored.
    let claim = Claim {
        claim_id: id,
        patient_id: c.patient_id,
        verification_id: c.verification_id,
        npi: c.npi,
        diagnoses: c
            .diagnoses
            .join(",")
            .split(',')
            .map(str::to_string)
            .collect(),
        procedures: c.procedures,
        total_cents: total,
        status: "submitted".to_string(),
        replayed: None,
    };
    Ok((StatusCode::CREATED, Json(claim)))
}

async fn load(ctx: &Ctx, tenant: &str, id: &str) -> Result<Option<Claim>, ApiError> {
    let row = ctx
        .db
        .query_opt(
            "SELECT id, patient_id, verification_id, npi, diagnoses, procedures, total_cents, status
             FROM billing.claims WHERE id = $1 AND tenant = $2",
            &[&id, &tenant],
        )
        .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let diagnoses: String = r.get(4);
    let procedures = serde_json::from_str(&r.get::<_, String>(5))
        .map_err(|e| ApiError::internal("reading a claim's procedures", e))?;
    Ok(Some(Claim {
        claim_id: r.get(0),
        patient_id: r.get(1),
        verification_id: r.get(2),
        npi: r.get(3),
        diagnoses: diagnoses.split(',').map(str::to_string).collect(),
        procedures,
        total_cents: r.get(6),
        status: r.get(7),
        replayed: None,
    }))
}

/// `GET /claims/{id}`.
#[utoipa::path(
    get,
    path = "/claims/{id}",
    responses((status = 200, description = "the claim", body = Claim))
)]
async fn read(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Claim>> {
    let claim = load(&ctx, &caller.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("claim {id}")))?;
    crate::compliance::access::read(
        &ctx,
        &caller,
        &claim.patient_id,
        format!("GET /claims/{id}"),
    );
    Ok(Json(claim))
}

/// `POST /claims/{id}/cancel` (twice is fine).
#[utoipa::path(
    post,
    path = "/claims/{id}/cancel",
    responses((status = 200, description = "cancelled", body = Claim))
)]
async fn cancel(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Claim>> {
    crate::ctx::mark_cancelled(&ctx, "billing.claims", "claim", &id, &caller).await?;
    load(&ctx, &caller.tenant, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("claim {id}")))
}

/// `POST /claims/void`: cancels the claim created with an idempotency key,
/// if one was, and refuses any later create with that key (`410`); twice
/// is fine. The claim saga's compensation when its create failed without
/// a clear answer: the request may have reached billing and made the
/// claim while its reply was lost, or may still be on its way.
#[utoipa::path(
    post,
    path = "/claims/void",
    request_body = VoidClaim,
    responses((status = 200, description = "voided, or nothing to void", body = Voided))
)]
async fn void(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(v): Json<VoidClaim>,
) -> ApiResult<Json<Voided>> {
    // Take the key first: a create that has not happened yet (still on
    // its way) will find it voided and be refused.
    let ttl = ctx.settings.idempotency_ttl;
    let first = ctx
        .cache
        .idempotent(
            "claim",
            &caller.tenant,
            &v.idempotency_key,
            crate::ctx::VOIDED,
            ttl,
        )
        .await?;
    let Some(id) = first.filter(|f| f != crate::ctx::VOIDED) else {
        return Ok(Json(Voided { voided: None }));
    };
    // A create holds the key: its row may still be on its way.
    for _ in 0..40 {
        let n = ctx
            .db
            .execute(
                "UPDATE billing.claims SET status = 'cancelled', cancelled_at = COALESCE(cancelled_at, now())
                 WHERE id = $1 AND tenant = $2",
                &[&id, &caller.tenant],
            )
            .await?;
        if n > 0 {
            tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, claim = %id, "claim voided (its create's answer was lost)");
            return Ok(Json(Voided { voided: Some(id) }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    // The create that took the key failed (it releases the key): void it
    // again so that a late retry is refused too.
    let _ = ctx
        .cache
        .release("claim", &caller.tenant, &v.idempotency_key)
        .await;
    ctx.cache
        .idempotent(
            "claim",
            &caller.tenant,
            &v.idempotency_key,
            crate::ctx::VOIDED,
            ttl,
        )
        .await?;
    Ok(Json(Voided { voided: None }))
}

/// The service's routes, documented.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, read, cancel, void, crate::ctx::sync_patient))]
pub(crate) struct Doc;
