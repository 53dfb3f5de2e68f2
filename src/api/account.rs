//! The account commands of SPEC §5, one round trip each, all inside the database
//! (`es.open_account`, `es.deposit`, `es.withdraw`, `es.freeze_account`, `es.close_account`),
//! and the account side of every write path.
//!
//! A command goes through `append_events`' own path, which takes the stream row first (so
//! concurrent commands on one account serialize and never fail with ES001 unless the caller
//! asked for an explicit version); under that lock the state is loaded from the newest usable
//! snapshot plus the tail ([`load_state`]), the seed's rules decide ([`check_command`]), the event
//! is inserted and a snapshot written when the interval is reached or crossed, in the same
//! transaction. `es.append_events` to an account stream is judged the same way, event by event
//! ([`check_batch`]). The tail is read in version order by [`visit_events`].

use super::append::{Batch, Rules, append, array_of, decode_batch};
use super::replay::{event_view, parse_state};
use super::{Call, uuid_datum};
use crate::core::account::{
    AccountEvent, AccountState, Command, Refusal, ReplayError, RuleViolation, admit, check_opening,
    check_text, decide, event_name, snapshot_due, state_json, text_key,
};
use crate::core::{EventStoreError, ExpectedVersion};
use crate::gucs::SNAPSHOT_INTERVAL;
use crate::native::{self, Outcome, StreamHead, StreamRow};
use crate::storage::{Spi, Stmt};
use pgrx::pg_sys::{self, BuiltinOid, Datum};
use std::ffi::{CString, c_char};
use uuid::Uuid;

crate::sql_function!(es_open_account, pg_finfo_es_open_account, open_account);
crate::sql_function!(es_deposit, pg_finfo_es_deposit, deposit);
crate::sql_function!(es_withdraw, pg_finfo_es_withdraw, withdraw);
crate::sql_function!(
    es_freeze_account,
    pg_finfo_es_freeze_account,
    freeze_account
);
crate::sql_function!(es_close_account, pg_finfo_es_close_account, close_account);

unsafe extern "C-unwind" {
    /// The fmgr entry of `jsonb_in`, unwrapped, for `DirectFunctionCall1Coll` (the guarded call).
    #[link_name = "jsonb_in"]
    fn jsonb_in_fmgr(fcinfo: pg_sys::FunctionCallInfo) -> Datum;
}

/// A jsonb datum (in the current memory context) of JSON text built in Rust.
pub(crate) fn jsonb_from_text(json: &str) -> Datum {
    let text = CString::new(json).unwrap_or_default();
    // SAFETY: jsonb_in reads the NUL-terminated text (kept alive across the call) and returns a
    // new jsonb in the current context; invalid JSON would be an ERROR, not undefined behavior.
    unsafe {
        pg_sys::DirectFunctionCall1Coll(
            Some(jsonb_in_fmgr),
            pg_sys::InvalidOid,
            Datum::from(text.as_ptr() as *mut c_char),
        )
    }
}

/// A jsonb datum of a JSON value built in Rust.
fn jsonb(value: &serde_json::Value) -> Datum {
    jsonb_from_text(&value.to_string())
}

fn violation(account: &Uuid, v: RuleViolation) -> EventStoreError {
    match v {
        RuleViolation::InvalidAmount { amount_cents } => EventStoreError::InvalidAmount {
            reason: format!("{amount_cents} is not a positive number of cents"),
        },
        RuleViolation::NotActive { status } => EventStoreError::AccountNotActive {
            account_id: account.to_string(),
            status: status.as_str(),
        },
        RuleViolation::InsufficientFunds {
            available,
            requested,
        } => EventStoreError::InsufficientFunds {
            account_id: account.to_string(),
            available,
            requested,
        },
        RuleViolation::BalanceOverflow {
            balance,
            amount_cents,
        } => EventStoreError::InvalidAmount {
            reason: overflow_reason(balance, amount_cents),
        },
    }
}

/// What an overflowing deposit is told.
fn overflow_reason(balance: i64, amount_cents: i64) -> String {
    format!(
        "a deposit of {amount_cents} would take the balance of {balance} cents past the largest balance ({} cents)",
        i64::MAX
    )
}

/// `es.open_account(holder text, initial_balance_cents bigint DEFAULT 0) RETURNS uuid`.
fn open_account(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let holder = call.text(0, "holder")?;
    let initial = call.required_i64(1, "initial_balance_cents")?;
    check_opening(initial).map_err(|_| EventStoreError::InvalidAmount {
        reason: format!("the initial balance {initial} is negative"),
    })?;
    let id = Uuid::now_v7();
    let event = serde_json::json!({
        "type": "Opened", "account_holder": holder, "initial_balance_cents": initial
    });
    let spi = Spi::connect();
    let batch = one_event_batch(call, &event, &id)?;
    append(&spi, &id, ExpectedVersion::NoStream, &batch, Rules::Enforce)?;
    drop(spi);
    Ok(uuid_datum(&id))
}

