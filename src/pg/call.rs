//! One call of a SQL entry point and the datums it passes around: [`Call`] wraps the
//! `FunctionCallInfo` PostgreSQL hands a C function (its arguments, its result flag, its set
//! result), so no safe function dereferences a raw `fcinfo`; the helpers build datums of the
//! types the store uses in the current memory context.

use crate::pg::jsonb::Jsonb;
use event_store_core::EventStoreError;
use pgrx::pg_sys::{self, BuiltinOid, Datum};
use std::cell::Cell;
use std::ffi::CStr;
use std::marker::PhantomData;
use uuid::Uuid;

/// One SQL argument of an entry point: its position and its SQL name (for errors). Made by the
/// registration of the function (`#[sql_function]`), one constant per argument, so a body
/// names its arguments and never counts them.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    index: usize,
    name: &'static str,
}

impl Param {
    /// Argument `index` (0-based), called `name` in SQL.
    pub const fn new(index: usize, name: &'static str) -> Param {
        Param { index, name }
    }
}

/// One call of a SQL entry point: the `FunctionCallInfo` PostgreSQL passed to it, which stays
/// valid (with its arguments) until the entry point returns. Made once per call by
/// `#[sql_function]` (the `event_store_macros` crate); the bodies read their arguments and set their result through it,
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

    /// The raw call (for a trigger function, whose context PostgreSQL passes in it).
    pub fn fcinfo(&self) -> pg_sys::FunctionCallInfo {
        self.fcinfo
    }

    /// The OID of the function being called (`fn_oid`).
    pub fn function_oid(&self) -> pg_sys::Oid {
        // SAFETY: `new`'s contract: fcinfo is valid for the call, and fmgr always sets its
        // flinfo (with the function's OID) before calling a C function.
        unsafe { (*(*self.fcinfo).flinfo).fn_oid }
    }

    /// An argument, `None` when NULL (or not passed).
    pub fn arg(&self, p: Param) -> Option<Datum> {
        let a = self.args().get(p.index)?;
        (!a.isnull).then_some(a.value)
    }

    /// A required argument: NULL is 22004.
    pub fn required(&self, p: Param) -> Result<Datum, EventStoreError> {
        self.arg(p)
            .ok_or(EventStoreError::NullArgument { name: p.name })
    }

    /// A required bigint argument.
    pub fn required_i64(&self, p: Param) -> Result<i64, EventStoreError> {
        self.required(p).map(|d| d.value() as i64)
    }

    /// A required integer argument.
    pub fn required_i32(&self, p: Param) -> Result<i32, EventStoreError> {
        self.required(p).map(|d| d.value() as i32)
    }

    /// A bigint (or integer) argument, `None` when NULL.
    pub fn i64(&self, p: Param) -> Option<i64> {
        self.arg(p).map(|d| d.value() as i64)
    }

    /// A uuid argument, `None` when NULL.
    pub fn uuid_or_null(&self, p: Param) -> Option<Uuid> {
        // SAFETY: the function's SQL declaration makes the argument a uuid.
        self.arg(p).map(|d| unsafe { uuid_from_datum(d) })
    }

    /// A required uuid argument.
    pub fn uuid(&self, p: Param) -> Result<Uuid, EventStoreError> {
        self.uuid_or_null(p)
            .ok_or(EventStoreError::NullArgument { name: p.name })
    }

    /// A required text argument, as a Rust string (invalid UTF-8 replaced).
    pub fn text(&self, p: Param) -> Result<String, EventStoreError> {
        let d = self.required(p)?;
        // SAFETY: the SQL declaration makes the argument a text; text_to_cstring detoasts it
        // into a fresh copy, which is copied again into Rust memory and freed.
        Ok(unsafe {
            let c = pg_sys::text_to_cstring(d.cast_mut_ptr());
            let s = std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned();
            pg_sys::pfree(c.cast());
            s
        })
    }

    /// An optional text argument (`None` when NULL).
    pub fn optional_text(&self, p: Param) -> Option<String> {
        self.arg(p)?;
        self.text(p).ok()
    }

    /// A `text[]` argument as strings: `None` when the array is NULL; a NULL element is an
    /// invalid argument.
    pub fn text_array(&self, p: Param) -> Result<Option<Vec<String>>, EventStoreError> {
        let Some(d) = self.arg(p) else {
            return Ok(None);
        };
        // SAFETY: the SQL declaration makes the argument a text[].
        let elements = unsafe { text_array_elements(d) };
        elements
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                e.ok_or_else(|| EventStoreError::InvalidArgument {
                    name: p.name,
                    reason: format!("element {} is null", i + 1),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A required `interval` argument that must be positive; returns its datum.
    pub fn positive_interval(&self, p: Param) -> Result<Datum, EventStoreError> {
        let d = self.required(p)?;
        // SAFETY: the SQL declaration makes the argument an interval (a pointer to its
        // fixed-size struct).
        let iv = unsafe { *d.cast_mut_ptr::<pg_sys::Interval>() };
        // every part non-negative and one positive: a mixed interval ('1 mon -30 days') is not
        // positive on every calendar date
        let parts = [iv.time, i64::from(iv.day), i64::from(iv.month)];
        if parts.iter().any(|&p| p < 0) || parts.iter().all(|&p| p == 0) {
            return Err(EventStoreError::InvalidArgument {
                name: p.name,
                reason: "the lease must be a positive interval".into(),
            });
        }
        Ok(d)
    }

    /// A jsonb argument, `None` when NULL; valid for the call.
    pub fn jsonb(&self, p: Param) -> Option<Jsonb<'fc>> {
        // SAFETY: the SQL declaration makes the argument a jsonb; arguments stay valid for the
        // call, and so does the function's memory context a detoasted copy goes to.
        self.arg(p).map(|d| unsafe { Jsonb::from_datum(d) })
    }

    /// A required jsonb argument.
    pub fn required_jsonb(&self, p: Param) -> Result<Jsonb<'fc>, EventStoreError> {
        self.jsonb(p)
            .ok_or(EventStoreError::NullArgument { name: p.name })
    }

    /// A `jsonb[]` argument, `None` when NULL; valid for the call.
    pub fn jsonb_array(&self, p: Param) -> Option<JsonbArray<'fc>> {
        self.arg(p).map(|array| JsonbArray {
            array,
            _call: PhantomData,
        })
    }

    /// The memory context of this call, where values built during it live until it returns.
    pub fn memory(&self) -> CallMemory<'fc> {
        // SAFETY: a read of the backend's current context, always set; in an entry point's
        // body it is the call's, which PostgreSQL keeps until the function returns.
        CallMemory(unsafe { pg_sys::CurrentMemoryContext }, PhantomData)
    }

    /// The number of elements of a (one- or more-dimensional) array argument, `None` when NULL.
    pub fn array_len(&self, p: Param) -> Option<i64> {
        let d = self.arg(p)?;
        // SAFETY: the SQL declaration makes the argument an array; it is detoasted (a copy in
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

    /// [`Call::aggregate_context`] of a transition or final function of the aggregate
    /// `aggregate`, or the error for a direct call (22023).
    pub fn aggregate_context_of(
        &self,
        aggregate: &str,
    ) -> Result<pg_sys::MemoryContext, EventStoreError> {
        self.aggregate_context()
            .ok_or_else(|| EventStoreError::InvalidArgument {
                name: "call",
                reason: format!("{aggregate}'s functions can only be called by the aggregate"),
            })
    }

    /// Sets up a materialized set-returning call and returns where its rows go. The function
    /// must be declared `RETURNS SETOF`/`TABLE` (sql/bootstrap.sql).
    pub fn materialize(&mut self) -> ResultSet {
        self.materialize_with(0)
    }

    /// [`Call::materialize`] for a function that returns rows of a named composite type
    /// (`RETURNS SETOF es.events`): the rows' descriptor is copied from the one the caller
    /// expects when it passes one (a function scan, a set-returning call in a target list:
    /// both derive it from the function's declared row type, so it is that type's descriptor),
    /// which spares resolving the result type again (`get_call_result_type` copies the table's
    /// row type with its defaults and constraints, ~2,000 instructions per call).
    pub fn materialize_row_type(&mut self) -> ResultSet {
        // SAFETY: a set-returning call's fcinfo carries its ReturnSetInfo (checked non-NULL
        // and tagged before it is read; InitMaterializedSRF raises for any other caller).
        let expected = unsafe {
            let rsinfo = (*self.fcinfo).resultinfo;
            !rsinfo.is_null()
                && (*rsinfo).type_ == pg_sys::NodeTag::T_ReturnSetInfo
                && !(*rsinfo.cast::<pg_sys::ReturnSetInfo>())
                    .expectedDesc
                    .is_null()
        };
        self.materialize_with(if expected {
            pg_sys::MAT_SRF_USE_EXPECTED_DESC as pg_sys::bits32
        } else {
            0
        })
    }

    fn materialize_with(&mut self, flags: pg_sys::bits32) -> ResultSet {
        // SAFETY: `self.fcinfo` is the call's (`Call::new`'s contract), as `result_store`
        // requires; it only proceeds for a caller that accepts a materialized set.
        let pooled = unsafe { self.result_store(flags) };
        let (store, desc) = pooled.unwrap_or_else(|| {
            // A caller `result_store` declined: the result set up as PostgreSQL does, the tuple
            // store and its descriptor in the per-query context, which outlives the call.
            // SAFETY: InitMaterializedSRF raises its own ERROR for a caller that refuses a
            // materialized set; the ReturnSetInfo it fills is this call's fcinfo's.
            unsafe {
                pg_sys::InitMaterializedSRF(self.fcinfo, flags);
                let rsinfo = (*self.fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
                ((*rsinfo).setResult, (*rsinfo).setDesc)
            }
        });
        // SAFETY: the descriptor was just made in the per-query context.
        let natts = unsafe { (*desc).natts } as usize;
        ResultSet {
            store,
            desc,
            natts,
            rewrite: None,
            failed: None,
            matched: std::ptr::null_mut(),
            matched_whole: false,
        }
    }

    /// What `InitMaterializedSRF` does, with the tuple store in the backend's result pool when
    /// it is free ([`result_memory`]) instead of the per-query context: `None` (nothing done)
    /// for any caller it would raise an ERROR for, so the caller can let it raise its own.
    ///
    /// Why: the per-query context is made anew for every query and grows its blocks by
    /// doubling; a page of `es.read_all` (docs/reference.md §3) fills blocks the C library
    /// maps afresh, or takes from the top of the heap, and gives back to the kernel when the
    /// query ends, so every call faulted its result's pages in anew (under 8 clients the
    /// kernel's time per call was more than the raw query's whole read). The pool keeps them.
    ///
    /// # Safety
    /// `self.fcinfo` is the call's (`Call::new`'s contract).
    unsafe fn result_store(
        &mut self,
        flags: pg_sys::bits32,
    ) -> Option<(*mut pg_sys::Tuplestorestate, pg_sys::TupleDesc)> {
        // SAFETY: the fcinfo is valid; its resultinfo is read only once it is seen to be a
        // ReturnSetInfo (non-NULL and tagged), and its expression context only once non-NULL.
        unsafe {
            let rsinfo = (*self.fcinfo).resultinfo;
            if rsinfo.is_null() || (*rsinfo).type_ != pg_sys::NodeTag::T_ReturnSetInfo {
                return None;
            }
            let rsinfo = rsinfo.cast::<pg_sys::ReturnSetInfo>();
            let modes = (*rsinfo).allowedModes;
            let expected = flags & pg_sys::MAT_SRF_USE_EXPECTED_DESC as pg_sys::bits32 != 0;
            if modes & pg_sys::SetFunctionReturnMode::SFRM_Materialize as i32 == 0
                || (expected && (*rsinfo).expectedDesc.is_null())
                || flags & !(pg_sys::MAT_SRF_USE_EXPECTED_DESC as pg_sys::bits32) != 0
                || (*rsinfo).econtext.is_null()
            {
                return None;
            }
            let per_query = (*(*rsinfo).econtext).ecxt_per_query_memory;
            let mut desc: pg_sys::TupleDesc = std::ptr::null_mut();
            if !expected {
                let previous = pg_sys::MemoryContextSwitchTo(per_query);
                let class =
                    pg_sys::get_call_result_type(self.fcinfo, std::ptr::null_mut(), &mut desc);
                pg_sys::MemoryContextSwitchTo(previous);
                if class != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE || desc.is_null() {
                    return None;
                }
            }
            let random = modes & pg_sys::SetFunctionReturnMode::SFRM_Materialize_Random as i32 != 0;
            // One guard for the set-up: the closure owns only raw pointers and flags, so an
            // ERROR raised inside skips no Rust value that needs dropping.
            let store = pgrx::pg_sys::ffi::pg_guard_ffi_boundary(|| {
                let previous = pg_sys::MemoryContextSwitchTo(per_query);
                if desc.is_null() {
                    desc = desc_copy_in_setup((*rsinfo).expectedDesc);
                }
                pg_sys::MemoryContextSwitchTo(result_memory(per_query).unwrap_or(per_query));
                let store = tuplestore_begin_heap_in_setup(random, false, pg_sys::work_mem);
                pg_sys::MemoryContextSwitchTo(previous);
                store
            });
            (*rsinfo).returnMode = pg_sys::SetFunctionReturnMode::SFRM_Materialize;
            (*rsinfo).setResult = store;
            (*rsinfo).setDesc = desc;
            Some((store, desc))
        }
    }
}

/// The elements of a `text[]` datum as strings (`None` for a NULL element).
///
/// # Safety
/// `d` is a non-NULL `text[]` datum (possibly toasted) valid for the call.
pub unsafe fn text_array_elements(d: Datum) -> Vec<Option<String>> {
    // SAFETY: the caller's contract; deconstruct_array detoasts the array and returns palloc'd
    // arrays of its elements (text datums into the detoasted copy, valid for the call), each
    // copied into a Rust string.
    unsafe {
        let arr = pg_sys::pg_detoast_datum(d.cast_mut_ptr()).cast::<pg_sys::ArrayType>();
        let mut values: *mut Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n: std::ffi::c_int = 0;
        pg_sys::deconstruct_array(
            arr,
            pg_sys::TEXTOID,
            -1,
            false,
            b'i' as std::ffi::c_char,
            &mut values,
            &mut nulls,
            &mut n,
        );
        (0..n as usize)
            .map(|i| {
                (!*nulls.add(i)).then(|| {
                    let c = pg_sys::text_to_cstring((*values.add(i)).cast_mut_ptr());
                    let text = std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned();
                    pg_sys::pfree(c.cast());
                    text
                })
            })
            .collect()
    }
}

// SAFETY: each declaration is the prototype of PostgreSQL's own function (the one pgrx binds
// with its per-call guard), linked by its C name; they are called only inside the one
// `pg_guard_ffi_boundary` of `Call::result_store`, which turns an ERROR they raise into pgrx's
// error path, over a closure frame that owns only raw pointers.
unsafe extern "C-unwind" {
    /// PostgreSQL's `CreateTupleDescCopy`, bound without pgrx's per-call guard: called only
    /// inside the one guard of `Call::result_store`.
    #[link_name = "CreateTupleDescCopy"]
    fn desc_copy_in_setup(desc: pg_sys::TupleDesc) -> pg_sys::TupleDesc;
    /// PostgreSQL's `tuplestore_begin_heap`, bound without pgrx's per-call guard (as above).
    #[link_name = "tuplestore_begin_heap"]
    fn tuplestore_begin_heap_in_setup(
        random_access: bool,
        inter_xact: bool,
        max_kbytes: std::ffi::c_int,
    ) -> *mut pg_sys::Tuplestorestate;
    /// PostgreSQL's `MemoryContextAlloc`, bound without pgrx's per-call guard (as above).
    #[link_name = "MemoryContextAlloc"]
    fn context_alloc_in_setup(
        context: pg_sys::MemoryContext,
        size: pg_sys::Size,
    ) -> *mut std::ffi::c_void;
    /// PostgreSQL's `MemoryContextRegisterResetCallback`, bound without pgrx's per-call guard
    /// (as above).
    #[link_name = "MemoryContextRegisterResetCallback"]
    fn register_reset_callback_in_setup(
        context: pg_sys::MemoryContext,
        callback: *mut pg_sys::MemoryContextCallback,
    );
    /// PostgreSQL's `AllocSetContextCreateInternal`, bound without pgrx's per-call guard (as
    /// above).
    #[link_name = "AllocSetContextCreateInternal"]
    fn alloc_set_create_in_setup(
        parent: pg_sys::MemoryContext,
        name: *const std::ffi::c_char,
        min_context_size: pg_sys::Size,
        init_block_size: pg_sys::Size,
        max_block_size: pg_sys::Size,
    ) -> pg_sys::MemoryContext;
}

/// The size of the result pool's first block, which stays allocated for the life of the
/// backend: a page of 1,000 events of `es.read_all` fits in it.
const RESULT_POOL_KEEP: usize = 512 * 1024;

thread_local! {
    /// The backend's result pool (NULL until its first use): a memory context under the
    /// backend's top context whose first block ([`RESULT_POOL_KEEP`]) is never freed, only
    /// reset, so its pages stay mapped from one query to the next.
    static RESULT_POOL: Cell<pg_sys::MemoryContext> = const { Cell::new(std::ptr::null_mut()) };
    /// The per-query context the pool is lent to (NULL: the pool is free). Cleared, with the
    /// pool reset, by that context's reset callback ([`result_pool_returned`]).
    static RESULT_POOL_LENT_TO: Cell<pg_sys::MemoryContext> =
        const { Cell::new(std::ptr::null_mut()) };
}

/// The reset callback of the per-query context the pool is lent to: that context is being
/// reset or deleted, so every result the executor read from the pool is gone with it (its
/// stores, slots and nodes lived there), and the pool's memory can serve the next query.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn result_pool_returned(_arg: *mut std::ffi::c_void) {
    let pool = RESULT_POOL.with(Cell::get);
    // SAFETY: the pool was created before it was lent and is never deleted; nothing reads the
    // results it held once the per-query context they were lent for is reset (their readers
    // live in that context: InitMaterializedSRF's contract). Resetting a context never raises.
    unsafe { pg_sys::MemoryContextReset(pool) };
    RESULT_POOL_LENT_TO.with(|l| l.set(std::ptr::null_mut()));
}

