//! The mesh as test fixtures: [`Mesh`] (one per run, on a fresh database of
//! the `Postgres` fixture and a key prefix on the `Redis` fixture, test mode
//! on) and [`Tenant`] (a tenant of one's own per test, so tests sharing the
//! mesh stay apart).

use std::sync::atomic::{AtomicU64, Ordering};

use harness::{Fixture, FixtureCx, FixtureError, Scope};
use provision::{Postgres, Redis};
use rand_core::RngCore;

use crate::chaos::ChaosFront;
use crate::mesh::{Mesh, MeshConfig};

/// The run's mesh configuration: a fresh database of the `Postgres`
/// fixture, a key prefix on the `Redis` fixture, test mode on.
async fn run_config(cx: &mut FixtureCx) -> Result<MeshConfig, FixtureError> {
    let pg = cx.get_shared::<Postgres>().await?;
    let redis = cx.get_shared::<Redis>().await?;
    let url = pg.fresh_database(cx).await?;
    let mut config = MeshConfig::for_tests(url, redis.endpoint.clone(), cx.run_seed());
    // The run's shared mesh carries the load tests.
    config.pool.max_size = 6;
    Ok(config)
}

impl Fixture for Mesh {
    const SCOPE: Scope = Scope::Session;

    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let config = run_config(cx).await?;
        Mesh::start(config)
            .await
            .map_err(|e| FixtureError::new(format!("starting the mesh: {e}")))
    }
}

/// The run's mesh as `sandbox up --chaos-api` starts it: a
/// Toxiproxy-compatible API on a free loopback port, proxies between each
/// service and its stores, and in front of each service the API calls.
/// For the one fixture that owns the run's system under test.
pub async fn start_fronted(cx: &mut FixtureCx) -> Result<(Mesh, ChaosFront), FixtureError> {
    let mut config = run_config(cx).await?;
    let failed = |e: &dyn std::fmt::Display| FixtureError::new(format!("starting the mesh: {e}"));
    let mut front = ChaosFront::listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| failed(&e))?;
    front
        .front_stores(&mut config)
        .await
        .map_err(|e| failed(&e))?;
    let mesh = Mesh::start(config).await.map_err(|e| failed(&e))?;
    front.front_services(&mesh).await.map_err(|e| failed(&e))?;
    Ok((mesh, front))
}

/// A tenant id of the test's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

impl std::ops::Deref for Tenant {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

static TENANTS: AtomicU64 = AtomicU64::new(0);

impl Fixture for Tenant {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        // The process id keeps two runs with one seed apart on a target
        // whose database outlives a run (`sandbox up`, a staging mesh).
        let r = cx.rng().next_u32();
        Ok(Tenant(format!(
            "tenant-{r:08x}-{:x}-{}",
            std::process::id(),
            TENANTS.fetch_add(1, Ordering::Relaxed)
        )))
    }
}
