//! healthcare-api's visits: the **claim saga** (`POST /visits`) — verify
//! insurance, create the claim, record the analytics — with the completed
//! steps compensated in reverse when one fails, every event sent to the
//! compliance monitor under the visit's request id; and `GET /visits/{id}`.

use std::sync::Arc;

use crate::json::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::wire::{Compensation, Coverage, SagaFailed, Visit, VisitCompleted, VisitRequest};
use crate::auth::Caller;
use crate::bi::Event as AnalyticsEvent;
use crate::billing::{Claim, CreateClaim, Line, VoidClaim};
use crate::client::{Call, CallError, Cause, Method};
use crate::compliance::{RequestClosed, SagaDetails, SagaEventRecord};
use crate::ctx::{Ctx, json_text};
use crate::error::{ApiError, ApiResult};
use crate::insurance::{Verification, VerifyRequest};
use crate::service::Service;
use crate::states::{CompensationOutcome, SagaEvent, SagaStep, VisitStatus};

/// One saga's bookkeeping.
struct Saga<'a> {
    ctx: &'a Arc<Ctx>,
    caller: &'a Caller,
    id: String,
    patient_id: String,
}

impl Saga<'_> {
    /// Sends a saga event to the compliance monitor (awaited: the trail is
    /// complete when the visit answers; a failure to audit is logged, not
    /// fatal), with the events other sagas of the tenant send meanwhile.
    async fn event(&self, event_type: SagaEvent, step: SagaStep, details: SagaDetails) {
        let event = SagaEventRecord {
            saga_id: self.id.clone(),
            saga_name: SagaStep::Claim,
            event_type,
            step,
            patient_id: self.patient_id.clone(),
            details,
            request_id: None,
        };
        let key = format!("{}:{event_type}:{step}", self.id);
        self.record("/audit/saga-events", key, &event, || {
            format!("auditing saga event {event_type}")
        })
        .await;
    }

    /// Tells the compliance monitor how many audited calls this request
    /// made, so that its trail can be checked complete
    /// (`GET /audit/completeness`).
    async fn close(&self) {
        let closed = RequestClosed {
            saga_id: self.id.clone(),
            patient_id: self.patient_id.clone(),
            service_calls: self.ctx.client.calls_made(&self.caller.request_id),
            request_id: None,
        };
        let key = format!("{}:closed", self.id);
        self.record("/audit/request-closed", key, &closed, || {
            "closing the audit of the request".to_string()
        })
        .await;
    }

    /// Records `record` at the monitor's `path` under this saga's request
    /// and waits for it; a failure is logged as `what` failed.
    async fn record(
        &self,
        path: &str,
        key: String,
        record: &impl serde::Serialize,
        what: impl FnOnce() -> String,
    ) {
        let (tenant, request_id) = (&self.caller.tenant, &self.caller.request_id);
        let recorded = self
            .ctx
            .client
            .record(path, tenant, request_id, key, record)
            .await;
        if let Err(e) = recorded {
            tracing::error!(tenant = %tenant, request_id = %request_id, saga = %self.id, "{} failed: {e}", what());
        }
    }

    fn call(&self, target: Service, method: Method, path: String) -> Call<'_> {
        Call::new(
            target,
            method,
            path,
            &self.caller.tenant,
            &self.caller.request_id,
        )
    }
}

/// A failed step: which, why, and what it means for the answer.
pub(crate) struct StepFailure {
    pub(crate) step: SagaStep,
    pub(crate) status: StatusCode,
    pub(crate) cause: Cause,
}

