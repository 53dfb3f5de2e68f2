//! Positions in flight: the shared-memory table that makes `es.read_all` gap-safe (docs/reference.md §3),
//! and the drawing of global positions.
//!
//! The trap: global positions come from a sequence, so a writer can draw position 10, a second
//! writer draw 11 and commit first; a reader that returned 11 and paged past it would never see
//! 10. Filtering on transaction ids alone does not close it either, because a position can be
//! drawn before the writer has an xid.
//!
//! Here every backend that draws positions records, under one LWLock and in the same critical
//! section as the draw, the lowest position its transaction holds; the record is cleared by a
//! transaction callback after the commit is visible (or on abort). A reader takes the lock in
//! exclusive mode, reads the lowest position still in flight in its database, and takes its
//! snapshot before releasing the lock: every position below that bound is then either visible
//! in the snapshot or will never be, and every position drawn later is above it.
//!
//! Why a one-position draw holds the lock only in shared mode: the proof above needs draws to be
//! excluded by readers, not by each other. While a reader holds the lock exclusively no draw is
//! between its `nextval` and its record; every draw that ended before the reader got the lock
//! has its position recorded (or its transaction ended, and then it is visible in the snapshot
//! taken after, or never will be); every draw that starts after the reader released the lock
//! gets a position above every position drawn before (the sequence's own buffer lock orders
//! concurrent `nextval`s), so the bound still holds for it. Two one-position draws in shared
//! mode only race each other on the sequence, which serializes them itself, and each records
//! its own slot. A draw of a block (`nextval` then `setval` of its last position) or one that
//! moves the sequence past the stored positions must not interleave with another draw, so those
//! take the lock exclusively. Under 8 appending clients on 2 cores the exclusive lock per append
//! made appends queue behind a holder preempted in `nextval` (docs/reference.md §8).
//!
//! The table exists only when the library is preloaded (`shared_preload_libraries`); without it
//! appends still work and `es.read_all` says what is missing.
//!
//! A position is never handed out twice: PostgreSQL 15 does not replicate sequences to a
//! logical-replication subscriber, so after a failover to one the sequence is behind the
//! positions already stored. A backend checks the sequence against the stored positions before
//! its first draw (and before every draw while its database has a subscription, whose apply
//! worker may insert more), and moves the sequence past them.

use super::shmem::{Segment, tranche_lock};
use super::spi::{Connection, RegisteredSnapshot, Stmt};
use event_store_core::EventStoreError;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

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
/// Index of this backend's slot while its transaction holds positions; `NO_SLOT` otherwise.
/// (Backends are single-threaded; an atomic is just the safe way to keep a mutable static.)
static MY_SLOT: AtomicUsize = AtomicUsize::new(NO_SLOT);
const NO_SLOT: usize = usize::MAX;

