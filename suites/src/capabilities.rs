//! What a test may do to the target, as fixtures: asking for one is
//! declaring the need, and a target without it skips the test with the
//! reason (see [`Capability`]). Each holds the run's [`Target`].

use std::sync::Arc;
use std::time::Duration;

use harness::{Fixture, FixtureCx, FixtureError};
use provision::redis::MultiplexedConnection;
use provision::{Redis, TestDb};
use sandbox::{FaultPlan, Mesh, MeshConfig, Role, Service};
use serde_json::Value;

use crate::target::{Capability, Target};

async fn target_with(cx: &mut FixtureCx, need: Capability) -> Result<Arc<Target>, FixtureError> {
    let target = cx.get_shared::<Target>().await?;
    target.require(need)?;
    Ok(target)
}

/// Tokens for any tenant, signed with the target's secret.
pub struct SignTokens {
    target: Arc<Target>,
}

impl SignTokens {
    /// An admin's token for `service` acting for `tenant`, valid for `ttl`.
    pub fn token(&self, service: Service, tenant: &str, ttl: Duration) -> String {
        self.as_role(Role::Admin, service, tenant, ttl)
    }

    /// A person's token with `role`, for `service`, acting for `tenant`.
    pub fn as_role(&self, role: Role, service: Service, tenant: &str, ttl: Duration) -> String {
        sandbox::token::sign_user(
            self.secret(),
            "test-client",
            role,
            service.name(),
            tenant,
            ttl,
        )
    }

    /// Service `from`'s token for a call to `to`, acting for `tenant`.
    pub fn from_service(&self, from: Service, to: Service, tenant: &str, ttl: Duration) -> String {
        sandbox::token::sign(self.secret(), from.name(), to.name(), tenant, ttl)
    }

    /// The signing secret (to forge expired tokens, say).
    pub fn secret(&self) -> &[u8] {
        self.target.secret().unwrap_or_default()
    }
}

impl Fixture for SignTokens {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        Ok(SignTokens {
            target: target_with(cx, Capability::SignTokens).await?,
        })
    }
}

/// `/admin/faults` on every service.
pub struct Faults {
    target: Arc<Target>,
}

impl Faults {
    /// Replaces `service`'s fault plan for the plan's tenant. On a shared
    /// target, fault your own tenant (`tenant: Some(..)`) so that other
    /// tests are not disturbed.
    pub async fn inject(&self, service: Service, plan: &FaultPlan) -> Result<(), String> {
        let tenant = plan.tenant.as_deref().unwrap_or("admin");
        let body = serde_json::to_value(plan).map_err(|e| e.to_string())?;
        let r = self
            .target
            .client(service, tenant)
            .post("/admin/faults", &body)
            .await
            .map_err(|e| format!("{service} /admin/faults: {e}"))?;
        match r.status {
            200 => Ok(()),
            s => Err(format!("{service} /admin/faults answered {s}: {}", r.body)),
        }
    }

    /// Clears `service`'s faults for `tenant` (other tenants' plans stay).
    pub async fn clear(&self, service: Service, tenant: &str) -> Result<(), String> {
        let r = self
            .target
            .client(service, tenant)
            .request(
                reqwest::Method::DELETE,
                &format!("/admin/faults?tenant={tenant}"),
                None,
                None,
            )
            .await
            .map_err(|e| format!("{service} /admin/faults: {e}"))?;
        match r.status {
            200 | 204 => Ok(()),
            s => Err(format!(
                "{service} DELETE /admin/faults answered {s}: {}",
                r.body
            )),
        }
    }
}

impl Fixture for Faults {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        Ok(Faults {
            target: target_with(cx, Capability::Faults).await?,
        })
    }
}

/// Toxics on the proxies in front of the target's services, through a
/// Toxiproxy-compatible API (Toxiproxy's own JSON): the target file's
/// `capabilities.chaos`, or in process a chaos front started on first use.
/// A toxic slows or breaks every call to a service, not one tenant's:
/// tests that use it are `exclusive`. Toxics still present when the test
/// ends are removed.
pub struct Toxics {
    target: Arc<Target>,
    api: String,
    proxies: std::collections::BTreeMap<Service, String>,
    added: std::sync::Mutex<Vec<(String, String)>>,
}

