//! A database's worker (docs/reference.md §10, §11): one dynamic background worker per database
//! that has work, started by the [`super::launcher`] with the database's OID as its argument.
//!
//! It runs that database's projections (woken by the commits that append, so a projection
//! follows within milliseconds), each batch in its own transaction; while replicas are connected
//! it writes the watermark their readers cap at (`es.watermark`, every `es.watermark_interval`);
//! and it applies the retention policies (`es.set_retention`): one batch of each policy every
//! `es.retention_naptime`, each in its own transaction. It exits when the database has none of
//! these, or does not have the extension, so an idle database keeps no connection open; it gives
//! its slot up when the launcher asks (another database waits for one).
//!
//! The work itself is in `crate::store` (projections, retention) and `crate::pg` (the
//! watermark's bound, the registry it claims its database in).

use crate::pg::call::i64_datum;
use crate::pg::compat;
use crate::pg::positions;
use crate::pg::settings;
use crate::pg::spi::Connection;
use crate::pg::wake::{Filter, Waiter};
use crate::pg::worker_registry;
use crate::store::projection::{self, Runnable, Step};
use crate::store::retention;
use crate::store::sql::{EXTENSION_PRESENT, SEQUENCE_LAST, WRITE_WATERMARK};
use pgrx::PgTryBuilder;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// How long a database worker with nothing to do stays before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(5);
/// The least time between two rounds of a database worker that did not fill a batch.
const ROUND_GAP: Duration = Duration::from_millis(20);

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
        let naptime = Duration::from_millis(settings::RETENTION_NAPTIME.get().max(10) as u64);
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
        let size = settings::RETENTION_BATCH_SIZE.get().max(1);
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
        let interval = settings::WATERMARK_INTERVAL.get();
        if interval <= 0 || !super::replicas_connected() {
            return false;
        }
        if self
            .watermark_at
            .is_some_and(|t| t.elapsed() < Duration::from_millis(interval as u64))
        {
            return true;
        }
        self.watermark_at = Some(Instant::now());
        let appended = worker_registry::take_appended(db);
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
    // SIGHUP through pgrx's flag; SIGTERM through PostgreSQL's `die`: a projection's handler
    // may run long (`pg_sleep`, a long query), and SIGTERM (a fast shutdown,
    // `pg_terminate_backend`, a database command) must end it with a FATAL at its next
    // interrupt check, its batch rolled back, not wait for it. Between rounds the loop sees the
    // request in `check_signals` and leaves cleanly.
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    compat::die_on_sigterm();
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
    if !worker_registry::claim_worker(db) {
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
    let waiter = Waiter::new(Filter::EVERYTHING);
    let mut idle_since = Instant::now();
    // whether this worker found work: one that did lingers IDLE_EXIT after its last work (a
    // resume or the next append is likely); one sent to look at a database that has none (after
    // a start, a CREATE DATABASE) leaves after one round and frees its slot
    let mut worked = false;
    while super::check_signals() {
        waiter.arm();
        let asked = worker_registry::take_request(db);
        let round = worker.round();
        if !round.present {
            worker_registry::forget_unless_wanted(db);
            break;
        }
        // the work that keeps the worker (and makes the launcher start it again): projections
        // and retention policies
        worker_registry::set_projections(db, round.projections + round.retention);
        if worker_registry::take_yield(db) {
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
        let replicas = super::replicas_connected();
        let naptime = Duration::from_millis(settings::PROJECTION_NAPTIME.get().max(10) as u64);
        let mut sleep = if replicas && settings::WATERMARK_INTERVAL.get() > 0 {
            naptime.min(Duration::from_millis(
                settings::WATERMARK_INTERVAL.get() as u64
            ))
        } else {
            naptime
        };
        if let Some(due) = round.retention_due {
            sleep = sleep.min(due.saturating_duration_since(Instant::now()));
        }
        if !super::wait(sleep) {
            break;
        }
    }
    worker_registry::release_worker(db);
}
