//! PostgreSQL: the run's server ([`Postgres`]), a fresh database per test
//! ([`TestDb`]), the migrations every test database starts with.

use std::str::FromStr;
use std::time::{Duration, Instant};

use harness::{Fixture, FixtureCx, FixtureError, Scope};
use std::process::{Command, Stdio};

use crate::error::ProvisionError;
use crate::instance::{
    Instance, Kind, as_user, dies_with_us, find_binary, instance_dir, run_as, start_on_a_free_port,
    unique,
};
use crate::secret::{random_password, write_private_file};

const STORE: &str = "PostgreSQL";

/// A schema migration applied to the template every [`TestDb`] is cloned from.
#[derive(Debug)]
pub struct Migration {
    /// Applied in name order (`001_claims`).
    pub name: &'static str,
    /// The SQL (several statements allowed).
    pub sql: &'static str,
}

inventory::collect!(Migration);

/// Registers a migration: `provision::migration!("001_claims", "CREATE TABLE …");`
#[macro_export]
macro_rules! migration {
    ($name:literal, $sql:expr $(,)?) => {
        $crate::__inventory::submit! { $crate::postgres::Migration { name: $name, sql: $sql } }
    };
}

/// A PostgreSQL server for the run, with the migrated template.
pub struct Postgres {
    config: tokio_postgres::Config,
    /// Where the server listens, for messages.
    pub address: String,
    /// `env` (DATABASE_URL), `private` (started for this run) or `hosted`
    /// (the host process's, attached to).
    pub source: &'static str,
    template: String,
    _instance: Option<Instance>,
}

impl Postgres {
    /// A connection string for a database on this server, with the
    /// credentials (a private instance's password too): hand it only to
    /// what connects, print it only through [`crate::mask`].
    pub fn url(&self, database: &str) -> String {
        url_of(&self.config, &self.address, database)
    }

    /// A fresh database for a consumer of any scope (a session-wide mesh,
    /// say): cloned from the migrated template, dropped when `cx`'s scope
    /// ends. Returns its URL.
    pub async fn fresh_database(&self, cx: &mut FixtureCx) -> Result<String, FixtureError> {
        let name = unique("st_db");
        let admin = self.connect("postgres").await.map_err(FixtureError::new)?;
        clone_database(&admin, &name, &self.template)
            .await
            .map_err(|e| FixtureError::new(format!("cloning the template: {e}")))?;
        drop_database_after(cx, admin, &name);
        Ok(self.url(&name))
    }

    async fn connect(&self, database: &str) -> Result<tokio_postgres::Client, String> {
        let mut cfg = self.config.clone();
        cfg.dbname(database);
        connect(&cfg).await
    }
}

async fn connect(cfg: &tokio_postgres::Config) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Where the run's PostgreSQL came from, and the private instance to keep
/// alive (stopped when dropped).
pub struct PostgresSource {
    /// How to connect (to its `postgres` database).
    pub config: tokio_postgres::Config,
    /// `host:port`.
    pub address: String,
    /// `env` (`DATABASE_URL`), `local` (the conventional local server) or
    /// `private` (started for this run).
    pub source: &'static str,
    /// The private instance, if one was started.
    pub instance: Option<Instance>,
}

impl PostgresSource {
    /// A connection string for `database` on this server, with the
    /// credentials (see [`Postgres::url`]).
    pub fn url(&self, database: &str) -> String {
        url_of(&self.config, &self.address, database)
    }
}

/// `postgres://user:password@address/database` from `config`'s user and
/// password, percent-encoded (tokio-postgres decodes them): a password of
/// `DATABASE_URL` survives the round trip whatever its characters.
fn url_of(config: &tokio_postgres::Config, address: &str, database: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, percent_encode};
    let user = config.get_user().unwrap_or("postgres");
    let mut userinfo = percent_encode(user.as_bytes(), NON_ALPHANUMERIC).to_string();
    if let Some(password) = config.get_password() {
        userinfo.push(':');
        userinfo.extend(percent_encode(password, NON_ALPHANUMERIC));
    }
    let database = percent_encode(database.as_bytes(), NON_ALPHANUMERIC);
    format!("postgres://{userinfo}@{address}/{database}")
}

/// The server at `url` named by `var`, checked by connecting.
async fn from_url(var: &'static str, url: &str) -> Result<PostgresSource, ProvisionError> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| ProvisionError::bad_url(STORE, var, url, e))?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let address = format!("{host}:{port}");
    connect(&config)
        .await
        .map_err(|reason| ProvisionError::connect(STORE, &address, format!("{var}: {reason}")))?;
    Ok(PostgresSource {
        config,
        address,
        source: "env",
        instance: None,
    })
}

