//! The system under test as a fixture: [`Target`].
//!
//! Without `--target`, the target is the run's in-process [`Mesh`] and has
//! every capability. With `--target FILE` (or `SERVICE_TEST_TARGET`) it is
//! the running system the file describes, and has the capabilities the file
//! declares. The [`preflight`] checks every service's `/health` before any
//! test runs.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deployment::{Capabilities, Slo, SloTable, TargetFile, TargetFileError, parse_base_url};
use harness::preflight::PreflightCx;
use harness::{Fixture, FixtureCx, FixtureError, Scope};
use sandbox::{Credentials, Mesh, MeshClient, Service};
use serde_json::Value;

/// Why a target could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The file is malformed.
    #[error(transparent)]
    File(#[from] TargetFileError),
    /// A variable or file the target file names could not be read.
    #[error("target `{target}` ({path}): {message}")]
    Auth {
        /// The target's name.
        target: String,
        /// The file.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// A service did not answer its `/health`, or answered unhealthy.
    #[error("target `{target}` ({path}): {service} at {url} {problem}")]
    Unhealthy {
        /// The target's name.
        target: String,
        /// The file.
        path: PathBuf,
        /// The first service that failed.
        service: Service,
        /// Its base URL.
        url: String,
        /// What happened.
        problem: String,
    },
    /// The declared Toxiproxy is not there, or lacks a declared proxy.
    #[error("target `{target}` ({path}): capabilities.chaos.toxiproxy {api} {problem}")]
    Chaos {
        /// The target's name.
        target: String,
        /// Its file.
        path: PathBuf,
        /// The Toxiproxy API.
        api: String,
        /// What is wrong.
        problem: String,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(String),
}

/// How requests authenticate.
#[derive(Clone)]
enum Auth {
    /// Tokens are signed here, for any tenant.
    Secret(Arc<[u8]>),
    /// Bearer tokens, per service, for one tenant.
    Bearer {
        tokens: BTreeMap<Service, Arc<str>>,
        tenant: String,
    },
    /// A command that prints a fresh token for any service, tenant, role.
    Mint(Arc<CommandMinter>),
}

/// `auth.mint`: a command run (`sh -c`) for each request, `{service}`,
/// `{tenant}` and `{role}` replaced, whose standard output is the token.
pub struct CommandMinter {
    command: String,
}

/// How long the mint command may take.
const MINT_TIMEOUT: Duration = Duration::from_secs(10);

impl sandbox::mesh::Minter for CommandMinter {
    fn mint<'a>(
        &'a self,
        service: Service,
        tenant: &'a str,
        role: sandbox::Role,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let command = self
                .command
                .replace("{service}", service.name())
                .replace("{tenant}", tenant)
                .replace("{role}", role.name());
            let run = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(MINT_TIMEOUT, run)
                .await
                .map_err(|_| format!("auth.mint `{command}` did not end within {MINT_TIMEOUT:?}"))?
                .map_err(|e| format!("auth.mint `{command}`: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "auth.mint `{command}` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if token.is_empty() || token.contains(char::is_whitespace) {
                return Err(format!(
                    "auth.mint `{command}` printed no single token on its standard output"
                ));
            }
            Ok(token)
        })
    }
}

/// How a service of the target is restarted.
#[derive(Debug, Clone)]
pub enum Restarter {
    /// The control API of a sandbox (in process, or the run's host).
    Control(SocketAddr),
    /// The target file's command (`capabilities.restart`).
    Command(deployment::Restart),
}

/// A capability a test may need; a target without it skips the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Tokens signed for any tenant (and forged ones): `auth.secret_env`.
    SignTokens,
    /// `/admin/faults`: `capabilities.faults`.
    Faults,
    /// The services' redacted logs: `capabilities.logs`.
    Logs,
    /// Reading rows: `storage.database_url`.
    Rows,
    /// Reading cache entries: `storage.redis_url`.
    CacheKeys,
    /// Putting load on it: `capabilities.load`.
    Load,
    /// Chaos: a Toxiproxy-compatible API in front of the services.
    Chaos,
    /// A mesh of the test's own: the in-process sandbox only.
    PrivateMesh,
    /// Restarting a service: `capabilities.restart`.
    Restart,
    /// Chaos on the links between the services and their stores:
    /// `capabilities.chaos.stores`.
    StoreChaos,
    /// Every service over HTTPS with a CA to trust (`sandbox up --tls`).
    Tls,
    /// Logging a person out and changing a person's role, in force
    /// everywhere within a declared bound: `auth.revocation_bound_ms`.
    Revocation,
}

