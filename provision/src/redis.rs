//! Redis: the run's server ([`Redis`]), a key prefix per test
//! ([`TestRedis`]), and connections through the `redis` crate.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Fixture, FixtureCx, FixtureError, Scope};
pub use redis::aio::MultiplexedConnection;

use crate::error::ProvisionError;
use crate::instance::{Instance, dies_with_us, find_binary, free_port, instance_dir, unique};

const STORE: &str = "Redis";

/// Connects to the server at `addr` (2 s to connect, 2 s per reply). The
/// connection is multiplexed: clone it to share it between tasks.
pub async fn connect(addr: SocketAddr) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Connects and checks the server answers `PING`.
async fn ping(addr: SocketAddr) -> redis::RedisResult<MultiplexedConnection> {
    let mut conn = connect(addr).await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(conn)
}

/// The address of a `redis://[user@]host[:port][/db]` URL (port 6379 by
/// default; host names resolved).
pub fn parse_redis_url(url: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let rest = url.strip_prefix("redis://")?;
    let hostport = rest.rsplit('@').next()?.split('/').next()?;
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    };
    hostport.to_socket_addrs().ok()?.next()
}

/// Where the run's Redis came from, and the private instance to keep
/// alive (stopped when dropped).
pub struct RedisSource {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `env` (`REDIS_URL`), `local` (the conventional local server) or
    /// `private` (started for this run).
    pub source: &'static str,
    /// The private instance, if one was started.
    pub instance: Option<Instance>,
}

/// The run's Redis, by the crate's fallback chain: `REDIS_URL`; then, when
/// `try_local` (`sandbox up`), `127.0.0.1:6379`; then a private instance
/// from the local binary; else [`ProvisionError::Unavailable`].
pub async fn redis_for_run(try_local: bool) -> Result<RedisSource, ProvisionError> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        let url = url.trim();
        if !url.is_empty() {
            let addr = parse_redis_url(url).ok_or_else(|| ProvisionError::BadUrl {
                store: STORE,
                var: "REDIS_URL",
                value: url.to_string(),
                reason: "expected redis://host[:port]".into(),
            })?;
            ping(addr).await.map_err(|e| ProvisionError::Connect {
                store: STORE,
                address: addr.to_string(),
                reason: format!("REDIS_URL: {e}"),
            })?;
            return Ok(RedisSource {
                addr,
                source: "env",
                instance: None,
            });
        }
    }
    if try_local {
        let addr = SocketAddr::from(([127, 0, 0, 1], 6379));
        if ping(addr).await.is_ok() {
            return Ok(RedisSource {
                addr,
                source: "local",
                instance: None,
            });
        }
    }
    let (addr, instance) = private_redis().await?;
    Ok(RedisSource {
        addr,
        source: "private",
        instance: Some(instance),
    })
}

/// A Redis server for the run.
pub struct Redis {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `env` (REDIS_URL), `private` or `hosted`.
    pub source: &'static str,
    _instance: Option<Instance>,
}

impl Fixture for Redis {
    const SCOPE: Scope = Scope::Session;

    async fn setup(_cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let found = redis_for_run(false).await?;
        Ok(Redis {
            addr: found.addr,
            source: found.source,
            _instance: found.instance,
        })
    }
}

/// The run's server is shared with isolated test processes (see
/// `harness::host`).
impl harness::host::Hostable for Redis {
    fn handle(&self) -> Result<serde_json::Value, FixtureError> {
        Ok(serde_json::json!({ "addr": self.addr.to_string() }))
    }

    async fn attach(handle: serde_json::Value, _cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let addr = handle["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| FixtureError::new("hosted Redis: no `addr` in the handle"))?;
        Ok(Redis {
            addr,
            source: "hosted",
            _instance: None,
        })
    }
}

harness::hostable!(Redis);

/// Starts a private `redis-server` from the local binary (free loopback
/// port, no persistence) and returns its address with the instance, which
/// stops it when dropped.
pub async fn private_redis() -> Result<(SocketAddr, Instance), ProvisionError> {
    let Some(server) = find_binary("redis-server") else {
        return Err(ProvisionError::Unavailable {
            store: STORE,
            var: "REDIS_URL",
            binaries: "redis-server is",
        });
    };
    let start = |step: &str, e: &dyn std::fmt::Display| ProvisionError::start(STORE, step, e);
    let dir = instance_dir("redis").map_err(|e| start("creating the instance directory", &e))?;
    let port = free_port().map_err(|e| start("finding a free port", &e))?;
    let child = dies_with_us(&mut Command::new(&server), libc::SIGTERM)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| start(&format!("starting {}", server.display()), &e))?;
    let _ = std::fs::write(dir.join("server.pid"), child.id().to_string());
    let instance = Instance { child, dir };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ping(addr).await {
            Ok(_) => return Ok((addr, instance)),
            Err(e) if Instant::now() > deadline => {
                return Err(start(&format!("waiting for the server on port {port}"), &e));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Every key matching `pattern` (`SCAN`, so the server is never blocked).
pub async fn scan_keys(
    conn: &mut MultiplexedConnection,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut cursor: u64 = 0;
    let mut out = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        out.extend(keys);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// A key prefix of its own on the run's Redis, for one test; its keys are
/// deleted after the test.
pub struct TestRedis {
    /// The prefix every key of this test starts with (`st:…:`).
    pub prefix: String,
    /// A connection (multiplexed: clone it to share it).
    pub conn: MultiplexedConnection,
    /// The server.
    pub addr: SocketAddr,
}

impl TestRedis {
    /// `prefix` + `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

impl Fixture for TestRedis {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let redis = cx.get_shared::<Redis>().await?;
        let prefix = format!("{}:", unique("st"));
        let conn = connect(redis.addr).await.map_err(|e| {
            FixtureError::from(ProvisionError::Connect {
                store: STORE,
                address: redis.addr.to_string(),
                reason: e.to_string(),
            })
        })?;
        let (mut cleaner, pattern) = (conn.clone(), format!("{prefix}*"));
        cx.on_teardown(async move {
            let keys = scan_keys(&mut cleaner, &pattern)
                .await
                .map_err(|e| format!("SCAN {pattern}: {e}"))?;
            for chunk in keys.chunks(500) {
                redis::cmd("DEL")
                    .arg(chunk)
                    .query_async::<i64>(&mut cleaner)
                    .await
                    .map_err(|e| format!("DEL: {e}"))?;
            }
            Ok::<(), String>(())
        });
        Ok(TestRedis {
            prefix,
            conn,
            addr: redis.addr,
        })
    }
}
