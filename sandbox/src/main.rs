//! `sandbox`: runs the reference mesh.
//!
//! ```text
//! cargo run -p sandbox -- up [--port-base N] [--test-mode] [--tls] [--tenant NAME] [--write-target PATH] [--chaos-api ADDR]
//! cargo run -p sandbox -- bench [--clients N] [--requests N] [--tls] [--pool N] [--json PATH] [--breakdown]
//! cargo run -p sandbox -- token --service NAME --tenant NAME [--role ROLE] [--ttl SECS]
//! cargo run -p sandbox -- openapi [--service NAME]
//! cargo run -p sandbox -- completions bash
//! ```
//!
//! `up` uses `DATABASE_URL` / `REDIS_URL` when set, else PostgreSQL on
//! 127.0.0.1:5432 (database `sandbox`, created if missing) and Redis on
//! 127.0.0.1:6379, else private instances started from the local binaries.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{CommandFactory, Parser, Subcommand};
use sandbox::{Mesh, MeshConfig, Role, Service, token};

/// mimalloc: the services allocate in every layer of every request (see
/// `sandbox/Cargo.toml`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs the reference mesh: a healthcare API and five business services.
#[derive(Parser)]
#[command(name = "sandbox", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Up(Up),
    Bench(Bench),
    Token(Token),
    Restart(Restart),
    Openapi(Openapi),
    Completions(Completions),
}

/// Start the six services on loopback and print their addresses; Ctrl-C stops.
#[derive(clap::Args)]
#[command(after_long_help = "\
Environment:
  SANDBOX_SECRET    the token secret (at least 32 bytes; else one is drawn from the OS)
  SANDBOX_DATA_KEY  64 hex digits, the key sealing SSNs and birth dates at rest (else a
                    fresh one: records of an earlier run do not open)
  DATABASE_URL      PostgreSQL (else 127.0.0.1:5432, database `sandbox`, else a private instance)
  REDIS_URL         Redis (else 127.0.0.1:6379, else a private instance)")]
struct Up {
    /// Serve the six services on consecutive ports from N (else free ports)
    #[arg(long, value_name = "N")]
    port_base: Option<u16>,
    /// Serve POST /admin/faults and GET /admin/logs on every service; breakers wait 2 s open;
    /// 256 connections per service
    #[arg(long)]
    test_mode: bool,
    /// Serve HTTPS only: a CA and certificate made at start; the CA is written beside the
    /// target file (`<stem>.ca.pem`) and named in it as tls.ca_file
    #[arg(long)]
    tls: bool,
    /// The tenant of the token printed at start
    #[arg(long, value_name = "NAME", default_value = "demo")]
    tenant: String,
    /// Write a target file describing the mesh, for the suites' `--target PATH`
    #[arg(long, value_name = "PATH")]
    write_target: Option<PathBuf>,
    /// Serve a Toxiproxy-compatible API on ADDR (loopback) with a proxy in front of each
    /// service the API calls, declared in the target file
    #[arg(long, value_name = "ADDR", value_parser = chaos_api_addr)]
    chaos_api: Option<SocketAddr>,
    /// Listen on this loopback address (127.0.0.0/8 or ::1), e.g. 127.0.0.2 for a host
    /// other than localhost; the target file then declares it in [capabilities.load] hosts
    #[arg(long, value_name = "IP", default_value = "127.0.0.1", value_parser = loopback_ip)]
    bind: std::net::IpAddr,
    /// Stop when process PID ends (a test runner's setup script starts the
    /// mesh for the run and passes the runner's pid; see the README's nextest recipe)
    #[arg(long, value_name = "PID")]
    exit_with: Option<u32>,
}

/// Measure seed 004's criteria on a fresh mesh: p50/p95/p99, errors, throughput.
///
/// CLIENTS clients x REQUESTS requests on POST /patients, then as many claim sagas on
/// POST /visits; p50/p95/p99, errors and throughput per endpoint beside the seed's
/// thresholds. Run it in release: `cargo xtask bench mesh`.
#[derive(clap::Args)]
struct Bench {
    /// Concurrent clients
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = at_least_one)]
    clients: usize,
    /// Requests per client on each endpoint
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = at_least_one)]
    requests: usize,
    /// Requests per client on each endpoint before it is measured, not counted
    /// (reported apart as its warm-up: a cold mesh's first requests)
    #[arg(long, value_name = "N", default_value_t = 1)]
    warmup: usize,
    /// Serve and call over HTTPS
    #[arg(long)]
    tls: bool,
    /// PostgreSQL connections per service, 1 to 32 (six pools share the server's
    /// max_connections) [default: 8]
    #[arg(long = "pool", value_name = "N", value_parser = pool_size)]
    pool: Option<usize>,
    /// Also write the figures as JSON to PATH
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Also break each request's time down by service, route and part (handler,
    /// PostgreSQL, pool wait, Redis, audit writer, each peer call)
    #[arg(long)]
    breakdown: bool,
    /// Wait for each commit's WAL flush (synchronous_commit on, as the server
    /// has it) instead of committing asynchronously
    #[arg(long)]
    durable_commits: bool,
}

