//! Rust values that live in an aggregate's memory context: the state of a user-defined
//! aggregate (`es.account_replay`) is allocated there, passed back by the executor as an
//! `internal` argument on every row, and dropped when PostgreSQL resets or deletes the context
//! (a memory-context reset callback), so a state that owns Rust memory (a `String`) never leaks.
//!
//! The entry points of an aggregate see only [`transition`] and [`finish`], which are safe: the
//! pointer that travels as the `internal` argument never leaves this file.

use super::call::{Call, Param};
use event_store_core::EventStoreError;
use pgrx::pg_sys::{self, Datum};

/// A value and the callback that drops it, allocated together in the aggregate's context.
#[repr(C)]
struct Owned<T> {
    callback: pg_sys::MemoryContextCallback,
    value: T,
}

unsafe extern "C-unwind" fn drop_owned<T>(arg: *mut std::ffi::c_void) {
    // SAFETY: registered by `alloc` with the address of an Owned<T> it initialized; PostgreSQL
    // calls a reset callback once, before the memory is freed.
    unsafe { std::ptr::drop_in_place(&raw mut (*arg.cast::<Owned<T>>()).value) };
}

/// Moves `value` into `context` and returns its address there; it is dropped when the context
/// is reset or deleted.
///
/// # Safety
/// `context` must be a valid memory context (the aggregate's, from `AggCheckCallContext`); the
/// pointer must not be used after the context is reset.
unsafe fn alloc<T>(context: pg_sys::MemoryContext, value: T) -> *mut T {
    // palloc aligns to MAXALIGN (8 bytes on the platforms PostgreSQL 15 runs on here).
    assert!(std::mem::align_of::<Owned<T>>() <= 8);
    // SAFETY: the caller's contract; the allocation is aligned (MAXALIGN covers the types the
    // store keeps there, which need at most 8 bytes), fully written before the callback that
    // reads it is registered.
    unsafe {
        let owned =
            pg_sys::MemoryContextAlloc(context, std::mem::size_of::<Owned<T>>()).cast::<Owned<T>>();
        owned.write(Owned {
            callback: pg_sys::MemoryContextCallback {
                func: Some(drop_owned::<T>),
                arg: owned.cast(),
                next: std::ptr::null_mut(),
            },
            value,
        });
        pg_sys::MemoryContextRegisterResetCallback(context, &raw mut (*owned).callback);
        &raw mut (*owned).value
    }
}

/// The `internal` argument of an aggregate's transition or final function: the value
/// [`alloc`] made for the group, `None` on the group's first row.
///
/// # Safety
/// `p` must be the `internal` argument the aggregate's declaration passes to the function, and
/// every non-NULL value of it a `T` made by [`alloc`] in the aggregate's context, which lives
/// for `'s` (the group).
unsafe fn internal_arg<'s, T>(call: &Call<'_>, p: Param) -> Option<&'s mut T> {
    call.arg(p).map(|d| {
        // SAFETY: the caller's contract: a live `T` in the aggregate's context, used by this
        // call only.
        unsafe { &mut *d.cast_mut_ptr::<T>() }
    })
}

/// Which memory a group's first state is made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartIn {
    /// The call's own memory (a state that is pure Rust).
    Call,
    /// The aggregate's context, so the PostgreSQL memory the state points to lives as long as
    /// the group (a declared type's fold).
    Group,
}

/// One call of the transition function of `aggregate`, whose state is a `T` passed as the
/// `internal` argument `state`: on a group's first row `start` makes the state (in the memory
/// `start_in` names; it moves into the aggregate's context and is dropped with it), then `step`
/// folds the row into it. Returns the state as the `internal` result. A direct call (not by an
/// aggregate) is the error of [`Call::aggregate_context_of`].
///
/// Every function that reads `state` as a `T` must be declared with the aggregate whose
/// transition functions make `T`s (the declarations of sql/flow.sql and the registrations do so).
pub fn transition<T>(
    call: &Call<'_>,
    aggregate: &str,
    state: Param,
    start_in: StartIn,
    start: impl FnOnce() -> Result<T, EventStoreError>,
    step: impl FnOnce(&mut T) -> Result<(), EventStoreError>,
) -> Result<Datum, EventStoreError> {
    // Every row but a group's first only needs to know that an aggregate calls: the tag of the
    // call's context, read here, is what `AggCheckCallContext` tests, without a guarded call
    // into PostgreSQL per row (its memory context is needed on the first row only).
    if call.arg(state).is_some() && !called_by_aggregate(call) {
        call.aggregate_context_of(aggregate)?;
    }
    // SAFETY: called as the aggregate (checked above, or below on the first row), whose
    // declaration passes its transition state as `state`: a `T` made below on the group's first
    // row, in the aggregate's context, which lives as long as the group.
    let kept = unsafe { internal_arg::<T>(call, state) };
    let value = match kept {
        Some(value) => value as *mut T,
        None => {
            let context = call.aggregate_context_of(aggregate)?;
            let started = match start_in {
                StartIn::Call => start(),
                // SAFETY: a switch to the aggregate's context (AggCheckCallContext's) and back,
                // so the state's PostgreSQL memory lives with the group; an ERROR inside
                // `start` aborts the query, which resets the current context itself.
                StartIn::Group => unsafe {
                    let previous = pg_sys::MemoryContextSwitchTo(context);
                    let r = start();
                    pg_sys::MemoryContextSwitchTo(previous);
                    r
                },
            }?;
            // SAFETY: `context` is the aggregate's; the executor keeps the pointer only while
            // it lives.
            unsafe { alloc(context, started) }
        }
    };
    // SAFETY: a live state in the aggregate's context (made above or by an earlier row), used
    // by this call only.
    step(unsafe { &mut *value })?;
    Ok(Datum::from(value))
}

/// Whether an aggregate (or a window aggregate) makes this call: the test of
/// `AggCheckCallContext`, on the tag of the call's context node.
fn called_by_aggregate(call: &Call<'_>) -> bool {
    let fcinfo = call.fcinfo();
    // SAFETY: `fcinfo` is the valid call info of the call in progress (Call's invariant); its
    // `context` is null or a node, whose first field is its tag.
    unsafe {
        let context = (*fcinfo).context;
        !context.is_null()
            && matches!(
                (*context).type_,
                pg_sys::NodeTag::T_AggState | pg_sys::NodeTag::T_WindowAggState
            )
    }
}

/// The final function of `aggregate`: `f` of the group's state, `None` before its first row
/// (NULL). `f` only reads the state, so a window function may call it once per row.
pub fn finish<T, R>(
    call: &Call<'_>,
    aggregate: &str,
    state: Param,
    f: impl FnOnce(&T) -> R,
) -> Result<Option<R>, EventStoreError> {
    call.aggregate_context_of(aggregate)?;
    // SAFETY: called as the aggregate (checked above), which passes its transition state (a
    // `T` made by `transition`, or NULL before the first row) as the final function's argument.
    Ok(unsafe { internal_arg::<T>(call, state) }.map(|value| f(value)))
}
