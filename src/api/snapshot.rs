//! Snapshots: `es.save_snapshot` and `es.load_snapshot` (SPEC §4). The automatic snapshots of
//! account streams build on these statements.

use super::{i64_arg, i64_datum, materialize, no_value, required, uuid_arg, uuid_datum};
use crate::core::EventStoreError;
use crate::storage::{Spi, Stmt};
use pgrx::pg_sys::{self, Datum};

crate::sql_function!(es_save_snapshot, pg_finfo_es_save_snapshot, save_snapshot);
crate::sql_function!(es_load_snapshot, pg_finfo_es_load_snapshot, load_snapshot);

/// `es.save_snapshot(stream_id, version, state) RETURNS void`.
fn save_snapshot(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, EventStoreError> {
    let stream = uuid_arg(fcinfo, 0, "stream_id")?;
    let version = required(fcinfo, 1, "version")?.value() as i64;
    let state = required(fcinfo, 2, "state")?;
    let spi = Spi::connect();
    let rows = spi.read_latest(Stmt::StreamVersion, &[Some(uuid_datum(&stream))]);
    let current = rows.first_i64().unwrap_or(0);
    if version < 1 || version > current {
        return Err(EventStoreError::InvalidSnapshot {
            stream_id: stream.to_string(),
            version,
            current,
        });
    }
    spi.write(
        Stmt::SaveSnapshot,
        &[
            Some(uuid_datum(&stream)),
            Some(i64_datum(version)),
            Some(state),
        ],
    );
    spi.finish();
    Ok(no_value())
}

/// `es.load_snapshot(stream_id, at_version DEFAULT NULL) RETURNS TABLE(version, state, taken_at)`.
fn load_snapshot(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, EventStoreError> {
    let stream = uuid_arg(fcinfo, 0, "stream_id")?;
    let at = i64_arg(fcinfo, 1);
    let (store, desc) = materialize(fcinfo);
    let spi = Spi::connect();
    let rows = spi.read(
        Stmt::LoadSnapshot,
        &[Some(uuid_datum(&stream)), at.map(i64_datum)],
    );
    rows.copy_into(store, desc);
    spi.finish();
    Ok(no_value())
}
