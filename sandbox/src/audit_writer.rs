//! The compliance monitor's audit trail, written in batches.
//!
//! Every audited call, saga event and closed request is a row of
//! `compliance.audit_events`, and under load the monitor takes thousands a
//! second. Written one statement (and one commit) each, they were the
//! largest share of the mesh's PostgreSQL work. Here the rows that arrive
//! while a batch is being written wait, then go in together: one
//! multi-row `INSERT` and one commit per batch. A request is still answered
//! only once its row is committed, with its id. Within a batch rows keep
//! their arrival order; two batches may commit in either order, which
//! keeps a request's trail in order all the same: its saga events are each
//! sent after the previous one was recorded, and its audited calls carry
//! their own sequence numbers.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::{Db, StoreError};

/// One audit event to record.
#[derive(Debug)]
pub struct AuditRow {
    /// The caller's tenant.
    pub tenant: String,
    /// The request it belongs to.
    pub request_id: String,
    /// What it records.
    pub kind: crate::states::AuditKind,
    /// The reporting service.
    pub source: String,
    /// The patient, when it concerns one.
    pub patient_id: Option<String>,
    /// The saga, when it concerns one.
    pub saga_id: Option<String>,
    /// A saga event's type.
    pub event_type: Option<String>,
    /// What was reported, PHI-redacted.
    pub detail: String,
    /// Who acted: a person's id (or the client they came through), or a
    /// service's name.
    pub actor: Option<String>,
    /// The person's role, or `service`.
    pub actor_role: Option<String>,
    /// When it happened, by the reporter's clock, in milliseconds since the
    /// Unix epoch (`None`: when it is written).
    pub occurred_at_ms: Option<i64>,
}

type Pending = (AuditRow, oneshot::Sender<Result<i64, StoreError>>);

/// Rows in one statement at most.
const MAX_BATCH: usize = 256;
/// Batches written at once (each on its own pooled connection).
const WRITERS: usize = 2;

/// The batching writer of a compliance monitor; its tasks end when it is
/// dropped.
pub struct AuditWriter {
    tx: mpsc::Sender<Pending>,
}

