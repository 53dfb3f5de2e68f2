//! Subscriptions (docs/reference.md §9): durable, partitioned checkpoints over the global log, with leases
//! for competing consumers, failed attempts, parking, and waiting without polling.
//!
//! The state lives in tables (`es.subscription_config`, `es.subscription_partitions`,
//! `es.parked_events`), so every change runs in the caller's transaction: a consumer that
//! writes its read model and acks in one transaction handles each event exactly once. Reads are
//! gap-safe exactly like `es.read_all` ([`super::read::readable`]). The decisions (fencing,
//! fair shares, attempts) are the core's `event_store_core::subscription`.

use super::read::{readable, readable_end};
use super::sql::all_events;
use crate::pg::call::{ResultSet, i64_datum, text_datum, uuid_datum};
use crate::pg::positions::Horizon;
use crate::pg::spi::cstr;
use crate::pg::spi::{Arg, Connection, Rows, Stmt};
use crate::pg::wake::{Filter, Waiter, wake_waiters};
use crate::pg::{backend, server, settings};
use event_store_core::EventStoreError;
use event_store_core::subscription::{
    Lease, NackOutcome, SubscriptionSpec, check_consumer, check_count, check_lease,
    check_partition, fair_share, nack as count_attempt,
};
use pgrx::pg_sys::BuiltinOid::{
    BOOLOID, INT4OID, INT8OID, INTERVALOID, TEXTARRAYOID, TEXTOID, UUIDOID,
};
use pgrx::pg_sys::Datum;
use std::time::{Duration, Instant};

/// One partition of a subscription with the subscription's settings, as read (and, for ack
/// and nack, locked) by [`load`].
pub struct Partition<'c> {
    /// The row (its event-type array and stream type are passed on as datums).
    rows: Rows<'c>,
    /// The subscription's name.
    pub name: String,
    /// The partition.
    pub partition: i32,
    /// The subscription's number of partitions.
    pub partitions: i32,
    /// Attempts before an event is parked.
    pub max_attempts: i32,
    /// The checkpoint.
    pub checkpoint: i64,
    /// The lease.
    pub lease: Lease,
    /// The failing head event and its attempts.
    pub head: Option<(i64, i32)>,
    /// Whether the subscription has parked events (then streams behind them are held back).
    pub any_parked: bool,
}

impl Partition<'_> {
    fn event_types(&self) -> Arg {
        self.rows.datum(0, 3)
    }

    fn stream_type(&self) -> Arg {
        self.rows.datum(0, 4)
    }

    fn name_arg(&self) -> Arg {
        Some(text_datum(&self.name))
    }
}

/// Reads partition `partition` of subscription `name` (locking its row when `lock`): ES202
/// when there is no such subscription, 22023 when the partition is out of range.
pub fn load<'c>(
    conn: &'c Connection,
    name: &str,
    partition: i32,
    lock: bool,
) -> Result<Partition<'c>, EventStoreError> {
    let stmt = if lock {
        &PARTITION_LOCK
    } else {
        &PARTITION_READ
    };
    let rows = conn.execute(
        stmt,
        &[Some(text_datum(name)), Some(Datum::from(partition))],
    );
    if rows.is_empty() {
        let partitions = conn
            .execute(&SUBSCRIPTION_PARTITIONS, &[Some(text_datum(name))])
            .first_i64()
            .map(|n| n as i32);
        return Err(match partitions {
            None => no_such("subscription", name),
            Some(n) => check_partition(partition, n)
                .err()
                .unwrap_or_else(|| no_such("subscription", name)),
        });
    }
    let head = rows.i64(0, 9).map(|p| (p, rows.i32(0, 10).unwrap_or(0)));
    Ok(Partition {
        name: name.to_owned(),
        partition,
        partitions: rows.i32(0, 1).unwrap_or(1),
        max_attempts: rows.i32(0, 2).unwrap_or(1),
        checkpoint: rows.i64(0, 5).unwrap_or(0),
        lease: Lease {
            owner: rows.text(0, 6),
            live: rows.bool(0, 7).unwrap_or(false),
            until: rows.text(0, 8).unwrap_or_default(),
        },
        head,
        any_parked: rows.bool(0, 11).unwrap_or(false),
        rows,
    })
}

/// ES202.
pub fn no_such(kind: &'static str, name: &str) -> EventStoreError {
    EventStoreError::NoSuchSubscription {
        kind,
        name: name.to_owned(),
    }
}

/// `es.create_subscription`: [`create_in`] in a connection of its own.
pub fn create(spec: &SubscriptionSpec, event_types: Arg) -> Result<(), EventStoreError> {
    let conn = Connection::connect();
    create_in(&conn, spec, event_types)
}

