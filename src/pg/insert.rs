//! Storing the rows of an append: natively ([`super::heap::insert_events`]) or, when the table
//! has something only the executor does, through SQL (one statement for one event, one
//! `unnest` statement for a batch). A unique violation is caught and handed back as a value
//! ([`Conflict`]) for the caller to report in its own words, never as a raw `23505`.

use super::call::array_of;
use super::heap::{self, EventRow, Outcome};
use super::spi::{self, Arg, Connection, Stmt};
use pgrx::pg_sys::{self, BuiltinOid, Datum};
use pgrx::{PgSqlErrorCode, PgTryBuilder};

/// A unique index refused a row: which column and the value, as PostgreSQL reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// `event_id` is already stored.
    EventId(String),
    /// `global_position` is already stored.
    Position(String),
}

/// Inserts `rows` (in order) with their index entries. `array` is the `events` argument the rows
/// were read from (the SQL path stores its elements as they are).
///
/// After a [`Conflict`] the transaction holds a half-done insert: the caller must end the call
/// with an ERROR (the abort removes it); the SPI connection is left to that abort.
pub fn insert_events(conn: &Connection, rows: &[EventRow], array: Datum) -> Result<(), Conflict> {
    PgTryBuilder::new(|| {
        if heap::insert_events(rows) == Outcome::Fallback {
            insert_with_sql(conn, rows, array);
        }
        Ok(())
    })
    .catch_when(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, |caught| {
        let detail = match &caught {
            pgrx::pg_sys::panic::CaughtError::PostgresError(report) => {
                report.detail().unwrap_or_default().to_owned()
            }
            _ => String::new(),
        };
        let value = detail
            .split_once("=(")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(v, _)| v.to_owned())
            .unwrap_or_default();
        if detail.contains("(event_id)") {
            spi::leave_to_abort();
            Err(Conflict::EventId(value))
        } else if detail.contains("(global_position)") {
            spi::leave_to_abort();
            Err(Conflict::Position(value))
        } else {
            caught.rethrow()
        }
    })
    .execute()
}

/// The rows through the executor: one statement for one event, one `unnest` statement for a
/// batch.
fn insert_with_sql(conn: &Connection, rows: &[EventRow], array: Datum) {
    if let [row] = rows {
        conn.execute(Stmt::InsertOne, &row[..9]);
        return;
    }
    let column = |c: usize| -> Vec<Arg> { rows.iter().map(|r| r[c]).collect() };
    conn.execute(
        Stmt::InsertBatch,
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
