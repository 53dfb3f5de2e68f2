//! The account commands of docs/reference.md §5: `es.open_account`, `es.deposit`, `es.withdraw`,
//! `es.freeze_account`, `es.close_account`.

use crate::pg::call::{Call, Param, i64_datum, uuid_datum};
use crate::store;
use event_store_core::account::Command;
use event_store_core::{EventStoreError, ExpectedVersion};
use event_store_macros::sql_function;
use pgrx::pg_sys::Datum;

#[sql_function(
    sql = "es.open_account(holder text, initial_balance_cents bigint DEFAULT 0)
RETURNS uuid
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Opens an account: a new account stream whose first event is Opened. Negative initial balance: ES103. Returns the account id.",
    access = "owner",
    span = "command.open_account",
    span_args = "initial_balance_cents = initial_balance_cents",
    span_result = "account_id, aggregate_id",
    span_fields = r#"event_sourcing.operation = "command""#
)]
fn open_account(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use open_account_args as arg;
    let holder = call.text(arg::holder)?;
    let initial = call.required_i64(arg::initial_balance_cents)?;
    let id = store::account::open_account(call.memory(), &holder, initial)?;
    Ok(uuid_datum(&id))
}

#[sql_function(
    sql = "es.deposit(account_id uuid, amount_cents bigint, description text DEFAULT '', expected_version bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Appends Deposited after checking the rules (amount > 0: ES103; Active: ES102). Returns the new version.",
    access = "owner",
    span = "command.deposit",
    span_args = "account_id = account_id, aggregate_id = account_id, amount_cents = amount_cents, expected_version = expected_version",
    span_fields = r#"event_sourcing.operation = "command""#
)]
fn deposit(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use deposit_args as arg;
    move_money(
        call,
        [
            arg::account_id,
            arg::amount_cents,
            arg::description,
            arg::expected_version,
        ],
        |amount_cents| Command::Deposit { amount_cents },
    )
}

#[sql_function(
    sql = "es.withdraw(account_id uuid, amount_cents bigint, description text DEFAULT '', expected_version bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Appends Withdrawn after checking the rules (amount > 0: ES103; Active: ES102; never more than the balance: ES101). Concurrent withdrawals serialize on the account. Returns the new version.",
    access = "owner",
    span = "command.withdraw",
    span_args = "account_id = account_id, aggregate_id = account_id, amount_cents = amount_cents, expected_version = expected_version",
    span_fields = r#"event_sourcing.operation = "command""#
)]
fn withdraw(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use withdraw_args as arg;
    move_money(
        call,
        [
            arg::account_id,
            arg::amount_cents,
            arg::description,
            arg::expected_version,
        ],
        |amount_cents| Command::Withdraw { amount_cents },
    )
}

/// The body of `es.deposit` and `es.withdraw`: account, amount, description, expected version.
fn move_money(
    call: &mut Call<'_>,
    [account, amount, description, expected]: [Param; 4],
    command: fn(i64) -> Command,
) -> Result<Datum, EventStoreError> {
    let account = call.uuid(account)?;
    let amount = call.required_i64(amount)?;
    let description = call.text(description)?;
    let expected = ExpectedVersion::from_sql(call.i64(expected))?;
    store::account::move_money(&account, command(amount), &description, expected).map(i64_datum)
}

#[sql_function(
    sql = "es.freeze_account(account_id uuid, reason text)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Appends Frozen to an Active account (else ES102). Returns the new version.",
    access = "owner",
    span = "command.freeze_account",
    span_args = "account_id = account_id, aggregate_id = account_id",
    span_fields = r#"event_sourcing.operation = "command""#
)]
fn freeze_account(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use freeze_account_args as arg;
    change_status(call, [arg::account_id, arg::reason], Command::Freeze)
}

#[sql_function(
    sql = "es.close_account(account_id uuid, reason text)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Appends Closed to an account that is not closed yet (else ES102). Returns the new version.",
    access = "owner",
    span = "command.close_account",
    span_args = "account_id = account_id, aggregate_id = account_id",
    span_fields = r#"event_sourcing.operation = "command""#
)]
fn close_account(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use close_account_args as arg;
    change_status(call, [arg::account_id, arg::reason], Command::Close)
}

/// The body of `es.freeze_account` and `es.close_account`: account, reason.
fn change_status(
    call: &mut Call<'_>,
    [account, reason]: [Param; 2],
    command: Command,
) -> Result<Datum, EventStoreError> {
    let account = call.uuid(account)?;
    let reason = call.text(reason)?;
    store::account::change_status(&account, command, &reason).map(i64_datum)
}
