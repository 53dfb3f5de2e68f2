//! Subscriptions (docs/reference.md §9): durable, partitioned checkpoints over the global log, with leases
//! for competing consumers, failed attempts, parking, and waiting without polling.
//!
//! The state lives in tables (`es.subscription_config`, `es.subscription_partitions`,
//! `es.parked_events`), so every change runs in the caller's transaction: a consumer that
//! writes its read model and acks in one transaction handles each event exactly once. Reads are
//! gap-safe exactly like `es.read_all` ([`super::read::readable`]). The decisions (fencing,
//! fair shares, attempts) are the core's `event_store_core::subscription`.

use super::read::{readable, readable_end};
use crate::pg::call::{ResultSet, i64_datum, text_datum, uuid_datum};
use crate::pg::positions::{Horizon, Waiter, wake_waiters};
use crate::pg::spi::{Arg, Connection, Rows, Stmt};
use crate::pg::{server, settings};
use event_store_core::EventStoreError;
use event_store_core::subscription::{
    Lease, NackOutcome, SubscriptionSpec, check_consumer, check_count, check_lease,
    check_partition, fair_share, nack as count_attempt,
};
use pgrx::pg_sys::{self, Datum};
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
        Stmt::PartitionLock
    } else {
        Stmt::PartitionRead
    };
    let rows = conn.execute(
        stmt,
        &[Some(text_datum(name)), Some(Datum::from(partition))],
    );
    if rows.is_empty() {
        let partitions = conn
            .execute(Stmt::SubscriptionPartitions, &[Some(text_datum(name))])
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

/// `es.create_subscription` (also the subscription of a projection).
pub fn create(
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
        Stmt::SubscriptionInsert,
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
        Stmt::PartitionsInsert,
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
        .execute(Stmt::SubscriptionDrop, &[Some(text_datum(name))])
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
    conn.execute(Stmt::SubscriptionLock, &[Some(text_datum(name))]);
}

/// Whether `name` is a projection's subscription.
pub fn is_projection(conn: &Connection, name: &str) -> bool {
    conn.execute(Stmt::IsProjection, &[Some(text_datum(name))])
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
                Stmt::PollReplayedArchived
            } else {
                Stmt::PollReplayed
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
                Stmt::PollArchived
            } else {
                Stmt::Poll
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

/// `es.poll`.
pub fn poll(
    name: &str,
    partition: i32,
    max: i64,
    consumer: Option<&str>,
    out: &mut ResultSet,
) -> Result<(), EventStoreError> {
    check_count("max_count", max)?;
    // A batch of more than 2^31 - 1 rows cannot be returned anyway: a larger count is "all".
    let max = i32::try_from(max).unwrap_or(i32::MAX);
    let conn = Connection::connect();
    let p = load(&conn, name, partition, false)?;
    check_lease(name, partition, &p.lease, consumer)?;
    let horizon = readable(&conn, "es.poll")?;
    if !super::read::upcasting(out) {
        for rows in next_events(&conn, &p, max, &horizon) {
            rows.copy_into(out);
        }
        return Ok(());
    }
    crate::pg::udf::isolated(|| {
        for rows in next_events(&conn, &p, max, &horizon) {
            rows.copy_into(out);
        }
        out.take_error()
    })
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
            conn.execute(Stmt::DeleteReplayed, &key);
        }
        return;
    }
    if any_parked {
        conn.execute(
            if super::read::through_archive() {
                Stmt::ParkBehindArchived
            } else {
                Stmt::ParkBehind
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
        conn.execute(Stmt::DeleteReplayed, &key);
    }
    conn.execute(Stmt::SetCheckpoint, &key);
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
    let replayed = p.any_parked
        && conn
            .execute(Stmt::IsReplayed, &key)
            .first_i64()
            .unwrap_or(0)
            > 0;
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
                Stmt::EventStreamArchived
            } else {
                Stmt::EventStream
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
                Stmt::SetHead,
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
                Stmt::ParkOne,
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
                    Stmt::SetHead,
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
        .execute(Stmt::LiveConsumers, &[who[0], who[1], Some(lease)])
        .first_i64()
        .unwrap_or(0) as i32;
    let share = fair_share(partitions, others + 1);
    let held = conn
        .execute(Stmt::RenewLeases, &[who[0], who[1], Some(lease)])
        .len() as i32;
    if held < share {
        conn.execute(
            Stmt::TakePartitions,
            &[who[0], who[1], Some(lease), Some(Datum::from(share - held))],
        );
    } else if held > share {
        conn.execute(
            Stmt::ShedPartitions,
            &[who[0], who[1], Some(Datum::from(held - share))],
        );
    }
    conn.execute(Stmt::HeldPartitions, &who).copy_into(out);
    Ok(())
}

/// `es.release`: how many partitions the consumer gave up.
pub fn release(name: &str, consumer: &str) -> Result<i64, EventStoreError> {
    let conn = Connection::connect();
    subscription_partitions(&conn, name)?;
    Ok(conn
        .execute(
            Stmt::ReleasePartitions,
            &[Some(text_datum(name)), Some(text_datum(consumer))],
        )
        .len() as i64)
}

/// `es.replay_parked`: how many parked events were put back.
pub fn replay_parked(name: &str) -> Result<i64, EventStoreError> {
    let conn = Connection::connect();
    subscription_partitions(&conn, name)?;
    let n = conn
        .execute(Stmt::ReplayParked, &[Some(text_datum(name))])
        .len() as i64;
    wake_waiters(current_database());
    Ok(n)
}

fn subscription_partitions(conn: &Connection, name: &str) -> Result<i32, EventStoreError> {
    conn.execute(Stmt::SubscriptionPartitions, &[Some(text_datum(name))])
        .first_i64()
        .map(|n| n as i32)
        .ok_or_else(|| no_such("subscription", name))
}

/// `es.wait`: true as soon as the partition has a readable event, false at the timeout.
pub fn wait(name: &str, partition: i32, timeout_ms: i32) -> Result<bool, EventStoreError> {
    check_timeout(timeout_ms)?;
    sleep_until(timeout_ms, || {
        let conn = Connection::connect();
        let p = load(&conn, name, partition, false)?;
        let horizon = readable(&conn, "es.wait")?;
        Ok(next_events(&conn, &p, 1, &horizon)
            .iter()
            .any(|rows| !rows.is_empty()))
    })
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
    let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
    let waiter = Waiter::new();
    let idle = if server::in_recovery() {
        Duration::from_millis(settings::WATERMARK_INTERVAL.get().max(1) as u64)
    } else {
        Duration::from_secs(1)
    };
    loop {
        waiter.arm();
        if ready()? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let sleep = (deadline - now).min(idle);
        // SAFETY: waits on this backend's own latch (MyLatch), then resets it, as every
        // latch loop in PostgreSQL does; an interrupt is handled by CHECK_FOR_INTERRUPTS.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                sleep.as_millis().max(1) as i64,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
}

/// This backend's database.
pub fn current_database() -> u32 {
    // SAFETY: set at connection, constant afterwards.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}
