//! Group commit: one-row writes that arrive together go to PostgreSQL as
//! one statement and one commit.
//!
//! Under load each service writes a row per request: a patient at intake,
//! each holder's copy of it. One statement and one commit each, those rows
//! cost PostgreSQL more CPU than the services spend on the requests (the
//! breakdown of `cargo xtask bench mesh` showed ~190 µs of server time per
//! statement, half of the machine). Here a row waits while the batch
//! before it is written, then goes in with the others that waited: one
//! `INSERT … SELECT FROM unnest(…)` and one commit. A request is still
//! answered only once its row is committed.
//!
//! A batch that PostgreSQL refuses as a whole (a duplicate key, two upserts
//! of one row in a batch) is written again row by row, so each request gets
//! its own answer: the row that broke it its error, the others their
//! commit. A store that is unavailable fails the batch's rows at once, as
//! it would have failed each (no row waits twice for a pool).
//!
//! The compliance monitor's audit trail has its own writer
//! ([`crate::audit_writer`]): its rows need their ids back, in order.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::types::{ToSql, Type};

use super::{Db, StoreError};

/// One request's rows (committed together, or failed together) and where
/// to answer.
type Pending = (
    Vec<Vec<Option<String>>>,
    oneshot::Sender<Result<(), StoreError>>,
);

/// Rows in one statement at most.
const MAX_BATCH: usize = 128;
/// Batches of one statement written at once (each on a pooled connection).
const WRITERS: usize = 1;

/// The writers of one database, one queue per statement; their tasks end
/// when the database is dropped.
#[derive(Default)]
pub(crate) struct Groups {
    queues: std::sync::Mutex<HashMap<String, mpsc::Sender<Pending>>>,
}

impl Groups {
    /// The queue of `statement`, its writers started on first use.
    fn queue(&self, db: &Arc<Db>, statement: &str) -> mpsc::Sender<Pending> {
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = queues.get(statement) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel::<Pending>(4 * MAX_BATCH);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            let (db, rx, statement) = (Arc::downgrade(db), Arc::clone(&rx), statement.to_string());
            tokio::spawn(writer(db, rx, statement));
        }
        queues.insert(statement.to_string(), tx.clone());
        tx
    }
}

/// One writer: takes what is queued (up to a batch), writes it, answers.
/// It holds the database weakly, so that dropping it (a service stopped)
/// closes the queue and ends the task.
async fn writer(db: Weak<Db>, rx: Arc<Mutex<mpsc::Receiver<Pending>>>, statement: String) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let Some(db) = db.upgrade() else {
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(stopped()));
            }
            return;
        };
        write(&db, &statement, &mut batch).await;
    }
}

fn stopped() -> StoreError {
    StoreError::DbUnavailable("the service's database writer has stopped".into())
}

/// Writes `batch` (emptying it) and answers each row.
async fn write(db: &Db, statement: &str, batch: &mut Vec<Pending>) {
    let rows: Vec<&[Option<String>]> = batch
        .iter()
        .flat_map(|(rows, _)| rows.iter().map(Vec::as_slice))
        .collect();
    let written = rows_at_once(db, statement, &rows).await;
    match written {
        Ok(()) => {
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Ok(()));
            }
        }
        // One request: its own error.
        Err(e) if batch.len() == 1 => {
            if let Some((_, reply)) = batch.pop() {
                let _ = reply.send(Err(e));
            }
        }
        Err(e) if e.is_unavailable() => {
            let message = e.to_string();
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(StoreError::DbUnavailable(message.clone())));
            }
        }
        // Refused as a whole: request by request, so that only the rows
        // at fault fail.
        Err(_) => {
            for (rows, reply) in batch.drain(..) {
                let rows: Vec<&[Option<String>]> = rows.iter().map(Vec::as_slice).collect();
                let _ = reply.send(rows_at_once(db, statement, &rows).await);
            }
        }
    }
}

/// Runs `statement` once on `rows`: its `$k` is the `text[]` of the rows'
/// `k`-th values (one row is a batch of one).
async fn rows_at_once(
    db: &Db,
    statement: &str,
    rows: &[&[Option<String>]],
) -> Result<(), StoreError> {
    let width = rows.first().map_or(0, |r| r.len());
    let mut columns = vec![Vec::with_capacity(rows.len()); width];
    for row in rows {
        for (column, value) in columns.iter_mut().zip(row.iter()) {
            column.push(value.clone());
        }
    }
    let params: Vec<(&(dyn ToSql + Sync), Type)> = columns
        .iter()
        .map(|c| (c as &(dyn ToSql + Sync), Type::TEXT_ARRAY))
        .collect();
    // Planned for each batch: a plan kept from the first batches, costed
    // on a table still empty, kept hashing a sequential scan of the whole
    // of `api.visits` as it grew (`perf`: PostgreSQL at half the mesh's
    // CPU under the saga bench). Planning once per batch costs little.
    db.execute_planned(statement, &params).await
}

impl Db {
    /// Writes `row` with the rows other requests write by the same
    /// `statement` meanwhile, in one statement and one commit; returns once
    /// it is committed, or with this row's own error. `statement` takes
    /// the rows as arrays: its `$k` is a `text[]` of every row's `k`-th
    /// value (`… SELECT … FROM unnest($1::text[], $2::text[], …)`), cast
    /// where a column is not text; one row is a batch of one.
    pub async fn write_grouped(
        self: &Arc<Self>,
        statement: &str,
        row: Vec<Option<String>>,
    ) -> Result<(), StoreError> {
        self.write_grouped_rows(statement, vec![row]).await
    }

    /// [`Db::write_grouped`] for a request that writes several rows: they
    /// are committed together with the others', or fail together.
    pub async fn write_grouped_rows(
        self: &Arc<Self>,
        statement: &str,
        rows: Vec<Vec<Option<String>>>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let queue = self.groups().queue(self, statement);
        let (reply, answer) = oneshot::channel();
        let wait = async {
            queue.send((rows, reply)).await.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        };
        crate::timing::measure(crate::timing::Part::Db, wait).await
    }
}
