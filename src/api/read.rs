//! Reads (docs/reference.md §3): `es.load_events`, `es.stream_version` and the gap-safe global log
//! `es.read_all`.

use crate::pg::call::{Call, i64_datum, no_value};
use crate::store;
use event_store_core::EventStoreError;
use event_store_macros::sql_function;
use pgrx::pg_sys::Datum;

#[sql_function(
    sql = "es.load_events(stream_id uuid, from_version bigint DEFAULT 0, max_count bigint DEFAULT NULL)
RETURNS SETOF es.events
LANGUAGE c STABLE PARALLEL SAFE",
    comment = "Events of a stream with version > from_version, ascending, at most max_count (NULL = all).",
    span = "event_store.load_events",
    span_args = "aggregate_id = stream_id, from_version = from_version",
    span_fields = r#"db.system = "postgresql", db.operation = "SELECT", event_sourcing.operation = "replay""#
)]
fn load_events(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use load_events_args as arg;
    let stream = call.uuid(arg::stream_id)?;
    let from = call.required_i64(arg::from_version)?;
    let max = call.i64(arg::max_count);
    let mut out = call.materialize_row_type();
    store::read::load_events(&stream, from, max, &mut out)?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.stream_version(stream_id uuid)
RETURNS bigint
LANGUAGE c STABLE PARALLEL SAFE",
    comment = "Current version of a stream; 0 when it does not exist.",
    span = "event_store.stream_version",
    span_args = "aggregate_id = stream_id",
    span_fields = r#"db.system = "postgresql", db.operation = "SELECT""#
)]
fn stream_version(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let stream = call.uuid(stream_version_args::stream_id)?;
    Ok(i64_datum(store::read::stream_version(&stream)))
}

#[sql_function(
    sql = "es.read_all(after_position bigint DEFAULT 0, max_count bigint DEFAULT 1000)
RETURNS SETOF es.events
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "The global log after after_position in global_position order. Gap-safe: it stops before the first position still in flight, so a reader paging with its last position never skips an event. Needs shared_preload_libraries = 'event_store'.",
    span = "event_store.read_all",
    span_args = "after_position = after_position",
    span_fields = r#"db.system = "postgresql", db.operation = "SELECT""#
)]
fn read_all(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use read_all_args as arg;
    let after = call.required_i64(arg::after_position)?;
    let max = call.required_i64(arg::max_count)?;
    let mut out = call.materialize_row_type();
    store::read::read_all(after, max, &mut out)?;
    Ok(no_value())
}
