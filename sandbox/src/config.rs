//! How to start a mesh ([`MeshConfig`]) and what one service's server
//! accepts ([`ServerLimits`]): the configuration every service's state is
//! made from, below the services and the mesh that starts them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::ClientConfig;
use crate::clock::{Clock, SystemClock};
use crate::service::Service;
use crate::tls::TlsMaterial;

/// How to start a mesh.
#[derive(Clone)]
pub struct MeshConfig {
    /// The PostgreSQL database (every service has its schema in it).
    pub database_url: String,
    /// The Redis server, with its credentials and database.
    pub redis: provision::RedisEndpoint,
    /// The loopback address the services listen on (`127.0.0.1`; another
    /// of 127.0.0.0/8 to be reached by a name other than localhost's).
    pub bind: std::net::IpAddr,
    /// Prefix of every Redis key of this mesh (meshes sharing a server
    /// stay apart).
    pub redis_prefix: String,
    /// The token secret shared by the services.
    pub secret: Vec<u8>,
    /// Mounts `/admin/faults` on every service.
    pub test_mode: bool,
    /// The API's outgoing client: breakers, retries, timeouts.
    pub client: ClientConfig,
    /// The breakers' clock (a `ManualClock` in tests).
    pub clock: Arc<dyn Clock>,
    /// Seeds the backoff jitter.
    pub seed: u64,
    /// How long eligibility answers stay in Redis.
    pub eligibility_ttl: Duration,
    /// How long idempotency keys are held.
    pub idempotency_ttl: Duration,
    /// Print the (redacted) log lines to stderr.
    pub echo_logs: bool,
    /// Fixed ports (`up --port-base`); services not named get a free port.
    pub ports: BTreeMap<Service, u16>,
    /// Per-service replacements of `database_url` (a chaos proxy in front
    /// of one service's PostgreSQL, say).
    pub database_urls: BTreeMap<Service, String>,
    /// Per-service replacements of Redis's address (a chaos proxy in front
    /// of one service's Redis; same credentials and database).
    pub redis_addrs: BTreeMap<Service, SocketAddr>,
    /// Each service's connection pool.
    pub pool: PoolConfig,
    /// Each service's HTTP server limits.
    pub server: ServerLimits,
    /// The AES-256 key (32 bytes) sealing SSNs and dates of birth at
    /// rest; configuration, never stored in the database.
    pub data_key: Vec<u8>,
    /// Serve HTTPS with this material (and call each other over it);
    /// `None` serves plain HTTP.
    pub tls: Option<Arc<TlsMaterial>>,
    /// Migrate these services' schemas only up to this version (a test
    /// starting a service on the previous schema, see
    /// [`crate::schema::previous`]); the others to the latest.
    pub schema_versions: BTreeMap<Service, u32>,
    /// The API's per-tenant rate limit (`None`: no limit).
    pub rate_limit: Option<crate::limits::RateLimit>,
}

/// What one service's HTTP server accepts: a flood of connections or slow
/// clients cannot take it down.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections held at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// How long a client may take to send its request head (slowloris).
    pub header_read_timeout: Duration,
    /// The largest request body (`413` beyond).
    pub max_body_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(5),
            max_body_bytes: 1 << 20,
        }
    }
}

impl std::fmt::Debug for MeshConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConfig")
            .field("database_url", &provision::mask(&self.database_url))
            .field("redis", &self.redis)
            .field("redis_prefix", &self.redis_prefix)
            .field("test_mode", &self.test_mode)
            .field("client", &self.client)
            .field("seed", &self.seed)
            .field("tls", &self.tls.is_some())
            .field("schema_versions", &self.schema_versions)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

static MESHES: AtomicU64 = AtomicU64::new(0);