impl StepFailure {
    pub(crate) fn from_call(step: SagaStep, e: &CallError) -> Self {
        let status = match e {
            CallError::Status { status: 422, .. } => StatusCode::UNPROCESSABLE_ENTITY,
            CallError::NotPermitted { .. } | CallError::BulkheadFull { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            CallError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        StepFailure {
            step,
            status,
            cause: e.cause(),
        }
    }
}

/// `POST /visits`: runs the claim saga.
#[utoipa::path(
    post,
    path = "/visits",
    request_body = VisitRequest,
    responses(
        (status = 201, description = "the saga completed", body = VisitCompleted),
        (status = 502, description = "a step failed; compensated", body = SagaFailed),
        (status = 503, description = "a dependency is unavailable; compensated", body = SagaFailed),
        (status = 504, description = "a step timed out; compensated", body = SagaFailed),
        (status = 422, description = "a step refused the visit; compensated", body = SagaFailed),
    )
)]
pub(crate) async fn visit(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(r): Json<VisitRequest>,
) -> ApiResult<Response> {
    // Looked up with the patients other visits look up meanwhile.
    const COVERAGE: &str = "SELECT k.n, p.coverage
                   FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(i, t, n)
                   JOIN api.patients p ON p.id = k.i AND p.tenant = k.t";
    let found = ctx
        .db
        .read_grouped(
            COVERAGE,
            vec![Some(r.patient_id.clone()), Some(caller.tenant.clone())],
        )
        .await?;
    let row = found
        .first()
        .ok_or_else(|| ApiError::not_found(format!("patient {}", r.patient_id)))?;
    let coverage: Coverage = row
        .try_get::<_, String>(1)
        .map_err(|e| ApiError::internal("reading coverage", e))
        .and_then(|text| {
            serde_json::from_str(&text).map_err(|e| ApiError::internal("reading coverage", e))
        })?;
    let saga = Saga {
        ctx: &ctx,
        caller: &caller,
        id: ctx.id_mint.next("saga"),
        patient_id: r.patient_id.clone(),
    };
    let visit_id = ctx.id_mint.next("vis");
    crate::api::visits::open(&ctx, &caller, &visit_id, &r.patient_id, &saga.id).await?;
    // The event and the visit's next state are independent: both at once
    // (each still done before the step starts).
    tokio::join!(
        saga.event(
            SagaEvent::SagaStarted,
            SagaStep::Claim,
            SagaDetails {
                visit_id: Some(visit_id.clone()),
                ..SagaDetails::default()
            }
        ),
        crate::api::visits::transition(&ctx, &caller.tenant, &visit_id, VisitStatus::Verifying),
    );

    // Step 1: verify insurance.
    let procedures: Vec<&str> = r
        .visit
        .lines
        .iter()
        .map(|l| l.procedure_code.as_str())
        .collect();
    let verify = saga
        .call(
            Service::InsuranceVerification,
            Method::Post,
            "/verify".into(),
        )
        .body(&VerifyRequest {
            patient_id: r.patient_id.clone(),
            payer_id: coverage.payer.id.clone(),
            member_id: coverage.member_id.clone(),
            effective: coverage.effective.clone(),
            termination: coverage.termination.clone(),
            coinsurance_pct: coverage.coinsurance_pct,
            date_of_service: r.visit.date_of_service.clone(),
            procedures: procedures.iter().map(|p| p.to_string()).collect(),
        })
        .key(format!("{}:verify", saga.id));
    let verification = match ctx.client.call(verify).await {
        Ok(reply) => reply.read::<Verification>(),
        Err(e) => {
            let failure = StepFailure::from_call(SagaStep::VerifyInsurance, &e);
            return finish_failed(&saga, &visit_id, None, failure, Vec::new()).await;
        }
    };
    // A reply that is not a verification (its id missing) is a broken
    // peer, not an empty id.
    let verification = match verification {
        Ok(v) if !v.verification_id.is_empty() => v,
        _ => {
            let failure = StepFailure {
                step: SagaStep::VerifyInsurance,
                status: StatusCode::BAD_GATEWAY,
                cause: Cause::new("insurance-verification answered without a verification_id"),
            };
            return finish_failed(&saga, &visit_id, None, failure, Vec::new()).await;
        }
    };
    let verification_id = verification.verification_id.clone();
    let verified = saga.event(
        SagaEvent::StepCompleted,
        SagaStep::VerifyInsurance,
        SagaDetails {
            verification_id: Some(verification_id.clone()),
            cached: Some(verification.cached),
            ..SagaDetails::default()
        },
    );
    let mut done = vec![SagaStep::VerifyInsurance];
    if verification.eligible {
        // Step 2 begins: the visit moves to `billing` as the event is recorded.
        tokio::join!(
            verified,
            crate::api::visits::transition(&ctx, &caller.tenant, &visit_id, VisitStatus::Billing),
        );
    } else {
        verified.await;
        let failure = StepFailure {
            step: SagaStep::VerifyInsurance,
            status: StatusCode::UNPROCESSABLE_ENTITY,
            cause: Cause {
                reason: Some(verification.reason.clone()),
                ..Cause::new("not eligible")
            },
        };
        return finish_failed(&saga, &visit_id, Some(&verification_id), failure, done).await;
    }

    // Step 2: create the claim.
    let claim = saga
        .call(Service::BillingEngine, Method::Post, "/claims".into())
        .body(&CreateClaim {
            patient_id: r.patient_id.clone(),
            verification_id: verification_id.clone(),
            npi: r.visit.rendering_npi.clone(),
            diagnoses: r.visit.diagnoses.iter().map(|d| d.code.clone()).collect(),
            procedures: r
                .visit
                .lines
                .iter()
                .map(|l| Line {
                    code: l.procedure_code.clone(),
                    charge_cents: l.charge_cents,
                })
                .collect(),
        })
        .key(format!("{}:claim", saga.id));
    let claim_key = format!("{}:claim", saga.id);
    let claim = match ctx.client.call(claim).await {
        Ok(reply) => reply.read::<Claim>(),
        Err(e) => {
            let failure = StepFailure::from_call(SagaStep::CreateClaim, &e);
            // Without a clear answer the claim may have been made (its
            // reply lost): void it by its key, as a completed step.
            if outcome_unknown(&e) {
                done.push(SagaStep::CreateClaim);
            }
            return finish_failed_keyed(
                &saga,
                &visit_id,
                Some(&verification_id),
                Some(&claim_key),
                failure,
                done,
            )
            .await;
        }
    };
    let claim = match claim {
        Ok(c) if !c.claim_id.is_empty() => c,
        _ => {
            let failure = StepFailure {
                step: SagaStep::CreateClaim,
                status: StatusCode::BAD_GATEWAY,
                cause: Cause::new("billing-engine answered without a claim_id"),
            };
            return finish_failed(&saga, &visit_id, Some(&verification_id), failure, done).await;
        }
    };
    let claim_id = claim.claim_id.clone();
    done.push(SagaStep::CreateClaim);
    let claimed = saga.event(
        SagaEvent::StepCompleted,
        SagaStep::CreateClaim,
        SagaDetails {
            claim_id: Some(claim_id.clone()),
            ..SagaDetails::default()
        },
    );

    // Step 3: analytics, best effort (a failure is logged, not compensated),
    // sent as step 2's event is recorded, in one list with the events other
    // sagas of the tenant send meanwhile (analytics takes a list).
    let total = claim.total_cents;
    let analytics = saga
        .call(
            Service::BusinessIntelligence,
            Method::Post,
            "/events".into(),
        )
        .key(format!("{}:analytics", saga.id));
    let events = [
        AnalyticsEvent::of("claims_created", 1.0),
        AnalyticsEvent::of("claim_charge_cents", total as f64),
    ]
    .iter()
    .filter_map(|e| serde_json::to_value(e).ok())
    .collect();
    let ((), recorded) = tokio::join!(claimed, ctx.client.call_joined(&analytics, events));
    if let Err(e) = recorded {
        tracing::warn!(tenant = %caller.tenant, request_id = %caller.request_id, saga = %saga.id, "analytics not recorded: {e}");
    }

    const COMPLETE: &str =
        "UPDATE api.visits v SET status = u.s, verification_id = u.ve, claim_id = u.c
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                        AS u(i, t, ve, c, s)
                   WHERE v.id = u.i AND v.tenant = u.t";
    // Committed with the visits other sagas complete meanwhile.
    ctx.db
        .write_grouped(
            COMPLETE,
            vec![
                Some(visit_id.clone()),
                Some(caller.tenant.clone()),
                Some(verification_id.clone()),
                Some(claim_id.clone()),
                Some(VisitStatus::Completed.as_str().to_string()),
            ],
        )
        .await?;
    crate::api::visits::announce(&ctx, &caller.tenant, &visit_id, VisitStatus::Completed);
    // The last event and the request's close at once: both are recorded
    // before the answer, and the close counts only the calls to peers
    // (all made by now), not the event's.
    let completed = saga.event(
        SagaEvent::SagaCompleted,
        SagaStep::Claim,
        SagaDetails {
            steps: Some(done.clone()),
            ..SagaDetails::default()
        },
    );
    tokio::join!(completed, saga.close());
    ctx.metrics.incr("saga_total", "outcome=\"completed\"");
    tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, saga = %saga.id, claim = %claim_id, "claim saga completed");
    let done = VisitCompleted {
        visit_id,
        saga_id: saga.id.clone(),
        status: VisitStatus::Completed.to_string(),
        verification_id,
        claim_id,
        total_cents: total,
        request_id: caller.request_id.clone(),
    };
    Ok((StatusCode::CREATED, Json(done)).into_response())
}

