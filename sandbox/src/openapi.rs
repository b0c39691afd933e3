//! Each service's OpenAPI 3.1 document, served at `GET /openapi.json`.
//!
//! Generated (utoipa) from the handlers' own types: every route carries a
//! `#[utoipa::path]` naming the type it answers, each module lists its
//! routes in a `Doc`, and [`document`] joins that to the routes every
//! service shares (`/health`, `/metrics`, `/config`, `/openapi.json`, the
//! test-mode `/admin/*`). The suites validate every response they receive
//! against the served document and keep a v1 snapshot of all six for
//! backward compatibility (`suites/contracts/v1.json`).

use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;

use crate::registry;
use crate::service::Service;

pub use crate::error::ErrorBody;

/// `GET /openapi.json`: the service's own document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_json",
    responses((status = 200, description = "this document", body = serde_json::Value))
)]
pub async fn serve(
    axum::extract::State(ctx): axum::extract::State<std::sync::Arc<crate::ctx::Ctx>>,
) -> impl axum::response::IntoResponse {
    // A service's document never changes while the process runs: built
    // and serialized once (each test process of an isolated run fetches
    // it from the host that serves its mesh).
    static SERVED: [std::sync::OnceLock<axum::body::Bytes>; Service::ALL.len()] =
        [const { std::sync::OnceLock::new() }; Service::ALL.len()];
    let body = SERVED[ctx.service as usize]
        .get_or_init(|| {
            serde_json::to_vec(&document(ctx.service))
                .unwrap_or_default()
                .into()
        })
        .clone();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

/// The routes every service shares.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(crate::ops::health, crate::ops::metrics, crate::ops::config, serve),
    components(schemas(ErrorBody))
)]
struct Shared;

/// The test-mode routes (`sandbox up --test-mode`, every test mesh).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    crate::admin::get_faults,
    crate::admin::set_faults,
    crate::admin::clear_faults,
    crate::admin::logs,
    crate::admin::reload_config,
    crate::admin::reset_breakers,
    crate::admin::hold_pool
))]
struct Admin;

/// The OpenAPI document of `service` (its own routes and the shared ones;
/// the admin routes are there whether or not the mesh runs in test mode,
/// marked as such).
pub fn document(service: Service) -> OpenApi {
    let module = registry::module(service);
    let mut doc = (module.openapi)();
    let mut shared = Shared::openapi();
    if module.own_health {
        // The module documents its own `/health`.
        shared.paths.paths.remove("/health");
    }
    doc.merge(shared);
    let mut admin = Admin::openapi();
    for op in operations(&mut admin) {
        op.tags = Some(vec!["test-mode".into()]);
    }
    doc.merge(admin);
    with_error_answers(&mut doc);
    doc.info.title = service.name().to_string();
    doc.info.version = "1".into();
    doc.info.description = Some(format!(
        "{} of the sandbox mesh. Every 4xx/5xx answers the ErrorBody shape.",
        service.name()
    ));
    doc
}

/// Gives every operation a `default` answer of the one error shape.
fn with_error_answers(doc: &mut OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = ResponseBuilder::new()
        .description("an error, in the one error shape")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for op in operations(doc) {
        op.responses
            .responses
            .entry("default".into())
            .or_insert_with(|| RefOr::T(error.clone()));
    }
}

/// Every operation of `doc`.
fn operations(doc: &mut OpenApi) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
    })
}
