//! The statements more than one use case of the store runs (the others sit next to their
//! use case), prepared once per backend by `pg::spi`.

use crate::pg::spi::{Stmt, cstr};
use pgrx::pg_sys::BuiltinOid::{INT8OID, JSONBOID, TEXTOID, TIMESTAMPTZOID, UUIDOID};

/// The whole log, live and archived, as one relation (`es.events_archive` has the columns of
/// `es.events`, in the same order; a DBA who adds a column to one must add it to the other, and
/// these statements run only once something was archived): PostgreSQL flattens it into an append of the two tables, so
/// a qualifier on position or stream reaches both indexes, and one statement reads both in one
/// snapshot (an event moved by `es.archive` is seen in exactly one of them).
macro_rules! all_events {
    () => {
        "(SELECT * FROM es.events UNION ALL SELECT * FROM es.events_archive)"
    };
}
pub(crate) use all_events;

/// Current version of a stream.
pub static STREAM_VERSION: Stmt = Stmt::new(
    "StreamVersion",
    c"SELECT version FROM es.streams WHERE stream_id = $1",
    &[UUIDOID],
);

/// A stream's events after a version.
pub static LOAD_EVENTS: Stmt = Stmt::new(
    "LoadEvents",
    c"SELECT * FROM es.events WHERE stream_id = $1 AND version > $2
                  ORDER BY version LIMIT $3",
    &[UUIDOID, INT8OID, INT8OID],
);

/// The newest version of a stream at or below a version, recorded at or before a time.
pub static VERSION_AS_OF: Stmt = Stmt::new(
    "VersionAsOf",
    c"SELECT version FROM es.events
                  WHERE stream_id = $1 AND version <= $2 AND recorded_at <= $3
                  ORDER BY version DESC LIMIT 1",
    &[UUIDOID, INT8OID, TIMESTAMPTZOID],
);

/// The primary's worker writes the watermark (only forward).
pub static WRITE_WATERMARK: Stmt = Stmt::new(
    "WriteWatermark",
    c"INSERT INTO es.watermark AS w (id, position, written_at)
                  VALUES (1, $1, pg_catalog.clock_timestamp())
                  ON CONFLICT (id) DO UPDATE
                  SET position = excluded.position, written_at = excluded.written_at
                  WHERE w.position < excluded.position",
    &[INT8OID],
);

/// The last position the sequence handed out (0 before the first).
pub static SEQUENCE_LAST: Stmt = Stmt::new(
    "SequenceLast",
    c"SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
                    FROM es.global_position_seq",
    &[],
);

/// Whether the extension is installed in this database at a version with projections (the
/// worker's first question; a store still at 0.1.0 has nothing for it to do).
pub static EXTENSION_PRESENT: Stmt = Stmt::new(
    "ExtensionPresent",
    c"SELECT count(*) FROM pg_catalog.pg_extension
                   WHERE extname = 'event_store'
                     AND pg_catalog.to_regclass('es.projection_config') IS NOT NULL",
    &[],
);

/// Store a declared type's state with its revision (when the bump went through SPI, and
/// after a rebuild).
pub static SET_STATE_REVISION: Stmt = Stmt::new(
    "SetStateRevision",
    c"UPDATE es.streams SET state = $2, state_revision = $3 WHERE stream_id = $1",
    &[UUIDOID, JSONBOID, INT8OID],
);

/// [`LOAD_EVENTS`] through the archive: a stream's events in `es.events` and
/// `es.events_archive` after a version (once anything was archived).
pub static LOAD_EVENTS_ARCHIVED: Stmt = Stmt::new(
    "LoadEventsArchived",
    cstr!(concat!(
        "SELECT * FROM ",
        all_events!(),
        " e WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3"
    )),
    &[UUIDOID, INT8OID, INT8OID],
);

/// [`VERSION_AS_OF`] through the archive.
pub static VERSION_AS_OF_ARCHIVED: Stmt = Stmt::new(
    "VersionAsOfArchived",
    cstr!(concat!(
        "SELECT version FROM ",
        all_events!(),
        " e WHERE stream_id = $1 AND version <= $2 AND recorded_at <= $3
                      ORDER BY version DESC LIMIT 1"
    )),
    &[UUIDOID, INT8OID, TIMESTAMPTZOID],
);

/// One row of es.data_audit.
pub static AUDIT_INSERT: Stmt = Stmt::new(
    "AuditInsert",
    c"INSERT INTO es.data_audit (action, target, detail) VALUES ($1, $2, $3)",
    &[TEXTOID, TEXTOID, JSONBOID],
);
