//! The registry in shared memory of the databases the store's background workers serve
//! (docs/reference.md §10, §11): for each database its work (projections and retention policies,
//! appends the watermark must cover), its worker's pid, why it waits for a worker, and a
//! database-level command's hold on it; and the launcher's latch.
//!
//! It is the one place backends and workers meet, so it is glue in `pg/`, below everything that
//! uses it: backends write it (the use cases of `store/` ask for a database's worker and read its
//! status, the transaction callback of [`super::positions`] marks commits, the [`super::utility`]
//! hook holds a database), and the workers, the top layer (`workers/`), read and claim it.
//! Registering and starting the workers, and what they do, is in `workers/`; nothing here starts
//! a process.

use super::shmem::Segment;
use pgrx::pg_sys;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, Ordering};
use std::time::Duration;

/// Databases the registry tracks at once; a cluster with more databases that use the store
/// gets workers for the first ones and a LOG line for the others.
pub const MAX_DATABASES: usize = 64;

/// One database that uses the store.
#[repr(C)]
struct Entry {
    /// The database; 0 = free entry.
    dboid: AtomicU32,
    /// A backend asked for the worker (a projection was created, resumed or reset, restored or
    /// copied in) or the launcher asks it to look (a database it has not seen yet) and no worker
    /// has seen the request yet: the launcher starts one while it is set, and a worker clears it
    /// when it looks at the projections, so a request that races with a worker's exit is never
    /// lost.
    wanted: AtomicBool,
    /// Process id of the database's worker while it runs; 0 when none. A worker claims it at
    /// start (a second one for the same database exits at once) and clears it when it exits on
    /// its own; left behind by a worker that died, it tells the launcher to start another.
    worker: AtomicI32,
    /// Projections and retention policies that are not paused, as the database's worker last
    /// counted them (a backend that creates or resumes one sets at least 1): the work that keeps
    /// a worker there.
    projections: AtomicI32,
    /// A transaction that appended committed since the worker last wrote the watermark: while
    /// replicas are connected, the watermark has work.
    appended: AtomicBool,
    /// Why the database waits for a worker: [`WAIT_NONE`], [`WAIT_LIMIT`] or [`WAIT_SLOTS`].
    waiting: AtomicU32,
    /// Process id of a backend running a database-level command on this database (`DROP
    /// DATABASE`, `ALTER DATABASE … RENAME`/`SET TABLESPACE`, `CREATE DATABASE … TEMPLATE`):
    /// no worker starts meanwhile. A holder that died holds nothing.
    held_by: AtomicI32,
    /// The launcher asks the worker to exit after its round: another database waits for its
    /// slot.
    yield_now: AtomicBool,
}

/// Why a database waits for a worker (see `Entry::waiting`).
pub const WAIT_NONE: u32 = 0;
/// `es.max_workers` workers run for other databases.
pub const WAIT_LIMIT: u32 = 1;
/// No background worker slot is free (`max_worker_processes`).
pub const WAIT_SLOTS: u32 = 2;

#[repr(C)]
struct Registry {
    /// `pgprocno` of the launcher, -1 while none runs.
    launcher: AtomicI32,
    /// A database may have appeared (CREATE DATABASE): the launcher reads the list again at once.
    rescan: AtomicBool,
    entries: [Entry; MAX_DATABASES],
}

static REGISTRY: AtomicPtr<Registry> = AtomicPtr::new(ptr::null_mut());

/// The registry's shared-memory segment (placed by `crate::pg::shmem`).
pub static SEGMENT: Segment = Segment {
    key: c"event_store workers",
    size: || std::mem::size_of::<Registry>(),
    tranche: None,
    init: init_registry,
    attach: |mem| REGISTRY.store(mem.cast(), Ordering::Release),
};