impl Capability {
    /// What it allows, and the key that declares it.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Capability::SignTokens => ("signing tokens", "auth.secret_env or auth.secret_file"),
            Capability::Faults => ("fault injection", "capabilities.faults"),
            Capability::Logs => ("log access", "capabilities.logs"),
            Capability::Rows => ("reading rows", "storage.database_url"),
            Capability::CacheKeys => ("reading the cache", "storage.redis_url"),
            Capability::Load => ("load", "capabilities.load"),
            Capability::Chaos => (
                "chaos (Toxiproxy)",
                "capabilities.chaos (sandbox up --chaos-api 127.0.0.1:8474)",
            ),
            Capability::Revocation => (
                "revoking tokens (no declared bound)",
                "auth.revocation_bound_ms",
            ),
            Capability::Tls => (
                "TLS checks (it serves plain HTTP)",
                "https:// service URLs and tls.ca_file (sandbox up --tls)",
            ),
            Capability::Restart => (
                "restarting a service",
                "capabilities.restart (command = \"docker compose restart {service}\")",
            ),
            Capability::StoreChaos => (
                "chaos between the services and their stores",
                "capabilities.chaos.stores (sandbox up --chaos-api 127.0.0.1:8474)",
            ),
            Capability::PrivateMesh => (
                "a private mesh",
                "in-process sandbox only: a mesh of the test's own, its links tapped",
            ),
        }
    }
}

/// The system under test: clients per service and tenant, tokens, SLOs,
/// `/metrics`, and what the target allows.
pub struct Target {
    name: String,
    source: Option<PathBuf>,
    mesh: Option<Arc<Mesh>>,
    urls: BTreeMap<Service, String>,
    auth: Auth,
    slo: SloTable,
    capabilities: Capabilities,
    database_url: Option<String>,
    redis: Option<(provision::RedisEndpoint, String)>,
    http: reqwest::Client,
    /// With TLS: the client configuration trusting the target's CA.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// In-process: the chaos front (proxies in front of the services and
    /// between them and their stores), declared in `capabilities.chaos`.
    _front: Option<sandbox::chaos::ChaosFront>,
    /// In-process: the control API restarting the mesh's services (for the
    /// run's isolated processes too).
    control: Option<sandbox::control::Control>,
    /// How a service is restarted, if it can be.
    restart: Option<Restarter>,
    /// Every service's OpenAPI contract, which every answer of
    /// [`Target::client`]'s clients is held to.
    contracts: Arc<crate::contract::Contracts>,
    /// Within how long a logout or a role change is in force everywhere
    /// (`auth.revocation_bound_ms`).
    revocation_bound: Option<Duration>,
    /// The in-process mesh of the run's host process, attached to from an
    /// isolated test's process (no `Mesh` object here; private meshes may
    /// still be started, on the hosted PostgreSQL and Redis).
    hosted: bool,
}

fn http_client(tls: Option<&Arc<rustls::ClientConfig>>) -> Result<reqwest::Client, TargetError> {
    // Idle connections are dropped before a server's keep-alive would close
    // them under a request (see `sandbox::mesh::CLIENT_IDLE`).
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(sandbox::mesh::CLIENT_IDLE);
    let builder = match tls {
        Some(config) => builder.use_preconfigured_tls((**config).clone()),
        None => builder,
    };
    builder
        .build()
        .map_err(|e| TargetError::Client(e.to_string()))
}

