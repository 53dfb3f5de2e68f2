//! Storing the rows of an append: natively ([`super::heap::EventsTarget`]) or, when the table
//! has something only the executor does, through SQL (one statement for one event, one
//! `unnest` statement for a batch). A unique violation is caught and handed back as a value
//! ([`Conflict`]) for the caller to report in its own words, never as a raw `23505`.

use super::call::array_of;
use super::heap::{self, EventRow};
use super::positions::Draw;
use super::spi::{self, Arg, Connection, Stmt};
use event_store_core::EventStoreError;
use pgrx::PgSqlErrorCode;
use pgrx::pg_sys::BuiltinOid::{
    INT4ARRAYOID, INT4OID, INT8OID, JSONBARRAYOID, JSONBOID, TEXTARRAYOID, TEXTOID,
    TIMESTAMPTZARRAYOID, TIMESTAMPTZOID, UUIDARRAYOID, UUIDOID,
};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::pg_sys::{self, BuiltinOid, Datum};
use std::any::Any;
use std::panic::AssertUnwindSafe;

/// A unique index refused a row: which column and the value, as PostgreSQL reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// `event_id` is already stored.
    EventId(String),
    /// `global_position` is already stored.
    Position(String),
}

/// Inserts `rows` (in order) with their index entries, at the global positions of the draw
/// `draw` prepares, from the first position drawn, which is returned (the stored rows carry
/// the positions; `rows`' own `global_position` is set only on the SQL path, which reads it). `array` is the `events` argument the rows were read from (the SQL
/// path stores its elements as they are).
///
/// `draw` is called once, after the table and its indexes are opened and checked (and
/// locked), and the positions are drawn as late as possible: the common draw (one position)
/// inside the native insert's own guarded region, directly before the heap insert, any other
/// directly before the inserts; so the positions are in flight only for the inserts and the
/// commit (docs/reference.md §3: gap-safe readers wait for every position in flight below
/// theirs). An `Err` of the draw is handed back inside `Ok`, with nothing inserted.
///
/// After a [`Conflict`] the transaction holds a half-done insert: the caller must end the call
/// with an ERROR (the abort removes it); the SPI connection is left to that abort.
pub fn insert_events(
    conn: &Connection,
    rows: &mut [EventRow],
    array: Datum,
    draw: impl FnOnce() -> Draw,
) -> Result<Result<i64, EventStoreError>, Conflict> {
    // The closure owns `rows` and `draw` for its one run; nothing of them is used after an
    // ERROR it catches (the catch only reads the error report). A plain `catch_unwind`, not
    // pgrx's `PgTryBuilder`, which builds and drops its table of handlers on every append.
    let stored = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let native = heap::open_events(rows);
        let draw = draw();
        let first = match (native, draw.one()) {
            (Some(target), Some(one)) => {
                // SAFETY: `draw_in_guard` is called inside the insert's one guard, as its
                // contract asks; it owns nothing with a destructor and cannot panic.
                unsafe { target.insert(rows, || one.draw_in_guard()) }
            }
            (native, _) => {
                let first = match draw.draw() {
                    Ok(first) => first,
                    Err(e) => {
                        if let Some(target) = native {
                            target.close();
                        }
                        return Ok(Err(e));
                    }
                };
                match native {
                    // SAFETY: the closure only returns the position drawn above: it owns
                    // nothing with a destructor and cannot panic.
                    Some(target) => unsafe { target.insert(rows, || first) },
                    None => {
                        heap::set_positions(rows, first);
                        insert_with_sql(conn, rows, array);
                        return Ok(Ok(first));
                    }
                }
            }
        };
        // The native insert wrote the positions into its own copies of the rows, and `rows`
        // is not read after the insert: nothing to set in them.
        Ok(Ok(first))
    }));
    match stored {
        Ok(stored) => stored,
        Err(payload) => Err(conflict_or_unwind(payload)),
    }
}

