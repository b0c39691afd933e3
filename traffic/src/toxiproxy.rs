//! Toxiproxy's HTTP API over our [`ChaosProxy`], so the Toxiproxy clients
//! a team already has (Go, Ruby, Python, Node, `toxiproxy-cli`) drive it
//! unchanged: `cargo run --bin chaos-proxy -- --api 127.0.0.1:8474`.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/version` | `{"version": ...}` |
//! | GET | `/proxies` | every proxy, by name |
//! | POST | `/proxies` | create one: `{"name", "listen", "upstream", "enabled"}` (201; 409 if the name is taken) |
//! | POST | `/populate` | create or replace a list (201, `{"proxies": [...]}`) |
//! | GET / POST / DELETE | `/proxies/{proxy}` | show, update (`enabled`, `listen`, `upstream`), delete (204) |
//! | GET / POST | `/proxies/{proxy}/toxics` | list, add a toxic |
//! | GET / POST / DELETE | `/proxies/{proxy}/toxics/{toxic}` | show, update (`attributes`, `toxicity`), remove (204) |
//! | POST | `/reset` | enable every proxy, remove every toxic (204) |
//!
//! A toxic is `{"name", "type", "stream", "toxicity", "attributes"}` as in
//! Toxiproxy: `name` defaults to `<type>_<stream>`, `stream` to
//! `downstream`, `toxicity` to 1. Types and attributes: `latency`
//! (`latency`, `jitter`, ms), `bandwidth` (`rate`, KB/s), `slow_close`
//! (`delay`, ms), `timeout` (`timeout`, ms; 0 never closes), `reset_peer`
//! (`timeout`, ms), `slicer` (`average_size`, `size_variation` bytes,
//! `delay` µs), `limit_data` (`bytes`). Errors are `{"error", "status"}`.
//! Listen and upstream addresses must be on loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::chaos::{ChaosProxy, Direction, Fault, FaultId, FaultKind};

/// The version `/version` reports: the Toxiproxy API level we follow.
pub const API_VERSION: &str = "2.12.0";

/// A toxic, as Toxiproxy's API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Toxic {
    /// Unique within its proxy.
    pub name: String,
    /// `latency`, `bandwidth`, `slow_close`, `timeout`, `reset_peer`, `slicer`, `limit_data`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `upstream` (client → service) or `downstream`.
    pub stream: String,
    /// Share of connections affected, 0–1.
    pub toxicity: f64,
    /// The type's attributes (all of them, defaults filled in).
    pub attributes: Map<String, Value>,
}

/// A proxy, as Toxiproxy's API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProxyView {
    /// Its name.
    pub name: String,
    /// Where clients connect.
    pub listen: String,
    /// The service behind it.
    pub upstream: String,
    /// Taking connections?
    pub enabled: bool,
    /// Its toxics.
    pub toxics: Vec<Toxic>,
}

/// An API error: Toxiproxy's `{"error", "status"}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error": self.1, "status": self.0.as_u16()})),
        )
            .into_response()
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("{what} not found"))
}

struct Proxy {
    upstream: SocketAddr,
    chaos: ChaosProxy,
    toxics: Vec<(Toxic, FaultId)>,
}

impl Proxy {
    fn view(&self, name: &str) -> ProxyView {
        ProxyView {
            name: name.to_string(),
            listen: self.chaos.addr().to_string(),
            upstream: self.upstream.to_string(),
            enabled: self.chaos.is_up(),
            toxics: self.toxics.iter().map(|(t, _)| t.clone()).collect(),
        }
    }
}

/// The API's state: proxies by name.
#[derive(Clone, Default)]
pub struct Api {
    proxies: Arc<Mutex<BTreeMap<String, Proxy>>>,
}

/// The API's routes, to serve on a listener.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/reset", post(reset))
        .route("/populate", post(populate))
        .route("/proxies", get(list).post(create))
        .route(
            "/proxies/{proxy}",
            get(show).post(update).delete(delete_proxy),
        )
        .route("/proxies/{proxy}/toxics", get(list_toxics).post(add_toxic))
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(show_toxic).post(update_toxic).delete(remove_toxic),
        )
        .with_state(api)
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(Api::default())).await
}

