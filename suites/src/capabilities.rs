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

/// `/admin/faults` on every service. The plans a test injected are
/// cleared in its teardown, also when it fails or times out.
pub struct Faults {
    target: Arc<Target>,
    injected: Arc<std::sync::Mutex<Vec<(Service, String)>>>,
}

impl Faults {
    /// Replaces `service`'s fault plan for the plan's tenant. On a shared
    /// target, fault your own tenant (`tenant: Some(..)`) so that other
    /// tests are not disturbed.
    pub async fn inject(&self, service: Service, plan: &FaultPlan) -> Result<(), String> {
        let tenant = plan.tenant.as_deref().unwrap_or("admin");
        self.injected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((service, tenant.to_string()));
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
        clear_faults(&self.target, service, tenant).await
    }
}

async fn clear_faults(target: &Target, service: Service, tenant: &str) -> Result<(), String> {
    {
        let r = target
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
        let target = target_with(cx, Capability::Faults).await?;
        let injected: Arc<std::sync::Mutex<Vec<(Service, String)>>> = Arc::default();
        let (left, on) = (Arc::clone(&injected), Arc::clone(&target));
        cx.on_teardown(async move {
            let mut left = take(&left);
            left.sort();
            left.dedup();
            let tripped = !left.is_empty();
            for (service, tenant) in left {
                let _ = clear_faults(&on, service, &tenant).await;
            }
            if tripped {
                reset_breakers(&on).await;
            }
        });
        Ok(Faults { target, injected })
    }
}

/// A link a Toxiproxy proxy controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The healthcare API's (and the mesh's) calls to this service.
    To(Service),
    /// This service's connections to PostgreSQL.
    Postgres(Service),
    /// This service's connections to Redis.
    Redis(Service),
}

impl std::fmt::Display for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Edge::To(s) => write!(f, "calls to {s}"),
            Edge::Postgres(s) => write!(f, "{s} → PostgreSQL"),
            Edge::Redis(s) => write!(f, "{s} → Redis"),
        }
    }
}

