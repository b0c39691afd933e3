//! doctor-personalization: a doctor's preferences, keyed by NPI.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;

use crate::json::Json;

use crate::auth::Caller;
use crate::ctx::{Ctx, json_text};
use crate::error::{ApiError, ApiResult};
use crate::service::Service;

mod wire;

pub use wire::{NewPreferences, Preferences};

pub(crate) fn migrations() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS doctor.preferences (
            tenant TEXT NOT NULL,
            npi TEXT NOT NULL,
            preferences TEXT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant, npi))"
            .to_string(),
        crate::store::patient_copies(Service::DoctorPersonalization),
    ]
}

pub(crate) fn routes() -> Router<Arc<Ctx>> {
    use crate::auth::{API, Access, Role::*, allow};
    static PREFERENCES: Access = Access {
        services: API,
        roles: &[Clinician, Admin],
    };
    Router::new()
        .merge(allow(
            Router::new().route("/doctors/{npi}/preferences", get(read).put(write)),
            &PREFERENCES,
        ))
        .merge(crate::ctx::sync_routes())
}

fn check_npi(npi: &str) -> ApiResult<()> {
    if phi::ids::is_valid_npi(npi) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_npi",
            "not a valid NPI (10 digits, Luhn check digit)",
        ))
    }
}

/// `GET /doctors/{npi}/preferences`.
#[utoipa::path(
    get,
    path = "/doctors/{npi}/preferences",
    responses((status = 200, description = "the preferences", body = Preferences))
)]
async fn read(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(npi): Path<String>,
) -> ApiResult<Json<Preferences>> {
    check_npi(&npi)?;
    let row = ctx
        .db
        .query_opt(
            // Text whether the column is (schema v1) or JSONB (v2).
            "SELECT preferences::text FROM doctor.preferences WHERE tenant = $1 AND npi = $2",
            &[&caller.tenant, &npi],
        )
        .await?;
    let row = row.ok_or_else(|| ApiError::not_found(format!("preferences for NPI {npi}")))?;
    Ok(Json(Preferences {
        npi,
        preferences: json_text(&row.get::<_, String>(0)),
    }))
}

/// `PUT /doctors/{npi}/preferences`: replaces them.
#[utoipa::path(
    put,
    path = "/doctors/{npi}/preferences",
    request_body = Object,
    responses((status = 200, description = "stored", body = Preferences))
)]
async fn write(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(npi): Path<String>,
    Json(NewPreferences(prefs)): Json<NewPreferences>,
) -> ApiResult<Json<Preferences>> {
    check_npi(&npi)?;
    if !prefs.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_preferences",
            "preferences are a JSON object",
        ));
    }
    ctx.db
        .execute(
            "INSERT INTO doctor.preferences (tenant, npi, preferences) VALUES ($1, $2, $3::text::jsonb)
             ON CONFLICT (tenant, npi) DO UPDATE SET preferences = EXCLUDED.preferences, updated_at = now()",
            &[&caller.tenant, &npi, &prefs.to_string()],
        )
        .await?;
    Ok(Json(Preferences {
        npi,
        preferences: prefs,
    }))
}

/// The service's routes, documented.
#[derive(utoipa::OpenApi)]
#[openapi(paths(read, write, crate::ctx::sync_patient))]
pub(crate) struct Doc;
