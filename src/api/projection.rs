//! Projections (docs/reference.md §10): `es.create_projection`, `es.drop_projection`,
//! `es.pause_projection`, `es.resume_projection`, `es.reset_projection`,
//! `es.wait_for_projection`; the state of the database's worker (`es.worker_status`) and the
//! trigger that asks for it when projections are restored (`es.projections_changed`). The seed's two projections and their views are in sql/flow.sql.

use crate::pg::call::{Call, Value, no_value};
use crate::store::projection;
use event_store_core::EventStoreError;
use event_store_macros::sql_function;
use pgrx::pg_sys::{Datum, Oid};

#[sql_function(
    sql = "es.create_projection(name text, handler regprocedure, event_types text[] DEFAULT NULL, batch integer DEFAULT 100)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "Registers a projection: the background worker of this database calls handler(es.events) for every event of the given types (NULL = all), in order, batch events per transaction, with the ack in the same transaction (exactly once), as the role that created it (the current user of this call), inside a security-restricted operation (as REFRESH MATERIALIZED VIEW runs a view's owner's code). A handler that raises is retried, then its event is parked (es.parked_events) while the other projections go on. SECURITY INVOKER, so the role recorded is the caller's; the store's rows are written as this function's owner. Needs shared_preload_libraries = 'event_store'.",
    access = "owner",
    span = "projection.create",
    span_args = "projection = name, batch = batch",
    span_fields = r#"db.system = "postgresql""#
)]
fn create_projection(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use create_projection_args as arg;
    let name = call.text(arg::name)?;
    let handler = Oid::from(call.required(arg::handler)?.value() as u32);
    let types = call.text_array(arg::event_types)?;
    let batch = call.required_i32(arg::batch)?;
    projection::create(
        &name,
        handler,
        types,
        call.arg(arg::event_types),
        batch,
        call.function_oid(),
    )?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.drop_projection(name text)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Drops a projection with its subscription and parked events (its read model stays). ES202 when there is none.",
    access = "owner",
    span = "projection.drop",
    span_args = "projection = name",
    span_fields = r#"db.system = "postgresql""#
)]
fn drop_projection(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    projection::drop(&call.text(drop_projection_args::name)?)?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.pause_projection(name text)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Stops feeding a projection (its checkpoint stays) until es.resume_projection.",
    access = "owner",
    span = "projection.pause",
    span_args = "projection = name",
    span_fields = r#"db.system = "postgresql""#
)]
fn pause_projection(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    projection::set_paused(&call.text(pause_projection_args::name)?, true)?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.resume_projection(name text)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Feeds a paused projection again, from its checkpoint.",
    access = "owner",
    span = "projection.resume",
    span_args = "projection = name",
    span_fields = r#"db.system = "postgresql""#
)]
fn resume_projection(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    projection::set_paused(&call.text(resume_projection_args::name)?, false)?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.reset_projection(name text)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Puts a projection's checkpoint back at its start and forgets its parked events, for a rebuild: clear its read model first unless its handler is idempotent (the seed's two are).",
    access = "owner",
    span = "projection.reset",
    span_args = "projection = name",
    span_fields = r#"db.system = "postgresql""#
)]
fn reset_projection(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    projection::reset(&call.text(reset_projection_args::name)?)?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.wait_for_projection(name text, \"position\" bigint, timeout_ms integer DEFAULT 10000)
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "Read-your-writes: returns true as soon as the projection has handled everything up to position (e.g. what es.append_events just wrote), false after timeout_ms.",
    span = "projection.wait",
    span_args = "projection = name, position = position, timeout_ms = timeout_ms",
    span_fields = r#"db.system = "postgresql""#
)]
fn wait_for_projection(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use wait_for_projection_args as arg;
    let ready = projection::wait_for(
        &call.text(arg::name)?,
        call.required_i64(arg::position)?,
        call.required_i32(arg::timeout_ms)?,
    )?;
    Ok(Datum::from(ready))
}

/// One row: state, reason, pid.
#[sql_function(
    sql = "es.worker_status(OUT state text, OUT reason text, OUT pid integer)
RETURNS SETOF record
LANGUAGE c VOLATILE PARALLEL SAFE ROWS 1",
    comment = "The state of this database's background worker, which runs its projections and, while replicas are connected, writes their watermark: running (with its pid), idle (none runs; one starts on the next request or append that needs it), waiting for a worker slot (with the reason: es.max_workers or max_worker_processes), or no worker (the library is not preloaded).",
    access = "owner, pg_monitor",
    span = "projection.worker_status",
    span_fields = r#"db.system = "postgresql""#
)]
fn worker_status(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let (state, reason, pid) = projection::worker_status();
    let mut out = call.materialize();
    out.put_values(&[
        Value::Text(state),
        reason.as_deref().map_or(Value::Null, Value::Text),
        pid.map_or(Value::Null, Value::Int4),
    ]);
    Ok(no_value())
}

#[sql_function(
    sql = "es.projections_changed()
RETURNS trigger
LANGUAGE c VOLATILE",
    comment = "Trigger of es.projection_config: when rows arrive other than through es.create_projection (pg_restore, a COPY), the database's worker is asked for when the transaction commits, so restored projections run without a server restart.",
    access = "owner"
)]
fn projections_changed(_call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    projection::changed();
    Ok(no_value())
}
