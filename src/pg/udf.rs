//! Calling a user's function (a declared aggregate's `evolve` and `check`, an upcaster) through
//! fmgr, and everything that makes it safe to do so from the store's own code (docs/accounts-and-aggregates.md
//! "Aggregates for any domain").
//!
//! - [`UserFn`]: one function, looked up once per statement (`fmgr_info` into the caller's
//!   memory context, so nothing outlives the statement and a function replaced or dropped later
//!   is looked up again next time), called with [`UserFn::call`] for every event. There is no
//!   parsed query per event: the call is the function's own handler (PL/pgSQL's, SQL's, C's).
//! - An ERROR the function raises is caught right at the call with the `sigsetjmp` pgrx itself
//!   uses, and copied whole into a [`RaisedError`]: its SQLSTATE (a user's own `CT001` as much
//!   as a built-in one, which pgrx's guard would turn into XX000), message, DETAIL, HINT and
//!   CONTEXT, which the entry point raises again unchanged once it has left every Rust frame
//!   (`pg/error.rs`). The jump lands in a frame that owns nothing, so no Rust value is skipped.
//! - Every call runs as the role that declared the function, inside a security-restricted
//!   operation (as `REFRESH MATERIALIZED VIEW` runs the view's owner's code); the store's own
//!   reads and writes between calls run as the store.
//! - [`isolated`]: every run of user code is wrapped in an internal subtransaction (as a
//!   PL/pgSQL `EXCEPTION` block is) with a GUC nest level of its own. When the code fails, the
//!   subtransaction's rollback puts back everything it left behind (SPI connections, locks,
//!   buffer pins, settings) before the store's code runs again, so nothing of it leaks into
//!   the caller.
//! - [`Fold`]: the state of a long fold kept in two alternating memory contexts and each call
//!   made in a third that is reset after every event, so replaying a million events costs the
//!   memory of one state.

use super::backend::Memory;
use super::call::{CallMemory, Composite, RowValues};
use super::jsonb::Jsonb;
use event_store_core::RaisedError;
use event_store_core::event::JsonField;
use pgrx::pg_sys::{self, Datum, Oid};
use std::ffi::{CStr, c_int};

/// What [`UserFn::open`] can refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// There is no function with this OID (it was dropped).
    Missing,
    /// The role that runs it may not execute it.
    NotAllowed,
}

/// A user's function ready to be called many times in one statement. Its `FmgrInfo` and call
/// frame live in the memory context that was current at [`UserFn::open`].
pub struct UserFn {
    oid: Oid,
    func: unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> Datum,
    fcinfo: *mut pg_sys::FunctionCallInfoBaseData,
    nargs: usize,
    role: Oid,
    /// Whether its declared result type is jsonb (read at the first [`UserFn::call_jsonb`],
    /// so an evolve, called through [`Fold`], costs no catalog look-up; an OID keeps its types).
    returns_jsonb: Option<bool>,
}

impl UserFn {
    /// Looks the function up for calls with `nargs` non-NULL arguments, each made as `role`
    /// inside a security-restricted operation.
    /// The caller checked its signature when it was declared (an OID keeps its argument and
    /// result types for life).
    pub fn open(oid: Oid, nargs: usize, role: Oid) -> Result<UserFn, OpenError> {
        if !function_exists(oid) {
            return Err(OpenError::Missing);
        }
        if !super::compat::may_execute(oid, role) {
            return Err(OpenError::NotAllowed);
        }
        // SAFETY: fmgr_info fills a palloc0'd FmgrInfo for an existing function (fn_mcxt is the
        // current context, which owns both allocations for as long as this value is used: the
        // statement). The call frame is palloc0'd with room for `nargs` arguments, as
        // LOCAL_FCINFO sizes it, and points at that FmgrInfo.
        unsafe {
            let flinfo =
                pg_sys::palloc0(std::mem::size_of::<pg_sys::FmgrInfo>()).cast::<pg_sys::FmgrInfo>();
            pg_sys::fmgr_info(oid, flinfo);
            let Some(func) = (*flinfo).fn_addr else {
                return Err(OpenError::Missing);
            };
            let fcinfo = pg_sys::palloc0(
                std::mem::size_of::<pg_sys::FunctionCallInfoBaseData>()
                    + std::mem::size_of::<pg_sys::NullableDatum>() * nargs,
            )
            .cast::<pg_sys::FunctionCallInfoBaseData>();
            (*fcinfo).flinfo = flinfo;
            (*fcinfo).fncollation = pg_sys::InvalidOid;
            (*fcinfo).nargs = nargs as i16;
            Ok(UserFn {
                oid,
                func,
                fcinfo,
                nargs,
                role,
                returns_jsonb: None,
            })
        }
    }

