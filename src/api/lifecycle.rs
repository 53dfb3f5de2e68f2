//! The life of a stream (docs/reference.md §14): `es.delete_stream`, `es.undelete_stream`,
//! `es.truncate_stream`.

use crate::pg::call::{Call, i64_datum};
use crate::store;
use event_store_core::{EventStoreError, ExpectedVersion};
use event_store_macros::sql_function;
use pgrx::pg_sys::Datum;

#[sql_function(
    sql = "es.delete_stream(stream_id uuid, expected_version bigint DEFAULT NULL, hard boolean DEFAULT false)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Deletes a stream and returns the version of the $stream_deleted marker it appends at the stream's head (read_all, subscriptions and projections see it). Soft (default): load_events reads it as empty, the state functions raise ES007, appends are refused (ES007) until es.undelete_stream; the events stay. Hard: a tombstone: the events before the marker, the snapshots and the kept state are removed, the id can never be used again. expected_version as in es.append_events (ES001); the stream's rules judge the marker (an account with money: ES105; a declared type's check sees it). Recorded in es.data_audit.",
    access = "owner",
    span = "event_store.delete_stream",
    span_args = "aggregate_id = stream_id, expected_version = expected_version",
    span_fields = r#"db.system = "postgresql", db.operation = "DELETE", event_sourcing.operation = "delete""#
)]
fn delete_stream(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use delete_stream_args as arg;
    let stream = call.uuid(arg::stream_id)?;
    let expected = ExpectedVersion::from_sql(call.i64(arg::expected_version))?;
    let hard = call
        .arg(arg::hard)
        .ok_or(EventStoreError::NullArgument { name: "hard" })?
        .value()
        & 0xff
        != 0;
    store::lifecycle::delete_stream(call.memory(), &stream, expected, hard).map(i64_datum)
}

#[sql_function(
    sql = "es.undelete_stream(stream_id uuid)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Restores a soft-deleted stream: appends a $stream_undeleted marker and returns its version; the stream reads and takes appends again. A hard-deleted stream: ES007; a live one: 55000. Recorded in es.data_audit.",
    access = "owner",
    span = "event_store.undelete_stream",
    span_args = "aggregate_id = stream_id",
    span_fields = r#"db.system = "postgresql", db.operation = "UPDATE", event_sourcing.operation = "undelete""#
)]
fn undelete_stream(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use undelete_stream_args as arg;
    let stream = call.uuid(arg::stream_id)?;
    store::lifecycle::undelete_stream(call.memory(), &stream).map(i64_datum)
}

#[sql_function(
    sql = "es.truncate_stream(stream_id uuid, before_version bigint)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Removes the events of a stream with version < before_version (1 <= before_version <= the stream's version, else 22023) and returns how many. An account or a stream of a declared type needs a usable snapshot at version before_version - 1 (else ES005); a generic stream none. The state, time travel and history at or above before_version - 1 are unchanged; reads that need a removed event raise ES008. Recorded in es.data_audit.",
    access = "owner",
    span = "event_store.truncate_stream",
    span_args = "aggregate_id = stream_id, before_version = before_version",
    span_fields = r#"db.system = "postgresql", db.operation = "DELETE", event_sourcing.operation = "truncate""#
)]
fn truncate_stream(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use truncate_stream_args as arg;
    let stream = call.uuid(arg::stream_id)?;
    let before = call.required_i64(arg::before_version)?;
    store::lifecycle::truncate_stream(&stream, before).map(i64_datum)
}
