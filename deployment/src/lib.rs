//! A deployment under test, described by a **target file** (TOML): where
//! each service answers, how the suites authenticate, which TLS roots to
//! trust, the SLOs the performance suites assert, optional storage URLs for
//! checks that read rows, and what the suites may do to it (capabilities).
//!
//! ```toml
//! name = "staging"
//!
//! [services.healthcare-api]
//! url = "http://172.20.0.21:8000"
//! [services.billing-engine]
//! url = "http://172.20.0.24:8004"
//!
//! [auth]
//! secret_env = "STAGING_SECRET"   # sign a token per service and tenant
//! revocation_bound_ms = 1000      # a logout or role change in force everywhere within 1 s
//!
//! [slo]                           # every endpoint (seed 004's criteria)
//! p99_ms = 100
//! max_error_rate = 0.01
//! min_throughput_rps = 1000
//! [slo.endpoints."GET /health"]
//! p99_ms = 50
//!
//! [capabilities]
//! faults = true                   # POST /admin/faults on every service
//! logs = true                     # GET /admin/logs
//! [capabilities.load]
//! max_connections = 32
//! max_requests = 5000
//! hosts = ["172.20.0.21", "172.20.0.24"]   # where load may go besides loopback
//! ```
//!
//! [`TargetFile::load`] reads and checks one; every mistake is a
//! [`TargetFileError`] naming the file, the line and the key.
//! [`TargetFile::to_toml`] writes one (`sandbox up --write-target`).
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A target file, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    /// Names the target in messages and skip reasons (`staging`).
    pub name: String,
    /// Services by name (`healthcare-api`, `billing-engine`, …).
    pub services: BTreeMap<String, ServiceEntry>,
    /// How the suites authenticate.
    #[serde(default)]
    pub auth: Auth,
    /// TLS roots, for `https://` services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// What the performance suites assert.
    #[serde(default)]
    pub slo: SloTable,
    /// Databases the suites may read rows from.
    #[serde(default)]
    pub storage: Storage,
    /// What the suites may do to the target.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// One service of the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// Base URL, `http://host:port` (no path).
    pub url: String,
    /// With bearer auth: this service's token, from this variable
    /// (overrides `auth.token_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

/// How the suites authenticate: sign their own tokens with a shared secret
/// (`secret_env`), or send bearer tokens they are given (`token_env`, one
/// per service where audiences differ, acting as `tenant`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// The variable holding the token-signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Or: a file holding that secret (relative to the target file;
    /// `sandbox up --write-target` writes one, mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// The variable holding a bearer token for every service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// With bearer tokens: the tenant they were issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Or: a command that prints a fresh bearer token, run (`sh -c`) for
    /// each request with `{service}` (the audience), `{tenant}` and `{role}`
    /// replaced: any tenant and role the identity provider issues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mint: Option<String>,
    /// Revocation: within how many milliseconds of a logout
    /// (`POST /auth/logout`, `POST /users/{sub}/logout`) or a role change
    /// (`PUT /users/{sub}/role`) answered by the healthcare API every
    /// service refuses the person's tokens or applies the new role (1 to
    /// 3 600 000). Unset: the deployment does not offer revocation, and
    /// its tests skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_bound_ms: Option<u64>,
}

/// The longest revocation bound a target may declare: a token's longest
/// lifetime (an hour), past which revoking it means nothing.
pub const MAX_REVOCATION_BOUND_MS: u64 = 3_600_000;

/// TLS roots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// A PEM file of CA certificates (relative to the target file).
    pub ca_file: PathBuf,
}

/// The SLOs: defaults for every endpoint, and per endpoint
/// (`"POST /visits"`) what differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloTable {
    /// Median latency, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// 95th percentile latency, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    /// 99th percentile latency, milliseconds (seed 004: 100).
    #[serde(default = "seed004_p99", skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Largest share of failed requests, 0 to 1 (seed 004: 0.01).
    #[serde(default = "seed004_errors", skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Least requests per second (seed 004: 1000).
    #[serde(
        default = "seed004_throughput",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_throughput_rps: Option<f64>,
    /// Per endpoint, `"METHOD /path"`: fields set here win.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, Slo>,
}

fn seed004_p99() -> Option<f64> {
    Some(100.0)
}
fn seed004_errors() -> Option<f64> {
    Some(0.01)
}
fn seed004_throughput() -> Option<f64> {
    Some(1000.0)
}

