//! Starting the six services together: in-process from a test
//! ([`Mesh::start`], or the [`Mesh`] fixture), or as one binary
//! (`cargo run -p sandbox -- up`); stopping, restarting and rerouting one.
//! How to start one is [`crate::config`]; the tests' client of a running
//! mesh is `mesh_client` (both re-exported here).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tracing::instrument::WithSubscriber;

pub use crate::config::{MeshConfig, ServerLimits};
pub use crate::mesh_client::{
    Answer, AnswerCheck, CLIENT_IDLE, Credentials, MeshClient, Minter, RequestError,
    connection_retries,
};

use crate::auth::token::{self, Role};
use crate::breaker::BreakerState;
use crate::client::{Routes, ServiceClient};
use crate::clock::SystemClock;
use crate::ctx::{Ctx, IdMint, Settings};
use crate::faults::FaultPlan;
use crate::logs::{LogBook, LogViolation};
use crate::metrics::ServiceMetrics;
use crate::service::Service;
use crate::store::{self, Cache, Db, StoreError};
use crate::{admin, gate, ops, registry};

/// Why the mesh (or one service) could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// Storage was not reachable or a migration failed.
    #[error("{service}: {source}")]
    Store {
        /// Which service.
        service: Service,
        /// Why.
        source: StoreError,
    },
    /// The mesh listens on loopback only (it is the reference system for
    /// tests that send traffic to this machine alone).
    #[error("the mesh listens on loopback only (127.0.0.0/8 or ::1), not on {0}")]
    BindNotLoopback(std::net::IpAddr),
    /// A port could not be bound.
    #[error("{service}: cannot listen on {addr}: {source}")]
    Bind {
        /// Which service.
        service: Service,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An admin call (`/admin/faults`) failed.
    #[error("{service}: {what}: {why}")]
    Admin {
        /// Which service.
        service: Service,
        /// Which call.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// The configuration cannot be used (a data key of the wrong length).
    #[error("{service}: {why}")]
    Config {
        /// Which service.
        service: Service,
        /// Why.
        why: String,
    },
    /// Only loopback addresses are allowed.
    #[error("{0} is not a loopback address: the sandbox listens on loopback only")]
    NotLoopback(SocketAddr),
    /// The links to the stores could not be put on TLS.
    #[error(transparent)]
    StoreTls(#[from] crate::store_tls::StoreTlsError),
}

struct Running {
    ctx: Arc<Ctx>,
    task: JoinHandle<()>,
    /// The service's own background work (the API's compensator, the
    /// monitor's notifier of incidents).
    background: Option<JoinHandle<()>>,
    /// Set to start a graceful shutdown.
    drain: tokio::sync::watch::Sender<bool>,
}

impl Running {
    fn stop_background(&self) {
        if let Some(b) = &self.background {
            b.abort();
        }
    }
}

/// The six services, running.
pub struct Mesh {
    config: MeshConfig,
    addrs: BTreeMap<Service, SocketAddr>,
    routes: Routes,
    running: Mutex<BTreeMap<Service, Running>>,
    book: Arc<LogBook>,
    /// The log pipeline's task (`crate::shipper`).
    shipping: JoinHandle<()>,
    /// The log pipeline's client (the compliance monitor's; its
    /// `/admin/breakers/reset` closes this one's breakers too).
    shipper: Arc<ServiceClient>,
    http: reqwest::Client,
    /// Each service's way to its stores (TLS fronts with TLS on).
    stores: crate::store_tls::StoreLinks,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shipping.abort();
        for (_, r) in
            std::mem::take(&mut *self.running.lock().unwrap_or_else(PoisonError::into_inner))
        {
            r.stop_background();
            r.task.abort();
        }
    }
}

fn router(service: Service, ctx: Arc<Ctx>, test_mode: bool, max_body: usize) -> Router {
    let module = registry::module(service);
    let own = (module.routes)();
    let mut r = if module.own_health {
        own
    } else {
        own.route("/health", get(ops::health))
    };
    r = r
        .route("/metrics", get(ops::metrics))
        .route("/config", get(ops::config))
        .route("/openapi.json", get(crate::openapi::serve));
    if test_mode {
        r = r.merge(admin::routes());
    }
    // Inside the gate, so a refused upload is counted and carries its
    // request id.
    r.layer(axum::middleware::from_fn_with_state(
        max_body,
        gate::refuse_oversized,
    ))
    .layer(axum::middleware::from_fn_with_state(
        Arc::clone(&ctx),
        gate::gate,
    ))
    .layer(axum::extract::DefaultBodyLimit::max(max_body))
    .layer(axum::middleware::map_response(gate::json_errors))
    .with_state(ctx)
}

/// The answer to a connection over the cap: written as is, then closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 82\r\nconnection: close\r\nretry-after: 1\r\n\r\n{\"error\":\"too_many_connections\",\"message\":\"connection limit reached; retry later\"}";

/// Accepts connections until aborted (aborting drops every connection) or
/// drained: when `drain` turns `true` the listener closes, each connection
/// finishes the request it is serving and closes, and the task ends once
/// all have (or `grace` has passed; the rest are dropped).
/// Over `limits.max_connections`, a new connection gets a `503` and is
/// closed; a client slower than `limits.header_read_timeout` to send its
/// request head (or idle that long between requests) is disconnected.
fn serve(
    listener: TcpListener,
    app: Router,
    dispatch: tracing::Dispatch,
    metrics: Arc<ServiceMetrics>,
    limits: ServerLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut drain: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        loop {
            tokio::select! {
                _ = drain.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        // Out of descriptors, say: let the load pass.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    if conns.len() >= limits.max_connections {
                        metrics.incr("http_connections_refused_total", "");
                        let _ = stream.try_write(TOO_MANY_CONNECTIONS);
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let svc = TowerToHyperService::new(app.clone());
                    let http = http.clone();
                    let stop = drain.clone();
                    let tls = tls.clone();
                    let counters = Arc::clone(&metrics);
                    conns.spawn(async move {
                        match tls {
                            None => serve_connection(&http, stream, svc, stop).await,
                            Some(acceptor) => {
                                // The handshake gets the header-read budget: a
                                // plain-HTTP request (or silence) is closed.
                                let accepted = tokio::time::timeout(
                                    limits.header_read_timeout,
                                    acceptor.accept(stream),
                                )
                                .await;
                                match accepted {
                                    Ok(Ok(stream)) => serve_connection(&http, stream, svc, stop).await,
                                    _ => counters.incr("tls_handshakes_failed_total", ""),
                                }
                            }
                        }
                    }.with_subscriber(dispatch.clone()));
                    metrics.connections_open.store(conns.len() as u64, Ordering::Relaxed);
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {
                    metrics.connections_open.store(conns.len() as u64, Ordering::Relaxed);
                }
            }
        }
        drop(listener);
        let grace = tokio::time::sleep(DRAIN_GRACE);
        tokio::pin!(grace);
        while !conns.is_empty() {
            tokio::select! {
                _ = conns.join_next() => {}
                _ = &mut grace => break,
            }
        }
        conns.abort_all();
    })
}

