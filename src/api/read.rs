//! Reads: `es.load_events`, `es.stream_version` and the gap-safe global log `es.read_all`
//! (SPEC §3).

use super::{Call, i64_datum, no_value, uuid_datum};
use crate::core::EventStoreError;
use crate::native::{self, Outcome};
use crate::shmem;
use crate::storage::{Spi, Stmt};
use pgrx::pg_sys::Datum;

crate::sql_function!(es_load_events, pg_finfo_es_load_events, load_events);
crate::sql_function!(
    es_stream_version,
    pg_finfo_es_stream_version,
    stream_version
);
crate::sql_function!(es_read_all, pg_finfo_es_read_all, read_all);

/// Why the native read of `es.load_events` stopped before the end of the stream.
enum Stop {
    /// `max_count` rows are in the result.
    Full,
    /// The table's row does not have the result's shape (nothing was returned yet): read
    /// through SPI instead.
    Shape,
}

/// `es.load_events(stream_id, from_version DEFAULT 0, max_count DEFAULT NULL) RETURNS SETOF es.events`.
fn load_events(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let stream = call.uuid(0, "stream_id")?;
    let from = call.required_i64(1, "from_version")?;
    let max = call.i64(2);
    if let Some(m) = max
        && m < 0
    {
        return Err(EventStoreError::InvalidArgument {
            name: "max_count",
            reason: format!("{m} is negative (NULL means all)"),
        });
    }
    let mut out = call.materialize();
    // Natively, row by row into the tuple store (which spills to disk past work_mem), so a
    // long stream costs no more backend memory than a short one; through SPI when the native
    // read does not apply (privileges, row-level security, a table changed by a DBA).
    let mut left = max.unwrap_or(i64::MAX);
    if left == 0 {
        return Ok(no_value());
    }
    let scanned = native::scan_stream(&stream, from, i64::MAX, false, &mut |row| {
        let (values, nulls) = row.table_row().ok_or(Stop::Shape)?;
        if values.len() != out.natts() {
            return Err(Stop::Shape);
        }
        // SAFETY: a row of es.events (dropped attributes NULL) for a result whose row type is
        // es.events, attribute for attribute (same count, checked above).
        unsafe { out.put(values, nulls) };
        left -= 1;
        if left == 0 { Err(Stop::Full) } else { Ok(()) }
    });
    if let Outcome::Done(Ok(()) | Err(Stop::Full)) = scanned {
        return Ok(no_value());
    }
    let spi = Spi::connect();
    let rows = spi.read(
        Stmt::LoadEvents,
        &[
            Some(uuid_datum(&stream)),
            Some(i64_datum(from)),
            max.map(i64_datum),
        ],
    );
    rows.copy_into(&mut out);
    Ok(no_value())
}

/// `es.stream_version(stream_id) RETURNS bigint`: 0 when the stream does not exist.
fn stream_version(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let stream = call.uuid(0, "stream_id")?;
    let spi = Spi::connect();
    let rows = spi.read(Stmt::StreamVersion, &[Some(uuid_datum(&stream))]);
    let version = rows.first_i64().unwrap_or(0);
    Ok(i64_datum(version))
}

/// `es.read_all(after_position DEFAULT 0, max_count DEFAULT 1000) RETURNS SETOF es.events`.
///
/// Always reads the latest committed state (a snapshot of its own, taken together with the
/// in-flight bound), also inside a REPEATABLE READ transaction: that is what makes paging with
/// the last position gap-safe.
fn read_all(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let after = call.required_i64(0, "after_position")?;
    let max = call.required_i32(1, "max_count")?;
    if max < 0 {
        return Err(EventStoreError::InvalidArgument {
            name: "max_count",
            reason: format!("{max} is negative"),
        });
    }
    let mut out = call.materialize();
    let horizon = shmem::read_horizon()?;
    let spi = Spi::connect();
    let rows = spi.read_in(
        Stmt::ReadAll,
        &[
            Some(i64_datum(after)),
            Some(i64_datum(horizon.last_readable)),
            Some(Datum::from(max)),
        ],
        &horizon,
    );
    rows.copy_into(&mut out);
    Ok(no_value())
}
