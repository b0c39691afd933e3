//! Redis: the run's server ([`Redis`]), a key prefix per test
//! ([`TestRedis`]), and connections through the `redis` crate.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use harness::{Fixture, FixtureCx, FixtureError, Scope};
pub use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::error::ProvisionError;
use crate::instance::{
    Instance, Kind, as_user, dies_with_us, find_binary, instance_dir, run_as, start_on_a_free_port,
    stop, unique,
};
use crate::secret::{random_password, write_private_file};

const STORE: &str = "Redis";

/// How to reach a Redis server: where it listens and what its URL says of
/// the user, password, database number and TLS, as the `redis` crate
/// parses `redis://[user][:password@]host[:port][/db]` and `rediss://…`.
/// `Display` and `Debug` mask the password; [`RedisEndpoint::url`] keeps
/// it, for handing to a process that connects.
#[derive(Clone)]
pub struct RedisEndpoint {
    info: ConnectionInfo,
    addr: SocketAddr,
}

impl RedisEndpoint {
    /// Parses `url` (host names resolved; the first address is used).
    pub fn parse(url: &str) -> Result<Self, ProvisionError> {
        Self::parse_as("the URL", url)
    }

    /// Parses `url`, the value of `var` (named in the error).
    fn parse_as(var: &'static str, url: &str) -> Result<Self, ProvisionError> {
        use std::net::ToSocketAddrs;
        let bad = |reason: &dyn fmt::Display| ProvisionError::bad_url(STORE, var, url, reason);
        let info = url.into_connection_info().map_err(|e| bad(&e))?;
        let (host, port) = match &info.addr {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                (host.clone(), *port)
            }
            ConnectionAddr::Unix(_) => {
                return Err(bad(&"a unix socket: give redis://host:port"));
            }
        };
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| bad(&format!("resolving {host}: {e}")))?
            .next()
            .ok_or_else(|| bad(&format!("{host} has no address")))?;
        Ok(RedisEndpoint { info, addr })
    }

    /// A server on `addr` that asks for no password (database 0).
    fn plain(addr: SocketAddr) -> Self {
        let info = ConnectionInfo {
            addr: ConnectionAddr::Tcp(addr.ip().to_string(), addr.port()),
            redis: redis::RedisConnectionInfo::default(),
        };
        RedisEndpoint { info, addr }
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The same server (credentials, database) reached at `addr` instead:
    /// a proxy put in front of it. The connection there speaks what this
    /// endpoint speaks: plain TCP, or TLS (with the same trusted roots) for
    /// a `rediss://` endpoint, whose proxy relays the TLS bytes.
    pub fn via(&self, addr: SocketAddr) -> RedisEndpoint {
        let to = match &self.info.addr {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: addr.ip().to_string(),
                port: addr.port(),
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(addr.ip().to_string(), addr.port()),
        };
        RedisEndpoint {
            info: ConnectionInfo {
                addr: to,
                redis: self.info.redis.clone(),
            },
            addr,
        }
    }

    /// The same server (credentials, database) reached over TLS at `addr`
    /// (a TLS front put before it), trusting only the CA certificates of
    /// `ca_pem` and checking that the server's certificate names `addr`'s
    /// IP address.
    pub fn tls_via(&self, addr: SocketAddr, ca_pem: &[u8]) -> redis::RedisResult<RedisEndpoint> {
        let info = ConnectionInfo {
            addr: ConnectionAddr::TcpTls {
                host: addr.ip().to_string(),
                port: addr.port(),
                insecure: false,
                tls_params: None,
            },
            redis: self.info.redis.clone(),
        };
        let client = redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca_pem.to_vec()),
            },
        )?;
        Ok(RedisEndpoint {
            info: client.get_connection_info().clone(),
            addr,
        })
    }

    /// Does a connection to it speak TLS (`rediss://`)?
    pub fn is_tls(&self) -> bool {
        matches!(self.info.addr, ConnectionAddr::TcpTls { .. })
    }

    /// The database number every connection selects.
    pub fn db(&self) -> i64 {
        self.info.redis.db
    }

    /// The URL, password included: for a child process's `REDIS_URL`,
    /// never for a message (use `Display`, which masks it).
    pub fn url(&self) -> String {
        let password = self.info.redis.password.as_deref().map(encode);
        self.url_with(password.as_deref())
    }

    /// The URL with `password` as given (already encoded, or the mask).
    fn url_with(&self, password: Option<&str>) -> String {
        let (scheme, host, port, fragment) = match &self.info.addr {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => (
                "rediss",
                host.as_str(),
                *port,
                if *insecure { "#insecure" } else { "" },
            ),
            ConnectionAddr::Tcp(host, port) => ("redis", host.as_str(), *port, ""),
            // Never built: parse_as refuses unix sockets.
            ConnectionAddr::Unix(_) => ("redis", "", self.addr.port(), ""),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let redis = &self.info.redis;
        let mut userinfo = String::new();
        if let Some(user) = &redis.username {
            userinfo.push_str(&encode(user));
        }
        if let Some(password) = password {
            userinfo.push(':');
            userinfo.push_str(password);
        }
        if !userinfo.is_empty() {
            userinfo.push('@');
        }
        format!("{scheme}://{userinfo}{host}:{port}/{}{fragment}", redis.db)
    }

    /// Connects (5 s to connect, 5 s per reply: a server just started, on a
    /// machine busy with a whole test run, may take seconds), authenticating and
    /// selecting the database as the URL said. The connection is
    /// multiplexed: clone it to share it between tasks.
    pub async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let client = redis::Client::open(self.info.clone())?;
        // TCP_NODELAY: many commands share the multiplexed connection, and
        // one written while the one before is unacknowledged must not wait
        // for the server's delayed ACK (Nagle).
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Duration::from_secs(5))
            .set_response_timeout(Duration::from_secs(5))
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Connects and checks the server answers `PING`.
    async fn ping(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut conn = self.connect().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(conn)
    }
}

