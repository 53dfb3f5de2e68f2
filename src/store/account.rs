//! The seed's bank account inside the database (docs/reference.md §5): the account rules every write path
//! applies ([`AccountRules`], the append pipeline's [`StreamRules`] for accounts), the commands
//! (`es.open_account`, `es.deposit`, `es.withdraw`, `es.freeze_account`, `es.close_account`),
//! the account's state at a version ([`load_state`]), and `es.save_snapshot`, which for an
//! account stream saves only the account's true state ([`save_snapshot`]).
//!
//! A command goes through the append pipeline, which takes the stream row first (so concurrent
//! commands on one account serialize and never fail with ES001 unless the caller asked for an
//! explicit version); the rules then judge the state the row holds (or the newest usable
//! snapshot plus the tail), the event is inserted, and a snapshot is written when the interval is
//! reached or crossed, all in one transaction. `es.append_events` to an account stream is judged
//! the same way, event by event.

use super::account_json::AccountJson;
use super::pipeline::{self, Batch, StreamRules};
use super::snapshot;
use super::stream::visit_events;
use crate::pg::call::CallMemory;
use crate::pg::heap::{Kept, StreamHead};
use crate::pg::jsonb::Jsonb;
use crate::pg::jsonb::write::jsonb_object;
use crate::pg::settings::SNAPSHOT_INTERVAL;
use crate::pg::spi::{Connection, Reading, Stmt};
use event_store_core::account::{
    AccountState, Command, Event, Refusal, RuleViolation, admit, check_opening, check_text, decide,
    event_name, snapshot_due, text_key,
};
use event_store_core::shape::{Pairs, Scalar};
use event_store_core::{ACCOUNT_STREAM_TYPE, EventStoreError, ExpectedVersion};
use pgrx::pg_sys::BuiltinOid::UUIDOID;
use pgrx::pg_sys::Datum;
use uuid::Uuid;

/// What the account rules check on an append.
#[derive(Clone, Copy)]
enum Check<'b> {
    /// `es.append_events` (and `es.open_account`): an account stream's events are checked one by
    /// one; other streams are not judged.
    Batch(&'b Batch<'b>),
    /// A command: the stream must be an account (ES104), and the command is decided against its
    /// state with the command's own errors.
    Command(Command),
}

/// The account rules of one append: they judge the stream row the bump replaces, store the state
/// after the append with it, and write the automatic snapshot.
pub struct AccountRules<'b> {
    stream: Uuid,
    check: Check<'b>,
    /// The state after the append, once judged.
    judged: Option<AccountState>,
}

impl<'b> AccountRules<'b> {
    /// The rules of `es.append_events`: account streams are judged event by event.
    pub fn for_batch(stream: &Uuid, batch: &'b Batch<'b>) -> AccountRules<'b> {
        AccountRules {
            stream: *stream,
            check: Check::Batch(batch),
            judged: None,
        }
    }

    /// The rules of a command on an account.
    fn for_command(stream: &Uuid, command: Command) -> AccountRules<'b> {
        AccountRules {
            stream: *stream,
            check: Check::Command(command),
            judged: None,
        }
    }
}

impl StreamRules for AccountRules<'_> {
    fn check_head(
        &mut self,
        conn: &Connection,
        head: &StreamHead<'_>,
    ) -> Result<Option<Kept>, EventStoreError> {
        self.judged = None;
        if !head.account {
            return match self.check {
                Check::Batch(_) => Ok(None),
                Check::Command(_) => Err(EventStoreError::NotAnAccount {
                    stream_id: self.stream.to_string(),
                }),
            };
        }
        let start = state_at_head(conn, &self.stream, head)?;
        let state = match self.check {
            Check::Batch(batch) => check_batch(start, &self.stream, batch)?,
            Check::Command(command) => check_command(start, &self.stream, command)?,
        };
        let datum = state_datum(&state);
        self.judged = Some(state);
        Ok(Some(Kept {
            state: datum,
            revision: None,
        }))
    }

    fn appended(&mut self, conn: &Connection, old: i64, new: i64) {
        if let Some(state) = self.judged.take() {
            snapshot_if_due(conn, &self.stream, old, new, &state);
        }
    }

    fn missing(&self, stream: &Uuid) -> EventStoreError {
        match self.check {
            Check::Batch(_) => EventStoreError::StreamNotFound {
                stream_id: stream.to_string(),
            },
            Check::Command(_) => EventStoreError::AccountNotFound {
                account_id: stream.to_string(),
            },
        }
    }
}