impl Default for SloTable {
    fn default() -> Self {
        SloTable {
            p50_ms: None,
            p95_ms: None,
            p99_ms: seed004_p99(),
            max_error_rate: seed004_errors(),
            min_throughput_rps: seed004_throughput(),
            endpoints: BTreeMap::new(),
        }
    }
}

impl SloTable {
    /// The SLO of `endpoint` (`"GET /health"`): its own fields over the defaults.
    pub fn of(&self, endpoint: &str) -> Slo {
        let own = self.endpoints.get(endpoint).cloned().unwrap_or_default();
        Slo {
            p50_ms: own.p50_ms.or(self.p50_ms),
            p95_ms: own.p95_ms.or(self.p95_ms),
            p99_ms: own.p99_ms.or(self.p99_ms),
            max_error_rate: own.max_error_rate.or(self.max_error_rate),
            min_throughput_rps: own.min_throughput_rps.or(self.min_throughput_rps),
        }
    }
}

/// What one endpoint must meet; an unset field is not asserted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Median latency, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// 95th percentile latency, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    /// 99th percentile latency, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Largest share of failed requests, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Least requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_throughput_rps: Option<f64>,
}

/// What a run measured of one endpoint, to hold against its [`Slo`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile, milliseconds.
    pub p95_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Failed share, 0 to 1.
    pub error_rate: f64,
    /// Requests per second.
    pub throughput_rps: f64,
}

impl Observed {
    /// The figures of a run: the latencies of the requests that succeeded
    /// (nearest-rank percentiles), how many failed, and its wall time.
    pub fn from_samples(
        samples: &[std::time::Duration],
        failed: usize,
        elapsed: std::time::Duration,
    ) -> Observed {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if ms.is_empty() {
                return 0.0;
            }
            let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
            ms[rank - 1]
        };
        let total = samples.len() + failed;
        Observed {
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            error_rate: if total == 0 {
                0.0
            } else {
                failed as f64 / total as f64
            },
            throughput_rps: samples.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        }
    }
}

impl Slo {
    /// Every way `seen` misses this SLO, as sentences (empty: it is met).
    pub fn breaches(&self, seen: &Observed) -> Vec<String> {
        let mut out = Vec::new();
        let mut most = |what: &str, limit: Option<f64>, got: f64, unit: &str| {
            if let Some(l) = limit.filter(|l| got > *l) {
                out.push(format!("{what} {got:.2}{unit} exceeds {l}{unit}"));
            }
        };
        most("p50", self.p50_ms, seen.p50_ms, " ms");
        most("p95", self.p95_ms, seen.p95_ms, " ms");
        most("p99", self.p99_ms, seen.p99_ms, " ms");
        most("error rate", self.max_error_rate, seen.error_rate, "");
        if let Some(l) = self.min_throughput_rps.filter(|l| seen.throughput_rps < *l) {
            out.push(format!(
                "throughput {:.1} req/s is below {l} req/s",
                seen.throughput_rps
            ));
        }
        out
    }
}

/// Storage the suites may read, for checks on rows and cache entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// The services' PostgreSQL database (each service has a schema in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Or: the variable holding that URL (for a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url_env: Option<String>,
    /// The services' Redis, `redis://host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// The prefix of the services' Redis keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_prefix: Option<String>,
}

/// What the suites may do to the target. Everything is off unless declared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Every service serves `/admin/faults` (the sandbox's test mode).
    #[serde(default)]
    pub faults: bool,
    /// Every service serves `/admin/logs`: its redacted log lines.
    #[serde(default)]
    pub logs: bool,
    /// The suites may stop and restart services.
    #[serde(default)]
    pub stop_restart: bool,
    /// Load is allowed, up to this ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadCeiling>,
    /// A Toxiproxy-compatible control API sits in front of services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<Chaos>,
    /// A command restarts a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// The limits the deployment enforces, which the limit tests hold it to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// The limits a deployment enforces (`[capabilities.limits]`); a limit
/// left out is not tested.
///
/// ```toml
/// [capabilities.limits]
/// max_resident_bytes = 536870912      # each service's process, also under a burst
/// [capabilities.limits.rate_limit]    # the healthcare API's, per tenant
/// requests_per_second = 50
/// burst = 1000
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The resident memory of each service's process stays under this
    /// many bytes, also under a burst of requests (at least 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resident_bytes: Option<u64>,
    /// The healthcare API's rate limit per tenant: past it, `429` with
    /// `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// A token bucket per tenant: `burst` requests at once, refilled at
/// `requests_per_second`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second, sustained (at least 1).
    pub requests_per_second: u32,
    /// Requests at once after a quiet spell (at least 1).
    pub burst: u32,
}

