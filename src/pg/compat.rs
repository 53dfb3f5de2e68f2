//! The calls whose signature or existence differs between the PostgreSQL versions the store
//! builds for (`pg15`, `pg18`): each is one function here, so the rest of the glue, and every
//! layer above it, knows no version. Where PostgreSQL 18 changed an API, the 18 version does
//! what PostgreSQL's own code does there.

use pgrx::pg_sys::{self, Oid};
use std::ffi::c_int;

/// The attributes of a tuple descriptor, dropped ones included, in order (PostgreSQL 15: the
/// descriptor's own array, nothing allocated).
///
/// # Safety
/// `desc` must be a valid tuple descriptor that outlives `'a`.
#[cfg(feature = "pg15")]
pub unsafe fn tuple_attrs<'a>(desc: pg_sys::TupleDesc) -> &'a [pg_sys::FormData_pg_attribute] {
    // SAFETY: the caller's contract; the attribute array has `natts` entries.
    unsafe { (*desc).attrs.as_slice((*desc).natts as usize) }
}

/// The attributes of a tuple descriptor, dropped ones included, in order (PostgreSQL 18 keeps
/// them behind its compact attributes: only the accessor is valid).
///
/// # Safety
/// `desc` must be a valid tuple descriptor that outlives `'a`.
#[cfg(feature = "pg18")]
pub unsafe fn tuple_attrs<'a>(desc: pg_sys::TupleDesc) -> Vec<&'a pg_sys::FormData_pg_attribute> {
    // SAFETY: the caller's contract; TupleDescAttr returns the i-th of `natts` attributes.
    unsafe {
        (0..(*desc).natts)
            .map(|i| &*pg_sys::TupleDescAttr(desc, i))
            .collect()
    }
}

/// This backend's index in PostgreSQL's PGPROC array (`MyProc->pgprocno` until 16,
/// `GetNumberFromPGProc(MyProc)` from 17).
pub fn my_proc_number() -> usize {
    #[cfg(feature = "pg15")]
    // SAFETY: MyProc is this backend's PGPROC, set before any extension code runs.
    let n = unsafe { (*pg_sys::MyProc).pgprocno as usize };
    #[cfg(feature = "pg18")]
    // SAFETY: MyProc points into ProcGlobal->allProcs, the array GetNumberFromPGProc indexes.
    let n = unsafe {
        (pg_sys::MyProc as usize - (*pg_sys::ProcGlobal).allProcs as usize)
            / std::mem::size_of::<pg_sys::PGPROC>()
    };
    n
}

/// Counts one heap fetch through `index` in the statistics (`pg_stat_*_indexes.idx_tup_fetch`),
/// as `index_fetch_heap` does for a visible row (`pgstat_count_heap_fetch`): only when the
/// index's statistics entry is set up, which the index AM's first fetch of a scan did
/// (`pgstat_count_index_scan`) unless statistics are off for it. PostgreSQL 16 renamed the
/// counters' fields.
///
/// # Safety
/// `index` is an open index relation that a scan just fetched from.
pub unsafe fn count_heap_fetch(index: pg_sys::Relation) {
    // SAFETY: the caller's contract; a non-NULL `pgstat_info` of an open relation is its
    // pending statistics entry, valid until the transaction ends.
    unsafe {
        let info = (*index).pgstat_info;
        if !info.is_null() {
            #[cfg(feature = "pg15")]
            {
                (*info).t_counts.t_tuples_fetched += 1;
            }
            #[cfg(feature = "pg18")]
            {
                (*info).counts.tuples_fetched += 1;
            }
        }
    }
}

/// `index_beginscan` without instrumentation (an argument PostgreSQL 18 added), under its own
/// pgrx guard.
///
/// # Safety
/// As `index_beginscan`: open relations and a registered snapshot.
pub unsafe fn index_beginscan(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    nkeys: c_int,
    norderbys: c_int,
) -> pg_sys::IndexScanDesc {
    // SAFETY: the caller's contract; the unguarded call runs inside this one guard, whose
    // closure owns only raw pointers and integers.
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            index_beginscan_in_guard(heap, index, snapshot, nkeys, norderbys)
        })
    }
}