/// The run's PostgreSQL, by the crate's fallback chain: `DATABASE_URL`;
/// then, when `try_local` (`sandbox up`), the conventional local server
/// `postgres://postgres@127.0.0.1:5432/postgres`; then a private instance
/// from the local binaries; else [`ProvisionError::Unavailable`].
pub async fn postgres_for_run(try_local: bool) -> Result<PostgresSource, ProvisionError> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !url.trim().is_empty() {
            return from_url("DATABASE_URL", url.trim()).await;
        }
    }
    if try_local {
        let local = "postgres://postgres@127.0.0.1:5432/postgres";
        if let Ok(mut found) = from_url("the local default", local).await {
            found.source = "local";
            return Ok(found);
        }
    }
    let (config, address, instance) = start_postgres().await?;
    Ok(PostgresSource {
        config,
        address,
        source: "private",
        instance: Some(instance),
    })
}

/// Starts a private PostgreSQL from the local binaries (see the crate
/// docs) and returns a URL of its `postgres` database, with its password,
/// and the instance, which stops it when dropped.
pub async fn private_postgres() -> Result<(String, Instance), ProvisionError> {
    let (cfg, address, instance) = start_postgres().await?;
    Ok((url_of(&cfg, &address, "postgres"), instance))
}

/// A private instance refuses whoever lacks its password: TCP on loopback
/// is open to every local user, so `trust` would hand any of them every
/// test database. The password is random per instance, reaches `initdb`
/// through a file of mode 0600 in the instance's 0700 directory (never a
/// command line, which every user can read in `/proc`), and is removed
/// once `initdb` has hashed it (SCRAM: the server keeps no plain text).
const AUTH: &str = "--auth=scram-sha-256";

async fn start_postgres() -> Result<(tokio_postgres::Config, String, Instance), ProvisionError> {
    let (Some(initdb), Some(server)) = (find_binary("initdb"), find_binary("postgres")) else {
        return Err(ProvisionError::Unavailable {
            store: STORE,
            var: "DATABASE_URL",
            binaries: "initdb/postgres are",
        });
    };
    let start = |step: &str, e: &dyn std::fmt::Display| ProvisionError::start(STORE, step, e);
    let user = run_as(Kind::Postgres).map_err(|e| start("choosing the user to run as", &e))?;
    let dir = instance_dir(Kind::Postgres, user)
        .map_err(|e| start("creating the instance directory", &e))?;
    let password = random_password().map_err(|e| start("choosing a password", &e))?;
    let pwfile = dir.join("pwfile");
    if let Err(e) = write_private_file(&pwfile, &password, user) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(start("writing the password file", &e));
    }
    let data = dir.join("data");
    let out = as_user(&mut Command::new(&initdb), user)
        .args(["-D"])
        .arg(&data)
        .arg("--pwfile")
        .arg(&pwfile)
        .args([
            "-U",
            "postgres",
            AUTH,
            "--no-sync",
            "-E",
            "UTF8",
            "--no-locale",
        ])
        .output();
    let _ = std::fs::remove_file(&pwfile);
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(start(&format!("running {}", initdb.display()), &e));
        }
    };
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(start(
            "initdb",
            &String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    let spawn = |port: u16| {
        let log = std::fs::File::create(dir.join("server.log"))?;
        dies_with_us(as_user(&mut Command::new(&server), user), libc::SIGQUIT)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| std::io::Error::other(format!("{}: {e}", server.display())))
    };
    let config = |port: u16| {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(port)
            .user("postgres")
            .password(password.as_str())
            .dbname("postgres");
        cfg
    };
    let ready = |port: u16| {
        let cfg = config(port);
        async move { connect(&cfg).await.map(drop) }
    };
    let (port, child) = match start_on_a_free_port(spawn, ready, Duration::from_secs(20)).await {
        Ok((port, child, ())) => (port, child),
        Err(failure) => {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(start(&failure.step, &format!("{}\n{log}", failure.detail)));
        }
    };
    let instance = Instance { child, dir };
    let cfg = config(port);
    Ok((cfg, format!("127.0.0.1:{port}"), instance))
}

impl Fixture for Postgres {
    const SCOPE: Scope = Scope::Session;

    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let found = postgres_for_run(false).await?;
        let sql = |e: String| FixtureError::from(ProvisionError::Sql(e));
        let admin = connect(&found.config).await.map_err(sql)?;
        let template = unique("st_template");
        admin
            .batch_execute(&format!("CREATE DATABASE {template}"))
            .await
            .map_err(|e| sql(format!("creating the template: {e}")))?;
        let mut tcfg = found.config.clone();
        tcfg.dbname(&template);
        {
            let t = connect(&tcfg).await.map_err(sql)?;
            apply_migrations(&t).await.map_err(sql)?;
        }
        drop_database_after(cx, admin, &template);
        Ok(Postgres {
            config: found.config,
            address: found.address,
            source: found.source,
            template,
            _instance: found.instance,
        })
    }
}

