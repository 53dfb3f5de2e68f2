//! Time travel and audit (docs/reference.md §5): the state of an account at a version or a moment
//! (`es.account_state`) and its history with running balances (`es.account_history`).
//!
//! Both read in the statement's snapshot, like any query, and fold with the same core
//! transition as replay and the commands. The current state comes from the stream row; an older
//! one from the newest usable snapshot at or below the version asked for plus the tail; the
//! history walks every event once and streams its rows into the result, so a long history costs
//! constant backend memory.

use super::account::{account_head, load_state};
use super::account_json::AccountJson;
use super::sql::{VERSION_AS_OF, VERSION_AS_OF_ARCHIVED};
use super::stream::visit_events;
use crate::pg::call::{ResultSet, Value, i64_datum, uuid_datum};
use crate::pg::spi::{Connection, Reading};
use event_store_core::account::{AccountState, Event, event_name, text_key};
use event_store_core::{EventStoreError, JsonField};
use pgrx::pg_sys::Datum;
use uuid::Uuid;

/// `es.account_state`: the state at `at_version` (default: the current version), or at the
/// newest version recorded at or before `as_of` (a timestamptz datum), whichever is older;
/// `None` when the account did not exist yet at `as_of`.
pub fn account_state(
    account: &Uuid,
    as_of: Option<Datum>,
    at_version: Option<i64>,
) -> Result<Option<AccountState>, EventStoreError> {
    if let Some(v) = at_version
        && v < 1
    {
        return Err(EventStoreError::InvalidArgument {
            name: "at_version",
            reason: format!("{v} is below 1 (versions start at 1; NULL means the current one)"),
        });
    }
    let conn = Connection::connect();
    let (current, head_state) = account_head(&conn, account)?;
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
        let rows = conn.query(
            if super::read::through_archive() {
                &VERSION_AS_OF_ARCHIVED
            } else {
                &VERSION_AS_OF
            },
            &[Some(uuid_datum(account)), Some(i64_datum(target)), Some(t)],
        );
        match rows.first_i64() {
            Some(v) => target = v,
            None => {
                // before its first stored event: not opened yet, unless a truncation removed
                // the events of that time
                super::life::check_found_as_of(&conn, account, t, Reading::Statement)?;
                return Ok(None);
            }
        }
    }
    match head_state {
        // The current state is kept in the stream row: no replay at all.
        Some(at_head) if target == current => Ok(Some(at_head)),
        _ => load_state(&conn, account, target, Reading::Statement).map(Some),
    }
}

/// `es.account_history`: one row per event with the running balance and status, into `out`
/// (version, event_type, amount_cents, balance_cents, status, description, occurred_at,
/// recorded_at).
pub fn account_history(account: &Uuid, out: &mut ResultSet) -> Result<(), EventStoreError> {
    // description: the holder of Opened, or a reason or description, may be sealed
    super::personal::reveal_columns(out, &[], &[5]);
    let conn = Connection::connect();
    let (current, _) = account_head(&conn, account)?;
    // A truncated account's history starts after the snapshot the truncation kept.
    let from = super::life::of(&conn, account, Reading::Statement)
        .truncated_before
        .map_or(0, |t| t - 1);
    let mut state = if from > 0 {
        load_state(&conn, account, from, Reading::Statement)?
    } else {
        AccountState::default()
    };
    visit_events(
        &conn,
        account,
        from,
        current,
        Reading::Statement,
        &mut |row| {
            let data = row.data();
            let event = data.account_event().decode()?;
            state.apply(&event)?;
            let amount = match event {
                Event::Opened {
                    initial_balance_cents,
                    ..
                } => Some(initial_balance_cents),
                Event::Deposited { amount_cents } => Some(amount_cents),
                Event::Withdrawn { amount_cents } => Some(-amount_cents),
                Event::Frozen | Event::Closed | Event::StreamDeleted | Event::StreamUndeleted => {
                    None
                }
            };
            let text = match event {
                Event::Opened { account_holder, .. } => Some(account_holder),
                _ => match text_key(event_name(&event)).map(|k| data.get(k)) {
                    Some(JsonField::String(s)) => Some(s),
                    _ => None,
                },
            };
            // the declared columns: bigint, text, bigint, bigint, text, text, timestamptz,
            // timestamptz
            out.put_values(&[
                Value::Int8(row.version),
                Value::Column(row.event_type()),
                amount.map_or(Value::Null, Value::Int8),
                Value::Int8(state.balance_cents),
                Value::Text(state.status.as_str()),
                text.map_or(Value::Null, Value::Text),
                Value::TimestampTz(row.occurred_at()),
                Value::TimestampTz(row.recorded_at()),
            ]);
            Ok(())
        },
    )
}