    /// The function's OID.
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// Calls the function with `args` (exactly as many as `open` was told, none NULL) as the
    /// role `open` was given, in a security-restricted operation (where PostgreSQL refuses SET
    /// ROLE, SET SESSION AUTHORIZATION and the like, as it does for a materialized view's
    /// owner's code): its result (`None`: it returned NULL), or the ERROR it raised. Call it
    /// inside [`isolated`], whose GUC nest level takes back the settings the code changes.
    pub fn call(&mut self, args: &[Datum]) -> Result<Option<Datum>, RaisedError> {
        assert_eq!(
            args.len(),
            self.nargs,
            "a user function called with the wrong arity"
        );
        // SAFETY: `fcinfo` was allocated by `open` with room for `nargs` arguments and lives
        // as long as `self`; the datums are the caller's, valid during the call. The call
        // itself goes through `call_catching`, whose contract the raw handler satisfies.
        unsafe {
            for (slot, &value) in (*self.fcinfo)
                .args
                .as_mut_slice(self.nargs)
                .iter_mut()
                .zip(args)
            {
                slot.value = value;
                slot.isnull = false;
            }
            (*self.fcinfo).isnull = false;
            (*self.fcinfo).context = std::ptr::null_mut();
            (*self.fcinfo).resultinfo = std::ptr::null_mut();
            let mut user = pg_sys::InvalidOid;
            let mut context: c_int = 0;
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(
                self.role,
                context
                    | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION)
                        as c_int,
            );
            let result = call_catching(self.func, self.fcinfo);
            pg_sys::SetUserIdAndSecContext(user, context);
            let result = result?;
            Ok((!(*self.fcinfo).isnull).then_some(result))
        }
    }
}

/// Whether a function with this OID exists (in the catalog snapshot of the moment).
pub fn function_exists(oid: Oid) -> bool {
    super::security::exists_by_oid(pg_sys::SysCacheIdentifier::PROCOID, oid)
}

/// The function's name with its argument types, as `regprocedure` prints it
/// (`cart.evolve(jsonb,jsonb)`), or its OID when it no longer exists.
pub fn function_name(oid: Oid) -> String {
    if !function_exists(oid) {
        return format!("with OID {}", oid.to_u32());
    }
    // SAFETY: format_procedure of an existing function returns a palloc'd C string.
    unsafe {
        let c = pg_sys::format_procedure(oid);
        let s = CStr::from_ptr(c).to_string_lossy().into_owned();
        pg_sys::pfree(c.cast());
        s
    }
}