/// The run's server is shared with isolated test processes (see
/// `harness::host`): they clone their databases from the host's template.
impl harness::host::Hostable for Postgres {
    fn handle(&self) -> Result<serde_json::Value, FixtureError> {
        Ok(serde_json::json!({
            "url": self.url("postgres"),
            "address": self.address,
            "template": self.template,
        }))
    }

    async fn attach(handle: serde_json::Value, _cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let field = |k: &str| {
            handle[k].as_str().map(str::to_string).ok_or_else(|| {
                FixtureError::new(format!("hosted Postgres: no `{k}` in the handle"))
            })
        };
        let url = field("url")?;
        let config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| FixtureError::new(format!("hosted Postgres: {e}")))?;
        Ok(Postgres {
            config,
            address: field("address")?,
            source: "hosted",
            template: field("template")?,
            _instance: None,
        })
    }
}

harness::hostable!(Postgres);

/// Applies every registered migration, in name order.
async fn apply_migrations(db: &tokio_postgres::Client) -> Result<(), String> {
    let mut migrations: Vec<&Migration> = inventory::iter::<Migration>.into_iter().collect();
    migrations.sort_by_key(|m| m.name);
    for m in migrations {
        db.batch_execute(m.sql)
            .await
            .map_err(|e| format!("migration {}: {e}", m.name))?;
    }
    Ok(())
}

/// Drops database `name` when the fixture's scope ends, over `admin`.
fn drop_database_after(cx: &mut FixtureCx, admin: tokio_postgres::Client, name: &str) {
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    cx.on_teardown(async move { admin.batch_execute(&sql).await.map_err(|e| e.to_string()) });
}

/// A fresh database for one test, cloned from the migrated template and
/// dropped after the test.
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// Its connection string.
    pub url: String,
    /// A connection to it.
    pub client: tokio_postgres::Client,
    /// How long creating it took.
    pub created_in: Duration,
}

impl Fixture for TestDb {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let pg = cx.get_shared::<Postgres>().await?;
        let name = unique("st_test");
        let started = Instant::now();
        let admin = pg.connect("postgres").await.map_err(FixtureError::new)?;
        clone_database(&admin, &name, &pg.template)
            .await
            .map_err(|e| FixtureError::new(format!("cloning the template: {e}")))?;
        let created_in = started.elapsed();
        let client = pg.connect(&name).await.map_err(FixtureError::new)?;
        drop_database_after(cx, admin, &name);
        Ok(TestDb {
            url: pg.url(&name),
            name,
            client,
            created_in,
        })
    }
}

/// `CREATE DATABASE name TEMPLATE template`, copying files (PostgreSQL 15+:
/// `STRATEGY FILE_COPY`, much less I/O than the default WAL_LOG for a small
/// template) and falling back to the plain form on older servers.
async fn clone_database(
    admin: &tokio_postgres::Client,
    name: &str,
    template: &str,
) -> Result<(), String> {
    let fast = format!("CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY");
    match admin.batch_execute(&fast).await {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::SYNTAX_ERROR) => admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Connects as admin, times `create` making a database under a fresh
/// name, drops that database, and returns the time.
async fn timed_database<F>(pg: &Postgres, create: F) -> Result<Duration, String>
where
    F: AsyncFnOnce(&tokio_postgres::Client, &str) -> Result<(), String>,
{
    let admin = pg.connect("postgres").await?;
    let name = unique("st_bench");
    let started = Instant::now();
    create(&admin, &name).await?;
    let took = started.elapsed();
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(took)
}

/// Clones the template into a new database, drops it, and returns how long
/// the clone took (for `cargo xtask bench db`).
pub async fn timed_clone(pg: &Postgres) -> Result<Duration, String> {
    timed_database(pg, async |admin, name| {
        clone_database(admin, name, &pg.template).await
    })
    .await
}

/// The peer of [`timed_clone`]: creates an empty database and applies the
/// migrations to it, then drops it; returns how long that took.
pub async fn timed_create_and_migrate(pg: &Postgres) -> Result<Duration, String> {
    timed_database(pg, async |admin, name| {
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| e.to_string())?;
        apply_migrations(&pg.connect(name).await?).await
    })
    .await
}
