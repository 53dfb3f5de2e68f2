//! `es.account_replay`: the aggregate that folds account events into the state of docs/reference.md §5, as a
//! plain aggregate (`… (data ORDER BY version)`) or as a window function (running balance), and
//! its two-argument form that starts from a snapshot's state. Its transition functions keep an
//! [`AccountState`] in the aggregate's memory context ([`crate::pg::aggregate`]); the final
//! function renders it to jsonb without changing it, which is what a window function needs.

use crate::pg::aggregate;
use crate::pg::call::{Call, Param};
use crate::store;
use crate::store::account::state_datum;
use event_store_core::EventStoreError;
use event_store_core::account::AccountState;
use event_store_macros::sql_function;
use pgrx::pg_sys::{self, Datum};

/// The aggregate's context, or the error for a direct call of a transition function.
fn aggregate_context(call: &Call<'_>) -> Result<pg_sys::MemoryContext, EventStoreError> {
    call.aggregate_context_of("es.account_replay")
}

/// The state the executor passes back as the `internal` argument (`None` on the first row).
///
/// # Safety
/// `state` must be the `internal` argument of these functions, as the aggregate's declaration
/// guarantees: its transition functions take and return it.
unsafe fn state_arg<'s>(call: &Call<'_>, state: Param) -> Option<&'s mut AccountState> {
    // SAFETY: the caller's contract: an `AccountState` made by `aggregate::alloc` in the
    // aggregate's context, which lives as long as the group.
    unsafe { aggregate::internal_arg(call, state) }
}

/// A new state in the aggregate's context (dropped with it), as the `internal` result.
fn new_state(context: pg_sys::MemoryContext, state: AccountState) -> *mut AccountState {
    // SAFETY: `context` is the aggregate's (AggCheckCallContext); the executor keeps the
    // pointer only while the context lives.
    unsafe { aggregate::alloc(context, state) }
}

#[sql_function(
    sql = "es.account_replay_step(internal, jsonb) RETURNS internal
LANGUAGE c IMMUTABLE PARALLEL SAFE",
    comment = "Transition function of es.account_replay(jsonb): applies one account event to the state."
)]
fn step(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use step_args as arg;
    let context = aggregate_context(call)?;
    // SAFETY: the declaration passes this function's state as its first argument.
    let previous = unsafe { state_arg(call, arg::arg1) };
    let state = match previous {
        Some(state) => state as *mut AccountState,
        None => new_state(context, AccountState::default()),
    };
    // SAFETY: `state` is a live state in the aggregate's context, used by this call only.
    store::replay::step(unsafe { &mut *state }, call.jsonb(arg::arg2))?;
    Ok(Datum::from(state))
}

/// On the first row the state starts from the initial state (a state JSON, e.g. a snapshot's).
#[sql_function(
    sql = "es.account_replay_from_step(internal, jsonb, jsonb) RETURNS internal
LANGUAGE c IMMUTABLE PARALLEL SAFE",
    comment = "Transition function of es.account_replay(jsonb, jsonb): starts from the initial state on the first row."
)]
fn from_step(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use from_step_args as arg;
    let context = aggregate_context(call)?;
    // SAFETY: as in `step`: the declaration passes the state as the first argument.
    let previous = unsafe { state_arg(call, arg::arg1) };
    let state = match previous {
        Some(state) => state as *mut AccountState,
        None => new_state(context, store::replay::start_from(call.jsonb(arg::arg2))?),
    };
    // SAFETY: as in `step`: a live state in the aggregate's context, used by this call only.
    store::replay::step(unsafe { &mut *state }, call.jsonb(arg::arg3))?;
    Ok(Datum::from(state))
}

/// The state JSON (NULL for no rows). Read-only, so it can be called once per row of a window.
#[sql_function(
    sql = "es.account_replay_final(internal) RETURNS jsonb
LANGUAGE c IMMUTABLE PARALLEL SAFE",
    comment = "Final function of es.account_replay: the state JSON {holder_name, balance_cents, status, version}."
)]
fn finish(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    aggregate_context(call)?;
    // SAFETY: the aggregate passes its transition state (or NULL before the first row) as
    // the final function's only argument.
    let state = unsafe { state_arg(call, finish_args::arg1) };
    match state {
        Some(state) => Ok(state_datum(state)),
        None => Ok(call.return_null()),
    }
}