/// How a service is restarted: a command template, run by the harness
/// (`sh -c`) with `{service}` replaced by the service's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// `docker compose restart {service}`,
    /// `kubectl rollout restart deployment/{service}`.
    pub command: String,
    /// How long the command may take, and then the service to answer
    /// `/health` again, in seconds [default: 60].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

impl Restart {
    /// The command for `service`.
    pub fn command_for(&self, service: &str) -> String {
        self.command.replace("{service}", service)
    }

    /// The bound on the command and the service's return.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_s.unwrap_or(60))
    }
}

/// How much load the suites may put on the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadCeiling {
    /// Connections at once.
    pub max_connections: u32,
    /// Requests in one test.
    pub max_requests: u64,
    /// Requests per second, if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rps: Option<f64>,
    /// The hosts load may be sent to, besides loopback's own names
    /// (`localhost`, `127.0.0.1`, `::1`): every service's host must be one
    /// or the other, or the file is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// The hosts load may always be sent to: this machine, by its usual names.
pub const LOAD_HOSTS_BY_DEFAULT: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl LoadCeiling {
    /// May load be sent to `host` (a URL's host, as written)?
    pub fn allows(&self, host: &str) -> bool {
        LOAD_HOSTS_BY_DEFAULT.contains(&host) || self.hosts.iter().any(|h| h == host)
    }
}

/// A Toxiproxy-compatible endpoint and the proxies it controls: in front
/// of each service (the healthcare API's calls to it), and between each
/// service and its stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chaos {
    /// The control API, `http://host:8474`.
    pub toxiproxy: String,
    /// Proxy name by service name: the API → that service edge.
    #[serde(default)]
    pub proxies: BTreeMap<String, String>,
    /// By service name: the proxies between it and its stores.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stores: BTreeMap<String, StoreProxies>,
}

/// The proxies between one service and its stores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreProxies {
    /// Between the service and PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
    /// Between the service and Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
}

/// A mistake in a target file: which file, where, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct TargetFileError {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line, when the mistake has one.
    pub line: Option<usize>,
    /// The key (`capabilities.load.max_requests`), when one is at fault.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TargetFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "target file {}", self.path.display())?;
        if let Some(l) = self.line {
            write!(f, ", line {l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ", key `{k}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A base URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or address.
    pub host: String,
    /// Port (the scheme's default when not written).
    pub port: u16,
}

/// Splits `http[s]://host[:port]` (an optional trailing `/`, no path).
pub fn parse_base_url(url: &str) -> Result<BaseUrl, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not a URL: expected http://host:port"))?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("`{url}`: scheme `{scheme}` is not http or https"));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(format!("`{url}`: a base URL has no path"));
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("`{url}`: `{p}` is not a port"))?,
        ),
        _ => (rest, default_port),
    };
    if host.is_empty() {
        return Err(format!("`{url}`: no host"));
    }
    Ok(BaseUrl {
        scheme: scheme.to_string(),
        host: host.trim_matches(['[', ']']).to_string(),
        port,
    })
}

impl TargetFile {
    /// Reads and checks the target file at `path`; `known_services` are
    /// the service names it may (and must) name.
    pub fn load(path: &Path, known_services: &[&str]) -> Result<TargetFile, TargetFileError> {
        let source = std::fs::read_to_string(path).map_err(|e| TargetFileError {
            path: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read it: {e}"),
        })?;
        TargetFile::parse(&source, path, known_services)
    }

    /// Parses and checks `source` (the contents of `path`).
    pub fn parse(
        source: &str,
        path: &Path,
        known_services: &[&str],
    ) -> Result<TargetFile, TargetFileError> {
        let file: TargetFile = toml::from_str(source).map_err(|e| {
            let line = e.span().map(|s| line_at(source, s.start));
            let key = e
                .span()
                .and_then(|s| source.get(s))
                .map(|k| k.trim().trim_matches(['[', ']', '"']).to_string())
                .filter(|k| !k.is_empty() && !k.contains('\n') && k.len() < 80);
            TargetFileError {
                path: path.to_path_buf(),
                line,
                key,
                message: e.message().trim().to_string(),
            }
        })?;
        file.check(source, path, known_services)?;
        Ok(file)
    }

