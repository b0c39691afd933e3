//! The mesh described as a target file (`sandbox up --write-target`), and
//! the SLOs the sandbox is held to.
//!
//! The suites then test the running mesh knowing only the file: the
//! external path, for real.

use std::collections::BTreeMap;
use std::path::PathBuf;

use deployment::{
    Auth, Capabilities, LoadCeiling, ServiceEntry, Slo, SloTable, Storage, TargetFile,
};

use crate::mesh::Mesh;
use crate::service::Service;

/// The sandbox's SLOs: what a debug build on a 2-core machine meets while
/// the whole suite runs beside it. Seed 004's criteria (p99 < 100 ms, > 1000
/// req/s) are the release benchmark's goal, not the suites'.
pub fn slos() -> SloTable {
    let endpoint = |p99_ms: f64, min_throughput_rps: f64| Slo {
        p99_ms: Some(p99_ms),
        min_throughput_rps: Some(min_throughput_rps),
        ..Slo::default()
    };
    SloTable {
        p50_ms: None,
        p95_ms: None,
        p99_ms: Some(1000.0),
        max_error_rate: Some(0.01),
        min_throughput_rps: Some(10.0),
        endpoints: BTreeMap::from([
            ("GET /health".to_string(), endpoint(500.0, 50.0)),
            ("POST /visits".to_string(), endpoint(5000.0, 2.0)),
            ("POST /patients".to_string(), endpoint(3000.0, 5.0)),
        ]),
    }
}

/// The resident memory the sandbox's process stays under, also under a
/// burst (a debug build, every service in one process; in process, the
/// suites' own process too).
pub const MAX_RESIDENT_BYTES: u64 = 1 << 30;

/// The limits a mesh of `config` enforces, as a target file declares them.
pub fn limits(config: &crate::mesh::MeshConfig) -> deployment::Limits {
    deployment::Limits {
        max_resident_bytes: Some(MAX_RESIDENT_BYTES),
        rate_limit: config.rate_limit.map(|r| deployment::RateLimit {
            requests_per_second: r.per_second,
            burst: r.burst,
        }),
    }
}

/// How the written file authenticates and what it declares.
#[derive(Debug, Clone)]
pub struct Description {
    /// `name = …`.
    pub name: String,
    /// Where the token secret is (the file holds its path, never the secret).
    pub auth: Auth,
    /// The database URL the services use (rows may be read).
    pub database_url: String,
    /// Faults and logs are declared only in test mode.
    pub test_mode: bool,
    /// The Toxiproxy-compatible API in front of the services, if any.
    pub chaos: Option<deployment::Chaos>,
    /// With `up --tls`: the CA file (beside the target file).
    pub tls: Option<deployment::Tls>,
    /// The command that restarts one of its services.
    pub restart: Option<deployment::Restart>,
}

/// The running `mesh` as a target file. Load may go where the services
/// listen: a bind address other than `127.0.0.1` is declared in
/// `[capabilities.load] hosts`.
pub fn describe(mesh: &Mesh, d: &Description) -> TargetFile {
    let bind = mesh.config().bind.to_string();
    let hosts = if deployment::LOAD_HOSTS_BY_DEFAULT.contains(&bind.as_str()) {
        Vec::new()
    } else {
        vec![bind]
    };
    let services = mesh
        .addrs()
        .iter()
        .map(|(s, a)| {
            (
                s.name().to_string(),
                ServiceEntry {
                    url: format!("{}://{a}", mesh.scheme()),
                    token_env: None,
                },
            )
        })
        .collect();
    TargetFile {
        name: d.name.clone(),
        services,
        auth: Auth {
            revocation_bound_ms: Some(crate::gate::sessions::REVOCATION_BOUND.as_millis() as u64),
            ..d.auth.clone()
        },
        tls: d.tls.clone(),
        slo: slos(),
        storage: Storage {
            database_url: Some(d.database_url.clone()),
            database_url_env: None,
            // With its password: the file describes the target.
            redis_url: Some(mesh.config().redis.url()),
            redis_prefix: Some(mesh.config().redis_prefix.clone()),
        },
        capabilities: Capabilities {
            faults: d.test_mode,
            logs: d.test_mode,
            stop_restart: false,
            load: Some(LoadCeiling {
                max_connections: 512,
                max_requests: 20_000,
                max_rps: None,
                hosts,
            }),
            chaos: d.chaos.clone(),
            restart: d.restart.clone(),
            limits: Some(limits(mesh.config())),
        },
    }
}

/// Service names, as a target file names them.
pub fn service_names() -> Vec<&'static str> {
    Service::ALL.iter().map(|s| s.name()).collect()
}

/// Writes `secret` to `path` readable by its owner only.
pub fn write_secret(path: &PathBuf, secret: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(path)?.write_all(secret)
}
