//! Aggregates for any domain (docs/accounts-and-aggregates.md "Aggregates for any domain"): `es.define_aggregate`,
//! `es.alter_aggregate`, `es.drop_aggregate`, `es.define_upcaster`, `es.drop_upcaster`,
//! `es.state`, `es.history`, the steps of the `es.replay` aggregate (declared in
//! sql/flow.sql), one batch of `es.rebuild_states` and the registry tables' trigger.

use crate::pg::aggregate::{self, StartIn};
use crate::pg::call::{Call, Param, no_value};
use crate::store;
use crate::store::account::{state_datum, state_jsonb};
use crate::store::aggregate::{Definition, Replay, State};
use event_store_core::EventStoreError;
use event_store_macros::sql_function;
use pgrx::pg_sys::{Datum, Oid};

/// The aggregate `es.replay`'s steps are of (named in the error of a direct call).
const REPLAY: &str = "es.replay";

/// A required `regprocedure` argument.
fn function_arg(call: &Call<'_>, p: Param) -> Result<Oid, EventStoreError> {
    Ok(Oid::from(call.required(p)?.value() as u32))
}

/// The arguments shared by `es.define_aggregate` and `es.alter_aggregate` (the same five in
/// the same order).
fn definition<'fc>(
    call: &Call<'fc>,
    [stream_type, evolve, initial_state, check, snapshot_every]: [Param; 5],
) -> Result<Definition<'fc>, EventStoreError> {
    Ok(Definition {
        stream_type: call.text(stream_type)?,
        evolve: function_arg(call, evolve)?,
        initial_state: call.required_jsonb(initial_state)?,
        check: call.arg(check).map(|d| Oid::from(d.value() as u32)),
        snapshot_every: call.required_i32(snapshot_every)?,
    })
}

