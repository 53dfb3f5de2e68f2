//! Waking the backends that wait for new events (`es.wait`, `es.wait_for_projection`, the
//! database worker) straight from the commit that made the events visible (docs/reference.md §9).
//!
//! Every backend has a slot here, indexed by its `pgprocno`. A waiter writes its filter (the
//! subscription's partition and event types) and then arms the slot with its database; it then
//! looks for events, and only then sleeps on its latch. A transaction that appended records what
//! it appended ([`appended`]: the streams' hashes and a 64-bit mask of the event types); when
//! it ends, after its commit is visible (the positions' transaction callback, which PostgreSQL
//! calls after `ProcArrayEndTransaction`), [`transaction_ended`] swaps the slot of every armed
//! waiter of its database that the events may concern back to 0 and sets that waiter's latch:
//! one scan of the slots and at most one `SetLatch` per waiter, no allocation, no ERROR (it runs
//! in the commit callback, where an ERROR would be a PANIC). A waiter that sleeps through the
//! events of other types or partitions is not woken by them: under a stream of appends it stays
//! asleep, so the scheduler wakes it at once when its own event commits.
//!
//! The one subtlety is the gap-safe horizon: the waiter's event may be committed but still
//! behind a lower position in flight (docs/reference.md §3), whose transaction appended
//! something the waiter does not want. A commit that concerned the waiter therefore leaves its
//! highest position in the slot (`hit`); until a look reads up to that position, the waiter
//! arms in `ANY` mode: the end (commit or abort) of any transaction of its database that held
//! a position below it wakes it (only those can hide it). Once a look read past it, the event was either returned or not one the
//! waiter takes (two types sharing a bit, another stream type).
//!
//! Without the preloaded library there is no segment: waiters sleep their poll interval.

use super::shmem::Segment;
use pgrx::pg_sys;
use std::ffi::{CStr, c_int};
use std::ptr;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

const SHMEM_KEY: &CStr = c"event_store waiters";

/// The armed word's bit that makes any end of a transaction that held positions wake the
/// waiter (see the module's header).
const ANY: u64 = 1;
/// Set in every armed word, so an armed word is never 0.
const ARMED: u64 = 2;

/// One backend's wait, indexed by its `pgprocno`.
#[repr(C)]
struct Slot {
    /// 0 = not waiting; else the database (high 32 bits) with [`ARMED`] and maybe [`ANY`]. A
    /// waker swaps it to 0 before setting the latch: a waiter is woken once per arming.
    armed: AtomicU64,
    /// The waiter's partitions (0 or 1: every stream concerns it) and its partition.
    partitions: AtomicU32,
    partition: AtomicU32,
    /// The mask of the event types it takes ([`type_bit`]); 0 = every type.
    types: AtomicU64,
    /// The highest position appended by the commits that concerned the waiter since it last
    /// looked at this; 0 = none.
    hit: AtomicI64,
    /// In `ANY` mode, the position the waiter's event is at: only the end of a transaction
    /// holding a position below it can make it readable.
    below: AtomicI64,
}

#[repr(C)]
struct Waiters {
    /// Slots in use (so a commit with nobody waiting scans nothing).
    waiting: AtomicU32,
    /// Some backend waited since the cluster started: appends record what they append (before,
    /// they skip it, so a store nobody consumes pays nothing).
    recording: AtomicBool,
    nslots: usize,
    slots: [Slot; 0],
}

static SHARED: AtomicPtr<Waiters> = AtomicPtr::new(ptr::null_mut());

/// The shared-memory segment of the waiters (placed by `crate::pg::shmem`).
pub static SEGMENT: Segment = Segment {
    key: SHMEM_KEY,
    size: shmem_size,
    tranche: None,
    init: init_shared,
    attach: |mem| SHARED.store(mem.cast(), Ordering::Release),
};

/// Every PGPROC has a slot (auxiliary processes included, so no index can overflow).
fn slot_count() -> usize {
    // SAFETY: MaxBackends is set before shmem_request_hook runs and never changes after.
    unsafe { pg_sys::MaxBackends as usize + pg_sys::NUM_AUXILIARY_PROCS as usize }
}

fn shmem_size() -> usize {
    std::mem::size_of::<Waiters>() + slot_count() * std::mem::size_of::<Slot>()
}

