//! Encryption on the links to the stores: when the mesh runs with TLS,
//! every service reaches PostgreSQL and Redis over TLS too.
//!
//! The PostgreSQL and Redis the sandbox runs on are the user's (or private
//! instances) and speak plain text; they are not reconfigured. Instead a
//! [`StoreFront`] on loopback stands where a TLS-enabled server would: it
//! holds a certificate from the mesh's CA, terminates TLS and relays the
//! plaintext to the real server over loopback. For PostgreSQL it speaks the
//! protocol's own negotiation (the client's 8-byte `SSLRequest`, answered
//! `S`, then the handshake) and refuses a client that starts in the clear;
//! for Redis it is TLS from the first byte (`rediss://`).
//!
//! The services connect with TLS required and only the mesh's CA trusted:
//! tokio-postgres through [`PgTls`] (a small connector over tokio-rustls)
//! with `sslmode=require`, the `redis` crate with `rediss://` and the CA
//! ([`provision::RedisEndpoint::tls_via`]).
//!
//! A store URL that already asks for TLS (`sslmode=require`, `rediss://`)
//! is used as it is: [`front_stores`] rewrites a [`MeshConfig`] to its
//! fronts before the mesh starts (so a proxy or a tap put between a service
//! and the front carries only TLS); [`crate::Mesh::start`] fronts whatever
//! is still plain.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::config::MeshConfig;
use crate::service::Service;
use crate::tls::{TlsError, TlsMaterial};

/// Why the links to the stores could not be put on TLS.
#[derive(Debug, thiserror::Error)]
pub enum StoreTlsError {
    /// A front could not listen.
    #[error("a TLS front for {store} at {upstream}: cannot listen on loopback: {source}")]
    Bind {
        /// `PostgreSQL` or `Redis`.
        store: &'static str,
        /// The server it stands before.
        upstream: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A database URL names no TCP server (or is not a URL).
    #[error("the database URL `{url}` cannot be fronted with TLS: {why}")]
    DatabaseUrl {
        /// The URL, its password masked.
        url: String,
        /// Why.
        why: String,
    },
    /// The mesh's TLS material could not make a client configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The Redis client refused the TLS settings.
    #[error("Redis over TLS: {0}")]
    Redis(String),
}

/// Which store a [`StoreFront`] stands before: what it speaks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoreKind {
    /// PostgreSQL: `SSLRequest`, `S`, then TLS.
    Postgres,
    /// Redis: TLS from the first byte.
    Redis,
}

impl StoreKind {
    /// `PostgreSQL` or `Redis`.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Postgres => "PostgreSQL",
            StoreKind::Redis => "Redis",
        }
    }
}

/// PostgreSQL's `SSLRequest` code (length 8, then this).
pub const SSL_REQUEST: u32 = 80_877_103;
/// PostgreSQL's `GSSENCRequest` code (answered `N`: no GSSAPI here).
const GSSENC_REQUEST: u32 = 80_877_104;
/// How long a client has to negotiate and finish its handshake.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// A TLS-terminating relay on loopback before one PostgreSQL or Redis
/// server. Dropping it closes its port and every connection through it.
pub struct StoreFront {
    kind: StoreKind,
    addr: SocketAddr,
    upstream: SocketAddr,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for StoreFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreFront")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl Drop for StoreFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StoreFront {
    /// Listens on `127.0.0.1` (a free port) and relays each TLS
    /// connection's plaintext to `upstream`.
    pub async fn start(
        kind: StoreKind,
        upstream: SocketAddr,
        server: Arc<rustls::ServerConfig>,
    ) -> Result<StoreFront, StoreTlsError> {
        let bind_err = |source| StoreTlsError::Bind {
            store: kind.name(),
            upstream,
            source,
        };
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        let acceptor = acceptor.clone();
                        conns.spawn(async move {
                            let _ = relay(kind, stream, acceptor, upstream).await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(StoreFront {
            kind,
            addr,
            upstream,
            task,
        })
    }

    /// Where the services connect (over TLS).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server it relays to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Which store it stands before.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }
}

/// One client of a front: negotiation, handshake, then bytes both ways.
async fn relay(
    kind: StoreKind,
    mut stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    upstream: SocketAddr,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    if kind == StoreKind::Postgres {
        tokio::time::timeout(HANDSHAKE, negotiate(&mut stream))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    }
    let mut tls = tokio::time::timeout(HANDSHAKE, acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let mut server = TcpStream::connect(upstream).await?;
    let _ = server.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
    Ok(())
}

/// PostgreSQL's opening: an `SSLRequest` is answered `S` (TLS follows); a
/// `GSSENCRequest` is answered `N` (the client may ask again); anything
/// else — a startup message in the clear — gets a `FATAL` error and the
/// connection closes.
async fn negotiate(stream: &mut TcpStream) -> io::Result<()> {
    loop {
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        match (len, code) {
            (8, SSL_REQUEST) => return stream.write_all(b"S").await,
            (8, GSSENC_REQUEST) => stream.write_all(b"N").await?,
            _ => {
                let _ = stream.write_all(&tls_required_error()).await;
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "a PostgreSQL client started in the clear: TLS is required",
                ));
            }
        }
    }
}

/// A PostgreSQL `ErrorResponse`: FATAL, SQLSTATE 28000, TLS required.
fn tls_required_error() -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "28000"),
        (
            b'M',
            "TLS is required: connect with sslmode=require (the sandbox's TLS front)",
        ),
    ] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
    message.extend_from_slice(&fields);
    message
}

