//! A Toxiproxy-compatible control API with one proxy in front of each
//! service the API calls, and one between each service and each of its
//! stores ([`ChaosFront`]): `sandbox up --chaos-api ADDR`
//! starts it and declares it in the target file (`capabilities.chaos`), so
//! the suites' chaos tests drive a running sandbox exactly as they would a
//! staging target behind a real Toxiproxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::mesh::{Mesh, MeshConfig, MeshError};
use crate::service::Service;

/// One proxy to make, as `POST /populate` of a Toxiproxy API takes it.
#[derive(Debug, Serialize)]
struct ProxySpec<'a> {
    name: &'a str,
    listen: &'a str,
    upstream: &'a str,
    enabled: bool,
}

/// `POST /populate` answered: the proxies made (other fields ignored).
#[derive(Debug, Deserialize)]
struct Populated {
    #[serde(default)]
    proxies: Vec<ProxyMade>,
}

/// One proxy made and where it listens.
#[derive(Debug, Deserialize)]
struct ProxyMade {
    name: String,
    listen: String,
}

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

/// The control API and the proxies: by service, the one in front of it
/// (the API's calls to it) and those between it and its stores. Dropping
/// it stops the API (the proxies stop with it; routes are left pointing at
/// them).
pub struct ChaosFront {
    url: String,
    proxies: BTreeMap<Service, String>,
    stores: BTreeMap<Service, deployment::StoreProxies>,
    task: JoinHandle<()>,
    /// With TLS on, the TLS fronts the store proxies relay to.
    store_fronts: crate::store_tls::StoreFronts,
    /// The stores as an operator reaches them, when this front put TLS
    /// fronts before them.
    operator: Option<(String, provision::RedisEndpoint)>,
}

impl Drop for ChaosFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The proxy name of `service`'s edge to `store` (`billing-engine-postgres`).
pub fn store_proxy_name(service: Service, store: &str) -> String {
    format!("{}-{store}", service.name())
}

impl ChaosFront {
    /// Serves the control API on `listen` (loopback), with no proxy yet.
    pub async fn listen(listen: SocketAddr) -> Result<ChaosFront, ChaosFrontError> {
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
        Ok(ChaosFront {
            url: format!("http://{bound}"),
            proxies: BTreeMap::new(),
            stores: BTreeMap::new(),
            task,
            store_fronts: Default::default(),
            operator: None,
        })
    }

    fn failed(&self, message: String) -> ChaosFrontError {
        ChaosFrontError::Populate {
            url: self.url.clone(),
            message,
        }
    }