/// Toxiproxy-compatible API (Toxiproxy's own JSON): the target file's
/// `capabilities.chaos` (in process, the mesh's chaos front). A toxic
/// slows or breaks every call over its link, not one tenant's: tests that
/// use it are `exclusive`. Toxics still present and proxies still disabled
/// when the test ends (passed, failed or timed out) are removed and
/// enabled again.
pub struct Toxics {
    target: Arc<Target>,
    chaos: deployment::Chaos,
    added: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    disabled: Arc<std::sync::Mutex<Vec<String>>>,
    /// Proxies relaying elsewhere for the test, with their own upstream.
    rerouted: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Toxics {
    fn api(&self) -> &str {
        self.chaos.toxiproxy.trim_end_matches('/')
    }

    /// The proxy on `edge`, or why there is none.
    pub fn proxy(&self, edge: Edge) -> Result<&str, String> {
        let (found, key) = match edge {
            Edge::To(s) => (self.chaos.proxies.get(s.name()), format!("proxies.{s}")),
            Edge::Postgres(s) => (
                self.chaos
                    .stores
                    .get(s.name())
                    .and_then(|p| p.postgres.as_ref()),
                format!("stores.{s}.postgres"),
            ),
            Edge::Redis(s) => (
                self.chaos
                    .stores
                    .get(s.name())
                    .and_then(|p| p.redis.as_ref()),
                format!("stores.{s}.redis"),
            ),
        };
        found.map(String::as_str).ok_or_else(|| {
            format!(
                "target `{}`: capabilities.chaos.{key} names no proxy for {edge}",
                self.target.name()
            )
        })
    }

    /// Whether the target has a proxy on `edge`.
    pub fn controls(&self, edge: Edge) -> bool {
        self.proxy(edge).is_ok()
    }

    /// Adds `toxic` (`{"name", "type", "stream", "toxicity", "attributes"}`)
    /// to the proxy in front of `service`; returns its name.
    pub async fn add(&self, service: Service, toxic: Value) -> Result<String, String> {
        self.add_on(Edge::To(service), toxic).await
    }

    /// Adds `toxic` to the proxy on `edge`; returns its name.
    pub async fn add_on(&self, edge: Edge, toxic: Value) -> Result<String, String> {
        let proxy = self.proxy(edge)?;
        let url = format!("{}/proxies/{proxy}/toxics", self.api());
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
        let url = format!(
            "{}/proxies/{}/toxics",
            self.api(),
            self.proxy(Edge::To(service))?
        );
        let body = self.target.get_json(&url).await?;
        Ok(body.as_array().cloned().unwrap_or_default())
    }

    /// Removes toxic `name` from the proxy in front of `service`.
    pub async fn remove(&self, service: Service, name: &str) -> Result<(), String> {
        self.remove_from(Edge::To(service), name).await
    }

    /// Removes toxic `name` from the proxy on `edge`.
    pub async fn remove_from(&self, edge: Edge, name: &str) -> Result<(), String> {
        let proxy = self.proxy(edge)?.to_string();
        let url = format!("{}/proxies/{proxy}/toxics/{name}", self.api());
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

    /// Takes the link down: the proxy on `edge` stops listening and drops
    /// its connections (the peer is refused, as if it were down).
    pub async fn disable(&self, edge: Edge) -> Result<(), String> {
        let proxy = self.proxy(edge)?.to_string();
        self.set_enabled(&proxy, false).await?;
        self.disabled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(proxy);
        Ok(())
    }

    /// Brings the link on `edge` back.
    pub async fn enable(&self, edge: Edge) -> Result<(), String> {
        let proxy = self.proxy(edge)?.to_string();
        self.set_enabled(&proxy, true).await?;
        self.disabled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|p| *p != proxy);
        Ok(())
    }

    async fn set_enabled(&self, proxy: &str, enabled: bool) -> Result<(), String> {
        set_proxy_enabled(&self.target, self.api(), proxy, enabled).await
    }

    /// Where the proxy on `edge` relays to (its `upstream`, `host:port`).
    pub async fn upstream(&self, edge: Edge) -> Result<String, String> {
        let url = format!("{}/proxies/{}", self.api(), self.proxy(edge)?);
        let body = self.target.get_json(&url).await?;
        body["upstream"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("GET {url}: no upstream in {body}"))
    }

    /// Relays the proxy on `edge` to `upstream` instead (a tap before the
    /// real upstream, say): Toxiproxy restarts the proxy on its address,
    /// dropping its connections, so the service connects again through
    /// the new route. Put back after the test, whatever happened.
    pub async fn reroute(&self, edge: Edge, upstream: &str) -> Result<(), String> {
        let proxy = self.proxy(edge)?.to_string();
        let own = self.upstream(edge).await?;
        set_proxy_upstream(&self.target, self.api(), &proxy, upstream).await?;
        let mut rerouted = self
            .rerouted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !rerouted.iter().any(|(p, _)| *p == proxy) {
            rerouted.push((proxy, own));
        }
        Ok(())
    }
}

impl Toxics {
    /// Relays the proxy on `edge` to its own upstream again (after
    /// [`Toxics::reroute`]; its connections drop once more).
    pub async fn restore_route(&self, edge: Edge) -> Result<(), String> {
        let proxy = self.proxy(edge)?.to_string();
        let own = {
            let mut rerouted = self
                .rerouted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(at) = rerouted.iter().position(|(p, _)| *p == proxy) else {
                return Ok(());
            };
            rerouted.remove(at).1
        };
        set_proxy_upstream(&self.target, self.api(), &proxy, &own).await
    }
}

/// Points proxy `proxy` of the Toxiproxy API at `api` to `upstream`.
async fn set_proxy_upstream(
    target: &Target,
    api: &str,
    proxy: &str,
    upstream: &str,
) -> Result<(), String> {
    update_proxy(
        target,
        api,
        proxy,
        serde_json::json!({ "upstream": upstream }),
    )
    .await
}

/// Enables or disables proxy `proxy` of the Toxiproxy API at `api`.
async fn set_proxy_enabled(
    target: &Target,
    api: &str,
    proxy: &str,
    enabled: bool,
) -> Result<(), String> {
    update_proxy(
        target,
        api,
        proxy,
        serde_json::json!({ "enabled": enabled }),
    )
    .await
}

/// `POST {api}/proxies/{proxy}` with `change` (Toxiproxy's proxy update),
/// expecting `200`.
async fn update_proxy(
    target: &Target,
    api: &str,
    proxy: &str,
    change: serde_json::Value,
) -> Result<(), String> {
    let url = format!("{api}/proxies/{proxy}");
    let r = target
        .http()
        .post(&url)
        .json(&change)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = r.status().as_u16();
    if status != 200 {
        let body = r.text().await.unwrap_or_default();
        return Err(format!("POST {url} answered {status}: {body}"));
    }
    Ok(())
}

impl Fixture for Toxics {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = target_with(cx, Capability::Chaos).await?;
        let chaos = target.chaos().map_err(FixtureError::new)?.clone();
        let toxics = Toxics {
            target,
            chaos,
            added: Arc::default(),
            disabled: Arc::default(),
            rerouted: Arc::default(),
        };
        // Undone after the test, whatever happened (asynchronously: a
        // blocking request from `Drop` would stall the runtime that serves
        // an in-process chaos API, and be lost).
        let (target, added, disabled, rerouted) = (
            Arc::clone(&toxics.target),
            Arc::clone(&toxics.added),
            Arc::clone(&toxics.disabled),
            Arc::clone(&toxics.rerouted),
        );
        let api = toxics.api().to_string();
        cx.on_teardown(async move {
            for (proxy, toxic) in take(&added) {
                let _ = target
                    .http()
                    .delete(format!("{api}/proxies/{proxy}/toxics/{toxic}"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
            }
            for proxy in take(&disabled) {
                let _ = set_proxy_enabled(&target, &api, &proxy, true).await;
            }
            for (proxy, upstream) in take(&rerouted) {
                let _ = set_proxy_upstream(&target, &api, &proxy, &upstream).await;
            }
            reset_breakers(&target).await;
        });
        Ok(toxics)
    }
}

/// What `m` holds, leaving it empty.
fn take<T>(m: &std::sync::Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Closes every service's breakers after a test that may have tripped
/// them, where the target lets us (test mode's `/admin/breakers/reset`;
/// on the compliance monitor it closes the log pipeline's too): the next
/// test meets the services as they were. Elsewhere the breakers recover on
/// their own after their wait.
pub async fn reset_breakers(target: &Target) {
    if !target.has(Capability::Faults) {
        return;
    }
    let reset = |service| async move {
        let _ = target
            .client(service, "admin")
            .post("/admin/breakers/reset", &serde_json::json!({}))
            .await;
    };
    let [a, b, c, d, e, f] = Service::ALL.map(reset);
    tokio::join!(a, b, c, d, e, f);
}

/// [`Toxics`] on a target whose chaos API also sits between the services
/// and their stores (`capabilities.chaos.stores`); skips the test
/// otherwise.
pub struct StoreToxics(pub Toxics);

impl std::ops::Deref for StoreToxics {
    type Target = Toxics;
    fn deref(&self) -> &Toxics {
        &self.0
    }
}

impl Fixture for StoreToxics {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        target_with(cx, Capability::StoreChaos).await?;
        Ok(StoreToxics(Toxics::setup(cx).await?))
    }
}

/// Restarts a service of the target: the target file's
/// `capabilities.restart` command (run with `sh -c`, bounded by its
/// timeout, its output kept in the test's output), or the sandbox's
/// control API; then waits for the service's `/health` to answer.
pub struct Restarts {
    target: Arc<Target>,
    how: crate::target::Restarter,
}

impl Restarts {
    /// Restarts `service` and waits until it answers `/health` again
    /// (whatever its status: a dependency may still be down). Returns what
    /// the command printed.
    pub async fn restart(&self, service: Service) -> Result<String, String> {
        let (output, bound) = match &self.how {
            crate::target::Restarter::Control(addr) => (
                sandbox::control::request_restart(*addr, service.name()).await?,
                Duration::from_secs(30),
            ),
            crate::target::Restarter::Command(restart) => {
                let command = restart.command_for(service.name());
                let run = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(&command)
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .output();
                let out = tokio::time::timeout(restart.timeout(), run)
                    .await
                    .map_err(|_| {
                        format!(
                            "restart command `{command}` did not end within {:?} (capabilities.restart.timeout_s)",
                            restart.timeout()
                        )
                    })?
                    .map_err(|e| format!("restart command `{command}`: {e}"))?;
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                if !out.status.success() {
                    return Err(format!(
                        "restart command `{command}` failed ({}): {}",
                        out.status,
                        text.trim()
                    ));
                }
                (text, restart.timeout())
            }
        };
        let deadline = tokio::time::Instant::now() + bound;
        let url = format!("{}/health", self.target.url(service));
        loop {
            let answered = self
                .target
                .http()
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok();
            if answered {
                return Ok(output);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{service} did not answer {url} within {bound:?} of its restart"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Fixture for Restarts {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = target_with(cx, Capability::Restart).await?;
        let how = target
            .restarter()
            .cloned()
            .ok_or_else(|| FixtureError::new("a target with restart but no way to restart"))?;
        Ok(Restarts { target, how })
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

/// The API's client policy as its `GET /config` states it: retries,
/// timeouts, bulkhead. Tests derive their expectations from it rather than
/// assume the sandbox's defaults.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    /// Attempts per call (the first included).
    pub max_attempts: u32,
    /// The first backoff.
    pub retry_base: Duration,
    /// The longest backoff.
    pub retry_max_delay: Duration,
    /// One attempt's timeout.
    pub attempt_timeout: Duration,
    /// The whole call's deadline, retries included.
    pub call_timeout: Duration,
    /// Calls to one dependency in flight at once.
    pub bulkhead_max_concurrent: u64,
    /// How long a call waits for a bulkhead slot.
    pub bulkhead_max_wait: Duration,
}

impl Fixture for ClientPolicy {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = cx.get_shared::<Target>().await?;
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
        let c = &r.body["client"];
        let num = |path: &[&str]| {
            let mut v = c;
            for k in path {
                v = &v[*k];
            }
            v.as_u64().ok_or_else(|| {
                FixtureError::new(format!(
                    "healthcare-api /config: no client.{} in {c}",
                    path.join(".")
                ))
            })
        };
        let ms = |path: &[&str]| num(path).map(Duration::from_millis);
        Ok(ClientPolicy {
            max_attempts: num(&["retry", "max_attempts"])? as u32,
            retry_base: ms(&["retry", "base_ms"])?,
            retry_max_delay: ms(&["retry", "max_delay_ms"])?,
            attempt_timeout: ms(&["attempt_timeout_ms"])?,
            call_timeout: ms(&["call_timeout_ms"])?,
            bulkhead_max_concurrent: num(&["bulkhead", "max_concurrent"])?,
            bulkhead_max_wait: ms(&["bulkhead", "max_wait_ms"])?,
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
        // The row checks read the reference services' tables: a target
        // whose schema is its own is not judged by them.
        let missing: Vec<String> = client
            .query(
                "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL",
                &[&REFERENCE_TABLES.to_vec()],
            )
            .await
            .map_err(|e| FixtureError::new(format!("reading the target's schema: {e}")))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !missing.is_empty() {
            return Err(FixtureError::skip(format!(
                "target `{}`: its database (storage.database_url) lacks tables of the reference services that the row checks read: {}",
                target.name(),
                missing.join(", ")
            )));
        }
        Ok(Rows { client })
    }
}

/// The reference services' tables the suites' row checks read.
const REFERENCE_TABLES: [&str; 5] = [
    "api.patients",
    "api.visits",
    "billing.claims",
    "insurance.verifications",
    "compliance.audit_events",
];

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
        let Some((endpoint, prefix)) = target.redis() else {
            return Err(FixtureError::new("no Redis"));
        };
        // With its credentials: a private instance (or a target's
        // Redis) refuses a client without the password.
        let conn = endpoint.connect().await.map_err(|e| {
            FixtureError::new(format!(
                "connecting to the target's Redis {}: {e}",
                endpoint.addr()
            ))
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
/// At most [`PRIVATE_MESHES`] exist at once on this machine (a test asking
/// for one waits for its turn), counted across processes ([`crate::turns`]),
/// so the cap holds when tests run a process each: six services'
/// connection pools each, and PostgreSQL's connection limit is shared.
pub struct PrivateMesh {
    db: TestDb,
    redis: Arc<Redis>,
    seed: u64,
    _turn: (
        tokio::sync::OwnedSemaphorePermit,
        Option<crate::turns::Turn>,
    ),
}

/// Private meshes alive at once on this machine.
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

    /// The configuration [`PrivateMesh::start`] begins from (to change it
    /// with async work, such as putting fronts and taps before the stores,
    /// and then start it with `Mesh::start`).
    pub fn config(&self) -> MeshConfig {
        MeshConfig::for_tests(&self.db.url, self.redis.endpoint.clone(), self.seed)
    }

    /// Starts the mesh, with `tune` applied to its configuration.
    pub async fn start(&self, tune: impl FnOnce(&mut MeshConfig)) -> Result<Mesh, String> {
        let mut config = self.config();
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
        PrivateMesh::acquire(cx).await
    }
}

impl PrivateMesh {
    async fn acquire(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        // This process's turn first (its tests wait without looking), then
        // the machine's.
        let turn = Arc::clone(&TURNS)
            .acquire_owned()
            .await
            .map_err(|_| FixtureError::new("private meshes: the run is ending"))?;
        let machine = match crate::turns::take("private-meshes", PRIVATE_MESHES).await {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!(
                    "service-test: private meshes counted in this process only (their turns in {} cannot be used: {e})",
                    std::env::temp_dir().display()
                );
                None
            }
        };
        Ok(PrivateMesh {
            _turn: (turn, machine),
            db: cx.get::<TestDb>().await?,
            redis: cx.get_shared::<Redis>().await?,
            seed: cx.run_seed(),
        })
    }
}

/// A mesh of the test's own whatever the target: for the unit tier, whose
/// tests check the reference services' own code against stubs and never
/// touch the target (a [`PrivateMesh`] on this machine's PostgreSQL and
/// Redis, found or started as the `real_services` tests' are).
pub struct OwnMesh(pub PrivateMesh);

impl std::ops::Deref for OwnMesh {
    type Target = PrivateMesh;
    fn deref(&self) -> &PrivateMesh {
        &self.0
    }
}

impl Fixture for OwnMesh {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        Ok(OwnMesh(PrivateMesh::acquire(cx).await?))
    }
}

/// Revocation (`auth.revocation_bound_ms`, with tokens signed for any
/// person): clients acting as a named person (their tokens carry `sub`),
/// and the bound within which every service enforces a logout or a role
/// change.
pub struct Revocation {
    target: Arc<Target>,
    bound: Duration,
}

impl Revocation {
    /// The declared bound.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// A client of `service` acting for `tenant` as person `sub` whose
    /// tokens state `role` (each request signs a fresh one, issued now).
    pub fn person(
        &self,
        service: Service,
        tenant: &str,
        sub: &str,
        role: Role,
    ) -> sandbox::MeshClient {
        self.target.client(service, tenant).as_person(sub, role)
    }
}

impl Fixture for Revocation {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = target_with(cx, Capability::SignTokens).await?;
        target.require(Capability::Revocation)?;
        let bound = target
            .revocation_bound()
            .ok_or_else(|| FixtureError::new("no revocation bound"))?;
        Ok(Revocation { target, bound })
    }
}
