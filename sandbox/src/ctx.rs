//! What every service shares: its state ([`Ctx`]: storage, the outgoing
//! client, counters, faults, the id mint), the mesh's settings, and the
//! helpers the handlers of several services use (patient sync, idempotent
//! creates, cancellation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Caller, ReplayGuard};
use crate::client::ServiceClient;
use crate::error::{ApiError, ApiResult};
use crate::faults::FaultPlan;
use crate::metrics::ServiceMetrics;
use crate::service::Service;
use crate::store::Cache;

/// Settings every service of a mesh shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The token secret.
    pub secret: Arc<[u8]>,
    /// How long an eligibility answer stays cached.
    pub eligibility_ttl: Duration,
    /// How long an idempotency key is held.
    pub idempotency_ttl: Duration,
    /// Seals the SSN and date of birth of stored records.
    pub vault: Arc<crate::vault::FieldCipher>,
    /// What its HTTP server accepts (stated by `/config`).
    pub server: crate::config::ServerLimits,
    /// The per-tenant rate limit (the API's; stated by `/config`).
    pub rate_limit: Option<Arc<crate::limits::TenantLimiter>>,
    /// The version its schema was migrated to at start.
    pub schema_version: u32,
}

/// One running service's state, shared by its handlers.
pub struct Ctx {
    /// Which service.
    pub service: Service,
    /// Its database pool (its own schema).
    pub db: Arc<crate::store::Db>,
    /// The compliance monitor's batching audit writer (`None` elsewhere).
    pub audit: Option<crate::audit_writer::AuditWriter>,
    /// Its Redis.
    pub cache: Cache,
    /// Its outgoing calls.
    pub client: Arc<ServiceClient>,
    /// Shared settings.
    pub settings: Settings,
    /// Its counters.
    pub metrics: Arc<ServiceMetrics>,
    /// Injected faults (test mode): at most one plan per tenant, and one
    /// for every tenant (`tenant: None`).
    pub faults: Mutex<Vec<FaultPlan>>,
    /// Mints the ids of the resources it makes.
    pub id_mint: IdMint,
    /// The mesh's (redacted) log lines.
    pub book: Arc<crate::logs::LogBook>,
    /// The mutating calls' token ids already used.
    pub replay: ReplayGuard,
    /// People's standings (logged out, role changed), each kept briefly.
    pub sessions: crate::auth::standing::SessionCache,
    /// Visits changing state (the API's live stream).
    pub visit_events: tokio::sync::broadcast::Sender<crate::states::StatusChange>,
    /// The compliance monitor's: the log pipeline's client, which reports
    /// the violations found in every service's logs to it.
    pub log_shipper: Option<Arc<crate::client::ServiceClient>>,
    /// The compliance monitor's: where its handlers hand its notifier the
    /// incidents whose notification analytics did not take (by id), to be
    /// sent again (`compliance::notifier`).
    pub(crate) unnotified: Option<tokio::sync::mpsc::UnboundedSender<i64>>,
}

/// Makes ids unique across restarts: a prefix, the start time and a counter.
pub struct IdMint {
    epoch: u64,
    next: AtomicU64,
}

impl Default for IdMint {
    fn default() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        IdMint {
            epoch: nanos & 0xffff_ffff_ffff,
            next: AtomicU64::new(0),
        }
    }
}

impl IdMint {
    /// `prefix-<epoch><counter>`.
    pub fn next(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{:012x}{:06x}",
            self.epoch,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(0);

/// A fresh request id.
pub fn new_request_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "req-{:08x}{:08x}",
        nanos,
        REQUEST_IDS.fetch_add(1, Ordering::Relaxed)
    )
}

/// `POST /patients/sync`, which only the API may call.
pub fn sync_routes() -> axum::Router<Arc<Ctx>> {
    use crate::auth::{API, Access, allow};
    static SYNC: Access = Access {
        services: API,
        roles: &[],
    };
    allow(
        axum::Router::new().route("/patients/sync", axum::routing::post(sync_patient)),
        &SYNC,
    )
}

/// A patient copy sent by the API (`POST /patients/sync`).
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct PatientSync {
    /// The API's patient id.
    pub patient_id: String,
    /// The record (a [`HolderRecord`]), kept by the holder as it came.
    #[schema(value_type = Object)]
    pub record: Value,
}

/// What a holder's copy of a patient holds: its cut of the patient
/// (minimum necessary) and, for insurance and billing, the coverage.
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct HolderRecord {
    /// The holder's cut of the patient.
    pub patient: Value,
    /// The coverage (`null` for a holder that does not need it).
    pub coverage: Value,
}

