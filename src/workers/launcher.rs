//! The launcher (docs/reference.md §10, §11): one static background worker per cluster, on a
//! primary, that starts the per-database workers ([`super::database`]).
//!
//! Why a launcher: a background worker connects to one database, and the projections of every
//! database must run after a restart without any client. The launcher, connected to no
//! database, reads the list of databases from the shared catalog, looks at every database once
//! at start and at each new one, and starts a database's worker where the registry
//! (`crate::pg::worker_registry`) says there is work: a backend's request (a projection created,
//! resumed or reset; a retention policy set), projections, retention policies, or appends while
//! replicas are connected. At most `es.max_workers` run at once.

use crate::pg::settings;
use crate::pg::worker_registry;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};
use std::ptr;
use std::time::{Duration, Instant};

/// How soon the launcher starts a database's worker again after it exited on its own (replicas
/// connected, nothing asked for it).
const RESTART_AFTER: Duration = Duration::from_secs(5);
/// How often the launcher reads the list of databases (to look at new ones and forget dropped
/// ones; a CREATE DATABASE in a backend with the library asks for a rescan at once).
const RESCAN_EVERY: Duration = Duration::from_secs(5);
/// How long a worker runs before it yields its slot to a database that waits for one.
const YIELD_AFTER: Duration = Duration::from_secs(10);

/// Registers the launcher (see [`super::register`]).
pub fn register() {
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
fn start_database_worker(db: u32) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(&format!("event_store worker for database {db}"))
        .set_type("event_store worker")
        .set_library("event_store")
        .set_function("es_database_worker_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        // the launcher starts another when one dies (see `worker_registry::crashed`); a restart by the
        // postmaster would race with it
        .set_restart_time(None)
        .set_argument(Some(pg_sys::Datum::from(db)))
        .load_dynamic()
        .ok()
}

/// The databases that accept connections and are not templates, read from the shared catalog
/// `pg_database` (the launcher is connected to no database).
fn databases() -> Vec<u32> {
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

/// A worker the launcher started.
struct Started {
    handle: DynamicBackgroundWorker,
    at: Instant,
}

/// Entry point of the launcher (see [`register`]).
///
/// It starts a database's worker where there is work: a database it has not looked at yet (after
/// a start, a promotion, a CREATE DATABASE, a restore) gets one look; a database with projections
/// keeps one; a database whose appends replicas must see (the watermark) gets one while replicas
/// are connected; a backend's request (a projection created, resumed, reset, restored) starts
/// one at once. At most `es.max_workers` run at once: a database beyond that waits (and says so
/// in `es.projections`), and the worker that has run longest yields its slot after its round, so
/// every database progresses. A database held by a database-level command gets none.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn es_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    let mut running: HashMap<u32, Started> = HashMap::new();
    let mut exited: HashMap<u32, Instant> = HashMap::new();
    // the databases looked at since this launcher started
    let mut seen: HashSet<u32> = HashSet::new();
    let mut rescanned: Option<Instant> = None;
    // the databases that accept connections and are not templates, as last read
    let mut live: HashSet<u32> = HashSet::new();
    let mut warned: HashSet<u32> = HashSet::new();
    // the worker asked to yield its slot, until it has exited (one at a time)
    let mut yielding: Option<u32> = None;
    while super::check_signals() {
        if worker_registry::take_rescan() || rescanned.is_none_or(|t| t.elapsed() >= RESCAN_EVERY) {
            live = databases().into_iter().collect();
            for &db in &live {
                if seen.insert(db) {
                    worker_registry::request(db, true);
                }
            }
            for db in worker_registry::registered() {
                if !live.contains(&db) {
                    worker_registry::forget(db);
                    running.remove(&db);
                }
            }
            seen.retain(|db| live.contains(db));
            rescanned = Some(Instant::now());
        }
        running.retain(|db, w| {
            let alive = matches!(
                w.handle.pid(),
                Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted)
            );
            if !alive {
                exited.insert(*db, Instant::now());
            }
            alive
        });
        yielding = yielding.filter(|db| running.contains_key(db));
        let replicas = super::replicas_connected();
        let mut wanting: Vec<worker_registry::Database> = worker_registry::launcher_poll()
            .into_iter()
            .filter(|d| {
                live.contains(&d.db) && !d.held && !d.worker_alive && !running.contains_key(&d.db)
            })
            .filter(|d| {
                let recently = exited
                    .get(&d.db)
                    .is_some_and(|t| t.elapsed() < RESTART_AFTER);
                // a worker that died (an ERROR it could not catch) is replaced, at most every
                // RESTART_AFTER
                let died = worker_registry::crashed(d.db);
                d.wanted || ((d.projections > 0 || died || (replicas && d.appended)) && !recently)
            })
            .collect();
        // projections first: a look at a new database can wait
        wanting.sort_by_key(|d| (d.projections == 0, !d.wanted, d.db));
        let limit = settings::MAX_WORKERS.get().max(1) as usize;
        for d in &wanting {
            let why = if running.len() >= limit {
                worker_registry::WAIT_LIMIT
            } else if let Some(handle) = start_database_worker(d.db) {
                running.insert(
                    d.db,
                    Started {
                        handle,
                        at: Instant::now(),
                    },
                );
                warned.remove(&d.db);
                worker_registry::WAIT_NONE
            } else {
                worker_registry::WAIT_SLOTS
            };
            worker_registry::set_waiting(d.db, why);
            if why != worker_registry::WAIT_NONE && (d.projections > 0 || d.wanted) {
                if d.projections > 0 && warned.insert(d.db) {
                    pgrx::log!(
                        "event_store: database {} waits for a worker: {}",
                        d.db,
                        if why == worker_registry::WAIT_LIMIT {
                            format!("es.max_workers ({limit}) workers serve other databases")
                        } else {
                            "no background worker slot is free; raise max_worker_processes"
                                .to_owned()
                        }
                    );
                }
                // the longest-running worker gives its slot up after its round
                if yielding.is_none()
                    && let Some((&db, _)) = running
                        .iter()
                        .filter(|(_, w)| w.at.elapsed() >= YIELD_AFTER)
                        .max_by_key(|(_, w)| w.at.elapsed())
                {
                    worker_registry::ask_yield(db);
                    yielding = Some(db);
                }
            }
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            break;
        }
    }
}