// SAFETY: each declaration is the prototype of PostgreSQL's own function, the same on 15 and
// 18, linked by its C name; the unguarded ones are called only inside one
// `pg_guard_ffi_boundary` (`nextval_internal` in `next_block`'s, and in `draw_one_in_guard`'s
// with the locks).
unsafe extern "C-unwind" {
    /// `commands/sequence.h`, not in pgrx's bindings: `nextval` without the fmgr call.
    fn nextval_internal(relid: pg_sys::Oid, check_permissions: bool) -> i64;
    /// The fmgr entry of `setval`, unwrapped, for `DirectFunctionCall2Coll` (the guarded call).
    #[link_name = "setval_oid"]
    fn setval_oid_fmgr(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    /// PostgreSQL's `LockRelationOid`, bound without pgrx's per-call guard: called only inside
    /// the one guard of [`draw_one_in_guard`].
    #[link_name = "LockRelationOid"]
    fn lock_relation_in_draw(relid: pg_sys::Oid, lockmode: pg_sys::LOCKMODE);
    /// PostgreSQL's `LWLockAcquire`, bound without pgrx's per-call guard (as above).
    #[link_name = "LWLockAcquire"]
    fn lwlock_acquire_in_draw(lock: *mut pg_sys::LWLock, mode: pg_sys::LWLockMode::Type) -> bool;
    /// PostgreSQL's `LWLockRelease`, bound without pgrx's per-call guard (as above).
    #[link_name = "LWLockRelease"]
    fn lwlock_release_in_draw(lock: *mut pg_sys::LWLock);
}

/// The shared-memory segment of the positions in flight (placed by `crate::pg::shmem`).
pub static SEGMENT: Segment = Segment {
    key: SHMEM_KEY,
    size: shmem_size,
    tranche: Some(TRANCHE),
    init: init_shared,
    attach: |mem| SHARED.store(mem.cast(), Ordering::Release),
};

/// Registers the transaction callback that clears this backend's slot. Call from `_PG_init`
/// under `shared_preload_libraries`, with [`SEGMENT`] installed.
pub fn install_callback() {
    // SAFETY: the callback lives as long as the library (never unloaded).
    unsafe { pg_sys::RegisterXactCallback(Some(on_xact_end), ptr::null_mut()) };
}

/// Regular backends, bgworkers and autovacuum all have `pgprocno < MaxBackends`; the auxiliary
/// processes come after them and never append, but they are counted so no index can overflow.
fn slot_count() -> usize {
    // SAFETY: MaxBackends is set before shmem_request_hook runs and never changes after.
    unsafe { pg_sys::MaxBackends as usize + pg_sys::NUM_AUXILIARY_PROCS as usize }
}

fn shmem_size() -> usize {
    std::mem::size_of::<InFlight>() + slot_count() * std::mem::size_of::<Slot>()
}

/// Sets up the zeroed segment: zeroed atomics are empty slots; the lock is the tranche's.
///
/// # Safety
/// See [`Segment::init`].
unsafe fn init_shared(mem: *mut u8) {
    let shared = mem.cast::<InFlight>();
    // SAFETY: Segment::init's contract: the segment is shmem_size() bytes, being initialized
    // under AddinShmemInitLock after the tranche was requested.
    unsafe {
        (*shared).lock = tranche_lock(TRANCHE);
        (*shared).nslots = slot_count();
    }
}

fn shared() -> Option<&'static InFlight> {
    // SAFETY: SHARED is null or points to the segment crate::pg::shmem initialized in shared
    // memory, which stays mapped for the life of the process.
    unsafe { SHARED.load(Ordering::Acquire).as_ref() }
}

fn slots(shared: &InFlight) -> &[Slot] {
    // SAFETY: the segment holds `nslots` slots right after the header (shmem_size).
    unsafe { std::slice::from_raw_parts(shared.slots.as_ptr(), shared.nslots) }
}

/// OID of `es.global_position_seq`: remembered per backend until a relcache or namespace
/// invalidation (`heap::remembered_relation_oid`), so a dropped and recreated extension is
/// never served a stale OID.
fn position_sequence() -> pg_sys::Oid {
    // Remembered per backend (two syscache searches by name on every append otherwise).
    match super::heap::remembered_relation_oid(super::heap::Remembered::PositionSequence) {
        Some(seq) => seq,
        None => {
            pgrx::error!("event_store: es.global_position_seq is missing; reinstall the extension")
        }
    }
}

/// A draw of `n` global positions for an append, prepared by [`prepare_draw`] (everything but
/// the draw itself: the sequence, and the check of it against the stored positions when one is
/// due), so the draw can run as late as possible: for the common draw, inside the insert's own
/// guarded region ([`Draw::one`]).
pub struct Draw {
    sequence: pg_sys::Oid,
    n: i64,
    stored_max: Option<i64>,
}

/// Prepares the draw of `n` global positions for an append. Before the first draw of this
/// backend (and before every draw while the database has a logical-replication subscription)
/// the sequence is checked against the stored positions, and the draw then moves it past them:
/// it is behind after a failover to a subscriber, and a position must never be handed out
/// twice.
pub fn prepare_draw(conn: &Connection, n: i64) -> Draw {
    register_database();
    let sequence = position_sequence();
    let subscribed = || {
        conn.execute(&SUBSCRIPTIONS, &[])
            .first_i64()
            .is_some_and(|n| n > 0)
    };
    let stored_max = if sequence_checked(subscribed) {
        None
    } else {
        stored_max(conn)
    };
    Draw {
        sequence,
        n,
        stored_max,
    }
}

impl Draw {
    /// Draws the positions (see [`draw_positions`]) and returns the first.
    pub fn draw(self) -> Result<i64, EventStoreError> {
        draw_positions(self.sequence, self.n, self.stored_max)
    }