/// Does this PostgreSQL URL require TLS (`sslmode=require`)?
pub fn postgres_requires_tls(url: &str) -> bool {
    url.parse::<tokio_postgres::Config>()
        .is_ok_and(|c| matches!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Require))
}

/// `url` with its host and port replaced by `addr` and `sslmode=require`
/// (every other part kept: user, password, database, options).
pub fn postgres_url_via(url: &str, addr: SocketAddr) -> Result<String, StoreTlsError> {
    let bad = |why: String| StoreTlsError::DatabaseUrl {
        url: provision::mask(url),
        why,
    };
    let mut parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    parsed
        .set_host(Some(&addr.ip().to_string()))
        .map_err(|e| bad(e.to_string()))?;
    parsed
        .set_port(Some(addr.port()))
        .map_err(|()| bad("it cannot take a port".into()))?;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != "sslmode")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("sslmode", "require");
    Ok(parsed.to_string())
}

/// The TCP server a PostgreSQL URL names (its first address): the
/// upstream of the front [`front_stores`] puts before it.
pub async fn postgres_upstream(url: &str) -> Result<SocketAddr, StoreTlsError> {
    let bad = |why: String| StoreTlsError::DatabaseUrl {
        url: provision::mask(url),
        why,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("it names no TCP host".into()))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = parsed.port().unwrap_or(5432);
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| bad(format!("resolving {host}: {e}")))?
        .next()
        .ok_or_else(|| bad(format!("{host} has no address")))
}

/// The fronts [`front_stores`] started: keep them for as long as the
/// mesh runs (dropping them cuts the services off their stores).
#[derive(Debug, Default)]
pub struct StoreFronts {
    fronts: BTreeMap<(StoreKind, SocketAddr), StoreFront>,
}

impl StoreFronts {
    /// The front before `upstream` (started on first use).
    async fn front(
        &mut self,
        kind: StoreKind,
        upstream: SocketAddr,
        tls: &TlsMaterial,
    ) -> Result<SocketAddr, StoreTlsError> {
        if let Some(f) = self.fronts.get(&(kind, upstream)) {
            return Ok(f.addr());
        }
        let front = StoreFront::start(kind, upstream, tls.server_config()).await?;
        let addr = front.addr();
        self.fronts.insert((kind, upstream), front);
        Ok(addr)
    }

    /// Every front, by the store it stands before.
    pub fn fronts(&self) -> impl Iterator<Item = &StoreFront> {
        self.fronts.values()
    }

    /// The front of `kind` before `upstream`, if one was started.
    pub fn get(&self, kind: StoreKind, upstream: SocketAddr) -> Option<&StoreFront> {
        self.fronts.get(&(kind, upstream))
    }

    fn absorb(&mut self, other: StoreFronts) {
        self.fronts.extend(other.fronts);
    }
}