async fn version() -> Json<Value> {
    Json(json!({ "version": API_VERSION }))
}

async fn resolve(text: &str, what: &str) -> Result<SocketAddr, ApiError> {
    let mut addrs = tokio::net::lookup_host(text)
        .await
        .map_err(|e| bad(format!("{what} `{text}`: {e}")))?;
    addrs.find(|a| a.ip().is_loopback()).ok_or_else(|| {
        bad(format!(
            "{what} `{text}` is not on loopback: faults are only injected on this machine"
        ))
    })
}

#[derive(Deserialize)]
struct NewProxy {
    name: String,
    #[serde(default)]
    listen: Option<String>,
    upstream: String,
    #[serde(default)]
    enabled: Option<bool>,
}

async fn start(p: &NewProxy) -> Result<Proxy, ApiError> {
    let listen = resolve(p.listen.as_deref().unwrap_or("127.0.0.1:0"), "listen").await?;
    let upstream = resolve(&p.upstream, "upstream").await?;
    let chaos = ChaosProxy::bind(listen, upstream, 0x5eed)
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("listen {listen}: {e}"),
            )
        })?;
    if p.enabled == Some(false) {
        chaos.down().await;
    }
    Ok(Proxy {
        upstream,
        chaos,
        toxics: Vec::new(),
    })
}

async fn list(State(api): State<Api>) -> Json<BTreeMap<String, ProxyView>> {
    let proxies = api.proxies.lock().await;
    Json(
        proxies
            .iter()
            .map(|(name, p)| (name.clone(), p.view(name)))
            .collect(),
    )
}

async fn create(
    State(api): State<Api>,
    Json(body): Json<NewProxy>,
) -> Result<(StatusCode, Json<ProxyView>), ApiError> {
    let mut proxies = api.proxies.lock().await;
    if proxies.contains_key(&body.name) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "proxy already exists".into(),
        ));
    }
    let proxy = start(&body).await?;
    let view = proxy.view(&body.name);
    proxies.insert(body.name, proxy);
    Ok((StatusCode::CREATED, Json(view)))
}

async fn populate(
    State(api): State<Api>,
    Json(body): Json<Vec<NewProxy>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut proxies = api.proxies.lock().await;
    let mut views = Vec::new();
    for p in &body {
        // Replacing a proxy frees its port before the new one binds.
        if let Some(old) = proxies.remove(&p.name) {
            old.chaos.down().await;
        }
        let proxy = start(p).await?;
        views.push(proxy.view(&p.name));
        proxies.insert(p.name.clone(), proxy);
    }
    Ok((StatusCode::CREATED, Json(json!({ "proxies": views }))))
}

async fn show(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<Json<ProxyView>, ApiError> {
    let proxies = api.proxies.lock().await;
    let p = proxies.get(&name).ok_or_else(|| not_found("proxy"))?;
    Ok(Json(p.view(&name)))
}

#[derive(Deserialize)]
struct ProxyUpdate {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    upstream: Option<String>,
}

async fn update(
    State(api): State<Api>,
    Path(name): Path<String>,
    Json(body): Json<ProxyUpdate>,
) -> Result<Json<ProxyView>, ApiError> {
    let mut proxies = api.proxies.lock().await;
    let p = proxies.get_mut(&name).ok_or_else(|| not_found("proxy"))?;
    if body.listen.is_some() || body.upstream.is_some() {
        // A new address is a new proxy carrying the same toxics.
        let listen = body
            .listen
            .clone()
            .unwrap_or_else(|| p.chaos.addr().to_string());
        let upstream = body
            .upstream
            .clone()
            .unwrap_or_else(|| p.upstream.to_string());
        p.chaos.down().await;
        let mut fresh = start(&NewProxy {
            name: name.clone(),
            listen: Some(listen),
            upstream,
            enabled: Some(body.enabled.unwrap_or(true)),
        })
        .await?;
        for (toxic, _) in std::mem::take(&mut p.toxics) {
            let id = fresh.chaos.add(fault_of(&toxic)?);
            fresh.toxics.push((toxic, id));
        }
        *p = fresh;
    } else {
        match body.enabled {
            Some(false) if p.chaos.is_up() => p.chaos.down().await,
            Some(true) if !p.chaos.is_up() => p.chaos.up().await.map_err(|e| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("listen {}: {e}", p.chaos.addr()),
                )
            })?,
            _ => {}
        }
    }
    Ok(Json(p.view(&name)))
}