/// `text` percent-encoded for a URL's user information (the `redis`
/// crate decodes it).
fn encode(text: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

impl fmt::Display for RedisEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked = self
            .info
            .redis
            .password
            .as_ref()
            .map(|_| crate::secret::MASK);
        f.write_str(&self.url_with(masked))
    }
}

impl fmt::Debug for RedisEndpoint {
    /// The `redis` crate's `ConnectionInfo` prints its password: never
    /// show it, show the masked URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisEndpoint")
            .field(&self.to_string())
            .finish()
    }
}

/// The endpoints this process has been told of, by address: the bridge
/// for callers that hold only a [`SocketAddr`] (the sandbox's cache, a
/// target file's `redis_url` read with [`parse_redis_url`]), so that
/// [`connect`] can authenticate and select the database for them. The
/// latest endpoint named for an address wins.
static KEYCHAIN: Mutex<BTreeMap<SocketAddr, RedisEndpoint>> = Mutex::new(BTreeMap::new());

fn remember(endpoint: &RedisEndpoint) {
    KEYCHAIN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(endpoint.addr, endpoint.clone());
}

fn endpoint_for(addr: SocketAddr) -> RedisEndpoint {
    KEYCHAIN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&addr)
        .cloned()
        .unwrap_or_else(|| RedisEndpoint::plain(addr))
}

/// Connects to the server at `addr` (2 s to connect, 2 s per reply), with
/// the credentials and database of the endpoint this process knows for
/// `addr` (a private instance, `REDIS_URL`, a URL given to
/// [`parse_redis_url`] or [`RedisEndpoint::parse`]), else none. The
/// connection is multiplexed: clone it to share it between tasks.
pub async fn connect(addr: SocketAddr) -> redis::RedisResult<MultiplexedConnection> {
    endpoint_for(addr).connect().await
}

/// The address of a Redis URL (`redis://[user][:password@]host[:port][/db]`,
/// `rediss://…`; port 6379 by default; host names resolved), parsed by the
/// `redis` crate. Its credentials and database are remembered for
/// [`connect`] on that address.
pub fn parse_redis_url(url: &str) -> Option<SocketAddr> {
    let endpoint = RedisEndpoint::parse(url).ok()?;
    remember(&endpoint);
    Some(endpoint.addr)
}

/// Where the run's Redis came from, and the private instance to keep
/// alive (stopped when dropped).
pub struct RedisSource {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How to connect (credentials, database).
    pub endpoint: RedisEndpoint,
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
            let endpoint = RedisEndpoint::parse_as("REDIS_URL", url)?;
            endpoint.ping().await.map_err(|e| {
                ProvisionError::connect(STORE, &endpoint, format!("REDIS_URL: {e}"))
            })?;
            remember(&endpoint);
            return Ok(RedisSource {
                addr: endpoint.addr,
                endpoint,
                source: "env",
                instance: None,
            });
        }
    }
    if try_local {
        let endpoint = RedisEndpoint::plain(SocketAddr::from(([127, 0, 0, 1], 6379)));
        if endpoint.ping().await.is_ok() {
            return Ok(RedisSource {
                addr: endpoint.addr,
                endpoint,
                source: "local",
                instance: None,
            });
        }
    }
    let (endpoint, instance) = private_redis().await?;
    Ok(RedisSource {
        addr: endpoint.addr,
        endpoint,
        source: "private",
        instance: Some(instance),
    })
}