/// Did the call fail without a clear answer, so that its effect may have
/// happened (a timeout, a connection broken after the request was sent)?
/// A refusal by the peer (an error status) or by our own breaker or
/// bulkhead means it did not.
fn outcome_unknown(e: &CallError) -> bool {
    matches!(
        e,
        CallError::Timeout { .. }
            | CallError::Connection {
                maybe_delivered: true,
                ..
            }
    )
}

/// Records the failure, compensates the completed steps in reverse order,
/// stores the visit as failed, and answers.
async fn finish_failed(
    saga: &Saga<'_>,
    visit_id: &str,
    verification_id: Option<&str>,
    failure: StepFailure,
    done: Vec<SagaStep>,
) -> ApiResult<Response> {
    finish_failed_keyed(saga, visit_id, verification_id, None, failure, done).await
}

/// Keeps the voiding of the claim created (or not) with `key` for the
/// API's compensator, which makes it at once and again until billing
/// answers: the create went unanswered, so billing may be unreachable now,
/// and the answer to the visit does not wait for it.
async fn queue_void(saga: &Saga<'_>, key: &str) -> Result<(), CallError> {
    saga.ctx
        .db
        .execute(
            "INSERT INTO api.pending_compensations (saga_id, tenant, request_id, claim_key)
             VALUES ($1, $2, $3, $4) ON CONFLICT (saga_id) DO NOTHING",
            &[&saga.id, &saga.caller.tenant, &saga.caller.request_id, &key],
        )
        .await
        .map(|_| ())
        .map_err(|e| CallError::Connection {
            target: Service::BillingEngine,
            message: format!("keeping the compensation: {e}"),
            attempts: 0,
            maybe_delivered: false,
        })
}