fn nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl MeshConfig {
    /// Test mode's breakers: open for 2 s instead of 30, so that a suite
    /// can watch one recover in real time on a running mesh.
    pub fn test_mode_breakers(client: &mut ClientConfig) {
        client.breaker.open_wait = Duration::from_secs(2);
    }

    /// Test mode's server limits: 256 connections at once instead of 1024,
    /// so that a suite can fill the cap within a load budget and watch the
    /// surplus refused.
    pub fn test_mode_server() -> ServerLimits {
        ServerLimits {
            max_connections: 256,
            ..ServerLimits::default()
        }
    }

    /// Defaults on a database and a Redis: a fresh secret and key prefix,
    /// the real clock, test mode off.
    pub fn new(database_url: impl Into<String>, redis: provision::RedisEndpoint) -> Self {
        let n = MESHES.fetch_add(1, Ordering::Relaxed);
        let stamp = nanos();
        // 32 bytes from the OS random source.
        let secret = crate::vault::random_key();
        MeshConfig {
            database_url: database_url.into(),
            redis,
            bind: std::net::Ipv4Addr::LOCALHOST.into(),
            redis_prefix: format!("mesh:{}:{n}:", std::process::id()),
            secret,
            test_mode: false,
            client: ClientConfig::default(),
            clock: Arc::new(SystemClock),
            seed: stamp,
            eligibility_ttl: Duration::from_secs(300),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            echo_logs: false,
            ports: BTreeMap::new(),
            database_urls: BTreeMap::new(),
            redis_addrs: BTreeMap::new(),
            pool: PoolConfig::default(),
            server: ServerLimits::default(),
            data_key: crate::vault::random_key(),
            tls: None,
            schema_versions: BTreeMap::new(),
            rate_limit: Some(crate::limits::RateLimit::default()),
        }
    }

    /// Test mode on (the fault endpoint), jitter seeded with `seed`, two
    /// connections per service's pool (many test meshes share one
    /// PostgreSQL and its connection limit), breakers that wait 2 s
    /// open (see [`MeshConfig::test_mode_breakers`]), and TLS between
    /// everyone (a fresh CA per mesh), as a hospital's network would have it.
    pub fn for_tests(
        database_url: impl Into<String>,
        redis: provision::RedisEndpoint,
        seed: u64,
    ) -> Self {
        let mut client = ClientConfig::default();
        Self::test_mode_breakers(&mut client);
        MeshConfig {
            test_mode: true,
            server: Self::test_mode_server(),
            seed,
            client,
            pool: PoolConfig {
                max_size: 2,
                ..PoolConfig::default()
            },
            // Making a key pair does not fail; if it did, the encryption
            // tests (which check the scheme) would say so.
            tls: TlsMaterial::generate().ok().map(Arc::new),
            ..MeshConfig::new(database_url, redis)
        }
    }
}

/// How a service's pool behaves.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Connections at most.
    pub max_size: usize,
    /// How long a request waits for a free connection (then `503`).
    pub wait: Duration,
    /// How long connecting may take.
    pub connect: Duration,
    /// How long one statement may take.
    pub query: Duration,
    /// Wait for each commit's WAL to reach the disk (`synchronous_commit =
    /// on`) before answering. Off by default: a commit is atomic and visible
    /// to every later statement at once (an audit row is committed before
    /// the answer that needs it, as before), and the WAL writer flushes it
    /// within ~0.6 s; only a crash of the database host in between can lose
    /// it, never half of it. On a server with `fsync` on, each flush costs a
    /// disk sync (~15 ms here), which a saga of a dozen sequential commits
    /// paid a dozen times.
    pub durable_commits: bool,
    /// Open every connection when the service starts, instead of on first
    /// need (as a pool's minimum idle size does): the first burst of
    /// requests then finds them open. Off by default, so that a mesh
    /// started for a test holds only the connections it uses; `sandbox
    /// bench` turns it on, so that it measures a mesh as a deployment that
    /// has started serves, not the opening of its connections.
    pub open_at_start: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 8,
            wait: Duration::from_secs(2),
            connect: Duration::from_secs(2),
            query: Duration::from_secs(5),
            durable_commits: false,
            open_at_start: false,
        }
    }
}
