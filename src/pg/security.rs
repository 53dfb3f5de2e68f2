//! Running code on another role's behalf, the way PostgreSQL itself does it.
//!
//! A projection's handler is its creator's code, run by the database worker (which is connected
//! as the bootstrap superuser). Switching roles with `SET ROLE` / `set_config('role', …)` is not
//! enough: the code can undo it (`RESET ROLE`, `SET SESSION AUTHORIZATION DEFAULT`), and a
//! setting it changes would outlive it. So the worker does what `REFRESH MATERIALIZED VIEW`
//! (`ExecRefreshMatView`), `CREATE INDEX` and autovacuum do for an index expression (the
//! CVE-2022-1552 pattern): [`restricted_as`] switches the *current user id* to the creator inside
//! a security-restricted operation (where PostgreSQL itself refuses SET ROLE, RESET ROLE, SET
//! SESSION AUTHORIZATION, temporary tables, LISTEN, deferred triggers, cursors WITH HOLD),
//! under a new GUC nest level whose changes are rolled back when the code returns.
//!
//! [`definer_as`] is the plain `SECURITY DEFINER` switch (no restriction), for the store's own
//! writes done on behalf of a caller whose identity the store must first record
//! (`es.create_projection`).
//!
//! What undoes a switch on each path:
//! - success, and an ERROR caught below it (the handler's subtransaction): the guard restores
//!   the GUCs (`AtEOXact_GUC(false, level)`) and then the user id and security context, in the
//!   reverse order of the switch, exactly as `ExecRefreshMatView` does;
//! - an ERROR that escapes (a cancel): it unwinds through the guard, which then touches nothing
//!   (calling into PostgreSQL while an ERROR unwinds could raise another); the (sub)transaction
//!   abort that follows every ERROR restores the user id and security context saved when the
//!   (sub)transaction started (`AbortTransaction` / `AbortSubTransaction`: `prevUser`,
//!   `prevSecContext`) and rolls back every GUC nest level above it (`AtEOXact_GUC`).

use crate::pg::call::Composite;
use pgrx::pg_sys::{self, Datum, Oid};
use std::ffi::c_int;

/// The user id and security context before a switch (and the GUC nest level opened after it),
/// put back when dropped on a normal return.
struct Switch {
    user: Oid,
    context: c_int,
    guc_level: Option<c_int>,
}

impl Switch {
    fn to(role: Oid, flags: u32, guc_level: bool) -> Switch {
        let mut user = pg_sys::InvalidOid;
        let mut context: c_int = 0;
        // SAFETY: plain reads and writes of the backend's user id and security context (no
        // allocation, no ERROR). The new context keeps every flag of the saved one (a switch
        // inside a restricted operation stays restricted) and adds `flags`. The new nest level
        // is opened after the switch and closed before the restore (Drop), nested inside the
        // current (sub)transaction's level, as ExecRefreshMatView does.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(role, context | flags as c_int);
        }
        let guc_level = guc_level.then(|| {
            // SAFETY: opens a GUC nest level; `Drop` (or the abort after an ERROR) closes it.
            unsafe { pg_sys::NewGUCNestLevel() }
        });
        Switch {
            user,
            context,
            guc_level,
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        // An ERROR unwinding through here is followed by the (sub)transaction's abort, which
        // restores the user id, the security context and the GUCs by itself.
        if std::thread::panicking() {
            return;
        }
        // SAFETY: closes the nest level `to` opened (nothing opened one above it that is still
        // open: a subtransaction begun below has ended, as every path out of the code does),
        // rolling back the settings changed at it; then the saved user id and context. Neither
        // raises in practice (a GUC rollback re-assigns values that were valid before).
        unsafe {
            if let Some(level) = self.guc_level {
                pg_sys::AtEOXact_GUC(false, level);
            }
            pg_sys::SetUserIdAndSecContext(self.user, self.context);
        }
    }
}

/// Runs `f` as `role` in a security-restricted operation: the current user id is `role`, SET
/// ROLE and friends are refused, and every setting `f` changes (`SET`, `set_config`, also not
/// LOCAL) is rolled back when it returns. The caller checks that `role` exists.
pub fn restricted_as<R>(role: Oid, f: impl FnOnce() -> R) -> R {
    let _switch = Switch::to(
        role,
        pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION,
        true,
    );
    f()
}

/// Runs `f` as `role` the way a `SECURITY DEFINER` function runs its body (the user id changes,
/// nothing is restricted; settings are the caller's business).
pub fn definer_as<R>(role: Oid, f: impl FnOnce() -> R) -> R {
    let _switch = Switch::to(role, pg_sys::SECURITY_LOCAL_USERID_CHANGE, false);
    f()
}

/// The current user id: inside a `SECURITY INVOKER` function, the role that called it (also
/// when that call comes from a `SECURITY DEFINER` function or a restricted operation, whose
/// role it then is).
pub fn current_user() -> Oid {
    // SAFETY: a read of the backend's current user id.
    unsafe { pg_sys::GetUserId() }
}

/// Whether a role with this OID exists.
pub fn role_exists(role: Oid) -> bool {
    exists_by_oid(pg_sys::SysCacheIdentifier::AUTHOID, role)
}

/// Whether the catalog row of `cache` keyed by `oid` exists (a role, a function, …).
pub fn exists_by_oid(cache: pg_sys::SysCacheIdentifier::Type, oid: Oid) -> bool {
    // SAFETY: a syscache probe by a one-OID key (the caches passed here are keyed by an OID);
    // it returns false for a missing row and keeps no reference.
    unsafe {
        pg_sys::SearchSysCacheExists(
            cache as c_int,
            Datum::from(oid),
            Datum::from(0usize),
            Datum::from(0usize),
            Datum::from(0usize),
        )
    }
}

