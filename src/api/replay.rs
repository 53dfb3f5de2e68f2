//! `es.account_replay`: the aggregate that folds account events into the state of SPEC §5, as a
//! plain aggregate (`… (data ORDER BY version)`) or as a window function (running balance), and
//! its two-argument form that starts from a snapshot's state.
//!
//! The state lives in the aggregate's memory context as a plain struct and is never serialized
//! between rows; the final function renders it to jsonb without changing it, which is what a
//! window function needs. The fold itself is `core::account`.

use super::{arg, no_value};
use crate::core::EventStoreError;
use crate::core::account::{
    AccountEventView, AccountState, AccountStatus, ReplayError, state_json,
};
use crate::core::event::JsonField;
use crate::jsonb::Jsonb;
use pgrx::pg_sys::{self, Datum};
use std::ffi::{CString, c_char};

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

/// The fold's state, allocated in the aggregate's memory context.
#[repr(C)]
struct ReplayState {
    account: AccountState,
    /// The holder's name, in the aggregate's memory context (not NUL-terminated).
    holder: *mut u8,
    holder_len: usize,
}

fn aggregate_context(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::MemoryContext {
    let mut context: pg_sys::MemoryContext = std::ptr::null_mut();
    if unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut context) } == 0 {
        pgrx::error!("es.account_replay's functions can only be called as an aggregate");
    }
    context
}

unsafe fn new_state(context: pg_sys::MemoryContext) -> *mut ReplayState {
    unsafe {
        let state = pg_sys::MemoryContextAllocZero(context, std::mem::size_of::<ReplayState>())
            .cast::<ReplayState>();
        (*state).account = AccountState::default();
        state
    }
}

unsafe fn set_holder(context: pg_sys::MemoryContext, state: *mut ReplayState, name: &str) {
    unsafe {
        let copy = pg_sys::MemoryContextAlloc(context, name.len().max(1)).cast::<u8>();
        std::ptr::copy_nonoverlapping(name.as_ptr(), copy, name.len());
        (*state).holder = copy;
        (*state).holder_len = name.len();
    }
}

/// The keys of an account event, read from its jsonb.
pub(crate) fn event_view<'a>(event: Jsonb) -> AccountEventView<'a> {
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
/// the holder's name, or what is wrong with it.
pub(crate) fn parse_state<'a>(state: Jsonb) -> Result<(AccountState, &'a str), &'static str> {
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
    Ok((
        AccountState {
            balance_cents: balance,
            status,
            version,
            opened: true,
        },
        holder,
    ))
}

fn unreplayable(e: ReplayError) -> EventStoreError {
    EventStoreError::UnreplayableEvent {
        event_type: e.event_type,
        reason: e.reason,
    }
}

/// Applies the event argument `n` to the state in argument 0 (created on the first row).
fn apply_arg(
    fcinfo: pg_sys::FunctionCallInfo,
    context: pg_sys::MemoryContext,
    state: *mut ReplayState,
    n: usize,
) -> Result<Datum, EventStoreError> {
    let Some(event) = arg(fcinfo, n) else {
        return Err(unreplayable(ReplayError {
            event_type: "null".into(),
            reason: "an account event cannot be NULL".into(),
        }));
    };
    let event = unsafe { Jsonb::from_datum(event) };
    let decoded = event_view(event).decode().map_err(unreplayable)?;
    unsafe {
        (*state).account.apply(&decoded).map_err(unreplayable)?;
        if let crate::core::account::AccountEvent::Opened { account_holder, .. } = decoded {
            set_holder(context, state, account_holder);
        }
    }
    Ok(Datum::from(state))
}

/// `account_replay_step(internal, event jsonb) RETURNS internal`.
fn step(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, EventStoreError> {
    let context = aggregate_context(fcinfo);
    let state = match arg(fcinfo, 0) {
        Some(d) => d.cast_mut_ptr::<ReplayState>(),
        None => unsafe { new_state(context) },
    };
    apply_arg(fcinfo, context, state, 1)
}

/// `account_replay_from_step(internal, initial_state jsonb, event jsonb) RETURNS internal`: on
/// the first row the state starts from `initial_state` (a state JSON, e.g. a snapshot's).
fn from_step(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, EventStoreError> {
    let context = aggregate_context(fcinfo);
    let state = match arg(fcinfo, 0) {
        Some(d) => d.cast_mut_ptr::<ReplayState>(),
        None => unsafe {
            let state = new_state(context);
            if let Some(initial) = arg(fcinfo, 1) {
                load_initial(context, state, Jsonb::from_datum(initial))?;
            }
            state
        },
    };
    apply_arg(fcinfo, context, state, 2)
}

unsafe fn load_initial(
    context: pg_sys::MemoryContext,
    state: *mut ReplayState,
    initial: Jsonb,
) -> Result<(), EventStoreError> {
    let (account, holder) = parse_state(initial).map_err(|reason| EventStoreError::InvalidArgument {
        name: "initial_state",
        reason: format!(
            "{reason} (expected {{\"holder_name\", \"balance_cents\", \"status\", \"version\"}})"
        ),
    })?;
    unsafe {
        (*state).account = account;
        set_holder(context, state, holder);
    }
    Ok(())
}

/// `account_replay_final(internal) RETURNS jsonb`: the state JSON (NULL for no rows). Read-only,
/// so it can be called once per row of a window.
fn finish(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, EventStoreError> {
    let Some(state) = arg(fcinfo, 0) else {
        unsafe { (*fcinfo).isnull = true };
        return Ok(no_value());
    };
    let state = state.cast_mut_ptr::<ReplayState>();
    let json = unsafe {
        let holder = if (*state).holder.is_null() {
            ""
        } else {
            let bytes = std::slice::from_raw_parts((*state).holder, (*state).holder_len);
            std::str::from_utf8(bytes).unwrap_or("")
        };
        state_json(holder, &(*state).account)
    };
    let text = CString::new(json).unwrap_or_default();
    Ok(unsafe {
        pg_sys::DirectFunctionCall1Coll(
            Some(jsonb_in_fmgr),
            pg_sys::InvalidOid,
            Datum::from(text.as_ptr() as *mut c_char),
        )
    })
}

unsafe extern "C-unwind" {
    /// The fmgr entry of `jsonb_in`, unwrapped, for `DirectFunctionCall1Coll` (the guarded call).
    #[link_name = "jsonb_in"]
    fn jsonb_in_fmgr(fcinfo: pg_sys::FunctionCallInfo) -> Datum;
}