/// `es.create_subscription` (also the subscription of a projection).
pub fn create_in(
    conn: &Connection,
    spec: &SubscriptionSpec,
    event_types: Arg,
) -> Result<(), EventStoreError> {
    spec.validate()?;
    let horizon = readable(conn, "es.create_subscription")?;
    let end = readable_end(conn, &horizon);
    let start = match spec.start_after {
        Some(s) if s > end => {
            return Err(EventStoreError::InvalidArgument {
                name: "start_after",
                reason: format!("{s} is past the readable end of the log ({end})"),
            });
        }
        Some(s) => s,
        None => end,
    };
    let inserted = conn.execute(
        &SUBSCRIPTION_INSERT,
        &[
            Some(text_datum(&spec.name)),
            Some(i64_datum(start)),
            event_types,
            spec.stream_type.as_deref().map(text_datum),
            Some(Datum::from(spec.partitions)),
            Some(Datum::from(spec.max_attempts)),
        ],
    );
    if inserted.is_empty() {
        // Name what holds the name, whichever is being created: a projection, or a plain
        // subscription (also the rows of a projection's subscription replicated in without its
        // projection, as on a promoted logical subscriber).
        let kind = if is_projection(conn, &spec.name) {
            "projection"
        } else {
            "subscription"
        };
        return Err(EventStoreError::DuplicateName {
            kind,
            name: spec.name.clone(),
        });
    }
    conn.execute(
        &PARTITIONS_INSERT,
        &[
            Some(text_datum(&spec.name)),
            Some(i64_datum(start)),
            Some(Datum::from(spec.partitions)),
        ],
    );
    Ok(())
}

/// `es.drop_subscription`: a projection's subscription goes with `es.drop_projection`.
pub fn drop(name: &str) -> Result<(), EventStoreError> {
    let conn = Connection::connect();
    if is_projection(&conn, name) {
        return Err(EventStoreError::InvalidArgument {
            name: "name",
            reason: format!(
                "{name} is the subscription of a projection: drop it with es.drop_projection"
            ),
        });
    }
    remove(&conn, "subscription", name)
}

/// Deletes a subscription with its partitions, parked events and projection; ES202 when none.
pub fn remove(conn: &Connection, kind: &'static str, name: &str) -> Result<(), EventStoreError> {
    lock_partitions(conn, name);
    let dropped = conn
        .execute(&SUBSCRIPTION_DROP, &[Some(text_datum(name))])
        .first_i64()
        .unwrap_or(0);
    if dropped == 0 {
        return Err(no_such(kind, name));
    }
    Ok(())
}

/// Locks every partition row of subscription `name`: an ack or nack in flight commits first,
/// and the caller's next statements (a fresh snapshot each) see what it wrote.
pub fn lock_partitions(conn: &Connection, name: &str) {
    conn.execute(&SUBSCRIPTION_LOCK, &[Some(text_datum(name))]);
}

/// Whether `name` is a projection's subscription.
pub fn is_projection(conn: &Connection, name: &str) -> bool {
    conn.execute(&IS_PROJECTION, &[Some(text_datum(name))])
        .first_i64()
        .unwrap_or(0)
        > 0
}

/// The next events of a partition (put-back parked events first, then new ones after the
/// checkpoint up to the horizon), at most `max`.
pub fn next_events<'c>(
    conn: &'c Connection,
    p: &Partition<'_>,
    max: i32,
    horizon: &Horizon,
) -> Vec<Rows<'c>> {
    let mut out = Vec::with_capacity(2);
    let mut left = max;
    if p.any_parked {
        let replayed = conn.query_in(
            if super::read::through_archive() {
                &POLL_REPLAYED_ARCHIVED
            } else {
                &POLL_REPLAYED
            },
            &[
                p.name_arg(),
                Some(Datum::from(p.partition)),
                Some(Datum::from(left)),
            ],
            &horizon.snapshot,
        );
        left -= replayed.len() as i32;
        out.push(replayed);
    }
    if left > 0 {
        out.push(conn.query_in(
            if super::read::through_archive() {
                &POLL_ARCHIVED
            } else {
                &POLL
            },
            &[
                p.name_arg(),
                Some(Datum::from(p.partition)),
                Some(i64_datum(p.checkpoint)),
                Some(i64_datum(horizon.last_readable)),
                p.event_types(),
                p.stream_type(),
                Some(Datum::from(p.partitions)),
                Some(Datum::from(p.any_parked)),
                Some(Datum::from(left)),
            ],
            &horizon.snapshot,
        ));
    }
    out
}

/// `es.poll`: the partition's next events; with `wait_ms` > 0 and nothing readable, a waiting
/// poll (docs/reference.md §9): it sleeps like `es.wait` and returns the events in the same call
/// that waited, so a consumer blocked for events gets them one round trip after the commit.
pub fn poll(
    name: &str,
    partition: i32,
    max: i64,
    consumer: Option<&str>,
    wait_ms: i32,
    out: &mut ResultSet,
) -> Result<(), EventStoreError> {
    check_count("max_count", max)?;
    check_wait(wait_ms)?;
    // A batch of more than 2^31 - 1 rows cannot be returned anyway: a larger count is "all".
    let max = i32::try_from(max).unwrap_or(i32::MAX);
    // The first look registers no waiter: a consumer that has a backlog never pays for one.
    let (found, _) = poll_once(name, partition, max, consumer, out)?;
    if found || wait_ms == 0 {
        return Ok(());
    }
    let filter = wait_filter(name, partition)?;
    sleep_until_filtered(wait_ms, filter, || {
        // Each look is a new SPI connection whose statements take new snapshots under READ
        // COMMITTED (the partition's checkpoint and lease as they are now); the events are read
        // in the horizon's snapshot of the latest commits at every isolation level, like
        // es.read_all (docs/reference.md §3).
        let (found, read_up_to) = poll_once(name, partition, max, consumer, out)?;
        Ok(if found {
            Look::Ready
        } else {
            Look::NotYet { read_up_to }
        })
    })?;
    Ok(())
}

