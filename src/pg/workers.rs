//! The PostgreSQL side of the store's per-database background workers (SPEC §10, §11): a
//! registry in shared memory of the databases that use the store, the launcher's latch, the
//! list of databases, starting a worker for one database, and whether replicas are connected.
//!
//! Why a launcher: a background worker connects to one database, and the projections of every
//! database must run after a restart without any client. The launcher (a static worker) starts
//! one dynamic worker per database that needs one; what a worker does is in `crate::daemon`.

use super::shmem::Segment;
use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker};
use pgrx::pg_sys;
use std::ffi::CStr;
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
    /// A backend asked for the worker (a projection was created, resumed or reset) and no
    /// worker has seen the request yet: the launcher starts one while it is set, and a worker
    /// clears it when it looks at the projections, so a request that races with a worker's
    /// exit is never lost.
    wanted: AtomicBool,
    /// Process id of the database's worker while it runs; 0 when none. A worker claims it at
    /// start (a second one for the same database exits at once) and clears it when it exits on
    /// its own; left behind by a worker that died, it tells the launcher to start another.
    worker: AtomicI32,
}

#[repr(C)]
struct Registry {
    /// `pgprocno` of the launcher, -1 while none runs.
    launcher: AtomicI32,
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

/// Records that database `db` uses the store and, when `now`, wakes the launcher to start its
/// worker at once. Without the preloaded library this does nothing (and nothing runs
/// projections: `es.create_projection` says so).
pub fn request(db: u32, now: bool) {
    let Some(reg) = registry() else { return };
    let entry = reg
        .entries
        .iter()
        .find(|e| e.dboid.load(Ordering::Acquire) == db);
    let entry = entry.or_else(|| {
        reg.entries.iter().find(|e| {
            e.dboid
                .compare_exchange(0, db, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    });
    match entry {
        Some(e) if now => {
            e.wanted.store(true, Ordering::Release);
            wake_launcher();
        }
        Some(_) => {}
        None => pgrx::log!(
            "event_store: more than {MAX_DATABASES} databases use the store; database {db} gets no worker"
        ),
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

/// Called by the launcher: publishes its latch; returns the databases registered so far and
/// whether a request for their worker is pending.
pub fn launcher_poll() -> Vec<(u32, bool)> {
    let Some(reg) = registry() else {
        return Vec::new();
    };
    // SAFETY: MyProc is the launcher's PGPROC.
    let me = unsafe { (*pg_sys::MyProc).pgprocno };
    reg.launcher.store(me, Ordering::Release);
    reg.entries
        .iter()
        .filter_map(|e| {
            let db = e.dboid.load(Ordering::Acquire);
            (db != 0).then(|| (db, e.wanted.load(Ordering::Acquire)))
        })
        .collect()
}

/// Called by a database's worker before it looks at the projections: whether a request was
/// pending (it is cleared: this look answers it).
pub fn take_request(db: u32) -> bool {
    registry().is_some_and(|reg| {
        reg.entries
            .iter()
            .filter(|e| e.dboid.load(Ordering::Acquire) == db)
            .any(|e| e.wanted.swap(false, Ordering::AcqRel))
    })
}

unsafe extern "C" {
    /// POSIX `kill`: with signal 0 it only asks whether the process exists.
    fn kill(pid: std::ffi::c_int, sig: std::ffi::c_int) -> std::ffi::c_int;
}

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
/// its pid), false when another one runs (the caller exits).
pub fn claim_worker(db: u32) -> bool {
    request(db, false);
    let Some(e) = entry(db) else { return false };
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
            return true;
        }
    }
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

/// Forgets a database (it was dropped, or does not have the extension).
pub fn forget(db: u32) {
    if let Some(reg) = registry() {
        for e in reg
            .entries
            .iter()
            .filter(|e| e.dboid.load(Ordering::Acquire) == db)
        {
            e.wanted.store(false, Ordering::Release);
            let _ = e
                .dboid
                .compare_exchange(db, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// Whether a WAL sender is running (a streaming standby, a logical-replication subscriber or a
/// base backup): then every database that appends needs its watermark written.
pub fn replicas_connected() -> bool {
    // SAFETY: WalSndCtl is set up at startup with max_wal_senders slots; each pid is read
    // without the slot's spinlock, which can only make the answer stale by one iteration.
    unsafe {
        let ctl = pg_sys::WalSndCtl;
        if ctl.is_null() {
            return false;
        }
        let n = pg_sys::max_wal_senders.max(0) as usize;
        (*ctl)
            .walsnds
            .as_slice(n)
            .iter()
            .any(|w| ptr::read_volatile(&w.pid) != 0)
    }
}

/// The databases that accept connections and are not templates, read from the shared catalog
/// `pg_database` (the launcher is connected to no database).
pub fn databases() -> Vec<u32> {
    let mut out = Vec::new();
    // SAFETY: a catalog heap scan inside a transaction of the launcher (connected to no
    // database, so only shared catalogs are read); every tuple is a pg_database row whose fixed
    // part is FormData_pg_database; the scan and the relation are closed before the commit.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        let rel = pg_sys::table_open(
            pg_sys::DatabaseRelationId,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        );
        let scan = pg_sys::table_beginscan_catalog(rel, 0, ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let header = (*tuple).t_data;
            let form = header
                .cast::<u8>()
                .add((*header).t_hoff as usize)
                .cast::<pg_sys::FormData_pg_database>();
            if (*form).datallowconn && !(*form).datistemplate {
                out.push((*form).oid.to_u32());
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::CommitTransactionCommand();
    }
    out
}

/// Registers the launcher. Call from `_PG_init` under `shared_preload_libraries`.
pub fn register_launcher() {
    BackgroundWorkerBuilder::new("event_store launcher")
        .set_type("event_store launcher")
        .set_library("event_store")
        .set_function("es_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

/// Starts the worker of database `db`; `None` when no background worker slot is free
/// (`max_worker_processes`).
pub fn start_database_worker(db: u32) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(&format!("event_store worker for database {db}"))
        .set_type("event_store worker")
        .set_library("event_store")
        .set_function("es_database_worker_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        // the launcher starts another when one dies (see `crashed`); a restart by the
        // postmaster would race with it
        .set_restart_time(None)
        .set_argument(Some(pg_sys::Datum::from(db)))
        .load_dynamic()
        .ok()
}

/// The name of the current role, as projections record who runs their handler.
pub fn outer_user_name() -> String {
    // SAFETY: GetOuterUserId is the session's role outside SECURITY DEFINER functions;
    // GetUserNameFromId returns a palloc'd copy (noerr: NULL for a dropped role).
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), true);
        if name.is_null() {
            return String::new();
        }
        CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}

/// Whether this server is a hot standby (or in crash recovery): readers there cap at the
/// replicated watermark.
pub fn in_recovery() -> bool {
    // SAFETY: a read of shared state, valid in any backend.
    unsafe { pg_sys::RecoveryInProgress() }
}