/// # Safety
/// See [`Segment::init`].
unsafe fn init_registry(mem: *mut u8) {
    // SAFETY: the segment is zeroed and sized for a Registry; only the launcher field has a
    // non-zero initial value.
    unsafe {
        (*mem.cast::<Registry>())
            .launcher
            .store(-1, Ordering::Relaxed)
    };
}

fn registry() -> Option<&'static Registry> {
    // SAFETY: null or the segment initialized by crate::pg::shmem, mapped for the process' life.
    unsafe { REGISTRY.load(Ordering::Acquire).as_ref() }
}

/// The entry of `db`, made when there is none (a free entry is claimed with every field reset).
fn entry_or_new(db: u32) -> Option<&'static Entry> {
    let reg = registry()?;
    if let Some(e) = entry(db) {
        return Some(e);
    }
    let made = reg.entries.iter().find(|e| {
        e.dboid
            .compare_exchange(0, db, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    });
    if made.is_none() {
        pgrx::log!(
            "event_store: more than {MAX_DATABASES} databases use the store; database {db} gets no worker"
        );
    }
    made
}

/// Records that database `db` uses the store and, when `now`, asks the launcher to start its
/// worker (which looks at the database and stays while it has work). Without the preloaded
/// library this does nothing (and nothing runs projections: `es.create_projection` says so).
pub fn request(db: u32, now: bool) {
    if let Some(e) = entry_or_new(db)
        && now
    {
        e.wanted.store(true, Ordering::Release);
        wake_launcher();
    }
}

/// The database whose projections this backend's transaction changed (0 = none): the worker is
/// asked for when the transaction commits, so it cannot look before the change is visible and
/// leave for want of work.
static AT_COMMIT: AtomicU32 = AtomicU32::new(0);

/// A backend created, resumed, reset or restored a projection of `db`: when its transaction
/// commits, the database's worker is asked for (and kept) at once.
pub fn request_projections(db: u32) {
    AT_COMMIT.store(db, Ordering::Relaxed);
}

/// Called at the end of every transaction (`crate::pg::positions`' callback): after a commit
/// that changed projections, asks for their database's worker.
pub fn transaction_ended(committed: bool) {
    release_holds();
    let db = AT_COMMIT.swap(0, Ordering::Relaxed);
    if committed
        && db != 0
        && let Some(e) = entry_or_new(db)
    {
        e.projections.fetch_max(1, Ordering::AcqRel);
        e.wanted.store(true, Ordering::Release);
        wake_launcher();
    }
}

/// Whether the library is preloaded (the registry exists): projections and the watermark need
/// its workers.
pub fn preloaded() -> bool {
    registry().is_some()
}

fn wake_launcher() {
    let Some(reg) = registry() else { return };
    let procno = reg.launcher.load(Ordering::Acquire);
    if procno >= 0 {
        // SAFETY: the launcher's pgprocno indexes ProcGlobal's PGPROC array; its latch lives in
        // shared memory for the cluster's life (SetLatch on an exited process' latch is
        // harmless).
        unsafe {
            let proc = (*pg_sys::ProcGlobal).allProcs.add(procno as usize);
            pg_sys::SetLatch(&raw mut (*proc).procLatch);
        }
    }
}

/// Asks the launcher to read the list of databases again now (one may have been created).
pub fn ask_rescan() {
    if let Some(reg) = registry() {
        reg.rescan.store(true, Ordering::Release);
        wake_launcher();
    }
}

/// What the launcher knows of one database.
#[derive(Debug, Clone, Copy)]
pub struct Database {
    /// Its OID.
    pub db: u32,
    /// A request for its worker is pending.
    pub wanted: bool,
    /// Its projections that are not paused, as last counted.
    pub projections: i32,
    /// A commit appended since its watermark was last written.
    pub appended: bool,
    /// Its worker runs (or a process claimed it and is alive).
    pub worker_alive: bool,
    /// A backend runs a database-level command on it: no worker may start.
    pub held: bool,
}