impl Target {
    /// The in-process sandbox `mesh`, with every capability: `front` is
    /// the chaos front it was started behind (see
    /// [`sandbox::fixture::start_fronted`]).
    pub async fn in_process(
        mesh: Arc<Mesh>,
        front: Option<sandbox::chaos::ChaosFront>,
    ) -> Result<Target, TargetError> {
        let control = sandbox::control::Control::start(
            Arc::clone(&mesh),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .map_err(|e| TargetError::Client(e.to_string()))?;
        let mut capabilities = local_capabilities(true);
        capabilities.chaos = front.as_ref().map(sandbox::chaos::ChaosFront::describe);
        capabilities.limits = Some(sandbox::target::limits(mesh.config()));
        let config = mesh.config();
        let tls = match &config.tls {
            Some(material) => Some(
                material
                    .client_config()
                    .map_err(|e| TargetError::Client(e.to_string()))?,
            ),
            None => None,
        };
        let urls: BTreeMap<Service, String> =
            Service::ALL.iter().map(|s| (*s, mesh.url(*s))).collect();
        // Rows and the cache are read from the stores themselves, not
        // through the TLS fronts the services reach them by.
        let (database_url, redis) = match front
            .as_ref()
            .and_then(sandbox::chaos::ChaosFront::operator_stores)
        {
            Some((url, redis)) => (url.to_string(), redis.clone()),
            None => (config.database_url.clone(), config.redis.clone()),
        };
        let http = http_client(tls.as_ref())?;
        Ok(Target {
            name: "sandbox (in-process)".into(),
            source: None,
            contracts: Arc::new(crate::contract::Contracts::new(http.clone(), urls.clone())),
            urls,
            auth: Auth::Secret(config.secret.clone().into()),
            slo: sandbox::target::slos(),
            capabilities,
            database_url: Some(database_url),
            redis: Some((redis, config.redis_prefix.clone())),
            http,
            tls,
            restart: Some(Restarter::Control(control.addr())),
            _front: front,
            control: Some(control),
            hosted: false,
            revocation_bound: Some(sandbox::sessions::REVOCATION_BOUND),
            mesh: Some(mesh),
        })
    }

    /// The running system the target file at `path` describes (not contacted:
    /// see [`Target::check_health`]).
    pub fn load(path: &Path) -> Result<Target, TargetError> {
        let names = sandbox::target::service_names();
        let file = TargetFile::load(path, &names)?;
        let auth_err = |message: String| TargetError::Auth {
            target: file.name.clone(),
            path: path.to_path_buf(),
            message,
        };
        let env = |var: &str, what: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| auth_err(format!("{what}: environment variable {var} is unset")))
        };
        let urls: BTreeMap<Service, String> = file
            .services
            .iter()
            .filter_map(|(n, e)| {
                Service::from_name(n).map(|s| (s, e.url.trim_end_matches('/').to_string()))
            })
            .collect();
        let tls = match &file.tls {
            Some(t) => {
                let full = file.resolve(path, &t.ca_file);
                let pem = std::fs::read(&full)
                    .map_err(|e| auth_err(format!("tls.ca_file {}: {e}", full.display())))?;
                Some(
                    sandbox::tls::client_config_from_pem(&pem)
                        .map_err(|e| auth_err(format!("tls.ca_file {}: {e}", full.display())))?,
                )
            }
            None => None,
        };
        if let Some((s, u)) = urls.iter().find(|(_, u)| u.starts_with("https://"))
            && tls.is_none()
        {
            return Err(auth_err(format!(
                "services.{s}.url {u} is https but the file has no [tls] ca_file to trust"
            )));
        }
        let auth = if let Some(command) = &file.auth.mint {
            Auth::Mint(Arc::new(CommandMinter {
                command: command.clone(),
            }))
        } else if let Some(var) = &file.auth.secret_env {
            Auth::Secret(env(var, "auth.secret_env")?.into_bytes().into())
        } else if let Some(f) = &file.auth.secret_file {
            let full = file.resolve(path, f);
            let secret = std::fs::read(&full)
                .map_err(|e| auth_err(format!("auth.secret_file {}: {e}", full.display())))?;
            Auth::Secret(secret.into())
        } else {
            let mut tokens = BTreeMap::new();
            for (name, entry) in &file.services {
                let Some(service) = Service::from_name(name) else {
                    continue;
                };
                let var = entry.token_env.as_ref().or(file.auth.token_env.as_ref());
                let Some(var) = var else {
                    return Err(auth_err(format!(
                        "services.{name}: no token_env, and no auth.token_env"
                    )));
                };
                tokens.insert(service, env(var, &format!("services.{name} token"))?.into());
            }
            Auth::Bearer {
                tokens,
                tenant: file.auth.tenant.clone().unwrap_or_default(),
            }
        };
        let database_url = match (&file.storage.database_url, &file.storage.database_url_env) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(var)) => Some(env(var, "storage.database_url_env")?),
            (None, None) => None,
        };
        let redis = match &file.storage.redis_url {
            None => None,
            Some(u) => Some((
                provision::RedisEndpoint::parse(u)
                    .map_err(|e| auth_err(format!("storage.redis_url: {e}")))?,
                file.storage.redis_prefix.clone().unwrap_or_default(),
            )),
        };
        let http = http_client(tls.as_ref())?;
        Ok(Target {
            name: file.name.clone(),
            source: Some(path.to_path_buf()),
            mesh: None,
            contracts: Arc::new(crate::contract::Contracts::new(http.clone(), urls.clone())),
            urls,
            auth,
            slo: file.slo.clone(),
            capabilities: file.capabilities.clone(),
            database_url,
            redis,
            http,
            tls,
            restart: file.capabilities.restart.clone().map(Restarter::Command),
            _front: None,
            control: None,
            hosted: false,
            revocation_bound: file.auth.revocation_bound_ms.map(Duration::from_millis),
        })
    }

    /// Asks every service's `/health` at once (3 s each). The first service
    /// (in the mesh's order) that does not answer, or answers neither 200
    /// nor JSON, is the error.
    pub async fn check_health(&self) -> Result<(), TargetError> {
        let probes = Service::ALL.map(|s| {
            let http = self.http.clone();
            let url = self.url(s).to_string();
            tokio::spawn(async move {
                let r = http
                    .get(format!("{url}/health"))
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await;
                match r {
                    Err(e) if e.is_timeout() => {
                        Err("did not answer /health within 3 s".to_string())
                    }
                    Err(e) => Err(format!("is unreachable: {}", crate::error_chain(&e))),
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let body: Value = resp.json().await.unwrap_or(Value::Null);
                        if status != 200 {
                            Err(format!("is unhealthy: /health answered {status} {body}"))
                        } else if body.get("status").is_none() {
                            Err(format!("answered /health without a status: {body}"))
                        } else {
                            Ok(())
                        }
                    }
                }
            })
        });
        if let Some(chaos) = &self.capabilities.chaos {
            self.check_chaos(chaos).await?;
        }
        for (service, probe) in Service::ALL.into_iter().zip(probes) {
            let outcome = probe
                .await
                .unwrap_or_else(|e| Err(format!("probe failed: {e}")));
            if let Err(problem) = outcome {
                return Err(TargetError::Unhealthy {
                    target: self.name.clone(),
                    path: self.source.clone().unwrap_or_default(),
                    service,
                    url: self.url(service).to_string(),
                    problem,
                });
            }
        }
        Ok(())
    }

    /// Its name (`name =` of the file; `sandbox (in-process)` by default).
    /// The declared Toxiproxy answers and holds every declared proxy.
    async fn check_chaos(&self, chaos: &deployment::Chaos) -> Result<(), TargetError> {
        let api = chaos.toxiproxy.trim_end_matches('/');
        let problem = |problem: String| TargetError::Chaos {
            target: self.name.clone(),
            path: self.source.clone().unwrap_or_default(),
            api: api.to_string(),
            problem,
        };
        let r = self
            .http
            .get(format!("{api}/proxies"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| problem(format!("is unreachable: {}", crate::error_chain(&e))))?;
        let proxies: Value = r
            .json()
            .await
            .map_err(|e| problem(format!("answered /proxies with no JSON: {e}")))?;
        for (service, name) in &chaos.proxies {
            if proxies.get(name).is_none() {
                return Err(problem(format!(
                    "has no proxy `{name}` (capabilities.chaos.proxies.{service})"
                )));
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Within how long a logout or a role change is in force on every
    /// service, when the target declares it.
    pub fn revocation_bound(&self) -> Option<Duration> {
        self.revocation_bound
    }

    /// The in-process mesh, when the target is one.
    pub fn mesh(&self) -> Option<&Arc<Mesh>> {
        self.mesh.as_ref()
    }

    /// The TLS client configuration for this target's services (their CA),
    /// for clients other than [`Target::http`] (the load generator).
    pub fn tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// The addresses of the hosts the target declares for load beyond
    /// loopback (`[capabilities.load] hosts`, resolved), for the load
    /// generator's allow-list.
    pub fn load_hosts(&self) -> Vec<std::net::IpAddr> {
        let Some(load) = &self.capabilities.load else {
            return Vec::new();
        };
        load.hosts
            .iter()
            .filter_map(|h| (h.as_str(), 0).to_socket_addrs().ok())
            .flatten()
            .map(|a| a.ip())
            .collect()
    }

    /// Base URL of `service` (`http://host:port`).
    pub fn url(&self, service: Service) -> &str {
        self.urls.get(&service).map_or("", String::as_str)
    }

    /// The socket address of `service` (resolved).
    pub fn addr(&self, service: Service) -> Result<SocketAddr, String> {
        let u = parse_base_url(self.url(service))?;
        (u.host.as_str(), u.port)
            .to_socket_addrs()
            .map_err(|e| format!("{service}: resolving {}: {e}", u.host))?
            .next()
            .ok_or_else(|| format!("{service}: {} has no address", u.host))
    }

    /// The shared HTTP client (pooled).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A client of `service` acting for `tenant` (with bearer auth: for the
    /// tenant the tokens were issued for).
    pub fn client(&self, service: Service, tenant: &str) -> MeshClient {
        let (credentials, tenant) = match &self.auth {
            Auth::Secret(s) => (Credentials::Secret(Arc::clone(s)), tenant.to_string()),
            Auth::Bearer { tokens, tenant } => (
                Credentials::Bearer(tokens.get(&service).cloned().unwrap_or_else(|| "".into())),
                tenant.clone(),
            ),
            Auth::Mint(minter) => (
                Credentials::Minted(Arc::clone(minter) as Arc<dyn sandbox::mesh::Minter>),
                tenant.to_string(),
            ),
        };
        MeshClient::new(
            self.http.clone(),
            self.url(service),
            service,
            tenant,
            credentials,
        )
        .checked_by(Arc::clone(&self.contracts) as Arc<dyn sandbox::mesh::AnswerCheck>)
    }

    /// The OpenAPI contract `service` serves (fetched once).
    pub async fn contract(
        &self,
        service: Service,
    ) -> Result<Arc<crate::contract::Contract>, String> {
        self.contracts.of(service).await
    }

    /// The SLO of `endpoint` (`"GET /health"`).
    pub fn slo(&self, endpoint: &str) -> Slo {
        self.slo.of(endpoint)
    }

    /// The database URL, when rows may be read.
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// The Redis address and key prefix, when the cache may be read.
    pub fn redis(&self) -> Option<(&provision::RedisEndpoint, &str)> {
        self.redis.as_ref().map(|(e, p)| (e, p.as_str()))
    }

    /// The limits it declares it enforces (`capabilities.limits`).
    pub fn limits(&self) -> Option<&deployment::Limits> {
        self.capabilities.limits.as_ref()
    }

    /// The load ceiling, when load is allowed.
    pub fn load_ceiling(&self) -> Option<&deployment::LoadCeiling> {
        self.capabilities.load.as_ref()
    }

    pub(crate) fn secret(&self) -> Option<&[u8]> {
        match &self.auth {
            Auth::Secret(s) => Some(s),
            Auth::Bearer { .. } | Auth::Mint(_) => None,
        }
    }

    /// Whether the target has `capability`.
    pub fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::SignTokens => self.secret().is_some(),
            Capability::Faults => self.capabilities.faults,
            Capability::Logs => self.capabilities.logs,
            Capability::Rows => self.database_url.is_some(),
            Capability::CacheKeys => self.redis.is_some(),
            Capability::Load => self.capabilities.load.is_some(),
            Capability::Chaos => self.capabilities.chaos.is_some(),
            Capability::StoreChaos => self
                .capabilities
                .chaos
                .as_ref()
                .is_some_and(|c| !c.stores.is_empty()),
            Capability::Restart => self.restart.is_some(),
            Capability::PrivateMesh => self.mesh.is_some() || self.hosted,
            Capability::Tls => {
                self.tls.is_some() && self.urls.values().all(|u| u.starts_with("https://"))
            }
            Capability::Revocation => self.revocation_bound.is_some(),
        }
    }

    /// `Ok` when the target has `capability`, else the skip that says why
    /// ("target `staging` does not allow fault injection (capabilities.faults)").
    pub fn require(&self, capability: Capability) -> Result<(), FixtureError> {
        if self.has(capability) {
            return Ok(());
        }
        let (what, key) = capability.describe();
        Err(FixtureError::skip(format!(
            "target `{}` does not allow {what} ({key})",
            self.name
        )))
    }

    /// The Toxiproxy-compatible API and the proxies it controls (the target
    /// file's `capabilities.chaos`; in process, the mesh's chaos front).
    pub fn chaos(&self) -> Result<&deployment::Chaos, String> {
        self.capabilities
            .chaos
            .as_ref()
            .ok_or_else(|| format!("target `{}` declares no capabilities.chaos", self.name))
    }

    /// How a service is restarted, if it can be.
    pub fn restarter(&self) -> Option<&Restarter> {
        self.restart.as_ref()
    }

    /// `GET url` with the target's client, its body as JSON; errors name
    /// the URL.
    pub async fn get_json(&self, url: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", crate::error_chain(&e)))?;
        r.json().await.map_err(|e| format!("GET {url}: {e}"))
    }

    /// `GET /metrics` of `service`, as text.
    pub async fn metrics_text(&self, service: Service) -> Result<String, String> {
        let r = self
            .http
            .get(format!("{}/metrics", self.url(service)))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("{service} /metrics: {}", crate::error_chain(&e)))?;
        r.text()
            .await
            .map_err(|e| format!("{service} /metrics: {e}"))
    }

    /// The sum of the samples of metric `name` on `service` whose labels
    /// include every `labels` pair (`[("target", "billing-engine")]`).
    pub async fn metric(
        &self,
        service: Service,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<f64, String> {
        let text = self.metrics_text(service).await?;
        Ok(sum_samples(&text, name, labels))
    }
}

/// Sums the samples of `name` whose labels include every pair of `labels`.
pub fn sum_samples(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    // The Prometheus text format, read by a kept parser (escapes, spaces in
    // label values, timestamps, NaN), not split by hand.
    let Ok(scrape) = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
    else {
        return 0.0;
    };
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .sum()
}

impl Fixture for Target {
    const SCOPE: Scope = Scope::Session;

    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        match cx.target_file().map(Path::to_path_buf) {
            None => {
                let (mesh, front) = sandbox::fixture::start_fronted(cx).await?;
                Target::in_process(Arc::new(mesh), Some(front))
                    .await
                    .map_err(FixtureError::new)
            }
            Some(path) => Target::load(&path).map_err(FixtureError::new),
        }
    }
}