    /// Creates the proxies `wanted` (`{name, listen, upstream}`); returns
    /// each one's listen address by name.
    async fn populate(
        &self,
        wanted: &[(String, String)],
    ) -> Result<BTreeMap<String, SocketAddr>, ChaosFrontError> {
        let body: Vec<ProxySpec> = wanted
            .iter()
            .map(|(name, upstream)| ProxySpec {
                name,
                listen: "127.0.0.1:0",
                upstream,
                enabled: true,
            })
            .collect();
        let response = reqwest::Client::new()
            .post(format!("{}/populate", self.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| self.failed(e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| self.failed(e.to_string()))?;
        if !status.is_success() {
            return Err(self.failed(format!("{status}: {text}")));
        }
        let populated: Populated =
            serde_json::from_str(&text).map_err(|e| self.failed(format!("{e}: {text}")))?;
        let mut made = BTreeMap::new();
        for view in populated.proxies {
            let listen: SocketAddr = view.listen.parse().map_err(|e| {
                self.failed(format!(
                    "proxy {}: listen address {:?}: {e}",
                    view.name, view.listen
                ))
            })?;
            made.insert(view.name, listen);
        }
        if let Some((missing, _)) = wanted.iter().find(|(n, _)| !made.contains_key(n)) {
            return Err(self.failed(format!("no proxy `{missing}` was made")));
        }
        Ok(made)
    }

    /// Puts a proxy between each service and PostgreSQL, and each service
    /// and Redis (`<service>-postgres`, `<service>-redis`), and points
    /// `config`'s services at them: call before [`Mesh::start`]. With TLS
    /// on (`config.tls`), the stores get their TLS fronts first
    /// ([`crate::store_tls::front_stores`]) and the proxies relay to them,
    /// so that a proxy carries only TLS.
    pub async fn front_stores(&mut self, config: &mut MeshConfig) -> Result<(), ChaosFrontError> {
        let operator = (config.database_url.clone(), config.redis.clone());
        let fronts = crate::store_tls::front_stores(config)
            .await
            .map_err(|e| self.failed(e.to_string()))?;
        if fronts.fronts().next().is_some() {
            self.operator = Some(operator);
        }
        self.store_fronts = fronts;
        let pg = reqwest::Url::parse(&config.database_url)
            .map_err(|e| self.failed(format!("the database URL: {e}")))?;
        let pg_host = pg
            .host_str()
            .ok_or_else(|| self.failed("the database URL names no TCP host".into()))?
            .trim_matches(['[', ']'])
            .to_string();
        let pg_port = pg.port().unwrap_or(5432);
        let pg_upstream = if pg_host.contains(':') {
            format!("[{pg_host}]:{pg_port}")
        } else {
            format!("{pg_host}:{pg_port}")
        };
        let redis_upstream = config.redis.addr().to_string();
        let mut wanted = Vec::new();
        for s in Service::ALL {
            wanted.push((store_proxy_name(s, "postgres"), pg_upstream.clone()));
            wanted.push((store_proxy_name(s, "redis"), redis_upstream.clone()));
        }
        let made = self.populate(&wanted).await?;
        for s in Service::ALL {
            let pg_name = store_proxy_name(s, "postgres");
            let redis_name = store_proxy_name(s, "redis");
            let mut url = pg.clone();
            let via = made[&pg_name];
            let moved = url
                .set_host(Some(&via.ip().to_string()))
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    url.set_port(Some(via.port()))
                        .map_err(|()| "cannot take a port".to_string())
                });
            moved.map_err(|e| self.failed(format!("the database URL via {via}: {e}")))?;
            config.database_urls.insert(s, url.to_string());
            config.redis_addrs.insert(s, made[&redis_name]);
            self.stores.insert(
                s,
                deployment::StoreProxies {
                    postgres: Some(pg_name),
                    redis: Some(redis_name),
                },
            );
        }
        Ok(())
    }

    /// Creates a proxy named after each service the healthcare API calls,
    /// and routes the mesh's calls to that service through it.
    pub async fn front_services(&mut self, mesh: &Mesh) -> Result<(), ChaosFrontError> {
        let wanted: Vec<(String, String)> = Service::ALL
            .into_iter()
            .filter(|s| *s != Service::HealthcareApi)
            .map(|s| (s.name().to_string(), mesh.addr(s).to_string()))
            .collect();
        let made = self.populate(&wanted).await?;
        for (name, listen) in made {
            let Some(service) = Service::from_name(&name) else {
                continue;
            };
            mesh.route(service, listen)?;
            self.proxies.insert(service, name);
        }
        Ok(())
    }

    /// The control API, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The proxy in front of each service, by name.
    pub fn proxies(&self) -> &BTreeMap<Service, String> {
        &self.proxies
    }

    /// The stores as an operator reaches them (the database URL and the
    /// Redis before the TLS fronts), when [`ChaosFront::front_stores`] put
    /// TLS fronts before them; `None` otherwise (the configuration's own
    /// URLs are the stores').
    pub fn operator_stores(&self) -> Option<(&str, &provision::RedisEndpoint)> {
        self.operator
            .as_ref()
            .map(|(url, redis)| (url.as_str(), redis))
    }

    /// The proxies between each service and its stores, by service.
    pub fn stores(&self) -> &BTreeMap<Service, deployment::StoreProxies> {
        &self.stores
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
            stores: self
                .stores
                .iter()
                .map(|(s, p)| (s.name().to_string(), p.clone()))
                .collect(),
        }
    }
}
