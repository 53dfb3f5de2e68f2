//! Snapshots (docs/reference.md §4): `es.load_snapshot`, and the lookups and saves that `es.save_snapshot`,
//! the account commands and time travel make (`es.save_snapshot` itself is in
//! [`super::account`]: an account's snapshot must be its true state).

use crate::pg::call::{ResultSet, i64_datum, uuid_datum};
use crate::pg::spi::{Connection, Reading, Rows, Stmt};
use pgrx::pg_sys::BuiltinOid::{INT8OID, JSONBOID, UUIDOID};
use pgrx::pg_sys::Datum;
use uuid::Uuid;

/// The newest snapshot of `stream` at or below `at_version` (or the newest of all): rows of
/// (version, state, taken_at). Traced as the seed's `snapshot_store.load`.
#[tracing::instrument(
    name = "snapshot_store.load",
    skip_all,
    fields(
        aggregate_id = %stream,
        at_version = tracing::field::Empty,
        db.system = "postgresql",
        db.operation = "SELECT",
        event_sourcing.optimization = "snapshot"
    )
)]
pub fn newest<'c>(
    conn: &'c Connection,
    stream: &Uuid,
    at_version: Option<i64>,
    reading: Reading,
) -> Rows<'c> {
    if let Some(v) = at_version {
        tracing::Span::current().record("at_version", v);
    }
    conn.query_as(
        reading,
        &LOAD_SNAPSHOT,
        &[Some(uuid_datum(stream)), at_version.map(i64_datum)],
    )
}

/// Saves (or replaces) the snapshot of `stream` at `version`. Traced as the seed's
/// `snapshot_store.save`.
#[tracing::instrument(
    name = "snapshot_store.save",
    skip_all,
    fields(
        aggregate_id = %stream,
        version = version,
        db.system = "postgresql",
        db.operation = "INSERT",
        event_sourcing.optimization = "snapshot"
    )
)]
pub fn save(conn: &Connection, stream: &Uuid, version: i64, state: Datum) {
    conn.execute(
        &SAVE_SNAPSHOT,
        &[
            Some(uuid_datum(stream)),
            Some(i64_datum(version)),
            Some(state),
        ],
    );
}

/// `es.load_snapshot`: the newest snapshot at or below `at_version`, into `out`.
pub fn load_snapshot(stream: &Uuid, at_version: Option<i64>, out: &mut ResultSet) {
    let conn = Connection::connect();
    // A deleted stream reads as empty, its snapshots included.
    if crate::pg::heap::streams_readable()
        && super::life::of(&conn, stream, Reading::Statement)
            .deleted
            .is_some()
    {
        return;
    }
    newest(&conn, stream, at_version, Reading::Statement).copy_into(out);
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// Save (or replace) a snapshot.
pub static SAVE_SNAPSHOT: Stmt = Stmt::new(
    "SaveSnapshot",
    c"INSERT INTO es.snapshots (stream_id, version, state) VALUES ($1, $2, $3)
                  ON CONFLICT (stream_id, version) DO UPDATE
                  SET state = excluded.state, taken_at = transaction_timestamp()",
    &[UUIDOID, INT8OID, JSONBOID],
);

/// The newest snapshot at or below a version.
pub static LOAD_SNAPSHOT: Stmt = Stmt::new(
    "LoadSnapshot",
    c"SELECT version, state, taken_at FROM es.snapshots
                  WHERE stream_id = $1 AND version <= coalesce($2, 9223372036854775807)
                  ORDER BY version DESC LIMIT 1",
    &[UUIDOID, INT8OID],
);