    fn check(
        &self,
        source: &str,
        path: &Path,
        known_services: &[&str],
    ) -> Result<(), TargetFileError> {
        let err = |key: &str, message: String| TargetFileError {
            path: path.to_path_buf(),
            line: line_of_key(source, key),
            key: Some(key.to_string()),
            message,
        };
        if self.name.trim().is_empty() {
            return Err(err("name", "is empty: name the target".into()));
        }
        for (name, entry) in &self.services {
            let key = format!("services.{name}");
            if !known_services.contains(&name.as_str()) {
                return Err(err(
                    &key,
                    format!(
                        "unknown service `{name}`; the services are {}",
                        known_services.join(", ")
                    ),
                ));
            }
            parse_base_url(&entry.url).map_err(|m| err(&format!("{key}.url"), m))?;
        }
        if let Some(missing) = known_services
            .iter()
            .find(|s| !self.services.contains_key(**s))
        {
            return Err(err(
                "services",
                format!("no [services.{missing}]: the suites need every service's URL"),
            ));
        }
        let signing = self.auth.secret_env.is_some() || self.auth.secret_file.is_some();
        let given = [
            self.auth.secret_env.is_some(),
            self.auth.secret_file.is_some(),
            self.auth.token_env.is_some(),
            self.auth.mint.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count();
        if given > 1 {
            return Err(err(
                "auth",
                "give one of secret_env, secret_file, token_env or mint".into(),
            ));
        }
        if let Some(mint) = &self.auth.mint {
            if !mint.contains("{tenant}") {
                return Err(err(
                    "auth.mint",
                    "names no {tenant}: the command must issue a token for the tenant asked".into(),
                ));
            }
        }
        let minted = self.auth.mint.is_some();
        let per_service_tokens = self.services.values().any(|s| s.token_env.is_some());
        if !signing && !minted && self.auth.token_env.is_none() && !per_service_tokens {
            return Err(err(
                "auth",
                "missing: give auth.secret_env or auth.secret_file (sign tokens), auth.token_env (bearer token), or auth.mint (a command printing one)".into(),
            ));
        }
        if let Some(ms) = self.auth.revocation_bound_ms {
            if !(1..=MAX_REVOCATION_BOUND_MS).contains(&ms) {
                return Err(err(
                    "auth.revocation_bound_ms",
                    format!(
                        "{ms} is out of range: the bound is 1 to {MAX_REVOCATION_BOUND_MS} ms (a token lives at most an hour); leave it out when the deployment cannot revoke tokens"
                    ),
                ));
            }
        }
        if !signing && !minted && self.auth.tenant.is_none() {
            return Err(err(
                "auth.tenant",
                "missing: bearer tokens are issued for one tenant; name it".into(),
            ));
        }
        let slos = std::iter::once(("slo".to_string(), self.slo.of(""))).chain(
            self.slo
                .endpoints
                .keys()
                .map(|e| (format!("slo.endpoints.\"{e}\""), self.slo.of(e))),
        );
        for (key, slo) in slos {
            check_slo(&slo).map_err(|m| err(&key, m))?;
        }
        for e in self.slo.endpoints.keys() {
            let ok = e
                .split_once(' ')
                .is_some_and(|(m, p)| !m.is_empty() && p.starts_with('/'));
            if !ok {
                return Err(err(
                    &format!("slo.endpoints.\"{e}\""),
                    "an endpoint is `METHOD /path`, like \"GET /health\"".into(),
                ));
            }
        }
        if let Some(load) = &self.capabilities.load {
            if load.max_connections == 0 || load.max_requests == 0 {
                return Err(err(
                    "capabilities.load",
                    "max_connections and max_requests must be at least 1 (leave [capabilities.load] out to forbid load)".into(),
                ));
            }
            // Load goes where it is declared to go, and nowhere else.
            for (name, entry) in &self.services {
                let Ok(base) = parse_base_url(&entry.url) else {
                    continue;
                };
                if !load.allows(&base.host) {
                    return Err(err(
                        "capabilities.load.hosts",
                        format!(
                            "service `{name}` is at {}, a host load may not be sent to: load goes to {} unless `hosts` declares another (hosts = [\"{}\"])",
                            base.host,
                            LOAD_HOSTS_BY_DEFAULT.join(", "),
                            base.host
                        ),
                    ));
                }
            }
        }
        if let Some(chaos) = &self.capabilities.chaos {
            parse_base_url(&chaos.toxiproxy).map_err(|m| err("capabilities.chaos.toxiproxy", m))?;
            if let Some(bad) = chaos
                .proxies
                .keys()
                .find(|s| !known_services.contains(&s.as_str()))
            {
                return Err(err(
                    &format!("capabilities.chaos.proxies.{bad}"),
                    format!("unknown service `{bad}`"),
                ));
            }
            if let Some(bad) = chaos
                .stores
                .keys()
                .find(|s| !known_services.contains(&s.as_str()))
            {
                return Err(err(
                    &format!("capabilities.chaos.stores.{bad}"),
                    format!("unknown service `{bad}`"),
                ));
            }
        }
        if let Some(restart) = &self.capabilities.restart {
            if restart.command.trim().is_empty() {
                return Err(err(
                    "capabilities.restart.command",
                    "is empty: give the command that restarts a service, with {service} where its name goes".into(),
                ));
            }
            if restart.timeout_s == Some(0) {
                return Err(err(
                    "capabilities.restart.timeout_s",
                    "must be at least 1".into(),
                ));
            }
        }
        if let Some(limits) = &self.capabilities.limits {
            if limits.max_resident_bytes.is_some_and(|b| b < 1 << 20) {
                return Err(err(
                    "capabilities.limits.max_resident_bytes",
                    "is under 1 MiB: give the bound in bytes (536870912 is 512 MiB)".into(),
                ));
            }
            if let Some(r) = &limits.rate_limit {
                if r.requests_per_second == 0 || r.burst == 0 {
                    return Err(err(
                        "capabilities.limits.rate_limit",
                        "requests_per_second and burst must be at least 1 (leave rate_limit out when there is none)".into(),
                    ));
                }
            }
        }
        if let Some(f) = &self.auth.secret_file {
            let f = self.resolve(path, f);
            if !f.is_file() {
                return Err(err(
                    "auth.secret_file",
                    format!("{} does not exist", f.display()),
                ));
            }
        }
        if let Some(tls) = &self.tls {
            let ca = self.resolve(path, &tls.ca_file);
            if !ca.is_file() {
                return Err(err(
                    "tls.ca_file",
                    format!("{} does not exist", ca.display()),
                ));
            }
        }
        Ok(())
    }

    /// `relative` as seen from the target file's folder.
    pub fn resolve(&self, target_file: &Path, relative: &Path) -> PathBuf {
        match target_file.parent() {
            Some(dir) if relative.is_relative() => dir.join(relative),
            _ => relative.to_path_buf(),
        }
    }

    /// The file as TOML, with a comment on top.
    pub fn to_toml(&self, comment: &str) -> Result<String, toml::ser::Error> {
        let body = toml::to_string_pretty(self)?;
        let head: String = comment.lines().map(|l| format!("# {l}\n")).collect();
        Ok(format!("{head}\n{body}"))
    }
}

fn check_slo(slo: &Slo) -> Result<(), String> {
    for (name, v) in [
        ("p50_ms", slo.p50_ms),
        ("p95_ms", slo.p95_ms),
        ("p99_ms", slo.p99_ms),
        ("min_throughput_rps", slo.min_throughput_rps),
    ] {
        if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
            return Err(format!("{name} must be a positive number"));
        }
    }
    if slo
        .max_error_rate
        .is_some_and(|r| !(0.0..=1.0).contains(&r))
    {
        return Err("max_error_rate is a share, from 0 to 1".into());
    }
    let order = [slo.p50_ms, slo.p95_ms, slo.p99_ms];
    let set: Vec<f64> = order.into_iter().flatten().collect();
    if set.windows(2).any(|w| w[0] > w[1]) {
        return Err("percentiles must not decrease (p50 ≤ p95 ≤ p99)".into());
    }
    Ok(())
}

/// The 1-based line of byte `offset`.
fn line_at(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

/// The line where `key` (dotted: `services.billing-engine.url`) is
/// written: as a table header, or its last part as a key under the right
/// header.
fn line_of_key(source: &str, key: &str) -> Option<usize> {
    let parts: Vec<&str> = key.split('.').collect();
    let header_of = |line: &str| -> Option<String> {
        let t = line.trim();
        t.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map(|h| h.trim_matches(['[', ']']).replace(['"', ' '], ""))
    };
    let want = key.replace(['"', ' '], "");
    let mut table = String::new();
    for (i, line) in source.lines().enumerate() {
        if let Some(h) = header_of(line) {
            if h == want {
                return Some(i + 1);
            }
            table = h;
            continue;
        }
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        let full = if table.is_empty() {
            k.to_string()
        } else {
            format!("{table}.{k}")
        };
        if full == want {
            return Some(i + 1);
        }
    }
    // A parent table, then.
    (1..parts.len()).rev().find_map(|n| {
        let parent = parts[..n].join(".").replace(['"', ' '], "");
        source
            .lines()
            .position(|l| header_of(l).is_some_and(|h| h == parent))
            .map(|i| i + 1)
    })
}
