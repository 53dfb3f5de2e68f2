//! The single place where a user error becomes a PostgreSQL ERROR.
//!
//! pgrx reports errors through a fixed enum of the built-in SQLSTATEs, which cannot carry the
//! store's own codes (`ES001`…). So every SQL entry point (see `#[sql_function]` in the `event_store_macros` crate) runs its
//! body under pgrx's guard, gets a `Result` back, and only then, in the outermost frame where no
//! Rust value is left to drop, raises the error with PostgreSQL's own `ereport` machinery. That
//! way `EXCEPTION WHEN SQLSTATE 'ES001'` in PL/pgSQL and every client see the real code.

use event_store_core::EventStoreError;
use pgrx::pg_sys;
use std::ffi::{CString, c_char, c_int};

unsafe extern "C-unwind" {
    fn errstart(elevel: c_int, domain: *const c_char) -> bool;
    fn errcode(sqlerrcode: c_int) -> c_int;
    fn errmsg(fmt: *const c_char, ...) -> c_int;
    fn errdetail(fmt: *const c_char, ...) -> c_int;
    fn errhint(fmt: *const c_char, ...) -> c_int;
    fn errcontext_msg(fmt: *const c_char, ...) -> c_int;
    fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
}

/// PostgreSQL's `MAKE_SQLSTATE`: five characters packed six bits each.
pub fn make_sqlstate(code: &str) -> c_int {
    code.bytes()
        .enumerate()
        .map(|(i, ch)| ((c_int::from(ch) - c_int::from(b'0')) & 0x3F) << (6 * i))
        .sum()
}

/// Copies a Rust string into the current memory context, so nothing on the Rust heap is left
/// behind when `errfinish` jumps away. Interior NULs (impossible in our messages) are dropped.
fn pstrdup(s: &str) -> *mut c_char {
    let c = CString::new(s.replace('\0', "")).unwrap_or_default();
    // SAFETY: pstrdup copies the NUL-terminated string (alive across the call) into the
    // current memory context.
    unsafe { pg_sys::pstrdup(c.as_ptr()) }
}

/// Raises `err` as an ERROR with its SQLSTATE, message, DETAIL and HINT, located in the C
/// entry point `function`. Never returns.
///
/// Call it only from the outermost frame of an `extern "C-unwind"` SQL entry point, after
/// pgrx's guard has returned: `errfinish` longjmps out, so no frame between here and PostgreSQL
/// may own anything that needs dropping.
pub fn raise(err: EventStoreError, function: &'static std::ffi::CStr) -> ! {
    let code = make_sqlstate(err.sqlstate());
    let message = pstrdup(&err.message());
    let detail = err.detail().map(|d| pstrdup(&d));
    let hint = err.hint().map(|h| pstrdup(&h));
    // An error a user's function raised keeps where it was raised.
    let context = match &err {
        EventStoreError::Raised(raised) => raised.context.as_deref().map(pstrdup),
        _ => None,
    };
    drop(err);
    const PERCENT_S: *const c_char = c"%s".as_ptr();
    // SAFETY: the ereport protocol (errstart, then the fields, then errfinish), each string a
    // palloc'd NUL-terminated copy passed through a "%s" format; errfinish longjmps to the
    // caller's error handler, and this frame owns nothing that needs dropping (the caller's
    // contract above).
    unsafe {
        if errstart(pgrx::PgLogLevel::ERROR as c_int, std::ptr::null()) {
            errcode(code);
            errmsg(PERCENT_S, message);
            if let Some(d) = detail {
                errdetail(PERCENT_S, d);
            }
            if let Some(h) = hint {
                errhint(PERCENT_S, h);
            }
            if let Some(c) = context {
                errcontext_msg(PERCENT_S, c);
            }
            errfinish(c"event_store".as_ptr(), 0, function.as_ptr());
        }
    }
    unreachable!("errfinish returned from an ERROR")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_packing_matches_postgres() {
        // ERRCODE_UNIQUE_VIOLATION = MAKE_SQLSTATE('2','3','5','0','5') = 0x00505082 in errcodes.h terms
        assert_eq!(
            make_sqlstate("23505"),
            pgrx::PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION as c_int
        );
        assert_eq!(
            make_sqlstate("22004"),
            pgrx::PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED as c_int
        );
    }
}
