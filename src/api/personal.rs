//! Personal data (docs/lifecycle.md "Forgetting a subject"): `es.define_personal_data`, `es.forget` and
//! `es.reveal`.

use crate::pg::call::{Call, no_value};
use crate::store;
use event_store_core::EventStoreError;
use event_store_macros::sql_function;
use pgrx::pg_sys::Datum;

#[sql_function(
    sql = "es.define_personal_data(event_type text, paths text[])
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Marks the personal-data paths of an event type (dot-separated object keys, e.g. customer.email), replacing its earlier ones: from the next append on, the values there are sealed (AES-256-GCM) with the key of their subject (the metadata's data_subject, else the stream) before anything stores them. Reads reveal them to members of es_personal_data while the key exists; es.forget destroys it. An empty array unmarks the type (what was sealed stays sealed). Recorded in es.data_audit. 22023 for a path the store reads itself, an empty key, a repeated or nested path, or an account event's non-text field.",
    access = "owner",
    span = "personal_data.define",
    span_args = "event_type = event_type",
    span_fields = r#"db.system = "postgresql""#
)]
fn define_personal_data(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use define_personal_data_args as arg;
    let event_type = call.text(arg::event_type)?;
    let paths = call
        .text_array(arg::paths)?
        .ok_or(EventStoreError::NullArgument { name: "paths" })?;
    store::personal::define(&event_type, &paths)?;
    Ok(no_value())
}

// The subject is not a span field: it may itself be personal data, and spans leave the server.
#[sql_function(
    sql = "es.forget(subject text)
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Crypto-shredding: destroys the key of a data subject (a stream id as text, or the data_subject its events' metadata named), in the caller's transaction, and records the act in es.data_audit. From the commit on, every copy of the subject's sealed values (table, WAL, replicas, logical subscribers, dumps, backups) is ciphertext nobody can read: reads show null and an \"_erased\" marker, while the events' existence, type, time and other fields stay. True when a key was destroyed, false when the subject had none. A later append for the subject gets a new key.",
    access = "owner",
    span = "personal_data.forget",
    span_fields = r#"db.system = "postgresql""#
)]
fn forget(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let subject = call.text(forget_args::subject)?;
    Ok(Datum::from(store::personal::forget(&subject)?))
}

#[sql_function(
    sql = "es.reveal(value jsonb)
RETURNS jsonb
LANGUAGE c STABLE PARALLEL SAFE STRICT",
    comment = "A JSON value (a read model's column, a snapshot's state, a row read from es.events directly) with its sealed personal values revealed, for a member of es_personal_data while their key exists; else null in their place and an \"_erased\" marker listing their paths in an object. Values without sealed parts come back unchanged."
)]
fn reveal(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let value = call.required_jsonb(reveal_args::value)?;
    Ok(store::personal::reveal_datum(value))
}
