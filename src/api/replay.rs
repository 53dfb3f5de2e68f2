//! `es.account_replay`: the aggregate that folds account events into the state of docs/reference.md §5, as a
//! plain aggregate (`… (data ORDER BY version)`) or as a window function (running balance), and
//! its two-argument form that starts from a snapshot's state. Its transition functions keep an
//! [`AccountState`] in the aggregate's memory context ([`crate::pg::aggregate`]); the final
//! function renders it to jsonb without changing it, which is what a window function needs.

use crate::pg::aggregate::{self, StartIn};
use crate::pg::call::Call;
use crate::store;
use crate::store::account::state_datum;
use event_store_core::EventStoreError;
use event_store_core::account::AccountState;
use event_store_macros::sql_function;
use pgrx::pg_sys::Datum;

/// The aggregate these functions are the steps of (named in the error of a direct call).
const AGGREGATE: &str = "es.account_replay";

#[sql_function(
    sql = "es.account_replay_step(internal, jsonb) RETURNS internal
LANGUAGE c IMMUTABLE PARALLEL SAFE",
    comment = "Transition function of es.account_replay(jsonb): applies one account event to the state."
)]
fn step(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use step_args as arg;
    aggregate::transition(
        call,
        AGGREGATE,
        arg::arg1,
        StartIn::Call,
        || Ok(AccountState::default()),
        |state| store::replay::step(state, call.jsonb(arg::arg2)),
    )
}

/// On the first row the state starts from the initial state (a state JSON, e.g. a snapshot's).
#[sql_function(
    sql = "es.account_replay_from_step(internal, jsonb, jsonb) RETURNS internal
LANGUAGE c IMMUTABLE PARALLEL SAFE",
    comment = "Transition function of es.account_replay(jsonb, jsonb): starts from the initial state on the first row."
)]
fn from_step(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use from_step_args as arg;
    aggregate::transition(
        call,
        AGGREGATE,
        arg::arg1,
        StartIn::Call,
        || store::replay::start_from(call.jsonb(arg::arg2)),
        |state| store::replay::step(state, call.jsonb(arg::arg3)),
    )
}

/// The state JSON (NULL for no rows). Read-only, so it can be called once per row of a window.
#[sql_function(
    sql = "es.account_replay_final(internal) RETURNS jsonb
LANGUAGE c IMMUTABLE PARALLEL SAFE",
    comment = "Final function of es.account_replay: the state JSON {holder_name, balance_cents, status, version}."
)]
fn finish(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    match aggregate::finish(call, AGGREGATE, finish_args::arg1, state_datum)? {
        Some(state) => Ok(state),
        None => Ok(call.return_null()),
    }
}
