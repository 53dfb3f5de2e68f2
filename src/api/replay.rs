//! `es.account_replay`: the aggregate that folds account events into the state of SPEC §5, as a
//! plain aggregate (`… (data ORDER BY version)`) or as a window function (running balance), and
//! its two-argument form that starts from a snapshot's state.
//!
//! The state lives in the aggregate's memory context as a plain struct and is never serialized
//! between rows; the final function renders it to jsonb without changing it, which is what a
//! window function needs. The fold itself is `core::account`.

use super::Call;
use crate::core::EventStoreError;
use crate::core::account::{
    AccountEventView, AccountState, AccountStatus, ReplayError, state_json,
};
use crate::core::event::JsonField;
use crate::jsonb::Jsonb;
use pgrx::pg_sys::{self, Datum};

crate::sql_function!(
    es_account_replay_step,
    pg_finfo_es_account_replay_step,
    step
);
crate::sql_function!(
    es_account_replay_from_step,
    pg_finfo_es_account_replay_from_step,
    from_step
);
crate::sql_function!(
    es_account_replay_final,
    pg_finfo_es_account_replay_final,
    finish
);

/// The fold's state, allocated in the aggregate's memory context (which lives as long as the
/// group, and from which the executor passes the pointer back as the first argument).
#[repr(C)]
struct ReplayState {
    account: AccountState,
    /// The holder's name, in the aggregate's memory context (not NUL-terminated).
    holder: *mut u8,
    holder_len: usize,
}

impl ReplayState {
    /// A fresh state in `context`.
    fn new(context: pg_sys::MemoryContext) -> *mut ReplayState {
        // SAFETY: a zeroed allocation of the struct's size in the aggregate's context, then
        // its one non-pointer field set; a null holder is "no holder yet".
        unsafe {
            let state = pg_sys::MemoryContextAllocZero(context, std::mem::size_of::<ReplayState>())
                .cast::<ReplayState>();
            (*state).account = AccountState::default();
            state
        }
    }
}

/// The aggregate's context, or the error for a direct call of a transition function.
fn aggregate_context(call: &Call<'_>) -> Result<pg_sys::MemoryContext, EventStoreError> {
    call.aggregate_context()
        .ok_or(EventStoreError::InvalidArgument {
            name: "call",
            reason: "es.account_replay's functions can only be called by the aggregate".into(),
        })
}

/// The state passed back by the executor as argument 0 (NULL on the first row).
///
/// # Safety
/// Argument 0 must be the `internal` state this module allocated, as the aggregate's
/// declaration (sql/bootstrap.sql) guarantees: its transition functions take and return it.
unsafe fn state_arg(call: &Call<'_>) -> Option<*mut ReplayState> {
    call.arg(0).map(|d| d.cast_mut_ptr::<ReplayState>())
}

/// Stores the holder's name in the aggregate's context.
///
/// # Safety
/// `state` must be a state of this module allocated in `context`.
unsafe fn set_holder(context: pg_sys::MemoryContext, state: *mut ReplayState, name: &str) {
    // SAFETY: the caller's contract; the copy is a fresh allocation of at least `len` bytes.
    unsafe {
        let copy = pg_sys::MemoryContextAlloc(context, name.len().max(1)).cast::<u8>();
        std::ptr::copy_nonoverlapping(name.as_ptr(), copy, name.len());
        (*state).holder = copy;
        (*state).holder_len = name.len();
    }
}

/// The keys of an account event, read from its jsonb.
pub(crate) fn event_view<'a>(event: Jsonb<'a>) -> AccountEventView<'a> {
    let shape = event.shape();
    if shape != JsonField::Object {
        return AccountEventView {
            shape,
            event_type: JsonField::Absent,
            account_holder: JsonField::Absent,
            initial_balance_cents: JsonField::Absent,
            amount_cents: JsonField::Absent,
        };
    }
    // Only the keys the type needs: replay reads one amount per event, not four lookups.
    let event_type = event.get(c"type");
    let get_if = |wanted: bool, key: &std::ffi::CStr| {
        if wanted {
            event.get(key)
        } else {
            JsonField::Absent
        }
    };
    let (opened, money) = match event_type {
        JsonField::String("Opened") => (true, false),
        JsonField::String("Deposited" | "Withdrawn") => (false, true),
        _ => (false, false),
    };
    AccountEventView {
        shape,
        event_type,
        account_holder: get_if(opened, c"account_holder"),
        initial_balance_cents: get_if(opened, c"initial_balance_cents"),
        amount_cents: get_if(money, c"amount_cents"),
    }
}