/// Called by the launcher: whether a rescan of the databases was asked for (the request is
/// cleared).
pub fn take_rescan() -> bool {
    registry().is_some_and(|reg| reg.rescan.swap(false, Ordering::AcqRel))
}

/// Called by the launcher: publishes its latch; returns the databases registered so far.
pub fn launcher_poll() -> Vec<Database> {
    let Some(reg) = registry() else {
        return Vec::new();
    };
    let me = super::compat::my_proc_number() as i32;
    reg.launcher.store(me, Ordering::Release);
    reg.entries
        .iter()
        .filter_map(|e| {
            let db = e.dboid.load(Ordering::Acquire);
            (db != 0).then(|| Database {
                db,
                wanted: e.wanted.load(Ordering::Acquire),
                projections: e.projections.load(Ordering::Acquire),
                appended: e.appended.load(Ordering::Acquire),
                worker_alive: alive(e.worker.load(Ordering::Acquire)),
                held: alive(e.held_by.load(Ordering::Acquire)),
            })
        })
        .collect()
}

/// Called by a database's worker before it looks at the projections: whether a request was
/// pending (it is cleared: this look answers it).
pub fn take_request(db: u32) -> bool {
    entry(db).is_some_and(|e| e.wanted.swap(false, Ordering::AcqRel))
}

/// Called by a database's worker after each round: how much work keeps it there (projections
/// that are not paused, plus retention policies that are not paused).
pub fn set_projections(db: u32, n: usize) {
    if let Some(e) = entry(db) {
        e.projections
            .store(n.min(i32::MAX as usize) as i32, Ordering::Release);
    }
}

/// Called by a database's worker before it writes the watermark: whether a commit appended
/// since the last time (the flag is cleared; a commit after this sets it again).
pub fn take_appended(db: u32) -> bool {
    entry(db).is_some_and(|e| e.appended.swap(false, Ordering::AcqRel))
}

/// The entry this backend's commits mark, cached (checked against the database each time: an
/// entry is reused after its database is forgotten).
static MY_ENTRY: AtomicPtr<Entry> = AtomicPtr::new(ptr::null_mut());

/// Called after a commit that appended in database `db`: marks the watermark's work and, the
/// first time since the worker last looked, wakes the launcher (which starts a worker only
/// while replicas are connected). One load per commit otherwise.
pub fn appended(db: u32) {
    let cached = MY_ENTRY.load(Ordering::Relaxed);
    // SAFETY: null or an entry of the registry, which lives for the cluster's life.
    let e = match unsafe { cached.as_ref() } {
        Some(e) if e.dboid.load(Ordering::Acquire) == db => e,
        _ => {
            let Some(e) = entry_or_new(db) else { return };
            MY_ENTRY.store(ptr::from_ref(e).cast_mut(), Ordering::Relaxed);
            e
        }
    };
    if !e.appended.load(Ordering::Acquire) && !e.appended.swap(true, Ordering::AcqRel) {
        let worker = e.worker.load(Ordering::Acquire);
        if worker == 0 || !alive(worker) {
            wake_launcher();
        }
    }
}

/// Records why `db` waits for a worker ([`WAIT_NONE`] when it does not).
pub fn set_waiting(db: u32, why: u32) {
    if let Some(e) = entry(db) {
        e.waiting.store(why, Ordering::Release);
    }
}

/// For `es.projections`: the state of `db`'s worker.
pub fn status(db: u32) -> WorkerStatus {
    if registry().is_none() {
        return WorkerStatus::NotPreloaded;
    }
    let Some(e) = entry(db) else {
        return WorkerStatus::Idle;
    };
    let pid = e.worker.load(Ordering::Acquire);
    if pid != 0 && alive(pid) {
        return WorkerStatus::Running(pid);
    }
    match e.waiting.load(Ordering::Acquire) {
        WAIT_LIMIT => WorkerStatus::WaitingForLimit,
        WAIT_SLOTS => WorkerStatus::WaitingForSlot,
        _ => WorkerStatus::Idle,
    }
}