/// One look of `es.poll`: the partition (its lease checked), then its next events up to the
/// horizon into `out`. Returns whether there were any, and the horizon's last readable position.
fn poll_once(
    name: &str,
    partition: i32,
    max: i32,
    consumer: Option<&str>,
    out: &mut ResultSet,
) -> Result<(bool, i64), EventStoreError> {
    let conn = Connection::connect();
    let p = load(&conn, name, partition, false)?;
    check_lease(name, partition, &p.lease, consumer)?;
    let horizon = readable(&conn, "es.poll")?;
    let mut found = false;
    if !super::read::upcasting(out) {
        for rows in next_events(&conn, &p, max, &horizon) {
            found |= !rows.is_empty();
            rows.copy_into(out);
        }
    } else {
        crate::pg::udf::isolated(|| {
            for rows in next_events(&conn, &p, max, &horizon) {
                found |= !rows.is_empty();
                rows.copy_into(out);
            }
            out.take_error()
        })?;
    }
    Ok((found, horizon.last_readable))
}

/// A `wait_ms` argument of `es.poll`.
fn check_wait(wait_ms: i32) -> Result<(), EventStoreError> {
    if wait_ms < 0 {
        return Err(EventStoreError::InvalidArgument {
            name: "wait_ms",
            reason: format!("{wait_ms} is negative"),
        });
    }
    Ok(())
}

/// The commits that concern a waiter on partition `partition` of subscription `name`: its
/// streams' partition and its event types (`pg::wake`).
fn wait_filter(name: &str, partition: i32) -> Result<Filter, EventStoreError> {
    let conn = Connection::connect();
    let p = load(&conn, name, partition, false)?;
    let types = conn.execute(&WAIT_EVENT_TYPES, &[Some(text_datum(name))]);
    let types: Vec<String> = (0..types.len()).filter_map(|i| types.text(i, 1)).collect();
    Ok(Filter::partition(
        p.partitions,
        partition,
        (!types.is_empty()).then(|| types.iter().map(String::as_str)),
    ))
}

/// `es.ack`: returns the checkpoint after it.
pub fn ack(
    name: &str,
    partition: i32,
    position: i64,
    consumer: Option<&str>,
) -> Result<i64, EventStoreError> {
    let conn = Connection::connect();
    let p = load(&conn, name, partition, true)?;
    check_lease(name, partition, &p.lease, consumer)?;
    ack_locked(&conn, &p, position, p.any_parked)
}

/// Moves the locked partition's checkpoint to `position`: events of streams with a parked
/// event before them are parked behind it, put-back parked events up to it are done. An older
/// position only finishes put-back events; a position past the readable end is refused.
pub fn ack_locked(
    conn: &Connection,
    p: &Partition<'_>,
    position: i64,
    any_parked: bool,
) -> Result<i64, EventStoreError> {
    if position <= p.checkpoint {
        move_checkpoint(conn, p, position, any_parked);
        return Ok(p.checkpoint);
    }
    let horizon = readable(conn, "es.ack")?;
    let end = readable_end(conn, &horizon);
    if position > end {
        return Err(EventStoreError::InvalidArgument {
            name: "position",
            reason: format!("{position} is past the readable end of the log ({end})"),
        });
    }
    move_checkpoint(conn, p, position, any_parked);
    Ok(position)
}

/// Moves the locked partition's checkpoint forward to `position`, which the caller knows is
/// readable: parks the events behind parked ones on the way and finishes put-back events up to
/// it. At or below the checkpoint it only finishes put-back events.
pub fn move_checkpoint(conn: &Connection, p: &Partition<'_>, position: i64, any_parked: bool) {
    let key = [
        p.name_arg(),
        Some(Datum::from(p.partition)),
        Some(i64_datum(position)),
    ];
    if position <= p.checkpoint {
        if any_parked {
            conn.execute(&DELETE_REPLAYED, &key);
        }
        return;
    }
    if any_parked {
        conn.execute(
            if super::read::through_archive() {
                &PARK_BEHIND_ARCHIVED
            } else {
                &PARK_BEHIND
            },
            &[
                p.name_arg(),
                Some(Datum::from(p.partition)),
                Some(i64_datum(p.checkpoint)),
                Some(i64_datum(position)),
                p.event_types(),
                p.stream_type(),
                Some(Datum::from(p.partitions)),
            ],
        );
        conn.execute(&DELETE_REPLAYED, &key);
    }
    conn.execute(&SET_CHECKPOINT, &key);
}

