//! Projections (docs/reference.md §10): a handler `f(es.events)` fed by the background worker of the
//! database, each batch and its ack in one transaction (exactly once), a failing event retried
//! and parked like a subscription's, the others unaffected.

use super::read::{readable, readable_end};
use super::subscription::{
    self, check_timeout, current_database, load, move_checkpoint, nack_locked, next_events,
    no_such, remove, sleep_until,
};
use crate::pg::call::{Composite, i64_datum, text_datum};
use crate::pg::security;
use crate::pg::server;
use crate::pg::settings;
use crate::pg::spi::{Arg, Connection, Stmt};
use crate::pg::wake::wake_waiters;
use crate::pg::worker_registry::{self, WorkerStatus};
use event_store_core::EventStoreError;
use event_store_core::subscription::{SubscriptionSpec, check_count, check_name};
use pgrx::pg_sys::BuiltinOid::{BOOLOID, INT4OID, INT8OID, OIDOID, TEXTOID};
use pgrx::pg_sys::{self, Datum, Oid};

/// Failed attempts before a projection parks an event.
const PROJECTION_MAX_ATTEMPTS: i32 = 5;

/// `es.create_projection` (`entry`: the OID of the SQL function called), called as the role
/// that creates the projection (the function is `SECURITY INVOKER`): that role is recorded as
/// the one the handler runs as, and the store's own rows are then written as the owner of
/// `entry`, as a `SECURITY DEFINER` function would. Recording the session's role instead (what
/// a `SECURITY DEFINER` function can still see) would let a `SECURITY DEFINER` function of
/// another role, or a handler (whose session user is the worker's superuser), create a
/// projection running as someone else.
pub fn create(
    name: &str,
    handler: Oid,
    event_types: Option<Vec<String>>,
    event_types_arg: Arg,
    batch: i32,
    entry: Oid,
) -> Result<(), EventStoreError> {
    let creator = security::current_user();
    // the function being called exists, so the fallback (the caller's own rights) is moot
    let store_owner = security::function_owner(entry).unwrap_or(creator);
    security::definer_as(store_owner, || {
        create_as(name, handler, event_types, event_types_arg, batch, creator)
    })
}

fn create_as(
    name: &str,
    handler: Oid,
    event_types: Option<Vec<String>>,
    event_types_arg: Arg,
    batch: i32,
    creator: Oid,
) -> Result<(), EventStoreError> {
    check_name(name)?;
    check_count("batch", batch.into())?;
    if !worker_registry::preloaded() {
        return Err(EventStoreError::PreloadRequired {
            function: "es.create_projection",
        });
    }
    let conn = Connection::connect();
    let info = conn.execute(&HANDLER_INFO, &[Some(Datum::from(handler))]);
    let invalid = |reason: String| EventStoreError::InvalidArgument {
        name: "handler",
        reason,
    };
    if info.is_empty() {
        return Err(invalid(format!("no function has oid {}", handler.to_u32())));
    }
    let signature = info.text(0, 5).unwrap_or_default();
    if info.text(0, 1).as_deref() != Some("f")
        || info.i32(0, 2) != Some(1)
        || info.bool(0, 3) != Some(true)
    {
        return Err(invalid(format!(
            "{signature} is not a function of one argument of type es.events"
        )));
    }
    let qualified = info.text(0, 4).unwrap_or_default();
    subscription::create_in(
        &conn,
        &SubscriptionSpec {
            name: name.to_owned(),
            start_after: Some(0),
            event_types,
            stream_type: None,
            partitions: 1,
            max_attempts: PROJECTION_MAX_ATTEMPTS,
        },
        event_types_arg,
    )?;
    conn.execute(
        &PROJECTION_INSERT,
        &[
            Some(text_datum(name)),
            Some(text_datum(&qualified)),
            Some(Datum::from(batch)),
            Some(Datum::from(creator)),
        ],
    );
    worker_registry::request_projections(current_database());
    Ok(())
}

