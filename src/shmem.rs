//! Positions in flight: the shared-memory table that makes `es.read_all` gap-safe (SPEC §3).
//!
//! The trap: global positions come from a sequence, so a writer can draw position 10, a second
//! writer draw 11 and commit first; a reader that returned 11 and paged past it would never see
//! 10. Filtering on transaction ids alone does not close it either, because a position can be
//! drawn before the writer has an xid.
//!
//! Here every backend that draws positions records, under one LWLock and in the same critical
//! section as the draw, the lowest position its transaction holds; the record is cleared by a
//! transaction callback after the commit is visible (or on abort). A reader takes the lock in
//! shared mode, reads the lowest position still in flight in its database, and takes its
//! snapshot before releasing the lock: every position below that bound is then either visible
//! in the snapshot or will never be, and every position drawn later is above it.
//!
//! The table exists only when the library is preloaded (`shared_preload_libraries`); without it
//! appends still work and `es.read_all` says what is missing.

use crate::core::EventStoreError;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, c_void};
use std::ptr;
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

/// Name of the LWLock tranche and key of the shared-memory struct.
const TRANCHE: &CStr = c"event_store";
const SHMEM_KEY: &CStr = c"event_store positions in flight";

/// One backend's entry, indexed by its `pgprocno`.
#[repr(C)]
struct Slot {
    /// Database of the transaction holding positions.
    dboid: AtomicU32,
    /// Lowest position drawn by the backend's open transaction; 0 = none.
    min_position: AtomicI64,
}

#[repr(C)]
struct InFlight {
    lock: *mut pg_sys::LWLock,
    nslots: usize,
    slots: [Slot; 0],
}

static SHARED: AtomicPtr<InFlight> = AtomicPtr::new(ptr::null_mut());
static mut PREV_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;
/// Index of this backend's slot while its transaction holds positions; `NO_SLOT` otherwise.
/// (Backends are single-threaded; an atomic is just the safe way to keep a mutable static.)
static MY_SLOT: AtomicUsize = AtomicUsize::new(NO_SLOT);
const NO_SLOT: usize = usize::MAX;