/// Restart one service of a running `up` on its port, through its control API.
///
/// `up --write-target` names this command (with the control address) as the
/// target file's capabilities.restart.
#[derive(clap::Args)]
struct Restart {
    /// The control API of the running `up` (printed at start)
    #[arg(long, value_name = "ADDR")]
    control: SocketAddr,
    /// The service to restart
    #[arg(value_name = "SERVICE", value_parser = service_name())]
    service: Service,
}

/// Print a person's token signed with SANDBOX_SECRET.
///
/// Start `up` with SANDBOX_SECRET set and use the same secret here.
#[derive(clap::Args)]
struct Token {
    /// The service the token is for (its audience)
    #[arg(long, value_name = "NAME", value_parser = service_name())]
    service: Service,
    /// The tenant the token acts in
    #[arg(long, value_name = "NAME")]
    tenant: String,
    /// The person's role
    #[arg(long, value_name = "ROLE", value_parser = role_name(), default_value = "admin")]
    role: Role,
    /// How long the token is valid, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    ttl: u64,
}

/// Print the OpenAPI 3.1 documents the services serve at /openapi.json.
///
/// One service's, or all six keyed by service name (the shape of the suites' snapshot
/// suites/contracts/v1.json).
#[derive(clap::Args)]
struct Openapi {
    /// Only this service's document
    #[arg(long, value_name = "NAME", value_parser = service_name())]
    service: Option<Service>,
}

/// Print a shell completion script.
///
/// For example: `sandbox completions bash > ~/.local/share/bash-completion/completions/sandbox`.
#[derive(clap::Args)]
struct Completions {
    shell: clap_complete::Shell,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Token(args) => print_token(args),
        Command::Openapi(args) => print_openapi(args),
        Command::Completions(Completions { shell }) => {
            // Into a buffer: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sandbox", &mut script);
            print_stdout(&script)
        }
        Command::Up(args) => runtime()?.block_on(up(args)),
        Command::Bench(args) => runtime()?.block_on(bench(args)),
        Command::Restart(args) => runtime()?.block_on(async {
            let answer = sandbox::control::request_restart(args.control, args.service.name())
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{answer}");
            Ok(())
        }),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// `--service`: one of the six names (listed in help and completions).
fn service_name() -> impl TypedValueParser<Value = Service> {
    PossibleValuesParser::new(Service::ALL.map(Service::name))
        .try_map(|name| Service::from_name(&name).ok_or("no such service"))
}

/// `--role`: one of the four names.
fn role_name() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.map(Role::name))
        .try_map(|name| Role::from_name(&name).ok_or("no such role"))
}

fn chaos_api_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| "expected a loopback address, e.g. 127.0.0.1:8474".to_string())
}

fn at_least_one(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| "expected a whole number, at least 1".to_string())
}

fn pool_size(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=32).contains(n))
        .ok_or_else(|| "expected a number of connections per service, 1 to 32".to_string())
}