fn existing(conn: &Connection, name: &str) -> Result<(), EventStoreError> {
    if subscription::is_projection(conn, name) {
        Ok(())
    } else {
        Err(no_such("projection", name))
    }
}

/// `es.drop_projection`.
pub fn drop(name: &str) -> Result<(), EventStoreError> {
    let conn = Connection::connect();
    existing(&conn, name)?;
    remove(&conn, "projection", name)
}

/// `es.pause_projection` / `es.resume_projection`.
pub fn set_paused(name: &str, paused: bool) -> Result<(), EventStoreError> {
    let conn = Connection::connect();
    existing(&conn, name)?;
    conn.execute(
        &PROJECTION_PAUSE,
        &[Some(text_datum(name)), Some(Datum::from(paused))],
    );
    if !paused {
        worker_registry::request_projections(current_database());
    }
    Ok(())
}

/// `es.reset_projection`: the checkpoint back to the start, parked events forgotten (the
/// handler's read model is the caller's to clear, or its handler's to overwrite).
pub fn reset(name: &str) -> Result<(), EventStoreError> {
    let conn = Connection::connect();
    existing(&conn, name)?;
    subscription::lock_partitions(&conn, name);
    conn.execute(&PROJECTION_RESET, &[Some(text_datum(name))]);
    worker_registry::request_projections(current_database());
    Ok(())
}

/// `es.wait_for_projection`: true once the projection's checkpoint reaches `position`.
pub fn wait_for(name: &str, position: i64, timeout_ms: i32) -> Result<bool, EventStoreError> {
    check_timeout(timeout_ms)?;
    sleep_until(timeout_ms, || {
        let conn = Connection::connect();
        let checkpoint = conn
            .execute(&PROJECTION_CHECKPOINT, &[Some(text_datum(name))])
            .first_i64()
            .ok_or_else(|| no_such("projection", name))?;
        Ok(checkpoint >= position)
    })
}

/// A projection as the worker runs it.
pub struct Runnable {
    /// Its name (and its subscription's).
    pub name: String,
    /// The handler, quoted and schema-qualified.
    pub handler: String,
    /// Events per transaction.
    pub batch: i32,
    /// The role the handler runs as (the projection's creator).
    pub run_as: Oid,
    /// Its name (its OID in digits once the role is dropped), for errors.
    pub run_as_name: String,
}

/// The projections that are not paused.
pub fn runnable() -> Vec<Runnable> {
    let conn = Connection::connect();
    let rows = conn.execute(&PROJECTION_LIST, &[]);
    (0..rows.len())
        .map(|r| Runnable {
            name: rows.text(r, 1).unwrap_or_default(),
            handler: rows.text(r, 2).unwrap_or_default(),
            batch: rows.i32(r, 3).unwrap_or(1).max(1),
            run_as: rows
                .datum(r, 4)
                .map_or(pg_sys::InvalidOid, |d| Oid::from(d.value() as u32)),
            run_as_name: rows.text(r, 5).unwrap_or_default(),
        })
        .collect()
}

/// What one step of a projection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Handled this many events (the checkpoint moved).
    Handled(usize),
    /// Nothing to handle; the checkpoint moved past events the projection does not read.
    Skipped,
    /// Nothing new.
    Idle,
    /// An event failed (counted, or parked).
    Failed,
}

