//! Time travel and audit for psql (docs/reference.md §5): `es.account_state` and `es.account_history`.

use crate::pg::call::{Call, no_value};
use crate::store;
use crate::store::account::state_jsonb;
use event_store_core::EventStoreError;
use event_store_macros::sql_function;
use pgrx::pg_sys::Datum;

#[sql_function(
    sql = "es.account_state(account_id uuid, as_of timestamptz DEFAULT NULL, at_version bigint DEFAULT NULL)
RETURNS jsonb
LANGUAGE c STABLE PARALLEL SAFE",
    comment = "The account state {holder_name, balance_cents, status, version} at at_version (default: current), or at the newest version recorded (recorded_at) at or before as_of, whichever is older; NULL when the account did not exist yet at as_of. Starts from the newest usable snapshot. ES002 / ES104 for a missing / non-account stream.",
    span = "account.state",
    span_args = "aggregate_id = account_id, at_version = at_version",
    span_fields = r#"event_sourcing.operation = "replay""#
)]
fn account_state(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use account_state_args as arg;
    let account = call.uuid(arg::account_id)?;
    let state =
        store::audit::account_state(&account, call.arg(arg::as_of), call.i64(arg::at_version))?;
    match state {
        Some(state) => Ok(store::personal::reveal_datum(state_jsonb(
            call.memory(),
            &state,
        ))),
        None => Ok(call.return_null()),
    }
}

#[sql_function(
    sql = "es.account_history(account_id uuid)
RETURNS TABLE(version bigint, event_type text, amount_cents bigint, balance_cents bigint,
              status text, description text, occurred_at timestamptz, recorded_at timestamptz)
LANGUAGE c STABLE PARALLEL SAFE ROWS 100",
    comment = "One row per event of an account, in version order: the signed amount (opening balance, +deposit, -withdrawal), the running balance and status after it, the description/reason (holder for Opened), and its timestamps.",
    span = "account.history",
    span_args = "aggregate_id = account_id",
    span_fields = r#"event_sourcing.operation = "replay""#
)]
fn account_history(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let account = call.uuid(account_history_args::account_id)?;
    let mut out = call.materialize();
    store::audit::account_history(&account, &mut out)?;
    Ok(no_value())
}
