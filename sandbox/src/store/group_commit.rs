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
//! Reads by key go the same way ([`Db::read_grouped`]): the keys asked
//! together are looked up in one statement, each row answered to the
//! request whose key found it.
//!
//! The compliance monitor's audit trail has its own writer
//! ([`crate::audit_writer`]): its rows need their ids back, in order.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use super::{Db, StoreError};

/// One request's rows (committed together, or failed together) and where
/// to answer: with the rows the statement returned for them.
type Pending = (
    Vec<Vec<Option<String>>>,
    oneshot::Sender<Result<Vec<Row>, StoreError>>,
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
        // Decided once for the queue's life, not per batch.
        let statement = Arc::new(Statement {
            prepared: keeps_its_plan(statement),
            sql: statement.to_string(),
        });
        for _ in 0..WRITERS {
            let (db, rx, statement) = (Arc::downgrade(db), Arc::clone(&rx), Arc::clone(&statement));
            tokio::spawn(writer(db, rx, statement));
        }
        queues.insert(statement.sql.clone(), tx.clone());
        tx
    }
}

/// A queue's statement, and how it is sent.
struct Statement {
    sql: String,
    /// Prepared once per connection ([`keeps_its_plan`]), or sent unnamed
    /// and planned for each batch.
    prepared: bool,
}