// PostgreSQL's `index_beginscan` and `heap_update` bound without pgrx's per-call guard, with
// each version's own signature (18 added an argument to both): called only through
// [`index_beginscan_in_guard`] and [`heap_update_in_guard`], whose callers run inside one
// `pg_guard_ffi_boundary` (see `pg/heap.rs`, the bump of a stream row).
#[cfg(feature = "pg15")]
// SAFETY: PostgreSQL 15's prototypes of both, linked by their C names.
unsafe extern "C-unwind" {
    #[link_name = "index_beginscan"]
    fn index_beginscan_unguarded(
        heap: pg_sys::Relation,
        index: pg_sys::Relation,
        snapshot: pg_sys::Snapshot,
        nkeys: c_int,
        norderbys: c_int,
    ) -> pg_sys::IndexScanDesc;
    #[link_name = "heap_update"]
    fn heap_update_unguarded(
        rel: pg_sys::Relation,
        otid: pg_sys::ItemPointer,
        new: pg_sys::HeapTuple,
        cid: pg_sys::CommandId,
        crosscheck: pg_sys::Snapshot,
        wait: bool,
        tmfd: *mut pg_sys::TM_FailureData,
        lockmode: *mut pg_sys::LockTupleMode::Type,
    ) -> pg_sys::TM_Result::Type;
}

#[cfg(feature = "pg18")]
// SAFETY: PostgreSQL 18's prototypes of both, linked by their C names.
unsafe extern "C-unwind" {
    #[link_name = "index_beginscan"]
    fn index_beginscan_unguarded(
        heap: pg_sys::Relation,
        index: pg_sys::Relation,
        snapshot: pg_sys::Snapshot,
        instrument: *mut pg_sys::IndexScanInstrumentation,
        nkeys: c_int,
        norderbys: c_int,
    ) -> pg_sys::IndexScanDesc;
    #[link_name = "heap_update"]
    #[allow(clippy::too_many_arguments)]
    fn heap_update_unguarded(
        rel: pg_sys::Relation,
        otid: pg_sys::ItemPointer,
        new: pg_sys::HeapTuple,
        cid: pg_sys::CommandId,
        crosscheck: pg_sys::Snapshot,
        wait: bool,
        tmfd: *mut pg_sys::TM_FailureData,
        lockmode: *mut pg_sys::LockTupleMode::Type,
        update_indexes: *mut pg_sys::TU_UpdateIndexes::Type,
    ) -> pg_sys::TM_Result::Type;
}

/// `index_beginscan` without instrumentation (an argument PostgreSQL 18 added), without pgrx's
/// guard around the call.
///
/// # Safety
/// As `index_beginscan`: open relations and a registered snapshot; and the caller runs inside a `pg_guard_ffi_boundary` whose frames
/// up to it own nothing with a destructor: an ERROR longjmps to that guard.
pub unsafe fn index_beginscan_in_guard(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    nkeys: c_int,
    norderbys: c_int,
) -> pg_sys::IndexScanDesc {
    // SAFETY: the caller's contract; the binding has this version's signature.
    unsafe {
        #[cfg(feature = "pg15")]
        let scan = index_beginscan_unguarded(heap, index, snapshot, nkeys, norderbys);
        #[cfg(feature = "pg18")]
        let scan = index_beginscan_unguarded(
            heap,
            index,
            snapshot,
            std::ptr::null_mut(),
            nkeys,
            norderbys,
        );
        scan
    }
}

/// `heap_update`, without pgrx's guard around the call; whether the new tuple needs index
/// entries is read from the tuple itself (`HEAP_ONLY_TUPLE`) by the caller, as on PostgreSQL 15,
/// so the 16+ out-argument that says the same is not used.
///
/// # Safety
/// As `heap_update`, and the caller runs inside a `pg_guard_ffi_boundary` whose frames up to
/// it own nothing with a destructor: an ERROR longjmps to that guard.
#[allow(clippy::too_many_arguments)]
pub unsafe fn heap_update_in_guard(
    rel: pg_sys::Relation,
    otid: pg_sys::ItemPointer,
    new: pg_sys::HeapTuple,
    cid: pg_sys::CommandId,
    wait: bool,
    tmfd: *mut pg_sys::TM_FailureData,
    lockmode: *mut pg_sys::LockTupleMode::Type,
) -> pg_sys::TM_Result::Type {
    // SAFETY: the caller's contract; the binding has this version's signature.
    unsafe {
        #[cfg(feature = "pg15")]
        let tm = heap_update_unguarded(
            rel,
            otid,
            new,
            cid,
            std::ptr::null_mut(),
            wait,
            tmfd,
            lockmode,
        );
        #[cfg(feature = "pg18")]
        let tm = {
            let mut update_indexes = pg_sys::TU_UpdateIndexes::TU_None;
            heap_update_unguarded(
                rel,
                otid,
                new,
                cid,
                std::ptr::null_mut(),
                wait,
                tmfd,
                lockmode,
                &mut update_indexes,
            )
        };
        tm
    }
}