/// The memory context a materialized result's tuple store lives in, `None` for the per-query
/// context itself (what InitMaterializedSRF uses).
///
/// The backend's result pool, lent to the per-query context `per_query` until that context
/// is reset or deleted (its reset callback then resets the pool): every result of that query
/// can live there (a rescan's calls too), and the results live exactly as long as they would
/// in the per-query context, whatever reads them (a function scan, a cursor fetched after the
/// function returned, a rescan, a spill to a temporary file past `work_mem` whose buffer is
/// allocated there too). `None` while the pool is lent to another query's context (a cursor
/// still open, a read inside a read): that result stays in its per-query context, as before.
///
/// # Safety
/// `per_query` is the per-query context of a call in progress (a valid context); called only
/// inside the one guard of `Call::result_store` (it calls PostgreSQL unguarded).
unsafe fn result_memory(per_query: pg_sys::MemoryContext) -> Option<pg_sys::MemoryContext> {
    let lent_to = RESULT_POOL_LENT_TO.with(Cell::get);
    if lent_to == per_query {
        return Some(RESULT_POOL.with(Cell::get));
    }
    if !lent_to.is_null() {
        return None;
    }
    let mut pool = RESULT_POOL.with(Cell::get);
    if pool.is_null() {
        // SAFETY: a context under the top context, which lives as long as the backend; its
        // first block is RESULT_POOL_KEEP (no larger than its largest block, as PostgreSQL
        // requires), later blocks grow as the per-query context's do.
        pool = unsafe {
            alloc_set_create_in_setup(
                pg_sys::TopMemoryContext,
                c"event_store result pool".as_ptr(),
                RESULT_POOL_KEEP,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            )
        };
        RESULT_POOL.with(|p| p.set(pool));
    }
    // SAFETY: the callback is allocated in `per_query` itself (valid: the caller's contract)
    // and fully written before it is registered, so it lives exactly as long as the
    // registration; PostgreSQL calls it once, when `per_query` is reset or deleted.
    unsafe {
        let callback = context_alloc_in_setup(
            per_query,
            std::mem::size_of::<pg_sys::MemoryContextCallback>(),
        )
        .cast::<pg_sys::MemoryContextCallback>();
        callback.write(pg_sys::MemoryContextCallback {
            func: Some(result_pool_returned),
            arg: std::ptr::null_mut(),
            next: std::ptr::null_mut(),
        });
        register_reset_callback_in_setup(per_query, callback);
    }
    RESULT_POOL_LENT_TO.with(|l| l.set(per_query));
    Some(pool)
}