/// What the in-process sandbox allows (stop/restart only with the `Mesh`
/// object at hand).
fn local_capabilities(stop_restart: bool) -> Capabilities {
    Capabilities {
        faults: true,
        logs: true,
        stop_restart,
        load: Some(deployment::LoadCeiling {
            max_connections: 512,
            max_requests: 20_000,
            max_rps: None,
            hosts: Vec::new(),
        }),
        chaos: None,
        restart: None,
        limits: None,
    }
}

/// Isolated test processes share the run's target (see `harness::host`): a
/// target file is loaded again; the in-process mesh of the host is reached
/// over its URLs with its secret, with the in-process capabilities (chaos
/// through the host's chaos API, restarts through its control API) but
/// stop/restart of the `Mesh` object itself.
impl harness::host::Hostable for Target {
    fn handle(&self) -> Result<Value, FixtureError> {
        if let Some(path) = &self.source {
            return Ok(serde_json::json!({ "file": path }));
        }
        let secret = self
            .secret()
            .ok_or_else(|| FixtureError::new("an in-process target without a secret"))?;
        Ok(serde_json::json!({
            "name": self.name,
            "urls": self.urls.iter().map(|(s, u)| (s.name().to_string(), Value::from(u.as_str()))).collect::<serde_json::Map<_, _>>(),
            "secret_hex": secret.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "database_url": self.database_url,
            // The URL with its password: the handle is a private file.
            "redis": self.redis.as_ref().map(|(e, p)| serde_json::json!({"url": e.url(), "prefix": p})),
            "ca_pem": self.mesh.as_ref().and_then(|m| m.config().tls.as_ref()).map(|t| t.ca_pem().to_string()),
            "chaos": self.capabilities.chaos,
            "limits": self.capabilities.limits,
            "control": self.control.as_ref().map(|c| c.addr().to_string()),
        }))
    }

