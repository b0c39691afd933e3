//! Each service's schema as an ordered list of versioned [`Migration`]s,
//! applied at start by [`migrate`]: every step in its own transaction,
//! recorded in the schema's `schema_migrations` table, so that a database
//! left at any version is brought forward step by step, and a step that
//! fails is rolled back whole and reported by version and name, the
//! versions before it intact.
//!
//! ```
//! use sandbox::{Service, schema};
//!
//! let steps = schema::plan(Service::DoctorPersonalization);
//! assert_eq!(steps[0].version, 1);
//! assert_eq!(schema::latest(Service::DoctorPersonalization), steps.last().unwrap().version);
//! ```
//!
//! **Adding a step**: append `Migration::new(next, "what_it_does", [..])`
//! to the service's arm of `later_steps`. Version 1 (`baseline`, the
//! module's `migrations()`, idempotent) is frozen: a database already at
//! version 1 never runs it again, so a change appended there would never
//! reach it. The running code must work on the previous version too (a
//! mesh is started one version back by the migration tests, see
//! `MeshConfig::schema_versions`): add a column before the code needs it.

use crate::service::Service;
use crate::store::StoreError;

/// One step of a service's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Its version: 1, 2, … in the order applied.
    pub version: u32,
    /// What it does, in a word or three (`preferences_as_jsonb`).
    pub name: &'static str,
    /// Its statements, run in one transaction.
    pub statements: Vec<String>,
}

impl Migration {
    /// Step `version`, `name`, of `statements`.
    pub fn new<S: Into<String>>(
        version: u32,
        name: &'static str,
        statements: impl IntoIterator<Item = S>,
    ) -> Migration {
        Migration {
            version,
            name,
            statements: statements.into_iter().map(Into::into).collect(),
        }
    }
}

/// `service`'s migrations, in order: version 1 the baseline (the tables as
/// the sandbox had them before versions), then each step since.
pub fn plan(service: Service) -> Vec<Migration> {
    let baseline = Migration::new(
        1,
        "baseline",
        (crate::registry::module(service).migrations)(),
    );
    std::iter::once(baseline)
        .chain(later_steps(service))
        .collect()
}

/// The steps after the baseline.
fn later_steps(service: Service) -> Vec<Migration> {
    let schema = service.schema();
    // The patient copies found by when they were synced (stale copies).
    let copies_by_sync_time = || {
        Migration::new(
            2,
            "patient_copies_by_sync_time",
            [format!(
                "CREATE INDEX IF NOT EXISTS patients_synced ON {schema}.patients (tenant, synced_at)"
            )],
        )
    };
    match service {
        Service::HealthcareApi => vec![
            Migration::new(
                2,
                "visits_by_patient",
                ["CREATE INDEX IF NOT EXISTS visits_patient ON api.visits (tenant, patient_id)"],
            ),
            // A visit's row is updated three times as its saga moves; with
            // room left on its page each new version stays there and no
            // index is touched (a heap-only update; none of the columns
            // that change is indexed). Applies to the pages written from
            // now on.
            Migration::new(
                3,
                "visits_room_to_update",
                ["ALTER TABLE api.visits SET (fillfactor = 70)"],
            ),
        ],
        Service::InsuranceVerification | Service::BillingEngine => vec![copies_by_sync_time()],
        // Who acted, and when an access happened (see `crate::access`).
        Service::ComplianceMonitor => vec![
            copies_by_sync_time(),
            Migration::new(
                crate::compliance::access::SCHEMA_VERSION,
                "audit_actors",
                crate::compliance::access::migrations(),
            ),
        ],
        Service::BusinessIntelligence => vec![
            Migration::new(
                2,
                "events_by_time",
                ["CREATE INDEX IF NOT EXISTS events_time ON bi.events (tenant, metric, at)"],
            ),
            // `(tenant, metric, at)` serves every lookup `(tenant, metric)`
            // served (its prefix); the narrower index only cost every
            // event's insert a second B-tree insert.
            Migration::new(
                3,
                "events_one_index",
                ["DROP INDEX IF EXISTS bi.events_metric"],
            ),
        ],
        // Preferences become JSONB: each stored text is parsed, and a row
        // that is not JSON fails the step (rolled back, the column still
        // text) instead of being lost.
        Service::DoctorPersonalization => vec![Migration::new(
            2,
            "preferences_as_jsonb",
            [
                "CREATE INDEX IF NOT EXISTS preferences_updated ON doctor.preferences (tenant, updated_at)",
                "ALTER TABLE doctor.preferences
                    ALTER COLUMN preferences TYPE JSONB USING preferences::jsonb",
            ],
        )],
    }
}

