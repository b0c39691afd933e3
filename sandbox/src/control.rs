//! The control API of a running `sandbox up`: restarting one of its
//! services on its port (`POST /restart/{service}`: drained gracefully,
//! then started again), as `docker compose restart` would a container. `sandbox restart --control ADDR SERVICE`
//! calls it; the target file names that command as its
//! `capabilities.restart`, so the suites' restart tests drive the sandbox
//! exactly as they would any target's own restart command.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::mesh::{Mesh, MeshError};
use crate::service::Service;

/// The control API, serving until dropped.
pub struct Control {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why the control API could not start.
#[derive(Debug, thiserror::Error)]
#[error("control API: cannot listen on {addr}: {source}")]
pub struct ControlError {
    /// Where.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

impl Control {
    /// Serves the control API of `mesh` on `listen` (loopback).
    pub async fn start(mesh: Arc<Mesh>, listen: SocketAddr) -> Result<Control, ControlError> {
        let fail = |source| ControlError {
            addr: listen,
            source,
        };
        if !listen.ip().is_loopback() {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                MeshError::NotLoopback(listen).to_string(),
            )));
        }
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(fail)?;
        let addr = listener.local_addr().map_err(fail)?;
        let app = Router::new()
            .route("/restart/{service}", post(restart))
            .with_state(mesh);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Control { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// `POST /restart/{service}` answered: the service restarted, and where
/// it listens (errors answer the one error shape, [`ApiError`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct Restarted {
    /// The service's name.
    pub restarted: String,
    /// Its base URL.
    pub url: String,
}

async fn restart(State(mesh): State<Arc<Mesh>>, Path(name): Path<String>) -> Response {
    let Some(service) = Service::from_name(&name) else {
        let known: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_service",
            format!("no service `{name}`; the services are {}", known.join(", ")),
        )
        .into_response();
    };
    // As a deploy's restart does: the requests in flight are answered,
    // then the service starts again on its port.
    mesh.shutdown(service).await;
    match mesh.restart(service).await {
        Ok(()) => axum::Json(Restarted {
            restarted: service.name().to_string(),
            url: mesh.url(service),
        })
        .into_response(),
        Err(e) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "restart_failed", e).into_response()
        }
    }
}

/// Asks the control API at `addr` to restart `service`; the answer's
/// message on success, the reason on failure.
pub async fn request_restart(addr: SocketAddr, service: &str) -> Result<String, String> {
    let url = format!("http://{addr}/restart/{service}");
    let r = reqwest::Client::new()
        .post(&url)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("POST {url} answered {status}: {body}"))
    }
}