#[sql_function(
    sql = "es.define_aggregate(stream_type text, evolve regprocedure, initial_state jsonb DEFAULT '{}', \"check\" regprocedure DEFAULT NULL, snapshot_every integer DEFAULT 100)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "Declares an aggregate type: every append to a stream of this type checks each event with check(state jsonb, event jsonb) RETURNS void (its error refuses the append unchanged) and folds it with evolve(state jsonb, event jsonb) RETURNS jsonb from initial_state; the state after the append is kept in es.streams.state, a snapshot taken every snapshot_every versions (0: none). Both functions run as the current user (recorded as the type's definer) inside a security-restricted operation. SECURITY INVOKER, so the definer recorded is the caller; the store's rows are written as this function's owner. Existing type: 42710; a function of the wrong signature: ES301.",
    access = "owner",
    span = "aggregate.define",
    span_args = "stream_type = stream_type",
    span_fields = r#"db.system = "postgresql""#
)]
fn define_aggregate(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use define_aggregate_args as arg;
    let d = definition(
        call,
        [
            arg::stream_type,
            arg::evolve,
            arg::initial_state,
            arg::check,
            arg::snapshot_every,
        ],
    )?;
    store::aggregate::define(&d, call.function_oid())?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.alter_aggregate(stream_type text, evolve regprocedure, initial_state jsonb DEFAULT '{}', \"check\" regprocedure DEFAULT NULL, snapshot_every integer DEFAULT 100)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "Replaces an aggregate type's definition with a new revision: kept states and snapshots of the old one are no longer used (reads and appends replay from the log) until CALL es.rebuild_states(stream_type) recomputes them. The built-in account cannot be altered (42501); an unknown type: ES303.",
    access = "owner",
    span = "aggregate.alter",
    span_args = "stream_type = stream_type",
    span_fields = r#"db.system = "postgresql""#
)]
fn alter_aggregate(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use alter_aggregate_args as arg;
    let d = definition(
        call,
        [
            arg::stream_type,
            arg::evolve,
            arg::initial_state,
            arg::check,
            arg::snapshot_every,
        ],
    )?;
    store::aggregate::alter(&d, call.function_oid())?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.drop_aggregate(stream_type text, detach boolean DEFAULT false)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "Removes an aggregate type. Refused (2BP01) while streams of the type exist, unless detach: then they keep their type name and events but lose their kept state and rules (generic streams until the type is declared again). The built-in account cannot be dropped (42501); an unknown type: ES303.",
    access = "owner",
    span = "aggregate.drop",
    span_args = "stream_type = stream_type",
    span_fields = r#"db.system = "postgresql""#
)]
fn drop_aggregate(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use drop_aggregate_args as arg;
    let stream_type = call.text(arg::stream_type)?;
    let detach = call
        .arg(arg::detach)
        .ok_or(EventStoreError::NullArgument { name: "detach" })?
        .value()
        & 0xff
        != 0;
    store::aggregate::drop(&stream_type, detach, call.function_oid())?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.define_upcaster(event_type text, from_version integer, upcast regprocedure)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "Declares an upcaster: an event of event_type stored with event_version = from_version is handed out and folded as upcast(event jsonb) RETURNS jsonb returns it, at from_version + 1; chains compose; applied by es.load_events, es.read_all, es.poll, projections, es.state, es.history and es.replay. Stored rows never change. Runs as the current user (recorded) inside a security-restricted operation. Every declared type's kept states become stale (as after es.alter_aggregate) until CALL es.rebuild_states. Existing: 42710; wrong signature: ES301.",
    access = "owner",
    span = "upcaster.define",
    span_args = "event_type = event_type, from_version = from_version",
    span_fields = r#"db.system = "postgresql""#
)]
fn define_upcaster(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use define_upcaster_args as arg;
    let event_type = call.text(arg::event_type)?;
    let from = call.required_i32(arg::from_version)?;
    let upcast = function_arg(call, arg::upcast)?;
    store::aggregate::define_upcaster(&event_type, from, upcast, call.function_oid())?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.drop_upcaster(event_type text, from_version integer)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Removes an upcaster (ES202 when there is none); every declared type's kept states become stale, as after es.alter_aggregate.",
    access = "owner",
    span = "upcaster.drop",
    span_args = "event_type = event_type, from_version = from_version",
    span_fields = r#"db.system = "postgresql""#
)]
fn drop_upcaster(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use drop_upcaster_args as arg;
    let event_type = call.text(arg::event_type)?;
    let from = call.required_i32(arg::from_version)?;
    store::aggregate::drop_upcaster(&event_type, from, call.function_oid())?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.state(stream_id uuid, at_version bigint DEFAULT NULL, as_of timestamptz DEFAULT NULL)
RETURNS jsonb
LANGUAGE c STABLE PARALLEL RESTRICTED",
    comment = "The state of a stream of a declared aggregate type (the account included) at at_version (default: current), or at the newest version recorded at or before as_of, whichever is older; NULL when the stream did not exist yet at as_of. The current state is the one kept in the stream row; an older one starts from the newest usable snapshot. ES002 no such stream; ES303 the stream has no declared type; ES301 an evolve that fails.",
    span = "aggregate.state",
    span_args = "aggregate_id = stream_id, at_version = at_version",
    span_fields = r#"event_sourcing.operation = "replay""#
)]
fn state(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use state_args as arg;
    let stream = call.uuid(arg::stream_id)?;
    let memory = call.memory();
    match store::aggregate::state(
        memory,
        &stream,
        call.i64(arg::at_version),
        call.arg(arg::as_of),
    )? {
        State::Account(s) => Ok(store::personal::reveal_datum(state_jsonb(memory, &s))),
        State::Declared(d) => Ok(store::personal::reveal_datum(d)),
        State::NotYet => Ok(call.return_null()),
    }
}

#[sql_function(
    sql = "es.history(stream_id uuid)
RETURNS TABLE(version bigint, event_type text, data jsonb, state jsonb, recorded_at timestamptz)
LANGUAGE c STABLE PARALLEL RESTRICTED ROWS 100",
    comment = "One row per event of a stream of a declared aggregate type (the account included), in version order, with the state after it. ES002 / ES303 / ES301 as es.state.",
    span = "aggregate.history",
    span_args = "aggregate_id = stream_id",
    span_fields = r#"event_sourcing.operation = "replay""#
)]
fn history(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let stream = call.uuid(history_args::stream_id)?;
    let mut out = call.materialize();
    store::aggregate::history(&stream, &mut out)?;
    Ok(no_value())
}