/// The memory context of a call in progress (the current memory context of a C function,
/// which PostgreSQL keeps until the function returns): a value built in it lives for `'fc`.
#[derive(Clone, Copy)]
pub struct CallMemory<'fc>(pg_sys::MemoryContext, PhantomData<&'fc ()>);

impl CallMemory<'_> {
    /// The raw context, for the glue that allocates in it.
    pub(in crate::pg) fn raw(self) -> pg_sys::MemoryContext {
        self.0
    }
}

/// A `jsonb[]` value that stays valid for `'a`: an argument of the call, or an array built in
/// the call's memory.
#[derive(Clone, Copy)]
pub struct JsonbArray<'a> {
    array: Datum,
    _call: PhantomData<&'a ()>,
}

impl<'a> JsonbArray<'a> {
    /// A one-dimensional array of jsonb datums built in the call's memory.
    pub fn of(_memory: CallMemory<'a>, jsonb: &[Datum]) -> JsonbArray<'a> {
        let elements: Vec<Option<Datum>> = jsonb.iter().map(|&d| Some(d)).collect();
        JsonbArray {
            array: array_of(
                &elements,
                BuiltinOid::JSONBOID,
                -1,
                false,
                pg_sys::TYPALIGN_INT,
            ),
            _call: PhantomData,
        }
    }

    /// The array datum, as it was passed or built.
    pub fn datum(&self) -> Datum {
        self.array
    }

    /// The elements, or why there are none: the number of dimensions of an array that is not
    /// one-dimensional, the position of the first NULL element.
    pub fn elements(&self) -> Result<Vec<Jsonb<'a>>, NotElements> {
        let mut elems: *mut Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n = 0;
        let array = self.array;
        // The datum is detoasted into the current context (the call's, alive for 'a) and
        // deconstructed into arrays of `n` datums and flags palloc'd there.
        // SAFETY: a jsonb[] datum valid for 'a; both calls run unguarded inside this one guard,
        // whose closure owns only raw pointers and integers (an ERROR skips nothing).
        let ndim = unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                let arr = detoast_in_elements(array.cast_mut_ptr()).cast::<pg_sys::ArrayType>();
                if (*arr).ndim > 1 {
                    return (*arr).ndim;
                }
                deconstruct_array_in_elements(
                    arr,
                    BuiltinOid::JSONBOID.value(),
                    -1,
                    false,
                    pg_sys::TYPALIGN_INT as std::ffi::c_char,
                    &mut elems,
                    &mut nulls,
                    &mut n,
                );
                (*arr).ndim
            })
        };
        if ndim > 1 {
            return Err(NotElements::Dimensions(ndim));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let n = n as usize;
        // SAFETY: deconstruct_array filled `n` datums and flags; each non-NULL element is a
        // jsonb inside the detoasted copy, alive for 'a.
        unsafe {
            let elems = std::slice::from_raw_parts(elems, n);
            let nulls = std::slice::from_raw_parts(nulls, n);
            if let Some(i) = nulls.iter().position(|&null| null) {
                return Err(NotElements::Null(i + 1));
            }
            // One vector of the elements themselves (no intermediate one of options).
            Ok(elems.iter().map(|&d| Jsonb::from_datum(d)).collect())
        }
    }
}