/// Calls `func(fcinfo)` and catches an ERROR it raises, copied whole.
///
/// # Safety
/// `fcinfo` must be a call frame set up for `func` (fmgr's contract). The frames between the
/// `sigsetjmp` and the call own nothing that needs dropping (only raw pointers and a `Datum`),
/// so a `longjmp` back over them skips nothing.
pub(super) unsafe fn call_catching(
    func: unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> Datum,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Result<Datum, RaisedError> {
    // SAFETY: the protocol of PG_TRY/PG_CATCH (elog.h), as pgrx's own FFI guard follows it:
    // the exception stack points at our jump buffer during the call and is restored on both
    // paths, as is the error context stack; on the error path the memory context of the
    // caller is made current again before the error data is copied (CopyErrorData refuses to
    // run in ErrorContext), then the error state is flushed: the error is now only data. The
    // caller rolls its subtransaction back (`isolated`) or raises an error itself before doing
    // any further database work.
    unsafe {
        let memory = pg_sys::CurrentMemoryContext;
        let exception_stack = pg_sys::PG_exception_stack;
        let context_stack = pg_sys::error_context_stack;
        let mut result = Datum::from(0usize);
        let out: *mut Datum = &mut result;
        let jumped = cee_scape::call_with_sigsetjmp(false, |jump_buffer| {
            pg_sys::PG_exception_stack = std::ptr::from_ref(jump_buffer)
                .cast_mut()
                .cast::<pg_sys::sigjmp_buf>();
            *out = func(fcinfo);
            0
        });
        pg_sys::PG_exception_stack = exception_stack;
        pg_sys::error_context_stack = context_stack;
        if jumped == 0 {
            return Ok(result);
        }
        pg_sys::CurrentMemoryContext = memory;
        let data = pg_sys::CopyErrorData();
        pg_sys::FlushErrorState();
        let text = |p: *const std::ffi::c_char| {
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        let raised = RaisedError {
            sqlstate: unpack_sqlstate((*data).sqlerrcode),
            message: text((*data).message).unwrap_or_default(),
            detail: text((*data).detail),
            hint: text((*data).hint),
            context: text((*data).context),
        };
        pg_sys::FreeErrorData(data);
        Err(raised)
    }
}

/// SQLSTATE classes a user sees as PostgreSQL raised them even from inside a user's function
/// the store reports as its own error (ES301): operator intervention (57: a cancel, a statement
/// timeout), insufficient resources (53), program limits (54: stack depth), and transaction
/// rollbacks (40: a deadlock, a serialization failure).
pub fn passes_through(sqlstate: &str) -> bool {
    ["57", "53", "54", "40"]
        .iter()
        .any(|class| sqlstate.starts_with(class))
}

/// A composite value rebuilt with `f` applied to its deformed values (a fresh datum in the
/// current memory context); `f`'s error leaves the value as it is.
pub fn rewrite_composite<'a, E>(
    row: Composite<'a>,
    f: impl FnOnce(&mut RowValues<'_>) -> Result<(), E>,
) -> Result<Composite<'a>, E> {
    // SAFETY: `row` is a valid composite datum (the type's invariant); the row type's
    // descriptor is looked up by the datum's own type id and typmod, pinned while the tuple is
    // deformed and formed again, then released; the deformed values are of its attributes,
    // valid while the detoasted tuple is (this call). The result is a composite datum of the
    // same row type, in the current memory context.
    unsafe {
        let header = pg_sys::pg_detoast_datum(row.datum().cast_mut_ptr())
            .cast::<pg_sys::HeapTupleHeaderData>();
        let desc = pg_sys::lookup_rowtype_tupdesc(
            pgrx::heap_tuple_header_get_type_id(header),
            pgrx::heap_tuple_header_get_typmod(header),
        );
        let natts = (*desc).natts as usize;
        let mut tuple = pg_sys::HeapTupleData {
            t_len: pgrx::varsize(header.cast()) as u32,
            t_self: pg_sys::ItemPointerData::default(),
            t_tableOid: pg_sys::InvalidOid,
            t_data: header,
        };
        let mut values = vec![Datum::from(0usize); natts];
        let mut nulls = vec![true; natts];
        pg_sys::heap_deform_tuple(&mut tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        let result = f(&mut RowValues::new(desc, &mut values, &mut nulls)).map(|()| {
            let formed = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            Composite::new(pg_sys::heap_copy_tuple_as_datum(formed, desc))
        });
        pg_sys::DecrTupleDescRefCount(desc);
        result
    }
}

/// PostgreSQL's `unpack_sql_state`: five characters, six bits each.
fn unpack_sqlstate(code: c_int) -> String {
    (0..5)
        .map(|i| char::from(((code >> (6 * i)) & 0x3F) as u8 + b'0'))
        .collect()
}

/// Runs `f`, which calls user functions ([`UserFn::call`]), inside an internal subtransaction
/// with a GUC nest level of its own: released when `f` returns `Ok`, rolled back when it
/// returns `Err` (after an ERROR a call caught, or a result the store refuses), so whatever the
/// user's code left behind (SPI connections, locks, buffer pins, settings) is undone before the
/// store goes on. `f` must close what it opens (scans, snapshots) before it returns, and
/// allocate what it returns in the caller's memory context, which outlives the subtransaction.
///
/// A panic out of `f` (an ERROR raised through pgrx's guard) rolls the subtransaction back and
/// goes on unwinding.
pub fn isolated<R, E>(f: impl FnOnce() -> Result<R, E>) -> Result<R, E> {
    // SAFETY: what a PL/pgSQL EXCEPTION block does (pl_exec.c, exec_stmt_block): the
    // subtransaction is begun first and the caller's memory context made current again, so
    // the rollback closes the GUC nest level opened after it; on success the nest level is
    // closed before the subtransaction is released. Memory context and resource owner are
    // restored on both paths.
    unsafe {
        let memory = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(memory);
        let level = pg_sys::NewGUCNestLevel();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        match &result {
            Ok(Ok(_)) => {
                pg_sys::AtEOXact_GUC(false, level);
                pg_sys::ReleaseCurrentSubTransaction();
            }
            // An ERROR pgrx's guard turned into a panic has been copied and flushed already:
            // the subtransaction is rolled back here, as PL/pgSQL does before it re-throws, or
            // the session would be left inside it.
            Ok(Err(_)) | Err(_) => pg_sys::RollbackAndReleaseCurrentSubTransaction(),
        }
        pg_sys::MemoryContextSwitchTo(memory);
        pg_sys::CurrentResourceOwner = owner;
        match result {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Runs `f`, which calls user functions ([`UserFn::call`]), with a GUC nest level of its own
/// but no subtransaction, for a caller that raises `f`'s error as soon as it returns (an entry
/// point that appends or reads): the transaction's abort then undoes whatever the user's code
/// left behind, and nothing runs in between but the store's own cleanup (closing its scans and
/// relations; the SPI connection is left to the abort, [`super::spi::leave_to_abort`]). It
/// saves a subtransaction per call on the append path. On success the settings the code
/// changed are rolled back.
pub fn guarded<R, E>(f: impl FnOnce() -> Result<R, E>) -> Result<R, E> {
    // SAFETY: a nest level opened here and closed here on success (the code that ran has
    // closed every level it opened itself, as a function's SET clause does); on failure it
    // is left to the abort that follows, which closes every level above the transaction's.
    let level = unsafe { pg_sys::NewGUCNestLevel() };
    let result = f();
    match &result {
        // SAFETY: see above.
        Ok(_) => unsafe { pg_sys::AtEOXact_GUC(false, level) },
        Err(_) => super::spi::leave_to_abort(),
    }
    result
}

impl UserFn {
    /// [`UserFn::call`] with jsonb arguments, for a function declared to return jsonb (an
    /// upcaster, an evolve: checked when it was declared, and here, since a safe jsonb value
    /// must be one): its result as jsonb, in the current memory context, which (as for every
    /// jsonb value read in it) must not be reset while the result is used.
    pub fn call_jsonb<'a>(&mut self, args: &[Jsonb<'a>]) -> Result<Option<Jsonb<'a>>, RaisedError> {
        if self.returns_jsonb.is_none() {
            // SAFETY: a catalog look-up of an existing function's result type (`open` found it).
            let result_type = unsafe { pg_sys::get_func_rettype(self.oid) };
            self.returns_jsonb = Some(result_type == pg_sys::JSONBOID);
        }
        if self.returns_jsonb != Some(true) {
            pgrx::error!(
                "event_store: function {} does not return jsonb",
                function_name(self.oid)
            );
        }
        let datums: Vec<Datum> = args.iter().map(Jsonb::datum).collect();
        let result = self.call(&datums)?;
        // SAFETY: a non-NULL result of a function whose declared result type is jsonb
        // (checked above), which fmgr guarantees a C or PL function returns.
        Ok(result.map(|d| unsafe { Jsonb::from_datum(d) }))
    }
}

/// Why a fold's step failed.
#[derive(Debug)]
pub enum StepError {
    /// The function raised an ERROR.
    Raised(RaisedError),
    /// It returned NULL.
    Null,
    /// It returned something other than a JSON object (its kind, e.g. "an array").
    NotAnObject(&'static str),
}

/// A fold over events with a user's `evolve(state jsonb, event jsonb) RETURNS jsonb`: the
/// state is kept in one of two memory contexts, each call runs in a third, reset after every
/// event, so a fold costs the memory of one state however many events it visits.
pub struct Fold {
    evolve: UserFn,
    state: Datum,
    keep: [pg_sys::MemoryContext; 2],
    current: usize,
    scratch: pg_sys::MemoryContext,
}

impl Fold {
    /// A fold from `initial` (a jsonb datum, copied), under the current memory context (its
    /// contexts are children of it and go with it).
    pub fn new(evolve: UserFn, initial: Datum) -> Fold {
        // SAFETY: three child contexts of the current one; the initial state is copied into
        // the first, so the fold never depends on the caller's datum.
        unsafe {
            let parent = pg_sys::CurrentMemoryContext;
            let make = |name: &'static CStr| {
                pg_sys::AllocSetContextCreateExtended(
                    parent,
                    name.as_ptr(),
                    pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                    pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                    pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
                )
            };
            let keep = [
                make(c"event_store fold state"),
                make(c"event_store fold state"),
            ];
            let scratch = make(c"event_store fold step");
            let state = copy_jsonb_raw(keep[0], initial);
            Fold {
                evolve,
                state,
                keep,
                current: 0,
                scratch,
            }
        }
    }

    /// The evolve function's OID.
    pub fn function(&self) -> Oid {
        self.evolve.oid()
    }

    /// The state so far (valid until the next step or the fold's end).
    pub fn state(&self) -> Datum {
        self.state
    }

    /// The state so far, as jsonb (valid while the fold is borrowed: until its next step).
    pub fn state_jsonb(&self) -> Jsonb<'_> {
        // SAFETY: the fold's state is a jsonb datum it copied and checked (an object), kept in
        // its own context until the next step, which needs `&mut self`.
        unsafe { Jsonb::from_datum(self.state) }
    }

    /// A copy of the state so far in the current memory context (valid after the fold moves on).
    pub fn state_copy(&self) -> Datum {
        // SAFETY: the fold's state is a jsonb datum it copied and checked (an object), valid
        // until its next step; the copy is fresh.
        unsafe { copy_jsonb_raw(pg_sys::CurrentMemoryContext, self.state) }
    }

    /// Runs `f` in the step context (reset at the next step): for a `check` call before the
    /// step, or an upcast of the event.
    pub fn in_step<R>(&mut self, f: impl FnOnce(Datum) -> R) -> R {
        // SAFETY: a switch to the fold's own step context and back.
        unsafe {
            let previous = pg_sys::MemoryContextSwitchTo(self.scratch);
            let r = f(self.state);
            pg_sys::MemoryContextSwitchTo(previous);
            r
        }
    }

    /// Applies one event (a jsonb datum valid during the call).
    pub fn step(&mut self, event: Datum) -> Result<(), StepError> {
        // SAFETY: the call runs in the step context; its result is checked (not NULL, a jsonb
        // object: the declared result type is jsonb) and copied into the other state context
        // before the old state's context and the step context are reset.
        unsafe {
            let previous = pg_sys::MemoryContextSwitchTo(self.scratch);
            let result = self.evolve.call(&[self.state, event]);
            pg_sys::MemoryContextSwitchTo(previous);
            let next = match result {
                Err(e) => return Err(StepError::Raised(e)),
                Ok(None) => return Err(StepError::Null),
                Ok(Some(d)) => d,
            };
            let other = 1 - self.current;
            let copied = copy_jsonb_raw(self.keep[other], next);
            let previous = pg_sys::MemoryContextSwitchTo(self.keep[other]);
            let shape = Jsonb::from_datum(copied).shape();
            pg_sys::MemoryContextSwitchTo(previous);
            if !matches!(shape, JsonField::Object) {
                pg_sys::MemoryContextReset(self.scratch);
                pg_sys::MemoryContextReset(self.keep[other]);
                return Err(StepError::NotAnObject(shape_name(&shape)));
            }
            pg_sys::MemoryContextReset(self.keep[self.current]);
            pg_sys::MemoryContextReset(self.scratch);
            self.state = copied;
            self.current = other;
            Ok(())
        }
    }

    /// Ends the fold: the state, copied into the current memory context; the fold's contexts
    /// are deleted.
    pub fn finish(self) -> Datum {
        // SAFETY: the state is copied out before the contexts holding it are deleted.
        unsafe {
            let state = copy_jsonb_raw(pg_sys::CurrentMemoryContext, self.state);
            pg_sys::MemoryContextDelete(self.keep[0]);
            pg_sys::MemoryContextDelete(self.keep[1]);
            pg_sys::MemoryContextDelete(self.scratch);
            state
        }
    }
}

impl Fold {
    /// [`Fold::finish`] into the call's memory, where the state lives until the call returns.
    pub fn finish_to_call<'m>(self, memory: CallMemory<'m>) -> Jsonb<'m> {
        let state = Memory::from_call(memory).run(|| self.finish());
        // SAFETY: `finish` returns a fresh copy of the fold's state (a jsonb datum), made here
        // in the call's memory, which lives for 'm.
        unsafe { Jsonb::from_datum(state) }
    }
}

