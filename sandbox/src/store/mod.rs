//! Storage: each service's PostgreSQL schema (versioned migrations
//! applied at start, see [`crate::schema`])
//! reached through a connection pool ([`Db`]), and its Redis (caches and
//! idempotency keys, under the mesh's key prefix). One-row writes that
//! arrive together are committed together ([`Db::write_grouped`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use provision::redis::MultiplexedConnection;

mod group_commit;

pub use crate::config::PoolConfig;
use crate::error::ApiError;
use crate::service::Service;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL refused or failed.
    #[error("PostgreSQL: {}", pg_chain(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A migration step failed (rolled back whole: the schema is at the
    /// version before it).
    #[error("migration {schema} v{version} ({name}) failed and was rolled back: {}", pg_chain(.source))]
    Migration {
        /// The schema.
        schema: &'static str,
        /// The step's version.
        version: u32,
        /// The step's name.
        name: &'static str,
        /// Why.
        source: tokio_postgres::Error,
    },
    /// The schema is at a later version than the one asked for (or than
    /// this code knows): migrations go forward only.
    #[error(
        "schema {schema} is at version {at}, past version {wanted}: migrations go forward only"
    )]
    SchemaAhead {
        /// The schema.
        schema: &'static str,
        /// Its version.
        at: u32,
        /// The version asked for.
        wanted: u32,
    },
    /// No pooled connection could be had in time: the database is
    /// unreachable, or every connection is busy for longer than the wait.
    #[error("PostgreSQL unavailable: {0}")]
    DbUnavailable(String),
    /// A statement did not finish within the service's query timeout.
    #[error("PostgreSQL: no answer within {0:?}")]
    DbTimeout(Duration),
    /// A statement failed (what PostgreSQL said, as text: the one error
    /// shared by the rows of a batch).
    #[error("{0}")]
    Failed(String),
    /// Redis refused or failed.
    #[error("Redis at {addr}: {message}")]
    Redis {
        /// The server.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
}

/// A PostgreSQL error with its causes (`db error` alone says nothing).
fn pg_chain(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Connects to PostgreSQL.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    connect_with(url, None).await
}

/// Connects to PostgreSQL, over TLS with `tls` (as `url`'s `sslmode`
/// asks: `require` fails rather than talk in the clear).
pub async fn connect_with(
    url: &str,
    tls: Option<&crate::store_tls::PgTls>,
) -> Result<tokio_postgres::Client, StoreError> {
    let client = match tls {
        Some(tls) => {
            let (client, conn) = tokio_postgres::connect(url, tls.clone()).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            client
        }
        None => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            client
        }
    };
    Ok(client)
}

/// A service's PostgreSQL: a pool of connections. A broken connection is
/// dropped and replaced on the next checkout (so a database that comes back
/// is used again without a restart); when none is free the request queues
/// for [`PoolConfig::wait`] and then fails with
/// [`StoreError::DbUnavailable`], never hangs.
pub struct Db {
    pool: deadpool_postgres::Pool,
    config: PoolConfig,
    timeouts: std::sync::atomic::AtomicU64,
    groups: group_commit::Groups,
}

/// A pool's state, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections at most.
    pub max_size: usize,
    /// Connections open now.
    pub size: usize,
    /// Idle among them.
    pub idle: usize,
    /// Requests waiting for one.
    pub waiting: usize,
    /// Checkouts that gave up waiting, since start.
    pub timeouts: u64,
}

impl Db {
    /// A pool on `url` (no connection is made until one is needed).
    pub fn new(url: &str, config: PoolConfig) -> Result<Db, StoreError> {
        Db::with_tls(url, config, None)
    }

