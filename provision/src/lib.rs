//! Real PostgreSQL and Redis for tests and for `sandbox up`.
//!
//! One fallback chain for each store, shared by the test fixtures and the
//! sandbox binary ([`postgres_for_run`], [`redis_for_run`]):
//!
//! 1. `DATABASE_URL` / `REDIS_URL`, when set (a bad URL or an unreachable
//!    server is an error naming the variable, never a silent fallback);
//! 2. a private instance started from the local binaries (`initdb` and
//!    `postgres`, `redis-server`; on `PATH`, then Debian's
//!    `/usr/lib/postgresql/*/bin` unless `SERVICE_TEST_SYSTEM_BINARIES=0`):
//!    a free loopback port, a fresh directory of mode 0700 with a random
//!    name in `/dev/shm` (or the temp dir, or `SERVICE_TEST_INSTANCE_DIR`),
//!    `fsync=off`; it dies with the run (Linux's parent-death signal, and a
//!    stop when dropped), and leftovers of crashed runs are removed at the
//!    next start (only directories that are ours, mode 0700; only
//!    processes running our server binaries as their owner). Each refuses
//!    a client without its random password (PostgreSQL: SCRAM; Redis:
//!    `requirepass`), which the URLs handed out carry. As root, neither
//!    server keeps root: PostgreSQL runs as `postgres`, Redis as `nobody`;
//! 3. otherwise [`ProvisionError::Unavailable`]: the fixtures skip the
//!    test with the reason (and fail under `--require-services`).
//!
//! As fixtures: [`Postgres`] and [`Redis`] (session), [`TestDb`] (a fresh
//! database per test, cloned from a template with every registered
//! [`Migration`] applied, `migration!`) and [`TestRedis`] (a key prefix
//! per test, its keys deleted after it).
//!
//! URLs may carry a user, a password and (Redis) a database number, and
//! are parsed by the clients' own parsers; no message shows a password
//! ([`mask`]).
#![deny(missing_docs)]

mod error;
mod instance;
pub mod postgres;
pub mod redis;
mod secret;

#[doc(hidden)]
pub use inventory as __inventory;

pub use error::ProvisionError;
pub use instance::{Instance, find_binary};
pub use postgres::{
    Migration, Postgres, PostgresSource, TestDb, postgres_for_run, private_postgres,
};
pub use redis::{
    Redis, RedisEndpoint, RedisSource, TestRedis, parse_redis_url, private_redis, redis_for_run,
};
pub use secret::mask;