    /// The common draw (one position, no catch-up, the shared memory there), which can run
    /// inside a caller's guarded region ([`OneDraw::draw_in_guard`]); `None` for any other,
    /// which [`Draw::draw`] does with its own guards.
    pub(in crate::pg) fn one(&self) -> Option<OneDraw> {
        if self.n != 1 || self.stored_max.is_some() {
            return None;
        }
        Some(OneDraw {
            sequence: self.sequence,
            shared: shared()?,
            me: super::compat::my_proc_number(),
        })
    }
}

/// One position's draw without a catch-up, ready to run inside a guarded region.
pub(in crate::pg) struct OneDraw {
    sequence: pg_sys::Oid,
    shared: &'static InFlight,
    me: usize,
}

impl OneDraw {
    /// Draws the position (the sequence's lock, the positions' lock shared, `nextval`, this
    /// backend's slot recorded, the lock released) and returns it, calling PostgreSQL
    /// unguarded; it owns nothing with a destructor and cannot panic.
    ///
    /// # Safety
    /// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor
    /// (an ERROR in `nextval` longjmps to that guard; the abort releases the LWLock).
    pub(in crate::pg) unsafe fn draw_in_guard(&self) -> i64 {
        // SAFETY: the caller's contract; `sequence` is the positions' sequence and `me` this
        // backend's PGPROC number, as `draw_positions` passes them.
        unsafe { draw_one_in_guard(self.sequence, self.shared, self.me) }
    }
}

/// The highest position stored, archived events included, for the check of the sequence (see
/// [`draw`]); marks this backend's sequence checked. Out of the common draw's code.
#[cold]
#[inline(never)]
fn stored_max(conn: &Connection) -> Option<i64> {
    let mut max = conn.execute(&MAX_POSITION, &[]).first_i64();
    // archived events keep their positions: those are taken too
    if super::heap::archive_in_use() {
        let archived = conn.execute(&MAX_ARCHIVED_POSITION, &[]).first_i64();
        max = max.max(archived);
    }
    mark_sequence_checked();
    max
}

/// Draws `n` consecutive global positions from `sequence` and returns the first. When preloaded,
/// the draw and the record of the transaction's lowest position happen in one critical section.
///
/// `stored_max`, when given, is the highest position stored: a first position at or below it
/// means the sequence is behind the log, and it is moved past it (setval) before drawing again.
/// That draw holds the lock exclusively, so every other draw waits and the move can only go
/// forward: every position drawn before it is below the one just drawn. So does a draw of more
/// than one position (`nextval`, then `setval` of the block's last), whose block another draw
/// must not enter.
fn draw_positions(
    sequence: pg_sys::Oid,
    n: i64,
    stored_max: Option<i64>,
) -> Result<i64, EventStoreError> {
    debug_assert!(n >= 1);
    // The common draw, one position without a catch-up, under one pgrx guard.
    if n == 1
        && stored_max.is_none()
        && let Some(shared) = shared()
    {
        let me = super::compat::my_proc_number();
        // After an ERROR the abort releases the LWLock (LWLockReleaseAll), as on the guarded
        // path below.
        // SAFETY: `draw_one_in_guard` runs whole inside this one guard and owns nothing with a
        // destructor (an OID, shared memory, integers; no panic), so an ERROR skips nothing.
        return Ok(unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| draw_one_in_guard(sequence, shared, me))
        });
    }
    draw_locked(sequence, n, stored_max)
}