/// How a JSON value's kind is named in an error.
pub fn shape_name(shape: &JsonField<'_>) -> &'static str {
    match shape {
        JsonField::Object => "an object",
        JsonField::Array => "an array",
        JsonField::String(_) | JsonField::NotUtf8 => "a string",
        JsonField::Integer(_) | JsonField::Number(_) => "a number",
        JsonField::Bool(_) => "a boolean",
        JsonField::Null => "null",
        JsonField::Absent => "nothing",
    }
}

/// A fresh, untoasted copy of a jsonb datum in a raw context.
///
/// # Safety
/// `d` must be a valid jsonb datum, `context` a live memory context.
unsafe fn copy_jsonb_raw(context: pg_sys::MemoryContext, d: Datum) -> Datum {
    // SAFETY: the caller's contract; pg_detoast_datum_copy always returns a fresh palloc'd
    // copy in the current context, which is `context` during the call.
    unsafe {
        let previous = pg_sys::MemoryContextSwitchTo(context);
        let copy = pg_sys::pg_detoast_datum_copy(d.cast_mut_ptr());
        pg_sys::MemoryContextSwitchTo(previous);
        Datum::from(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_unpack_as_postgres_packs_them() {
        for code in ["CT001", "P0001", "23505", "ES301", "57014"] {
            assert_eq!(
                unpack_sqlstate(super::super::error::make_sqlstate(code)),
                code
            );
        }
    }
}