    async fn attach(handle: Value, _cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let bad = |what: &str| FixtureError::new(format!("hosted Target: {what}"));
        if let Some(file) = handle["file"].as_str() {
            return Target::load(Path::new(file)).map_err(FixtureError::new);
        }
        let urls: BTreeMap<Service, String> = handle["urls"]
            .as_object()
            .ok_or_else(|| bad("no urls"))?
            .iter()
            .filter_map(|(s, u)| Some((Service::from_name(s)?, u.as_str()?.to_string())))
            .collect();
        let hex = handle["secret_hex"]
            .as_str()
            .ok_or_else(|| bad("no secret"))?;
        let secret: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&format!("secret: {e}")))?;
        let redis = match handle["redis"].as_object() {
            None => None,
            Some(r) => Some((
                r.get("url")
                    .and_then(Value::as_str)
                    .and_then(|u| provision::RedisEndpoint::parse(u).ok())
                    .ok_or_else(|| bad("redis.url"))?,
                r.get("prefix")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )),
        };
        let tls = match handle["ca_pem"].as_str() {
            Some(pem) => Some(
                sandbox::tls::client_config_from_pem(pem.as_bytes())
                    .map_err(|e| bad(&format!("ca_pem: {e}")))?,
            ),
            None => None,
        };
        let http = http_client(tls.as_ref()).map_err(FixtureError::new)?;
        Ok(Target {
            contracts: Arc::new(crate::contract::Contracts::new(http.clone(), urls.clone())),
            name: handle["name"]
                .as_str()
                .unwrap_or("sandbox (hosted)")
                .to_string(),
            source: None,
            mesh: None,
            urls,
            auth: Auth::Secret(secret.into()),
            slo: sandbox::target::slos(),
            capabilities: Capabilities {
                chaos: serde_json::from_value(handle["chaos"].clone()).ok(),
                limits: serde_json::from_value(handle["limits"].clone()).unwrap_or_default(),
                ..local_capabilities(false)
            },
            database_url: handle["database_url"].as_str().map(str::to_string),
            redis,
            http,
            tls,
            restart: handle["control"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .map(Restarter::Control),
            _front: None,
            control: None,
            hosted: true,
            revocation_bound: Some(sandbox::sessions::REVOCATION_BOUND),
        })
    }
}