/// [`draw_positions`] of a block, of a draw with a catch-up, or without the shared memory: out
/// of the common draw's code.
#[cold]
#[inline(never)]
fn draw_locked(
    sequence: pg_sys::Oid,
    n: i64,
    stored_max: Option<i64>,
) -> Result<i64, EventStoreError> {
    // The sequence's relation lock is taken before the LWLock so nextval never waits for a
    // heavyweight lock under it; an ERROR raised by nextval/setval under the LWLock is
    // released by the abort's LWLockReleaseAll.
    // SAFETY: the LWLock is released on every path out; the slot is this backend's pgprocno.
    unsafe {
        pg_sys::LockRelationOid(sequence, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let Some(shared) = shared() else {
            return draw_past(sequence, n, stored_max);
        };
        let me = super::compat::my_proc_number();
        // Shared for one position and no catch-up: see the module's header for why draws need
        // not exclude each other, only readers.
        let mode = if n == 1 && stored_max.is_none() {
            pg_sys::LWLockMode::LW_SHARED
        } else {
            pg_sys::LWLockMode::LW_EXCLUSIVE
        };
        pg_sys::LWLockAcquire(shared.lock, mode);
        let drawn = draw_past(sequence, n, stored_max);
        if let Ok(first) = drawn
            && MY_SLOT.load(Ordering::Relaxed) == NO_SLOT
            && let Some(slot) = slots(shared).get(me)
        {
            slot.dboid
                .store(pg_sys::MyDatabaseId.to_u32(), Ordering::Relaxed);
            slot.min_position.store(first, Ordering::Release);
            MY_SLOT.store(me, Ordering::Relaxed);
        }
        pg_sys::LWLockRelease(shared.lock);
        drawn
    }
}

/// [`draw_positions`] of one position without a catch-up: the sequence's lock, the positions'
/// lock shared, `nextval`, this backend's slot recorded, the lock released; returns the
/// position. Calls PostgreSQL unguarded.
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor;
/// `sequence` is the OID of the positions' sequence, `me` this backend's PGPROC number.
unsafe fn draw_one_in_guard(sequence: pg_sys::Oid, shared: &InFlight, me: usize) -> i64 {
    // SAFETY: the caller's contract; the LWLock is released on the way out (or by the abort's
    // LWLockReleaseAll after an ERROR in nextval).
    unsafe {
        lock_relation_in_draw(sequence, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        lwlock_acquire_in_draw(shared.lock, pg_sys::LWLockMode::LW_SHARED);
        let first = nextval_internal(sequence, false);
        if MY_SLOT.load(Ordering::Relaxed) == NO_SLOT
            && let Some(slot) = slots(shared).get(me)
        {
            slot.dboid
                .store(pg_sys::MyDatabaseId.to_u32(), Ordering::Relaxed);
            slot.min_position.store(first, Ordering::Release);
            MY_SLOT.store(me, Ordering::Relaxed);
        }
        lwlock_release_in_draw(shared.lock);
        first
    }
}

/// [`next_block`], moving the sequence past `stored_max` first when the draw shows it is behind.
///
/// # Safety
/// As for [`next_block`].
unsafe fn draw_past(
    sequence: pg_sys::Oid,
    n: i64,
    stored_max: Option<i64>,
) -> Result<i64, EventStoreError> {
    // SAFETY: the caller's contract.
    unsafe {
        let first = next_block(sequence, n)?;
        match stored_max {
            Some(stored) if first <= stored => {
                set_sequence(sequence, stored);
                next_block(sequence, n)
            }
            _ => Ok(first),
        }
    }
}

/// `nextval`, then for a batch one `setval` that reserves the rest of the block.
///
/// # Safety
/// `sequence` must be the OID of a sequence, locked by the caller.
unsafe fn next_block(sequence: pg_sys::Oid, n: i64) -> Result<i64, EventStoreError> {
    // SAFETY: the caller's contract; both calls are guarded (an ERROR becomes a Rust panic).
    unsafe {
        let first = pg_sys::ffi::pg_guard_ffi_boundary(|| nextval_internal(sequence, false));
        let Some(last) = first.checked_add(n - 1) else {
            return Err(EventStoreError::PositionsExhausted { first, count: n });
        };
        if n > 1 {
            set_sequence(sequence, last);
        }
        Ok(first)
    }
}

/// `setval(sequence, last)`: the next draw returns `last + 1`.
///
/// # Safety
/// `sequence` must be the OID of a sequence.
unsafe fn set_sequence(sequence: pg_sys::Oid, last: i64) {
    // SAFETY: the caller's contract; DirectFunctionCall2Coll is a guarded fmgr call.
    unsafe {
        pg_sys::DirectFunctionCall2Coll(
            Some(setval_oid_fmgr),
            pg_sys::InvalidOid,
            pg_sys::Datum::from(sequence),
            pg_sys::Datum::from(last),
        );
    }
}

/// This backend has registered its database with the workers' registry.
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Registers this backend's database as one that appends (once per backend): while replicas
/// are connected, the launcher keeps a worker writing its watermark.
fn register_database() {
    if !REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: MyDatabaseId is set in every backend that appends.
        super::worker_registry::request(unsafe { pg_sys::MyDatabaseId }.to_u32(), false);
    }
}

/// This backend has checked the sequence against the stored positions since its last
/// subscription change (see [`sequence_checked`]).
static SEQUENCE_CHECKED: AtomicBool = AtomicBool::new(false);
/// Whether this backend's database has a logical-replication subscription.
static SUBSCRIBED: CachedAnswer = CachedAnswer::new();
/// Whether `es.events` is replicated in by a logical-replication subscription of this database.
static EVENTS_REPLICATED_IN: CachedAnswer = CachedAnswer::new();
/// Whether `es.watermark` is replicated in by a logical-replication subscription of this
/// database.
static WATERMARK_REPLICATED_IN: CachedAnswer = CachedAnswer::new();
static CALLBACKS_REGISTERED: AtomicBool = AtomicBool::new(false);

/// A catalog question answered once per backend (0 unknown, 1 yes, 2 no), forgotten whenever
/// `pg_subscription` or `pg_subscription_rel` changes (see [`on_subscription_change`]).
struct CachedAnswer(AtomicU32);

impl CachedAnswer {
    const fn new() -> CachedAnswer {
        CachedAnswer(AtomicU32::new(0))
    }

    fn get(&self, ask: impl FnOnce() -> bool) -> bool {
        register_subscription_callbacks();
        match self.0.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let found = ask();
                self.0.store(if found { 1 } else { 2 }, Ordering::Relaxed);
                found
            }
        }
    }

    fn forget(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subscription_change(
    _arg: pg_sys::Datum,
    _cache: std::ffi::c_int,
    _hash: u32,
) {
    SUBSCRIBED.forget();
    EVENTS_REPLICATED_IN.forget();
    WATERMARK_REPLICATED_IN.forget();
    SEQUENCE_CHECKED.store(false, Ordering::Relaxed);
}

/// Registers [`on_subscription_change`] for the syscaches of `pg_subscription` and
/// `pg_subscription_rel`, once per backend.
fn register_subscription_callbacks() {
    if CALLBACKS_REGISTERED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: registers callbacks that live as long as the library (never unloaded);
    // SUBSCRIPTIONOID and SUBSCRIPTIONRELMAP are the syscaches of pg_subscription and
    // pg_subscription_rel.
    unsafe {
        for cache in [
            pg_sys::SysCacheIdentifier::SUBSCRIPTIONOID,
            pg_sys::SysCacheIdentifier::SUBSCRIPTIONRELMAP,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(on_subscription_change),
                pg_sys::Datum::from(0usize),
            );
        }
    }
}

