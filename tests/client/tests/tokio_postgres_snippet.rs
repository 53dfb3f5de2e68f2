//! The tokio-postgres snippet of docs/clients.md ("Clients"), run against a fresh database.
//!
//! The code between `// snippet-start` and `// snippet-end` is what docs/clients.md shows,
//! verbatim (the snippet test checks that): an append that binds `jsonb[]`, a wrong expected version
//! caught as `ES001` with its DETAIL, and the global log paged with `es.read_all(after bigint,
//! max_count bigint)` by the last position seen. Every call goes through `query_typed` (one round
//! trip, no named prepared statement), so the same code runs behind pgbouncer in transaction mode.

use event_store_client_tests::{PG_USER, TestDb, assert_snippet_story, describe, host, port};

// snippet-start
use std::fmt::Write;

use serde_json::{Value, json};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, Type};
use tokio_postgres::{Client, Error, NoTls};
use uuid::Uuid;

const PAGE: i64 = 2; // events per read_all call (a real reader takes hundreds)

/// `es.append_events` with `query_typed`: the parameter types are given, so the call is one round
/// trip without a named prepared statement (safe behind pgbouncer); `jsonb[]` is a `Vec<Json<_>>`.
async fn append(db: &Client, stream: Uuid, expected: i64, events: &[Value]) -> Result<i64, Error> {
    let events: Vec<Json<&Value>> = events.iter().map(Json).collect();
    let row = db
        .query_typed_one(
            "SELECT es.append_events($1, $2, $3)",
            &[
                (&stream, Type::UUID),
                (&expected, Type::INT8),
                (&events, Type::JSONB_ARRAY),
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Appends, catches ES001, pages the global log; returns what it saw, one line per step.
/// `conninfo`: e.g. "host=/run/postgresql port=5432 user=app dbname=shop".
pub async fn example(conninfo: &str) -> Result<String, Error> {
    let (db, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(connection); // drives the socket until `db` is dropped
    let mut report = String::new();
    let stream = Uuid::new_v4();
    let added = [
        json!({"type": "ItemAdded", "sku": "A-1"}),
        json!({"type": "ItemAdded", "sku": "B-2"}),
    ];
    let version = append(&db, stream, 0, &added).await?; // 0: a new stream
    let version = append(&db, stream, version, &[json!({"type": "CheckedOut"})]).await?;
    writeln!(report, "appended: version {version}").unwrap();

    // a writer that still believes the stream is at version 2
    let stale = [json!({"type": "ItemRemoved", "sku": "A-1"})];
    match append(&db, stream, 2, &stale).await {
        Err(e) if e.code() == Some(&SqlState::from_code("ES001")) => {
            // DETAIL: "expected: 2, actual: 3" -> reload the stream, decide again, retry
            let detail = e.as_db_error().and_then(|e| e.detail()).unwrap_or_default();
            writeln!(report, "conflict: ES001 {detail}").unwrap();
        }
        Err(e) => return Err(e),
        Ok(v) => writeln!(report, "no conflict?! version {v}").unwrap(),
    }

    // the global log, paged by the last global_position seen (gap-safe)
    let (mut after, mut events, mut pages) = (0_i64, 0, 0);
    loop {
        let rows = db
            .query_typed(
                "SELECT global_position, stream_id, version, event_type, data FROM es.read_all($1, $2)",
                &[(&after, Type::INT8), (&PAGE, Type::INT8)],
            )
            .await?;
        if let Some(last) = rows.last() {
            (pages, events, after) = (pages + 1, events + rows.len(), last.get("global_position"));
        }
        if rows.len() < PAGE as usize {
            break;
        }
    }
    writeln!(
        report,
        "read: {events} events in {pages} pages, last position {after}"
    )
    .unwrap();
    Ok(report)
}
// snippet-end

#[test]
fn the_tokio_postgres_snippet_appends_catches_es001_and_pages_read_all() {
    let db = TestDb::new("tokio_snippet");
    let conninfo = format!(
        "host={} port={} user={PG_USER} dbname={}",
        host(),
        port(),
        db.name()
    );
    // The sync helpers (TestDb) run their own runtime: keep them outside this one.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = runtime
        .block_on(example(&conninfo))
        .unwrap_or_else(|e| panic!("the tokio-postgres snippet failed: {}", describe(&e)));
    eprint!("{report}");
    assert_snippet_story("tokio_postgres_snippet.rs", &report);
}
