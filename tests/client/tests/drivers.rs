//! The driver snippets of docs/clients.md (tests/drivers: psycopg 3, asyncpg, node-postgres), each run as a
//! subprocess against a fresh database with the libpq variables PGHOST/PGPORT/PGUSER/PGDATABASE.
//!
//! Every snippet tells the same story and prints it: two events appended to a new stream with
//! expected version 0 and one more at version 2 (`appended: version 3`), a stale append at
//! version 2 caught as `ES001` with its DETAIL (`conflict: ES001 expected: 2, actual: 3`), and the
//! global log paged two events at a time with `es.read_all(after bigint, max_count bigint)` by the
//! last position seen (`read: 3 events in 2 pages, …`). The venv and node_modules come from
//! scripts/setup.sh; a test fails with that hint when they are missing. The same snippets run
//! through pgbouncer in `pgbouncer.rs`; the tokio-postgres one runs in-process in
//! `tokio_postgres_snippet.rs`.

use event_store_client_tests::{TestDb, assert_snippet_story, host, port, run_driver};

fn run_snippet(program: &str, script: &str) {
    let db = TestDb::new("driver_snippet");
    let output = run_driver(program, script, &[], &host(), port(), db.name());
    eprint!("{script}:\n{output}");
    assert_snippet_story(script, &output);
    // What the snippet wrote is what the store holds.
    let mut client = db.connect();
    let types: Vec<String> = client
        .query(
            "SELECT event_type FROM es.events ORDER BY global_position",
            &[],
        )
        .expect("reading es.events")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        types,
        ["ItemAdded", "ItemAdded", "CheckedOut"],
        "{script}: the stored events (the stale append wrote nothing)"
    );
    let sku: Option<String> = client
        .query_one(
            "SELECT data->>'sku' FROM es.events ORDER BY global_position LIMIT 1",
            &[],
        )
        .expect("reading es.events")
        .get(0);
    assert_eq!(
        sku.as_deref(),
        Some("A-1"),
        "{script}: events are stored as jsonb objects, not as JSON strings"
    );
}

#[test]
fn the_psycopg_snippet_runs() {
    run_snippet("python", "tests/drivers/python/psycopg_example.py");
}

#[test]
fn the_asyncpg_snippet_runs() {
    run_snippet("python", "tests/drivers/python/asyncpg_example.py");
}

#[test]
fn the_node_postgres_snippet_runs() {
    run_snippet("node", "tests/drivers/node/pg_example.js");
}