async fn delete_proxy(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut proxies = api.proxies.lock().await;
    let p = proxies.remove(&name).ok_or_else(|| not_found("proxy"))?;
    p.chaos.down().await;
    Ok(StatusCode::NO_CONTENT)
}

async fn reset(State(api): State<Api>) -> Result<StatusCode, ApiError> {
    let mut proxies = api.proxies.lock().await;
    for p in proxies.values_mut() {
        p.chaos.clear();
        p.toxics.clear();
        if !p.chaos.is_up() {
            p.chaos.up().await.map_err(|e| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("listen {}: {e}", p.chaos.addr()),
                )
            })?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn list_toxics(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<Json<Vec<Toxic>>, ApiError> {
    let proxies = api.proxies.lock().await;
    let p = proxies.get(&name).ok_or_else(|| not_found("proxy"))?;
    Ok(Json(p.toxics.iter().map(|(t, _)| t.clone()).collect()))
}

#[derive(Deserialize)]
struct NewToxic {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    toxicity: Option<f64>,
    #[serde(default)]
    attributes: Map<String, Value>,
}

async fn add_toxic(
    State(api): State<Api>,
    Path(name): Path<String>,
    Json(body): Json<NewToxic>,
) -> Result<Json<Toxic>, ApiError> {
    let mut proxies = api.proxies.lock().await;
    let p = proxies.get_mut(&name).ok_or_else(|| not_found("proxy"))?;
    let stream = body.stream.unwrap_or_else(|| "downstream".into());
    let toxic = Toxic {
        name: body
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{}_{stream}", body.kind)),
        attributes: with_defaults(&body.kind, body.attributes)?,
        kind: body.kind,
        stream,
        toxicity: body.toxicity.unwrap_or(1.0),
    };
    if p.toxics.iter().any(|(t, _)| t.name == toxic.name) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "toxic already exists".into(),
        ));
    }
    let id = p.chaos.add(fault_of(&toxic)?);
    p.toxics.push((toxic.clone(), id));
    Ok(Json(toxic))
}

async fn show_toxic(
    State(api): State<Api>,
    Path((name, toxic)): Path<(String, String)>,
) -> Result<Json<Toxic>, ApiError> {
    let proxies = api.proxies.lock().await;
    let p = proxies.get(&name).ok_or_else(|| not_found("proxy"))?;
    let (t, _) = p
        .toxics
        .iter()
        .find(|(t, _)| t.name == toxic)
        .ok_or_else(|| not_found("toxic"))?;
    Ok(Json(t.clone()))
}

#[derive(Deserialize)]
struct ToxicUpdate {
    #[serde(default)]
    toxicity: Option<f64>,
    #[serde(default)]
    attributes: Map<String, Value>,
}

async fn update_toxic(
    State(api): State<Api>,
    Path((name, toxic)): Path<(String, String)>,
    Json(body): Json<ToxicUpdate>,
) -> Result<Json<Toxic>, ApiError> {
    let mut proxies = api.proxies.lock().await;
    let p = proxies.get_mut(&name).ok_or_else(|| not_found("proxy"))?;
    let slot = p
        .toxics
        .iter_mut()
        .find(|(t, _)| t.name == toxic)
        .ok_or_else(|| not_found("toxic"))?;
    let mut updated = slot.0.clone();
    updated.attributes.extend(body.attributes);
    updated.attributes = with_defaults(&updated.kind, updated.attributes)?;
    if let Some(t) = body.toxicity {
        updated.toxicity = t;
    }
    let fault = fault_of(&updated)?;
    p.chaos.remove(slot.1);
    slot.1 = p.chaos.add(fault);
    slot.0 = updated.clone();
    Ok(Json(updated))
}