async fn bench(args: Bench) -> anyhow::Result<()> {
    let Bench {
        clients,
        requests,
        warmup,
        tls,
        pool: pool_size,
        json: json_path,
        breakdown,
        durable_commits,
    } = args;
    if breakdown {
        sandbox::timing::enable();
    }
    // A database of the run's own, dropped after: rows an earlier run left
    // (a million audit rows after a few runs) would slow this one.
    let (database_url, _pg, own_database) = bench_database().await?;
    let (redis, _redis) = redis().await?;
    let mut config = MeshConfig::new(&database_url, redis.clone());
    config.redis_prefix = format!("bench:{}:", std::process::id());
    let prefix = config.redis_prefix.clone();
    if tls {
        config.tls = Some(std::sync::Arc::new(sandbox::TlsMaterial::generate()?));
    }
    if let Some(n) = pool_size {
        config.pool.max_size = n;
    }
    config.pool.durable_commits = durable_commits;
    // Measured as a started deployment serves: its connections open.
    config.pool.open_at_start = true;
    // The benchmark's one tenant sends far more than a tenant may.
    config.rate_limit = None;
    let pool = config.pool;
    let mesh = Mesh::start(config).await.context("starting the mesh")?;
    eprintln!(
        "[bench mesh] {clients} clients x {requests} requests per endpoint, after {warmup} each not counted (warm-up); TLS {}; pool {} per service, opened at start; build {}",
        if tls { "on" } else { "off" },
        pool.max_size,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    // What else the machine ran (the figures depend on it): the 1-minute load
    // average before and after.
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
    };
    let load_before = load();
    let run = sandbox::bench::run(&mesh, clients, requests, warmup, seed).await;
    let figures = &run.measured;
    let load_after = load();
    println!(
        "{:<16} {:>8} {:>7} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "endpoint", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "req/s", "cpu ms/req"
    );
    for f in figures {
        println!(
            "{:<16} {:>8} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>10.0} {:>9.2}",
            f.endpoint,
            f.requests,
            f.errors,
            f.p50_ms,
            f.p95_ms,
            f.p99_ms,
            f.throughput_rps,
            f.cpu_ms_per_request.unwrap_or(f64::NAN)
        );
        for e in &f.first_errors {
            println!("    e.g. {e}");
        }
    }
    for f in &run.warmup {
        println!(
            "{:<16} {:>8} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>10.0}   (warm-up, not counted)",
            f.endpoint, f.requests, f.errors, f.p50_ms, f.p95_ms, f.p99_ms, f.throughput_rps,
        );
    }
    for f in figures {
        if let Some(b) = &f.breakdown {
            sandbox::bench::print_breakdown(&f.endpoint, b);
        }
    }
    if let (Some(b), Some(a)) = (load_before, load_after) {
        println!("load average (1 min): {b:.2} before, {a:.2} after");
    }
    println!(
        "seed 004: p99 < {} ms, errors < {} %, intake > {} req/s",
        sandbox::bench::P99_MS,
        sandbox::bench::MAX_ERROR_RATE * 100.0,
        sandbox::bench::MIN_INTAKE_RPS
    );
    if let Some(path) = json_path {
        let doc = serde_json::json!({
            "clients": clients,
            "requests_per_client": requests,
            "warmup_per_client": warmup,
            "tls": tls,
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "pool_per_service": pool.max_size,
            "breakdown": breakdown,
            "durable_commits": durable_commits,
            "cores": std::thread::available_parallelism().map_or(0, usize::from),
            "load_average_1m": {"before": load_before, "after": load_after},
            "endpoints": figures.iter().map(|f| {
                let mut v = serde_json::to_value(f).unwrap_or_default();
                v["thresholds"] = f.against_seed();
                v
            }).collect::<Vec<_>>(),
            "warmup": &run.warmup,
        });
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("written: {}", path.display());
    }
    drop(mesh);
    // The run's Redis keys (idempotency slots kept a day, cached answers):
    // under its own prefix, deleted as its database is dropped.
    match sandbox::store::Cache::connect(&redis, &prefix).await {
        Ok(cache) => {
            if let Err(e) = cache.forget_all().await {
                eprintln!(
                    "[bench mesh] the run's Redis keys ({prefix}*) were not all deleted: {e}"
                );
            }
        }
        Err(e) => eprintln!("[bench mesh] the run's Redis keys ({prefix}*) were left: {e}"),
    }
    if let Some((admin_url, name)) = own_database {
        // The services' pools close with the mesh; FORCE ends any straggler.
        let admin = sandbox::store::connect(&admin_url).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .with_context(|| format!("dropping the bench's database {name}"))?;
    }
    Ok(())
}

/// The bench's database: `DATABASE_URL`'s as given, or a fresh
/// `sandbox_bench_<pid>` on the server found, with the admin URL and name
/// to drop it by after the run.
async fn bench_database() -> anyhow::Result<(
    String,
    Option<provision::Instance>,
    Option<(String, String)>,
)> {
    let found = match find_postgres().await? {
        Found::Given(url) => return Ok((url, None, None)),
        Found::Server(found) => found,
    };
    let name = format!("sandbox_bench_{}", std::process::id());
    let admin_url = found.url("postgres");
    let admin = sandbox::store::connect(&admin_url).await?;
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .with_context(|| format!("preparing the bench's database {name}"))?;
    }
    Ok((found.url(&name), found.instance, Some((admin_url, name))))
}

