//! Snapshots (SPEC §4): `es.save_snapshot` and `es.load_snapshot`, and the lookups and saves
//! the account commands and time travel make. A snapshot saved by hand for an account stream
//! must be the account's true state at its version: commands and time travel start from it.

use super::account::load_state;
use crate::pg::call::{ResultSet, i64_datum, uuid_datum};
use crate::pg::jsonb::Jsonb;
use crate::pg::spi::{Connection, Reading, Rows, Stmt};
use event_store_core::{ACCOUNT_STREAM_TYPE, EventStoreError};
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
        Stmt::LoadSnapshot,
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
        Stmt::SaveSnapshot,
        &[
            Some(uuid_datum(stream)),
            Some(i64_datum(version)),
            Some(state),
        ],
    );
}

/// `es.save_snapshot`: a state at `1 ≤ version ≤ current` (ES005 otherwise); for an account
/// stream, only the account's true state at that version.
pub fn save_snapshot(stream: &Uuid, version: i64, state: Jsonb<'_>) -> Result<(), EventStoreError> {
    let conn = Connection::connect();
    let rows = conn.execute(Stmt::StreamInfo, &[Some(uuid_datum(stream))]);
    let current = rows.first_i64().unwrap_or(0);
    if version < 1 || version > current {
        return Err(EventStoreError::InvalidSnapshot {
            stream_id: stream.to_string(),
            version,
            current,
        });
    }
    // Commands and time travel start from an account's snapshots: only its true state may be
    // saved. (Other streams' states mean nothing to the store and are saved as given.)
    if rows.text(0, 2).as_deref() == Some(ACCOUNT_STREAM_TYPE) {
        let truth = load_state(&conn, stream, version, Reading::Latest)?;
        if state.account_state().as_ref() != Ok(&truth) {
            return Err(EventStoreError::SnapshotMismatch {
                stream_id: stream.to_string(),
                version,
                expected: truth.to_json(),
            });
        }
    }
    save(&conn, stream, version, state.datum());
    Ok(())
}

/// `es.load_snapshot`: the newest snapshot at or below `at_version`, into `out`.
pub fn load_snapshot(stream: &Uuid, at_version: Option<i64>, out: &mut ResultSet) {
    let conn = Connection::connect();
    newest(&conn, stream, at_version, Reading::Statement).copy_into(out);
}