impl Toxics {
    fn proxy(&self, service: Service) -> Result<&str, String> {
        self.proxies
            .get(&service)
            .map(String::as_str)
            .ok_or_else(|| {
                format!(
                    "target `{}`: capabilities.chaos.proxies names no proxy for {service}",
                    self.target.name()
                )
            })
    }

    /// Adds `toxic` (`{"name", "type", "stream", "toxicity", "attributes"}`)
    /// to the proxy in front of `service`; returns its name.
    pub async fn add(&self, service: Service, toxic: Value) -> Result<String, String> {
        let proxy = self.proxy(service)?;
        let url = format!("{}/proxies/{proxy}/toxics", self.api);
        let r = self
            .target
            .http()
            .post(&url)
            .json(&toxic)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status != 200 {
            return Err(format!("POST {url} answered {status}: {body}"));
        }
        let name = body["name"].as_str().unwrap_or_default().to_string();
        self.added
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((proxy.to_string(), name.clone()));
        Ok(name)
    }

    /// The toxics on the proxy in front of `service`.
    pub async fn list(&self, service: Service) -> Result<Vec<Value>, String> {
        let url = format!("{}/proxies/{}/toxics", self.api, self.proxy(service)?);
        let body = self.target.get_json(&url).await?;
        Ok(body.as_array().cloned().unwrap_or_default())
    }

    /// Removes toxic `name` from the proxy in front of `service`.
    pub async fn remove(&self, service: Service, name: &str) -> Result<(), String> {
        let proxy = self.proxy(service)?.to_string();
        let url = format!("{}/proxies/{proxy}/toxics/{name}", self.api);
        let r = self
            .target
            .http()
            .delete(&url)
            .send()
            .await
            .map_err(|e| format!("DELETE {url}: {e}"))?;
        match r.status().as_u16() {
            204 | 200 => {
                self.added
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .retain(|(p, t)| !(*p == proxy && t == name));
                Ok(())
            }
            s => Err(format!("DELETE {url} answered {s}")),
        }
    }
}

impl Drop for Toxics {
    /// Removes what the test left, synchronously (a plain HTTP/1.1
    /// `DELETE` per toxic, 2 s each at most): the next test must not meet
    /// this one's toxics.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let left = std::mem::take(
            &mut *self
                .added
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let Ok(base) = deployment::parse_base_url(&self.api) else {
            return;
        };
        for (proxy, toxic) in left {
            let Ok(mut addrs) =
                std::net::ToSocketAddrs::to_socket_addrs(&(base.host.as_str(), base.port))
            else {
                continue;
            };
            let Some(addr) = addrs.next() else { continue };
            let timeout = Duration::from_secs(2);
            let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
                continue;
            };
            let _ = stream.set_read_timeout(Some(timeout));
            let _ = stream.set_write_timeout(Some(timeout));
            let request = format!(
                "DELETE /proxies/{proxy}/toxics/{toxic} HTTP/1.1\r\nhost: {}:{}\r\nconnection: close\r\n\r\n",
                base.host, base.port
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink);
            }
        }
    }
}

impl Fixture for Toxics {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = target_with(cx, Capability::Chaos).await?;
        let (api, proxies) = target.chaos().await.map_err(FixtureError::new)?;
        Ok(Toxics {
            target,
            api,
            proxies,
            added: std::sync::Mutex::new(Vec::new()),
        })
    }
}

/// The API's breaker settings as its `GET /config` states them, for tests
/// that trip a breaker and watch it recover in real time. Needs fault
/// injection; skips the test when the breaker waits open longer than
/// [`Breakers::MAX_WAIT`] (`sandbox up --test-mode` waits 2 s).
pub struct Breakers {
    /// Calls in the sliding window.
    pub window_size: u64,
    /// Calls before a rate is judged.
    pub minimum_calls: u64,
    /// Opens at this failure rate, in percent.
    pub failure_rate_threshold: f64,
    /// How long it stays open before a probe.
    pub open_wait: Duration,
    /// Successful probes that close it.
    pub half_open_calls: u64,
}