/// `POST /patients/sync` answered.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Synced {
    /// The holder.
    pub service: String,
    /// The patient.
    pub patient_id: String,
    /// `true`.
    pub synced: bool,
}

/// `POST /patients/sync` of a service that holds patient data: upserts its
/// copy.
#[utoipa::path(
    post,
    path = "/patients/sync",
    request_body = PatientSync,
    responses((status = 200, description = "the copy is stored", body = Synced))
)]
pub async fn sync_patient(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    crate::json::Json(sync): crate::json::Json<PatientSync>,
) -> ApiResult<axum::Json<Synced>> {
    let mut record = sync.record;
    ctx.settings.vault.seal_record(&mut record);
    // Committed with the copies other requests write meanwhile.
    ctx.db
        .write_grouped(
            copy_upsert(ctx.service),
            vec![
                Some(caller.tenant.clone()),
                Some(sync.patient_id.clone()),
                Some(record.to_string()),
            ],
        )
        .await?;
    Ok(axum::Json(Synced {
        service: ctx.service.name().to_string(),
        patient_id: sync.patient_id,
        synced: true,
    }))
}

/// The upsert of a holder's patient copies, one row or many (see
/// [`crate::store::Db::write_grouped`]); written once per service, not per
/// request.
fn copy_upsert(service: crate::service::Service) -> &'static str {
    use crate::service::Service;
    static UPSERTS: std::sync::LazyLock<Vec<(Service, String)>> = std::sync::LazyLock::new(|| {
        Service::ALL
            .iter()
            .map(|s| {
                let statement = format!(
                    "INSERT INTO {}.patients (tenant, patient_id, record)
                     SELECT t, p, r FROM unnest($1::text[], $2::text[], $3::text[]) AS u(t, p, r)
                     ON CONFLICT (tenant, patient_id)
                     DO UPDATE SET record = EXCLUDED.record, synced_at = now()",
                    s.schema()
                );
                (*s, statement)
            })
            .collect()
    });
    UPSERTS
        .iter()
        .find(|(s, _)| *s == service)
        .map_or("", |(_, statement)| statement.as_str())
}

/// Reads a JSON text column.
pub fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// The request's `Idempotency-Key` header: `None` without one; a `400`
/// for one that is not 1 to 255 visible ASCII characters (treating it as
/// absent would run a retried create twice).
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match raw.to_str() {
        Ok(key)
            if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_string()))
        }
        _ => Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// A created resource a repeated create answers again, marked as such.
pub trait Replayable {
    /// Marks it as the answer to a repeated create (`"replayed": true`).
    fn replayed(self) -> Self;
}

/// For a create carrying idempotency key `key`: holds the key for `new_id`
/// and answers `None` (go ahead), or answers the resource the key's first
/// create made, as `load` reads it (waiting up to half a second while that
/// create is still writing it; `409` after that).
/// What an idempotency key's slot holds once the create it names was
/// voided before it happened: a later create with the key is refused
/// (`410 idempotency_key_voided`).
pub const VOIDED: &str = "(voided)";

pub async fn replay<T, F, Fut>(
    ctx: &Ctx,
    scope: &str,
    tenant: &str,
    key: Option<&str>,
    new_id: &str,
    load: F,
) -> ApiResult<Option<T>>
where
    T: Replayable,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ApiResult<Option<T>>>,
{
    let Some(key) = key else {
        return Ok(None);
    };
    let ttl = ctx.settings.idempotency_ttl;
    let Some(first) = ctx
        .cache
        .idempotent(scope, tenant, key, new_id, ttl)
        .await?
    else {
        return Ok(None);
    };
    if first == VOIDED {
        return Err(ApiError::new(
            StatusCode::GONE,
            "idempotency_key_voided",
            "a create with this idempotency key was voided by its caller",
        ));
    }
    for _ in 0..20 {
        if let Some(found) = load(first.clone()).await? {
            return Ok(Some(found.replayed()));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "a create with this idempotency key is still in progress",
    ))
}

/// Marks row `id` of `table` (with `status` and `cancelled_at` columns)
/// cancelled for the caller's tenant; cancelling twice is fine; `404` naming `what`
/// when the tenant has no such row.
pub async fn mark_cancelled(
    ctx: &Ctx,
    table: &str,
    what: &str,
    id: &str,
    caller: &Caller,
) -> ApiResult<()> {
    let sql = format!(
        "UPDATE {table} SET status = 'cancelled', cancelled_at = COALESCE(cancelled_at, now())
         WHERE id = $1 AND tenant = $2"
    );
    if ctx.db.execute(&sql, &[&id, &caller.tenant]).await? == 0 {
        return Err(ApiError::not_found(format!("{what} {id}")));
    }
    tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, "{what} {id} cancelled");
    Ok(())
}