/// Why a `jsonb[]` has no list of elements ([`JsonbArray::elements`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotElements {
    /// The array has this many dimensions (more than one).
    Dimensions(i32),
    /// The element at this 1-based position is NULL.
    Null(usize),
}

// Called only inside the one `pg_guard_ffi_boundary` of `JsonbArray::elements`, whose closure
// owns only raw pointers and integers.
// SAFETY: each declaration is PostgreSQL's own prototype (the one pgrx binds with its per-call
// guard, the same on 15 and 18), linked by its C name.
unsafe extern "C-unwind" {
    /// PostgreSQL's `pg_detoast_datum`, bound without pgrx's per-call guard.
    #[link_name = "pg_detoast_datum"]
    fn detoast_in_elements(datum: *mut pg_sys::varlena) -> *mut pg_sys::varlena;
    /// PostgreSQL's `deconstruct_array`, bound without pgrx's per-call guard.
    #[link_name = "deconstruct_array"]
    #[allow(clippy::too_many_arguments)]
    fn deconstruct_array_in_elements(
        array: *mut pg_sys::ArrayType,
        elmtype: pg_sys::Oid,
        elmlen: std::ffi::c_int,
        elmbyval: bool,
        elmalign: std::ffi::c_char,
        elemsp: *mut *mut Datum,
        nullsp: *mut *mut bool,
        nelemsp: *mut std::ffi::c_int,
    );
}