impl AuditWriter {
    /// Starts the writer's tasks on `db`.
    /// With the breakdown on, each batch is kept in `metrics`' table as
    /// `(audit writer) batch` (its rows in the sample's `n` of `db`).
    pub fn start(db: Arc<Db>, metrics: Arc<crate::metrics::ServiceMetrics>) -> AuditWriter {
        let (tx, rx) = mpsc::channel::<Pending>(4 * MAX_BATCH);
        let rx = Arc::new(Mutex::new(rx));
        let actors: Arc<tokio::sync::OnceCell<bool>> = Arc::default();
        for _ in 0..WRITERS {
            let (db, rx, metrics) = (Arc::clone(&db), Arc::clone(&rx), Arc::clone(&metrics));
            let actors = Arc::clone(&actors);
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                loop {
                    {
                        // Wait for one row, then take whatever else is queued.
                        let mut rx = rx.lock().await;
                        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                            return;
                        }
                    }
                    // Whether the table has the actors' columns (a monitor
                    // started one schema version back has not), asked once.
                    let actors = actors
                        .get_or_try_init(|| has_actor_columns(&db))
                        .await
                        .copied()
                        .unwrap_or(true);
                    if crate::timing::on() {
                        let (rows, started) = (batch.len(), std::time::Instant::now());
                        let ((), mut spans) =
                            crate::timing::scope(write(&db, &mut batch, actors)).await;
                        // The rows it wrote, where the sample shows them.
                        spans.n[crate::timing::Part::AuditWrite.index()] =
                            u16::try_from(rows).unwrap_or(u16::MAX);
                        metrics
                            .breakdown
                            .record("(audit writer) batch", started.elapsed(), spans);
                    } else {
                        write(&db, &mut batch, actors).await;
                    }
                }
            });
        }
        AuditWriter { tx }
    }

    /// Records `rows`, queued together (so that they go in together); each
    /// one's id once committed, in order.
    pub async fn write_all(&self, rows: Vec<AuditRow>) -> Vec<Result<i64, StoreError>> {
        let stopped = || StoreError::DbUnavailable("the audit writer has stopped".into());
        let mut answers = Vec::with_capacity(rows.len());
        for row in rows {
            let (reply, answer) = oneshot::channel();
            if self.tx.send((row, reply)).await.is_err() {
                answers.push(None);
            } else {
                answers.push(Some(answer));
            }
        }
        let mut ids = Vec::with_capacity(answers.len());
        for answer in answers {
            ids.push(match answer {
                Some(a) => a.await.map_err(|_| stopped()).and_then(|r| r),
                None => Err(stopped()),
            });
        }
        ids
    }

    /// Records `row`; its id once committed.
    pub async fn write(&self, row: AuditRow) -> Result<i64, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::DbUnavailable("the audit writer has stopped".into());
        self.tx.send((row, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Does `compliance.audit_events` have the `actor` column (schema version
/// [`crate::compliance::access::SCHEMA_VERSION`])? When it cannot be told, the batch
/// is written as if it had (the insert then says what is wrong) and it is
/// asked again with the next.
async fn has_actor_columns(db: &Db) -> Result<bool, StoreError> {
    let row = db
        .query_opt(
            "SELECT 1 FROM information_schema.columns
             WHERE table_schema = 'compliance' AND table_name = 'audit_events'
               AND column_name = 'actor'",
            &[],
        )
        .await?;
    Ok(row.is_some())
}

/// Writes `batch` in one statement and answers each row (emptying it);
/// without `actors`, into the table as it was before their columns.
async fn write(db: &Db, batch: &mut Vec<Pending>, actors: bool) {
    // One array per column, the rows' strings moved in.
    let mut columns: [Vec<Option<String>>; 11] = Default::default();
    let mut replies = Vec::with_capacity(batch.len());
    for (r, reply) in batch.drain(..) {
        let values = [
            Some(r.tenant),
            Some(r.request_id),
            Some(r.kind.as_str().to_string()),
            Some(r.source),
            r.patient_id,
            r.saga_id,
            r.event_type,
            Some(r.detail),
            r.actor,
            r.actor_role,
            r.occurred_at_ms.map(|ms| ms.to_string()),
        ];
        for (column, value) in columns.iter_mut().zip(values) {
            column.push(value);
        }
        replies.push(reply);
    }
    // Rows go in in arrival order (`ORDER BY n`), each taking the next id
    // as it goes in: sorted, the ids returned match the rows in order.
    let sql = if actors {
        "INSERT INTO compliance.audit_events
                (tenant, request_id, kind, source, patient_id, saga_id, event_type, detail,
                 actor, actor_role, occurred_at)
             SELECT t, q, k, s, p, g, e, d, a, ar, COALESCE(to_timestamp(o::float8 / 1000), now())
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
                  WITH ORDINALITY AS r(t, q, k, s, p, g, e, d, a, ar, o, n)
             ORDER BY n
             RETURNING id"
    } else {
        "INSERT INTO compliance.audit_events
                (tenant, request_id, kind, source, patient_id, saga_id, event_type, detail)
             SELECT t, q, k, s, p, g, e, d
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
                  WITH ORDINALITY AS r(t, q, k, s, p, g, e, d, a, ar, o, n)
             ORDER BY n
             RETURNING id"
    };
    let inserted = db
        .query(
            sql,
            &[
                &columns[0],
                &columns[1],
                &columns[2],
                &columns[3],
                &columns[4],
                &columns[5],
                &columns[6],
                &columns[7],
                &columns[8],
                &columns[9],
                &columns[10],
            ],
        )
        .await;
    match inserted {
        Ok(rows) => {
            let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            ids.sort_unstable();
            for (reply, id) in replies.into_iter().zip(ids) {
                let _ = reply.send(Ok(id));
            }
        }
        Err(e) => {
            let unavailable = e.is_unavailable();
            let message = e.to_string();
            for reply in replies {
                let e = if unavailable {
                    StoreError::DbUnavailable(message.clone())
                } else {
                    StoreError::Failed(message.clone())
                };
                let _ = reply.send(Err(e));
            }
        }
    }
}