/// `es.nack`: true when the event was parked.
pub fn nack(
    name: &str,
    partition: i32,
    position: i64,
    error: &str,
    consumer: Option<&str>,
) -> Result<bool, EventStoreError> {
    let conn = Connection::connect();
    let p = load(&conn, name, partition, true)?;
    check_lease(name, partition, &p.lease, consumer)?;
    nack_locked(&conn, &p, position, error)
}

/// Counts a failed attempt of the event at `position` of the locked partition, and parks it
/// after `max_attempts`.
pub fn nack_locked(
    conn: &Connection,
    p: &Partition<'_>,
    position: i64,
    error: &str,
) -> Result<bool, EventStoreError> {
    let key = [
        p.name_arg(),
        Some(Datum::from(p.partition)),
        Some(i64_datum(position)),
    ];
    let replayed = p.any_parked && conn.execute(&IS_REPLAYED, &key).first_i64().unwrap_or(0) > 0;
    // Only the partition's head (the event es.poll returns first) can fail: a nack of a later
    // event would skip the ones before it.
    let horizon = readable(conn, "es.nack")?;
    let head = next_events(conn, p, 1, &horizon).iter().find_map(|rows| {
        if rows.is_empty() {
            None
        } else {
            rows.i64(0, 1)
        }
    });
    if head != Some(position) {
        return Err(EventStoreError::InvalidArgument {
            name: "position",
            reason: match head {
                Some(h) => format!(
                    "{position} is not the next event of partition {} (that is {h}): ack the events before it first",
                    p.partition
                ),
                None => format!(
                    "{position} is not the next event of partition {}: the partition has no readable event",
                    p.partition
                ),
            },
        });
    }
    let stream = conn
        .execute(
            if super::read::through_archive() {
                &EVENT_STREAM_ARCHIVED
            } else {
                &EVENT_STREAM
            },
            &[Some(i64_datum(position))],
        )
        .uuid(0, 1)
        .ok_or_else(|| EventStoreError::InvalidArgument {
            name: "position",
            reason: format!("no event is stored at {position}"),
        })?;
    match count_attempt(position, p.head, p.max_attempts) {
        NackOutcome::Retry { attempts } => {
            conn.execute(
                &SET_HEAD,
                &[
                    p.name_arg(),
                    Some(Datum::from(p.partition)),
                    Some(i64_datum(position)),
                    Some(Datum::from(attempts)),
                    Some(text_datum(error)),
                ],
            );
            Ok(false)
        }
        NackOutcome::Park { attempts } => {
            conn.execute(
                &PARK_ONE,
                &[
                    p.name_arg(),
                    Some(Datum::from(p.partition)),
                    Some(i64_datum(position)),
                    Some(uuid_datum(&stream)),
                    Some(Datum::from(attempts)),
                    Some(text_datum(error)),
                ],
            );
            if replayed {
                conn.execute(
                    &SET_HEAD,
                    &[
                        p.name_arg(),
                        Some(Datum::from(p.partition)),
                        None,
                        Some(Datum::from(0)),
                        None,
                    ],
                );
            } else {
                ack_locked(conn, p, position, true)?;
            }
            Ok(true)
        }
    }
}

/// `es.claim`: the partitions the consumer holds after taking its fair share, with the end of
/// their leases, into `out`.
pub fn claim(
    name: &str,
    consumer: &str,
    lease: Datum,
    out: &mut ResultSet,
) -> Result<(), EventStoreError> {
    check_consumer(consumer)?;
    let conn = Connection::connect();
    let partitions = subscription_partitions(&conn, name)?;
    let who = [Some(text_datum(name)), Some(text_datum(consumer))];
    let others = conn
        .execute(&LIVE_CONSUMERS, &[who[0], who[1], Some(lease)])
        .first_i64()
        .unwrap_or(0) as i32;
    let share = fair_share(partitions, others + 1);
    let held = conn
        .execute(&RENEW_LEASES, &[who[0], who[1], Some(lease)])
        .len() as i32;
    if held < share {
        conn.execute(
            &TAKE_PARTITIONS,
            &[who[0], who[1], Some(lease), Some(Datum::from(share - held))],
        );
    } else if held > share {
        conn.execute(
            &SHED_PARTITIONS,
            &[who[0], who[1], Some(Datum::from(held - share))],
        );
    }
    conn.execute(&HELD_PARTITIONS, &who).copy_into(out);
    Ok(())
}

/// `es.release`: how many partitions the consumer gave up.
pub fn release(name: &str, consumer: &str) -> Result<i64, EventStoreError> {
    let conn = Connection::connect();
    subscription_partitions(&conn, name)?;
    Ok(conn
        .execute(
            &RELEASE_PARTITIONS,
            &[Some(text_datum(name)), Some(text_datum(consumer))],
        )
        .len() as i64)
}

/// `es.replay_parked`: how many parked events were put back.
pub fn replay_parked(name: &str) -> Result<i64, EventStoreError> {
    let conn = Connection::connect();
    subscription_partitions(&conn, name)?;
    let n = conn
        .execute(&REPLAY_PARKED, &[Some(text_datum(name))])
        .len() as i64;
    wake_waiters(current_database());
    Ok(n)
}