/// The owner of a function (`pg_proc.proowner`), `None` when there is no such function.
pub fn function_owner(function: Oid) -> Option<Oid> {
    // SAFETY: a syscache lookup by OID; the tuple's fixed-size part is read (proowner) and the
    // tuple released before returning.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::PROCOID as c_int,
            Datum::from(function),
        );
        if tuple.is_null() {
            return None;
        }
        let form = pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_proc>();
        let owner = (*form).proowner;
        pg_sys::ReleaseSysCache(tuple);
        Some(owner)
    }
}

/// Calls a function of the store (by OID) with `args` through fmgr and returns its result as
/// text, `None` when it returned NULL. Like `OidFunctionCall…`, this performs no permission
/// check: it is for the store's own internal functions, which the role running (a projection's
/// creator) need not be allowed to call itself; any function *they* call is checked by the
/// executor as usual.
///
/// # Safety
/// `function` must take exactly `args.len()` arguments of the types of `args` (by-reference
/// datums valid for the call) and return `text`.
unsafe fn call_returning_text(function: Oid, args: &[Datum]) -> Option<String> {
    // SAFETY: `flinfo` lives on this frame for the whole call; fmgr_info fills it (allocations
    // in the current memory context). The fcinfo is palloc0'd with room for the arguments, as
    // `LOCAL_FCINFO` sizes it. The call itself goes through pgrx's FFI guard, so an ERROR
    // raised by the function comes back as a Rust panic (unwinding to the caller's abort) and
    // never longjmps over this frame; the closure owns nothing. The result is text (the
    // contract), copied into Rust memory before the fcinfo is freed.
    unsafe {
        let mut flinfo = pg_sys::FmgrInfo::default();
        pg_sys::fmgr_info(function, &mut flinfo);
        let fcinfo = pg_sys::palloc0(
            std::mem::size_of::<pg_sys::FunctionCallInfoBaseData>()
                + std::mem::size_of::<pg_sys::NullableDatum>() * args.len(),
        )
        .cast::<pg_sys::FunctionCallInfoBaseData>();
        (*fcinfo).flinfo = &mut flinfo;
        (*fcinfo).fncollation = pg_sys::InvalidOid;
        (*fcinfo).nargs = args.len() as i16;
        for (slot, &value) in (*fcinfo).args.as_mut_slice(args.len()).iter_mut().zip(args) {
            slot.value = value;
            slot.isnull = false;
        }
        let Some(func) = flinfo.fn_addr else {
            pgrx::error!("event_store: function {} has no address", function.to_u32());
        };
        let result = pg_sys::ffi::pg_guard_ffi_boundary(|| func(fcinfo));
        let text = if (*fcinfo).isnull {
            None
        } else {
            let c = pg_sys::text_to_cstring(result.cast_mut_ptr());
            let s = std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned();
            pg_sys::pfree(c.cast());
            Some(s)
        };
        pg_sys::pfree(fcinfo.cast());
        text
    }
}

/// [`call_returning_text`] of a function `f(text, <row type>) RETURNS text` (a projection's
/// `es.run_handler`) with `text` and `row`: its signature is checked against the arguments
/// first (an internal error when it differs, never a misread datum), once per backend for the
/// same function.
pub fn call_text_row(function: Oid, text: &str, row: Composite<'_>) -> Option<String> {
    thread_local! {
        static CHECKED: std::cell::Cell<Oid> = const { std::cell::Cell::new(pg_sys::InvalidOid) };
    }
    if CHECKED.with(|c| c.get()) != function {
        // SAFETY: a catalog lookup of the function's signature (released before returning) and
        // of the row's type, read from the composite datum's header (valid: the type's
        // invariant).
        let fits = unsafe {
            let header = pg_sys::pg_detoast_datum(row.datum().cast_mut_ptr())
                .cast::<pg_sys::HeapTupleHeaderData>();
            let row_type = pgrx::heap_tuple_header_get_type_id(header);
            let mut types: *mut Oid = std::ptr::null_mut();
            let mut nargs: c_int = 0;
            let ret = pg_sys::get_func_signature(function, &mut types, &mut nargs);
            ret == pg_sys::TEXTOID
                && nargs == 2
                && *types == pg_sys::TEXTOID
                && *types.add(1) == row_type
        };
        if !fits {
            pgrx::error!(
                "event_store: function {} is not f(text, row) RETURNS text",
                function.to_u32()
            );
        }
        CHECKED.with(|c| c.set(function));
    }
    let text = crate::pg::call::text_datum(text);
    // SAFETY: the function takes (text, the row's type) and returns text (checked above or at
    // an earlier call of the same OID, which keeps its signature for life); `text` is a fresh
    // text datum and `row` a valid composite datum of that type, both valid for the call.
    unsafe { call_returning_text(function, &[text, row.datum()]) }
}

/// Whether the current user holds the privileges of the role named `role` (a member of it, or a
/// superuser); false when no such role exists. Called from the read functions, which are
/// `SECURITY INVOKER`, so the current user is the caller (inside a user's own `SECURITY
/// DEFINER` function, that function's owner, as everywhere in PostgreSQL).
pub fn current_user_has_role(role: &std::ffi::CStr) -> bool {
    // SAFETY: get_role_oid with missing_ok returns InvalidOid instead of raising;
    // has_privs_of_role reads the role membership cache.
    unsafe {
        let oid = pg_sys::get_role_oid(role.as_ptr(), true);
        oid != pg_sys::InvalidOid && pg_sys::has_privs_of_role(pg_sys::GetUserId(), oid)
    }
}