/// `es.open_account`: a new account stream whose first event is `Opened`; its id.
pub fn open_account(
    memory: CallMemory<'_>,
    holder: &str,
    initial_balance_cents: i64,
) -> Result<Uuid, EventStoreError> {
    check_opening(initial_balance_cents).map_err(|_| EventStoreError::InvalidAmount {
        reason: format!("the initial balance {initial_balance_cents} is negative"),
    })?;
    let id = Uuid::now_v7();
    let event = vec![
        ("type", Scalar::Text("Opened".into())),
        ("account_holder", Scalar::Text(holder.into())),
        ("initial_balance_cents", Scalar::Int(initial_balance_cents)),
    ];
    let mut batch = Batch::checked_command(memory, event, &id)?;
    batch.seal_personal_data(Some(memory), &id)?;
    let conn = Connection::connect();
    pipeline::append(
        &conn,
        &id,
        ExpectedVersion::NoStream,
        &batch,
        &mut AccountRules::for_batch(&id, &batch),
        &|| Some(ACCOUNT_STREAM_TYPE.to_owned()),
    )?;
    Ok(id)
}

/// `es.deposit` / `es.withdraw`: moves money, returns the account's new version.
pub fn move_money(
    account: &Uuid,
    command: Command,
    description: &str,
    expected: ExpectedVersion,
) -> Result<i64, EventStoreError> {
    let (event_type, amount) = match command {
        Command::Deposit { amount_cents } => ("Deposited", amount_cents),
        Command::Withdraw { amount_cents } => ("Withdrawn", amount_cents),
        Command::Freeze | Command::Close => unreachable!("move_money takes money commands"),
    };
    let event = vec![
        ("type", Scalar::Text(event_type.into())),
        ("amount_cents", Scalar::Int(amount)),
        ("description", Scalar::Text(description.into())),
    ];
    execute_command(account, command, event, expected)
}

/// `es.freeze_account` / `es.close_account`: changes the account's status, returns its new
/// version.
pub fn change_status(
    account: &Uuid,
    command: Command,
    reason: &str,
) -> Result<i64, EventStoreError> {
    let event_type = match command {
        Command::Freeze => "Frozen",
        Command::Close => "Closed",
        Command::Deposit { .. } | Command::Withdraw { .. } => {
            unreachable!("change_status takes status commands")
        }
    };
    let event = vec![
        ("type", Scalar::Text(event_type.into())),
        ("reason", Scalar::Text(reason.into())),
    ];
    execute_command(account, command, event, ExpectedVersion::Any)
}