/// Whether the next draw may trust the sequence without looking at the stored positions: once
/// per backend (the sequence can be behind only after rows arrived without it: a
/// logical-replication apply, or a failover to a subscriber), and never while the database has
/// a subscription (its apply worker may insert rows at any time). `has_subscription` asks the
/// catalog; its answer is cached until `pg_subscription` changes.
fn sequence_checked(has_subscription: impl FnOnce() -> bool) -> bool {
    register_subscription_callbacks();
    SEQUENCE_CHECKED.load(Ordering::Relaxed) && !SUBSCRIBED.get(has_subscription)
}

/// Whether readers here must cap at the replicated watermark because `es.events` is a table of
/// a logical-replication subscription; `ask` queries the catalog when the cached answer is
/// stale. Every read of the log asks, so the answer is cached per backend.
pub fn events_replicated_in(ask: impl FnOnce() -> bool) -> bool {
    EVENTS_REPLICATED_IN.get(ask)
}

/// Whether `es.watermark` is a table of a logical-replication subscription here, cached like
/// [`events_replicated_in`]: asked by every read of the log where `es.events` is replicated in.
pub fn watermark_replicated_in(ask: impl FnOnce() -> bool) -> bool {
    WATERMARK_REPLICATED_IN.get(ask)
}

/// Makes the next draw check the sequence again (a drawn position turned out to be stored).
pub fn forget_sequence_check() {
    SEQUENCE_CHECKED.store(false, Ordering::Relaxed);
}

/// Records that the sequence was just checked (and moved past the stored positions if needed).
fn mark_sequence_checked() {
    SEQUENCE_CHECKED.store(true, Ordering::Relaxed);
}

