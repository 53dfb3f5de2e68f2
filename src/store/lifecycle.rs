//! The acts on a stream's life (docs/reference.md §14): `es.delete_stream` (soft, or hard: a tombstone),
//! `es.undelete_stream` and `es.truncate_stream`. Each one is a single transaction that takes
//! the stream row lock first (as an append does, so an append racing it lands before it or is
//! refused after it), and records itself in `es.data_audit`.
//!
//! Consumers learn of a deletion through the log: the act appends a marker event at the stream's
//! head through the append pipeline with the stream's own rules (the account refuses to be
//! deleted while it holds money, a declared type's `check` sees the marker and may refuse it), so
//! `es.read_all`, subscriptions and projections see it in order. Events are removed only by
//! `es.purge_stream`, the internal function that deletes what the stream's row records as
//! removed (the append-only trigger stays for everyone else); positions are never reused.

use super::account_json::AccountJson;
use super::aggregate::TypedRules;
use super::life::Life;
use super::pipeline::{self, Batch};
use super::sql::AUDIT_INSERT;
use crate::pg::call::{CallMemory, i64_datum, text_datum, uuid_datum};
use crate::pg::jsonb::write::jsonb_from_text;
use crate::pg::registry;
use crate::pg::spi::{Connection, Stmt};
use event_store_core::account::AccountState;
use event_store_core::lifecycle::{
    Deletion, STREAM_DELETED, STREAM_UNDELETED, may_delete, truncation_cut,
};
use event_store_core::{ACCOUNT_STREAM_TYPE, EventStoreError, ExpectedVersion};
use pgrx::pg_sys::BuiltinOid::{INT8OID, TEXTOID, UUIDOID};
use uuid::Uuid;

/// The stream row, locked for the act.
struct Locked {
    version: i64,
    stream_type: Option<String>,
    life: Life,
}

/// Locks the stream row (ES002 when there is none).
fn lock(conn: &Connection, stream: &Uuid) -> Result<Locked, EventStoreError> {
    let rows = conn.execute(&LOCK_STREAM_LIFECYCLE, &[Some(uuid_datum(stream))]);
    if rows.is_empty() {
        return Err(EventStoreError::StreamNotFound {
            stream_id: stream.to_string(),
        });
    }
    Ok(Locked {
        version: rows.i64(0, 1).unwrap_or(0),
        stream_type: rows.text(0, 2),
        life: Life {
            deleted: rows.text(0, 3).as_deref().and_then(Deletion::parse),
            deleted_at: rows.text(0, 4).unwrap_or_default(),
            truncated_before: rows.i64(0, 5),
        },
    })
}

/// Appends the store's marker `json` at the head of the locked stream, judged by the stream's
/// rules; returns its version and global position.
fn append_marker(
    conn: &Connection,
    memory: CallMemory<'_>,
    stream: &Uuid,
    version: i64,
    json: &str,
) -> Result<(i64, i64), EventStoreError> {
    let batch = Batch::marker(memory, json, stream)?;
    let mut rules = TypedRules::new(stream, &batch, None);
    let new_version = pipeline::append(
        conn,
        stream,
        ExpectedVersion::Exact(version),
        &batch,
        &mut rules,
        &|| None,
    )?;
    let position = conn
        .execute(
            &EVENT_POSITION,
            &[Some(uuid_datum(stream)), Some(i64_datum(new_version))],
        )
        .first_i64()
        .unwrap_or(0);
    Ok((new_version, position))
}

/// Removes the events the stream's row records as removed; returns how many and their first
/// and last positions (`null` when none), as JSON values.
fn purge(conn: &Connection, stream: &Uuid) -> (i64, String, String) {
    let rows = conn.execute(&PURGE_STREAM, &[Some(uuid_datum(stream))]);
    let json = |v: Option<i64>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
    (
        rows.i64(0, 1).unwrap_or(0),
        json(rows.i64(0, 2)),
        json(rows.i64(0, 3)),
    )
}

/// One row of `es.data_audit`, in the acting transaction.
fn audit(conn: &Connection, action: &str, stream: &Uuid, detail: &str) {
    conn.execute(
        &AUDIT_INSERT,
        &[
            Some(text_datum(action)),
            Some(text_datum(&stream.to_string())),
            Some(jsonb_from_text(detail)),
        ],
    );
}