unsafe extern "C-unwind" {
    /// `commands/sequence.h`, not in pgrx's bindings: `nextval` without the fmgr call.
    fn nextval_internal(relid: pg_sys::Oid, check_permissions: bool) -> i64;
    /// The fmgr entry of `setval`, unwrapped, for `DirectFunctionCall2Coll` (the guarded call).
    #[link_name = "setval_oid"]
    fn setval_oid_fmgr(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// Installs the shared-memory hooks and the transaction callback. Call from `_PG_init` while
/// `shared_preload_libraries` is being processed (in the postmaster, before any fork).
pub fn install_hooks() {
    unsafe {
        PREV_REQUEST_HOOK = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(request_shmem);
        PREV_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(startup_shmem);
        pg_sys::RegisterXactCallback(Some(on_xact_end), ptr::null_mut());
    }
}

/// Regular backends, bgworkers and autovacuum all have `pgprocno < MaxBackends`; the auxiliary
/// processes come after them and never append, but they are counted so no index can overflow.
fn slot_count() -> usize {
    unsafe { pg_sys::MaxBackends as usize + pg_sys::NUM_AUXILIARY_PROCS as usize }
}

fn shmem_size() -> usize {
    std::mem::size_of::<InFlight>() + slot_count() * std::mem::size_of::<Slot>()
}

#[pg_guard]
unsafe extern "C-unwind" fn request_shmem() {
    unsafe {
        if let Some(prev) = PREV_REQUEST_HOOK {
            prev();
        }
        pg_sys::RequestAddinShmemSpace(shmem_size());
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn startup_shmem() {
    unsafe {
        if let Some(prev) = PREV_STARTUP_HOOK {
            prev();
        }
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock; // AddinShmemInitLock
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let shared = pg_sys::ShmemInitStruct(SHMEM_KEY.as_ptr(), shmem_size(), &mut found)
            .cast::<InFlight>();
        if !found {
            ptr::write_bytes(shared.cast::<u8>(), 0, shmem_size());
            (*shared).lock = &raw mut (*pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr())).lock;
            (*shared).nslots = slot_count();
        }
        pg_sys::LWLockRelease(init_lock);
        SHARED.store(shared, Ordering::Release);
    }
}

fn shared() -> Option<&'static InFlight> {
    unsafe { SHARED.load(Ordering::Acquire).as_ref() }
}

fn slots(shared: &InFlight) -> &[Slot] {
    unsafe { std::slice::from_raw_parts(shared.slots.as_ptr(), shared.nslots) }
}

/// Whether the library was preloaded, i.e. whether positions in flight are tracked.
pub fn is_preloaded() -> bool {
    shared().is_some()
}

/// Draws `n` consecutive global positions from `sequence` and returns the first. When preloaded,
/// the draw and the record of the transaction's lowest position happen in one critical section.
pub fn draw_positions(sequence: pg_sys::Oid, n: i64) -> i64 {
    debug_assert!(n >= 1);
    unsafe {
        // Take the sequence's relation lock before the LWLock so nextval never waits under it.
        pg_sys::LockRelationOid(sequence, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let Some(shared) = shared() else {
            return draw(sequence, n);
        };
        let me = (*pg_sys::MyProc).pgprocno as usize;
        pg_sys::LWLockAcquire(shared.lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let first = draw(sequence, n);
        if MY_SLOT.load(Ordering::Relaxed) == NO_SLOT
            && let Some(slot) = slots(shared).get(me)
        {
            slot.dboid
                .store(pg_sys::MyDatabaseId.to_u32(), Ordering::Relaxed);
            slot.min_position.store(first, Ordering::Release);
            MY_SLOT.store(me, Ordering::Relaxed);
        }
        pg_sys::LWLockRelease(shared.lock);
        first
    }
}

/// `nextval`, then for a batch one `setval` that reserves the rest of the block.
unsafe fn draw(sequence: pg_sys::Oid, n: i64) -> i64 {
    unsafe {
        let first = pg_sys::ffi::pg_guard_ffi_boundary(|| nextval_internal(sequence, false));
        if n > 1 {
            pg_sys::DirectFunctionCall2Coll(
                Some(setval_oid_fmgr),
                pg_sys::InvalidOid,
                pg_sys::Datum::from(sequence),
                pg_sys::Datum::from(first + n - 1),
            );
        }
        first
    }
}

/// For `es.read_all`: the lowest position still in flight in this database (exclusive upper
/// bound of what may be returned; `i64::MAX` when none) and a snapshot taken while no position
/// could be drawn. The caller must `UnregisterSnapshot` it.
pub fn read_horizon() -> Result<(i64, pg_sys::Snapshot), EventStoreError> {
    let shared = shared().ok_or(EventStoreError::PreloadRequired {
        function: "es.read_all",
    })?;
    unsafe {
        let db = pg_sys::MyDatabaseId.to_u32();
        pg_sys::LWLockAcquire(shared.lock, pg_sys::LWLockMode::LW_SHARED);
        let horizon = slots(shared)
            .iter()
            .filter_map(|s| {
                let pos = s.min_position.load(Ordering::Acquire);
                (pos != 0 && s.dboid.load(Ordering::Relaxed) == db).then_some(pos)
            })
            .min()
            .unwrap_or(i64::MAX);
        let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot());
        pg_sys::LWLockRelease(shared.lock);
        Ok((horizon, snapshot))
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact_end(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    use pg_sys::XactEvent::*;
    {
        match event {
            XACT_EVENT_PRE_PREPARE if MY_SLOT.load(Ordering::Relaxed) != NO_SLOT => {
                // A prepared transaction's rows become visible in another backend, after this
                // one has moved on; its positions could no longer be tracked.
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "cannot prepare a transaction that appended events",
                    "es.read_all could not keep its gap-safety across PREPARE TRANSACTION."
                );
            }
            XACT_EVENT_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_PARALLEL_ABORT
            | XACT_EVENT_PREPARE => {
                let i = MY_SLOT.swap(NO_SLOT, Ordering::Relaxed);
                if i != NO_SLOT
                    && let Some(shared) = shared()
                {
                    slots(shared)[i].min_position.store(0, Ordering::Release);
                }
            }
            _ => {}
        }
    }
}