/// Serves one connection (plain or TLS) until it closes or a drain asks
/// it to finish its request in flight and close.
async fn serve_connection<S>(
    http: &hyper::server::conn::http1::Builder,
    stream: S,
    svc: TowerToHyperService<Router>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = &mut conn => return,
        _ = stop.wait_for(|d| *d) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// How long a draining service waits for its requests in flight.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

impl Mesh {
    /// Migrates every schema, binds the six services on loopback and starts
    /// them.
    pub async fn start(config: MeshConfig) -> Result<Mesh, MeshError> {
        if !config.bind.is_loopback() {
            return Err(MeshError::BindNotLoopback(config.bind));
        }
        let stores = crate::store_tls::StoreLinks::plan(&config).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<LogViolation>();
        let book = Arc::new(LogBook::new(config.echo_logs, tx));
        let mut listeners = Vec::new();
        let mut addrs = BTreeMap::new();
        for s in Service::ALL {
            let addr = SocketAddr::new(config.bind, config.ports.get(&s).copied().unwrap_or(0));
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| MeshError::Bind {
                    service: s,
                    addr,
                    source,
                })?;
            let bound = l.local_addr().map_err(|source| MeshError::Bind {
                service: s,
                addr,
                source,
            })?;
            addrs.insert(s, bound);
            listeners.push((s, l));
        }
        let routes: Routes = Arc::new(RwLock::new(
            addrs
                .iter()
                .map(|(s, a)| (*s, *a))
                .collect::<HashMap<_, _>>(),
        ));
        // The log pipeline (the compliance monitor's log shipper, signing as
        // the monitor) reports violations to it.
        let shipper_metrics = Arc::new(ServiceMetrics::default());
        let mut shipper_client = ServiceClient::new(
            Service::ComplianceMonitor.name(),
            Arc::clone(&routes),
            config.client,
            config.secret.clone().into(),
            Arc::new(SystemClock),
            config.seed,
            Arc::clone(&shipper_metrics),
        );
        if let Some(tls) = &config.tls {
            shipper_client = shipper_client.with_tls(tls);
        }
        let shipper = Arc::new(shipper_client);
        let shipper_log = crate::logs::dispatch(
            Service::ComplianceMonitor,
            Arc::clone(&book),
            shipper_metrics,
        );
        let shipping = tokio::spawn(crate::shipper::ship(rx, Arc::clone(&shipper), shipper_log));
        // Idle connections are let go well before the servers'
        // header-read timeout closes them, so none is reused as it closes.
        let builder = reqwest::Client::builder().pool_idle_timeout(CLIENT_IDLE);
        let http = match &config.tls {
            Some(tls) => tls.trust(builder).build(),
            None => builder.build(),
        }
        .unwrap_or_else(|_| reqwest::Client::new());
        let mesh = Mesh {
            config,
            addrs,
            routes,
            running: Mutex::new(BTreeMap::new()),
            book,
            shipping,
            shipper,
            http,
            stores,
        };
        for (s, l) in listeners {
            mesh.launch(s, l).await?;
        }
        Ok(mesh)
    }

    async fn launch(&self, service: Service, listener: TcpListener) -> Result<(), MeshError> {
        let store_err = |source| MeshError::Store { service, source };
        let url = self.stores.database_url(service);
        let pg_tls = self.stores.postgres_tls();
        let migrated = {
            let mut migrator = store::connect_with(url, pg_tls).await.map_err(store_err)?;
            let upto = self.config.schema_versions.get(&service).copied();
            crate::schema::migrate(&mut migrator, service, &crate::schema::plan(service), upto)
                .await
                .map_err(store_err)?
        };
        let vault = Arc::new(
            crate::vault::FieldCipher::new(&self.config.data_key).map_err(|e| {
                MeshError::Config {
                    service,
                    why: e.to_string(),
                }
            })?,
        );
        let db = Arc::new(Db::with_tls(url, self.config.pool, pg_tls).map_err(store_err)?);
        if self.config.pool.open_at_start {
            db.open_all().await;
        }
        let metrics = Arc::new(ServiceMetrics::default());
        let audit = (service == Service::ComplianceMonitor).then(|| {
            crate::audit_writer::AuditWriter::start(Arc::clone(&db), Arc::clone(&metrics))
        });
        let redis = self.stores.redis(service);
        let cache = Cache::connect(&redis, &self.config.redis_prefix)
            .await
            .map_err(store_err)?;
        let secret: Arc<[u8]> = self.config.secret.clone().into();
        let mut client = ServiceClient::new(
            service.name(),
            Arc::clone(&self.routes),
            self.config.client,
            Arc::clone(&secret),
            Arc::clone(&self.config.clock),
            self.config.seed ^ (service as u64).wrapping_mul(0x51_7C_C1_B7),
            Arc::clone(&metrics),
        );
        if let Some(tls) = &self.config.tls {
            client = client.with_tls(tls);
        }
        let client = Arc::new(client);
        // The monitor's incidents whose notification did not arrive, for
        // its notifier (started with the service, below).
        let (unnotified, notifier_rx) = tokio::sync::mpsc::unbounded_channel();
        let started = std::time::SystemTime::now();
        let ctx = Arc::new(Ctx {
            service,
            db,
            audit,
            cache,
            client,
            settings: Settings {
                secret,
                eligibility_ttl: self.config.eligibility_ttl,
                idempotency_ttl: self.config.idempotency_ttl,
                vault: Arc::clone(&vault),
                server: self.config.server,
                rate_limit: self
                    .config
                    .rate_limit
                    .filter(|_| service == Service::HealthcareApi)
                    .map(|l| Arc::new(crate::limits::TenantLimiter::new(l))),
                schema_version: migrated.to,
            },
            metrics: Arc::clone(&metrics),
            faults: Mutex::new(Vec::new()),
            id_mint: IdMint::default(),
            book: Arc::clone(&self.book),
            replay: Default::default(),
            sessions: Default::default(),
            visit_events: tokio::sync::broadcast::channel(1024).0,
            log_shipper: (service == Service::ComplianceMonitor).then(|| Arc::clone(&self.shipper)),
            unnotified: (service == Service::ComplianceMonitor).then_some(unnotified),
        });
        let app = router(
            service,
            Arc::clone(&ctx),
            self.config.test_mode,
            self.config.server.max_body_bytes,
        );
        let dispatch = crate::logs::dispatch(service, Arc::clone(&self.book), Arc::clone(&metrics));
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("{service} listening on {}", self.url(service));
        });
        let (drain, draining) = tokio::sync::watch::channel(false);
        let tls = self
            .config
            .tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.server_config()));
        // The service's background work logs as the service does.
        let background = match service {
            Service::HealthcareApi => Some(tokio::spawn(
                crate::api::saga::compensator(Arc::clone(&ctx)).with_subscriber(dispatch.clone()),
            )),
            Service::ComplianceMonitor => Some(tokio::spawn(
                crate::compliance::notifier::notifier(Arc::clone(&ctx), notifier_rx, started)
                    .with_subscriber(dispatch.clone()),
            )),
            _ => None,
        };
        let task = serve(
            listener,
            app,
            dispatch,
            metrics,
            self.config.server,
            tls,
            draining,
        );
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                service,
                Running {
                    background,
                    ctx,
                    task,
                    drain,
                },
            );
        Ok(())
    }

    /// Where `service` listens.
    pub fn addr(&self, service: Service) -> SocketAddr {
        self.addrs[&service]
    }

    /// `http://addr` of `service` (`https://` with TLS on).
    pub fn url(&self, service: Service) -> String {
        format!("{}://{}", self.scheme(), self.addrs[&service])
    }

    /// `https` with TLS on, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Every service's address.
    pub fn addrs(&self) -> &BTreeMap<Service, SocketAddr> {
        &self.addrs
    }

    /// An HTTP client that trusts the mesh (its CA, with TLS on).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Each service's way to its stores: with TLS on, the TLS fronts the
    /// mesh put before its PostgreSQL and Redis.
    pub fn stores(&self) -> &crate::store_tls::StoreLinks {
        &self.stores
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    fn take_running(&self, service: Service) -> Option<Running> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&service)
    }

    /// Shuts `service` down gracefully, as a deploy would: its port closes
    /// (new connections are refused), the requests in flight finish and
    /// are answered (up to 5 s), then its connections close.
    pub async fn shutdown(&self, service: Service) {
        if let Some(r) = self.take_running(service) {
            r.stop_background();
            let _ = r.drain.send(true);
            let _ = r.task.await;
        }
    }

    /// Stops `service` at once, as a crash would: its port closes and its
    /// connections drop, requests in flight unanswered.
    pub async fn stop(&self, service: Service) {
        if let Some(r) = self.take_running(service) {
            r.stop_background();
            r.task.abort();
            let _ = r.task.await;
        }
    }

    /// Starts `service` again on the same port (fresh connections to
    /// storage, fresh counters; the other services' breakers keep their
    /// state).
    pub async fn restart(&self, service: Service) -> Result<(), MeshError> {
        self.stop(service).await;
        let addr = self.addrs[&service];
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(source) => {
                    return Err(MeshError::Bind {
                        service,
                        addr,
                        source,
                    });
                }
            }
        };
        self.launch(service, listener).await
    }

    /// Sends the mesh's calls to `service` to `addr` instead (a loopback
    /// address: a `traffic::chaos::ChaosProxy` in front of it, say).
    pub fn route(&self, service: Service, addr: SocketAddr) -> Result<(), MeshError> {
        if !addr.ip().is_loopback() {
            return Err(MeshError::NotLoopback(addr));
        }
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(service, addr);
        Ok(())
    }

    /// Sends calls to `service` straight to it again.
    pub fn unroute(&self, service: Service) {
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(service, self.addrs[&service]);
    }

    /// The state of the API's breaker for calls to `peer`.
    pub fn breaker_state(&self, peer: Service) -> Option<BreakerState> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running
            .get(&Service::HealthcareApi)
            .map(|r| r.ctx.client.breaker(peer).state())
    }

    /// A counter of `service` (`client_retries_total`, labels
    /// `target="billing-engine"`).
    pub fn counter(&self, service: Service, name: &str, labels: &str) -> u64 {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running
            .get(&service)
            .map_or(0, |r| r.ctx.metrics.get(name, labels))
    }

    /// Each running service's breakdown samples by route, kept since the
    /// last call while [`crate::timing`] is on (taken: the tables empty).
    pub fn take_breakdown(
        &self,
    ) -> BTreeMap<Service, BTreeMap<String, Vec<crate::timing::Sample>>> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running
            .iter()
            .map(|(s, r)| (*s, r.ctx.metrics.breakdown.take()))
            .collect()
    }

    /// The services' log lines so far (redacted).
    pub fn logs(&self) -> Vec<String> {
        self.book.lines()
    }

    /// An admin's token for `service` acting for `tenant`, valid for `ttl`.
    pub fn token(&self, service: Service, tenant: &str, ttl: Duration) -> String {
        token::sign_user(
            &self.config.secret,
            "test-client",
            Role::Admin,
            service.name(),
            tenant,
            ttl,
        )
    }

    /// A client for `service` acting for `tenant` (tokens signed per
    /// request).
    pub fn client(&self, service: Service, tenant: &str) -> MeshClient {
        MeshClient::new(
            self.http.clone(),
            self.url(service),
            service,
            tenant,
            Credentials::Secret(self.config.secret.clone().into()),
        )
    }

    /// Injects faults into `service` (test mode only), as an admin.
    pub async fn inject(&self, service: Service, plan: &FaultPlan) -> Result<(), MeshError> {
        let tenant = plan.tenant.as_deref().unwrap_or("admin");
        let body = serde_json::to_value(plan).unwrap_or_default();
        let r = self
            .client(service, tenant)
            .post("/admin/faults", &body)
            .await;
        admin_answer(service, "POST /admin/faults", r)
    }

    /// Removes the faults of `service`, as an admin.
    pub async fn clear_faults(&self, service: Service) -> Result<(), MeshError> {
        let r = self
            .client(service, "admin")
            .request(reqwest::Method::DELETE, "/admin/faults", None, None)
            .await;
        admin_answer(service, "DELETE /admin/faults", r)
    }
}

fn admin_answer(
    service: Service,
    what: &'static str,
    r: Result<Answer, RequestError>,
) -> Result<(), MeshError> {
    let r = r.map_err(|e| MeshError::Admin {
        service,
        what,
        why: e.to_string(),
    })?;
    if (200..300).contains(&r.status) {
        return Ok(());
    }
    Err(MeshError::Admin {
        service,
        what,
        why: format!("answered {}: {}", r.status, r.body),
    })
}