/// `es.deposit(account_id, amount_cents, description DEFAULT '', expected_version DEFAULT NULL)`.
fn deposit(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    money(
        call,
        |amount_cents| Command::Deposit { amount_cents },
        "Deposited",
    )
}

/// `es.withdraw(account_id, amount_cents, description DEFAULT '', expected_version DEFAULT NULL)`.
fn withdraw(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    money(
        call,
        |amount_cents| Command::Withdraw { amount_cents },
        "Withdrawn",
    )
}

fn money(
    call: &mut Call<'_>,
    command: fn(i64) -> Command,
    event_type: &str,
) -> Result<Datum, EventStoreError> {
    let account = call.uuid(0, "account_id")?;
    let amount = call.required_i64(1, "amount_cents")?;
    let description = call.text(2, "description")?;
    let expected = ExpectedVersion::from_sql(call.i64(3))?;
    let event = serde_json::json!({
        "type": event_type, "amount_cents": amount, "description": description
    });
    run(call, &account, command(amount), &event, expected)
}

/// `es.freeze_account(account_id, reason) RETURNS bigint`.
fn freeze_account(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let account = call.uuid(0, "account_id")?;
    let reason = call.text(1, "reason")?;
    let event = serde_json::json!({"type": "Frozen", "reason": reason});
    run(
        call,
        &account,
        Command::Freeze,
        &event,
        ExpectedVersion::Any,
    )
}

/// `es.close_account(account_id, reason) RETURNS bigint`.
fn close_account(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let account = call.uuid(0, "account_id")?;
    let reason = call.text(1, "reason")?;
    let event = serde_json::json!({"type": "Closed", "reason": reason});
    run(call, &account, Command::Close, &event, ExpectedVersion::Any)
}

/// A batch of one event, built in the memory context of `call` (which outlives the call).
fn one_event_batch<'fc>(
    _call: &Call<'fc>,
    event: &serde_json::Value,
    stream: &Uuid,
) -> Result<Batch<'fc>, EventStoreError> {
    let array = array_of(
        &[Some(jsonb(event))],
        BuiltinOid::JSONBOID,
        -1,
        false,
        pg_sys::TYPALIGN_INT,
    );
    // SAFETY: a jsonb[] just built in the current context, the context of the call in
    // progress, which lives at least as long as the call ('fc).
    unsafe { decode_batch(array, stream) }
}

/// Appends the command's event through the append path, which takes the stream row first (so
/// commands on one account serialize), then decides the command against the state under that
/// lock ([`check_command`]) and snapshots on the interval, all in one transaction.
fn run(
    call: &Call<'_>,
    account: &Uuid,
    command: Command,
    event: &serde_json::Value,
    expected: ExpectedVersion,
) -> Result<Datum, EventStoreError> {
    let spi = Spi::connect();
    let expected = match expected {
        // A command never creates its stream.
        ExpectedVersion::Any => ExpectedVersion::StreamExists,
        ExpectedVersion::NoStream => {
            // "The account must not exist yet" can only fail: say how.
            let rows = spi.read_latest(Stmt::StreamInfo, &[Some(uuid_datum(account))]);
            return Err(match rows.first_i64() {
                None => EventStoreError::AccountNotFound {
                    account_id: account.to_string(),
                },
                Some(actual) => ExpectedVersion::NoStream.conflict(account, actual),
            });
        }
        other => other,
    };
    let batch = one_event_batch(call, event, account)?;
    let new_version = append(&spi, account, expected, &batch, Rules::Command(command))?;
    drop(spi);
    Ok(Datum::from(new_version))
}

/// A command's decision, made by the append path while it takes the stream row: the seed's
/// rules against the state the command follows, then the state after the command's event.
pub(crate) fn check_command(
    start: (AccountState, String),
    account: &Uuid,
    command: Command,
) -> Result<(AccountState, String), EventStoreError> {
    let (mut state, holder) = start;
    decide(&state, command).map_err(|v| violation(account, v))?;
    let applied = match command {
        Command::Deposit { amount_cents } => AccountEvent::Deposited { amount_cents },
        Command::Withdraw { amount_cents } => AccountEvent::Withdrawn { amount_cents },
        Command::Freeze => AccountEvent::Frozen,
        Command::Close => AccountEvent::Closed,
    };
    state.apply(&applied).map_err(unreplayable)?;
    Ok((state, holder))
}