/// The state of a database's worker, as `es.projections` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStatus {
    /// The library is not in `shared_preload_libraries`: no worker can run.
    NotPreloaded,
    /// No worker runs now and none waits (one starts on the next request or commit).
    Idle,
    /// The worker runs, with this pid.
    Running(i32),
    /// `es.max_workers` workers serve other databases.
    WaitingForLimit,
    /// No background worker slot is free (`max_worker_processes`).
    WaitingForSlot,
}

/// The launcher asks `db`'s worker to exit after its current round (another database waits).
pub fn ask_yield(db: u32) {
    if let Some(e) = entry(db) {
        e.yield_now.store(true, Ordering::Release);
        let pid = e.worker.load(Ordering::Acquire);
        if pid > 0 {
            // SAFETY: BackendPidGetProc looks the pid up in the proc array under its lock and
            // returns NULL for a process that is gone; a PGPROC and its latch live in shared
            // memory for the cluster's life, so setting it is harmless even if it exits now.
            unsafe {
                let proc = pg_sys::BackendPidGetProc(pid);
                if !proc.is_null() {
                    pg_sys::SetLatch(&raw mut (*proc).procLatch);
                }
            }
        }
    }
}

/// Called by a database's worker after its round: whether it was asked to yield its slot (the
/// request is cleared).
pub fn take_yield(db: u32) -> bool {
    entry(db).is_some_and(|e| e.yield_now.swap(false, Ordering::AcqRel))
}

unsafe extern "C" {
    /// POSIX `kill`: with signal 0 it only asks whether the process exists.
    fn kill(pid: std::ffi::c_int, sig: std::ffi::c_int) -> std::ffi::c_int;
}

/// POSIX SIGTERM.
const SIGTERM: std::ffi::c_int = 15;

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 sends nothing; it checks that the process exists (the workers are the
    // server's own processes, so permission is never the reason for a failure).
    pid > 0 && unsafe { kill(pid, 0) } == 0
}

fn entry(db: u32) -> Option<&'static Entry> {
    registry()?
        .entries
        .iter()
        .find(|e| e.dboid.load(Ordering::Acquire) == db)
}

/// Called by a database worker at start: true when it is the only worker of `db` (it records
/// its pid), false when another one runs or a database command holds `db` (the caller exits).
pub fn claim_worker(db: u32) -> bool {
    let Some(e) = entry_or_new(db) else {
        return false;
    };
    // SAFETY: MyProcPid is this process' pid.
    let me = unsafe { pg_sys::MyProcPid };
    loop {
        let current = e.worker.load(Ordering::Acquire);
        if current != 0 && current != me && alive(current) {
            return false;
        }
        if e.worker
            .compare_exchange(current, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            break;
        }
    }
    e.waiting.store(WAIT_NONE, Ordering::Release);
    // a database command that took hold before the claim: step aside at once
    if alive(e.held_by.load(Ordering::Acquire)) {
        release_worker(db);
        return false;
    }
    true
}