    /// A pool on `url` whose connections use `tls` (as `url`'s `sslmode`
    /// asks).
    pub fn with_tls(
        url: &str,
        config: PoolConfig,
        tls: Option<&crate::store_tls::PgTls>,
    ) -> Result<Db, StoreError> {
        let mut pg: tokio_postgres::Config = url.parse()?;
        if !config.durable_commits {
            // Per session: the server's other users keep their setting.
            let options = match pg.get_options() {
                Some(o) if !o.trim().is_empty() => format!("{o} -c synchronous_commit=off"),
                _ => "-c synchronous_commit=off".to_string(),
            };
            pg.options(&options);
        }
        let manager_config = deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match tls {
            Some(tls) => deadpool_postgres::Manager::from_config(pg, tls.clone(), manager_config),
            None => {
                deadpool_postgres::Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
            }
        };
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(config.max_size)
            .wait_timeout(Some(config.wait))
            .create_timeout(Some(config.connect))
            .recycle_timeout(Some(config.connect))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::DbUnavailable(e.to_string()))?;
        Ok(Db {
            pool,
            config,
            timeouts: std::sync::atomic::AtomicU64::new(0),
            groups: group_commit::Groups::default(),
        })
    }

    /// Its group-commit writers ([`Db::write_grouped`]).
    pub(crate) fn groups(&self) -> &group_commit::Groups {
        &self.groups
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        use deadpool_postgres::PoolError;
        let got = crate::timing::measure(crate::timing::Part::DbWait, self.pool.get()).await;
        got.map_err(|e| match e {
            PoolError::Backend(e) => StoreError::DbUnavailable(pg_chain(&e)),
            PoolError::Timeout(kind) => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                let what = match kind {
                    deadpool_postgres::TimeoutType::Wait => format!(
                        "all {} connections busy for {:?}",
                        self.config.max_size, self.config.wait
                    ),
                    _ => format!("cannot connect within {:?}", self.config.connect),
                };
                StoreError::DbUnavailable(what)
            }
            other => StoreError::DbUnavailable(other.to_string()),
        })
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let work = crate::timing::measure(crate::timing::Part::Db, work);
        match tokio::time::timeout(self.config.query, work).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::DbTimeout(self.config.query)),
        }
    }

    /// Runs a statement; the rows it changed.
    pub async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let c = self.conn().await?;
        self.bounded(async {
            let stmt = c.prepare_cached(sql).await?;
            c.execute(&stmt, params).await
        })
        .await
    }

    /// Runs a statement planned for these values and the tables' sizes
    /// now (the rows it returns): sent unnamed with its parameters' types (one round trip), not
    /// kept. For a statement whose best plan changes with its input — a
    /// batch of one row or of a hundred, a table empty or large — where a
    /// plan kept from the first runs would be wrong later (see
    /// [`Db::write_grouped`]).
    pub async fn execute_planned(
        &self,
        sql: &str,
        params: &[(
            &(dyn tokio_postgres::types::ToSql + Sync),
            tokio_postgres::types::Type,
        )],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let c = self.conn().await?;
        self.bounded(c.query_typed(sql, params)).await
    }

    /// Every row `sql` selects.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let c = self.conn().await?;
        self.bounded(async {
            let stmt = c.prepare_cached(sql).await?;
            c.query(&stmt, params).await
        })
        .await
    }

    /// The row `sql` selects, if any (an error when more than one).
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, StoreError> {
        let c = self.conn().await?;
        self.bounded(async {
            let stmt = c.prepare_cached(sql).await?;
            c.query_opt(&stmt, params).await
        })
        .await
    }

    /// The one row `sql` selects.
    pub async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, StoreError> {
        let c = self.conn().await?;
        self.bounded(async {
            let stmt = c.prepare_cached(sql).await?;
            c.query_one(&stmt, params).await
        })
        .await
    }

    /// Opens the pool's every connection now (each as a request would, so
    /// within the connect timeout), then leaves them idle in the pool. A
    /// database that cannot be reached is not an error here: requests meet
    /// it as before.
    pub async fn open_all(&self) {
        let opened =
            futures_util::future::join_all((0..self.config.max_size).map(|_| self.conn())).await;
        drop(opened);
    }

    /// Does the database answer a `SELECT 1` within `timeout`?
    pub async fn ping(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            let c = self.conn().await.ok()?;
            c.simple_query("SELECT 1").await.ok()
        })
        .await
        .is_ok_and(|r| r.is_some())
    }

    /// Checks out `n` connections (each waiting as a request would) and
    /// keeps them from every request for `hold`, in the background: the
    /// pool saturated on purpose (test mode's `POST /admin/pool/hold`).
    /// Answers once all `n` are held.
    pub async fn hold(&self, n: usize, hold: Duration) -> Result<usize, StoreError> {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(self.conn().await?);
        }
        let count = held.len();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            drop(held);
        });
        Ok(count)
    }

    /// Its settings.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The pool's state now.
    pub fn status(&self) -> PoolStatus {
        let s = self.pool.status();
        PoolStatus {
            max_size: s.max_size,
            size: s.size,
            idle: s.available,
            waiting: s.waiting,
            timeouts: self.timeouts.load(Ordering::Relaxed),
        }
    }
}

impl StoreError {
    /// Is the store unreachable or saturated (a `503`), rather than the
    /// request wrong or the service broken?
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::DbUnavailable(_) | StoreError::DbTimeout(_) | StoreError::Redis { .. } => {
                true
            }
            // No SQLSTATE: the connection broke, not the statement.
            StoreError::Postgres(e) => e.code().is_none(),
            StoreError::Migration { .. }
            | StoreError::SchemaAhead { .. }
            | StoreError::Failed(_) => false,
        }
    }
}

/// The schema of the patient copies kept by services that hold patient
/// data (synced from the API).
pub fn patient_copies(service: Service) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.patients (
            tenant TEXT NOT NULL,
            patient_id TEXT NOT NULL,
            record TEXT NOT NULL,
            synced_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant, patient_id))",
        service.schema()
    )
}

