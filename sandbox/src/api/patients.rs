//! healthcare-api's patients: intake (each holder synced its cut; a
//! failed sync audited for a manual resync), update (synced again) and
//! read, at rest with the SSN and date of birth sealed; another tenant's
//! patient is reported and answered as unknown.

use std::sync::Arc;

use crate::json::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;

use crate::api::wire::{Intake, PatientRecord, PatientSynced, PatientUpdate};
use crate::auth::Caller;
use crate::client::{Call, Method};
use crate::ctx::{Ctx, json_text};
use crate::error::{ApiError, ApiResult};
use crate::service::Service;

pub use crate::minimum_necessary::FIELDS_NEEDED;

/// The services a patient is synced to.
/// `patient` cut to what `holder` needs.
fn needed_by(holder: Service, patient: &Value) -> Value {
    let fields = FIELDS_NEEDED
        .iter()
        .find(|(s, _)| *s == holder)
        .map_or(&[][..], |(_, f)| *f);
    let Some(all) = patient.as_object() else {
        return Value::Null;
    };
    Value::Object(
        all.iter()
            .filter(|(k, _)| fields.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

const HOLDERS: [Service; 4] = [
    Service::BillingEngine,
    Service::InsuranceVerification,
    Service::DoctorPersonalization,
    Service::ComplianceMonitor,
];

impl PatientSynced {
    fn new(patient_id: String, (synced, failed): (Vec<&str>, Vec<&str>)) -> Self {
        let names = |v: Vec<&str>| v.into_iter().map(str::to_string).collect();
        PatientSynced {
            patient_id,
            synced: names(synced),
            sync_failed: names(failed),
        }
    }
}

/// Patients registered, one row or many (see [`crate::store::Db::write_grouped`]).
const PATIENT_INSERT: &str = "INSERT INTO api.patients (id, tenant, mrn, record, coverage)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])";

/// `POST /patients`: registers the patient and syncs each holder its cut.
#[utoipa::path(
    post,
    path = "/patients",
    request_body = Intake,
    responses((status = 201, description = "registered", body = PatientSynced))
)]
pub(crate) async fn intake(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Json(intake): Json<Intake>,
) -> ApiResult<(StatusCode, Json<PatientSynced>)> {
    let Some(mrn) = intake.patient.get("mrn").and_then(Value::as_str) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_patient",
            "patient.mrn is required",
        ));
    };
    let id = ctx.id_mint.next("pat");
    let coverage = serde_json::to_string(&intake.coverage).unwrap_or_default();
    // At rest the SSN and date of birth are sealed (AES-256-GCM).
    let mut stored = intake.patient.clone();
    ctx.settings.vault.seal_record(&mut stored);
    // Committed with the patients other requests register meanwhile.
    ctx.db
        .write_grouped(
            PATIENT_INSERT,
            vec![
                Some(id.clone()),
                Some(caller.tenant.clone()),
                Some(mrn.to_string()),
                Some(stored.to_string()),
                Some(coverage),
            ],
        )
        .await?;
    tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, patient = %id, "patient registered");
    let coverage = serde_json::to_value(&intake.coverage).unwrap_or_default();
    let outcome = sync_to_holders(&ctx, &caller, &id, &intake.patient, &coverage, "sync").await;
    Ok((StatusCode::CREATED, Json(PatientSynced::new(id, outcome))))
}

/// Sends each holder its cut of the patient (minimum necessary), all at
/// once; a failed sync is audited for a manual resync. Returns the holders
/// synced and those that failed.
async fn sync_to_holders(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    id: &str,
    patient: &Value,
    coverage: &Value,
    key: &str,
) -> (Vec<&'static str>, Vec<&'static str>) {
    let sync = |target: Service| {
        // Minimum necessary: each holder receives the fields its work needs.
        let record = crate::ctx::HolderRecord {
            patient: needed_by(target, patient),
            coverage: if matches!(
                target,
                Service::InsuranceVerification | Service::BillingEngine
            ) {
                coverage.clone()
            } else {
                Value::Null
            },
        };
        let record = crate::ctx::PatientSync {
            patient_id: id.to_string(),
            record: serde_json::to_value(record).unwrap_or_default(),
        };
        let call = Call::new(
            target,
            Method::Post,
            "/patients/sync",
            &caller.tenant,
            &caller.request_id,
        )
        .body(&record)
        .key(format!("{id}:{key}"));
        async move { ctx.client.call_audit_later(&call).await }
    };
    let ((a, audit_a), (b, audit_b), (c, audit_c), (d, audit_d)) = tokio::join!(
        sync(HOLDERS[0]),
        sync(HOLDERS[1]),
        sync(HOLDERS[2]),
        sync(HOLDERS[3])
    );
    // The four syncs' audits in one exchange, in the background as ever.
    let audits = [audit_a, audit_b, audit_c, audit_d];
    ctx.client.ship(
        &caller.tenant,
        &caller.request_id,
        audits.into_iter().flatten().collect(),
    );
    let mut synced = Vec::new();
    let mut failed = Vec::new();
    for (target, result) in HOLDERS.into_iter().zip([a, b, c, d]) {
        match result {
            Ok(_) => synced.push(target.name()),
            Err(e) => {
                failed.push(target.name());
                tracing::warn!(tenant = %caller.tenant, request_id = %caller.request_id, "patient sync to {target} failed: {e}");
                let audit = Call::new(
                    Service::ComplianceMonitor,
                    Method::Post,
                    "/audit/sync-failures",
                    &caller.tenant,
                    &caller.request_id,
                )
                .body(&crate::compliance::SyncFailure {
                    service_name: target.name().to_string(),
                    patient_id: id.to_string(),
                    error: e.to_string(),
                    requires_manual_sync: true,
                });
                if let Err(e) = ctx.client.call(audit).await {
                    tracing::error!(tenant = %caller.tenant, request_id = %caller.request_id, "auditing a sync failure failed: {e}");
                }
            }
        }
    }
    (synced, failed)
}

