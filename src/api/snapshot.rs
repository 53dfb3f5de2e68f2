//! Snapshots (docs/reference.md §4): `es.save_snapshot` and `es.load_snapshot`.

use crate::pg::call::{Call, no_value};
use crate::store;
use event_store_core::EventStoreError;
use event_store_macros::sql_function;
use pgrx::pg_sys::Datum;

#[sql_function(
    sql = "es.save_snapshot(stream_id uuid, version bigint, state jsonb)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Saves the state of a stream at a version (1..current version, else ES005); saving the same version again replaces it.",
    access = "owner",
    span = "snapshot_store.save",
    span_args = "aggregate_id = stream_id, version = version",
    span_fields = r#"db.system = "postgresql", db.operation = "INSERT", event_sourcing.optimization = "snapshot""#
)]
fn save_snapshot(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use save_snapshot_args as arg;
    let stream = call.uuid(arg::stream_id)?;
    let version = call.required_i64(arg::version)?;
    let state = call
        .jsonb(arg::state)
        .ok_or(EventStoreError::NullArgument { name: "state" })?;
    store::account::save_snapshot(&stream, version, state)?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.load_snapshot(stream_id uuid, at_version bigint DEFAULT NULL)
RETURNS TABLE(version bigint, state jsonb, taken_at timestamptz)
LANGUAGE c STABLE PARALLEL SAFE",
    comment = "The newest snapshot at or below at_version (NULL = the newest of all); no row when there is none.",
    span = "snapshot_store.load",
    span_args = "aggregate_id = stream_id, at_version = at_version",
    span_fields = r#"db.system = "postgresql", db.operation = "SELECT", event_sourcing.optimization = "snapshot""#
)]
fn load_snapshot(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use load_snapshot_args as arg;
    let stream = call.uuid(arg::stream_id)?;
    let at = call.i64(arg::at_version);
    let mut out = call.materialize();
    store::snapshot::load_snapshot(&stream, at, &mut out);
    Ok(no_value())
}