/// Called by a database worker that exits on its own.
pub fn release_worker(db: u32) {
    if let Some(e) = entry(db) {
        // SAFETY: MyProcPid is this process' pid.
        let me = unsafe { pg_sys::MyProcPid };
        let _ = e
            .worker
            .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// For the launcher: whether the worker of `db` died without clearing its pid (an ERROR or a
/// crash); the pid is cleared so one new worker can claim it.
pub fn crashed(db: u32) -> bool {
    let Some(e) = entry(db) else { return false };
    let pid = e.worker.load(Ordering::Acquire);
    pid != 0
        && !alive(pid)
        && e.worker
            .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
}

/// The databases registered so far.
pub fn registered() -> Vec<u32> {
    registry().map_or_else(Vec::new, |reg| {
        reg.entries
            .iter()
            .map(|e| e.dboid.load(Ordering::Acquire))
            .filter(|&db| db != 0)
            .collect()
    })
}

/// Called by a worker that found no extension in its database: forgets the database unless a
/// request arrived meanwhile (a restore that has just created the extension).
pub fn forget_unless_wanted(db: u32) {
    if entry(db).is_some_and(|e| !e.wanted.load(Ordering::Acquire)) {
        forget(db);
    }
}

/// Forgets a database (it was dropped, or does not have the extension); its entry is free
/// again, every field reset.
pub fn forget(db: u32) {
    if let Some(reg) = registry() {
        for e in reg
            .entries
            .iter()
            .filter(|e| e.dboid.load(Ordering::Acquire) == db)
        {
            e.wanted.store(false, Ordering::Release);
            e.projections.store(0, Ordering::Release);
            e.appended.store(false, Ordering::Release);
            e.waiting.store(WAIT_NONE, Ordering::Release);
            e.yield_now.store(false, Ordering::Release);
            if !alive(e.held_by.load(Ordering::Acquire)) {
                e.held_by.store(0, Ordering::Release);
            }
            let _ = e
                .dboid
                .compare_exchange(db, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// Takes hold of `db` for a database-level command of this backend: no worker starts for it
/// until this backend's transaction ends, and its running worker is told to exit (SIGTERM: a
/// statement in progress ends as a backend's does, its batch rolls back; between rounds it
/// leaves cleanly) and waited for, at most `wait`. Returns false when the store does not know the
/// database (no worker ever served it: nothing to hold).
pub fn hold(db: u32, wait: Duration) -> bool {
    let Some(e) = entry(db) else {
        return false;
    };
    HOLDING.store(true, Ordering::Relaxed);
    // SAFETY: MyProcPid is this process' pid, set at its start and never changed.
    let me = unsafe { pg_sys::MyProcPid };
    e.held_by.store(me, Ordering::Release);
    let pid = e.worker.load(Ordering::Acquire);
    if pid == 0 || !alive(pid) {
        return true;
    }
    // SAFETY: pid is the database's worker, a process of this cluster; SIGTERM asks it to
    // exit (its handler, PostgreSQL's `die`, only sets flags and its latch).
    unsafe { kill(pid, SIGTERM) };
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        let now = e.worker.load(Ordering::Acquire);
        if now != pid || !alive(pid) {
            break;
        }
        pgrx::check_for_interrupts!();
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A database command of this backend's transaction created a database: the launcher reads the
/// list again when the transaction ends.
static RESCAN_AT_END: AtomicBool = AtomicBool::new(false);

/// Asks for a rescan of the databases when this backend's transaction ends.
pub fn rescan_at_transaction_end() {
    RESCAN_AT_END.store(true, Ordering::Relaxed);
}

/// This backend holds a database for a database command (see [`hold`]): only then does the end
/// of its transaction look for holds to release (every commit passes there).
static HOLDING: AtomicBool = AtomicBool::new(false);

/// Ends this backend's holds (at the end of its transaction, committed or not): each held
/// database's worker is asked for again (the launcher starts it only where the database still
/// exists, and it stays only if the database has work).
fn release_holds() {
    if !HOLDING.swap(false, Ordering::Relaxed) && !RESCAN_AT_END.load(Ordering::Relaxed) {
        return;
    }
    let Some(reg) = registry() else { return };
    // SAFETY: MyProcPid is this process' pid.
    let me = unsafe { pg_sys::MyProcPid };
    let mut released = false;
    for e in reg.entries.iter() {
        if e.held_by
            .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            e.wanted.store(true, Ordering::Release);
            released = true;
        }
    }
    // a held database may be gone (DROP DATABASE): the launcher reads the list before it
    // starts anything
    if RESCAN_AT_END.swap(false, Ordering::Relaxed) || released {
        reg.rescan.store(true, Ordering::Release);
        wake_launcher();
    }
}
