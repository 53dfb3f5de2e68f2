//! Reads: `es.load_events`, `es.stream_version` and the gap-safe global log `es.read_all`
//! (SPEC §3).

use super::{i64_arg, i64_datum, materialize, no_value, required, uuid_arg, uuid_datum};
use crate::core::EventStoreError;
use crate::native::{self, Outcome};
use crate::shmem;
use crate::storage::{Spi, Stmt};
use pgrx::pg_sys::{self, Datum};

crate::sql_function!(es_load_events, pg_finfo_es_load_events, load_events);
crate::sql_function!(
    es_stream_version,
    pg_finfo_es_stream_version,
    stream_version
);
crate::sql_function!(es_read_all, pg_finfo_es_read_all, read_all);

/// `es.load_events(stream_id, from_version DEFAULT 0, max_count DEFAULT NULL) RETURNS SETOF es.events`.
fn load_events(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, EventStoreError> {
    let stream = uuid_arg(fcinfo, 0, "stream_id")?;
    let from = required(fcinfo, 1, "from_version")?.value() as i64;
    let max = i64_arg(fcinfo, 2);
    if let Some(m) = max
        && m < 0
    {
        return Err(EventStoreError::InvalidArgument {
            name: "max_count",
            reason: format!("{m} is negative (NULL means all)"),
        });
    }
    let (store, desc) = materialize(fcinfo);
    // Natively, row by row into the tuple store (which spills to disk past work_mem), so a
    // long stream costs no more backend memory than a short one; through SPI when the native
    // read does not apply (privileges, row-level security).
    let mut left = max.unwrap_or(i64::MAX);
    if left == 0 {
        return Ok(no_value());
    }
    let scanned = native::scan_stream(&stream, from, i64::MAX, false, &mut |row| {
        let (values, nulls) = row.columns().ok_or(())?;
        unsafe {
            pg_sys::tuplestore_putvalues(
                store,
                desc,
                values.as_ptr().cast_mut(),
                nulls.as_ptr().cast_mut(),
            )
        };
        left -= 1;
        if left == 0 { Err(()) } else { Ok(()) }
    });
    if let Outcome::Done(_) = scanned {
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
    rows.copy_into(store, desc);
    spi.finish();
    Ok(no_value())
}

/// `es.stream_version(stream_id) RETURNS bigint`: 0 when the stream does not exist.
fn stream_version(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, EventStoreError> {
    let stream = uuid_arg(fcinfo, 0, "stream_id")?;
    let spi = Spi::connect();
    let rows = spi.read(Stmt::StreamVersion, &[Some(uuid_datum(&stream))]);
    let version = rows.first_i64().unwrap_or(0);
    spi.finish();
    Ok(i64_datum(version))
}

/// `es.read_all(after_position DEFAULT 0, max_count DEFAULT 1000) RETURNS SETOF es.events`.
///
/// Always reads the latest committed state (a snapshot of its own, taken together with the
/// in-flight bound), also inside a REPEATABLE READ transaction: that is what makes paging with
/// the last position gap-safe.
fn read_all(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, EventStoreError> {
    let after = required(fcinfo, 0, "after_position")?.value() as i64;
    let max = required(fcinfo, 1, "max_count")?.value() as i32;
    if max < 0 {
        return Err(EventStoreError::InvalidArgument {
            name: "max_count",
            reason: format!("{max} is negative"),
        });
    }
    let (store, desc) = materialize(fcinfo);
    let (horizon, snapshot) = shmem::read_horizon()?;
    let spi = Spi::connect();
    let rows = spi.read_in(
        Stmt::ReadAll,
        &[
            Some(i64_datum(after)),
            Some(i64_datum(horizon)),
            Some(Datum::from(max)),
        ],
        snapshot,
    );
    rows.copy_into(store, desc);
    spi.finish();
    unsafe { pg_sys::UnregisterSnapshot(snapshot) };
    Ok(no_value())
}