/// The [`Conflict`] a unique violation of `es.events` raised by the insert is (an ERROR
/// caught by a pgrx guard, as every ERROR of the insert is); anything else goes on unwinding
/// exactly as it was raised. Out of the append's common code.
#[cold]
#[inline(never)]
fn conflict_or_unwind(payload: Box<dyn Any + Send>) -> Conflict {
    let conflict = match payload.downcast_ref::<CaughtError>() {
        Some(CaughtError::PostgresError(report))
            if report.sql_error_code() == PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION =>
        {
            let detail = report.detail().unwrap_or_default();
            let value = detail
                .split_once("=(")
                .and_then(|(_, rest)| rest.split_once(')'))
                .map(|(v, _)| v.to_owned())
                .unwrap_or_default();
            if detail.contains("(event_id)") {
                Some(Conflict::EventId(value))
            } else if detail.contains("(global_position)") {
                Some(Conflict::Position(value))
            } else {
                None
            }
        }
        _ => None,
    };
    let Some(conflict) = conflict else {
        std::panic::resume_unwind(payload)
    };
    spi::leave_to_abort();
    // The guard that caught the ERROR flushed PostgreSQL's error state already; flushed again
    // as pgrx's `PgTryBuilder` does after a handled error (it is idempotent).
    // SAFETY: no error is being processed here: the guard turned it into this payload.
    unsafe { pg_sys::FlushErrorState() };
    conflict
}

/// The rows through the executor: one statement for one event, one `unnest` statement for a
/// batch.
fn insert_with_sql(conn: &Connection, rows: &[EventRow], array: Datum) {
    if let [row] = rows {
        conn.execute(&INSERT_ONE, &row[..9]);
        return;
    }
    let column = |c: usize| -> Vec<Arg> { rows.iter().map(|r| r[c]).collect() };
    conn.execute(
        &INSERT_BATCH,
        &[
            rows[0][0],
            rows[0][1],
            rows[0][2],
            Some(array_of(
                &column(3),
                BuiltinOid::UUIDOID,
                16,
                false,
                pg_sys::TYPALIGN_CHAR,
            )),
            Some(array_of(
                &column(4),
                BuiltinOid::TEXTOID,
                -1,
                false,
                pg_sys::TYPALIGN_INT,
            )),
            Some(array_of(
                &column(5),
                BuiltinOid::INT4OID,
                4,
                true,
                pg_sys::TYPALIGN_INT,
            )),
            Some(array),
            Some(array_of(
                &column(7),
                BuiltinOid::JSONBOID,
                -1,
                false,
                pg_sys::TYPALIGN_INT,
            )),
            Some(array_of(
                &column(8),
                BuiltinOid::TIMESTAMPTZOID,
                8,
                true,
                pg_sys::TYPALIGN_DOUBLE,
            )),
        ],
    );
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// Insert one event.
pub static INSERT_ONE: Stmt = Stmt::new(
    "InsertOne",
    c"INSERT INTO es.events (global_position, stream_id, version, event_id, event_type,
                                         event_version, data, metadata, occurred_at)
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, transaction_timestamp()))",
    &[
        INT8OID,
        UUIDOID,
        INT8OID,
        UUIDOID,
        TEXTOID,
        INT4OID,
        JSONBOID,
        JSONBOID,
        TIMESTAMPTZOID,
    ],
);

/// Insert a batch of events from parallel arrays.
pub static INSERT_BATCH: Stmt = Stmt::new(
    "InsertBatch",
    c"INSERT INTO es.events (global_position, stream_id, version, event_id, event_type,
                                         event_version, data, metadata, occurred_at)
                  SELECT $1 + e.i - 1, $2, $3 + e.i - 1, e.id, e.t, e.ev, e.d, e.m,
                         coalesce(e.o, transaction_timestamp())
                  FROM unnest($4, $5, $6::int4[], $7, $8, $9) WITH ORDINALITY AS e(id, t, ev, d, m, o, i)",
                &[
                    INT8OID, UUIDOID, INT8OID, UUIDARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
                    JSONBARRAYOID, JSONBARRAYOID, TIMESTAMPTZARRAYOID,
                ],
);