/// One writer: takes what is queued (up to a batch), writes it, answers.
/// It holds the database weakly, so that dropping it (a service stopped)
/// closes the queue and ends the task.
async fn writer(db: Weak<Db>, rx: Arc<Mutex<mpsc::Receiver<Pending>>>, statement: Arc<Statement>) {
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
async fn write(db: &Db, statement: &Statement, batch: &mut Vec<Pending>) {
    let rows: Vec<&[Option<String>]> = batch
        .iter()
        .flat_map(|(rows, _)| rows.iter().map(Vec::as_slice))
        .collect();
    let written = rows_at_once(db, statement, &rows).await;
    match written {
        Ok(returned) => answer_rows(batch, returned),
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

/// Answers each request of `batch` (emptying it) with the returned rows
/// that are its own: a returned row names in its first column (a
/// `bigint`, `WITH ORDINALITY`) the position, from 1, of the row it was
/// made for among the batch's rows. A statement that returns nothing
/// answers every request with no rows.
fn answer_rows(batch: &mut Vec<Pending>, returned: Vec<Row>) {
    // Position among the batch's rows → request.
    let owner: Vec<usize> = batch
        .iter()
        .enumerate()
        .flat_map(|(i, (rows, _))| std::iter::repeat_n(i, rows.len()))
        .collect();
    let mut answers: Vec<Vec<Row>> = batch.iter().map(|_| Vec::new()).collect();
    for row in returned {
        let position = row
            .try_get::<_, i64>(0)
            .ok()
            .and_then(|n| usize::try_from(n).ok());
        if let Some(&i) = position
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| owner.get(n))
        {
            answers[i].push(row);
        }
    }
    for ((_, reply), rows) in batch.drain(..).zip(answers) {
        let _ = reply.send(Ok(rows));
    }
}

/// Runs `statement` once on `rows`: its `$k` is the `text[]` of the rows'
/// `k`-th values (one row is a batch of one); the rows it returns.
async fn rows_at_once(
    db: &Db,
    statement: &Statement,
    rows: &[&[Option<String>]],
) -> Result<Vec<Row>, StoreError> {
    let width = rows.first().map_or(0, |r| r.len());
    let mut columns = vec![Vec::with_capacity(rows.len()); width];
    for row in rows {
        for (column, value) in columns.iter_mut().zip(row.iter()) {
            column.push(value.clone());
        }
    }
    if statement.prepared {
        // Prepared once per connection: no parse, and after its first
        // runs no planning either (PostgreSQL keeps the generic plan).
        let params: Vec<&(dyn ToSql + Sync)> =
            columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        return db.query(&statement.sql, &params).await;
    }
    let params: Vec<(&(dyn ToSql + Sync), Type)> = columns
        .iter()
        .map(|c| (c as &(dyn ToSql + Sync), Type::TEXT_ARRAY))
        .collect();
    // Planned for each batch: a plan kept from the first batches, costed
    // on a table still empty, kept hashing a sequential scan of the whole
    // of `api.visits` as it grew (`perf`: PostgreSQL at half the mesh's
    // CPU under the saga bench). A join's plan, made per batch, is worth
    // its cost; an insert's (above) is not.
    db.execute_planned(&statement.sql, &params).await
}

/// Can `statement` keep one plan whatever its batch and the tables' sizes?
/// An `INSERT` that reads nothing but its own `unnest(…)` can: its plan
/// is the insert of a function scan, with or without `ON CONFLICT` (which
/// goes through the unique index whatever the costs). A statement that
/// joins, filters or reads another table cannot (an `UPDATE … FROM
/// unnest(…) WHERE`, a `SELECT … JOIN`): its best plan changes as the
/// batch and the tables grow, so it is planned for each batch.
///
/// Parsing and planning were a quarter of PostgreSQL's CPU under the saga
/// bench (`perf`: `parse_analyze_varparams`, `pg_plan_query`) when every
/// grouped statement went unnamed.
fn keeps_its_plan(statement: &str) -> bool {
    // Words, parentheses and commas, in order (the statements are ours:
    // no string literal or comment holds either).
    let mut tokens: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in statement.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c.to_ascii_uppercase());
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if matches!(c, '(' | ')' | ',') {
            tokens.push(c.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    // What follows `ON CONFLICT` (its `DO UPDATE SET … WHERE …`) acts on the
    // conflicting row alone, through the unique index: not part of the plan.
    let end = tokens
        .windows(2)
        .position(|w| w[0] == "ON" && w[1] == "CONFLICT")
        .unwrap_or(tokens.len());
    let tokens = &tokens[..end];
    let is = |i: usize, w: &str| tokens.get(i).is_some_and(|t| t == w);
    if !is(0, "INSERT") || tokens.iter().filter(|t| *t == "SELECT").count() != 1 {
        return false;
    }
    // The one `FROM`, and right after it `unnest(`.
    let froms: Vec<usize> = (0..tokens.len()).filter(|&i| is(i, "FROM")).collect();
    let [from] = froms[..] else { return false };
    if !(is(from + 1, "UNNEST") && is(from + 2, "(")) {
        return false;
    }
    // After the unnest's arguments, only its alias: no other table (a
    // comma at the top level, a join), no filter.
    let mut depth = 0usize;
    for t in &tokens[from + 2..] {
        match t.as_str() {
            "(" => depth += 1,
            ")" => depth = depth.saturating_sub(1),
            "," if depth == 0 => return false,
            "JOIN" | "WHERE" | "SELECT" | "LATERAL" | "USING" | "GROUP" | "HAVING" => {
                return false;
            }
            _ => {}
        }
    }
    true
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

    /// Looks up `key` with the keys other requests look up by the same
    /// `statement` meanwhile, in one statement: its `$k` is a `text[]` of
    /// every key's `k`-th part, and each row it returns names in its first
    /// column the position of the key that found it
    /// (`… FROM unnest($1::text[], …) WITH ORDINALITY AS k(…, n) JOIN …`,
    /// selecting `k.n` first). The rows found for `key`.
    pub async fn read_grouped(
        self: &Arc<Self>,
        statement: &str,
        key: Vec<Option<String>>,
    ) -> Result<Vec<Row>, StoreError> {
        self.grouped(statement, vec![key]).await
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
        self.grouped(statement, rows).await.map(|_| ())
    }

    /// Runs `statement` on `rows` with the rows of the other requests
    /// queued on it; the returned rows that are `rows`'.
    async fn grouped(
        self: &Arc<Self>,
        statement: &str,
        rows: Vec<Vec<Option<String>>>,
    ) -> Result<Vec<Row>, StoreError> {
        let queue = self.groups().queue(self, statement);
        let (reply, answer) = oneshot::channel();
        let wait = async {
            queue.send((rows, reply)).await.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        };
        crate::timing::measure(crate::timing::Part::Db, wait).await
    }
}

#[cfg(test)]
mod tests {
    use super::keeps_its_plan;

    #[test]
    fn inserts_of_their_own_rows_keep_a_plan_and_joins_do_not() {
        // Each grouped statement of the mesh, as written in the services.
        let kept = [
            "INSERT INTO api.visits (id, tenant, patient_id, saga_id, status, request_id)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                    $5::text[], $6::text[])",
            "INSERT INTO billing.claims (id, tenant) SELECT i, t, s::bigint
               FROM unnest($1::text[], $2::text[], $3::text[]) AS u(i, t, s)",
            "INSERT INTO doctor.patients (tenant, id, record)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
               ON CONFLICT (tenant, id) DO UPDATE SET record = EXCLUDED.record, synced_at = now()
               WHERE doctor.patients.record IS DISTINCT FROM EXCLUDED.record",
        ];
        let planned = [
            "UPDATE api.visits v SET status = u.s
               FROM unnest($1::text[], $2::text[], $3::text[]) AS u(i, t, s)
               WHERE v.id = u.i AND v.tenant = u.t",
            "SELECT k.n, p.coverage
               FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(i, t, n)
               JOIN api.patients p ON p.id = k.i AND p.tenant = k.t",
            "INSERT INTO a.t (id) SELECT u.i FROM unnest($1::text[]) AS u(i)
               WHERE NOT EXISTS (SELECT 1 FROM a.t WHERE t.id = u.i)",
            "INSERT INTO a.t (id) SELECT u.i FROM unnest($1::text[]) AS u(i), a.other o",
            "INSERT INTO a.t (id) SELECT u.i FROM unnest($1::text[]) AS u(i) JOIN a.o ON true",
            "WITH x AS (SELECT 1) INSERT INTO a.t SELECT * FROM unnest($1::text[])",
        ];
        for s in kept {
            assert!(keeps_its_plan(s), "should keep its plan: {s}");
        }
        for s in planned {
            assert!(!keeps_its_plan(s), "should be planned per batch: {s}");
        }
    }
}