/// One batch of a projection, in the caller's transaction: each event through the handler
/// (`es.run_handler` as the projection's creator, a subtransaction per event that returns the
/// handler's error instead of raising it: see [`handle`]), then the ack of the handled ones; a
/// failing event is nacked and the batch ends there, so the events behind it wait (per-stream
/// order) until it is retried or parked.
pub fn step(p: &Runnable, batch: i32) -> Result<Step, EventStoreError> {
    let conn = Connection::connect();
    // The partition row first, as every client function that also touches the projection's
    // configuration does (one lock order, no deadlock); then a pause (or drop) that committed
    // since the list was read stops the batch.
    let part = load(&conn, &p.name, 0, true)?;
    let active = conn
        .execute(&PROJECTION_ACTIVE, &[Some(text_datum(&p.name))])
        .first_i64()
        .unwrap_or(0);
    if active == 0 {
        return Ok(Step::Idle);
    }
    let horizon = readable(&conn, "the projection worker")?;
    let positions: Vec<i64> = next_events(&conn, &part, batch, &horizon)
        .iter()
        .flat_map(|rows| (0..rows.len()).filter_map(|r| rows.i64(r, 1)))
        .collect();
    if positions.is_empty() {
        let end = readable_end(&conn, &horizon);
        if end > part.checkpoint {
            move_checkpoint(&conn, &part, end, part.any_parked);
            return Ok(Step::Skipped);
        }
        return Ok(Step::Idle);
    }
    let mut handled = 0;
    let mut last_ok = None;
    let run_handler = conn
        .execute(&RUN_HANDLER_OID, &[])
        .datum(0, 1)
        .map(|d| Oid::from(d.value() as u32))
        .ok_or_else(|| no_such("function", "es.run_handler(text, es.events)"))?;
    for &position in &positions {
        let error = handle(&conn, p, run_handler, position);
        match error {
            None => {
                handled += 1;
                last_ok = Some(position);
            }
            Some(message) => {
                if let Some(ok) = last_ok {
                    move_checkpoint(&conn, &part, ok, part.any_parked);
                }
                let part = load(&conn, &p.name, 0, true)?;
                nack_locked(&conn, &part, position, &message)?;
                return Ok(Step::Failed);
            }
        }
    }
    if let Some(ok) = last_ok {
        // every position handled was read below the horizon: readable
        move_checkpoint(&conn, &part, ok, part.any_parked);
    }
    Ok(Step::Handled(handled))
}

/// Runs the handler of `p` for the event at `position`: NULL, or the error it raised (or why it
/// could not run).
///
/// The worker reads the event itself (the creator needs no SELECT on `es.events`), then calls
/// `es.run_handler` through fmgr as the creator, inside a security-restricted operation with a
/// GUC nest level of its own ([`security::restricted_as`]). The order is that of
/// `ExecRefreshMatView`: switch, nest level, the call (whose `BEGIN … EXCEPTION` block is the
/// handler's subtransaction, so a caught error is rolled back below the switch and the nest
/// level), then the settings rolled back and the worker's user id restored. An ERROR that
/// escapes the subtransaction (a cancel) aborts the batch's transaction, which restores both.
/// The handler itself is called by the executor inside `es.run_handler`, which checks the
/// creator's EXECUTE privilege on it at every event (a REVOKE takes effect at the next one).
fn handle(conn: &Connection, p: &Runnable, run_handler: Oid, position: i64) -> Option<String> {
    if !security::role_exists(p.run_as) {
        return Some(format!(
            "role {} that created projection {} does not exist",
            p.run_as_name, p.name
        ));
    }
    let mut row = conn.execute(&EVENT_ROW, &[Some(i64_datum(position))]);
    if row.is_empty() {
        // Moved to the archive or removed by a retention policy since it was polled: look in
        // both tables in one snapshot; an event found in neither was removed, and there is
        // nothing left to hand the handler.
        if !super::read::through_archive() {
            return None;
        }
        row = conn.execute(&EVENT_ROW_ARCHIVED, &[Some(i64_datum(position))]);
        if row.is_empty() {
            return None;
        }
    }
    let Some(event) = row.composite(0, 1) else {
        return Some(format!("event at position {position} not found"));
    };
    // an event of an older version reaches the handler as its upcasters make it
    let event = match upcast_row(conn, event) {
        Ok(e) => e,
        Err(e) => return Some(e.message()),
    };
    // The handler is the user's code: it resolves its names with the session's search_path
    // (for its role), not the store's pinned one.
    let error = conn.unpinned(|| {
        security::restricted_as(p.run_as, || {
            // es.run_handler(text, es.events) RETURNS text; `event` lives in `row`'s tuple
            // table until `row` is freed after this call
            security::call_text_row(run_handler, &p.handler, event)
        })
    });
    // one event row in memory at a time, however large the batch and its events
    row.free();
    error
}