/// With TLS on (`config.tls`), puts a [`StoreFront`] before each plain
/// store `config` names (its database URL and each service's, its Redis
/// and each service's address) and rewrites `config` to reach them over
/// TLS: database URLs at the front with `sslmode=require`, Redis as
/// `rediss://` at the front trusting the mesh's CA (each service's Redis
/// address then names a TLS front too). Stores already reached over TLS
/// are left as they are. With TLS off it changes nothing.
pub async fn front_stores(config: &mut MeshConfig) -> Result<StoreFronts, StoreTlsError> {
    let mut fronts = StoreFronts::default();
    let Some(tls) = config.tls.clone() else {
        return Ok(fronts);
    };
    let urls = std::iter::once(&mut config.database_url).chain(config.database_urls.values_mut());
    for url in urls {
        if postgres_requires_tls(url) {
            continue;
        }
        let upstream = postgres_upstream(url).await?;
        let at = fronts.front(StoreKind::Postgres, upstream, &tls).await?;
        *url = postgres_url_via(url, at)?;
    }
    if !config.redis.is_tls() {
        let at = fronts
            .front(StoreKind::Redis, config.redis.addr(), &tls)
            .await?;
        config.redis = config
            .redis
            .tls_via(at, tls.ca_pem().as_bytes())
            .map_err(|e| StoreTlsError::Redis(e.to_string()))?;
        for addr in config.redis_addrs.values_mut() {
            *addr = fronts.front(StoreKind::Redis, *addr, &tls).await?;
        }
    }
    Ok(fronts)
}

/// Each service's way to its stores, as the mesh uses them: the database
/// URL, the Redis endpoint, whether PostgreSQL is reached over TLS, and
/// the fronts the mesh started itself.
pub struct StoreLinks {
    database_url: String,
    database_urls: BTreeMap<Service, String>,
    redis: provision::RedisEndpoint,
    redis_addrs: BTreeMap<Service, SocketAddr>,
    postgres_tls: Option<PgTls>,
    fronts: StoreFronts,
}

impl StoreLinks {
    /// The links of `config`: with TLS on, every store reached over TLS
    /// (fronting what is still plain, see [`front_stores`]); with TLS off,
    /// as `config` names them.
    pub async fn plan(config: &MeshConfig) -> Result<StoreLinks, StoreTlsError> {
        let mut fronted = config.clone();
        let mut fronts = StoreFronts::default();
        fronts.absorb(front_stores(&mut fronted).await?);
        let postgres_tls = match &config.tls {
            Some(tls) => Some(PgTls::new(tls.store_client_config()?)),
            None => None,
        };
        Ok(StoreLinks {
            database_url: fronted.database_url,
            database_urls: fronted.database_urls,
            redis: fronted.redis,
            redis_addrs: fronted.redis_addrs,
            postgres_tls,
            fronts,
        })
    }

    /// The database URL `service` connects to.
    pub fn database_url(&self, service: Service) -> &str {
        self.database_urls
            .get(&service)
            .unwrap_or(&self.database_url)
    }

    /// The Redis `service` connects to.
    pub fn redis(&self, service: Service) -> provision::RedisEndpoint {
        match self.redis_addrs.get(&service) {
            Some(addr) => self.redis.via(*addr),
            None => self.redis.clone(),
        }
    }

    /// The TLS connector for PostgreSQL (`None`: the mesh runs without TLS).
    pub fn postgres_tls(&self) -> Option<&PgTls> {
        self.postgres_tls.as_ref()
    }

    /// The fronts the mesh started.
    pub fn fronts(&self) -> &StoreFronts {
        &self.fronts
    }
}

/// tokio-postgres over rustls: connects with TLS to the server the URL
/// names (checking its certificate against the given roots), after the
/// `SSLRequest` tokio-postgres sends. No channel binding: the front
/// terminates TLS, so the server behind it could not confirm one.
#[derive(Clone)]
pub struct PgTls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls").finish_non_exhaustive()
    }
}

impl PgTls {
    /// A connector with `config` (its roots are the only ones trusted).
    pub fn new(config: Arc<rustls::ClientConfig>) -> PgTls {
        PgTls { config }
    }
}

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PgTlsConnect, Self::Error> {
        Ok(PgTlsConnect {
            config: Arc::clone(&self.config),
            name: ServerName::try_from(domain.to_string())?,
        })
    }
}

/// One connection's TLS set-up (see [`PgTls`]).
pub struct PgTlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            connector
                .connect(self.name, stream)
                .await
                .map(|s| PgTlsStream(Box::new(s)))
        })
    }
}

/// A PostgreSQL connection's TLS stream.
pub struct PgTlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}