/// A row type's descriptor, valid for `'a` (while the result or the composite that gave it
/// is): what the store may ask of a row's shape.
#[derive(Clone, Copy)]
pub struct RowType<'a> {
    desc: pg_sys::TupleDesc,
    _valid: PhantomData<&'a ()>,
}

impl RowType<'_> {
    /// # Safety
    /// `desc` must be a valid tuple descriptor for `'a`.
    pub(crate) unsafe fn from_raw<'a>(desc: pg_sys::TupleDesc) -> RowType<'a> {
        RowType {
            desc,
            _valid: PhantomData,
        }
    }

    /// The 0-based position of the live attribute `name`, if the row type has it.
    pub fn attribute(&self, name: &CStr) -> Option<usize> {
        // SAFETY: the descriptor is valid for `'a` (the type's invariant); its attribute array
        // has `natts` entries and their names are NUL-terminated NameData.
        unsafe {
            super::compat::tuple_attrs(self.desc)
                .iter()
                .position(|a| !a.attisdropped && CStr::from_ptr(a.attname.data.as_ptr()) == name)
        }
    }
}

/// What [`ResultSet::set_rewrite`] applies to each row before it is stored.
pub type Rewrite = Box<dyn FnMut(&mut RowValues<'_>) -> Result<(), EventStoreError>>;

/// The deformed values of one row of a known row type, valid while the row is rewritten: the
/// store reads and replaces its columns through typed accessors, each checked against the
/// attribute's type (a mismatch is an internal error, never a misread datum), so a rewrite
/// never handles a raw datum.
pub struct RowValues<'r> {
    desc: pg_sys::TupleDesc,
    values: &'r mut [Datum],
    nulls: &'r mut [bool],
}

impl<'r> RowValues<'r> {
    /// # Safety
    /// `desc` must be valid while the row is, with one attribute per entry of `values` and
    /// `nulls`, and every non-NULL value a valid datum of its attribute's type for as long.
    pub(in crate::pg) unsafe fn new(
        desc: pg_sys::TupleDesc,
        values: &'r mut [Datum],
        nulls: &'r mut [bool],
    ) -> RowValues<'r> {
        RowValues {
            desc,
            values,
            nulls,
        }
    }

    /// The row type.
    pub fn row_type(&self) -> RowType<'_> {
        // SAFETY: the descriptor is valid while the row is (`new`'s contract).
        unsafe { RowType::from_raw(self.desc) }
    }

    /// Whether column `i` (0-based) is NULL.
    pub fn is_null(&self, i: usize) -> bool {
        self.nulls[i]
    }

    /// The type of attribute `i`; an index beyond the row is an internal error.
    fn type_of(&self, i: usize) -> pg_sys::Oid {
        assert!(
            i < self.values.len(),
            "attribute {i} of a row of {}",
            self.values.len()
        );
        // SAFETY: the descriptor has one attribute per value (`new`'s contract); `i` is within.
        unsafe { super::compat::tuple_attrs(self.desc)[i].atttypid }
    }

    fn expect(&self, i: usize, ty: pg_sys::Oid) {
        let actual = self.type_of(i);
        if actual != ty {
            pgrx::error!("event_store: attribute {i} of a row is of type {actual:?}, not {ty:?}");
        }
    }

    /// Column `i` as jsonb (`None` when NULL).
    pub fn jsonb(&self, i: usize) -> Option<Jsonb<'_>> {
        self.expect(i, pg_sys::JSONBOID);
        if self.nulls[i] {
            return None;
        }
        // SAFETY: a non-NULL value of a jsonb attribute (checked above), valid while the row
        // is (`new`'s contract), which the borrow of `self` keeps.
        Some(unsafe { Jsonb::from_datum(self.values[i]) })
    }

    /// Column `i` as text, copied into Rust memory (`None` when NULL).
    pub fn text(&self, i: usize) -> Option<String> {
        self.expect(i, pg_sys::TEXTOID);
        if self.nulls[i] {
            return None;
        }
        // SAFETY: a non-NULL value of a text attribute (checked above), valid while the row is.
        Some(unsafe { text_string(self.values[i]) })
    }

    /// Replaces the jsonb value of column `i` (when not NULL) with what `f` makes of it, if
    /// anything: `f`'s other result, `None` when the column is NULL or `f` kept the value.
    pub fn replace_jsonb<R, E>(
        &mut self,
        i: usize,
        f: impl for<'x> FnOnce(Jsonb<'x>) -> Result<Option<(Jsonb<'x>, R)>, E>,
    ) -> Result<Option<R>, E> {
        self.expect(i, pg_sys::JSONBOID);
        if self.nulls[i] {
            return Ok(None);
        }
        // SAFETY: a non-NULL value of a jsonb attribute (checked above), valid while the row is
        // (`new`'s contract), which outlasts `f`.
        let value = unsafe { Jsonb::from_datum(self.values[i]) };
        let Some((replaced, r)) = f(value)? else {
            return Ok(None);
        };
        // `f`'s value is the row's or one made in the current memory context, which outlives
        // the row's storing (as the values `set_jsonb_text` makes).
        self.values[i] = replaced.datum();
        Ok(Some(r))
    }

    /// Replaces column `i` with the jsonb value of a JSON text (parsed in the current memory
    /// context, which outlives the row's storing).
    pub fn set_jsonb_text(&mut self, i: usize, json: &str) {
        self.expect(i, pg_sys::JSONBOID);
        self.values[i] = super::jsonb::build::jsonb_from_text(json);
        self.nulls[i] = false;
    }

    /// Replaces column `i` with a text value (built in the current memory context).
    pub fn set_text(&mut self, i: usize, value: &str) {
        self.expect(i, pg_sys::TEXTOID);
        self.values[i] = text_datum(value);
        self.nulls[i] = false;
    }

    /// Replaces column `i` with an integer.
    pub fn set_i32(&mut self, i: usize, value: i32) {
        self.expect(i, pg_sys::INT4OID);
        self.values[i] = Datum::from(value);
        self.nulls[i] = false;
    }

    /// Makes column `i` NULL.
    pub fn set_null(&mut self, i: usize) {
        self.type_of(i);
        self.nulls[i] = true;
    }
}

/// The Rust string of a text datum.
///
/// # Safety
/// `d` must be a valid, non-NULL text datum.
pub(in crate::pg) unsafe fn text_string(d: Datum) -> String {
    // SAFETY: the caller's contract; text_to_cstring detoasts and copies into a palloc'd C
    // string, copied again here and freed.
    unsafe {
        let c = pg_sys::text_to_cstring(d.cast_mut_ptr());
        let s = CStr::from_ptr(c).to_string_lossy().into_owned();
        pg_sys::pfree(c.cast());
        s
    }
}