/// A service's Redis: one multiplexed connection (shared by its requests,
/// replaced when it breaks) and the key prefix of its mesh.
pub struct Cache {
    endpoint: provision::RedisEndpoint,
    addr: SocketAddr,
    prefix: String,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Cache {
    /// Connects (one `PING` to prove the server is there).
    pub async fn connect(
        endpoint: &provision::RedisEndpoint,
        prefix: &str,
    ) -> Result<Cache, StoreError> {
        let cache = Cache {
            endpoint: endpoint.clone(),
            addr: endpoint.addr(),
            prefix: prefix.to_string(),
            conn: tokio::sync::Mutex::new(None),
        };
        cache.run::<String>(&redis::cmd("PING")).await?;
        Ok(cache)
    }

    /// The full key of `key` (the mesh's prefix first).
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Redis {
            addr: self.addr,
            message: e.to_string(),
        }
    }

    async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.endpoint.connect().await.map_err(|e| self.error(e))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `cmd`; a broken connection is dropped, the next command
    /// connects again.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let answer = crate::timing::measure(crate::timing::Part::Redis, async {
            let mut c = self.conn().await?;
            Ok::<_, StoreError>(cmd.query_async::<T>(&mut c).await)
        })
        .await?;
        match answer {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_connection_refusal()
                {
                    *self.conn.lock().await = None;
                }
                Err(self.error(e))
            }
        }
    }

    /// Deletes every key under the prefix (a run's own, once it is over):
    /// `SCAN` by the prefix, `UNLINK` in chunks. How many were deleted.
    pub async fn forget_all(&self) -> Result<u64, StoreError> {
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            if !keys.is_empty() {
                deleted += self.run::<u64>(redis::cmd("UNLINK").arg(&keys)).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Does the server answer?
    pub async fn ping(&self) -> bool {
        self.run::<String>(&redis::cmd("PING")).await.is_ok()
    }

    /// `GET` (the prefix added).
    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.run(redis::cmd("GET").arg(self.key(key))).await
    }

    /// `SET … PX ttl`.
    pub async fn set_ex(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let ms = ttl.as_millis().max(1) as u64;
        self.run::<()>(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg("PX")
                .arg(ms),
        )
        .await
    }

    /// `SET … NX PX ttl`: `true` when the key was set (it did not exist).
    pub async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ms = ttl.as_millis().max(1) as u64;
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.key(key))
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms),
            )
            .await?;
        Ok(set.is_some())
    }

    /// `DEL`.
    pub async fn del(&self, key: &str) -> Result<(), StoreError> {
        self.run::<i64>(redis::cmd("DEL").arg(self.key(key)))
            .await?;
        Ok(())
    }

    /// Claims idempotency key `key` of `scope` for `new_id`: `None` when
    /// this call holds it now, `Some(id)` of the first holder when it was
    /// already held.
    pub async fn idempotent(
        &self,
        scope: &str,
        tenant: &str,
        key: &str,
        new_id: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let k = idempotency_slot(scope, tenant, key);
        if self.set_nx(&k, new_id, ttl).await? {
            return Ok(None);
        }
        // Gone since (expired): this call may go ahead.
        self.get(&k).await
    }

    /// Releases an idempotency key (its create failed).
    pub async fn release(&self, scope: &str, tenant: &str, key: &str) -> Result<(), StoreError> {
        self.del(&idempotency_slot(scope, tenant, key)).await
    }
}

/// The Redis key holding an idempotency key: the tenant and the client's
/// key escaped, so that no choice of either reaches another tenant's slot
/// (`a:b` + `c` and `a` + `b:c` stay apart) or spells a Redis pattern.
pub fn idempotency_slot(scope: &str, tenant: &str, key: &str) -> String {
    format!("idem:{scope}:{}:{}", escape_part(tenant), escape_part(key))
}

/// `part` with every byte outside `[A-Za-z0-9._-]` percent-encoded (no
/// tenant or person reaches another's key).
pub(crate) fn escape_part(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a storage error answers: `503` when the store is unavailable
/// (`cache_unavailable`, `database_unavailable`), else `500 internal`.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use axum::http::StatusCode;
        match &e {
            StoreError::Redis { .. } => {
                tracing::warn!("storage unavailable: {e}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cache_unavailable",
                    "Redis is unavailable; the request was not carried out, retry later",
                )
            }
            _ if e.is_unavailable() => {
                tracing::warn!("storage unavailable: {e}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    format!("the database is unavailable ({e}); retry later"),
                )
            }
            _ => ApiError::internal("storage", e),
        }
    }
}

/// `text` matched literally in a Redis glob pattern.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
