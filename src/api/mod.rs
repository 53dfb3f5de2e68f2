//! The SQL surface: the C entry points declared in `sql/bootstrap.sql`, their argument
//! conversions, and the glue that calls the core and `crate::storage`.
//!
//! Entry points are written against `fcinfo` directly (see [`sql_function!`]) rather than with
//! `#[pg_extern]`, for two reasons: their SQL declarations are reviewed text in `sql/`, and a
//! user error must leave the function through `crate::error::raise` so it keeps its own
//! SQLSTATE (`ES001`…), which pgrx's error path would turn into a built-in one.

pub mod account;
pub mod append;
pub mod audit;
pub mod read;
pub mod replay;
pub mod snapshot;

use crate::core::EventStoreError;
use pgrx::pg_sys::{self, Datum};
use uuid::Uuid;

/// Declares a SQL-callable C function `$sym` (and its `pg_finfo_` record) whose body
/// `$body(fcinfo) -> Result<Datum, EventStoreError>` runs under pgrx's guard; an `Err` is raised
/// with its own SQLSTATE once the guard has returned.
#[macro_export]
macro_rules! sql_function {
    ($sym:ident, $finfo:ident, $body:path) => {
        #[doc = concat!("C entry point `", stringify!($sym), "` (see sql/bootstrap.sql).")]
        ///
        /// # Safety
        /// Called by PostgreSQL's fmgr with a valid `fcinfo` for the declared SQL signature.
        #[unsafe(no_mangle)]
        pub unsafe extern "C-unwind" fn $sym(
            fcinfo: ::pgrx::pg_sys::FunctionCallInfo,
        ) -> ::pgrx::pg_sys::Datum {
            // The entry point's span, resolved at compile time (see `crate::trace`).
            const TRACED: Option<$crate::trace::EntrySpan> =
                $crate::trace::entry_span(stringify!($sym));
            // SAFETY: the guard converts PostgreSQL errors and Rust panics raised inside into
            // ERRORs; nothing with a destructor lives in this frame when `raise` jumps away.
            let outcome = unsafe {
                ::pgrx::pgrx_extern_c_guard(|| $crate::trace::entry(TRACED, fcinfo, $body))
            };
            match outcome {
                Ok(datum) => datum,
                Err(err) => {
                    const NAME: &::std::ffi::CStr = match ::std::ffi::CStr::from_bytes_with_nul(
                        concat!(stringify!($sym), "\0").as_bytes(),
                    ) {
                        Ok(name) => name,
                        Err(_) => c"event_store",
                    };
                    $crate::error::raise(err, NAME)
                }
            }
        }

        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn $finfo() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
            const V1: ::pgrx::pg_sys::Pg_finfo_record =
                ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

/// Argument `n` of the call, `None` when NULL.
pub(crate) fn arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Option<Datum> {
    unsafe {
        let nargs = (*fcinfo).nargs as usize;
        let a = (*fcinfo).args.as_slice(nargs).get(n)?;
        (!a.isnull).then_some(a.value)
    }
}

/// A required argument: NULL is 22004.
pub(crate) fn required(
    fcinfo: pg_sys::FunctionCallInfo,
    n: usize,
    name: &'static str,
) -> Result<Datum, EventStoreError> {
    arg(fcinfo, n).ok_or(EventStoreError::NullArgument { name })
}

/// A required uuid argument.
pub(crate) fn uuid_arg(
    fcinfo: pg_sys::FunctionCallInfo,
    n: usize,
    name: &'static str,
) -> Result<Uuid, EventStoreError> {
    required(fcinfo, n, name).map(|d| unsafe { uuid_from_datum(d) })
}

/// A bigint argument, `None` when NULL.
pub(crate) fn i64_arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Option<i64> {
    arg(fcinfo, n).map(|d| d.value() as i64)
}

/// Reads a uuid datum (a pointer to 16 bytes).
///
/// # Safety
/// `d` must be a non-null uuid datum.
pub(crate) unsafe fn uuid_from_datum(d: Datum) -> Uuid {
    unsafe { Uuid::from_bytes(*d.cast_mut_ptr::<[u8; 16]>()) }
}

/// A uuid datum in the current memory context.
pub(crate) fn uuid_datum(u: &Uuid) -> Datum {
    unsafe {
        let p = pg_sys::palloc(16).cast::<[u8; 16]>();
        *p = *u.as_bytes();
        Datum::from(p)
    }
}

/// A text datum in the current memory context.
pub(crate) fn text_datum(s: &str) -> Datum {
    unsafe {
        Datum::from(pg_sys::cstring_to_text_with_len(
            s.as_ptr().cast(),
            s.len() as i32,
        ))
    }
}

/// The bigint return value.
pub(crate) fn i64_datum(v: i64) -> Datum {
    Datum::from(v)
}

/// Sets up a materialized set-returning call; returns the tuple store and its descriptor.
pub(crate) fn materialize(
    fcinfo: pg_sys::FunctionCallInfo,
) -> (*mut pg_sys::Tuplestorestate, pg_sys::TupleDesc) {
    unsafe {
        pg_sys::InitMaterializedSRF(fcinfo, 0);
        let rsinfo = (*fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
        ((*rsinfo).setResult, (*rsinfo).setDesc)
    }
}

/// The return value of a function that returns a set through its tuple store, or `void`.
pub(crate) fn no_value() -> Datum {
    Datum::from(0usize)
}