/// One transition: starts the group's fold on its first row (in the aggregate's context,
/// which owns it), then folds `event`.
fn replay_transition(
    call: &mut Call<'_>,
    state: Param,
    stream_type: Param,
    initial: Option<Param>,
    event: Param,
) -> Result<Datum, EventStoreError> {
    aggregate::transition(
        call,
        REPLAY,
        state,
        StartIn::Group,
        || {
            Replay::start(
                &call.text(stream_type)?,
                initial.and_then(|p| call.jsonb(p)),
            )
        },
        |replay: &mut Replay| replay.step(call.jsonb(event)),
    )
}

#[sql_function(
    sql = "es.replay_step(internal, stream_type text, event jsonb) RETURNS internal
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "Transition function of es.replay(text, jsonb): folds one event with the type's evolve."
)]
fn replay_step(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use replay_step_args as arg;
    replay_transition(call, arg::arg1, arg::stream_type, None, arg::event)
}

#[sql_function(
    sql = "es.replay_from_step(internal, stream_type text, initial_state jsonb, event jsonb) RETURNS internal
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "Transition function of es.replay(text, jsonb, jsonb): starts from initial_state on a group's first row."
)]
fn replay_from_step(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use replay_from_step_args as arg;
    replay_transition(
        call,
        arg::arg1,
        arg::stream_type,
        Some(arg::initial_state),
        arg::event,
    )
}

#[sql_function(
    sql = "es.replay_final(internal) RETURNS jsonb
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "Final function of es.replay: the state so far (read-only, so it serves a window function row by row)."
)]
fn replay_final(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    match aggregate::finish(call, REPLAY, replay_final_args::arg1, Replay::state)? {
        Some(state) => Ok(state),
        None => Ok(call.return_null()),
    }
}

#[sql_function(
    sql = "es.rebuild_batch(stream_type text, batch_size integer DEFAULT 1000)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "One batch of es.rebuild_states: recomputes the kept state and snapshots of up to batch_size streams of the type whose state is not of its current revision; returns how many (0: none left). Streams an append holds are skipped (that append keeps a current state itself).",
    access = "owner",
    span = "aggregate.rebuild_batch",
    span_args = "stream_type = stream_type, batch_size = batch_size",
    span_fields = r#"db.system = "postgresql""#
)]
fn rebuild_batch(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use rebuild_batch_args as arg;
    let stream_type = call.text(arg::stream_type)?;
    let batch = call.required_i32(arg::batch_size)?;
    store::aggregate::rebuild_batch(&stream_type, i64::from(batch)).map(crate::pg::call::i64_datum)
}

#[sql_function(
    sql = "es.registry_changed() RETURNS trigger
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "Trigger of es.aggregate_types, es.stream_type_rules and es.upcasters: every backend of the database reads them again after the change commits.",
    access = "owner"
)]
fn registry_changed(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    if !crate::pg::registry::changed(call) {
        return Err(EventStoreError::InvalidArgument {
            name: "call",
            reason: "es.registry_changed can only be called as a trigger".into(),
        });
    }
    Ok(no_value())
}

#[sql_function(
    sql = "es.account_evolve(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE c IMMUTABLE PARALLEL SAFE",
    comment = "The account's fold as a declared type's evolve (the built-in row of es.aggregate_types): the state after the event. The append path and es.state fold accounts natively without calling it."
)]
fn account_evolve(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use account_evolve_args as arg;
    let state = store::account::evolve_one(call.jsonb(arg::state), call.jsonb(arg::event))?;
    Ok(state_datum(&state))
}

#[sql_function(
    sql = "es.account_check(state jsonb, event jsonb) RETURNS void
LANGUAGE c IMMUTABLE PARALLEL SAFE",
    comment = "The account's rules as a declared type's check (the built-in row of es.aggregate_types): raises ES101-ES103 or ES003 for an event the state does not admit."
)]
fn account_check(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use account_check_args as arg;
    store::account::check_one(call.jsonb(arg::state), call.jsonb(arg::event))?;
    Ok(no_value())
}
