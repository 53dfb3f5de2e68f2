//! Retention (docs/reference.md §14): asking for the database's worker when a policy is set or resumed, and
//! what the worker does for the policies: list them and run one batch of one. The batch itself
//! (which events, their removal, the audit row, the progress) is `es.retention_batch` in
//! sql/flow.sql: one statement, so the worker's transaction holds exactly one batch.

use crate::pg::call::{i64_datum, text_datum};
use crate::pg::spi::{Connection, Stmt};
use crate::pg::worker_registry;
use crate::store::subscription::current_database;
use pgrx::pg_sys::BuiltinOid::{INT4OID, INT8OID, TEXTOID};
use pgrx::pg_sys::Datum;

/// `es.wake_retention`: when the calling transaction commits, the launcher starts this
/// database's worker (it then finds the policies itself). False without the preloaded library:
/// no worker runs.
pub fn wake() -> bool {
    if !worker_registry::preloaded() {
        return false;
    }
    worker_registry::request_projections(current_database());
    true
}

/// The retention policies that are not paused, by stream type ('' for generic streams); none
/// where the extension predates them.
pub fn policies() -> Vec<String> {
    let conn = Connection::connect();
    if conn
        .execute(&RETENTION_PRESENT, &[])
        .first_i64()
        .unwrap_or(0)
        == 0
    {
        return Vec::new();
    }
    let rows = conn.execute(&RETENTION_POLICIES, &[]);
    (0..rows.len()).filter_map(|r| rows.text(r, 1)).collect()
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Events removed.
    pub removed: i64,
    /// Where the policy's next batch starts looking (0: this pass reached the end of the log).
    pub next: i64,
}

/// One batch of the policy of `stream_type`: at most `size` expired events after position
/// `after`, in the caller's transaction (the worker's own, one per batch).
pub fn batch(stream_type: &str, size: i32, after: i64) -> Batch {
    let conn = Connection::connect();
    let rows = conn.execute(
        &RETENTION_BATCH,
        &[
            Some(text_datum(stream_type)),
            Some(Datum::from(size)),
            Some(i64_datum(after)),
        ],
    );
    Batch {
        removed: rows.i64(0, 1).unwrap_or(0),
        next: rows.i64(0, 2).unwrap_or(0),
    }
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// Whether the database has the retention tables (an extension of 0.2.0 on).
pub static RETENTION_PRESENT: Stmt = Stmt::new(
    "RetentionPresent",
    c"SELECT count(*) FROM pg_catalog.pg_class
                   WHERE oid = pg_catalog.to_regclass('es.retention_policies')",
    &[],
);

/// The retention policies that are not paused, by stream type.
pub static RETENTION_POLICIES: Stmt = Stmt::new(
    "RetentionPolicies",
    c"SELECT stream_type FROM es.retention_policies WHERE NOT paused ORDER BY stream_type",
    &[],
);

/// One batch of a retention policy (`es.retention_batch`): removed, next position.
pub static RETENTION_BATCH: Stmt = Stmt::new(
    "RetentionBatch",
    c"SELECT removed, next_position FROM es.retention_batch($1, $2, $3)",
    &[TEXTOID, INT4OID, INT8OID],
);