/// Appends a command's event through the pipeline with the command's rules.
fn execute_command(
    account: &Uuid,
    command: Command,
    event: Pairs,
    expected: ExpectedVersion,
) -> Result<i64, EventStoreError> {
    // Connected when a statement first runs: a command on an account whose state the stream
    // row keeps runs none.
    let conn = Connection::lazy();
    let expected = match expected {
        // A command never creates its stream.
        ExpectedVersion::Any => ExpectedVersion::StreamExists,
        ExpectedVersion::NoStream => {
            // "The account must not exist yet" can only fail: say how.
            let rows = conn.execute(&STREAM_INFO, &[Some(crate::pg::call::uuid_datum(account))]);
            return Err(match rows.first_i64() {
                None => EventStoreError::AccountNotFound {
                    account_id: account.to_string(),
                },
                Some(actual) => ExpectedVersion::NoStream.conflict(account, actual),
            });
        }
        other => other,
    };
    let mut batch = Batch::command(event);
    batch.seal_personal_data(None, account)?;
    pipeline::append(
        &conn,
        account,
        expected,
        &batch,
        &mut AccountRules::for_command(account, command),
        &|| None,
    )
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
        RuleViolation::NonZeroBalance { balance } => EventStoreError::AccountNotDeletable {
            account_id: account.to_string(),
            balance,
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

/// A command's decision: the seed's rules against the state the command follows, then the state
/// after the command's event.
fn check_command(
    mut state: AccountState,
    account: &Uuid,
    command: Command,
) -> Result<AccountState, EventStoreError> {
    decide(&state, command).map_err(|v| violation(account, v))?;
    let applied = match command {
        Command::Deposit { amount_cents } => Event::Deposited { amount_cents },
        Command::Withdraw { amount_cents } => Event::Withdrawn { amount_cents },
        Command::Freeze => Event::Frozen,
        Command::Close => Event::Closed,
    };
    state.apply(&applied)?;
    Ok(state)
}

/// The append path's account check (`es.append_events` to an account stream): from the state
/// the batch follows, every element decoded (ES003 naming its position and type), its free text
/// present, admitted by the rules (ES101–ES103) and applied. Returns the state after the batch.
fn check_batch(
    mut state: AccountState,
    stream: &Uuid,
    batch: &Batch<'_>,
) -> Result<AccountState, EventStoreError> {
    for (i, element) in batch.elements.iter().enumerate() {
        let malformed =
            |e: event_store_core::account::ReplayError| EventStoreError::InvalidAccountEvent {
                index: i + 1,
                event_type: e.event_type,
                reason: e.reason,
            };
        let event = element.account_event().decode().map_err(malformed)?;
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
    }
    Ok(state)
}

/// The state an append to an account stream follows: the one stored in the stream row when it
/// is the state at the row's version (always, unless someone edited the row), else the newest
/// usable snapshot plus the tail.
fn state_at_head(
    conn: &Connection,
    account: &Uuid,
    head: &StreamHead<'_>,
) -> Result<AccountState, EventStoreError> {
    if head.old_version == 0 {
        return Ok(AccountState::default());
    }
    if let Some(json) = head.state()
        && let Ok(state) = json.account_state()
        && state.version == head.old_version
    {
        return Ok(state);
    }
    load_state(conn, account, head.old_version, Reading::Latest)
}

/// The account's state at `version`: the newest usable snapshot at or below it, plus the tail
/// (the seed drops the snapshot's state; this keeps it). A snapshot that is not a valid account
/// state for its version is not usable and is skipped. Traced as `account.replay`, the parent of
/// the snapshot lookup and the tail's load.
#[tracing::instrument(
    name = "account.replay",
    skip_all,
    fields(aggregate_id = %account, version, event_sourcing.operation = "replay"),
    err
)]
pub fn load_state(
    conn: &Connection,
    account: &Uuid,
    version: i64,
    reading: Reading,
) -> Result<AccountState, EventStoreError> {
    let snap = snapshot::newest(conn, account, Some(version), reading);
    let snapshot_state = (!snap.is_empty()).then(|| snap.jsonb(0, 2)).flatten();
    let mut state = match (snap.first_i64(), snapshot_state) {
        (Some(at), Some(json)) => json
            .account_state()
            .ok()
            .filter(|s| s.version == at)
            .unwrap_or_default(),
        _ => AccountState::default(),
    };
    let from = state.version;
    visit_events(conn, account, from, version, reading, &mut |row| {
        let event = row.data().account_event().decode()?;
        state.apply(&event)?;
        Ok(())
    })?;
    Ok(state)
}

/// Writes a snapshot of `state` at `new` when the append from `old` reached or crossed a
/// multiple of `es.snapshot_interval`.
fn snapshot_if_due(conn: &Connection, account: &Uuid, old: i64, new: i64, state: &AccountState) {
    let interval = i64::from(SNAPSHOT_INTERVAL.get());
    if snapshot_due(old, new, interval) {
        snapshot::save(conn, account, new, state_datum(state));
    }
}

/// The state JSON of docs/reference.md §5 as a jsonb datum in the current memory context.
pub fn state_datum(state: &AccountState) -> Datum {
    jsonb_object(&state.pairs())
}

/// [`state_datum`] as a jsonb value in the call's memory.
pub fn state_jsonb<'a>(memory: CallMemory<'a>, state: &AccountState) -> Jsonb<'a> {
    Jsonb::object(memory, &state.pairs())
}

