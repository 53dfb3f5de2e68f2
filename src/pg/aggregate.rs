//! Rust values that live in an aggregate's memory context: the state of a user-defined
//! aggregate (`es.account_replay`) is allocated there, passed back by the executor as an
//! `internal` argument on every row, and dropped when PostgreSQL resets or deletes the context
//! (a memory-context reset callback), so a state that owns Rust memory (a `String`) never leaks.

use super::call::{Call, Param};
use pgrx::pg_sys;

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
pub unsafe fn alloc<T>(context: pg_sys::MemoryContext, value: T) -> *mut T {
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
pub unsafe fn internal_arg<'s, T>(call: &Call<'_>, p: Param) -> Option<&'s mut T> {
    call.arg(p).map(|d| {
        // SAFETY: the caller's contract: a live `T` in the aggregate's context, used by this
        // call only.
        unsafe { &mut *d.cast_mut_ptr::<T>() }
    })
}