/// The compensator's waits in milliseconds, for its SQL: the mesh's
/// background redelivery ([`crate::retry::REDELIVERY`]).
const REDELIVERY_FIRST_MS: i32 = crate::retry::REDELIVERY.base.as_millis() as i32;
const REDELIVERY_MAX_MS: i32 = crate::retry::REDELIVERY.max_delay.as_millis() as i32;

/// How often the compensator looks for compensations to retry.
const COMPENSATOR_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

/// The API's compensator: makes the compensations a failed saga kept
/// (voiding a claim whose create went unanswered), again and again with a
/// growing wait (0.25 s doubling to 4 s) until billing answers; each one
/// done is audited under its saga. Runs until aborted.
pub(crate) async fn compensator(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(COMPENSATOR_PERIOD).await;
        let Ok(rows) = ctx
            .db
            .query(
                "SELECT saga_id, tenant, request_id, claim_key FROM api.pending_compensations
                 WHERE next_at <= now() ORDER BY next_at LIMIT 32",
                &[],
            )
            .await
        else {
            continue;
        };
        for row in rows {
            let (saga_id, tenant, visit_request, key): (String, String, String, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            // Its own request (the visit's was closed with its count of
            // calls), named after the visit's.
            let request_id = format!("{visit_request}-compensation");
            let call = Call::new(
                Service::BillingEngine,
                Method::Post,
                "/claims/void",
                &tenant,
                &request_id,
            )
            .body(&VoidClaim {
                idempotency_key: key.clone(),
            })
            .key(format!("{saga_id}:void-claim"));
            if ctx.client.call(call).await.is_err() {
                let _ = ctx
                    .db
                    .execute(
                        // Backing off (0.25 s doubling to 4 s): billing
                        // unreachable is not hammered, nor its breaker
                        // tripped by the compensator alone.
                        "UPDATE api.pending_compensations SET attempts = attempts + 1,
                            next_at = now() + LEAST($2::int, $3::int * power(2, LEAST(attempts, 6)))::int * interval '1 millisecond'
                         WHERE saga_id = $1",
                        &[&saga_id, &REDELIVERY_MAX_MS, &REDELIVERY_FIRST_MS],
                    )
                    .await;
                continue;
            }
            let _ = ctx
                .db
                .execute(
                    "DELETE FROM api.pending_compensations WHERE saga_id = $1",
                    &[&saga_id],
                )
                .await;
            tracing::info!(tenant = %tenant, request_id = %request_id, saga = %saga_id, "pending compensation of create_claim completed");
            let caller = Caller::service(Service::HealthcareApi, &tenant, &request_id);
            let saga = Saga {
                ctx: &ctx,
                caller: &caller,
                id: saga_id.clone(),
                patient_id: String::new(),
            };
            saga.event(
                SagaEvent::CompensationCompleted,
                SagaStep::CreateClaim,
                SagaDetails {
                    claim_key: Some(key.clone()),
                    ..SagaDetails::default()
                },
            )
            .await;
        }
    }
}

