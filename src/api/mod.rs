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
use crate::jsonb::Jsonb;
use pgrx::pg_sys::{self, Datum};
use std::marker::PhantomData;
use uuid::Uuid;

/// Declares a SQL-callable C function `$sym` (and its `pg_finfo_` record) whose body
/// `$body(&mut Call) -> Result<Datum, EventStoreError>` runs under pgrx's guard; an `Err` is
/// raised with its own SQLSTATE once the guard has returned.
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
            // SAFETY: fmgr passes a valid fcinfo for the declared signature, valid until this
            // function returns, which is what Call::new needs; the guard converts PostgreSQL
            // errors and Rust panics raised inside into ERRORs; nothing with a destructor lives
            // in this frame when `raise` jumps away.
            let outcome = unsafe {
                ::pgrx::pgrx_extern_c_guard(|| {
                    let mut call = $crate::api::Call::new(fcinfo);
                    $crate::trace::entry(TRACED, &mut call, $body)
                })
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

/// One call of a SQL entry point: the `FunctionCallInfo` PostgreSQL passed to it, which stays
/// valid (with its arguments) until the entry point returns. Made once per call by
/// [`crate::sql_function!`]; the bodies read their arguments and set their result through it,
/// so no safe function dereferences a raw `fcinfo`.
pub struct Call<'fc> {
    fcinfo: pg_sys::FunctionCallInfo,
    _call: PhantomData<&'fc mut pg_sys::FunctionCallInfoBaseData>,
}

impl<'fc> Call<'fc> {
    /// Wraps the call's `fcinfo`.
    ///
    /// # Safety
    /// `fcinfo` must be the valid `FunctionCallInfo` of a call in progress, with `nargs`
    /// arguments, that outlives `'fc`.
    pub unsafe fn new(fcinfo: pg_sys::FunctionCallInfo) -> Call<'fc> {
        Call {
            fcinfo,
            _call: PhantomData,
        }
    }

    fn args(&self) -> &[pg_sys::NullableDatum] {
        // SAFETY: `new`'s contract: fcinfo is valid with `nargs` arguments for 'fc.
        unsafe { (*self.fcinfo).args.as_slice((*self.fcinfo).nargs as usize) }
    }

    /// Argument `n`, `None` when NULL (or not passed).
    pub fn arg(&self, n: usize) -> Option<Datum> {
        let a = self.args().get(n)?;
        (!a.isnull).then_some(a.value)
    }

    /// A required argument: NULL is 22004.
    pub fn required(&self, n: usize, name: &'static str) -> Result<Datum, EventStoreError> {
        self.arg(n).ok_or(EventStoreError::NullArgument { name })
    }

    /// A required bigint argument.
    pub fn required_i64(&self, n: usize, name: &'static str) -> Result<i64, EventStoreError> {
        self.required(n, name).map(|d| d.value() as i64)
    }

    /// A required integer argument.
    pub fn required_i32(&self, n: usize, name: &'static str) -> Result<i32, EventStoreError> {
        self.required(n, name).map(|d| d.value() as i32)
    }

    /// A bigint argument, `None` when NULL.
    pub fn i64(&self, n: usize) -> Option<i64> {
        self.arg(n).map(|d| d.value() as i64)
    }

    /// A required uuid argument.
    pub fn uuid(&self, n: usize, name: &'static str) -> Result<Uuid, EventStoreError> {
        let d = self.required(n, name)?;
        // SAFETY: the SQL declaration (sql/bootstrap.sql) makes argument `n` a uuid.
        Ok(unsafe { uuid_from_datum(d) })
    }

    /// A required text argument, as a Rust string (invalid UTF-8 replaced).
    pub fn text(&self, n: usize, name: &'static str) -> Result<String, EventStoreError> {
        let d = self.required(n, name)?;
        // SAFETY: the SQL declaration makes argument `n` a text; text_to_cstring detoasts it
        // into a fresh copy, which is copied again into Rust memory and freed.
        Ok(unsafe {
            let c = pg_sys::text_to_cstring(d.cast_mut_ptr());
            let s = std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned();
            pg_sys::pfree(c.cast());
            s
        })
    }

    /// A jsonb argument, `None` when NULL; valid for the call.
    pub fn jsonb(&self, n: usize) -> Option<Jsonb<'fc>> {
        // SAFETY: the SQL declaration makes argument `n` a jsonb; arguments stay valid for the
        // call, and so does the function's memory context a detoasted copy goes to.
        self.arg(n).map(|d| unsafe { Jsonb::from_datum(d) })
    }

    /// The number of elements of a (one- or more-dimensional) array argument, `None` when NULL.
    pub fn array_len(&self, n: usize) -> Option<i64> {
        let d = self.arg(n)?;
        // SAFETY: the SQL declaration makes argument `n` an array; it is detoasted (a copy in
        // the current context when it was toasted) before its header and dimensions are read.
        let count = unsafe {
            let arr = pg_sys::pg_detoast_datum(d.cast_mut_ptr()).cast::<pg_sys::ArrayType>();
            let ndim = (*arr).ndim;
            let dims = arr
                .cast::<u8>()
                .add(std::mem::size_of::<pg_sys::ArrayType>())
                .cast::<i32>();
            pg_sys::ArrayGetNItems(ndim, dims)
        };
        Some(i64::from(count))
    }

    /// Marks the result NULL (the returned datum is then ignored).
    pub fn return_null(&mut self) -> Datum {
        // SAFETY: fcinfo is valid for the call; `isnull` is the result flag fmgr reads.
        unsafe { (*self.fcinfo).isnull = true };
        no_value()
    }

    /// The aggregate's memory context when the function is called as an aggregate's
    /// transition or final function, else `None`.
    pub fn aggregate_context(&self) -> Option<pg_sys::MemoryContext> {
        let mut context: pg_sys::MemoryContext = std::ptr::null_mut();
        // SAFETY: fcinfo is valid; AggCheckCallContext only reads its context node.
        let kind = unsafe { pg_sys::AggCheckCallContext(self.fcinfo, &mut context) };
        (kind != 0 && !context.is_null()).then_some(context)
    }

    /// Sets up a materialized set-returning call and returns where its rows go. The function
    /// must be declared `RETURNS SETOF`/`TABLE` (sql/bootstrap.sql).
    pub fn materialize(&mut self) -> ResultSet {
        // SAFETY: InitMaterializedSRF checks that the caller accepts a materialized set (an
        // ERROR otherwise) and creates the tuple store and its descriptor in the per-query
        // context, which outlives the call.
        unsafe {
            pg_sys::InitMaterializedSRF(self.fcinfo, 0);
            let rsinfo = (*self.fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
            let desc = (*rsinfo).setDesc;
            ResultSet {
                store: (*rsinfo).setResult,
                desc,
                natts: (*desc).natts as usize,
            }
        }
    }
}