/// Reads a state JSON (`{"holder_name", "balance_cents", "status", "version"}`): the state and
/// the holder's name, or what is wrong with it (a shape, or a state no account history reaches).
pub(crate) fn parse_state<'a>(state: Jsonb<'a>) -> Result<(AccountState, &'a str), &'static str> {
    if state.shape() != JsonField::Object {
        return Err("not an object");
    }
    let int = |key: &std::ffi::CStr| match state.get(key) {
        JsonField::Integer(v) => Some(v),
        _ => None,
    };
    let balance = int(c"balance_cents").ok_or("\"balance_cents\" must be an integer")?;
    let version = int(c"version").ok_or("\"version\" must be an integer")?;
    let status = match state.get(c"status") {
        JsonField::String(s) => AccountStatus::parse(s),
        _ => None,
    }
    .ok_or("\"status\" must be Active, Frozen or Closed")?;
    let holder = match state.get(c"holder_name") {
        JsonField::String(s) => s,
        _ => return Err("\"holder_name\" must be a string"),
    };
    let account = AccountState {
        balance_cents: balance,
        status,
        version,
        opened: true,
    };
    account.check()?;
    Ok((account, holder))
}

fn unreplayable(e: ReplayError) -> EventStoreError {
    EventStoreError::UnreplayableEvent {
        event_type: e.event_type,
        reason: e.reason,
    }
}

/// Applies the event argument `n` to `state`.
///
/// # Safety
/// `state` must be a state of this module allocated in `context`.
unsafe fn apply_arg(
    call: &Call<'_>,
    context: pg_sys::MemoryContext,
    state: *mut ReplayState,
    n: usize,
) -> Result<Datum, EventStoreError> {
    let Some(event) = call.jsonb(n) else {
        return Err(unreplayable(ReplayError {
            event_type: "null".into(),
            reason: "an account event cannot be NULL".into(),
        }));
    };
    let decoded = event_view(event).decode().map_err(unreplayable)?;
    // SAFETY: the caller's contract.
    unsafe {
        (*state).account.apply(&decoded).map_err(unreplayable)?;
        if let crate::core::account::AccountEvent::Opened { account_holder, .. } = decoded {
            set_holder(context, state, account_holder);
        }
    }
    Ok(Datum::from(state))
}

/// `account_replay_step(internal, event jsonb) RETURNS internal`.
fn step(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let context = aggregate_context(call)?;
    // SAFETY: the declaration passes this module's state as argument 0; a new one is made in
    // the aggregate's context on the first row.
    unsafe {
        let state = state_arg(call).unwrap_or_else(|| ReplayState::new(context));
        apply_arg(call, context, state, 1)
    }
}

/// `account_replay_from_step(internal, initial_state jsonb, event jsonb) RETURNS internal`: on
/// the first row the state starts from `initial_state` (a state JSON, e.g. a snapshot's).
fn from_step(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let context = aggregate_context(call)?;
    // SAFETY: as in `step`.
    unsafe {
        let state = match state_arg(call) {
            Some(state) => state,
            None => {
                let state = ReplayState::new(context);
                if let Some(initial) = call.jsonb(1) {
                    load_initial(context, state, initial)?;
                }
                state
            }
        };
        apply_arg(call, context, state, 2)
    }
}

/// Starts the fold from a state JSON.
///
/// # Safety
/// `state` must be a state of this module allocated in `context`.
unsafe fn load_initial(
    context: pg_sys::MemoryContext,
    state: *mut ReplayState,
    initial: Jsonb<'_>,
) -> Result<(), EventStoreError> {
    let (account, holder) = parse_state(initial).map_err(|reason| EventStoreError::InvalidArgument {
        name: "initial_state",
        reason: format!(
            "{reason} (expected {{\"holder_name\", \"balance_cents\", \"status\", \"version\"}})"
        ),
    })?;
    // SAFETY: the caller's contract.
    unsafe {
        (*state).account = account;
        set_holder(context, state, holder);
    }
    Ok(())
}

/// `account_replay_final(internal) RETURNS jsonb`: the state JSON (NULL for no rows). Read-only,
/// so it can be called once per row of a window.
fn finish(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    aggregate_context(call)?;
    // SAFETY: the aggregate passes its transition state as the final function's argument.
    let Some(state) = (unsafe { state_arg(call) }) else {
        return Ok(call.return_null());
    };
    // SAFETY: a state of this module: the holder is null or `holder_len` bytes in the
    // aggregate's context.
    let json = unsafe {
        let holder = if (*state).holder.is_null() {
            ""
        } else {
            let bytes = std::slice::from_raw_parts((*state).holder, (*state).holder_len);
            std::str::from_utf8(bytes).unwrap_or("")
        };
        state_json(holder, &(*state).account)
    };
    Ok(crate::api::account::jsonb_from_text(&json))
}