/// A new wait event set for `nevents` events that lives until `FreeWaitEventSet` (in
/// TopMemoryContext, owned by no resource owner: it survives the transaction's end).
pub fn long_lived_wait_event_set(nevents: i32) -> *mut pg_sys::WaitEventSet {
    // CreateWaitEventSet allocates the set in TopMemoryContext (15: the context given;
    // 18: without a resource owner) and opens its epoll descriptor; it raises only on
    // exhaustion, inside the caller's guard.
    // SAFETY: a set in TopMemoryContext the caller owns; it raises only inside the caller's guard.
    unsafe {
        #[cfg(feature = "pg15")]
        let set = pg_sys::CreateWaitEventSet(pg_sys::TopMemoryContext, nevents);
        #[cfg(feature = "pg18")]
        let set = pg_sys::CreateWaitEventSet(std::ptr::null_mut(), nevents);
        set
    }
}

/// `role`'s USAGE on foreign server `server` (an existing one), as `aclcheck_error` takes it.
pub fn foreign_server_usage(server: Oid, role: Oid) -> pg_sys::AclResult::Type {
    // SAFETY: an ACL check of an existing foreign server and a role; it raises nothing.
    unsafe {
        #[cfg(feature = "pg15")]
        let r =
            pg_sys::pg_foreign_server_aclcheck(server, role, pg_sys::ACL_USAGE as pg_sys::AclMode);
        #[cfg(feature = "pg18")]
        let r = pg_sys::object_aclcheck(
            pg_sys::ForeignServerRelationId,
            server,
            role,
            pg_sys::ACL_USAGE as pg_sys::AclMode,
        );
        r
    }
}

/// Whether `role` may execute function `oid`.
pub fn may_execute(oid: Oid, role: Oid) -> bool {
    // SAFETY: an ACL check of a function and a role (the caller checked the function exists);
    // it raises nothing for existing objects.
    unsafe {
        #[cfg(feature = "pg15")]
        let r = pg_sys::pg_proc_aclcheck(oid, role, pg_sys::ACL_EXECUTE as pg_sys::AclMode);
        #[cfg(feature = "pg18")]
        let r = pg_sys::object_aclcheck(
            pg_sys::ProcedureRelationId,
            oid,
            role,
            pg_sys::ACL_EXECUTE as pg_sys::AclMode,
        );
        r == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// Pins the search path: an override path of `pg_catalog` alone on PostgreSQL 15 (no setting
/// is re-assigned, which a `SET search_path` clause would cost on every call); on 18, where
/// override paths are gone, what PostgreSQL 17 does for maintenance operations: a GUC nest
/// level with `RestrictSearchPath()` (`pg_catalog, pg_temp`). Returns what
/// [`unpin_search_path`] takes back, in the reverse order of the pins.
pub fn pin_search_path() -> c_int {
    #[cfg(feature = "pg15")]
    // SAFETY: the override path is copied by PushOverrideSearchPath, so the local may go.
    unsafe {
        let mut pinned = pg_sys::OverrideSearchPath {
            schemas: std::ptr::null_mut(),
            addCatalog: true,
            addTemp: false,
            generation: 0,
        };
        pg_sys::PushOverrideSearchPath(&mut pinned);
        0
    }
    #[cfg(feature = "pg18")]
    // SAFETY: a nest level of its own, closed by unpin_search_path (or by the abort).
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::RestrictSearchPath();
        level
    }
}

/// Undoes [`pin_search_path`] (the last pin still in place).
pub fn unpin_search_path(pin: c_int) {
    #[cfg(feature = "pg15")]
    {
        let _ = pin;
        // SAFETY: pops the path the matching pin pushed (pins are undone in reverse order).
        unsafe { pg_sys::PopOverrideSearchPath() };
    }
    #[cfg(feature = "pg18")]
    // SAFETY: closes the pin's nest level, restoring the search path saved at it; levels are
    // closed in reverse order.
    unsafe {
        pg_sys::AtEOXact_GUC(true, pin);
    }
}

// SAFETY: PostgreSQL's own SIGTERM handler (postgres.c), declared here without pgrx's per-call
// guard: it is only handed to `pqsignal` as a pointer, never called from Rust (a guard has no
// place in a signal handler).
unsafe extern "C-unwind" {
    #[link_name = "die"]
    fn postgres_die(postgres_signal_arg: c_int);
}

/// Installs PostgreSQL's own SIGTERM handler, `die`, in this process, as PostgreSQL's example
/// worker does (`pqsignal` on 15, named `pqsignal_be` in the backend on 18): SIGTERM then sets
/// `ProcDiePending` and the latch, and a statement in progress ends with a FATAL at its next
/// interrupt check.
pub fn die_on_sigterm() {
    #[cfg(feature = "pg15")]
    // SAFETY: `die` is a signal handler; installed at a process's start, before any transaction.
    unsafe {
        pg_sys::pqsignal(pg_sys::SIGTERM as c_int, Some(postgres_die));
    }
    #[cfg(feature = "pg18")]
    // SAFETY: as above.
    unsafe {
        pg_sys::pqsignal_be(pg_sys::SIGTERM as c_int, Some(postgres_die));
    }
}