/// `PUT /patients/{id}`.
#[utoipa::path(
    put,
    path = "/patients/{id}",
    request_body = PatientUpdate,
    responses((status = 200, description = "updated and re-synced", body = PatientSynced))
)]
pub(crate) async fn update_patient(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(update): Json<PatientUpdate>,
) -> ApiResult<Json<PatientSynced>> {
    if update.patient.contains_key("mrn") {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_patient",
            "patient.mrn cannot change",
        ));
    }
    let row = own_patient(
        &ctx,
        &caller,
        &id,
        "SELECT record, coverage FROM api.patients WHERE id = $1 AND tenant = $2",
    )
    .await?;
    let mut patient = opened(&ctx, &caller, &id, &row.get::<_, String>(0))?;
    if let Some(p) = patient.as_object_mut() {
        p.extend(update.patient);
    }
    let mut stored = patient.clone();
    ctx.settings.vault.seal_record(&mut stored);
    ctx.db
        .execute(
            "UPDATE api.patients SET record = $3 WHERE id = $1 AND tenant = $2",
            &[&id, &caller.tenant, &stored.to_string()],
        )
        .await?;
    tracing::info!(tenant = %caller.tenant, request_id = %caller.request_id, patient = %id, "patient updated");
    let coverage = json_text(&row.get::<_, String>(1));
    let key = format!("update:{}", caller.request_id);
    let outcome = sync_to_holders(&ctx, &caller, &id, &patient, &coverage, &key).await;
    Ok(Json(PatientSynced::new(id, outcome)))
}

/// `GET /patients/{id}`.
#[utoipa::path(
    get,
    path = "/patients/{id}",
    responses((status = 200, description = "the patient", body = PatientRecord))
)]
pub(crate) async fn read_patient(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<PatientRecord>> {
    let row = own_patient(
        &ctx,
        &caller,
        &id,
        "SELECT mrn, record, coverage FROM api.patients WHERE id = $1 AND tenant = $2",
    )
    .await?;
    let mut patient = opened(&ctx, &caller, &id, &row.get::<_, String>(1))?;
    if !caller.sees_ssn() {
        // Minimum necessary: only clinicians and admins see the SSN.
        if let Some(p) = patient.as_object_mut() {
            p.remove("ssn");
        }
    }
    let coverage = serde_json::from_str(&row.get::<_, String>(2))
        .map_err(|e| ApiError::internal("reading coverage", e))?;
    crate::compliance::access::read(&ctx, &caller, &id, format!("GET /patients/{id}"));
    Ok(Json(PatientRecord {
        patient_id: id,
        mrn: row.get(0),
        patient,
        coverage,
    }))
}

/// The caller's patient `id`, as `sql` (bound to the id and the tenant)
/// selects it; another tenant's id is reported and answered as unknown.
async fn own_patient(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    id: &str,
    sql: &str,
) -> ApiResult<tokio_postgres::Row> {
    match ctx.db.query_opt(sql, &[&id, &caller.tenant]).await? {
        Some(row) => Ok(row),
        None => {
            report_cross_tenant(ctx, caller, id).await;
            Err(ApiError::not_found(format!("patient {id}")))
        }
    }
}

/// A stored patient record with its sealed fields opened (`500
/// sealed_field` when the configured key does not open them).
fn opened(ctx: &Ctx, caller: &Caller, id: &str, text: &str) -> ApiResult<Value> {
    let mut patient = json_text(text);
    ctx.settings.vault.open_record(&mut patient).map_err(|e| {
        tracing::error!(tenant = %caller.tenant, request_id = %caller.request_id, patient = %id, "{e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "sealed_field",
            "a sealed field of this record does not open with the configured data key",
        )
    })?;
    Ok(patient)
}

/// A caller asked for a patient that is not its tenant's: when the id is
/// another tenant's, that tenant's compliance monitor is told (a
/// `cross_tenant_access` violation, in the background). The caller's answer
/// stays a plain 404, the same as for an id that does not exist.
async fn report_cross_tenant(ctx: &Arc<Ctx>, caller: &Caller, id: &str) {
    let owner = ctx
        .db
        .query_opt("SELECT tenant FROM api.patients WHERE id = $1", &[&id])
        .await;
    let Ok(Some(owner)) = owner else {
        return;
    };
    let owner: String = owner.get(0);
    let excerpt = format!(
        "GET /patients/{id} by tenant `{}` ({}) for a patient of this tenant; answered 404",
        caller.tenant, caller.source
    );
    let client = Arc::clone(&ctx.client);
    let request_id = caller.request_id.clone();
    tokio::spawn(async move {
        let call = Call::new(
            Service::ComplianceMonitor,
            Method::Post,
            "/violations",
            &owner,
            &request_id,
        )
        .body(&crate::compliance::ViolationReport {
            source: Service::HealthcareApi.name().to_string(),
            channel: "access".to_string(),
            kinds: vec![crate::states::ViolationCode::CrossTenantAccess.to_string()],
            excerpt,
        });
        let _ = client.call(call).await;
    });
}