fn subscription_partitions(conn: &Connection, name: &str) -> Result<i32, EventStoreError> {
    conn.execute(&SUBSCRIPTION_PARTITIONS, &[Some(text_datum(name))])
        .first_i64()
        .map(|n| n as i32)
        .ok_or_else(|| no_such("subscription", name))
}

/// `es.wait`: true as soon as the partition has a readable event, false at the timeout. Only
/// the commits that appended to the partition's streams, of its event types, wake it (and, while
/// its event waits behind a lower position in flight, the end of any append: see `pg::wake`).
pub fn wait(name: &str, partition: i32, timeout_ms: i32) -> Result<bool, EventStoreError> {
    check_timeout(timeout_ms)?;
    let filter = wait_filter(name, partition)?;
    sleep_until_filtered(timeout_ms, filter, || {
        let conn = Connection::connect();
        let p = load(&conn, name, partition, false)?;
        let horizon = readable(&conn, "es.wait")?;
        if next_events(&conn, &p, 1, &horizon)
            .iter()
            .any(|rows| !rows.is_empty())
        {
            return Ok(Look::Ready);
        }
        Ok(Look::NotYet {
            read_up_to: horizon.last_readable,
        })
    })
}

/// What one look for events found.
pub enum Look {
    /// What the waiter waits for is there.
    Ready,
    /// Not yet; the look read every position up to `read_up_to` (a lower position in flight
    /// hides the later ones, docs/reference.md §3).
    NotYet { read_up_to: i64 },
}

/// A `timeout_ms` argument.
pub fn check_timeout(timeout_ms: i32) -> Result<(), EventStoreError> {
    if timeout_ms < 0 {
        return Err(EventStoreError::InvalidArgument {
            name: "timeout_ms",
            reason: format!("{timeout_ms} is negative"),
        });
    }
    Ok(())
}

/// Checks `ready` until it is true or `timeout_ms` passed, sleeping on the latch in between: a
/// commit that appends in this database (or a checkpoint the worker moves) wakes the sleeper.
/// On a replica nothing local appends, so it looks again every `es.watermark_interval`.
pub fn sleep_until(
    timeout_ms: i32,
    mut ready: impl FnMut() -> Result<bool, EventStoreError>,
) -> Result<bool, EventStoreError> {
    sleep_until_filtered(timeout_ms, Filter::EVERYTHING, || {
        Ok(if ready()? {
            Look::Ready
        } else {
            Look::NotYet {
                read_up_to: i64::MAX,
            }
        })
    })
}

/// [`sleep_until`] woken only by the commits `filter` takes. A commit that was taken but whose
/// event the look could not read yet (a lower position in flight, docs/reference.md §3) makes
/// the waiter arm for the end of any append until a look reads up to that commit's position:
/// the end of the append in flight is then what makes its event readable.
pub fn sleep_until_filtered(
    timeout_ms: i32,
    filter: Filter,
    mut ready: impl FnMut() -> Result<Look, EventStoreError>,
) -> Result<bool, EventStoreError> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
    let waiter = Waiter::new(filter);
    // the highest position of the commits the filter took that no look has read up to yet
    let mut pending = 0i64;
    let idle = if server::in_recovery() {
        Duration::from_millis(settings::WATERMARK_INTERVAL.get().max(1) as u64)
    } else {
        Duration::from_secs(1)
    };
    loop {
        pending = pending.max(waiter.take_hit());
        if pending > 0 {
            waiter.arm_any(pending);
        } else {
            waiter.arm();
        }
        match ready()? {
            Look::Ready => return Ok(true),
            // read past it: the commit's event was not for this waiter (a type sharing its
            // bit, another stream type)
            Look::NotYet { read_up_to } if read_up_to >= pending => pending = 0,
            Look::NotYet { .. } => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let sleep = (deadline - now).min(idle);
        backend::sleep_on_latch(sleep);
        pgrx::check_for_interrupts!();
    }
}

/// This backend's database.
pub fn current_database() -> u32 {
    backend::current_database()
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// The filter of a subscription's events: $5 event types, $6 stream type, $7 partitions, $2
/// partition (shared by the statements that read a partition's events, so they agree).
macro_rules! partition_filter {
    () => {
        "(($5)::text[] IS NULL OR e.event_type = ANY ($5))
          AND (($6)::text IS NULL OR EXISTS (SELECT 1 FROM es.streams s
                                              WHERE s.stream_id = e.stream_id AND s.stream_type = $6))
          AND ($7 = 1 OR es.stream_hash(e.stream_id) % $7 = $2)"
    };
}

/// [`POLL`] from `$source` (`es.events`, or [`all_events`] through the archive).
macro_rules! poll {
    ($source:expr) => {
        concat!(
            "SELECT e.* FROM ",
            $source,
            " e
              WHERE e.global_position > $3 AND e.global_position <= $4 AND ",
            partition_filter!(),
            " AND (NOT $8 OR NOT EXISTS (SELECT 1 FROM es.parked_events k
                                          WHERE k.subscription = $1
                                            AND k.stream_id = e.stream_id))
              ORDER BY e.global_position LIMIT $9"
        )
    };
}

