//! Snapshots: `es.save_snapshot` and `es.load_snapshot` (SPEC §4). The automatic snapshots of
//! account streams build on these statements; a snapshot saved by hand for an account stream
//! must be the account's true state at its version.

use super::account::load_state;
use super::replay::parse_state;
use super::{Call, i64_datum, no_value, uuid_datum};
use crate::core::account::state_json;
use crate::core::{ACCOUNT_STREAM_TYPE, EventStoreError};
use crate::storage::{Spi, Stmt};
use pgrx::pg_sys::Datum;

crate::sql_function!(es_save_snapshot, pg_finfo_es_save_snapshot, save_snapshot);
crate::sql_function!(es_load_snapshot, pg_finfo_es_load_snapshot, load_snapshot);

/// `es.save_snapshot(stream_id, version, state) RETURNS void`.
fn save_snapshot(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let stream = call.uuid(0, "stream_id")?;
    let version = call.required_i64(1, "version")?;
    let state = call
        .jsonb(2)
        .ok_or(EventStoreError::NullArgument { name: "state" })?;
    let spi = Spi::connect();
    let rows = spi.read_latest(Stmt::StreamInfo, &[Some(uuid_datum(&stream))]);
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
        let (truth, holder) = load_state(&spi, &stream, version, true)?;
        let given = parse_state(state);
        if given != Ok((truth, holder.as_str())) {
            return Err(EventStoreError::SnapshotMismatch {
                stream_id: stream.to_string(),
                version,
                expected: state_json(&holder, &truth),
            });
        }
    }
    spi.write(
        Stmt::SaveSnapshot,
        &[
            Some(uuid_datum(&stream)),
            Some(i64_datum(version)),
            Some(state.datum()),
        ],
    );
    Ok(no_value())
}

/// `es.load_snapshot(stream_id, at_version DEFAULT NULL) RETURNS TABLE(version, state, taken_at)`.
fn load_snapshot(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let stream = call.uuid(0, "stream_id")?;
    let at = call.i64(1);
    let mut out = call.materialize();
    let spi = Spi::connect();
    let rows = spi.read(
        Stmt::LoadSnapshot,
        &[Some(uuid_datum(&stream)), at.map(i64_datum)],
    );
    rows.copy_into(&mut out);
    Ok(no_value())
}