/// The state an append to an account stream follows: the one stored in the stream row when it
/// is the state at the row's version (always, unless someone edited the row), else the newest
/// usable snapshot plus the tail.
pub(crate) fn state_at_head(
    spi: &Spi,
    account: &Uuid,
    head: &StreamHead<'_>,
) -> Result<(AccountState, String), EventStoreError> {
    if head.old_version == 0 {
        return Ok((AccountState::default(), String::new()));
    }
    if let Some(state) = head.state()
        && let Ok((state, holder)) = parse_state(state)
        && state.version == head.old_version
    {
        return Ok((state, holder.to_owned()));
    }
    load_state(spi, account, head.old_version, true)
}

fn unreplayable(e: ReplayError) -> EventStoreError {
    EventStoreError::UnreplayableEvent {
        event_type: e.event_type,
        reason: e.reason,
    }
}

/// The account's state at `version`: the newest usable snapshot at or below it, plus the tail
/// (the seed drops the snapshot's state; this keeps it). A snapshot that is not a valid account
/// state for its version is not usable and is skipped. `latest`: read the latest commits (a
/// command holding the stream row) rather than the statement's snapshot (a query). Traced as
/// `account.replay`, the parent of the snapshot lookup and the tail's load.
#[tracing::instrument(
    name = "account.replay",
    skip_all,
    fields(aggregate_id = %account, version, event_sourcing.operation = "replay"),
    err
)]
pub(crate) fn load_state(
    spi: &Spi,
    account: &Uuid,
    version: i64,
    latest: bool,
) -> Result<(AccountState, String), EventStoreError> {
    let sid = Some(uuid_datum(account));
    let mut state = AccountState::default();
    let mut holder = String::new();
    let args = [sid, Some(Datum::from(version))];
    let snap = if latest {
        spi.read_latest(Stmt::LoadSnapshot, &args)
    } else {
        spi.read(Stmt::LoadSnapshot, &args)
    };
    // SAFETY: column 2 of LoadSnapshot is `state jsonb`.
    let snapshot_state = (!snap.is_empty())
        .then(|| unsafe { snap.jsonb(0, 2) })
        .flatten();
    if let (Some(at), Some(json)) = (snap.first_i64(), snapshot_state)
        && let Ok((s, h)) = parse_state(json)
        && s.version == at
    {
        state = s;
        holder = h.to_owned();
    }
    let from = state.version;
    visit_events(spi, account, from, version, latest, &mut |row| {
        let event = event_view(row.data()).decode().map_err(unreplayable)?;
        state.apply(&event).map_err(unreplayable)?;
        if let AccountEvent::Opened { account_holder, .. } = event {
            holder = account_holder.to_owned();
        }
        Ok(())
    })?;
    Ok((state, holder))
}

/// Rows per page when the stream is read through SPI (bounds the memory of a long replay).
const PAGE: i64 = 10_000;