/// A Redis server for the run.
pub struct Redis {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How to connect (credentials, database).
    pub endpoint: RedisEndpoint,
    /// `env` (REDIS_URL), `private` or `hosted`.
    pub source: &'static str,
    _instance: Option<Instance>,
}

impl Redis {
    /// Its URL with the password, for a child process's `REDIS_URL` (see
    /// [`RedisEndpoint::url`]).
    pub fn url(&self) -> String {
        self.endpoint.url()
    }
}

impl Fixture for Redis {
    const SCOPE: Scope = Scope::Session;

    async fn setup(_cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let found = redis_for_run(false).await?;
        Ok(Redis {
            addr: found.addr,
            endpoint: found.endpoint,
            source: found.source,
            _instance: found.instance,
        })
    }
}

/// The run's server is shared with isolated test processes (see
/// `harness::host`); the handle carries the password, as the handles file
/// is readable by this user only.
impl harness::host::Hostable for Redis {
    fn handle(&self) -> Result<serde_json::Value, FixtureError> {
        Ok(serde_json::json!({ "url": self.endpoint.url() }))
    }

    async fn attach(handle: serde_json::Value, _cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let url = handle["url"]
            .as_str()
            .ok_or_else(|| FixtureError::new("hosted Redis: no `url` in the handle"))?;
        let endpoint = RedisEndpoint::parse_as("the hosted handle", url)?;
        remember(&endpoint);
        Ok(Redis {
            addr: endpoint.addr,
            endpoint,
            source: "hosted",
            _instance: None,
        })
    }
}

harness::hostable!(Redis);

/// Starts a private `redis-server` from the local binary (free loopback
/// port, no persistence, a random password; as root, as `nobody`) and
/// returns how to reach it with the instance, which stops it when dropped.
///
/// The password is in a config file of mode 0600 in the instance's 0700
/// directory, never on the command line (`/proc/PID/cmdline` is readable by
/// every user). Root is never kept: an authenticated client could still
/// make the server write files (`CONFIG SET dir`, `SAVE`) with its rights.
pub async fn private_redis() -> Result<(RedisEndpoint, Instance), ProvisionError> {
    let Some(server) = find_binary("redis-server") else {
        return Err(ProvisionError::Unavailable {
            store: STORE,
            var: "REDIS_URL",
            binaries: "redis-server is",
        });
    };
    let start = |step: &str, e: &dyn fmt::Display| ProvisionError::start(STORE, step, e);
    let user = run_as(Kind::Redis).map_err(|e| start("choosing the user to run as", &e))?;
    let dir = instance_dir(Kind::Redis, user)
        .map_err(|e| start("creating the instance directory", &e))?;
    let password = random_password().map_err(|e| start("choosing a password", &e))?;
    let config = dir.join("redis.conf");
    if let Err(e) = write_private_file(&config, &format!("requirepass {password}\n"), user) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(start("writing the config file", &e));
    }
    let spawn = |port: u16| {
        let mut child = dies_with_us(as_user(&mut Command::new(&server), user), libc::SIGTERM)
            .arg(&config)
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
            .map_err(|e| std::io::Error::other(format!("{}: {e}", server.display())))?;
        // Without its pid file a server left behind could not be found and
        // stopped by a later run: stopped now instead.
        match write_private_file(&dir.join("server.pid"), &child.id().to_string(), None) {
            Ok(()) => Ok(child),
            Err(e) => {
                stop(&mut child);
                Err(e)
            }
        }
    };
    let endpoint_at = |port: u16| {
        let mut endpoint = RedisEndpoint::plain(([127, 0, 0, 1], port).into());
        endpoint.info.redis.password = Some(password.clone());
        endpoint
    };
    let ready = |port: u16| {
        let endpoint = endpoint_at(port);
        async move {
            endpoint.ping().await.map_err(|e| e.to_string())?;
            Ok(endpoint)
        }
    };
    match start_on_a_free_port(spawn, ready, Duration::from_secs(10)).await {
        Ok((_, child, endpoint)) => {
            remember(&endpoint);
            Ok((endpoint, Instance { child, dir }))
        }
        Err(failure) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(start(&failure.step, &failure.detail))
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
    /// How to connect to it (credentials, database).
    pub endpoint: RedisEndpoint,
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
        let conn = redis
            .endpoint
            .connect()
            .await
            .map_err(|e| ProvisionError::connect(STORE, &redis.endpoint, e))?;
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
            endpoint: redis.endpoint.clone(),
        })
    }
}