/// Records when a projection last handled a batch (after the batch's commit, in a transaction of
/// its own: the configuration row is not locked while the partition row is).
pub fn touch(name: &str) {
    Connection::connect().execute(&PROJECTION_TOUCH, &[Some(text_datum(name))]);
}

/// After an ERROR escaped the handler's subtransaction (the worker aborted the batch): counts a
/// failed attempt of the projection's next event, which a batch of one then was.
pub fn escaped(name: &str, error: &str) -> Result<(), EventStoreError> {
    let conn = Connection::connect();
    let part = load(&conn, name, 0, true)?;
    let horizon = readable(&conn, "the projection worker")?;
    let head = next_events(&conn, &part, 1, &horizon)
        .iter()
        .find_map(|rows| {
            if rows.is_empty() {
                None
            } else {
                rows.i64(0, 1)
            }
        });
    if let Some(position) = head {
        nack_locked(&conn, &part, position, error)?;
    }
    Ok(())
}

/// Projections arrived in `es.projection_config` (the trigger `es.projections_changed`, e.g.
/// under pg_restore): the worker is asked for when the transaction commits.
pub fn changed() {
    worker_registry::request_projections(current_database());
}

/// `es.worker_status()`: the state of this database's worker (`running`, `idle`, `waiting for a
/// worker slot` or `no worker`), why it is not running, and its pid.
pub fn worker_status() -> (&'static str, Option<String>, Option<i32>) {
    match worker_registry::status(current_database()) {
        WorkerStatus::NotPreloaded => (
            "no worker",
            Some(
                "event_store is not in shared_preload_libraries: no worker runs projections"
                    .to_owned(),
            ),
            None,
        ),
        WorkerStatus::Idle => ("idle", None, None),
        WorkerStatus::Running(pid) => ("running", None, Some(pid)),
        WorkerStatus::WaitingForLimit => (
            "waiting for a worker slot",
            Some(format!(
                "es.max_workers ({}) workers serve other databases; each gives its slot up in turn, or raise es.max_workers",
                settings::MAX_WORKERS.get()
            )),
            None,
        ),
        WorkerStatus::WaitingForSlot => (
            "waiting for a worker slot",
            Some(format!(
                "no background worker slot is free: all {} of max_worker_processes are in use (parallel query and logical replication draw from them too); raise max_worker_processes",
                server::max_worker_processes()
            )),
            None,
        ),
    }
}

/// Wakes `es.wait_for_projection` callers after the worker committed a batch.
pub fn committed() {
    wake_waiters(current_database());
}

/// An `es.events` row (a composite datum) as its upcasters make it; the same datum without
/// upcasters.
fn upcast_row<'a>(
    conn: &Connection,
    event: Composite<'a>,
) -> Result<Composite<'a>, EventStoreError> {
    if crate::pg::registry::known_no_upcaster() {
        return Ok(event);
    }
    let Some(mut up) = crate::store::upcast::Upcasting::load(conn) else {
        return Ok(event);
    };
    crate::pg::udf::isolated(|| {
        crate::pg::udf::rewrite_composite(event, |row| {
            match crate::store::upcast::RowColumns::of(row.row_type()) {
                Some(columns) => up.apply_to_row(row, columns),
                None => Ok(()),
            }
        })
    })
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// What a projection handler is: kind, argument count, whether the argument is es.events,
/// the quoted qualified name and the signature.
pub static HANDLER_INFO: Stmt = Stmt::new(
    "HandlerInfo",
    c"SELECT p.prokind::text, p.pronargs::int4,
                         p.pronargs >= 1 AND p.proargtypes[0] = 'es.events'::pg_catalog.regtype,
                         pg_catalog.format('%I.%I', n.nspname, p.proname),
                         p.oid::pg_catalog.regprocedure::text
                    FROM pg_catalog.pg_proc p
                    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                   WHERE p.oid = $1",
    &[OIDOID],
);