fn print_token(args: Token) -> anyhow::Result<()> {
    let Token {
        service,
        tenant,
        role,
        ttl,
    } = args;
    let secret = std::env::var("SANDBOX_SECRET")
        .context("SANDBOX_SECRET is unset: start `up` with SANDBOX_SECRET and use the same here")?;
    if secret.len() < 32 {
        bail!(
            "SANDBOX_SECRET is {} bytes; it must be at least 32",
            secret.len()
        );
    }
    if ttl > token::MAX_LIFETIME.as_secs() {
        bail!(
            "--ttl {ttl}: the services accept tokens valid for at most {} s",
            token::MAX_LIFETIME.as_secs()
        );
    }
    println!(
        "{}",
        token::sign_user(
            secret.as_bytes(),
            "cli",
            role,
            service.name(),
            &tenant,
            Duration::from_secs(ttl)
        )
    );
    Ok(())
}

/// Where PostgreSQL is (the `provision` chain: `DATABASE_URL`, the local
/// server, a private instance), with a `sandbox` database on it: its URL,
/// and the private instance to keep alive.
async fn postgres() -> anyhow::Result<(String, Option<provision::Instance>)> {
    let found = match find_postgres().await? {
        Found::Given(url) => return Ok((url, None)),
        Found::Server(found) => found,
    };
    let admin = sandbox::store::connect(&found.url("postgres")).await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = 'sandbox'", &[])
        .await?
        .is_some();
    if !exists {
        admin.batch_execute("CREATE DATABASE sandbox").await?;
    }
    Ok((found.url("sandbox"), found.instance))
}

/// Where PostgreSQL is.
enum Found {
    /// `DATABASE_URL` names the database to use, as given.
    Given(String),
    /// A server (`provision`'s chain: configured, local, or a private
    /// instance started for this process).
    Server(Box<provision::PostgresSource>),
}

async fn find_postgres() -> anyhow::Result<Found> {
    let found = provision::postgres_for_run(true).await?;
    if found.source == "private" {
        eprintln!("PostgreSQL: none configured or running locally; started a private instance");
    }
    if found.source == "env" {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Ok(Found::Given(url.trim().to_string()));
        }
    }
    Ok(Found::Server(Box::new(found)))
}

/// Where Redis is (the `provision` chain: `REDIS_URL`, the local server, a
/// private instance), and the private instance to keep alive.
async fn redis() -> anyhow::Result<(provision::RedisEndpoint, Option<provision::Instance>)> {
    let found = provision::redis_for_run(true).await?;
    if found.source == "private" {
        eprintln!("Redis: none configured or running locally; started a private instance");
    }
    Ok((found.endpoint, found.instance))
}

