//! Reading one stream in version order: what replay, the account commands and the audit fold
//! over. Natively through the `(stream_id, version)` index when it can
//! ([`crate::pg::heap::scan_stream`]), else through SQL a page at a time; traced as the seed's
//! `event_store.load_events` with the number of events visited.

use super::sql::{LOAD_EVENTS, LOAD_EVENTS_ARCHIVED};
use crate::pg::call::{i64_datum, uuid_datum};
use crate::pg::heap::{self, Outcome, StreamRow};
use crate::pg::spi::{Connection, Reading};
use event_store_core::EventStoreError;
use uuid::Uuid;

/// Rows per page when the stream is read through SQL (bounds the memory of a long replay).
const PAGE: i64 = 10_000;

/// Visits the events of `stream` with `from < version <= to` in order, as `reading` sees them.
#[tracing::instrument(
    name = "event_store.load_events",
    skip_all,
    fields(
        aggregate_id = %stream,
        from_version = from,
        events_count = tracing::field::Empty,
        db.system = "postgresql",
        db.operation = "SELECT",
        event_sourcing.operation = "replay"
    ),
    err
)]
pub fn visit_events(
    conn: &Connection,
    stream: &Uuid,
    from: i64,
    to: i64,
    reading: Reading,
    visit: &mut dyn FnMut(&StreamRow<'_>) -> Result<(), EventStoreError>,
) -> Result<(), EventStoreError> {
    let mut count = 0i64;
    let result = visit_untraced(conn, stream, from, to, reading, &mut |row| {
        count += 1;
        visit(row)
    });
    tracing::Span::current().record("events_count", count);
    result
}

fn visit_untraced(
    conn: &Connection,
    stream: &Uuid,
    from: i64,
    to: i64,
    reading: Reading,
    visit: &mut dyn FnMut(&StreamRow<'_>) -> Result<(), EventStoreError>,
) -> Result<(), EventStoreError> {
    if to <= from {
        return Ok(());
    }
    // A fold that would start below a truncation's cut would give a wrong state: refuse it.
    super::life::check_readable(conn, stream, from, reading)?;
    // Through the archive: both tables in one statement per page (each page sees every event
    // of the stream exactly once, whichever table holds it in that page's snapshot).
    let archived = super::read::through_archive();
    if !archived && let Outcome::Done(result) = heap::scan_stream(stream, from, to, reading, visit)
    {
        return result;
    }
    let load = if archived {
        &LOAD_EVENTS_ARCHIVED
    } else {
        &LOAD_EVENTS
    };
    let mut after = from;
    while after < to {
        let args = [
            Some(uuid_datum(stream)),
            Some(i64_datum(after)),
            Some(i64_datum(PAGE.min(to - after))),
        ];
        let rows = conn.query_as(reading, load, &args);
        if rows.is_empty() {
            break;
        }
        for r in 0..rows.len() {
            let version = rows.i64(r, 3).unwrap_or(0);
            // LOAD_EVENTS(_ARCHIVED) is `SELECT *` of es.events (or of its archive, which has the
            // same columns): columns 5, 7, 9, 10 are event_type, data, occurred_at, recorded_at
            let Some(row) = StreamRow::from_rows(&rows, r, version, [5, 7, 9, 10]) else {
                continue;
            };
            after = version;
            visit(&row)?;
        }
        rows.free();
    }
    Ok(())
}