/// `service`'s latest version.
pub fn latest(service: Service) -> u32 {
    plan(service).last().map_or(0, |m| m.version)
}

/// The version before the latest (the one an upgrade starts from).
pub fn previous(service: Service) -> u32 {
    latest(service).saturating_sub(1).max(1)
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The version the schema was at before (0: a schema without versions).
    pub from: u32,
    /// The version it is at now.
    pub to: u32,
}

/// The advisory lock every migration takes: services (and meshes) starting
/// together on one database apply each step once.
const LOCK: i64 = 727_001;

/// Brings `service`'s schema to version `upto` (the latest when `None`):
/// creates the schema and its `schema_migrations` table, then applies each
/// step not yet recorded, in order, each in its own transaction under an
/// advisory lock. A failing step is rolled back whole and returned as
/// [`StoreError::Migration`] with its version and name; the steps before
/// it stay applied. A schema already past `upto` (or past every version
/// this code knows) is refused: migrations go forward only.
pub async fn migrate(
    db: &mut tokio_postgres::Client,
    service: Service,
    steps: &[Migration],
    upto: Option<u32>,
) -> Result<Migrated, StoreError> {
    let schema = service.schema();
    let known = steps.last().map_or(0, |m| m.version);
    let wanted = upto.unwrap_or(known).min(known);
    let tx = db.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
            version INT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    ))
    .await?;
    tx.commit().await?;
    let from = applied_version(db, schema).await?;
    if from > wanted {
        return Err(StoreError::SchemaAhead {
            schema,
            at: from,
            wanted,
        });
    }
    for step in steps
        .iter()
        .filter(|m| m.version > from && m.version <= wanted)
    {
        let tx = db.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
            .await?;
        // Another process may have applied it while this one waited.
        let done = tx
            .query_opt(
                &format!("SELECT 1 FROM {schema}.schema_migrations WHERE version = $1"),
                &[&(step.version as i32)],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        let failed = |source| StoreError::Migration {
            schema,
            version: step.version,
            name: step.name,
            source,
        };
        for sql in &step.statements {
            tx.batch_execute(sql).await.map_err(failed)?;
        }
        tx.execute(
            &format!("INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)"),
            &[&(step.version as i32), &step.name],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
    }
    Ok(Migrated {
        from,
        to: applied_version(db, schema).await?,
    })
}

/// The highest version recorded in `schema` (0: none).
pub async fn applied_version(db: &tokio_postgres::Client, schema: &str) -> Result<u32, StoreError> {
    let row = db
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations"),
            &[],
        )
        .await?;
    Ok(u32::try_from(row.get::<_, i32>(0)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_counts_up_from_one_without_gaps() {
        for s in Service::ALL {
            let steps = plan(s);
            assert!(steps.len() >= 2, "{s}: no version to upgrade from");
            for (i, m) in steps.iter().enumerate() {
                assert_eq!(m.version as usize, i + 1, "{s}: {}", m.name);
                assert!(!m.statements.is_empty(), "{s} v{}: no statement", m.version);
            }
            assert_eq!(previous(s) + 1, latest(s));
        }
    }
}