impl Breakers {
    /// The longest wait a test sits through.
    pub const MAX_WAIT: Duration = Duration::from_secs(10);
}

impl Fixture for Breakers {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = target_with(cx, Capability::Faults).await?;
        let api = target.client(Service::HealthcareApi, "config-reader");
        let r = api
            .get("/config")
            .await
            .map_err(|e| FixtureError::new(format!("healthcare-api GET /config: {e}")))?;
        if r.status != 200 {
            return Err(FixtureError::new(format!(
                "healthcare-api GET /config answered {}: {}",
                r.status, r.body
            )));
        }
        let b = &r.body["client"]["breaker"];
        let num = |k: &str| {
            b[k].as_f64().ok_or_else(|| {
                FixtureError::new(format!(
                    "healthcare-api /config: no client.breaker.{k} in {b}"
                ))
            })
        };
        let open_wait = Duration::from_millis(num("open_wait_ms")? as u64);
        if open_wait > Self::MAX_WAIT {
            return Err(FixtureError::skip(format!(
                "target `{}`: the API's breakers wait {open_wait:?} open, too long to watch in real time (at most {:?}; `sandbox up --test-mode` waits 2 s)",
                target.name(),
                Self::MAX_WAIT
            )));
        }
        Ok(Breakers {
            window_size: num("window_size")? as u64,
            minimum_calls: num("minimum_calls")? as u64,
            failure_rate_threshold: num("failure_rate_threshold")?,
            open_wait,
            half_open_calls: num("half_open_calls")? as u64,
        })
    }
}

/// The services' log lines (redacted by the services before they are kept).
pub struct Logs {
    target: Arc<Target>,
}

