//! A stream's life as the reads and appends see it (docs/reference.md §14): whether it is deleted (soft or
//! hard, and when) and where a truncation cut it, from its `es.streams` row. The acts that
//! change it are in [`super::lifecycle`].
//!
//! Every lookup first asks whether the schema has the columns (a library newer than a 0.1.0
//! schema runs until `ALTER EXTENSION event_store UPDATE`): without them no stream is deleted
//! or truncated, and the statements that name them are never prepared.

use crate::pg::call::uuid_datum;
use crate::pg::heap;
use crate::pg::spi::{Connection, Reading, Stmt};
use event_store_core::EventStoreError;
use event_store_core::lifecycle::{Deletion, check_readable_from};
use pgrx::pg_sys::BuiltinOid::{TIMESTAMPTZOID, UUIDOID};
use pgrx::pg_sys::Datum;
use uuid::Uuid;

/// What a stream's row says of its life.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Life {
    /// Deleted, and how.
    pub deleted: Option<Deletion>,
    /// When it was deleted, as PostgreSQL prints the time (empty when live).
    pub deleted_at: String,
    /// Events with a lower version were removed by a truncation.
    pub truncated_before: Option<i64>,
}

impl Life {
    /// ES007 for this stream, when it is deleted.
    pub fn deleted_error(&self, stream: &Uuid) -> Option<EventStoreError> {
        self.deleted.map(|d| EventStoreError::StreamDeleted {
            stream_id: stream.to_string(),
            hard: d == Deletion::Hard,
            deleted_at: self.deleted_at.clone(),
        })
    }

    /// ES007 when deleted, else nothing.
    pub fn check_live(&self, stream: &Uuid) -> Result<(), EventStoreError> {
        self.deleted_error(stream).map_or(Ok(()), Err)
    }
}

/// The life of `stream` as `reading` sees it (the default: a live, untruncated stream, also
/// when it does not exist, and for a role that may not read `es.streams`, which then reads the
/// events as stored).
pub fn of(conn: &Connection, stream: &Uuid, reading: Reading) -> Life {
    if !heap::streams_have_lifecycle() || !heap::streams_readable() {
        return Life::default();
    }
    let rows = conn.query_as(reading, &STREAM_LIFECYCLE, &[Some(uuid_datum(stream))]);
    if rows.is_empty() {
        return Life::default();
    }
    Life {
        deleted: rows.text(0, 1).as_deref().and_then(Deletion::parse),
        deleted_at: rows.text(0, 2).unwrap_or_default(),
        truncated_before: rows.i64(0, 3),
    }
}

/// ES007 for a stream an append found deleted, with when, as of the latest commits.
pub fn deleted_error(conn: &Connection, stream: &Uuid, hard: bool) -> EventStoreError {
    let life = of(conn, stream, Reading::Latest);
    EventStoreError::StreamDeleted {
        stream_id: stream.to_string(),
        hard: life.deleted.map_or(hard, |d| d == Deletion::Hard),
        deleted_at: life.deleted_at,
    }
}

/// ES008 when reading the events of `stream` above `from` needs events a truncation removed.
pub fn check_readable(
    conn: &Connection,
    stream: &Uuid,
    from: i64,
    reading: Reading,
) -> Result<(), EventStoreError> {
    let life = of(conn, stream, reading);
    check_readable_from(&stream.to_string(), from, life.truncated_before)
}

/// ES008 for a time-travel read of `stream` at `as_of` that found no stored event at or before
/// that time, when a truncation removed the events that might have answered it (the stream
/// existed then); `Ok` when the stream was not created yet, which the caller answers as such.
pub fn check_found_as_of(
    conn: &Connection,
    stream: &Uuid,
    as_of: Datum,
    reading: Reading,
) -> Result<(), EventStoreError> {
    let Some(cut) = of(conn, stream, reading).truncated_before else {
        return Ok(());
    };
    let existed = conn
        .query_as(
            reading,
            &CREATED_BY,
            &[Some(uuid_datum(stream)), Some(as_of)],
        )
        .bool(0, 1)
        .unwrap_or(false);
    if existed {
        return Err(EventStoreError::StreamTruncated {
            stream_id: stream.to_string(),
            before_version: cut,
            asked: 1,
        });
    }
    Ok(())
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// A stream's life: deleted, when, truncated before (schema 0.2.0 on only).
pub static STREAM_LIFECYCLE: Stmt = Stmt::new(
    "StreamLifecycle",
    c"SELECT deleted, deleted_at::text, truncated_before FROM es.streams WHERE stream_id = $1",
    &[UUIDOID],
);

/// Whether a stream was created at or before a time.
pub static CREATED_BY: Stmt = Stmt::new(
    "CreatedBy",
    c"SELECT created_at <= $2 FROM es.streams WHERE stream_id = $1",
    &[UUIDOID, TIMESTAMPTZOID],
);
