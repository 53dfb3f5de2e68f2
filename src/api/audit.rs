//! Time travel and audit for psql (SPEC §5): `es.account_state(account_id, as_of, at_version)`
//! and `es.account_history(account_id)`.
//!
//! Both read in the statement's snapshot, like any query, and fold with the same core transition
//! as replay and the commands. `account_state` takes the current state from the stream row, and
//! an older one from the newest usable snapshot at or below the version it is asked for plus
//! the tail; `account_history` walks every event once (it shows them all) and
//! streams its rows into a tuple store, so a long history costs constant backend memory.

use super::account::{account_head, load_state, state_datum, visit_events};
use super::replay::event_view;
use super::{Call, i64_datum, no_value, text_datum, uuid_datum};
use crate::core::EventStoreError;
use crate::core::JsonField;
use crate::core::account::{AccountEvent, AccountState, ReplayError, event_name, text_key};
use crate::storage::{Spi, Stmt};
use pgrx::pg_sys::Datum;

crate::sql_function!(es_account_state, pg_finfo_es_account_state, account_state);
crate::sql_function!(
    es_account_history,
    pg_finfo_es_account_history,
    account_history
);

/// `es.account_state(account_id, as_of DEFAULT NULL, at_version DEFAULT NULL) RETURNS jsonb`:
/// the state at `at_version` (default: the current version), or at the newest version recorded
/// at or before `as_of`, whichever is older. NULL when the account did not exist yet at `as_of`.
fn account_state(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let account = call.uuid(0, "account_id")?;
    let as_of = call.arg(1);
    let at_version = call.i64(2);
    if let Some(v) = at_version
        && v < 1
    {
        return Err(EventStoreError::InvalidArgument {
            name: "at_version",
            reason: format!("{v} is below 1 (versions start at 1; NULL means the current one)"),
        });
    }
    let spi = Spi::connect();
    let (current, head_state) = account_head(&spi, &account)?;
    let mut target = current;
    if let Some(v) = at_version {
        if v > current {
            return Err(EventStoreError::InvalidArgument {
                name: "at_version",
                reason: format!("{v} is beyond the account's current version {current}"),
            });
        }
        target = v;
    }
    if let Some(t) = as_of {
        let rows = spi.read(
            Stmt::VersionAsOf,
            &[Some(uuid_datum(&account)), Some(i64_datum(target)), Some(t)],
        );
        match rows.first_i64() {
            Some(v) => target = v,
            None => {
                drop(spi);
                return Ok(call.return_null());
            }
        }
    }
    let (state, holder) = match head_state {
        // The current state is kept in the stream row: no replay at all.
        Some(at_head) if target == current => at_head,
        _ => load_state(&spi, &account, target, false)?,
    };
    // The result must outlive SPI's memory: build it in the caller's context.
    drop(spi);
    Ok(state_datum(&holder, &state))
}

/// `es.account_history(account_id)`: one row per event with the running balance and status.
fn account_history(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let account = call.uuid(0, "account_id")?;
    let mut out = call.materialize();
    let spi = Spi::connect();
    let (current, _) = account_head(&spi, &account)?;
    let mut state = AccountState::default();
    let unreplayable = |e: ReplayError| EventStoreError::UnreplayableEvent {
        event_type: e.event_type,
        reason: e.reason,
    };
    visit_events(&spi, &account, 0, current, false, &mut |row| {
        let data = row.data();
        let event = event_view(data).decode().map_err(unreplayable)?;
        state.apply(&event).map_err(unreplayable)?;
        let amount = match event {
            AccountEvent::Opened {
                initial_balance_cents,
                ..
            } => Some(initial_balance_cents),
            AccountEvent::Deposited { amount_cents } => Some(amount_cents),
            AccountEvent::Withdrawn { amount_cents } => Some(-amount_cents),
            AccountEvent::Frozen | AccountEvent::Closed => None,
        };
        let text = match event {
            AccountEvent::Opened { account_holder, .. } => Some(account_holder),
            _ => match text_key(event_name(&event)).map(|k| data.get(k)) {
                Some(JsonField::String(s)) => Some(s),
                _ => None,
            },
        };
        let values = [
            i64_datum(row.version),
            row.event_type(),
            amount.map_or(no_value(), i64_datum),
            i64_datum(state.balance_cents),
            text_datum(state.status.as_str()),
            text.map_or(no_value(), text_datum),
            row.occurred_at(),
            row.recorded_at(),
        ];
        let nulls = [
            false,
            false,
            amount.is_none(),
            false,
            false,
            text.is_none(),
            false,
            false,
        ];
        // SAFETY: the values match the declared columns (bigint, text, bigint, bigint, text,
        // text, timestamptz, timestamptz); the row's datums are valid until the visit returns.
        unsafe { out.put(&values, &nulls) };
        Ok(())
    })?;
    drop(spi);
    Ok(no_value())
}