/// Where a materialized set-returning call puts its rows (see [`Call::materialize`]).
pub struct ResultSet {
    store: *mut pg_sys::Tuplestorestate,
    desc: pg_sys::TupleDesc,
    natts: usize,
    /// Applied to each row first (upcasting), in `scratch`, which is reset after each row.
    rewrite: Option<(Rewrite, pg_sys::MemoryContext)>,
    /// The rewrite's first error: no row is stored after it.
    failed: Option<EventStoreError>,
    /// The last descriptor whose rows [`ResultSet::put_row_of`] found to match this result's
    /// attributes (NULL: none yet), so a scan checks its shape once, not row by row.
    matched: pg_sys::TupleDesc,
    /// Whether the result's row type has no dropped attribute (set with `matched`): a stored
    /// tuple of a matching relation is then a row of the result as it is.
    matched_whole: bool,
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

    /// The row type of the rows.
    pub fn row_type(&self) -> RowType<'_> {
        // SAFETY: the result's descriptor lives in the per-query context, longer than `self`.
        unsafe { RowType::from_raw(self.desc) }
    }

    /// Rewrites every row put from now on with `rewrite` (its allocations freed row by row);
    /// its first error stops the result ([`ResultSet::take_error`]).
    pub fn set_rewrite(&mut self, rewrite: Rewrite) {
        // SAFETY: a child of the current context (the call's), deleted with it.
        let scratch = unsafe {
            pg_sys::AllocSetContextCreateExtended(
                pg_sys::CurrentMemoryContext,
                c"event_store row rewrite".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            )
        };
        self.rewrite = Some((rewrite, scratch));
    }

    /// The rewrite's error, if it failed (the rows before it are stored, none after).
    pub fn take_error(&mut self) -> Result<(), EventStoreError> {
        self.failed.take().map_or(Ok(()), Err)
    }

    /// Appends a row of a relation's tuple (its deformed `values` and `nulls`, of `desc`),
    /// when `desc`'s attributes are this result's, type for type (dropped ones dropped in
    /// both); `false` (nothing stored) when they are not. The shape is compared once per
    /// descriptor: a native scan's rows all share its relation's.
    ///
    /// # Safety
    /// `desc` must be a valid descriptor with one attribute per entry of `values` and
    /// `nulls`, each non-NULL value a valid datum of its attribute's type.
    pub(in crate::pg) unsafe fn put_row_of(
        &mut self,
        desc: pg_sys::TupleDesc,
        values: &[Datum],
        nulls: &[bool],
    ) -> bool {
        // SAFETY: the caller's contract.
        if values.len() != self.natts || !unsafe { self.matches(desc) } {
            return false;
        }
        // SAFETY: the values are of `desc`'s attributes (the caller's contract), which are this
        // result's, type for type (checked above or for an earlier row of the same `desc`);
        // a dropped attribute's value is NULL in the deformed tuple.
        unsafe { self.put(values, nulls) };
        true
    }

    /// Whether `desc`'s attributes are this result's, type for type (dropped ones dropped in
    /// both), compared once per descriptor.
    ///
    /// # Safety
    /// `desc` must be a valid descriptor.
    pub(in crate::pg) unsafe fn matches(&mut self, desc: pg_sys::TupleDesc) -> bool {
        if desc == self.matched {
            return true;
        }
        // SAFETY: both descriptors are valid (the caller's contract; the result's lives in the
        // per-query context, longer than `self`).
        let (theirs, ours) = unsafe {
            (
                super::compat::tuple_attrs(desc),
                super::compat::tuple_attrs(self.desc),
            )
        };
        if theirs.len() != ours.len()
            || theirs.iter().zip(ours.iter()).any(|(t, o)| {
                t.attisdropped != o.attisdropped || (!o.attisdropped && t.atttypid != o.atttypid)
            })
        {
            return false;
        }
        self.matched = desc;
        self.matched_whole = ours.iter().all(|a| !a.attisdropped);
        true
    }

    /// Appends a relation's stored tuple as it is (one copy, no deforming and forming again),
    /// when that gives exactly the row [`ResultSet::put_row_of`] would store: no rewrite, the
    /// relation's attributes this result's with none dropped, and the tuple holding every
    /// attribute (a tuple older than an added column would need the relation's missing
    /// values, which the result's descriptor does not have). `false` (nothing stored)
    /// otherwise: the caller then deforms the tuple and puts its values.
    ///
    /// # Safety
    /// `tuple` must be a valid heap tuple of the relation whose descriptor is `desc`, valid
    /// for the call. Its external TOAST pointers stay pointers, as `put_row_of` stores them.
    pub(in crate::pg) unsafe fn put_tuple_of(
        &mut self,
        desc: pg_sys::TupleDesc,
        tuple: pg_sys::HeapTuple,
    ) -> bool {
        if self.rewrite.is_some() || self.failed.is_some() {
            return false;
        }
        // SAFETY: the caller's contract: a valid descriptor and tuple.
        unsafe {
            if !self.matches(desc) || !self.matched_whole {
                return false;
            }
            let natts = ((*(*tuple).t_data).t_infomask2 as u32 & pg_sys::HEAP_NATTS_MASK) as usize;
            if natts != self.natts {
                return false;
            }
            // tuplestore_puttuple copies the tuple (as a minimal tuple) into the store's own
            // context and never writes through the pointer.
            pg_sys::tuplestore_puttuple(self.store, tuple);
        }
        true
    }

    /// The tuple store and the number of attributes a stored tuple of the relation whose
    /// descriptor is `desc` must hold to be put as it is: `Some` exactly when
    /// [`ResultSet::put_tuple_of`] would store every such tuple as it is (no rewrite, no error,
    /// the relation's attributes this result's with none dropped). For a scan that puts its
    /// rows into the store itself, one guarded stretch per batch of rows (see
    /// `pg::heap`'s batched fill).
    ///
    /// # Safety
    /// `desc` must be a valid descriptor; the store may only be given tuples of that relation
    /// holding exactly the returned number of attributes (`tuplestore_puttuple` copies them).
    pub(in crate::pg) unsafe fn stored_tuples_target(
        &mut self,
        desc: pg_sys::TupleDesc,
    ) -> Option<(*mut pg_sys::Tuplestorestate, usize)> {
        if self.rewrite.is_some() || self.failed.is_some() {
            return None;
        }
        // SAFETY: the caller's contract: a valid descriptor.
        (unsafe { self.matches(desc) } && self.matched_whole).then_some((self.store, self.natts))
    }

    /// Appends a row (copied into the store). The slices must have one entry per attribute.
    ///
    /// # Safety
    /// Each non-NULL value must be a valid datum of its attribute's type.
    pub(in crate::pg) unsafe fn put(&mut self, values: &[Datum], nulls: &[bool]) {
        if self.failed.is_some() {
            return;
        }
        if let Some((rewrite, scratch)) = self.rewrite.as_mut() {
            let (mut v, mut n) = (values.to_vec(), nulls.to_vec());
            let scratch = *scratch;
            // SAFETY: the rewrite runs in the scratch context; the row is copied into the
            // store (put_row) before the context is reset.
            unsafe {
                let previous = pg_sys::MemoryContextSwitchTo(scratch);
                // (the row's values are the caller's, of this result's attributes: the
                // contract of `put`)
                let result = rewrite(&mut RowValues::new(self.desc, &mut v, &mut n));
                pg_sys::MemoryContextSwitchTo(previous);
                match result {
                    Ok(()) => self.put_row(&v, &n),
                    Err(e) => self.failed = Some(e),
                }
                pg_sys::MemoryContextReset(scratch);
            }
            return;
        }
        // SAFETY: the caller's contract.
        unsafe { self.put_row(values, nulls) }
    }

    /// Appends a row of typed values, one per attribute, each checked against its attribute's
    /// type (a mismatch is an internal error, never a misread datum): the safe form of
    /// [`ResultSet::put`] for rows the caller builds itself.
    pub fn put_values(&mut self, row: &[Value<'_>]) {
        // SAFETY: the result's descriptor lives in the per-query context, longer than `self`.
        let attrs = unsafe { super::compat::tuple_attrs(self.desc) };
        assert!(
            row.len() == attrs.len(),
            "a row of {} values for {} attributes",
            row.len(),
            attrs.len()
        );
        let mut values = Vec::with_capacity(row.len());
        let mut nulls = Vec::with_capacity(row.len());
        for (value, attr) in row.iter().zip(attrs) {
            let (expected, datum) = match value {
                Value::Null => (None, Datum::from(0usize)),
                Value::Bool(b) => (Some(pg_sys::BOOLOID), Datum::from(*b)),
                Value::Int4(v) => (Some(pg_sys::INT4OID), Datum::from(*v)),
                Value::Int8(v) => (Some(pg_sys::INT8OID), Datum::from(*v)),
                Value::TimestampTz(v) => (Some(pg_sys::TIMESTAMPTZOID), Datum::from(*v)),
                Value::Text(t) => (Some(pg_sys::TEXTOID), text_datum(t)),
                Value::Uuid(u) => (Some(pg_sys::UUIDOID), uuid_datum(u)),
                Value::Jsonb(j) => (Some(pg_sys::JSONBOID), j.datum()),
                Value::Column(c) => (Some(c.ty), c.datum),
                Value::Object(pairs) => (
                    Some(pg_sys::JSONBOID),
                    super::jsonb::build::jsonb_object(pairs),
                ),
            };
            if let Some(ty) = expected
                && ty != attr.atttypid
            {
                pgrx::error!(
                    "event_store: a value of type {ty:?} for a column of type {:?}",
                    attr.atttypid
                );
            }
            values.push(datum);
            nulls.push(expected.is_none());
        }
        // SAFETY: every non-NULL value was made from a Rust value of its attribute's type
        // (checked above).
        unsafe { self.put(&values, &nulls) }
    }

    /// # Safety
    /// As [`ResultSet::put`].
    unsafe fn put_row(&mut self, values: &[Datum], nulls: &[bool]) {
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

/// A composite value (a row of some row type) valid for `'a`, as pg/ read it from a column it
/// checked to be of a row type.
#[derive(Clone, Copy)]
pub struct Composite<'a> {
    datum: Datum,
    _row: PhantomData<&'a ()>,
}

impl Composite<'_> {
    /// # Safety
    /// `datum` must be a valid non-NULL composite datum for `'a`.
    pub(in crate::pg) unsafe fn new<'a>(datum: Datum) -> Composite<'a> {
        Composite {
            datum,
            _row: PhantomData,
        }
    }

    /// The datum, for the glue that passes it on.
    pub(in crate::pg) fn datum(self) -> Datum {
        self.datum
    }
}