/// Where a materialized set-returning call puts its rows (see [`Call::materialize`]).
pub struct ResultSet {
    store: *mut pg_sys::Tuplestorestate,
    desc: pg_sys::TupleDesc,
    natts: usize,
}

impl ResultSet {
    /// The number of attributes of a row (dropped ones included, for a table's row type).
    pub fn natts(&self) -> usize {
        self.natts
    }

    /// The descriptor of the rows.
    pub fn desc(&self) -> pg_sys::TupleDesc {
        self.desc
    }

    /// Appends a row (copied into the store). The slices must have one entry per attribute.
    ///
    /// # Safety
    /// Each non-NULL value must be a valid datum of its attribute's type.
    pub unsafe fn put(&mut self, values: &[Datum], nulls: &[bool]) {
        assert!(
            values.len() == self.natts && nulls.len() == self.natts,
            "a row of {} values for {} attributes",
            values.len(),
            self.natts
        );
        // SAFETY: the arrays have `natts` entries (checked above); tuplestore_putvalues copies
        // them into the store's own context and never writes through the pointers.
        unsafe {
            pg_sys::tuplestore_putvalues(
                self.store,
                self.desc,
                values.as_ptr().cast_mut(),
                nulls.as_ptr().cast_mut(),
            )
        };
    }
}

/// Reads a uuid datum (a pointer to 16 bytes).
///
/// # Safety
/// `d` must be a non-null uuid datum.
pub(crate) unsafe fn uuid_from_datum(d: Datum) -> Uuid {
    // SAFETY: the caller's contract: a uuid datum points to 16 bytes (alignment 1).
    unsafe { Uuid::from_bytes(*d.cast_mut_ptr::<[u8; 16]>()) }
}

/// A uuid datum in the current memory context.
pub(crate) fn uuid_datum(u: &Uuid) -> Datum {
    // SAFETY: a fresh palloc of 16 bytes, fully written before it is handed out.
    unsafe {
        let p = pg_sys::palloc(16).cast::<[u8; 16]>();
        *p = *u.as_bytes();
        Datum::from(p)
    }
}

/// A text datum in the current memory context.
pub(crate) fn text_datum(s: &str) -> Datum {
    // SAFETY: cstring_to_text_with_len copies exactly `len` bytes of `s` into a new text.
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

/// The return value of a function that returns a set through its tuple store, or `void`.
pub(crate) fn no_value() -> Datum {
    Datum::from(0usize)
}
