//! `es.append_events` (docs/reference.md §2).

use crate::pg::call::{Call, i64_datum};
use crate::store;
use event_store_core::{EventStoreError, ExpectedVersion};
use event_store_macros::sql_function;
use pgrx::pg_sys::Datum;

#[sql_function(
    sql = "es.append_events(stream_id uuid, expected_version bigint, events jsonb[], stream_type text DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Appends events atomically and returns the stream's new version. expected_version: N = the stream is at N, 0 = it does not exist, -1 = it exists, NULL = no check. Wrong version: ES001. stream_type: the type a new stream gets (else es.stream_type_rules decides from its first event); naming another type than an existing stream's: ES302. A stream of a declared aggregate type is checked event by event (its check's error refuses the append unchanged).",
    access = "owner",
    span = "event_store.append_events",
    span_args = "aggregate_id = stream_id, expected_version = expected_version, events_count = len(events)",
    span_fields = r#"db.system = "postgresql", db.operation = "INSERT", event_sourcing.operation = "append""#
)]
fn append_events(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use append_events_args as arg;
    let stream = call.uuid(arg::stream_id)?;
    let expected = ExpectedVersion::from_sql(call.i64(arg::expected_version))?;
    let events = call
        .jsonb_array(arg::events)
        .ok_or(EventStoreError::NullArgument { name: "events" })?;
    let stream_type = call.optional_text(arg::stream_type);
    if stream_type.as_deref() == Some("") {
        return Err(EventStoreError::InvalidArgument {
            name: "stream_type",
            reason: "it is empty (NULL names no type)".into(),
        });
    }
    store::append::append_events(
        call.memory(),
        &stream,
        expected,
        events,
        stream_type.as_deref(),
    )
    .map(i64_datum)
}
