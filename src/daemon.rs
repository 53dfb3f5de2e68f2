//! The store's background workers (docs/reference.md §10, §11), registered when the library is preloaded:
//!
//! - the **launcher** (one per cluster, on a primary) looks at every database once at start and
//!   starts a database's worker when a backend asks for it (a projection was created, resumed
//!   or reset) or, while replicas are connected, for every database that uses the store;
//! - a **database worker** runs that database's projections (woken by the commits that append,
//!   so a projection follows within milliseconds) and, while replicas are connected, writes the
//!   watermark their readers cap at (`es.watermark`, every `es.watermark_interval`), and applies
//!   the retention policies (`es.set_retention`): one batch of each policy every
//!   `es.retention_naptime`, each in its own transaction. It exits when the database has none of
//!   these, or does not have the extension, so an idle database keeps no connection open.
//!
//! The work itself is in `crate::store` (projections) and `crate::pg` (the watermark's bound,
//! the registry, starting workers).

use crate::pg::call::i64_datum;
use crate::pg::positions::{self, Waiter};
use crate::pg::spi::Connection;
use crate::pg::{gucs, workers};
use crate::store::projection::{self, Runnable, Step};
use crate::store::retention;
use crate::store::sql::{EXTENSION_PRESENT, SEQUENCE_LAST, WRITE_WATERMARK};
use pgrx::PgTryBuilder;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerStatus, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// How long a database worker with nothing to do stays before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(5);
/// How soon the launcher starts a database's worker again after it exited on its own (replicas
/// connected, nothing asked for it).
const RESTART_AFTER: Duration = Duration::from_secs(5);
/// The least time between two rounds of a database worker that did not fill a batch.
const ROUND_GAP: Duration = Duration::from_millis(20);
/// How often the launcher reads the list of databases (to look at new ones and forget dropped
/// ones; a CREATE DATABASE in a backend with the library asks for a rescan at once).
const RESCAN_EVERY: Duration = Duration::from_secs(5);
/// How long a worker runs before it yields its slot to a database that waits for one.
const YIELD_AFTER: Duration = Duration::from_secs(10);