async fn remove_toxic(
    State(api): State<Api>,
    Path((name, toxic)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut proxies = api.proxies.lock().await;
    let p = proxies.get_mut(&name).ok_or_else(|| not_found("proxy"))?;
    let at = p
        .toxics
        .iter()
        .position(|(t, _)| t.name == toxic)
        .ok_or_else(|| not_found("toxic"))?;
    let (_, id) = p.toxics.remove(at);
    p.chaos.remove(id);
    Ok(StatusCode::NO_CONTENT)
}

/// Each type's attributes with Toxiproxy's defaults; an unknown type or
/// attribute, or a value that is not a whole number, is a 400.
fn with_defaults(kind: &str, given: Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let defaults: &[(&str, u64)] = match kind {
        "latency" => &[("latency", 0), ("jitter", 0)],
        "bandwidth" => &[("rate", 0)],
        "slow_close" => &[("delay", 0)],
        "timeout" => &[("timeout", 0)],
        "reset_peer" => &[("timeout", 0)],
        "slicer" => &[("average_size", 0), ("size_variation", 0), ("delay", 0)],
        "limit_data" => &[("bytes", 0)],
        other => return Err(bad(format!("invalid toxic type: {other}"))),
    };
    let mut out = Map::new();
    for (key, value) in given {
        if !defaults.iter().any(|(k, _)| *k == key) {
            return Err(bad(format!("toxic type {kind} has no attribute `{key}`")));
        }
        if value.as_u64().is_none() {
            return Err(bad(format!(
                "attribute `{key}` must be a whole number, got {value}"
            )));
        }
        out.insert(key, value);
    }
    for (k, v) in defaults {
        out.entry(k.to_string()).or_insert_with(|| json!(v));
    }
    Ok(out)
}

/// The chaos proxy fault a toxic stands for.
fn fault_of(t: &Toxic) -> Result<Fault, ApiError> {
    let n = |k: &str| t.attributes.get(k).and_then(Value::as_u64).unwrap_or(0);
    let ms = |k: &str| Duration::from_millis(n(k));
    let kind = match t.kind.as_str() {
        "latency" => FaultKind::Latency {
            latency: ms("latency"),
            jitter: ms("jitter"),
        },
        "bandwidth" => FaultKind::Bandwidth {
            bytes_per_sec: n("rate").saturating_mul(1000),
        },
        "slow_close" => FaultKind::SlowClose { delay: ms("delay") },
        "timeout" if n("timeout") == 0 => FaultKind::BlackHole,
        "timeout" => FaultKind::Timeout {
            close_after: ms("timeout"),
        },
        "reset_peer" => FaultKind::Reset {
            after: ms("timeout"),
        },
        "slicer" => FaultKind::Slicer {
            average: n("average_size") as usize,
            variation: n("size_variation") as usize,
            delay: Duration::from_micros(n("delay")),
        },
        "limit_data" => FaultKind::LimitData { bytes: n("bytes") },
        other => return Err(bad(format!("invalid toxic type: {other}"))),
    };
    let direction = match t.stream.as_str() {
        "upstream" => Direction::Upstream,
        "downstream" => Direction::Downstream,
        other => {
            return Err(bad(format!(
                "invalid stream `{other}`: upstream or downstream"
            )));
        }
    };
    if !(0.0..=1.0).contains(&t.toxicity) {
        return Err(bad(format!(
            "toxicity {} is not between 0 and 1",
            t.toxicity
        )));
    }
    Ok(Fault::new(kind).direction(direction).toxicity(t.toxicity))
}