impl Logs {
    /// Every line so far.
    pub async fn lines(&self) -> Result<Vec<String>, String> {
        if let Some(mesh) = self.target.mesh() {
            return Ok(mesh.logs());
        }
        let r = self
            .target
            .client(Service::HealthcareApi, "admin")
            .get("/admin/logs")
            .await
            .map_err(|e| format!("GET /admin/logs: {e}"))?;
        if r.status != 200 {
            return Err(format!("GET /admin/logs answered {}: {}", r.status, r.body));
        }
        let body = r.body;
        Ok(body["lines"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Fixture for Logs {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        Ok(Logs {
            target: target_with(cx, Capability::Logs).await?,
        })
    }
}

/// A target whose services all speak HTTPS (the fixture skips, saying so,
/// on a plain-HTTP target).
pub struct TlsTarget {
    /// The target.
    pub target: Arc<Target>,
}

impl Fixture for TlsTarget {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        Ok(TlsTarget {
            target: target_with(cx, Capability::Tls).await?,
        })
    }
}

/// A connection to the services' database, to check rows.
pub struct Rows {
    client: tokio_postgres::Client,
}

impl std::ops::Deref for Rows {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &tokio_postgres::Client {
        &self.client
    }
}

impl Rows {
    /// The one value `sql` selects (the row must exist).
    pub async fn one<T: tokio_postgres::types::FromSqlOwned>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<T, String> {
        self.client
            .query_one(sql, params)
            .await
            .map(|row| row.get(0))
            .map_err(|e| format!("{sql}: {e}"))
    }
}

impl Fixture for Rows {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = target_with(cx, Capability::Rows).await?;
        let url = target.database_url().unwrap_or_default().to_string();
        let client = sandbox::store::connect(&url)
            .await
            .map_err(|e| FixtureError::new(format!("connecting to the target's database: {e}")))?;
        Ok(Rows { client })
    }
}

/// A connection to the services' Redis, and their key prefix.
pub struct CacheKeys {
    conn: MultiplexedConnection,
    prefix: String,
}

impl CacheKeys {
    /// The full key of `key` (with the services' prefix).
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The string value of full key `key` (`None`: no such key, or not a
    /// string).
    pub async fn get(&mut self, key: &str) -> Result<Option<String>, String> {
        let value: redis::RedisResult<Option<Vec<u8>>> =
            redis::cmd("GET").arg(key).query_async(&mut self.conn).await;
        match value {
            Ok(v) => Ok(v.map(|b| String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == redis::ErrorKind::TypeError => Ok(None),
            Err(e) => Err(format!("redis GET {key}: {e}")),
        }
    }

    /// The time to live of full key `key` in milliseconds (`PTTL`: -1 for
    /// none, -2 for no such key).
    pub async fn pttl_ms(&mut self, key: &str) -> Result<i64, String> {
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| format!("redis PTTL {key}: {e}"))
    }

    /// Every key under the services' prefix.
    pub async fn keys(&mut self) -> Result<Vec<String>, String> {
        let pattern = format!("{}*", self.prefix);
        provision::redis::scan_keys(&mut self.conn, &pattern)
            .await
            .map_err(|e| format!("redis SCAN {pattern}: {e}"))
    }
}

impl Fixture for CacheKeys {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = target_with(cx, Capability::CacheKeys).await?;
        let Some((addr, prefix)) = target.redis() else {
            return Err(FixtureError::new("no Redis"));
        };
        let conn = provision::redis::connect(addr).await.map_err(|e| {
            FixtureError::new(format!("connecting to the target's Redis {addr}: {e}"))
        })?;
        Ok(CacheKeys {
            conn,
            prefix: prefix.to_string(),
        })
    }
}

/// How much load a test may put on the target.
pub struct LoadBudget {
    /// Connections at once.
    pub max_connections: u32,
    /// Requests in one test.
    pub max_requests: u64,
}

impl LoadBudget {
    /// `connections` and `requests`, each capped by the budget.
    pub fn cap(&self, connections: u32, requests: u64) -> (u32, u64) {
        (
            connections.min(self.max_connections),
            requests.min(self.max_requests),
        )
    }
}

impl Fixture for LoadBudget {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = target_with(cx, Capability::Load).await?;
        let ceiling = target
            .load_ceiling()
            .ok_or_else(|| FixtureError::new("no load ceiling"))?;
        Ok(LoadBudget {
            max_connections: ceiling.max_connections,
            max_requests: ceiling.max_requests,
        })
    }
}

/// A mesh of the test's own (in-process only): for tests that break it
/// (an injected clock, a tuned client, stopped services, a chaos proxy in a
/// route). It runs on a fresh database and a key prefix of its own.
///
/// At most [`PRIVATE_MESHES`] exist at once (a test asking for one waits
/// for its turn): six services' connection pools each, and PostgreSQL's
/// connection limit is shared by the whole run.
pub struct PrivateMesh {
    db: TestDb,
    redis: Arc<Redis>,
    seed: u64,
    _turn: tokio::sync::OwnedSemaphorePermit,
}

/// Private meshes alive at once in one run.
pub const PRIVATE_MESHES: usize = 6;

static TURNS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(PRIVATE_MESHES)));

impl PrivateMesh {
    /// The database the mesh will run on (to put a proxy in front of it).
    pub fn database_url(&self) -> &str {
        &self.db.url
    }

    /// The Redis server the mesh will use (to put a proxy in front of it:
    /// `config.redis = config.redis.via(proxy)` keeps its credentials).
    pub fn redis_addr(&self) -> std::net::SocketAddr {
        self.redis.addr
    }

    /// Starts the mesh, with `tune` applied to its configuration.
    pub async fn start(&self, tune: impl FnOnce(&mut MeshConfig)) -> Result<Mesh, String> {
        let mut config =
            MeshConfig::for_tests(&self.db.url, self.redis.endpoint.clone(), self.seed);
        tune(&mut config);
        Mesh::start(config)
            .await
            .map_err(|e| format!("starting a private mesh: {e}"))
    }
}

impl Fixture for PrivateMesh {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = cx.get_shared::<Target>().await?;
        target.require(Capability::PrivateMesh)?;
        let turn = Arc::clone(&TURNS)
            .acquire_owned()
            .await
            .map_err(|_| FixtureError::new("private meshes: the run is ending"))?;
        Ok(PrivateMesh {
            _turn: turn,
            db: cx.get::<TestDb>().await?,
            redis: cx.get_shared::<Redis>().await?,
            seed: cx.run_seed(),
        })
    }
}