async fn up(args: Up) -> anyhow::Result<()> {
    let Up {
        port_base,
        test_mode,
        tls,
        tenant,
        write_target,
        chaos_api,
        exit_with,
        bind,
    } = args;
    if tls && !matches!(bind.to_string().as_str(), "127.0.0.1" | "::1") {
        anyhow::bail!(
            "--tls serves a certificate for localhost, 127.0.0.1 and ::1: it cannot go with --bind {bind}"
        );
    }
    let (database_url, _pg) = postgres().await?;
    let (redis, _redis) = redis().await?;
    let mut config = MeshConfig::new(&database_url, redis);
    config.test_mode = test_mode;
    config.bind = bind;
    if test_mode {
        MeshConfig::test_mode_breakers(&mut config.client);
        config.server = MeshConfig::test_mode_server();
    }
    config.echo_logs = true;
    config.redis_prefix = "sandbox:".into();
    let secret_from_env = std::env::var("SANDBOX_SECRET").ok();
    if let Some(secret) = &secret_from_env {
        if secret.len() < 32 {
            bail!(
                "SANDBOX_SECRET is {} bytes; a token secret must be at least 32 (unset it and `up` draws one from the OS)",
                secret.len()
            );
        }
        config.secret = secret.clone().into_bytes();
    }
    if let Ok(hex) = std::env::var("SANDBOX_DATA_KEY") {
        config.data_key = parse_data_key(&hex)?;
    }
    if let Some(base) = port_base {
        config.ports = Service::ALL
            .iter()
            .enumerate()
            .map(|(k, s)| (*s, base.saturating_add(k as u16)))
            .collect::<BTreeMap<_, _>>();
    }
    let ca_path = if tls {
        let material = sandbox::TlsMaterial::generate()?;
        let path = match &write_target {
            Some(target) => target.with_file_name(format!("{}.ca.pem", file_stem(target))),
            None => std::env::temp_dir().join(format!("sandbox-{}.ca.pem", std::process::id())),
        };
        material.write_ca(&path)?;
        config.tls = Some(std::sync::Arc::new(material));
        Some(path)
    } else {
        None
    };
    // Shown masked (its Display).
    let config_redis = config.redis.to_string();
    // The Redis an operator reads (the target file's storage.redis_url),
    // as the database URL is: the store itself, not its TLS front.
    let store_redis = config.redis.clone();
    // With TLS on, the stores' TLS fronts come first, so that the chaos
    // proxies between the services and their stores carry only TLS.
    let store_fronts = sandbox::store_tls::front_stores(&mut config)
        .await
        .context("putting TLS fronts before the stores")?;
    let mut front = match chaos_api {
        Some(addr) => {
            let mut front = sandbox::chaos::ChaosFront::listen(addr)
                .await
                .context("starting the chaos API")?;
            front
                .front_stores(&mut config)
                .await
                .context("putting proxies between the services and their stores")?;
            Some(front)
        }
        None => None,
    };
    let mesh = std::sync::Arc::new(Mesh::start(config).await.context("starting the mesh")?);
    let control =
        sandbox::control::Control::start(std::sync::Arc::clone(&mesh), SocketAddr::new(bind, 0))
            .await
            .context("starting the control API")?;
    println!(
        "sandbox up: PostgreSQL {}, Redis {}",
        provision::mask(&database_url),
        config_redis
    );
    for s in mesh.addrs().keys() {
        println!("  {:<24} {}", s.name(), mesh.url(*s));
    }
    let cacert = match &ca_path {
        Some(path) => {
            println!(
                "TLS on: plain HTTP is refused; the CA is {}",
                path.display()
            );
            for f in store_fronts.fronts() {
                println!(
                    "  {} over TLS only: the services reach {} through a TLS front at {}",
                    f.kind().name(),
                    f.upstream(),
                    f.addr()
                );
            }
            format!("--cacert {} ", path.display())
        }
        None => String::new(),
    };
    let api = mesh.url(Service::HealthcareApi);
    let token = mesh.token(Service::HealthcareApi, &tenant, Duration::from_secs(3600));
    println!("token for healthcare-api, tenant `{tenant}` (1 h):\n  {token}");
    println!(
        "try: curl -s {cacert}{api}/health\n     curl -s {cacert}-H 'Authorization: Bearer {token}' -H 'X-Tenant-ID: {tenant}' {api}/patients/none"
    );
    if test_mode {
        println!(
            "test mode: POST /admin/faults and GET /admin/logs on every service; breakers wait 2 s open"
        );
    }
    if let Some(front) = &mut front {
        front
            .front_services(&mesh)
            .await
            .context("putting proxies in front of the services")?;
        println!("chaos: Toxiproxy-compatible API at {}", front.url());
        for (s, p) in front.proxies() {
            println!("  proxy `{p}` in front of {s}");
        }
        for (s, p) in front.stores() {
            println!(
                "  proxies `{}` and `{}` between {s} and its stores",
                p.postgres.as_deref().unwrap_or("-"),
                p.redis.as_deref().unwrap_or("-")
            );
        }
    }
    let chaos = front;
    let restart = deployment::Restart {
        command: format!(
            "{} restart --control {} {{service}}",
            shell_quote(
                &std::env::current_exe()
                    .context("finding this program's path")?
                    .to_string_lossy()
            ),
            control.addr()
        ),
        timeout_s: Some(30),
    };
    println!("restart a service: {}", restart.command);
    if let Some(path) = &write_target {
        write_target_file(
            &mesh,
            path,
            &database_url,
            secret_from_env.is_some(),
            test_mode,
            Declared {
                chaos: chaos.as_ref().map(sandbox::chaos::ChaosFront::describe),
                ca: ca_path.as_deref(),
                restart,
                redis: &store_redis,
            },
        )?;
        println!(
            "target file: {} (run the suites with --target {})",
            path.display(),
            path.display()
        );
    }
    println!("Ctrl-C stops");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("waiting for SIGTERM")?;
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => stopped.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
        () = process_ends(exit_with) => println!("process {} ended", exit_with.unwrap_or(0)),
    }
    println!("stopping");
    drop(control);
    drop(chaos);
    drop(mesh);
    drop(store_fronts);
    Ok(())
}