/// [`POLL_REPLAYED`] from `$source` (`es.events`, or [`all_events`] through the archive).
macro_rules! poll_replayed {
    ($source:expr) => {
        concat!(
            "SELECT e.* FROM es.parked_events k
                    JOIN ",
            $source,
            " e ON e.global_position = k.global_position
                   WHERE k.subscription = $1 AND k.partition = $2 AND k.replay
                   ORDER BY k.global_position LIMIT $3"
        )
    };
}

/// [`PARK_BEHIND`] from `$source` (`es.events`, or [`all_events`] through the archive).
macro_rules! park_behind {
    ($source:expr) => {
        concat!(
            "INSERT INTO es.parked_events
                            (subscription, partition, global_position, stream_id, attempts, error)
                     SELECT $1, $2, e.global_position, e.stream_id, 0,
                            'parked behind position ' || k.first || ' of its stream'
                       FROM ",
                    $source,
                    " e
                       JOIN LATERAL (SELECT pg_catalog.min(k.global_position) AS first
                                       FROM es.parked_events k
                                      WHERE k.subscription = $1 AND k.stream_id = e.stream_id
                                        AND k.global_position < e.global_position) k
                         ON k.first IS NOT NULL
                      WHERE e.global_position > $3 AND e.global_position <= $4 AND ",
                    partition_filter!(),
                    " ON CONFLICT (subscription, global_position) DO NOTHING"
        )
    };
}

/// The columns of [`PARTITION_READ`] / [`PARTITION_LOCK`].
macro_rules! partition_read {
    ($lock:literal) => {
        concat!(
            "SELECT c.partitions, c.max_attempts, c.event_types, c.stream_type, p.checkpoint,
                    p.owner, coalesce(p.lease_until > pg_catalog.clock_timestamp(), false),
                    p.lease_until::text, p.head_position, p.head_attempts,
                    EXISTS (SELECT 1 FROM es.parked_events k WHERE k.subscription = c.name),
                    c.start_after
               FROM es.subscription_config c
               JOIN es.subscription_partitions p ON p.subscription = c.name AND p.partition = $2
              WHERE c.name = $1",
            $lock
        )
    };
}

/// Create a subscription (no row when the name is taken).
pub static SUBSCRIPTION_INSERT: Stmt = Stmt::new(
    "SubscriptionInsert",
    c"INSERT INTO es.subscription_config
                         (name, start_after, event_types, stream_type, partitions, max_attempts)
                  VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING 1",
    &[TEXTOID, INT8OID, TEXTARRAYOID, TEXTOID, INT4OID, INT4OID],
);

/// Create a subscription's partitions at its start position.
pub static PARTITIONS_INSERT: Stmt = Stmt::new(
    "PartitionsInsert",
    c"INSERT INTO es.subscription_partitions (subscription, partition, checkpoint)
                  SELECT $1, g, $2 FROM pg_catalog.generate_series(0, $3 - 1) g",
    &[TEXTOID, INT8OID, INT4OID],
);

/// Lock every partition row of a subscription (before a drop or a reset: a consumer's ack
/// or nack in flight commits first, and the statements after this see what it wrote).
pub static SUBSCRIPTION_LOCK: Stmt = Stmt::new(
    "SubscriptionLock",
    c"SELECT count(*) FROM (SELECT 1 FROM es.subscription_partitions
                                         WHERE subscription = $1 FOR UPDATE) p",
    &[TEXTOID],
);

/// Drop a subscription (and its partitions, parked events and projection); returns how many
/// subscriptions were dropped.
pub static SUBSCRIPTION_DROP: Stmt = Stmt::new(
    "SubscriptionDrop",
    c"WITH p AS (DELETE FROM es.subscription_partitions WHERE subscription = $1),
                       k AS (DELETE FROM es.parked_events WHERE subscription = $1),
                       u AS (DELETE FROM es.subscription_consumers WHERE subscription = $1),
                       j AS (DELETE FROM es.projection_config WHERE name = $1),
                       c AS (DELETE FROM es.subscription_config WHERE name = $1 RETURNING 1)
                  SELECT count(*) FROM c",
    &[TEXTOID],
);

/// The number of partitions of a subscription (no row: no such subscription).
pub static SUBSCRIPTION_PARTITIONS: Stmt = Stmt::new(
    "SubscriptionPartitions",
    c"SELECT partitions FROM es.subscription_config WHERE name = $1",
    &[TEXTOID],
);

/// The event types a subscription takes, one a row (none: every type), for `es.wait`'s filter.
pub static WAIT_EVENT_TYPES: Stmt = Stmt::new(
    "WaitEventTypes",
    c"SELECT t FROM es.subscription_config c, unnest(c.event_types) t WHERE c.name = $1",
    &[TEXTOID],
);

/// Whether a subscription belongs to a projection.
pub static IS_PROJECTION: Stmt = Stmt::new(
    "IsProjection",
    c"SELECT count(*) FROM es.projection_config WHERE name = $1",
    &[TEXTOID],
);

/// One partition with its subscription's settings, without locking.
pub static PARTITION_READ: Stmt = Stmt::new(
    "PartitionRead",
    cstr!(partition_read!("")),
    &[TEXTOID, INT4OID],
);

