//! Group commit on real PostgreSQL: rows written at once by many requests
//! go in together (fewer transactions than rows), each request is
//! answered only once its row is committed, and a batch refused as a whole
//! is written again row by row, so that only the row at fault fails; keys
//! read at once are looked up together, each answered its own row.

use std::sync::Arc;

use harness::service_test;
use provision::Postgres;
use sandbox::store::{Db, PoolConfig};

/// A database and table of their own (`k` unique; `x` the writing
/// transaction's id), dropped by the test.
async fn table(pg: &Postgres, name: &str) -> (Arc<Db>, String) {
    let admin = sandbox::store::connect(&pg.url("postgres"))
        .await
        .expect("connect");
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .expect("a database of its own");
    }
    let own = sandbox::store::connect(&pg.url(name))
        .await
        .expect("connect");
    own.batch_execute(&format!(
        "CREATE TABLE public.{name} (k TEXT PRIMARY KEY, v TEXT NOT NULL,
             x TEXT NOT NULL DEFAULT txid_current()::text)"
    ))
    .await
    .expect("create the table");
    let db = Db::new(&pg.url(name), PoolConfig::default()).expect("pool");
    let statement =
        format!("INSERT INTO public.{name} (k, v) SELECT * FROM unnest($1::text[], $2::text[])");
    (Arc::new(db), statement)
}

/// Drops the test's database once its pool is gone.
async fn drop_database(pg: &Postgres, db: Arc<Db>, name: &str) {
    drop(db);
    let admin = sandbox::store::connect(&pg.url("postgres"))
        .await
        .expect("connect");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop the database");
}

async fn write_all(db: &Arc<Db>, statement: &str, keys: &[String]) -> Vec<bool> {
    let writes = keys.iter().map(|k| {
        let (db, statement) = (Arc::clone(db), statement.to_string());
        let row = vec![Some(k.clone()), Some(format!("value of {k}"))];
        tokio::spawn(async move { db.write_grouped(&statement, row).await.is_ok() })
    });
    let mut ok = Vec::new();
    for w in writes.collect::<Vec<_>>() {
        ok.push(w.await.expect("the write task"));
    }
    ok
}

#[service_test(integration, real_services, timeout = "60s")]
async fn rows_written_at_once_share_commits_and_each_is_committed_when_answered(pg: &Postgres) {
    let name = format!("group_commit_{}", std::process::id());
    let (db, statement) = table(pg, &name).await;
    let keys: Vec<String> = (0..400).map(|i| format!("k{i}")).collect();
    let ok = write_all(&db, &statement, &keys).await;
    assert!(ok.iter().all(|&o| o), "every write answered ok");
    let rows = db
        .query(
            &format!("SELECT count(*), count(DISTINCT x) FROM public.{name}"),
            &[],
        )
        .await
        .expect("count");
    let (count, transactions): (i64, i64) = (rows[0].get(0), rows[0].get(1));
    assert_eq!(count, 400, "every answered row is committed");
    assert!(
        transactions < 200,
        "400 rows written at once went in {transactions} transactions: not grouped"
    );
    drop_database(pg, db, &name).await;
}

#[service_test(integration, real_services, timeout = "60s")]
async fn a_batch_refused_whole_fails_only_the_row_at_fault(pg: &Postgres) {
    let name = format!("group_commit_dup_{}", std::process::id());
    let (db, statement) = table(pg, &name).await;
    db.execute(
        &format!("INSERT INTO public.{name} (k, v) VALUES ('taken', 'first')"),
        &[],
    )
    .await
    .expect("the first row");
    // The taken key in the middle of many others written at once.
    let mut keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    keys.insert(150, "taken".to_string());
    let ok = write_all(&db, &statement, &keys).await;
    let failed: Vec<&String> = keys
        .iter()
        .zip(&ok)
        .filter(|(_, o)| !**o)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(failed, vec!["taken"], "only the duplicate fails");
    let rows = db
        .query(&format!("SELECT count(*) FROM public.{name}"), &[])
        .await
        .expect("count");
    assert_eq!(rows[0].get::<_, i64>(0), 301, "the others are committed");
    drop_database(pg, db, &name).await;
}

#[service_test(integration, real_services, timeout = "60s")]
async fn keys_read_at_once_share_statements_and_each_gets_its_own_row(pg: &Postgres) {
    let name = format!("group_read_{}", std::process::id());
    let (db, statement) = table(pg, &name).await;
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    assert!(write_all(&db, &statement, &keys).await.iter().all(|&o| o));
    // Each row found names its key's position; the statement's
    // transaction id tells the statements apart.
    let read = format!(
        "SELECT q.n, t.k, t.v, txid_current()::text
         FROM unnest($1::text[]) WITH ORDINALITY AS q(k, n)
         JOIN public.{name} t ON t.k = q.k"
    );
    let mut asked = keys.clone();
    asked.insert(100, "absent".to_string());
    let reads = asked.iter().map(|k| {
        let (db, read, k) = (Arc::clone(&db), read.clone(), k.clone());
        tokio::spawn(async move {
            let rows = db.read_grouped(&read, vec![Some(k)]).await.expect("read");
            rows.iter()
                .map(|r| {
                    (
                        r.get::<_, String>(1),
                        r.get::<_, String>(2),
                        r.get::<_, String>(3),
                    )
                })
                .collect::<Vec<_>>()
        })
    });
    let mut statements = std::collections::BTreeSet::new();
    for (k, read) in asked.iter().zip(reads.collect::<Vec<_>>()) {
        let found = read.await.expect("the read task");
        if k == "absent" {
            assert!(found.is_empty(), "a key not there finds nothing: {found:?}");
            continue;
        }
        assert_eq!(found.len(), 1, "{k}: exactly its own row: {found:?}");
        let (key, value, txid) = &found[0];
        assert_eq!(
            (key, value),
            (k, &format!("value of {k}")),
            "{k}: its own row"
        );
        statements.insert(txid.clone());
    }
    assert!(
        statements.len() < 150,
        "301 keys read at once took {} statements: not grouped",
        statements.len()
    );
    drop_database(pg, db, &name).await;
}

harness::main!();