/// Finds an account stream without locking it: its current version and the state stored in its
/// row (when that is the state at the version), or ES002 / ES104 / ES007 (deleted).
pub fn account_head(
    conn: &Connection,
    account: &Uuid,
) -> Result<(i64, Option<AccountState>), EventStoreError> {
    let rows = conn.query(&STREAM_INFO, &[Some(crate::pg::call::uuid_datum(account))]);
    if rows.is_empty() {
        return Err(EventStoreError::AccountNotFound {
            account_id: account.to_string(),
        });
    }
    if rows.text(0, 2).as_deref() != Some(ACCOUNT_STREAM_TYPE) {
        return Err(EventStoreError::NotAnAccount {
            stream_id: account.to_string(),
        });
    }
    let version = rows.first_i64().unwrap_or(0);
    // A deleted account reads as gone, with its own error (ES007).
    super::life::of(conn, account, Reading::Statement).check_live(account)?;
    let state = rows
        .jsonb(0, 3)
        .and_then(|json| json.account_state().ok())
        .filter(|s| s.version == version);
    Ok((version, state))
}

/// `es.save_snapshot`: a state at `1 ≤ version ≤ current` (ES005 otherwise); for an account
/// stream, only the account's true state at that version.
pub fn save_snapshot(stream: &Uuid, version: i64, state: Jsonb<'_>) -> Result<(), EventStoreError> {
    let conn = Connection::connect();
    let rows = conn.execute(&STREAM_INFO, &[Some(crate::pg::call::uuid_datum(stream))]);
    let current = rows.first_i64().unwrap_or(0);
    if version < 1 || version > current {
        return Err(EventStoreError::InvalidSnapshot {
            stream_id: stream.to_string(),
            version,
            current,
        });
    }
    // Commands and time travel start from an account's snapshots: only its true state may be
    // saved. (Other streams' states mean nothing to the store and are saved as given.)
    if rows.text(0, 2).as_deref() == Some(ACCOUNT_STREAM_TYPE) {
        let truth = load_state(&conn, stream, version, Reading::Latest)?;
        let given = state.account_state();
        if given.as_ref() != Ok(&truth) {
            // A client saves the state it read, where a sealed holder was revealed (or erased,
            // for a caller without the right): the truth is saved instead, sealed as the store
            // keeps it, so a snapshot never holds the cleartext.
            if given.is_ok_and(|g| revealed_equals(&truth, &g)) {
                snapshot::save(&conn, stream, version, state_datum(&truth));
                return Ok(());
            }
            return Err(EventStoreError::SnapshotMismatch {
                stream_id: stream.to_string(),
                version,
                expected: truth.to_json(),
            });
        }
    }
    snapshot::save(&conn, stream, version, state.datum());
    Ok(())
}

/// Whether `given` is `truth` as a read shows it: its sealed holder revealed, or erased (null,
/// or the empty string the typed client makes of it).
fn revealed_equals(truth: &AccountState, given: &AccountState) -> bool {
    if !event_store_core::personal::is_token(&truth.holder_name) {
        return false;
    }
    let holder = super::personal::Revealer::load()
        .and_then(|mut r| r.text(&truth.holder_name))
        .flatten()
        .unwrap_or_default();
    given
        == &AccountState {
            holder_name: holder,
            ..truth.clone()
        }
}

/// `es.account_check(state, event)`: the account's rules as a declared type's `check` (the
/// built-in row of `es.aggregate_types`); the append path judges accounts natively, with the
/// stream's id in its messages, without calling it.
pub fn check_one(
    state: Option<Jsonb<'_>>,
    event: Option<Jsonb<'_>>,
) -> Result<(), EventStoreError> {
    let state = super::replay::start_from(state)?;
    let Some(event) = event else {
        return Err(EventStoreError::NullArgument { name: "event" });
    };
    let decoded = event.account_event().decode()?;
    admit(&state, &decoded).map_err(|refusal| match refusal {
        Refusal::Malformed(e) => e.into(),
        Refusal::Rule(v) => violation(&Uuid::nil(), v),
    })
}

/// `es.account_evolve(state, event)`: the account's fold as a declared type's `evolve`.
pub fn evolve_one(
    state: Option<Jsonb<'_>>,
    event: Option<Jsonb<'_>>,
) -> Result<AccountState, EventStoreError> {
    let mut state = super::replay::start_from(state)?;
    super::replay::step(&mut state, event)?;
    Ok(state)
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// A stream's version, type and state, without locking it.
pub static STREAM_INFO: Stmt = Stmt::new(
    "StreamInfo",
    c"SELECT version, stream_type, state FROM es.streams WHERE stream_id = $1",
    &[UUIDOID],
);