/// `es.delete_stream`: appends `$stream_deleted` and marks the stream deleted; a hard delete
/// also removes its events (all but the marker), snapshots and kept state. Returns the marker's
/// version.
pub fn delete_stream(
    memory: CallMemory<'_>,
    stream: &Uuid,
    expected: ExpectedVersion,
    hard: bool,
) -> Result<i64, EventStoreError> {
    let conn = Connection::connect();
    let locked = lock(&conn, stream)?;
    may_delete(
        &stream.to_string(),
        locked.life.deleted,
        &locked.life.deleted_at,
        hard,
    )?;
    expected.check(stream, locked.version)?;
    let marker = if hard {
        format!(
            r#"{{"type": "{STREAM_DELETED}", "hard": true, "removed_through_version": {}}}"#,
            locked.version
        )
    } else {
        format!(r#"{{"type": "{STREAM_DELETED}", "hard": false}}"#)
    };
    let (version, position) = append_marker(&conn, memory, stream, locked.version, &marker)?;
    let deletion = if hard { Deletion::Hard } else { Deletion::Soft };
    conn.execute(
        &MARK_DELETED,
        &[
            Some(uuid_datum(stream)),
            Some(text_datum(deletion.as_str())),
        ],
    );
    let (removed, first, last) = if hard {
        conn.execute(
            &DELETE_SNAPSHOTS_BELOW,
            &[Some(uuid_datum(stream)), Some(i64_datum(i64::MAX))],
        );
        purge(&conn, stream)
    } else {
        (0, "null".to_owned(), "null".to_owned())
    };
    audit(
        &conn,
        "delete_stream",
        stream,
        &format!(
            r#"{{"hard": {hard}, "was": "{}", "expected_version": {}, "version": {}, "marker_version": {version}, "marker_position": {position}, "events_removed": {removed}, "first_position_removed": {first}, "last_position_removed": {last}}}"#,
            locked.life.deleted.map_or("live", Deletion::as_str),
            expected
                .as_sql()
                .map_or_else(|| "null".to_owned(), |v| v.to_string()),
            locked.version,
        ),
    );
    Ok(version)
}

/// `es.undelete_stream`: appends `$stream_undeleted` to a soft-deleted stream and marks it
/// live again. Returns the marker's version.
pub fn undelete_stream(memory: CallMemory<'_>, stream: &Uuid) -> Result<i64, EventStoreError> {
    let conn = Connection::connect();
    let locked = lock(&conn, stream)?;
    match locked.life.deleted {
        None => {
            return Err(EventStoreError::StreamNotDeleted {
                stream_id: stream.to_string(),
            });
        }
        Some(Deletion::Hard) => {
            return Err(locked.life.deleted_error(stream).unwrap_or(
                EventStoreError::StreamNotDeleted {
                    stream_id: stream.to_string(),
                },
            ));
        }
        Some(Deletion::Soft) => {}
    }
    let marker = format!(r#"{{"type": "{STREAM_UNDELETED}"}}"#);
    let (version, position) = append_marker(&conn, memory, stream, locked.version, &marker)?;
    conn.execute(&MARK_UNDELETED, &[Some(uuid_datum(stream))]);
    audit(
        &conn,
        "undelete_stream",
        stream,
        &format!(
            r#"{{"version": {}, "marker_version": {version}, "marker_position": {position}}}"#,
            locked.version
        ),
    );
    Ok(version)
}

/// The revision whose snapshots a truncation of a stream of `stream_type` needs: `Some(None)`
/// for an account (its snapshots have no revision), `Some(Some(r))` for a declared type,
/// `None` for a stream without a state the store keeps (generic, or of an undeclared type).
fn snapshot_revision(conn: &Connection, stream_type: Option<&str>) -> Option<Option<i64>> {
    let stream_type = stream_type?;
    if stream_type == ACCOUNT_STREAM_TYPE {
        return Some(None);
    }
    let def = registry::aggregate_type(conn, stream_type)?;
    (!def.native).then_some(Some(def.revision))
}

/// ES005 unless a usable snapshot holds the state at `at` (`revision`: see
/// [`snapshot_revision`]); an account's must be a valid account state at that version.
fn check_covered(
    conn: &Connection,
    stream: &Uuid,
    at: i64,
    revision: Option<i64>,
    before_version: i64,
) -> Result<(), EventStoreError> {
    let rows = conn.execute(
        &SNAPSHOT_AT,
        &[Some(uuid_datum(stream)), Some(i64_datum(at))],
    );
    let usable = !rows.is_empty()
        && rows.i64(0, 2) == revision
        && (revision.is_some()
            || rows
                .jsonb(0, 1)
                .and_then(|j| j.account_state().ok())
                .is_some_and(|s: AccountState| s.version == at && s.check().is_ok()));
    if usable {
        return Ok(());
    }
    let newest = conn
        .execute(
            &NEWEST_SNAPSHOT_OF,
            &[
                Some(uuid_datum(stream)),
                Some(i64_datum(i64::MAX)),
                revision.map(i64_datum),
            ],
        )
        .first_i64();
    Err(EventStoreError::TruncationNotCovered {
        stream_id: stream.to_string(),
        before_version,
        newest,
    })
}

/// `es.truncate_stream`: removes the events below `before_version` when a usable snapshot
/// holds the state at `before_version - 1` (a stream without a kept state needs none), and the
/// snapshots below it. Returns the number of events removed.
pub fn truncate_stream(stream: &Uuid, before_version: i64) -> Result<i64, EventStoreError> {
    let conn = Connection::connect();
    let locked = lock(&conn, stream)?;
    locked.life.check_live(stream)?;
    let truncated_before = locked.life.truncated_before.unwrap_or(1);
    let Some(cut) = truncation_cut(before_version, locked.version, truncated_before)? else {
        audit(
            &conn,
            "truncate_stream",
            stream,
            &format!(
                r#"{{"before_version": {before_version}, "truncated_before": {truncated_before}, "events_removed": 0, "first_position_removed": null, "last_position_removed": null}}"#
            ),
        );
        return Ok(0);
    };
    if let Some(revision) = snapshot_revision(&conn, locked.stream_type.as_deref()) {
        check_covered(&conn, stream, cut - 1, revision, cut)?;
    }
    conn.execute(
        &SET_TRUNCATED,
        &[Some(uuid_datum(stream)), Some(i64_datum(cut))],
    );
    conn.execute(
        &DELETE_SNAPSHOTS_BELOW,
        &[Some(uuid_datum(stream)), Some(i64_datum(cut - 1))],
    );
    let (removed, first, last) = purge(&conn, stream);
    audit(
        &conn,
        "truncate_stream",
        stream,
        &format!(
            r#"{{"before_version": {cut}, "truncated_before": {cut}, "snapshot_version": {}, "events_removed": {removed}, "first_position_removed": {first}, "last_position_removed": {last}}}"#,
            cut - 1
        ),
    );
    Ok(removed)
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// The stream row locked, with its life (for the acts on it).
pub static LOCK_STREAM_LIFECYCLE: Stmt = Stmt::new(
    "LockStreamLifecycle",
    c"SELECT version, stream_type, deleted, deleted_at::text, truncated_before
                    FROM es.streams WHERE stream_id = $1 FOR UPDATE",
    &[UUIDOID],
);

/// Marks a stream deleted (soft or hard; a hard delete forgets the kept state).
pub static MARK_DELETED: Stmt = Stmt::new(
    "MarkDeleted",
    c"UPDATE es.streams
                     SET deleted = $2, deleted_at = transaction_timestamp(),
                         state = CASE WHEN $2 = 'hard' THEN NULL ELSE state END,
                         state_revision = CASE WHEN $2 = 'hard' THEN NULL ELSE state_revision END
                   WHERE stream_id = $1",
    &[UUIDOID, TEXTOID],
);

/// Marks a stream live again.
pub static MARK_UNDELETED: Stmt = Stmt::new(
    "MarkUndeleted",
    c"UPDATE es.streams SET deleted = NULL, deleted_at = NULL WHERE stream_id = $1",
    &[UUIDOID],
);

/// Records a truncation's cut.
pub static SET_TRUNCATED: Stmt = Stmt::new(
    "SetTruncated",
    c"UPDATE es.streams SET truncated_before = $2 WHERE stream_id = $1",
    &[UUIDOID, INT8OID],
);

/// Removes the events a stream's row records as removed (es.purge_stream).
pub static PURGE_STREAM: Stmt = Stmt::new(
    "PurgeStream",
    c"SELECT removed, first_position, last_position FROM es.purge_stream($1)",
    &[UUIDOID],
);

/// Removes a stream's snapshots below a version.
pub static DELETE_SNAPSHOTS_BELOW: Stmt = Stmt::new(
    "DeleteSnapshotsBelow",
    c"DELETE FROM es.snapshots WHERE stream_id = $1 AND version < $2",
    &[UUIDOID, INT8OID],
);

/// A snapshot at exactly a version, with its revision.
pub static SNAPSHOT_AT: Stmt = Stmt::new(
    "SnapshotAt",
    c"SELECT state, revision FROM es.snapshots WHERE stream_id = $1 AND version = $2",
    &[UUIDOID, INT8OID],
);

/// The newest snapshot of a revision (NULL: an account's) at or below a version.
pub static NEWEST_SNAPSHOT_OF: Stmt = Stmt::new(
    "NewestSnapshotOf",
    c"SELECT max(version) FROM es.snapshots
                  WHERE stream_id = $1 AND version <= $2 AND revision IS NOT DISTINCT FROM $3",
    &[UUIDOID, INT8OID, INT8OID],
);

/// The global position of one event of a stream.
pub static EVENT_POSITION: Stmt = Stmt::new(
    "EventPosition",
    c"SELECT global_position FROM es.events WHERE stream_id = $1 AND version = $2",
    &[UUIDOID, INT8OID],
);