/// The bound and snapshot of one gap-safe read (`es.read_all`).
pub struct Horizon {
    /// The highest position the read may return: every position up to it is either visible in
    /// the snapshot or will never be (`i64::MAX` when nothing is in flight).
    pub last_readable: i64,
    /// The snapshot taken while no position could be drawn.
    pub snapshot: RegisteredSnapshot,
}

/// For `es.read_all`: the highest readable position (below the lowest position still in flight
/// in this database) and a snapshot taken while no position could be drawn.
pub fn read_horizon(function: &'static str) -> Result<Horizon, EventStoreError> {
    let shared = shared().ok_or(EventStoreError::PreloadRequired { function })?;
    // SAFETY: the lock is the tranche's, held exclusively (one-position draws hold it shared,
    // see the module's header) only across the scan of the slots and the snapshot (neither can
    // raise an ERROR short of running out of memory, and the abort releases the lock then).
    unsafe {
        let db = pg_sys::MyDatabaseId.to_u32();
        pg_sys::LWLockAcquire(shared.lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let lowest_in_flight = lowest_in_flight(shared, db);
        let snapshot = RegisteredSnapshot::latest();
        pg_sys::LWLockRelease(shared.lock);
        Ok(Horizon {
            last_readable: lowest_in_flight.map_or(i64::MAX, |p| p - 1),
            snapshot,
        })
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact_end(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    use pg_sys::XactEvent::*;
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
            super::worker_registry::transaction_ended(matches!(
                event,
                XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT
            ));
            let i = MY_SLOT.swap(NO_SLOT, Ordering::Relaxed);
            if i != NO_SLOT
                && let Some(shared) = shared()
            {
                let lowest = slots(shared)[i].min_position.swap(0, Ordering::AcqRel);
                let committed = matches!(event, XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT);
                // SAFETY: MyDatabaseId is set at connection and never changed in a backend
                // that appends; this is that backend's own transaction.
                let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
                // after the slot is cleared: a woken waiter's horizon no longer counts it
                super::wake::transaction_ended(db, committed, lowest);
                if committed {
                    super::worker_registry::appended(db);
                }
            }
        }
        _ => {}
    }
}

/// For the primary's watermark (`es.watermark`): the highest position at or below
/// `sequence_last` (the sequence's last value, read before the call) below every position still
/// in flight in this database. Every position up to it has committed or never will: a position
/// drawn before `sequence_last` was read is either still recorded here (the draw records it in
/// the same critical section) or its transaction has ended. `None` without the preloaded
/// library.
pub fn watermark_bound(sequence_last: i64) -> Option<i64> {
    let shared = shared()?;
    // SAFETY: the lock is the tranche's, held exclusively (one-position draws hold it shared)
    // across the scan of the slots only.
    unsafe {
        let db = pg_sys::MyDatabaseId.to_u32();
        pg_sys::LWLockAcquire(shared.lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let lowest = lowest_in_flight(shared, db);
        pg_sys::LWLockRelease(shared.lock);
        Some(lowest.map_or(sequence_last, |p| sequence_last.min(p - 1)))
    }
}

fn lowest_in_flight(shared: &InFlight, db: u32) -> Option<i64> {
    slots(shared)
        .iter()
        .filter_map(|s| {
            let pos = s.min_position.load(Ordering::Acquire);
            (pos != 0 && s.dboid.load(Ordering::Relaxed) == db).then_some(pos)
        })
        .min()
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// The highest stored global position (NULL when the log is empty), to check the position
/// sequence against after a failover to a logical-replication subscriber, whose sequence
/// PostgreSQL 15 does not replicate. One backward step of the position index.
pub static MAX_POSITION: Stmt = Stmt::new(
    "MaxPosition",
    c"SELECT max(global_position) FROM es.events",
    &[],
);

/// How many logical-replication subscriptions the current database has.
pub static SUBSCRIPTIONS: Stmt = Stmt::new(
    "Subscriptions",
    c"SELECT count(*) FROM pg_catalog.pg_subscription
                  WHERE subdbid = (SELECT oid FROM pg_catalog.pg_database
                                   WHERE datname = pg_catalog.current_database())",
    &[],
);

/// The highest archived position (NULL when none): a position is never handed out twice.
pub static MAX_ARCHIVED_POSITION: Stmt = Stmt::new(
    "MaxArchivedPosition",
    c"SELECT max(global_position) FROM es.events_archive",
    &[],
);
