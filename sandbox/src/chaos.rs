//! A Toxiproxy-compatible control API with one proxy in front of each
//! service the API calls ([`ChaosFront`]): `sandbox up --chaos-api ADDR`
//! starts it and declares it in the target file (`capabilities.chaos`), so
//! the suites' chaos tests drive a running sandbox exactly as they would a
//! staging deployment behind a real Toxiproxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::mesh::{Mesh, MeshError};
use crate::service::Service;

/// Why the chaos front could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChaosFrontError {
    /// The control API's address could not be bound.
    #[error("chaos API: cannot listen on {addr}: {source}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The control API refused to create the proxies.
    #[error("chaos API at {url}: creating the proxies: {message}")]
    Populate {
        /// The API.
        url: String,
        /// Why.
        message: String,
    },
    /// A proxy could not be put in a route.
    #[error(transparent)]
    Route(#[from] MeshError),
}

/// The control API and the proxies, by service. Dropping it stops the API
/// (the proxies stop with it; routes are left pointing at them).
pub struct ChaosFront {
    url: String,
    proxies: BTreeMap<Service, String>,
    task: JoinHandle<()>,
}

impl Drop for ChaosFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChaosFront {
    /// Serves the control API on `listen` (loopback), creates a proxy named
    /// after each service the healthcare API calls, and routes the mesh's
    /// calls to that service through it.
    pub async fn start(mesh: &Mesh, listen: SocketAddr) -> Result<ChaosFront, ChaosFrontError> {
        if !listen.ip().is_loopback() {
            return Err(MeshError::NotLoopback(listen).into());
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ChaosFrontError::Bind {
                addr: listen,
                source,
            })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ChaosFrontError::Bind {
                addr: listen,
                source,
            })?;
        let app = traffic::toxiproxy::router(traffic::toxiproxy::Api::default());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url = format!("http://{bound}");
        let dependencies: Vec<Service> = Service::ALL
            .into_iter()
            .filter(|s| *s != Service::HealthcareApi)
            .collect();
        let wanted: Vec<Value> = dependencies
            .iter()
            .map(|s| {
                json!({
                    "name": s.name(),
                    "listen": "127.0.0.1:0",
                    "upstream": mesh.addr(*s).to_string(),
                    "enabled": true,
                })
            })
            .collect();
        let failed = |message: String| ChaosFrontError::Populate {
            url: url.clone(),
            message,
        };
        let reply = reqwest::Client::new()
            .post(format!("{url}/populate"))
            .json(&wanted)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = reply.status();
        let body: Value = reply.json().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            return Err(failed(format!("{status}: {body}")));
        }
        let mut proxies = BTreeMap::new();
        for view in body["proxies"].as_array().into_iter().flatten() {
            let name = view["name"].as_str().unwrap_or_default();
            let Some(service) = Service::from_name(name) else {
                continue;
            };
            let listen: SocketAddr = view["listen"]
                .as_str()
                .and_then(|l| l.parse().ok())
                .ok_or_else(|| failed(format!("proxy {name}: no listen address in {view}")))?;
            mesh.route(service, listen)?;
            proxies.insert(service, name.to_string());
        }
        if let Some(missing) = dependencies.iter().find(|s| !proxies.contains_key(s)) {
            return Err(failed(format!("no proxy was made for {missing}")));
        }
        Ok(ChaosFront { url, proxies, task })
    }

    /// The control API, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The proxy in front of each service, by name.
    pub fn proxies(&self) -> &BTreeMap<Service, String> {
        &self.proxies
    }

    /// As the target file declares it.
    pub fn describe(&self) -> deployment::Chaos {
        deployment::Chaos {
            toxiproxy: self.url.clone(),
            proxies: self
                .proxies
                .iter()
                .map(|(s, p)| (s.name().to_string(), p.clone()))
                .collect(),
        }
    }
}