/// The same, locking the partition row (ack, nack).
pub static PARTITION_LOCK: Stmt = Stmt::new(
    "PartitionLock",
    cstr!(partition_read!(" FOR NO KEY UPDATE OF p")),
    &[TEXTOID, INT4OID],
);

/// A partition's next events after its checkpoint, up to a bound, filtered. Planned once
/// (generic): the custom plans the plan cache otherwise keeps choosing (a generic plan of its
/// `$n IS NULL OR …` filters looks dearer) are the same index scan of `global_position` with the
/// filters folded, and cost ~190k instructions of planning per call, most of a look of a
/// waiting poll (measured with callgrind).
pub static POLL: Stmt = Stmt::new(
    "Poll",
    cstr!(poll!("es.events")),
    &[
        TEXTOID,
        INT4OID,
        INT8OID,
        INT8OID,
        TEXTARRAYOID,
        TEXTOID,
        INT4OID,
        BOOLOID,
        INT4OID,
    ],
)
.generic_plan();

/// A partition's parked events that `es.replay_parked` put back, first.
pub static POLL_REPLAYED: Stmt = Stmt::new(
    "PollReplayed",
    cstr!(poll_replayed!("es.events")),
    &[TEXTOID, INT4OID, INT4OID],
);

/// Park the events in a range whose stream has a parked event before them.
pub static PARK_BEHIND: Stmt = Stmt::new(
    "ParkBehind",
    cstr!(park_behind!("es.events")),
    &[
        TEXTOID,
        INT4OID,
        INT8OID,
        INT8OID,
        TEXTARRAYOID,
        TEXTOID,
        INT4OID,
    ],
);

/// Forget the put-back parked events at or below an acked position.
pub static DELETE_REPLAYED: Stmt = Stmt::new(
    "DeleteReplayed",
    c"DELETE FROM es.parked_events
                   WHERE subscription = $1 AND partition = $2 AND replay AND global_position <= $3",
    &[TEXTOID, INT4OID, INT8OID],
);

/// Move a partition's checkpoint (and forget a failing head it passes).
pub static SET_CHECKPOINT: Stmt = Stmt::new(
    "SetCheckpoint",
    c"UPDATE es.subscription_partitions
                     SET checkpoint = greatest(checkpoint, $3),
                         head_position = CASE WHEN head_position <= $3 THEN NULL ELSE head_position END,
                         head_attempts = CASE WHEN head_position <= $3 THEN 0 ELSE head_attempts END,
                         head_error = CASE WHEN head_position <= $3 THEN NULL ELSE head_error END,
                         updated_at = pg_catalog.transaction_timestamp()
                   WHERE subscription = $1 AND partition = $2",
                &[TEXTOID, INT4OID, INT8OID],
);

/// Record a failed attempt of a partition's head event.
pub static SET_HEAD: Stmt = Stmt::new(
    "SetHead",
    c"UPDATE es.subscription_partitions
                     SET head_position = $3, head_attempts = $4, head_error = $5,
                         updated_at = pg_catalog.transaction_timestamp()
                   WHERE subscription = $1 AND partition = $2",
    &[TEXTOID, INT4OID, INT8OID, INT4OID, TEXTOID],
);

/// The stream of an event.
pub static EVENT_STREAM: Stmt = Stmt::new(
    "EventStream",
    c"SELECT stream_id FROM es.events WHERE global_position = $1",
    &[INT8OID],
);

/// Park one event (or park a put-back one again).
pub static PARK_ONE: Stmt = Stmt::new(
    "ParkOne",
    c"INSERT INTO es.parked_events
                         (subscription, partition, global_position, stream_id, attempts, error)
                  VALUES ($1, $2, $3, $4, $5, $6)
                  ON CONFLICT (subscription, global_position) DO UPDATE
                  SET attempts = excluded.attempts, error = excluded.error, replay = false,
                      parked_at = excluded.parked_at",
    &[TEXTOID, INT4OID, INT8OID, UUIDOID, INT4OID, TEXTOID],
);

/// Whether a parked event was put back (`es.replay_parked`) and is being retried.
pub static IS_REPLAYED: Stmt = Stmt::new(
    "IsReplayed",
    c"SELECT count(*) FROM es.parked_events
                   WHERE subscription = $1 AND partition = $2 AND global_position = $3 AND replay",
    &[TEXTOID, INT4OID, INT8OID],
);

/// Records the caller as a live consumer of a subscription until its lease ends, forgets the
/// consumers whose time ran out, and counts the other live ones.
pub static LIVE_CONSUMERS: Stmt = Stmt::new(
    "LiveConsumers",
    c"WITH seen AS (
                      INSERT INTO es.subscription_consumers AS c (subscription, consumer, seen_until)
                      VALUES ($1, $2, pg_catalog.clock_timestamp() + $3)
                      ON CONFLICT (subscription, consumer) DO UPDATE SET seen_until = excluded.seen_until),
                       gone AS (
                      DELETE FROM es.subscription_consumers
                       WHERE subscription = $1 AND consumer <> $2
                         AND seen_until < pg_catalog.clock_timestamp())
                  SELECT count(*) FROM es.subscription_consumers
                   WHERE subscription = $1 AND consumer <> $2
                     AND seen_until >= pg_catalog.clock_timestamp()",
                &[TEXTOID, TEXTOID, INTERVALOID],
);

