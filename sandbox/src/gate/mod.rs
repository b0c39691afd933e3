//! The request gate every request passes (request id, token check,
//! injected faults, counting), and the rewrite that gives the framework's
//! own rejections the one JSON error shape.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{self, Caller};
use crate::ctx::{Ctx, new_request_id};
use crate::error::ApiError;

pub mod sessions;

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn authenticate(ctx: &Ctx, req: &Request, request_id: &str) -> Result<Caller, String> {
    let presented = auth::Presented {
        tenant: header(req, "x-tenant-id"),
        authorization: header(req, "authorization"),
        source_service: header(req, "x-source-service"),
        mutating: !req.method().is_safe(),
    };
    auth::authenticate(
        &ctx.settings.secret,
        ctx.service,
        &ctx.replay,
        &presented,
        request_id,
    )
}

/// What the fault plan does to a request.
enum Injected {
    /// Answer this instead.
    Answer(Response),
    /// Handle it, then break the connection before the answer's body.
    LoseReply,
}

/// Applies the fault plan to a request; `Some` is what to do instead of
/// answering it plainly.
async fn apply_faults(ctx: &Ctx, caller: &Caller, path: &str) -> Option<Injected> {
    let (latency, leak, fail, lose) = {
        let mut plans = ctx.faults.lock().unwrap_or_else(PoisonError::into_inner);
        // A tenant's own plan first, then the one for every tenant.
        let plan = plans
            .iter_mut()
            .filter(|p| p.matches(&caller.tenant, path, &caller.request_id))
            .min_by_key(|p| p.tenant.is_none())?;
        let fail = if plan.fail_next > 0 {
            plan.fail_next -= 1;
            Some(plan.status.unwrap_or(503))
        } else {
            None
        };
        (plan.latency_ms, plan.leak_phi.take(), fail, plan.lose_reply)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some(text) = leak {
        tracing::info!(
            tenant = %caller.tenant,
            request_id = %caller.request_id,
            "handling {path} for {text}"
        );
    }
    let status = fail?;
    ctx.metrics.incr("faults_injected_total", "");
    if lose {
        return Some(Injected::LoseReply);
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    Some(Injected::Answer(
        ApiError::new(status, "injected_fault", "fault injected by the test").into_response(),
    ))
}

/// `resp` with its body replaced by one that fails at once: the server
/// breaks the connection after the head, and the client never reads the
/// answer.
fn lost(resp: Response) -> Response {
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let broken = futures_util::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "reply lost (injected fault)",
        ))
    });
    Response::from_parts(parts, axum::body::Body::from_stream(broken))
}

/// The gate every request passes: request id, token check (except
/// `/health`, `/metrics` and `/openapi.json`), faults (not on `/admin/…`), counting.
pub async fn gate(State(ctx): State<Arc<Ctx>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let request_id = header(&req, "x-request-id")
        .filter(|r| !r.is_empty() && r.len() <= 128)
        .map_or_else(new_request_id, str::to_string);
    let mut resp = if crate::timing::on() {
        // The breakdown (bench): this request's parts, kept by route and
        // answered as `Server-Timing`.
        let route = format!("{method} {}", crate::timing::route(&path));
        let (mut resp, spans) =
            crate::timing::scope(admit(&ctx, req, next, &path, &request_id)).await;
        let took = started.elapsed();
        ctx.metrics.breakdown.record(&route, took, spans);
        let sample = crate::timing::Sample {
            total_us: u32::try_from(took.as_micros()).unwrap_or(u32::MAX),
            spans,
        };
        if let Ok(v) = HeaderValue::from_str(&sample.server_timing()) {
            resp.headers_mut().insert("server-timing", v);
        }
        resp
    } else {
        admit(&ctx, req, next, &path, &request_id).await
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    ctx.metrics
        .record_request(&method, resp.status().as_u16(), started.elapsed());
    resp
}

/// The gate's checks and the handler: token (except on open routes), faults
/// (not on `/admin/…`).
async fn admit(
    ctx: &Arc<Ctx>,
    mut req: Request,
    next: Next,
    path: &str,
    request_id: &str,
) -> Response {
    let open = matches!(path, "/health" | "/metrics" | "/openapi.json");
    if open {
        next.run(req).await
    } else {
        match authenticate(ctx, &req, request_id) {
            Err(reason) => auth::unauthorized(reason),
            Ok(mut caller) => {
                // A person logged out, or given another role (see `sessions`).
                if let Err(refused) = crate::gate::sessions::enforce(ctx, &mut caller).await {
                    return refused;
                }
                // The tenant's rate limit (the API's; test mode's own
                // routes are not limited).
                let limiter = ctx
                    .settings
                    .rate_limit
                    .as_ref()
                    .filter(|_| !path.starts_with("/admin/"));
                if let Some(limiter) = limiter {
                    if let Err(wait) = limiter.admit(&caller.tenant) {
                        ctx.metrics.incr("http_rate_limited_total", "");
                        return crate::limits::too_many_requests(limiter.limit(), wait);
                    }
                }
                let fault = if path.starts_with("/admin/") {
                    None
                } else {
                    apply_faults(ctx, &caller, path).await
                };
                match fault {
                    Some(Injected::Answer(resp)) => resp,
                    Some(Injected::LoseReply) => {
                        req.extensions_mut().insert(caller);
                        lost(next.run(req).await)
                    }
                    None => {
                        req.extensions_mut().insert(caller);
                        next.run(req).await
                    }
                }
            }
        }
    }
}

/// Gives every error answer one JSON shape, `{"error", "message"}`: the
/// framework's own rejections (malformed JSON, a body over the limit, an
/// unknown route, a wrong method) are plain text and may quote the input;
/// they are rewritten without it (quoted values are cut, PHI redacted).
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::BAD_REQUEST => "malformed_request",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        s if s.is_server_error() => "internal_error",
        _ => "rejected",
    };
    let message = match status {
        StatusCode::NOT_FOUND => "no such route".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_string(),
        _ => without_quoted(&String::from_utf8_lossy(&text)),
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body =
        serde_json::to_string(&ApiError::new(parts.status, code, message).body).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// `text` with every `"…"`-quoted value cut out (serde quotes the input it
/// could not take).
fn without_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if !inside {
                out.push_str("\"…\"");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out.chars().take(300).collect()
}

/// How much of a refused body is read and dropped so that the client, still
/// sending it, reads the `413` rather than a broken pipe.
const DRAIN_AT_MOST: u64 = 32 << 20;
/// How long a refused body is read before the connection is closed anyway.
const DRAIN_FOR: Duration = Duration::from_secs(2);

/// Refuses a request whose declared `content-length` is over `max_body`
/// with `413 body_too_large`, after reading (and dropping) the body it is
/// sending, bounded by [`DRAIN_AT_MOST`] and [`DRAIN_FOR`]: a server that
/// answers and closes while the client is still writing leaves the client
/// a broken pipe instead of the answer (nginx's "lingering close"). A body
/// without a declared length is cut by the framework's limit as before.
pub async fn refuse_oversized(State(max_body): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(length) = declared.filter(|&n| n > max_body as u64) else {
        return next.run(req).await;
    };
    if length <= DRAIN_AT_MOST {
        let mut body = req.into_body().into_data_stream();
        let drained = tokio::time::timeout(DRAIN_FOR, async {
            use futures_util::StreamExt;
            while let Some(Ok(_)) = body.next().await {}
        });
        let _ = drained.await;
    }
    let mut resp = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body ({length} bytes) is over this service's limit of {max_body} bytes"),
    )
    .into_response();
    resp.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    resp
}