/// Sets up the zeroed segment: zeroed atomics are slots nobody waits in.
///
/// # Safety
/// See [`Segment::init`].
unsafe fn init_shared(mem: *mut u8) {
    // SAFETY: Segment::init's contract: the segment is shmem_size() bytes, being initialized
    // under AddinShmemInitLock.
    unsafe { (*mem.cast::<Waiters>()).nslots = slot_count() };
}

fn shared() -> Option<&'static Waiters> {
    // SAFETY: SHARED is null or points to the segment crate::pg::shmem initialized in shared
    // memory, which stays mapped for the life of the process.
    unsafe { SHARED.load(Ordering::Acquire).as_ref() }
}

fn slots(shared: &Waiters) -> &[Slot] {
    // SAFETY: the segment holds `nslots` slots right after the header (shmem_size).
    unsafe { std::slice::from_raw_parts(shared.slots.as_ptr(), shared.nslots) }
}

/// Sets the latch of the backend with `pgprocno` `i`.
fn set_latch(i: usize) {
    // SAFETY: slot i belongs to the PGPROC with pgprocno i (slot_count covers every PGPROC);
    // its latch lives in shared memory for the life of the cluster, and SetLatch on the latch
    // of a process that has exited is harmless. SetLatch raises no ERROR.
    unsafe {
        let proc = (*pg_sys::ProcGlobal).allProcs.add(i);
        pg_sys::SetLatch(&raw mut (*proc).procLatch);
    }
}

/// The bit of an event type in a waiter's mask: one of 64, from 64-bit FNV-1a over its bytes.
/// Two types may share a bit; the waiter is then woken for nothing, never missed.
fn type_bit(event_type: &str) -> u64 {
    let h = event_type.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    1 << (h >> 58)
}

// What this backend's transaction appended (a backend is single-threaded: the atomics are just
// the safe way to keep mutable statics). A superset is harmless (a waiter woken for nothing).

/// Streams remembered per transaction; more make the transaction concern every partition.
const MAX_STREAMS: usize = 8;
/// The event types' mask.
static TX_TYPES: AtomicU64 = AtomicU64::new(0);
/// The streams' hashes (`es.stream_hash`), the first `TX_NSTREAMS`.
static TX_STREAMS: [AtomicU32; MAX_STREAMS] = [const { AtomicU32::new(0) }; MAX_STREAMS];
/// Streams recorded; above [`MAX_STREAMS`]: every partition.
static TX_NSTREAMS: AtomicUsize = AtomicUsize::new(0);
/// Something was appended while nobody waited (and so not recorded): it concerns every waiter.
static TX_UNKNOWN: AtomicBool = AtomicBool::new(false);
/// The highest position appended.
static TX_LAST: AtomicI64 = AtomicI64::new(0);

/// Called by an append after its rows are stored: what the commit may have to wake waiters for.
/// Until a backend first waits it records only its last position (a few loads and stores), and
/// the commit then wakes every waiter that came in between.
pub fn appended<'a>(
    stream_id: &[u8; 16],
    last_position: i64,
    event_types: impl IntoIterator<Item = &'a str>,
) {
    let Some(shared) = shared() else { return };
    if last_position > TX_LAST.load(Ordering::Relaxed) {
        TX_LAST.store(last_position, Ordering::Relaxed);
    }
    // Not `waiting`: consumers come and go between their calls of es.wait, and an append that
    // did not record would wake every waiter that registered before its commit.
    if !shared.recording.load(Ordering::Relaxed) {
        TX_UNKNOWN.store(true, Ordering::Relaxed);
        return;
    }
    let types = event_types.into_iter().fold(0, |m, t| m | type_bit(t));
    TX_TYPES.fetch_or(types, Ordering::Relaxed);
    let hash = event_store_core::subscription::stream_hash(stream_id) as u32;
    let n = TX_NSTREAMS.load(Ordering::Relaxed);
    if n > MAX_STREAMS
        || TX_STREAMS[..n]
            .iter()
            .any(|h| h.load(Ordering::Relaxed) == hash)
    {
        return;
    }
    if n < MAX_STREAMS {
        TX_STREAMS[n].store(hash, Ordering::Relaxed);
    }
    TX_NSTREAMS.store(n + 1, Ordering::Relaxed);
}

/// What the ending transaction appended, taken (and forgotten) at its end.
struct Appended {
    types: u64,
    nstreams: usize,
    unknown: bool,
    last: i64,
}