fn check_signals() -> bool {
    if BackgroundWorker::sighup_received() {
        // SAFETY: what a backend does on SIGHUP, on the worker's main thread between rounds.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
    !BackgroundWorker::sigterm_received()
}

/// A worker the launcher started.
struct Started {
    handle: DynamicBackgroundWorker,
    at: Instant,
}

/// Entry point of the launcher (see `crate::pg::workers::register_launcher`).
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
    while check_signals() {
        if workers::take_rescan() || rescanned.is_none_or(|t| t.elapsed() >= RESCAN_EVERY) {
            live = workers::databases().into_iter().collect();
            for &db in &live {
                if seen.insert(db) {
                    workers::request(db, true);
                }
            }
            for db in workers::registered() {
                if !live.contains(&db) {
                    workers::forget(db);
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
        let replicas = workers::replicas_connected();
        let mut wanting: Vec<workers::Database> = workers::launcher_poll()
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
                let died = workers::crashed(d.db);
                d.wanted || ((d.projections > 0 || died || (replicas && d.appended)) && !recently)
            })
            .collect();
        // projections first: a look at a new database can wait
        wanting.sort_by_key(|d| (d.projections == 0, !d.wanted, d.db));
        let limit = gucs::MAX_WORKERS.get().max(1) as usize;
        for d in &wanting {
            let why = if running.len() >= limit {
                workers::WAIT_LIMIT
            } else if let Some(handle) = workers::start_database_worker(d.db) {
                running.insert(
                    d.db,
                    Started {
                        handle,
                        at: Instant::now(),
                    },
                );
                warned.remove(&d.db);
                workers::WAIT_NONE
            } else {
                workers::WAIT_SLOTS
            };
            workers::set_waiting(d.db, why);
            if why != workers::WAIT_NONE && (d.projections > 0 || d.wanted) {
                if d.projections > 0 && warned.insert(d.db) {
                    pgrx::log!(
                        "event_store: database {} waits for a worker: {}",
                        d.db,
                        if why == workers::WAIT_LIMIT {
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
                    workers::ask_yield(db);
                    yielding = Some(db);
                }
            }
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            break;
        }
    }
}

/// What a database worker keeps between rounds.
struct DatabaseWorker {
    /// Its database.
    db: u32,
    /// Projections whose handler raised an error es.run_handler could not catch: they run one
    /// event per batch until a batch succeeds.
    single: HashSet<String>,
    /// The last watermark written (skip the write when nothing moved).
    watermark: i64,
    watermark_at: Option<Instant>,
    /// Each retention policy's place in its pass over the log, and when its next batch is due.
    retention: HashMap<String, Cursor>,
    /// The policies as last read, and when (read again once a batch is due, or after a
    /// naptime): a round under a stream of appends comes every few milliseconds, and must not
    /// cost a query each time.
    policies: Option<(Vec<String>, Instant)>,
}

/// Where a retention policy's next batch starts and when it may run.
struct Cursor {
    /// The position after which the next batch looks (0: a new pass from the start).
    after: i64,
    due: Instant,
}

/// What one round found.
struct Round {
    /// The extension is installed in this database.
    present: bool,
    /// Projections that are not paused.
    projections: usize,
    /// A projection handled a full batch: more are waiting, look again at once.
    full: bool,
    /// The watermark has work (see `DatabaseWorker::write_watermark`).
    watermark: bool,
    /// Retention policies that are not paused.
    retention: usize,
    /// When the next retention batch is due (None: no policy).
    retention_due: Option<Instant>,
}

impl DatabaseWorker {
    fn round(&mut self) -> Round {
        let runnable = in_transaction(|| {
            let present = Connection::connect()
                .execute(&EXTENSION_PRESENT, &[])
                .first_i64()
                .unwrap_or(0)
                > 0;
            present.then(projection::runnable)
        });
        let Some(runnable) = runnable else {
            return Round {
                present: false,
                projections: 0,
                full: false,
                watermark: false,
                retention: 0,
                retention_due: None,
            };
        };
        let watermark = self.write_watermark(self.db);
        let mut full = false;
        for p in &runnable {
            match self.step(p) {
                Ok(Step::Handled(n)) => {
                    full |= n >= p.batch as usize;
                    self.single.remove(&p.name);
                    projection::committed();
                    guarded(|| projection::touch(&p.name)).ok();
                }
                Ok(Step::Skipped) | Ok(Step::Failed) => projection::committed(),
                Ok(Step::Idle) => {}
                Err(e) => pgrx::log!("event_store: projection {}: {e}", p.name),
            }
        }
        let (retention, retention_due) = self.retain();
        Round {
            projections: runnable.len(),
            full,
            present: true,
            watermark,
            retention,
            retention_due,
        }
    }

    /// One batch of each retention policy whose time has come, each in a transaction of its own
    /// (an appender waits for one batch at most; an error is logged, and the policy tries again
    /// after its naptime). Returns the number of active policies and when the next batch is due.
    fn retain(&mut self) -> (usize, Option<Instant>) {
        let naptime = Duration::from_millis(gucs::RETENTION_NAPTIME.get().max(10) as u64);
        let now = Instant::now();
        if let Some((policies, read_at)) = &self.policies {
            let due = self.retention.values().map(|c| c.due).min();
            if now.duration_since(*read_at) < naptime && due.is_none_or(|d| d > now) {
                return (policies.len(), due);
            }
        }
        let policies = match guarded(retention::policies) {
            Ok(p) => p,
            Err(e) => {
                pgrx::log!("event_store: retention policies: {e}");
                self.policies = None;
                return (0, None);
            }
        };
        self.retention.retain(|k, _| policies.contains(k));
        let size = gucs::RETENTION_BATCH_SIZE.get().max(1);
        for policy in &policies {
            let now = Instant::now();
            let cursor = self
                .retention
                .entry(policy.clone())
                .or_insert(Cursor { after: 0, due: now });
            if cursor.due > now {
                continue;
            }
            let after = cursor.after;
            cursor.due = now + naptime;
            match guarded(|| retention::batch(policy, size, after)) {
                Ok(b) => {
                    cursor.after = b.next;
                    // a pass that reached the end of the log with nothing more to remove: the
                    // next pass can wait longer (events expire with time, not all at once)
                    if b.next == 0 && b.removed < i64::from(size) {
                        cursor.due = now + naptime * 10;
                    }
                }
                Err(e) => {
                    let shown = if policy.is_empty() {
                        "(generic streams)"
                    } else {
                        policy
                    };
                    pgrx::log!("event_store: retention policy {shown}: {e}");
                }
            }
        }
        let due = self.retention.values().map(|c| c.due).min();
        let active = policies.len();
        self.policies = Some((policies, now));
        (active, due)
    }

    /// One batch of a projection in a transaction of its own. An ERROR that escaped the
    /// handler's subtransaction (an assertion, a cancel) aborts the transaction here, never the
    /// worker: the projection then goes one event per batch, so the next escape is counted
    /// against the event that caused it (and parks it after the attempts), while the other
    /// projections go on.
    fn step(&mut self, p: &Runnable) -> Result<Step, String> {
        let single = self.single.contains(&p.name);
        let batch = if single { 1 } else { p.batch };
        match guarded(|| projection::step(p, batch)) {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(escaped) => {
                pgrx::log!(
                    "event_store: the handler of projection {} raised an error es.run_handler cannot catch: {escaped}",
                    p.name
                );
                if single {
                    if let Ok(Err(e)) = guarded(|| projection::escaped(&p.name, &escaped)) {
                        pgrx::log!("event_store: projection {}: {e}", p.name);
                    }
                } else {
                    self.single.insert(p.name.clone());
                }
                Ok(Step::Failed)
            }
        }
    }

    /// Writes the watermark while replicas are connected, at most every
    /// `es.watermark_interval`, and never where `es.events` is itself replicated in. Returns
    /// whether the watermark has work: replicas are connected and a commit appended since the
    /// last write, or positions below the sequence's end are still in flight.
    fn write_watermark(&mut self, db: u32) -> bool {
        let interval = gucs::WATERMARK_INTERVAL.get();
        if interval <= 0 || !workers::replicas_connected() {
            return false;
        }
        if self
            .watermark_at
            .is_some_and(|t| t.elapsed() < Duration::from_millis(interval as u64))
        {
            return true;
        }
        self.watermark_at = Some(Instant::now());
        let appended = workers::take_appended(db);
        let last = self.watermark;
        let (written, behind) = in_transaction(|| {
            let conn = Connection::connect();
            if crate::store::read::replicated_in(&conn) {
                return (last, false);
            }
            let sequence_last = conn.execute(&SEQUENCE_LAST, &[]).first_i64().unwrap_or(0);
            match positions::watermark_bound(sequence_last) {
                Some(bound) if bound > last => {
                    conn.execute(&WRITE_WATERMARK, &[Some(i64_datum(bound))]);
                    (bound, bound < sequence_last)
                }
                _ => (last, last < sequence_last),
            }
        });
        self.watermark = written;
        appended || behind
    }
}

fn in_transaction<R>(f: impl FnOnce() -> R) -> R {
    BackgroundWorker::transaction(AssertUnwindSafe(f))
}

/// `f` in a transaction of its own; an ERROR inside it aborts the transaction and comes back as
/// its message, so one projection's failure never ends the worker.
fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    PgTryBuilder::new(AssertUnwindSafe(|| Ok(in_transaction(f))))
        .catch_others(|caught| {
            let message = match &caught {
                CaughtError::PostgresError(r)
                | CaughtError::ErrorReport(r)
                | CaughtError::RustPanic { ereport: r, .. } => r.message().to_owned(),
            };
            // SAFETY: the ERROR left the transaction that `in_transaction` started half done;
            // aborting it releases its locks, snapshots, SPI and memory, as a worker's error
            // handler does, and leaves the process outside any transaction.
            unsafe { pg_sys::AbortCurrentTransaction() };
            Err(message)
        })
        .execute()
}

/// Entry point of a database worker; the argument is the database's OID.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn es_database_worker_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    // The worker's writes (checkpoints with the handlers' effects, the watermark) are redone
    // or rewritten after a crash; they need not wait for the WAL flush.
    // SAFETY: sets a GUC for this session, at the worker's start, outside any transaction.
    unsafe {
        pg_sys::SetConfigOption(
            c"synchronous_commit".as_ptr(),
            c"off".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
    }
    let db = db.to_u32();
    if !workers::claim_worker(db) {
        return; // another worker serves this database, or a database command holds it
    }
    let mut worker = DatabaseWorker {
        db,
        single: HashSet::new(),
        watermark: -1,
        watermark_at: None,
        retention: HashMap::new(),
        policies: None,
    };
    let waiter = Waiter::new();
    let mut idle_since = Instant::now();
    // whether this worker found work: one that did lingers IDLE_EXIT after its last work (a
    // resume or the next append is likely); one sent to look at a database that has none (after
    // a start, a CREATE DATABASE) leaves after one round and frees its slot
    let mut worked = false;
    while check_signals() {
        waiter.arm();
        let asked = workers::take_request(db);
        let round = worker.round();
        if !round.present {
            workers::forget_unless_wanted(db);
            break;
        }
        // the work that keeps the worker (and makes the launcher start it again): projections
        // and retention policies
        workers::set_projections(db, round.projections + round.retention);
        if workers::take_yield(db) {
            break; // another database waits for this slot; the launcher starts this one again
        }
        if round.projections > 0 || round.watermark || round.retention > 0 {
            worked = true;
            idle_since = Instant::now();
        } else if asked && worked {
            idle_since = Instant::now();
        } else if !worked || idle_since.elapsed() >= IDLE_EXIT {
            break;
        }
        if round.full {
            continue;
        }
        // Under a stream of appends every commit sets the latch: a short pause first gathers
        // them into the next round, so the worker's rounds (and its CPU) stay bounded however
        // fast the writers commit, at the price of that pause in a projection's lag.
        std::thread::sleep(ROUND_GAP);
        let replicas = workers::replicas_connected();
        let naptime = Duration::from_millis(gucs::PROJECTION_NAPTIME.get().max(10) as u64);
        let mut sleep = if replicas && gucs::WATERMARK_INTERVAL.get() > 0 {
            naptime.min(Duration::from_millis(gucs::WATERMARK_INTERVAL.get() as u64))
        } else {
            naptime
        };
        if let Some(due) = round.retention_due {
            sleep = sleep.min(due.saturating_duration_since(Instant::now()));
        }
        if !BackgroundWorker::wait_latch(Some(sleep)) {
            break;
        }
    }
    workers::release_worker(db);
}