harness::hostable!(Target);

/// The preflight: with a target file, load it and ask every service's
/// `/health`; without one, nothing (the in-process mesh starts with the
/// first test that needs it).
pub async fn preflight(cx: PreflightCx) -> Result<String, String> {
    let Some(path) = cx.target_file() else {
        return Ok(String::new());
    };
    let target = Target::load(path).map_err(|e| e.to_string())?;
    target.check_health().await.map_err(|e| e.to_string())?;
    let caps: Vec<&str> = [
        (Capability::SignTokens, "sign tokens"),
        (Capability::Faults, "faults"),
        (Capability::Logs, "logs"),
        (Capability::Rows, "rows"),
        (Capability::CacheKeys, "cache"),
        (Capability::Load, "load"),
        (Capability::Chaos, "chaos"),
        (Capability::StoreChaos, "store chaos"),
        (Capability::Restart, "restart"),
        (Capability::Tls, "tls"),
        (Capability::Revocation, "revocation"),
    ]
    .into_iter()
    .filter(|(c, _)| target.has(*c))
    .map(|(_, n)| n)
    .collect();
    Ok(format!(
        "target `{}` ({}): 6 services healthy; capabilities: {}",
        target.name(),
        path.display(),
        if caps.is_empty() {
            "none".to_string()
        } else {
            caps.join(", ")
        }
    ))
}

harness::preflight!("target", preflight);