/// Extend the caller's live leases; returns their partitions.
pub static RENEW_LEASES: Stmt = Stmt::new(
    "RenewLeases",
    c"UPDATE es.subscription_partitions
                     SET lease_until = pg_catalog.clock_timestamp() + $3,
                         updated_at = pg_catalog.transaction_timestamp()
                   WHERE subscription = $1 AND owner = $2
                     AND lease_until > pg_catalog.clock_timestamp()",
    &[TEXTOID, TEXTOID, INTERVALOID],
);

/// Take up to n free or expired partitions.
pub static TAKE_PARTITIONS: Stmt = Stmt::new(
    "TakePartitions",
    c"UPDATE es.subscription_partitions p
                     SET owner = $2, lease_until = pg_catalog.clock_timestamp() + $3,
                         updated_at = pg_catalog.transaction_timestamp()
                   WHERE p.subscription = $1
                     AND (p.owner IS NULL OR p.lease_until IS NULL
                          OR p.lease_until <= pg_catalog.clock_timestamp())
                     AND p.partition IN (
                         SELECT q.partition FROM es.subscription_partitions q
                          WHERE q.subscription = $1
                            AND (q.owner IS NULL OR q.lease_until IS NULL
                                 OR q.lease_until <= pg_catalog.clock_timestamp())
                          ORDER BY q.partition LIMIT $4 FOR UPDATE SKIP LOCKED)",
    &[TEXTOID, TEXTOID, INTERVALOID, INT4OID],
);

/// Give up the caller's n highest partitions (more than its share).
pub static SHED_PARTITIONS: Stmt = Stmt::new(
    "ShedPartitions",
    c"UPDATE es.subscription_partitions p
                     SET owner = NULL, lease_until = NULL,
                         updated_at = pg_catalog.transaction_timestamp()
                   WHERE p.subscription = $1 AND p.owner = $2
                     AND p.partition IN (
                         SELECT q.partition FROM es.subscription_partitions q
                          WHERE q.subscription = $1 AND q.owner = $2
                          ORDER BY q.partition DESC LIMIT $3)",
    &[TEXTOID, TEXTOID, INT4OID],
);

/// The partitions the caller holds.
pub static HELD_PARTITIONS: Stmt = Stmt::new(
    "HeldPartitions",
    c"SELECT partition, lease_until FROM es.subscription_partitions
                   WHERE subscription = $1 AND owner = $2
                     AND lease_until > pg_catalog.clock_timestamp()
                   ORDER BY partition",
    &[TEXTOID, TEXTOID],
);

/// Release every partition of a consumer.
pub static RELEASE_PARTITIONS: Stmt = Stmt::new(
    "ReleasePartitions",
    c"WITH u AS (DELETE FROM es.subscription_consumers
                              WHERE subscription = $1 AND consumer = $2)
                  UPDATE es.subscription_partitions
                     SET owner = NULL, lease_until = NULL,
                         updated_at = pg_catalog.transaction_timestamp()
                   WHERE subscription = $1 AND owner = $2",
    &[TEXTOID, TEXTOID],
);

/// Put a subscription's parked events back in front of its consumers.
pub static REPLAY_PARKED: Stmt = Stmt::new(
    "ReplayParked",
    c"UPDATE es.parked_events SET replay = true WHERE subscription = $1 AND NOT replay",
    &[TEXTOID],
);

/// [`POLL`] through the archive.
pub static POLL_ARCHIVED: Stmt = Stmt::new(
    "PollArchived",
    cstr!(poll!(all_events!())),
    &[
        TEXTOID,
        INT4OID,
        INT8OID,
        INT8OID,
        TEXTARRAYOID,
        TEXTOID,
        INT4OID,
        BOOLOID,
        INT4OID,
    ],
)
.generic_plan();

/// [`POLL_REPLAYED`] through the archive.
pub static POLL_REPLAYED_ARCHIVED: Stmt = Stmt::new(
    "PollReplayedArchived",
    cstr!(poll_replayed!(all_events!())),
    &[TEXTOID, INT4OID, INT4OID],
);

/// [`PARK_BEHIND`] through the archive.
pub static PARK_BEHIND_ARCHIVED: Stmt = Stmt::new(
    "ParkBehindArchived",
    cstr!(park_behind!(all_events!())),
    &[
        TEXTOID,
        INT4OID,
        INT8OID,
        INT8OID,
        TEXTARRAYOID,
        TEXTOID,
        INT4OID,
    ],
);

/// [`EVENT_STREAM`] through the archive.
pub static EVENT_STREAM_ARCHIVED: Stmt = Stmt::new(
    "EventStreamArchived",
    cstr!(concat!(
        "SELECT stream_id FROM ",
        all_events!(),
        " e WHERE global_position = $1"
    )),
    &[INT8OID],
);