/// [`finish_failed`], with the key of a claim that may have been made.
async fn finish_failed_keyed(
    saga: &Saga<'_>,
    visit_id: &str,
    verification_id: Option<&str>,
    claim_key: Option<&str>,
    failure: StepFailure,
    done: Vec<SagaStep>,
) -> ApiResult<Response> {
    let ctx = saga.ctx;
    saga.event(
        SagaEvent::SagaFailed,
        failure.step,
        SagaDetails {
            cause: Some(failure.cause.clone()),
            ..SagaDetails::default()
        },
    )
    .await;
    let mut compensations = Vec::new();
    for step in done.iter().rev() {
        if let (SagaStep::CreateClaim, Some(key)) = (*step, claim_key) {
            let (outcome, cause) = match queue_void(saga, key).await {
                Ok(()) => (CompensationOutcome::Pending, None),
                Err(e) => (CompensationOutcome::Failed, Some(e.cause())),
            };
            let event = match outcome {
                CompensationOutcome::Pending => SagaEvent::CompensationPending,
                _ => SagaEvent::CompensationFailed,
            };
            let details = SagaDetails {
                claim_key: Some(key.to_string()),
                ..SagaDetails::default()
            };
            saga.event(event, *step, details).await;
            compensations.push(Compensation {
                step: step.to_string(),
                outcome,
                cause,
            });
            continue;
        }
        let outcome = match (*step, verification_id) {
            (SagaStep::VerifyInsurance, Some(vid)) => {
                let cancel = saga
                    .call(
                        Service::InsuranceVerification,
                        Method::Post,
                        format!("/verifications/{vid}/cancel"),
                    )
                    .key(format!("{}:cancel-verification", saga.id));
                ctx.client.call(cancel).await.map(|_| ())
            }
            _ => Ok(()),
        };
        match outcome {
            Ok(()) => {
                saga.event(
                    SagaEvent::CompensationCompleted,
                    *step,
                    SagaDetails {
                        verification_id: verification_id.map(str::to_string),
                        ..SagaDetails::default()
                    },
                )
                .await;
                compensations.push(Compensation {
                    step: step.to_string(),
                    outcome: CompensationOutcome::Completed,
                    cause: None,
                });
            }
            Err(e) => {
                saga.event(
                    SagaEvent::CompensationFailed,
                    *step,
                    SagaDetails {
                        cause: Some(e.cause()),
                        ..SagaDetails::default()
                    },
                )
                .await;
                compensations.push(Compensation {
                    step: step.to_string(),
                    outcome: CompensationOutcome::Failed,
                    cause: Some(e.cause()),
                });
            }
        }
    }
    let body = SagaFailed {
        error: "saga_failed".into(),
        message: format!("the claim saga failed at step {}", failure.step),
        visit_id: visit_id.to_string(),
        saga_id: saga.id.clone(),
        failed_step: failure.step.to_string(),
        cause: failure.cause,
        compensations,
        request_id: saga.caller.request_id.clone(),
    };
    let stored = serde_json::to_string(&body).unwrap_or_default();
    ctx.db
        .execute(
            "UPDATE api.visits SET status = $5, verification_id = $3, failure = $4
             WHERE id = $1 AND tenant = $2",
            &[
                &visit_id,
                &saga.caller.tenant,
                &verification_id,
                &phi::redact(&stored),
                &VisitStatus::Failed.as_str(),
            ],
        )
        .await?;
    crate::api::visits::announce(ctx, &saga.caller.tenant, visit_id, VisitStatus::Failed);
    saga.close().await;
    ctx.metrics.incr("saga_total", "outcome=\"failed\"");
    tracing::info!(tenant = %saga.caller.tenant, request_id = %saga.caller.request_id, saga = %saga.id, step = %failure.step, "claim saga failed and was compensated");
    Ok((failure.status, Json(body)).into_response())
}

/// `GET /visits/{id}`.
#[utoipa::path(
    get,
    path = "/visits/{id}",
    responses((status = 200, description = "the visit", body = Visit))
)]
pub(crate) async fn read_visit(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Visit>> {
    let row = ctx
        .db
        .query_opt(
            "SELECT patient_id, saga_id, status, verification_id, claim_id, failure
             FROM api.visits WHERE id = $1 AND tenant = $2",
            &[&id, &caller.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("visit {id}")))?;
    let patient_id: String = row.get(0);
    crate::compliance::access::read(&ctx, &caller, &patient_id, format!("GET /visits/{id}"));
    Ok(Json(Visit {
        visit_id: id,
        patient_id,
        saga_id: row.get(1),
        status: row.get(2),
        verification_id: row.get(3),
        claim_id: row.get(4),
        failure: row.get::<_, Option<String>>(5).map(|f| json_text(&f)),
    }))
}