impl Appended {
    fn take() -> Appended {
        Appended {
            types: TX_TYPES.swap(0, Ordering::Relaxed),
            nstreams: TX_NSTREAMS.swap(0, Ordering::Relaxed),
            unknown: TX_UNKNOWN.swap(false, Ordering::Relaxed),
            last: TX_LAST.swap(0, Ordering::Relaxed),
        }
    }

    /// Whether these events may concern the waiter of `slot` (its filter as written before it
    /// armed).
    fn concerns(&self, slot: &Slot) -> bool {
        if self.unknown {
            return true;
        }
        let types = slot.types.load(Ordering::Relaxed);
        if types != 0 && types & self.types == 0 {
            return false;
        }
        let partitions = slot.partitions.load(Ordering::Relaxed);
        if partitions <= 1 || self.nstreams > MAX_STREAMS {
            return true;
        }
        let partition = slot.partition.load(Ordering::Relaxed);
        TX_STREAMS[..self.nstreams]
            .iter()
            .any(|h| h.load(Ordering::Relaxed) % partitions == partition)
    }
}

/// Called when a transaction that held positions (the lowest: `lowest_position`) in database
/// `db` ends, after its commit is visible (from the transaction callback): wakes the waiters
/// its events concern, and on any end the waiters in `ANY` mode whose event is above its lowest
/// position (their event may have waited behind it). No
/// allocation and no ERROR: it runs where an ERROR would be a PANIC.
pub fn transaction_ended(db: u32, committed: bool, lowest_position: i64) {
    let appended = Appended::take();
    let Some(shared) = shared() else { return };
    // Pairs with the fence of Waiter::arm: either the waiter's look sees this commit, or this
    // load sees the waiter.
    std::sync::atomic::fence(Ordering::SeqCst);
    if shared.waiting.load(Ordering::Relaxed) == 0 {
        return;
    }
    for (i, slot) in slots(shared).iter().enumerate() {
        let word = slot.armed.load(Ordering::Acquire);
        if word == 0 || (word >> 32) as u32 != db {
            continue;
        }
        let concerned = committed && appended.concerns(slot);
        if !concerned && (word & ANY == 0 || lowest_position >= slot.below.load(Ordering::Relaxed))
        {
            continue;
        }
        if concerned {
            // before the swap, so the waiter sees it when it wakes (a hit for a waiter that
            // re-armed meanwhile costs it a few extra looks, never an event)
            slot.hit.fetch_max(appended.last, Ordering::AcqRel);
        }
        if slot
            .armed
            .compare_exchange(word, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            set_latch(i);
        }
    }
}

/// Wakes every waiter of database `db` to look again: the worker moved a checkpoint
/// (`es.wait_for_projection`), or parked events were put back (`es.replay_parked`); neither
/// waits behind a position in flight, so no `hit` is left.
pub fn wake_waiters(db: u32) {
    let Some(shared) = shared() else { return };
    std::sync::atomic::fence(Ordering::SeqCst);
    if shared.waiting.load(Ordering::Relaxed) == 0 {
        return;
    }
    for (i, slot) in slots(shared).iter().enumerate() {
        let word = slot.armed.load(Ordering::Acquire);
        if word != 0
            && (word >> 32) as u32 == db
            && slot
                .armed
                .compare_exchange(word, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            set_latch(i);
        }
    }
}

/// Which appends concern a waiter: a subscription's partition and event types, or everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    partitions: u32,
    partition: u32,
    types: u64,
}

impl Filter {
    /// Every append concerns the waiter (the database worker, `es.wait_for_projection`).
    pub const EVERYTHING: Filter = Filter {
        partitions: 0,
        partition: 0,
        types: 0,
    };

    /// Appends to partition `partition` of `partitions` (by `es.stream_hash`), of the event
    /// types given (`None`: every type).
    pub fn partition<'a>(
        partitions: i32,
        partition: i32,
        event_types: Option<impl IntoIterator<Item = &'a str>>,
    ) -> Filter {
        let types = event_types.map_or(0, |t| t.into_iter().fold(0, |m, t| m | type_bit(t)));
        Filter {
            partitions: partitions.max(0) as u32,
            partition: partition.max(0) as u32,
            // (an empty list gives 0, every type: such a waiter is woken for nothing)
            types,
        }
    }
}