/// One value of a row [`ResultSet::put_values`] stores.
#[derive(Clone, Copy)]
pub enum Value<'a> {
    /// SQL NULL (any type).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int4(i32),
    /// A bigint.
    Int8(i64),
    /// A timestamptz: microseconds since 2000-01-01 UTC, PostgreSQL's own representation.
    TimestampTz(i64),
    /// A text (copied into the row).
    Text(&'a str),
    /// A uuid.
    Uuid(&'a Uuid),
    /// A jsonb value.
    Jsonb(Jsonb<'a>),
    /// A column value pg/ read and checked the type of.
    Column(TypedDatum<'a>),
    /// A jsonb object of these pairs (built with the jsonb builder when the row is stored).
    Object(&'a [(&'a str, event_store_core::shape::Scalar)]),
}

/// A non-NULL datum of a column whose type pg/ checked when it read it, valid for `'a`: a
/// value the store passes on to a result without looking into it.
#[derive(Clone, Copy)]
pub struct TypedDatum<'a> {
    datum: Datum,
    ty: pg_sys::Oid,
    _row: PhantomData<&'a ()>,
}

impl TypedDatum<'_> {
    /// # Safety
    /// `datum` must be a valid non-NULL datum of type `ty` for `'a`.
    pub(in crate::pg) unsafe fn new<'a>(datum: Datum, ty: pg_sys::Oid) -> TypedDatum<'a> {
        TypedDatum {
            datum,
            ty,
            _row: PhantomData,
        }
    }
}

/// Reads a uuid datum (a pointer to 16 bytes).
///
/// # Safety
/// `d` must be a non-null uuid datum.
pub unsafe fn uuid_from_datum(d: Datum) -> Uuid {
    // SAFETY: the caller's contract: a uuid datum points to 16 bytes (alignment 1).
    unsafe { Uuid::from_bytes(*d.cast_mut_ptr::<[u8; 16]>()) }
}