/// Register a projection.
pub static PROJECTION_INSERT: Stmt = Stmt::new(
    "ProjectionInsert",
    c"INSERT INTO es.projection_config (name, handler, batch, run_as)
                  VALUES ($1, $2, $3, $4::pg_catalog.regrole)",
    &[TEXTOID, TEXTOID, INT4OID, OIDOID],
);

/// Pause or resume a projection.
pub static PROJECTION_PAUSE: Stmt = Stmt::new(
    "ProjectionPause",
    c"UPDATE es.projection_config SET paused = $2 WHERE name = $1",
    &[TEXTOID, BOOLOID],
);

/// Put a projection's checkpoint back at its start and forget its parked events.
pub static PROJECTION_RESET: Stmt = Stmt::new(
    "ProjectionReset",
    c"WITH k AS (DELETE FROM es.parked_events WHERE subscription = $1)
                  UPDATE es.subscription_partitions p
                     SET checkpoint = c.start_after, head_position = NULL, head_attempts = 0,
                         head_error = NULL, owner = NULL, lease_until = NULL,
                         updated_at = pg_catalog.transaction_timestamp()
                    FROM es.subscription_config c
                   WHERE c.name = $1 AND p.subscription = $1",
    &[TEXTOID],
);

/// The projections the worker runs.
pub static PROJECTION_LIST: Stmt = Stmt::new(
    "ProjectionList",
    c"SELECT j.name, j.handler, j.batch, j.run_as::pg_catalog.oid, j.run_as::pg_catalog.text
                    FROM es.projection_config j
                   WHERE NOT j.paused ORDER BY j.name",
    &[],
);

/// One event as a row of `es.events` (a composite datum), read by the worker for a
/// projection's handler (whose role need not be allowed to read the table).
pub static EVENT_ROW: Stmt = Stmt::new(
    "EventRow",
    c"SELECT e FROM es.events e WHERE e.global_position = $1",
    &[INT8OID],
);

/// The OID of `es.run_handler(text, es.events)` (NULL when it is missing), called through
/// fmgr as a projection's role.
// to_regprocedure is STABLE, so the kept plan looks the function up on every run
// (a recreated extension gets its new OID)
pub static RUN_HANDLER_OID: Stmt = Stmt::new(
    "RunHandlerOid",
    c"SELECT pg_catalog.to_regprocedure('es.run_handler(text, es.events)')::pg_catalog.oid",
    &[],
);

/// Whether a projection is still there and not paused (read after its partition row is
/// locked: a pause that committed before the batch started stops it).
pub static PROJECTION_ACTIVE: Stmt = Stmt::new(
    "ProjectionActive",
    c"SELECT count(*) FROM es.projection_config WHERE name = $1 AND NOT paused",
    &[TEXTOID],
);

/// Record that a projection handled a batch.
pub static PROJECTION_TOUCH: Stmt = Stmt::new(
    "ProjectionTouch",
    c"UPDATE es.projection_config SET last_run_at = pg_catalog.clock_timestamp()
                   WHERE name = $1",
    &[TEXTOID],
);

/// A projection's checkpoint.
pub static PROJECTION_CHECKPOINT: Stmt = Stmt::new(
    "ProjectionCheckpoint",
    c"SELECT p.checkpoint FROM es.subscription_partitions p
                    JOIN es.projection_config j ON j.name = p.subscription
                   WHERE p.subscription = $1 AND p.partition = 0",
    &[TEXTOID],
);

/// [`EVENT_ROW`] through the archive (after `EVENT_ROW` found nothing: the event was
/// archived or removed since it was polled).
// ROW(a.*)::es.events: the handler takes an es.events row; the archive's has the
// same columns in the same order
pub static EVENT_ROW_ARCHIVED: Stmt = Stmt::new(
    "EventRowArchived",
    c"SELECT e FROM es.events e WHERE e.global_position = $1
                  UNION ALL
                  SELECT ROW(a.*)::es.events FROM es.events_archive a WHERE a.global_position = $1",
    &[INT8OID],
);