/// The [`Waiter`]s of this backend that hold its slot now (waits can nest). A backend that
/// exits without dropping them (a FATAL does not unwind: SIGTERM in a wait, or in a projection
/// handler's statement) gives the slot and the count back from [`release_at_exit`]; otherwise
/// `waiting` would stay above 0 for good and every commit would scan the slots.
static LIVE: AtomicU32 = AtomicU32::new(0);
/// Whether [`release_at_exit`] is registered in this backend (once).
static EXIT_CALLBACK: AtomicBool = AtomicBool::new(false);

/// Before the backend detaches from shared memory: disarms its slot and takes its live waiters
/// off the count. Only atomics: it runs inside `proc_exit`, where nothing may fail.
unsafe extern "C-unwind" fn release_at_exit(_code: c_int, _arg: pg_sys::Datum) {
    let n = LIVE.swap(0, Ordering::AcqRel);
    if n == 0 {
        return;
    }
    if let Some(shared) = shared() {
        if let Some(slot) = slots(shared).get(super::compat::my_proc_number()) {
            slot.armed.store(0, Ordering::Release);
        }
        shared.waiting.fetch_sub(n, Ordering::AcqRel);
    }
}

/// A registration of this backend as a waiter in its database; dropped, it unregisters. Arm it,
/// look for events, then sleep on the latch: a commit after the arming sets the latch, so no
/// event is slept through.
pub struct Waiter {
    slot: Option<&'static Slot>,
    filter: Filter,
    db: u32,
}

impl Waiter {
    /// Registers this backend (a no-op without the preloaded library: the caller then sleeps
    /// for its poll interval only).
    pub fn new(filter: Filter) -> Waiter {
        let slot = shared().and_then(|shared| {
            let slot = slots(shared).get(super::compat::my_proc_number())?;
            if !EXIT_CALLBACK.swap(true, Ordering::Relaxed) {
                // SAFETY: registers a callback that only touches atomics in shared memory,
                // once per backend (PostgreSQL allows a handful per process).
                unsafe { pg_sys::before_shmem_exit(Some(release_at_exit), pg_sys::Datum::from(0)) };
            }
            LIVE.fetch_add(1, Ordering::AcqRel);
            shared.waiting.fetch_add(1, Ordering::AcqRel);
            if !shared.recording.load(Ordering::Relaxed) {
                shared.recording.store(true, Ordering::Relaxed);
            }
            Some(slot)
        });
        if let Some(slot) = slot {
            slot.hit.store(0, Ordering::Relaxed);
        }
        Waiter {
            slot,
            filter,
            db: super::backend::current_database(),
        }
    }

    /// Arms the wait: the next commit in this database whose events concern the filter sets
    /// this backend's latch.
    pub fn arm(&self) {
        self.arm_word(0);
    }

    /// Arms the wait in `ANY` mode: the next end of any transaction of this database that held
    /// a position below `position` (a commit or an abort) sets this backend's latch.
    pub fn arm_any(&self, position: i64) {
        if let Some(slot) = self.slot {
            slot.below.store(position, Ordering::Relaxed);
        }
        self.arm_word(ANY);
    }

    fn arm_word(&self, mode: u64) {
        let Some(slot) = self.slot else { return };
        // disarmed while the filter is written (a nested waiter of this backend may have
        // written another): a waker never judges by half of one
        slot.armed.store(0, Ordering::Release);
        if mode == 0 {
            slot.below.store(0, Ordering::Relaxed);
        }
        slot.partitions
            .store(self.filter.partitions, Ordering::Relaxed);
        slot.partition
            .store(self.filter.partition, Ordering::Relaxed);
        slot.types.store(self.filter.types, Ordering::Relaxed);
        slot.armed
            .store((u64::from(self.db) << 32) | ARMED | mode, Ordering::Release);
        // Pairs with the fence of transaction_ended: the look that follows sees every commit
        // whose callback did not see this arming.
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// The highest position appended by the commits that concerned the filter since the last
    /// call (0: none); resets it.
    pub fn take_hit(&self) -> i64 {
        self.slot
            .map_or(0, |slot| slot.hit.swap(0, Ordering::AcqRel))
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            slot.armed.store(0, Ordering::Release);
            LIVE.fetch_sub(1, Ordering::AcqRel);
            if let Some(shared) = shared() {
                shared.waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}