/// A uuid datum in the current memory context.
pub fn uuid_datum(u: &Uuid) -> Datum {
    // SAFETY: a fresh palloc of 16 bytes, fully written before it is handed out.
    unsafe {
        let p = pg_sys::palloc(16).cast::<[u8; 16]>();
        *p = *u.as_bytes();
        Datum::from(p)
    }
}

/// A text datum in the current memory context.
pub fn text_datum(s: &str) -> Datum {
    // SAFETY: cstring_to_text_with_len copies exactly `len` bytes of `s` into a new text.
    unsafe {
        Datum::from(pg_sys::cstring_to_text_with_len(
            s.as_ptr().cast(),
            s.len() as i32,
        ))
    }
}

/// The bigint return value.
pub fn i64_datum(v: i64) -> Datum {
    Datum::from(v)
}

/// The return value of a function that returns a set through its tuple store, or `void`.
pub fn no_value() -> Datum {
    Datum::from(0usize)
}

/// A one-dimensional array datum of `elements` (NULLs allowed) in the current memory context.
/// `ty`, `len`, `byval` and `align` describe the element type (a built-in type's own).
pub fn array_of(
    elements: &[Option<Datum>],
    ty: BuiltinOid,
    len: i16,
    byval: bool,
    align: u8,
) -> Datum {
    let mut values: Vec<Datum> = elements
        .iter()
        .map(|e| e.unwrap_or(Datum::from(0usize)))
        .collect();
    let mut nulls: Vec<bool> = elements.iter().map(Option::is_none).collect();
    let mut dims = [elements.len() as i32];
    let mut lbs = [1];
    // SAFETY: one value and one flag per element, one dimension of `len(elements)` from 1; the
    // type's description comes from the caller (a built-in type's own); construct_md_array
    // copies the values into a new array.
    unsafe {
        Datum::from(pg_sys::construct_md_array(
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
            1,
            dims.as_mut_ptr(),
            lbs.as_mut_ptr(),
            ty.value(),
            len.into(),
            byval,
            align as std::ffi::c_char,
        ))
    }
}

/// The start time of the transaction in progress (timestamptz).
pub fn transaction_start() -> Datum {
    // SAFETY: GetCurrentTransactionStartTimestamp returns a field of the transaction state and
    // cannot raise an ERROR, so it needs no pgrx guard (the append calls it on every call).
    Datum::from(unsafe { transaction_start_unguarded() })
}

/// An event row's by-reference datums, its id (uuid) and its type (text), in the current
/// memory context, made under one pgrx guard instead of one per datum: the append makes them
/// for every event it inserts. With `stream`, also the stream id's datum (the row's
/// `stream_id`), in the same allocation as the id: the append makes it with its first row's
/// datums instead of under a guard of its own.
pub fn event_datums(
    stream: Option<&Uuid>,
    event_id: &Uuid,
    event_type: &str,
) -> (Option<Datum>, Datum, Datum) {
    let id = *event_id.as_bytes();
    let stream = stream.map(|s| *s.as_bytes());
    let (text, len) = (event_type.as_ptr(), event_type.len() as i32);
    // Both allocate in the current context; they run unguarded inside this one guard, whose
    // closure owns only raw pointers, byte arrays and integers, so an ERROR (out of memory)
    // skips nothing.
    // SAFETY: a palloc of 16 bytes per uuid, each fully written before it is handed out;
    // cstring_to_text_with_len copies exactly `len` bytes of `event_type`, alive for the call.
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            let uuids = if stream.is_some() { 2 } else { 1 };
            let p = palloc_in_row(16 * uuids).cast::<[u8; 16]>();
            let stream_at = stream.map(|s| {
                *p.add(1) = s;
                Datum::from(p.add(1))
            });
            *p = id;
            let t = text_in_row(text.cast(), len);
            (stream_at, Datum::from(p), Datum::from(t))
        })
    }
}

// `palloc` and `cstring_to_text_with_len` are called only inside the one guard of
// `event_datums`, whose closure owns only raw pointers and integers;
// `GetCurrentTransactionStartTimestamp` raises no ERROR and is called without a guard.
// SAFETY: each declaration is PostgreSQL's own prototype (the one pgrx binds with its per-call
// guard, the same on 15 and 18), linked by its C name.
unsafe extern "C-unwind" {
    /// PostgreSQL's `palloc`, bound without pgrx's per-call guard.
    #[link_name = "palloc"]
    fn palloc_in_row(size: pg_sys::Size) -> *mut std::ffi::c_void;
    /// PostgreSQL's `cstring_to_text_with_len`, bound without pgrx's per-call guard.
    #[link_name = "cstring_to_text_with_len"]
    fn text_in_row(s: *const std::ffi::c_char, len: std::ffi::c_int) -> *mut pg_sys::text;
    /// PostgreSQL's `GetCurrentTransactionStartTimestamp`, bound without pgrx's per-call guard.
    #[link_name = "GetCurrentTransactionStartTimestamp"]
    fn transaction_start_unguarded() -> pg_sys::TimestampTz;
}

/// A bytea datum (in the current memory context) holding `bytes`.
pub fn bytea_datum(bytes: &[u8]) -> Datum {
    let total = bytes.len() + pg_sys::VARHDRSZ;
    // SAFETY: palloc returns `total` writable bytes: a 4-byte varlena header, then the data.
    unsafe {
        let p = pg_sys::palloc(total).cast::<pg_sys::varlena>();
        pgrx::set_varsize_4b(p, total as i32);
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            p.cast::<u8>().add(pg_sys::VARHDRSZ),
            bytes.len(),
        );
        Datum::from(p)
    }
}

/// The bytes of a bytea datum.
///
/// # Safety
/// `d` must be a valid bytea datum.
pub unsafe fn bytea_bytes(d: Datum) -> Vec<u8> {
    // SAFETY: the caller's contract; the detoasted value's data area is varsize_any_exhdr bytes
    // from vardata_any.
    unsafe {
        let v = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
        let len = pgrx::varsize_any_exhdr(v);
        std::slice::from_raw_parts(pgrx::vardata_any(v).cast::<u8>(), len).to_vec()
    }
}

/// Fills `buf` from PostgreSQL's cryptographically strong source (`pg_strong_random`: OpenSSL's
/// or the kernel's); false when it has none to give.
pub fn strong_random(buf: &mut [u8]) -> bool {
    // SAFETY: writes exactly buf.len() bytes into buf.
    unsafe { pg_sys::pg_strong_random(buf.as_mut_ptr().cast(), buf.len()) }
}