/// `--bind`: an address of this machine's loopback only.
fn loopback_ip(s: &str) -> Result<std::net::IpAddr, String> {
    let ip: std::net::IpAddr = s
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address"))?;
    if ip.is_loopback() {
        Ok(ip)
    } else {
        Err(format!(
            "{ip} is not a loopback address (127.0.0.0/8 or ::1): the sandbox serves this machine only"
        ))
    }
}

/// Returns when process `pid` no longer runs (never, for `None`).
async fn process_ends(pid: Option<u32>) {
    let Some(pid) = pid else {
        return std::future::pending().await;
    };
    let alive = std::path::PathBuf::from(format!("/proc/{pid}"));
    while alive.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `SANDBOX_DATA_KEY`: 64 hex digits, the AES-256 key sealing SSNs and
/// dates of birth at rest.
fn parse_data_key(hex: &str) -> anyhow::Result<Vec<u8>> {
    let hex = hex.trim();
    let bytes: Option<Vec<u8>> = (hex.len() == 64 && hex.is_ascii())
        .then(|| {
            (0..32)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect()
        })
        .flatten();
    bytes.with_context(|| {
        format!(
            "SANDBOX_DATA_KEY is not 64 hex digits (32 bytes); it has {} characters",
            hex.len()
        )
    })
}

/// `text` as one word for `sh`: single-quoted unless plainly safe.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// `t` for `dir/t.toml`.
fn file_stem(path: &std::path::Path) -> String {
    path.file_stem()
        .map_or_else(|| "target".into(), |s| s.to_string_lossy().into_owned())
}

/// What the target file declares beyond the mesh itself.
struct Declared<'a> {
    /// The chaos API and its proxies (`--chaos-api`).
    chaos: Option<deployment::Chaos>,
    /// The CA to trust (`--tls`).
    ca: Option<&'a std::path::Path>,
    /// The command restarting a service.
    restart: deployment::Restart,
    /// The Redis the services use, as the store itself (not a TLS front).
    redis: &'a provision::RedisEndpoint,
}

/// Writes the target file describing `mesh` at `path`. The secret is never
/// in it: the file names `SANDBOX_SECRET` when that was set, else a file
/// beside it (`<stem>.secret`, mode 0600) holding the generated secret.
fn write_target_file(
    mesh: &Mesh,
    path: &std::path::Path,
    database_url: &str,
    secret_from_env: bool,
    test_mode: bool,
    declared: Declared<'_>,
) -> anyhow::Result<()> {
    let Declared {
        chaos,
        ca,
        restart,
        redis,
    } = declared;
    let auth = if secret_from_env {
        deployment::Auth {
            secret_env: Some("SANDBOX_SECRET".into()),
            ..deployment::Auth::default()
        }
    } else {
        let secret_name = format!("{}.secret", file_stem(path));
        let secret_path = path.with_file_name(&secret_name);
        sandbox::target::write_secret(&secret_path, &mesh.config().secret)
            .with_context(|| format!("writing {}", secret_path.display()))?;
        deployment::Auth {
            secret_file: Some(secret_name.into()),
            ..deployment::Auth::default()
        }
    };
    let description = sandbox::target::Description {
        name: "sandbox".into(),
        auth,
        database_url: database_url.to_string(),
        test_mode,
        chaos,
        tls: ca.and_then(|p| p.file_name()).map(|name| deployment::Tls {
            ca_file: name.into(),
        }),
        restart: Some(restart),
    };
    let mut file = sandbox::target::describe(mesh, &description);
    // With its password: the file describes the target.
    file.storage.redis_url = Some(redis.url());
    let text = file
        .to_toml(&format!(
            "The running sandbox, written by `sandbox up --write-target` (pid {}).\nValid while it runs.",
            std::process::id()
        ))
        .context("writing the target file as TOML")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `sandbox openapi [--service NAME]`.
fn print_openapi(args: Openapi) -> anyhow::Result<()> {
    let doc = |s: Service| serde_json::to_value(sandbox::openapi::document(s));
    let out = match args.service {
        None => {
            let mut all = serde_json::Map::new();
            for s in Service::ALL {
                all.insert(s.name().to_string(), doc(s)?);
            }
            serde_json::Value::Object(all)
        }
        Some(service) => doc(service)?,
    };
    let mut text = serde_json::to_string_pretty(&out)?;
    text.push('\n');
    print_stdout(text.as_bytes())
}

/// Writes `bytes` to standard output. `sandbox openapi | head` closes the
/// pipe early: not an error.
fn print_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