/// Visits the events of `stream` with `from < version <= to` in order: natively when it can
/// ([`native::scan_stream`]), else through SPI a page at a time; traced as
/// `event_store.load_events` with the number of events visited.
#[tracing::instrument(
    name = "event_store.load_events",
    skip_all,
    fields(
        aggregate_id = %stream,
        from_version = from,
        events_count = tracing::field::Empty,
        db.system = "postgresql",
        db.operation = "SELECT",
        event_sourcing.operation = "replay"
    ),
    err
)]
pub(crate) fn visit_events(
    spi: &Spi,
    stream: &Uuid,
    from: i64,
    to: i64,
    latest: bool,
    visit: &mut dyn FnMut(&StreamRow<'_>) -> Result<(), EventStoreError>,
) -> Result<(), EventStoreError> {
    let mut count = 0i64;
    let result = visit_events_untraced(spi, stream, from, to, latest, &mut |row| {
        count += 1;
        visit(row)
    });
    tracing::Span::current().record("events_count", count);
    result
}

fn visit_events_untraced(
    spi: &Spi,
    stream: &Uuid,
    from: i64,
    to: i64,
    latest: bool,
    visit: &mut dyn FnMut(&StreamRow<'_>) -> Result<(), EventStoreError>,
) -> Result<(), EventStoreError> {
    if to <= from {
        return Ok(());
    }
    if let Outcome::Done(result) = native::scan_stream(stream, from, to, latest, visit) {
        return result;
    }
    let mut after = from;
    while after < to {
        let args = [
            Some(uuid_datum(stream)),
            Some(Datum::from(after)),
            Some(Datum::from(PAGE.min(to - after))),
        ];
        let rows = if latest {
            spi.read_latest(Stmt::LoadEvents, &args)
        } else {
            spi.read(Stmt::LoadEvents, &args)
        };
        if rows.is_empty() {
            break;
        }
        for r in 0..rows.len() {
            let version = rows.i64(r, 3).unwrap_or(0);
            let (Some(event_type), Some(data), Some(occurred_at), Some(recorded_at)) = (
                rows.datum(r, 5),
                rows.datum(r, 7),
                rows.datum(r, 9),
                rows.datum(r, 10),
            ) else {
                continue;
            };
            // SAFETY: LoadEvents is `SELECT * FROM es.events`: columns 5, 7, 9, 10 are
            // event_type text, data jsonb, occurred_at and recorded_at timestamptz, valid
            // while `rows` is (until the page is freed below).
            let row = unsafe {
                StreamRow::from_columns(version, event_type, data, occurred_at, recorded_at)
            };
            after = version;
            visit(&row)?;
        }
        rows.free();
    }
    Ok(())
}

/// The append path's account check (`es.append_events` to an account stream): from the state
/// the batch follows, every element decoded (ES003 naming its position and type), its free
/// text present, admitted by the rules (ES101–ES103) and applied. Returns the state after the
/// batch, for the automatic snapshot.
pub(crate) fn check_batch(
    start: (AccountState, String),
    stream: &Uuid,
    batch: &Batch,
) -> Result<(AccountState, String), EventStoreError> {
    let (mut state, mut holder) = start;
    for (i, element) in batch.elements.iter().enumerate() {
        let malformed = |e: ReplayError| EventStoreError::InvalidAccountEvent {
            index: i + 1,
            event_type: e.event_type,
            reason: e.reason,
        };
        let event = event_view(*element).decode().map_err(malformed)?;
        let name = event_name(&event);
        if let Some(key) = text_key(name) {
            let key_name = key.to_str().unwrap_or_default();
            check_text(name, key_name, element.get(key)).map_err(malformed)?;
        }
        admit(&state, &event).map_err(|refusal| match refusal {
            Refusal::Malformed(e) => malformed(e),
            Refusal::Rule(RuleViolation::InvalidAmount { amount_cents }) => {
                let what = if name == "Opened" {
                    format!("the initial balance {amount_cents} is negative")
                } else {
                    format!("{amount_cents} is not a positive number of cents")
                };
                EventStoreError::InvalidAmount {
                    reason: format!("{name} at position {} of the batch: {what}", i + 1),
                }
            }
            Refusal::Rule(RuleViolation::BalanceOverflow {
                balance,
                amount_cents,
            }) => EventStoreError::InvalidAmount {
                reason: format!(
                    "{name} at position {} of the batch: {}",
                    i + 1,
                    overflow_reason(balance, amount_cents)
                ),
            },
            Refusal::Rule(v) => violation(stream, v),
        })?;
        state.apply(&event).map_err(malformed)?;
        if let AccountEvent::Opened { account_holder, .. } = event {
            holder = account_holder.to_owned();
        }
    }
    Ok((state, holder))
}

/// Writes a snapshot of `state` at `new` when the append from `old` reached or crossed a
/// multiple of `es.snapshot_interval`.
pub(crate) fn snapshot_if_due(
    spi: &Spi,
    account: &Uuid,
    old: i64,
    new: i64,
    holder: &str,
    state: &AccountState,
) {
    let interval = i64::from(SNAPSHOT_INTERVAL.get());
    if !snapshot_due(old, new, interval) {
        return;
    }
    spi.write(
        Stmt::SaveSnapshot,
        &[
            Some(uuid_datum(account)),
            Some(Datum::from(new)),
            Some(state_datum(holder, state)),
        ],
    );
}

/// The state JSON of SPEC §5 as a jsonb datum in the current memory context.
pub(crate) fn state_datum(holder: &str, state: &AccountState) -> Datum {
    jsonb_from_text(&state_json(holder, state))
}

/// Finds an account stream without locking it: its current version and the state stored in
/// its row (when that is the state at the version), or ES002 / ES104.
pub(crate) fn account_head(
    spi: &Spi,
    account: &Uuid,
) -> Result<(i64, Option<(AccountState, String)>), EventStoreError> {
    let rows = spi.read(Stmt::StreamInfo, &[Some(uuid_datum(account))]);
    if rows.is_empty() {
        return Err(EventStoreError::AccountNotFound {
            account_id: account.to_string(),
        });
    }
    if rows.text(0, 2).as_deref() != Some(crate::core::ACCOUNT_STREAM_TYPE) {
        return Err(EventStoreError::NotAnAccount {
            stream_id: account.to_string(),
        });
    }
    let version = rows.first_i64().unwrap_or(0);
    // SAFETY: column 3 of StreamInfo is `state jsonb`.
    let state = unsafe { rows.jsonb(0, 3) }
        .and_then(|json| parse_state(json).ok())
        .filter(|(s, _)| s.version == version)
        .map(|(s, h)| (s, h.to_owned()));
    Ok((version, state))
}
