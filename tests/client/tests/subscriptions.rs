//! Durable subscriptions, the event bus inside the store (docs/reference.md §9, issue 11 items 1, 2, 6, 7),
//! driven the way real consumers drive them: several connections at once, real leases, a backend
//! killed between a handler's write and its COMMIT, writers that commit out of position order.
//!
//! - `competing_consumers_share_partitions_and_a_consumer_whose_lease_expired_is_fenced`: a
//!   subscription with 4 partitions; consumer C claims them all with a 1-second lease, handles a
//!   few events, stalls past its lease; A and B claim the partitions between them and C's poll,
//!   ack, nack and claim now fail or come back empty (`ES201`: fencing); A and B drain their
//!   partitions in parallel while a writer keeps appending. Each event is handled exactly once, by
//!   the owner of its partition, in per-stream order, and every checkpoint reaches its partition's
//!   end; `es.release` frees a consumer's partitions for the other.
//! - `two_consumers_claiming_in_turn_get_two_partitions_each`: the fair share of `es.claim`.
//! - `a_consumer_killed_between_its_write_and_commit_handles_every_event_exactly_once`: the
//!   consumer writes a read-model row per event and acks in the same transaction; its backend is
//!   terminated (`pg_terminate_backend`) or SIGKILLed (a crash restart of the cluster) after the
//!   writes and the ack, before COMMIT; it reconnects and continues. The read model ends with one
//!   row per event, and a killed transaction never moved the checkpoint.
//! - `a_poison_event_is_parked_with_its_stream_held_back_and_replayed_in_order`: `max_attempts`
//!   2, two nacks park the event (the second nack returns true), `es.parked_events` shows it with
//!   the error, later events of its stream are held back (and parked behind it once acked past)
//!   while another stream flows; `es.replay_parked` puts them back first and the consumer ends
//!   with every event handled once, in per-stream order.
//! - `poll_never_skips_events_that_commit_out_of_order`: 8 writers commit out of position order
//!   (0–30 ms sleep before COMMIT, as in read_all_gap_safe.rs); a one-partition subscription and a
//!   four-partition one are drained concurrently with poll + ack in batches of 100: each consumer
//!   sees every committed event of its partition exactly once, in increasing position order.
//! - `wait_wakes_on_an_append_to_its_partition_and_times_out_when_idle`: `es.wait` on a
//!   subscription made with `start_after => NULL` returns false at a short timeout while idle and
//!   true once an event lands in its partition (a waiter on the other partition stays false).
//! - `a_filtered_wait_returns_an_event_that_was_behind_an_append_of_another_type`: `es.wait` on
//!   a subscription of one event type, whose event commits above a position still in flight in
//!   an append of another type: it returns true once that append commits, or rolls back.
//! - `a_waiting_poll_returns_the_events_it_waited_for`: `es.poll(…, wait_ms)` inside a batch
//!   transaction (READ COMMITTED, REPEATABLE READ, SERIALIZABLE) returns the event that commits
//!   while it sleeps from the same call, and one committed above a lower append in flight only
//!   once that append commits; empty at its timeout when idle.
//! - `stream_hash_is_fnv1a_of_the_uuid_bytes`: the documented, stable partitioning hash.
//! - `bad_subscription_calls_fail_with_stable_sqlstates`: `ES202`, `22023` (with the value) and
//!   `42710`, and an ack of an older position is a no-op.
//! - `a_nack_names_the_head_and_cannot_skip_the_events_before_it`: `es.nack` of an event behind
//!   the partition's head is refused (22023) instead of parking it and skipping the ones before.
//!
//! Stream ids are fixed (`Uuid::from_u128`), so which partition a stream lands in is the same on
//! every run. The crash test restarts every backend of the cluster: run.sh runs the suite one test
//! at a time. Needs `shared_preload_libraries = 'event_store'` (ES_PRELOAD=1).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{
    Client, Error, TestDb, Uuid, append, assert_preloaded, bigints, connect_with_retry, describe,
    expect_sqlstate, kill_9, message_and_detail, position_of,
};
use postgres::GenericClient;
use postgres::types::ToSql;
use rand::Rng;

/// Bound for the cluster to accept connections again after a crash restart.
const RECOVER_WITHIN: Duration = Duration::from_secs(60);
/// Bound for consumers to drain what was written.
const DRAIN_WITHIN: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One event as a consumer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ev {
    position: i64,
    stream: Uuid,
    version: i64,
}

/// A fixed stream id: `tag` names the test, `n` the stream.
fn stream_id(tag: u32, n: u32) -> Uuid {
    Uuid::from_u128(((0x5ab5_0000_u128 + u128::from(tag)) << 96) | u128::from(n))
}

/// The documented partitioning hash (docs/reference.md §9, issue 11 contract): FNV-1a 32-bit over the uuid's
/// 16 bytes, masked to 31 bits.
fn fnv1a_31(id: Uuid) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in id.as_bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h & 0x7fff_ffff) as i32
}

/// The partition of `stream` in a subscription with `partitions` partitions.
fn partition_of(stream: Uuid, partitions: i32) -> i32 {
    fnv1a_31(stream) % partitions
}

/// Picks `per_partition` fixed stream ids for each of `partitions` partitions (the first
/// candidates `stream_id(tag, 0..)` that land there).
fn streams_per_partition(
    tag: u32,
    partitions: i32,
    per_partition: usize,
) -> BTreeMap<i32, Vec<Uuid>> {
    let mut picked: BTreeMap<i32, Vec<Uuid>> = (0..partitions).map(|p| (p, Vec::new())).collect();
    for n in 0.. {
        if picked.values().all(|v| v.len() == per_partition) {
            break;
        }
        let id = stream_id(tag, n);
        let list = picked
            .get_mut(&partition_of(id, partitions))
            .expect("partition");
        if list.len() < per_partition {
            list.push(id);
        }
    }
    picked
}

/// Runs a statement that must succeed, returning its rows.
fn rows(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Vec<postgres::Row> {
    client
        .query(sql, params)
        .unwrap_or_else(|e| panic!("{sql} failed: {}", describe(&e)))
}

/// Appends events of type `Noted` (`{"type":"Noted","n":i,...extra}`) to `stream`, no version check.
fn note(client: &mut impl GenericClient, stream: Uuid, first: i64, count: i64, extra: &str) -> i64 {
    let events: Vec<String> = (first..first + count)
        .map(|i| format!(r#"{{"type":"Noted","n":{i}{extra}}}"#))
        .collect();
    append(client, stream, None, &events)
        .unwrap_or_else(|e| panic!("append to {stream}: {}", describe(&e)))
}

/// `es.poll(name, partition, max_count, consumer)`, in the order the function returns them.
fn poll(
    client: &mut impl GenericClient,
    name: &str,
    partition: i32,
    max_count: i64,
    consumer: Option<&str>,
) -> Result<Vec<Ev>, Error> {
    Ok(client
        .query(
            "SELECT p.global_position, p.stream_id, p.version \
             FROM es.poll($1, $2, $3, $4) WITH ORDINALITY AS p ORDER BY p.ordinality",
            &[&name, &partition, &max_count, &consumer],
        )?
        .iter()
        .map(|r| Ev {
            position: r.get(0),
            stream: r.get(1),
            version: r.get(2),
        })
        .collect())
}

/// `es.ack(name, partition, position, consumer)`: the checkpoint afterwards.
fn ack(
    client: &mut impl GenericClient,
    name: &str,
    partition: i32,
    position: i64,
    consumer: Option<&str>,
) -> Result<i64, Error> {
    Ok(client
        .query_one(
            "SELECT es.ack($1, $2, $3, $4)",
            &[&name, &partition, &position, &consumer],
        )?
        .get(0))
}

/// `es.nack(name, partition, position, error, consumer)`: whether the event was parked.
fn nack(
    client: &mut impl GenericClient,
    name: &str,
    partition: i32,
    position: i64,
    error: &str,
    consumer: Option<&str>,
) -> Result<bool, Error> {
    Ok(client
        .query_one(
            "SELECT es.nack($1, $2, $3, $4, $5)",
            &[&name, &partition, &position, &error, &consumer],
        )?
        .get(0))
}

/// `es.claim(name, consumer, lease)`: the partitions held afterwards (its first column), sorted.
fn claim(
    client: &mut impl GenericClient,
    name: &str,
    consumer: &str,
    lease: &str,
) -> Result<BTreeSet<i32>, Error> {
    Ok(client
        .query(
            "SELECT * FROM es.claim($1, $2, $3::text::interval) ORDER BY 1",
            &[&name, &consumer, &lease],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// A partition's row of `es.subscriptions`.
#[derive(Debug, PartialEq)]
struct PartitionRow {
    checkpoint: i64,
    events_behind: i64,
    owner: Option<String>,
    head_attempts: i64,
    parked: i64,
}

/// The rows of `es.subscriptions` for `name`, by partition.
fn subscription_rows(client: &mut impl GenericClient, name: &str) -> BTreeMap<i32, PartitionRow> {
    rows(
        client,
        "SELECT partition::int, checkpoint::bigint, events_behind::bigint, owner::text, \
                head_attempts::bigint, parked::bigint \
         FROM es.subscriptions WHERE name = $1 ORDER BY partition",
        &[&name],
    )
    .iter()
    .map(|r| {
        (
            r.get(0),
            PartitionRow {
                checkpoint: r.get(1),
                events_behind: r.get(2),
                owner: r.get(3),
                head_attempts: r.get(4),
                parked: r.get(5),
            },
        )
    })
    .collect()
}

/// The checkpoint of one partition, from `es.subscriptions`.
fn checkpoint(client: &mut impl GenericClient, name: &str, partition: i32) -> i64 {
    subscription_rows(client, name)
        .remove(&partition)
        .unwrap_or_else(|| panic!("es.subscriptions has no row for {name}/{partition}"))
        .checkpoint
}

/// Asserts that `handled` (in handling order) holds each stream's versions 1..=n in order.
fn assert_per_stream_order(handled: &[Ev], what: &str) {
    let mut next: BTreeMap<Uuid, i64> = BTreeMap::new();
    for ev in handled {
        let want = next.entry(ev.stream).or_insert(1);
        assert_eq!(
            ev.version, *want,
            "{what}: stream {} handled version {} when {} was next (position {})",
            ev.stream, ev.version, want, ev.position
        );
        *want += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// (a) competing consumers with leases and fencing
// ---------------------------------------------------------------------------------------------

/// Partitions of the competing-consumers subscription.
const CC_PARTITIONS: i32 = 4;
/// Streams per partition.
const CC_STREAMS_PER_PARTITION: usize = 4;
/// Events per stream appended before the consumers start.
const CC_INITIAL: i64 = 4;
/// Events per stream the writer appends while the consumers run (in appends of 2).
const CC_LATER: i64 = 4;

/// Handles up to 10 events of one partition in one transaction: a row in `cc_handled` per event,
/// then the ack. Returns how many it handled.
fn handle_batch(client: &mut Client, me: &str, partition: i32) -> Result<usize, Error> {
    let mut tx = client.transaction()?;
    let batch = poll(&mut tx, "workers", partition, 10, Some(me))?;
    for ev in &batch {
        tx.execute(
            "INSERT INTO cc_handled (global_position, stream_id, version, partition, consumer) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&ev.position, &ev.stream, &ev.version, &partition, &me],
        )?;
    }
    if let Some(last) = batch.last() {
        let at = ack(&mut tx, "workers", partition, last.position, Some(me))?;
        assert_eq!(
            at, last.position,
            "{me}: ack of {partition} at {}",
            last.position
        );
    }
    tx.commit()?;
    Ok(batch.len())
}

#[test]
fn competing_consumers_share_partitions_and_a_consumer_whose_lease_expired_is_fenced() {
    let db = TestDb::new("sub_compete");
    let mut admin = db.connect();
    assert_preloaded(&mut admin);
    admin
        .batch_execute(
            "CREATE TABLE cc_handled (seq bigserial PRIMARY KEY, global_position bigint NOT NULL, \
               stream_id uuid NOT NULL, version bigint NOT NULL, partition int NOT NULL, \
               consumer text NOT NULL); \
             SELECT es.create_subscription('workers', partitions => 4)",
        )
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));

    let by_partition = streams_per_partition(1, CC_PARTITIONS, CC_STREAMS_PER_PARTITION);
    let streams: Vec<Uuid> = by_partition.values().flatten().copied().collect();
    for (i, &s) in streams.iter().enumerate() {
        note(&mut admin, s, 1, CC_INITIAL, &format!(r#","stream":{i}"#));
    }

    // C alone claims everything with a short lease, handles 3 events of its first partition,
    // picks up the next ones and stalls past its lease.
    let mut c = db.connect();
    let c_held = claim(&mut c, "workers", "C", "1 second")
        .unwrap_or_else(|e| panic!("claim by C: {}", describe(&e)));
    assert_eq!(
        c_held,
        (0..CC_PARTITIONS).collect(),
        "a lone consumer claiming a fresh subscription gets every partition"
    );
    let pc = *c_held.first().expect("C holds a partition");
    let first = poll(&mut c, "workers", pc, 3, Some("C"))
        .unwrap_or_else(|e| panic!("poll by C: {}", describe(&e)));
    assert_eq!(first.len(), 3, "C's first poll of partition {pc}");
    {
        let mut tx = c.transaction().expect("BEGIN");
        for ev in &first {
            tx.execute(
                "INSERT INTO cc_handled (global_position, stream_id, version, partition, consumer) \
                 VALUES ($1, $2, $3, $4, 'C')",
                &[&ev.position, &ev.stream, &ev.version, &pc],
            )
            .expect("C's handler");
        }
        ack(&mut tx, "workers", pc, first[2].position, Some("C"))
            .unwrap_or_else(|e| panic!("ack by C: {}", describe(&e)));
        tx.commit().expect("C's COMMIT");
    }
    let c_checkpoint = first[2].position;
    let in_progress = poll(&mut c, "workers", pc, 3, Some("C"))
        .unwrap_or_else(|e| panic!("second poll by C: {}", describe(&e)));
    assert!(
        !in_progress.is_empty(),
        "partition {pc} has more events for C"
    );
    thread::sleep(Duration::from_millis(2_000));

    // A and B claim (twice each, so a rebalancing design can settle): together they must hold
    // every partition, never one at the same time. The fair share itself (2 + 2) is checked by
    // `two_consumers_claiming_in_turn_get_two_partitions_each`.
    let mut a = db.connect();
    let mut b = db.connect();
    let (a_held, b_held, history) = claim_in_turns(&mut a, &mut b, "workers");
    assert_eq!(
        a_held.union(&b_held).copied().collect::<BTreeSet<i32>>(),
        (0..CC_PARTITIONS).collect(),
        "A and B together must hold every partition once C's leases expired; claims of (A, B) \
         in turns: {history:?}"
    );
    let owner_of: BTreeMap<i32, &str> = a_held
        .iter()
        .map(|&p| (p, "A"))
        .chain(b_held.iter().map(|&p| (p, "B")))
        .collect();
    let pc_owner = owner_of[&pc];

    // C lost its lease: fenced on poll, ack and nack; its claim finds nothing free.
    let next = in_progress[0].position;
    let sqls: [(&str, Vec<&(dyn ToSql + Sync)>); 3] = [
        ("SELECT * FROM es.poll('workers', $1, 10, 'C')", vec![&pc]),
        ("SELECT es.ack('workers', $1, $2, 'C')", vec![&pc, &next]),
        (
            "SELECT es.nack('workers', $1, $2, 'handler failed', 'C')",
            vec![&pc, &next],
        ),
    ];
    for (sql, params) in &sqls {
        let (message, detail) = message_and_detail(&expect_sqlstate(&mut c, sql, params, "ES201"));
        assert!(
            detail.contains(pc_owner) || message.contains(pc_owner),
            "{sql}: ES201 must name the owner {pc_owner:?}: message {message:?}, DETAIL {detail:?}"
        );
    }
    // No consumer named at all is fenced too, and so is A on B's partition.
    expect_sqlstate(
        &mut admin,
        "SELECT * FROM es.poll('workers', $1, 10)",
        &[&pc],
        "ES201",
    );
    let other = (pc + 1) % CC_PARTITIONS;
    let intruder = if owner_of[&other] == "A" { "B" } else { "A" };
    let (message, detail) = message_and_detail(&expect_sqlstate(
        &mut admin,
        "SELECT es.ack('workers', $1, $2, $3)",
        &[&other, &next, &intruder],
        "ES201",
    ));
    assert!(
        detail.contains(owner_of[&other]) || message.contains(owner_of[&other]),
        "ES201 must name the owner {}: {message:?} / {detail:?}",
        owner_of[&other]
    );
    assert_eq!(
        checkpoint(&mut admin, "workers", pc),
        c_checkpoint,
        "the fenced ack must not move the checkpoint"
    );
    let c_again = claim(&mut c, "workers", "C", "1 second")
        .unwrap_or_else(|e| panic!("claim by C again: {}", describe(&e)));
    assert!(
        c_again.is_empty(),
        "C must get nothing while A and B hold live leases on every partition, got {c_again:?}"
    );

    // A and B drain in parallel while a writer appends more; each renews its lease every round.
    let expected_total = streams.len() as i64 * (CC_INITIAL + CC_LATER);
    let writer_done = AtomicBool::new(false);
    let mut writer = db.connect();
    thread::scope(|scope| {
        let writer_done = &writer_done;
        let streams = &streams;
        scope.spawn(move || {
            for round in 0..CC_LATER / 2 {
                for &s in streams {
                    note(&mut writer, s, CC_INITIAL + 1 + 2 * round, 2, "");
                }
                thread::sleep(Duration::from_millis(20));
            }
            writer_done.store(true, Ordering::SeqCst);
        });
        for (me, held, client) in [("A", &a_held, &mut a), ("B", &b_held, &mut b)] {
            scope.spawn(move || {
                let deadline = Instant::now() + DRAIN_WITHIN;
                loop {
                    let renewed = claim(client, "workers", me, "30 seconds")
                        .unwrap_or_else(|e| panic!("{me}: renewing its claim: {}", describe(&e)));
                    assert_eq!(&renewed, held, "{me}: its partitions changed on renewal");
                    let mut handled = 0;
                    for &p in held {
                        handled += handle_batch(client, me, p).unwrap_or_else(|e| {
                            panic!("{me}: handling partition {p}: {}", describe(&e))
                        });
                    }
                    if handled == 0 {
                        let total: i64 = client
                            .query_one("SELECT count(*) FROM cc_handled", &[])
                            .expect("count")
                            .get(0);
                        if total >= expected_total {
                            return;
                        }
                        thread::sleep(Duration::from_millis(5));
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{me}: the events were not all handled within {DRAIN_WITHIN:?}"
                    );
                }
            });
        }
    });

    // Exactly once, by the owner of the partition, in per-stream order.
    let stored = bigints(
        &mut admin,
        "SELECT global_position FROM es.events ORDER BY 1",
        &[],
    );
    assert_eq!(stored.len() as i64, expected_total, "events stored");
    let handled_positions = bigints(
        &mut admin,
        "SELECT global_position FROM cc_handled ORDER BY 1",
        &[],
    );
    assert_eq!(
        handled_positions, stored,
        "every event must be handled exactly once (handled positions vs stored positions)"
    );
    let handled: Vec<(Ev, i32, String)> = rows(
        &mut admin,
        "SELECT global_position, stream_id, version, partition, consumer FROM cc_handled \
         ORDER BY seq",
        &[],
    )
    .iter()
    .map(|r| {
        (
            Ev {
                position: r.get(0),
                stream: r.get(1),
                version: r.get(2),
            },
            r.get(3),
            r.get(4),
        )
    })
    .collect();
    for (ev, partition, consumer) in &handled {
        assert_eq!(
            *partition,
            partition_of(ev.stream, CC_PARTITIONS),
            "event {ev:?} was handled as part of the wrong partition"
        );
        let expected_owner = if first.iter().any(|f| f.position == ev.position) {
            "C"
        } else {
            owner_of[partition]
        };
        assert_eq!(
            consumer, expected_owner,
            "event {ev:?} of partition {partition} was handled by a consumer that did not own it"
        );
    }
    let in_order: Vec<Ev> = handled.iter().map(|(ev, _, _)| *ev).collect();
    assert_per_stream_order(&in_order, "competing consumers");

    // Every checkpoint at its partition's end, owned by A or B; release frees A's partitions.
    let ends: BTreeMap<i32, i64> = rows(
        &mut admin,
        "SELECT es.stream_hash(stream_id) % 4, max(global_position) FROM es.events \
         GROUP BY 1 ORDER BY 1",
        &[],
    )
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let view = subscription_rows(&mut admin, "workers");
    assert_eq!(
        view.len(),
        4,
        "es.subscriptions rows of 'workers': {view:?}"
    );
    for (p, row) in &view {
        assert_eq!(
            row.checkpoint, ends[p],
            "partition {p}: checkpoint vs its last event"
        );
        assert_eq!(
            row.events_behind, 0,
            "partition {p}: events behind ({row:?})"
        );
        assert_eq!(
            row.owner.as_deref(),
            Some(owner_of[p]),
            "partition {p}: owner"
        );
    }
    // C gives up too (it holds nothing, but its last claim counts it as a consumer for a lease).
    let released_by_c: i32 = admin
        .query_one("SELECT es.release('workers', 'C')", &[])
        .unwrap_or_else(|e| panic!("es.release by C: {}", describe(&e)))
        .get(0);
    assert_eq!(released_by_c, 0, "C holds no partition any more");
    let released: i32 = admin
        .query_one("SELECT es.release('workers', 'A')", &[])
        .unwrap_or_else(|e| panic!("es.release: {}", describe(&e)))
        .get(0);
    assert_eq!(
        released,
        a_held.len() as i32,
        "es.release('workers', 'A') returns the number of partitions released"
    );
    let view = subscription_rows(&mut admin, "workers");
    for p in &a_held {
        assert_eq!(view[p].owner, None, "partition {p} after A released it");
    }
    let b_now = claim(&mut admin, "workers", "B", "30 seconds")
        .unwrap_or_else(|e| panic!("claim by B after the release: {}", describe(&e)));
    assert_eq!(
        b_now,
        (0..CC_PARTITIONS).collect(),
        "the only live consumer takes the released partitions too"
    );
}

/// The partitions a consumer holds.
type Holding = BTreeSet<i32>;
/// Who claimed, in turn, and what they held afterwards.
type Turns = Vec<(&'static str, Holding)>;

/// A claims, B claims, A claims again, B claims again (30-second leases); asserts after every
/// claim that the two never hold a partition at the same time. Returns the last holdings and the
/// whole sequence (for messages).
fn claim_in_turns(a: &mut Client, b: &mut Client, name: &str) -> (Holding, Holding, Turns) {
    let mut history = Vec::new();
    let (mut a_held, mut b_held) = (BTreeSet::new(), BTreeSet::new());
    for _turn in 0..2 {
        a_held = claim(a, name, "A", "30 seconds")
            .unwrap_or_else(|e| panic!("claim by A: {}", describe(&e)));
        history.push(("A", a_held.clone()));
        assert!(
            a_held.is_disjoint(&b_held),
            "A and B hold a partition at the same time: {history:?}"
        );
        b_held = claim(b, name, "B", "30 seconds")
            .unwrap_or_else(|e| panic!("claim by B: {}", describe(&e)));
        history.push(("B", b_held.clone()));
        assert!(
            a_held.is_disjoint(&b_held),
            "A and B hold a partition at the same time: {history:?}"
        );
    }
    (a_held, b_held, history)
}

#[test]
fn two_consumers_claiming_in_turn_get_two_partitions_each() {
    let db = TestDb::new("sub_fair_share");
    let mut a = db.connect();
    assert_preloaded(&mut a);
    a.batch_execute("SELECT es.create_subscription('fair', partitions => 4)")
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    let mut b = db.connect();
    let (a_held, b_held, history) = claim_in_turns(&mut a, &mut b, "fair");
    assert!(
        a_held.len() == 2 && b_held.len() == 2,
        "two consumers of 4 partitions must end with a fair share of 2 each; claims in turn: \
         {history:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// (b) exactly-once effects across a backend killed between the handler's write and COMMIT
// ---------------------------------------------------------------------------------------------

/// How the consumer's transaction ends in a given round.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ending {
    Commit,
    /// `pg_terminate_backend` of the consumer's backend after the writes and the ack.
    Terminate,
    /// SIGKILL of the consumer's backend after the writes and the ack: a crash restart.
    Kill9,
}

/// The rounds that do not commit (the others do).
fn ending_of(round: usize) -> Ending {
    match round {
        1 | 6 => Ending::Terminate,
        3 | 9 => Ending::Kill9,
        _ => Ending::Commit,
    }
}

#[test]
fn a_consumer_killed_between_its_write_and_commit_handles_every_event_exactly_once() {
    let db = TestDb::new("sub_exactly_once");
    let mut admin = db.connect();
    assert_preloaded(&mut admin);
    admin
        .batch_execute(
            "CREATE TABLE eo_model (global_position bigint NOT NULL, stream_id uuid NOT NULL, \
               version bigint NOT NULL); \
             SELECT es.create_subscription('eo')",
        )
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    let streams: Vec<Uuid> = (0..5).map(|n| stream_id(2, n)).collect();
    for round in 0..3 {
        for &s in &streams {
            note(&mut admin, s, 1 + 4 * round, 4, "");
        }
    }

    let connect_consumer = |db: &TestDb| -> (Client, i32) {
        let mut client = connect_with_retry(db.name(), RECOVER_WITHIN)
            .unwrap_or_else(|e| panic!("consumer reconnect: {}", describe(&e)));
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .expect("pg_backend_pid")
            .get(0);
        let held = claim(&mut client, "eo", "solo", "30 seconds")
            .unwrap_or_else(|e| panic!("claim by solo: {}", describe(&e)));
        assert_eq!(
            held,
            BTreeSet::from([0]),
            "solo's claim of the one partition"
        );
        (client, pid)
    };
    let (mut consumer, mut pid) = connect_consumer(&db);
    let mut kills = Vec::new();
    let mut committed_rounds = 0;
    let deadline = Instant::now() + DRAIN_WITHIN;
    for round in 0.. {
        assert!(
            Instant::now() < deadline,
            "the consumer did not finish within {DRAIN_WITHIN:?}"
        );
        let before = checkpoint(&mut admin, "eo", 0);
        let ending = ending_of(round);
        let mut tx = consumer.transaction().expect("BEGIN");
        let batch = poll(&mut tx, "eo", 0, 4, Some("solo"))
            .unwrap_or_else(|e| panic!("round {round}: poll: {}", describe(&e)));
        if batch.is_empty() {
            tx.commit().expect("COMMIT of an empty round");
            break;
        }
        for ev in &batch {
            tx.execute(
                "INSERT INTO eo_model VALUES ($1, $2, $3)",
                &[&ev.position, &ev.stream, &ev.version],
            )
            .unwrap_or_else(|e| panic!("round {round}: handler: {}", describe(&e)));
        }
        let last = batch.last().expect("non-empty").position;
        let at = ack(&mut tx, "eo", 0, last, Some("solo"))
            .unwrap_or_else(|e| panic!("round {round}: ack: {}", describe(&e)));
        assert_eq!(at, last, "round {round}: the checkpoint the ack returns");
        match ending {
            Ending::Commit => {
                tx.commit()
                    .unwrap_or_else(|e| panic!("round {round}: COMMIT: {}", describe(&e)));
                committed_rounds += 1;
                continue;
            }
            Ending::Terminate => {
                let gone: bool = admin
                    .query_one("SELECT pg_terminate_backend($1, 30000)", &[&pid])
                    .unwrap_or_else(|e| panic!("pg_terminate_backend: {}", describe(&e)))
                    .get(0);
                assert!(gone, "the consumer's backend {pid} did not exit");
            }
            Ending::Kill9 => {
                kill_9(pid);
                // The postmaster ends every session when it restarts after the crash: wait for
                // that (the admin connection dies), so no reconnect lands before the restart.
                let deadline = Instant::now() + RECOVER_WITHIN;
                while admin.simple_query("SELECT 1").is_ok() {
                    assert!(
                        Instant::now() < deadline,
                        "the crash restart did not end the other sessions"
                    );
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let commit = tx.commit();
        assert!(
            commit.is_err(),
            "round {round}: COMMIT on a {ending:?}ed backend succeeded"
        );
        kills.push((round, ending, batch.len()));
        if ending == Ending::Kill9 {
            admin = connect_with_retry(db.name(), RECOVER_WITHIN)
                .unwrap_or_else(|e| panic!("admin reconnect after the crash: {}", describe(&e)));
        }
        (consumer, pid) = connect_consumer(&db);
        assert_eq!(
            checkpoint(&mut admin, "eo", 0),
            before,
            "round {round}: a killed transaction's ack must not move the checkpoint"
        );
        let leaked: i64 = admin
            .query_one(
                "SELECT count(*) FROM eo_model WHERE global_position = ANY($1)",
                &[&batch.iter().map(|e| e.position).collect::<Vec<i64>>()],
            )
            .expect("count")
            .get(0);
        assert_eq!(
            leaked, 0,
            "round {round}: a killed transaction's writes are visible"
        );
    }
    eprintln!("exactly once: {committed_rounds} rounds committed, killed: {kills:?}");
    assert_eq!(kills.len(), 4, "all planned kills happened: {kills:?}");

    let stored = bigints(
        &mut admin,
        "SELECT global_position FROM es.events ORDER BY 1",
        &[],
    );
    let model = bigints(
        &mut admin,
        "SELECT global_position FROM eo_model ORDER BY 1",
        &[],
    );
    let dupes = bigints(
        &mut admin,
        "SELECT global_position FROM eo_model GROUP BY 1 HAVING count(*) > 1 ORDER BY 1",
        &[],
    );
    assert!(
        dupes.is_empty(),
        "events with more than one read-model row: {dupes:?}"
    );
    assert_eq!(
        model, stored,
        "the read model must hold exactly one row per event"
    );
    assert_eq!(
        checkpoint(&mut admin, "eo", 0),
        *stored.last().expect("events"),
        "final checkpoint"
    );
}

// ---------------------------------------------------------------------------------------------
// (c) parking and replay
// ---------------------------------------------------------------------------------------------

/// Polls and acks `name` (partition 0, no consumer) until a poll comes back empty; returns what
/// was handled, in order. Each batch is acked at its last event.
fn drain_all(client: &mut Client, name: &str) -> Vec<Ev> {
    let mut handled = Vec::new();
    let deadline = Instant::now() + DRAIN_WITHIN;
    loop {
        let batch = poll(client, name, 0, 100, None)
            .unwrap_or_else(|e| panic!("poll {name}: {}", describe(&e)));
        let Some(last) = batch.last() else {
            return handled;
        };
        ack(client, name, 0, last.position, None)
            .unwrap_or_else(|e| panic!("ack {name} at {}: {}", last.position, describe(&e)));
        handled.extend(batch.iter().copied());
        assert!(
            Instant::now() < deadline && handled.len() < 10_000,
            "{name}: polling does not come to an end; handled so far {handled:?}"
        );
    }
}

#[test]
fn a_poison_event_is_parked_with_its_stream_held_back_and_replayed_in_order() {
    let db = TestDb::new("sub_parking");
    let mut client = db.connect();
    assert_preloaded(&mut client);
    client
        .batch_execute(
            "SELECT es.create_subscription('pk', max_attempts => 2); \
             SELECT es.create_subscription('pk_other')",
        )
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    let (s1, s2) = (stream_id(3, 1), stream_id(3, 2));
    // p1 s1v1, p2 s2v1, p3 s1v2 (poison), p4 s2v2, p5 s1v3, p6 s2v3, p7 s1v4
    for (s, v) in [
        (s1, 1),
        (s2, 1),
        (s1, 2),
        (s2, 2),
        (s1, 3),
        (s2, 3),
        (s1, 4),
    ] {
        note(&mut client, s, v, 1, "");
    }
    let p = |client: &mut Client, s, v| position_of(client, s, v);
    let (p1, p2, p3, p4) = (
        p(&mut client, s1, 1),
        p(&mut client, s2, 1),
        p(&mut client, s1, 2),
        p(&mut client, s2, 2),
    );
    let (p5, p6, p7) = (
        p(&mut client, s1, 3),
        p(&mut client, s2, 3),
        p(&mut client, s1, 4),
    );

    let batch = poll(&mut client, "pk", 0, 100, None).expect("first poll");
    assert_eq!(
        batch.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![p1, p2, p3, p4, p5, p6, p7],
        "the first poll returns the log in order"
    );
    let mut handled = vec![batch[0], batch[1]];
    assert_eq!(ack(&mut client, "pk", 0, p1, None).expect("ack p1"), p1);
    assert_eq!(ack(&mut client, "pk", 0, p2, None).expect("ack p2"), p2);

    // Two failed attempts at p3: the first counts, the second parks it.
    let parked = nack(&mut client, "pk", 0, p3, "boom 1", None)
        .unwrap_or_else(|e| panic!("first nack: {}", describe(&e)));
    assert!(!parked, "the first of 2 attempts must not park the event");
    let view = subscription_rows(&mut client, "pk");
    assert_eq!(
        view[&0].head_attempts, 1,
        "head attempts after one nack: {view:?}"
    );
    assert_eq!(
        view[&0].checkpoint, p2,
        "a nack that does not park keeps the checkpoint"
    );
    let again = poll(&mut client, "pk", 0, 100, None).expect("poll after the first nack");
    assert_eq!(
        again.first().map(|e| e.position),
        Some(p3),
        "the nacked event comes back first"
    );
    let parked = nack(&mut client, "pk", 0, p3, "boom 2", None)
        .unwrap_or_else(|e| panic!("second nack: {}", describe(&e)));
    assert!(
        parked,
        "the second of 2 attempts must park the event (nack returns true)"
    );

    let parked_rows = |client: &mut Client| -> Vec<(i64, Uuid, i32, Option<String>)> {
        rows(
            client,
            "SELECT global_position, stream_id, partition::int, error FROM es.parked_events \
             WHERE subscription = 'pk' ORDER BY global_position",
            &[],
        )
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
    };
    let now_parked = parked_rows(&mut client);
    assert_eq!(
        now_parked.len(),
        1,
        "es.parked_events after parking p3: {now_parked:?}"
    );
    assert_eq!(
        (now_parked[0].0, now_parked[0].1, now_parked[0].2),
        (p3, s1, 0)
    );
    assert!(
        now_parked[0]
            .3
            .as_deref()
            .is_some_and(|e| e.contains("boom 2")),
        "the parked event carries the last error: {now_parked:?}"
    );
    let attempts: i64 = client
        .query_one(
            "SELECT attempts::bigint FROM es.parked_events WHERE subscription = 'pk' \
             AND global_position = $1",
            &[&p3],
        )
        .expect("attempts")
        .get(0);
    assert_eq!(attempts, 2, "attempts of the parked event");

    // s1 is held back, s2 flows.
    let batch = poll(&mut client, "pk", 0, 100, None).expect("poll after parking");
    assert_eq!(
        batch.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![p4, p6],
        "after parking p3 only the other stream's events are returned (s1 is held back)"
    );
    handled.extend(batch.iter().copied());
    ack(&mut client, "pk", 0, p6, None).unwrap_or_else(|e| panic!("ack p6: {}", describe(&e)));
    // New events: s2 v4 flows, s1 v5 is held back; acking past p7 parks it behind p3.
    note(&mut client, s2, 4, 1, "");
    note(&mut client, s1, 5, 1, "");
    let (p8, p9) = (p(&mut client, s2, 4), p(&mut client, s1, 5));
    let batch = poll(&mut client, "pk", 0, 100, None).expect("poll after new events");
    assert_eq!(
        batch.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![p8],
        "only the other stream's new event is returned"
    );
    handled.extend(batch.iter().copied());
    ack(&mut client, "pk", 0, p8, None).unwrap_or_else(|e| panic!("ack p8: {}", describe(&e)));
    assert!(
        poll(&mut client, "pk", 0, 100, None)
            .expect("poll")
            .is_empty(),
        "nothing is readable while s1 is parked"
    );
    assert_eq!(
        parked_rows(&mut client)
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        vec![p3, p5, p7],
        "s1's events acked past are parked behind p3"
    );
    let view = subscription_rows(&mut client, "pk");
    assert_eq!(
        (view[&0].checkpoint, view[&0].parked),
        (p8, 3),
        "es.subscriptions: {view:?}"
    );
    // Parking is per subscription: the other one sees the whole log.
    let other = drain_all(&mut client, "pk_other");
    assert_eq!(
        other.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![p1, p2, p3, p4, p5, p6, p7, p8, p9],
        "a second subscription is not affected by the first one's parking"
    );

    // Replay puts the parked events back first; then everything is consumed in stream order.
    let replayed: i32 = client
        .query_one("SELECT es.replay_parked('pk')", &[])
        .unwrap_or_else(|e| panic!("es.replay_parked: {}", describe(&e)))
        .get(0);
    assert_eq!(
        replayed, 3,
        "es.replay_parked('pk') returns the number put back"
    );
    let first_after = poll(&mut client, "pk", 0, 100, None).expect("poll after replay");
    assert_eq!(
        first_after
            .iter()
            .map(|e| e.position)
            .take(3)
            .collect::<Vec<_>>(),
        vec![p3, p5, p7],
        "the replayed events come first: {first_after:?}"
    );
    let after_replay = drain_all(&mut client, "pk");
    assert_eq!(
        after_replay.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![p3, p5, p7, p9],
        "after the replay the consumer gets s1's held events, in order, once each"
    );
    handled.extend(after_replay.iter().copied());
    assert_per_stream_order(&handled, "parking and replay");
    let mut all: Vec<i64> = handled.iter().map(|e| e.position).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        vec![p1, p2, p3, p4, p5, p6, p7, p8, p9],
        "every event handled once"
    );
    assert!(
        parked_rows(&mut client).is_empty(),
        "nothing stays parked after the replay"
    );
    let view = subscription_rows(&mut client, "pk");
    assert_eq!(
        (view[&0].checkpoint, view[&0].parked, view[&0].events_behind),
        (p9, 0, 0),
        "es.subscriptions after the replay: {view:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// (d) out-of-order commits, and es.wait
// ---------------------------------------------------------------------------------------------

/// Writer connections.
const WRITERS: usize = 8;
/// Streams the writers pick from (fixed ids).
const OOO_STREAMS: u32 = 64;
/// How long the writers run.
const RUN_FOR: Duration = Duration::from_secs(4);

/// What one consumer of one partition saw.
#[derive(Default)]
struct Seen {
    positions: Vec<i64>,
    /// `(last acked, position returned after it)` when not increasing.
    out_of_order: Vec<(i64, i64)>,
}

/// Polls and acks `name`/`partition` in batches of 100 until the writers are done and the
/// checkpoint reached `end()` (known only once they are done); waits with `es.wait` when idle.
fn consume_partition(
    client: &mut Client,
    name: &str,
    partition: i32,
    writers_done: &AtomicUsize,
    end: &std::sync::OnceLock<BTreeMap<(String, i32), i64>>,
) -> Seen {
    let mut seen = Seen::default();
    let mut last = 0i64;
    let mut deadline = None;
    loop {
        let batch = poll(client, name, partition, 100, None)
            .unwrap_or_else(|e| panic!("poll {name}/{partition}: {}", describe(&e)));
        for ev in &batch {
            if ev.position <= last {
                seen.out_of_order.push((last, ev.position));
            }
            last = last.max(ev.position);
            seen.positions.push(ev.position);
        }
        if let Some(ev) = batch.last() {
            ack(client, name, partition, ev.position, None)
                .unwrap_or_else(|e| panic!("ack {name}/{partition}: {}", describe(&e)));
            continue;
        }
        if writers_done.load(Ordering::SeqCst) == WRITERS
            && let Some(ends) = end.get()
        {
            let want = ends
                .get(&(name.to_owned(), partition))
                .copied()
                .unwrap_or(0);
            if last >= want {
                return seen;
            }
            let by = *deadline.get_or_insert_with(|| Instant::now() + DRAIN_WITHIN);
            assert!(
                Instant::now() < by,
                "{name}/{partition}: poll stays empty at {last}, below the partition's last \
                 committed position {want}, {DRAIN_WITHIN:?} after the writers stopped"
            );
        }
        client
            .query_one("SELECT es.wait($1, $2, 50)", &[&name, &partition])
            .unwrap_or_else(|e| panic!("es.wait {name}/{partition}: {}", describe(&e)));
    }
}

#[test]
fn poll_never_skips_events_that_commit_out_of_order() {
    let db = TestDb::new("sub_out_of_order");
    let mut admin = db.connect();
    assert_preloaded(&mut admin);
    admin
        .batch_execute(
            "SELECT es.create_subscription('one'); \
             SELECT es.create_subscription('four', partitions => 4)",
        )
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    let streams: Vec<Uuid> = (0..OOO_STREAMS).map(|n| stream_id(4, n)).collect();
    let consumers: Vec<(&str, i32)> = std::iter::once(("one", 0))
        .chain((0..4).map(|p| ("four", p)))
        .collect();
    let start = Barrier::new(WRITERS + consumers.len());
    let writers_done = AtomicUsize::new(0);
    let ends = std::sync::OnceLock::new();
    let mut writer_clients: Vec<Client> = (0..WRITERS).map(|_| db.connect()).collect();
    let mut consumer_clients: Vec<Client> = consumers.iter().map(|_| db.connect()).collect();

    let (committed, seen): (i64, Vec<Seen>) = thread::scope(|scope| {
        let writers: Vec<_> = writer_clients
            .iter_mut()
            .enumerate()
            .map(|(w, client)| {
                let (start, writers_done, streams) = (&start, &writers_done, &streams);
                scope.spawn(move || {
                    struct Done<'a>(&'a AtomicUsize);
                    impl Drop for Done<'_> {
                        fn drop(&mut self) {
                            self.0.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    let _done = Done(writers_done);
                    let mut rng = rand::rng();
                    let mut committed = 0i64;
                    start.wait();
                    let until = Instant::now() + RUN_FOR;
                    while Instant::now() < until {
                        let stream = streams[rng.random_range(0..streams.len())];
                        let count = rng.random_range(1..=3);
                        let events: Vec<String> = (0..count)
                            .map(|i| format!(r#"{{"type":"Written","writer":{w},"i":{i}}}"#))
                            .collect();
                        let mut tx = client.transaction().expect("BEGIN");
                        append(&mut tx, stream, None, &events)
                            .unwrap_or_else(|e| panic!("writer {w}: append: {}", describe(&e)));
                        thread::sleep(Duration::from_millis(rng.random_range(0..=30)));
                        tx.commit()
                            .unwrap_or_else(|e| panic!("writer {w}: COMMIT: {}", describe(&e)));
                        committed += count;
                    }
                    committed
                })
            })
            .collect();
        let readers: Vec<_> = consumer_clients
            .iter_mut()
            .zip(&consumers)
            .map(|(client, &(name, partition))| {
                let (start, writers_done, ends) = (&start, &writers_done, &ends);
                scope.spawn(move || {
                    start.wait();
                    consume_partition(client, name, partition, writers_done, ends)
                })
            })
            .collect();
        let committed: i64 = writers
            .into_iter()
            .map(|w| w.join().expect("writer thread panicked"))
            .sum();
        // Every writer transaction has ended: the partitions' last positions are final.
        let mut map = BTreeMap::new();
        let total: Option<i64> = admin
            .query_one("SELECT max(global_position) FROM es.events", &[])
            .expect("max")
            .get(0);
        map.insert(("one".to_owned(), 0), total.unwrap_or(0));
        for r in rows(
            &mut admin,
            "SELECT es.stream_hash(stream_id) % 4, max(global_position) FROM es.events \
             GROUP BY 1 ORDER BY 1",
            &[],
        ) {
            map.insert(("four".to_owned(), r.get(0)), r.get(1));
        }
        ends.set(map).expect("ends set once");
        let seen = readers
            .into_iter()
            .map(|r| r.join().expect("consumer thread panicked"))
            .collect();
        (committed, seen)
    });

    let stored = bigints(
        &mut admin,
        "SELECT global_position FROM es.events ORDER BY 1",
        &[],
    );
    assert_eq!(
        stored.len() as i64,
        committed,
        "es.events holds the committed events"
    );
    assert!(committed > 0, "the writers committed nothing");
    for ((name, partition), seen) in consumers.iter().zip(&seen) {
        let expected = if *name == "one" {
            stored.clone()
        } else {
            bigints(
                &mut admin,
                "SELECT global_position FROM es.events WHERE es.stream_hash(stream_id) % 4 = $1 \
                 ORDER BY 1",
                &[partition],
            )
        };
        eprintln!(
            "{name}/{partition}: {} events committed to the partition, {} polled",
            expected.len(),
            seen.positions.len()
        );
        assert!(
            seen.out_of_order.is_empty(),
            "{name}/{partition}: poll returned positions not above the last one (last, got): {:?}",
            &seen.out_of_order[..seen.out_of_order.len().min(10)]
        );
        if seen.positions != expected {
            let got: BTreeSet<i64> = seen.positions.iter().copied().collect();
            let want: BTreeSet<i64> = expected.iter().copied().collect();
            panic!(
                "{name}/{partition}: the consumer did not see every committed event exactly once: \
                 {} committed, {} polled ({} distinct); first missed {:?}; first foreign {:?}",
                expected.len(),
                seen.positions.len(),
                got.len(),
                want.difference(&got).take(10).collect::<Vec<_>>(),
                got.difference(&want).take(10).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn wait_wakes_on_an_append_to_its_partition_and_times_out_when_idle() {
    let db = TestDb::new("sub_wait");
    let mut admin = db.connect();
    assert_preloaded(&mut admin);
    let streams = streams_per_partition(5, 2, 1);
    let (s0, s1) = (streams[&0][0], streams[&1][0]);
    // History before the subscription, which `start_after => NULL` skips.
    note(&mut admin, s0, 1, 3, "");
    note(&mut admin, s1, 1, 3, "");
    admin
        .batch_execute("SELECT es.create_subscription('w', start_after => NULL, partitions => 2)")
        .unwrap_or_else(|e| panic!("create_subscription from now: {}", describe(&e)));
    for p in 0..2 {
        assert!(
            poll(&mut admin, "w", p, 100, None)
                .expect("poll")
                .is_empty(),
            "a subscription made with start_after => NULL has nothing to read in partition {p}"
        );
        let woke: bool = admin
            .query_one("SELECT es.wait('w', $1, 300)", &[&p])
            .unwrap_or_else(|e| panic!("es.wait idle: {}", describe(&e)))
            .get(0);
        assert!(
            !woke,
            "es.wait on idle partition {p} must return false at its timeout"
        );
    }

    // Two waiters, one per partition; one event lands in partition 1.
    let mut waiter1 = db.connect();
    let mut waiter0 = db.connect();
    let pid1: i32 = waiter1
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pid")
        .get(0);
    let (woke1, woke0, after_append) = thread::scope(|scope| {
        let w1 = scope.spawn(move || -> bool {
            waiter1
                .query_one("SELECT es.wait('w', 1, 30000)", &[])
                .unwrap_or_else(|e| panic!("es.wait partition 1: {}", describe(&e)))
                .get(0)
        });
        let w0 = scope.spawn(move || -> bool {
            waiter0
                .query_one("SELECT es.wait('w', 0, 3000)", &[])
                .unwrap_or_else(|e| panic!("es.wait partition 0: {}", describe(&e)))
                .get(0)
        });
        // Append only once the waiter on partition 1 is really waiting.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let waiting: bool = admin
                .query_one(
                    "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 \
                     AND state = 'active' AND query LIKE '%es.wait%')",
                    &[&pid1],
                )
                .expect("pg_stat_activity")
                .get(0);
            if waiting {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the waiter never showed up as active"
            );
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(200));
        note(&mut admin, s1, 4, 1, "");
        let appended = Instant::now();
        let woke1 = w1.join().expect("waiter 1 panicked");
        let after_append = appended.elapsed();
        (woke1, w0.join().expect("waiter 0 panicked"), after_append)
    });
    eprintln!(
        "es.wait woke {} ms after the append's commit",
        after_append.as_millis()
    );
    assert!(
        woke1,
        "es.wait on partition 1 must return true after an append to it"
    );
    assert!(
        after_append < Duration::from_secs(10),
        "es.wait returned {after_append:?} after the append (timeout 30 s): not promptly"
    );
    assert!(
        !woke0,
        "es.wait on partition 0 must stay false: the event went to partition 1"
    );
    let got = poll(&mut admin, "w", 1, 100, None).expect("poll partition 1");
    assert_eq!(
        got.iter()
            .map(|e| (e.stream, e.version))
            .collect::<Vec<_>>(),
        vec![(s1, 4)],
        "partition 1 has exactly the new event"
    );
    let ready: bool = admin
        .query_one("SELECT es.wait('w', 1, 30000)", &[])
        .expect("es.wait with a readable event")
        .get(0);
    assert!(
        ready,
        "es.wait returns true at once while the partition has a readable event"
    );
}

/// `es.wait` on a subscription filtered by event type (docs/consuming-events.md: only the commits
/// that concern a waiter wake it) whose event commits while a lower position of another type is
/// still in flight: the waiter must be woken again when that append ends (its commit, then, in a
/// second round, its rollback), and return true.
#[test]
fn a_filtered_wait_returns_an_event_that_was_behind_an_append_of_another_type() {
    let db = TestDb::new("sub_wait_filtered");
    let mut admin = db.connect();
    assert_preloaded(&mut admin);
    let streams = streams_per_partition(6, 1, 3);
    let (held, wanted, other) = (streams[&0][0], streams[&0][1], streams[&0][2]);
    admin
        .batch_execute(
            "SELECT es.create_subscription('wf', start_after => NULL, event_types => ARRAY['Wanted'])",
        )
        .unwrap_or_else(|e| panic!("create_subscription: {}", describe(&e)));
    for (round, end) in [(1i64, "COMMIT"), (2, "ROLLBACK")] {
        // an append of another type holds a lower position, in flight
        let mut holder = db.connect();
        holder.batch_execute("BEGIN").expect("BEGIN");
        note(&mut holder, held, round, 1, "");
        // the wanted event commits above it, so it is not readable yet
        append(
            &mut admin,
            wanted,
            None,
            &[format!(r#"{{"type":"Wanted","round":{round}}}"#)],
        )
        .unwrap_or_else(|e| panic!("append Wanted: {}", describe(&e)));
        // appends of other types that concern no waiter
        note(&mut admin, other, round * 10, 3, "");
        let mut waiter = db.connect();
        let pid: i32 = waiter
            .query_one("SELECT pg_backend_pid()", &[])
            .expect("pid")
            .get(0);
        let woke = thread::scope(|scope| {
            let w = scope.spawn(move || -> bool {
                waiter
                    .query_one("SELECT es.wait('wf', 0, 60000)", &[])
                    .unwrap_or_else(|e| panic!("es.wait: {}", describe(&e)))
                    .get(0)
            });
            until_active(&mut admin, pid, "%es.wait%");
            note(&mut admin, other, round * 10 + 3, 2, "");
            holder.batch_execute(end).expect("end of the holder");
            w.join().expect("waiter panicked")
        });
        assert!(
            woke,
            "round {round}: es.wait must return true once the append in flight ended ({end})"
        );
        let got = poll(&mut admin, "wf", 0, 100, None).expect("poll");
        assert_eq!(
            got.iter()
                .map(|e| (e.stream, e.version))
                .collect::<Vec<_>>(),
            vec![(wanted, round)],
            "round {round}: the partition holds exactly the Wanted event"
        );
        ack(&mut admin, "wf", 0, got[0].position, None).expect("ack");
    }
}

/// Waits until backend `pid` runs a statement matching `like` (so what the test does next
/// happens while that statement sleeps).
fn until_active(admin: &mut Client, pid: i32, like: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let active: bool = admin
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 \
                 AND state = 'active' AND query LIKE $2)",
                &[&pid, &like],
            )
            .expect("pg_stat_activity")
            .get(0);
        if active {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} never ran {like} (never showed up as active)"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// The waiting poll (`es.poll(…, wait_ms)`, docs/consuming-events.md): a consumer that found its
/// partition empty gets the event that commits while it sleeps from the very call that slept,
/// inside its batch transaction under READ COMMITTED and under REPEATABLE READ (whose snapshot was
/// taken before the event committed), and an event that commits above a lower position still in
/// flight (another type) only once that append ends: never before it, never skipping it.
#[test]
fn a_waiting_poll_returns_the_events_it_waited_for() {
    let db = TestDb::new("sub_poll_waiting");
    let mut admin = db.connect();
    assert_preloaded(&mut admin);
    let streams = streams_per_partition(7, 1, 3);
    let (held, wanted, other) = (streams[&0][0], streams[&0][1], streams[&0][2]);
    admin
        .batch_execute(
            "SELECT es.create_subscription('wp', start_after => NULL, event_types => ARRAY['Wanted'])",
        )
        .unwrap_or_else(|e| panic!("create_subscription: {}", describe(&e)));
    let waiting_poll = "SELECT p.global_position, p.stream_id, p.version \
                        FROM es.poll('wp', 0, 10, wait_ms => 60000) WITH ORDINALITY AS p ORDER BY p.ordinality";
    for (round, isolation, behind) in [
        (1i64, "READ COMMITTED", false),
        (2, "REPEATABLE READ", false),
        (3, "READ COMMITTED", true),
        (4, "SERIALIZABLE", true),
    ] {
        let mut holder = db.connect();
        if behind {
            // an append of another type holds a lower position, in flight
            holder.batch_execute("BEGIN").expect("BEGIN");
            note(&mut holder, held, round, 1, "");
        }
        let mut waiter = db.connect();
        let pid: i32 = waiter
            .query_one("SELECT pg_backend_pid()", &[])
            .expect("pid")
            .get(0);
        // the batch transaction; its snapshot (REPEATABLE READ) is taken before the event commits
        waiter
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL {isolation}; SELECT count(*) FROM es.events"
            ))
            .expect("BEGIN");
        let got = thread::scope(|scope| {
            let w = scope.spawn(move || -> (Vec<Ev>, Client) {
                let got = waiter
                    .query(waiting_poll, &[])
                    .unwrap_or_else(|e| panic!("waiting poll: {}", describe(&e)))
                    .iter()
                    .map(|r| Ev {
                        position: r.get(0),
                        stream: r.get(1),
                        version: r.get(2),
                    })
                    .collect::<Vec<_>>();
                (got, waiter)
            });
            until_active(&mut admin, pid, "%es.poll%");
            // appends of other types wake nobody; the wanted event commits while it sleeps
            note(&mut admin, other, round * 10, 2, "");
            append(
                &mut admin,
                wanted,
                None,
                &[format!(r#"{{"type":"Wanted","round":{round}}}"#)],
            )
            .unwrap_or_else(|e| panic!("append Wanted: {}", describe(&e)));
            if behind {
                // not readable while the lower position is in flight: the poll still sleeps
                // (until_active fails if it had returned)
                until_active(&mut admin, pid, "%es.poll%");
                holder
                    .batch_execute("COMMIT")
                    .expect("COMMIT of the holder");
            }
            let (got, mut waiter) = w.join().expect("waiter panicked");
            if let Some(last) = got.last() {
                ack(&mut waiter, "wp", 0, last.position, None).expect("ack");
            }
            waiter.batch_execute("COMMIT").expect("COMMIT of the batch");
            got
        });
        assert_eq!(
            got.iter()
                .map(|e| (e.stream, e.version))
                .collect::<Vec<_>>(),
            vec![(wanted, round)],
            "round {round} ({isolation}, behind an append in flight: {behind}): the waiting poll \
             returns exactly the Wanted event that committed while it slept"
        );
        assert_eq!(
            checkpoint(&mut admin, "wp", 0),
            got[0].position,
            "round {round}: the batch's ack committed"
        );
    }
    // nothing readable: empty after wait_ms; a negative wait_ms is 22023
    let empty = poll_rows(
        &mut admin,
        "SELECT count(*) FROM es.poll('wp', 0, 10, wait_ms => 20)",
    );
    assert_eq!(
        empty, 0,
        "an idle waiting poll returns nothing at its timeout"
    );
    expect_sqlstate(
        &mut admin,
        "SELECT * FROM es.poll('wp', 0, 10, wait_ms => -1)",
        &[],
        "22023",
    );
}

/// The single count a query returns.
fn poll_rows(client: &mut Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

// ---------------------------------------------------------------------------------------------
// stream_hash and bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn stream_hash_is_fnv1a_of_the_uuid_bytes() {
    let db = TestDb::new("sub_hash");
    let mut client = db.connect();
    let mut ids: Vec<Uuid> = (0..200).map(|n| stream_id(6, n)).collect();
    ids.extend([
        Uuid::nil(),
        Uuid::max(),
        Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
    ]);
    for id in ids {
        let hash: i32 = client
            .query_one("SELECT es.stream_hash($1)", &[&id])
            .unwrap_or_else(|e| panic!("es.stream_hash: {}", describe(&e)))
            .get(0);
        assert_eq!(hash, fnv1a_31(id), "es.stream_hash({id})");
    }
    let volatility: String = client
        .query_one(
            "SELECT provolatile::text FROM pg_proc WHERE oid = 'es.stream_hash(uuid)'::regprocedure",
            &[],
        )
        .expect("pg_proc")
        .get(0);
    assert_eq!(volatility, "i", "es.stream_hash must be IMMUTABLE");
}

#[test]
fn bad_subscription_calls_fail_with_stable_sqlstates() {
    let db = TestDb::new("sub_errors");
    let mut c = db.connect();
    c.batch_execute("SELECT es.create_subscription('s4', partitions => 4)")
        .unwrap_or_else(|e| panic!("create_subscription: {}", describe(&e)));
    let s = stream_id(7, 1);
    note(&mut c, s, 1, 5, "");
    let end: i64 = c
        .query_one("SELECT max(global_position) FROM es.events", &[])
        .expect("max")
        .get(0);
    let ps = partition_of(s, 4);

    // Unknown subscription: ES202.
    for sql in [
        "SELECT * FROM es.poll('nope')",
        "SELECT es.ack('nope', 0, 1)",
        "SELECT es.nack('nope', 0, 1, 'x')",
        "SELECT * FROM es.claim('nope', 'c')",
        "SELECT es.release('nope', 'c')",
        "SELECT es.replay_parked('nope')",
        "SELECT es.wait('nope', 0, 10)",
        "SELECT es.drop_subscription('nope')",
    ] {
        expect_sqlstate(&mut c, sql, &[], "ES202");
    }

    // Out of range, non-positive counts, an ack past the end: 22023 naming the value.
    let past_end = end + 1000;
    let cases: [(&str, Vec<&(dyn ToSql + Sync)>, String); 8] = [
        ("SELECT * FROM es.poll('s4', 4)", vec![], "4".into()),
        ("SELECT * FROM es.poll('s4', -1)", vec![], "-1".into()),
        ("SELECT * FROM es.poll('s4', 0, 0)", vec![], "0".into()),
        ("SELECT * FROM es.poll('s4', 0, -5)", vec![], "-5".into()),
        ("SELECT es.ack('s4', 7, 1)", vec![], "7".into()),
        ("SELECT es.wait('s4', 9, 10)", vec![], "9".into()),
        (
            "SELECT es.ack('s4', $1, $2)",
            vec![&ps, &past_end],
            past_end.to_string(),
        ),
        (
            "SELECT es.create_subscription('zero', partitions => 0)",
            vec![],
            "0".into(),
        ),
    ];
    for (sql, params, value) in &cases {
        let (message, detail) = message_and_detail(&expect_sqlstate(&mut c, sql, params, "22023"));
        assert!(
            message.contains(value.as_str()) || detail.contains(value.as_str()),
            "{sql}: the 22023 error must carry the value {value}: {message:?} / {detail:?}"
        );
    }
    assert_eq!(
        checkpoint(&mut c, "s4", ps),
        0,
        "a refused ack must not move the checkpoint"
    );

    // Duplicate name: 42710, and the original stays as it was.
    expect_sqlstate(
        &mut c,
        "SELECT es.create_subscription('s4', partitions => 2)",
        &[],
        "42710",
    );
    assert_eq!(
        subscription_rows(&mut c, "s4")
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "the duplicate create must leave 's4' with its 4 partitions"
    );

    // An older position is a no-op; the checkpoint never goes back.
    let (p3, p5) = (position_of(&mut c, s, 3), position_of(&mut c, s, 5));
    assert_eq!(ack(&mut c, "s4", ps, p5, None).expect("ack p5"), p5);
    assert_eq!(
        ack(&mut c, "s4", ps, p3, None).expect("ack p3"),
        p5,
        "acking an older position is a no-op returning the checkpoint"
    );
    assert_eq!(checkpoint(&mut c, "s4", ps), p5);

    // Dropped: gone for every function; the name can be used again.
    c.batch_execute("SELECT es.drop_subscription('s4')")
        .unwrap_or_else(|e| panic!("drop_subscription: {}", describe(&e)));
    expect_sqlstate(&mut c, "SELECT * FROM es.poll('s4')", &[], "ES202");
    assert!(
        subscription_rows(&mut c, "s4").is_empty(),
        "es.subscriptions after the drop"
    );
    c.batch_execute("SELECT es.create_subscription('s4')")
        .unwrap_or_else(|e| panic!("create_subscription again: {}", describe(&e)));
    assert_eq!(
        poll(&mut c, "s4", 0, 100, None)
            .expect("poll the new 's4'")
            .iter()
            .map(|e| e.version)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "a re-created subscription starts from the beginning"
    );
}

#[test]
fn a_nack_names_the_head_and_cannot_skip_the_events_before_it() {
    let db = TestDb::new("sub_nack_head");
    let mut c = db.connect();
    c.batch_execute("SELECT es.create_subscription('nh', max_attempts => 1)")
        .unwrap_or_else(|e| panic!("create_subscription: {}", describe(&e)));
    let s = stream_id(8, 1);
    note(&mut c, s, 1, 3, "");
    let (p1, p2, p3) = (
        position_of(&mut c, s, 1),
        position_of(&mut c, s, 2),
        position_of(&mut c, s, 3),
    );
    // The head is p1: a nack of p3 (max_attempts 1 would park it at once) must be refused, not
    // move the checkpoint over p1 and p2, which were never delivered, acked or parked.
    let (message, detail) = message_and_detail(&expect_sqlstate(
        &mut c,
        "SELECT es.nack('nh', 0, $1, 'failed')",
        &[&p3],
        "22023",
    ));
    assert!(
        message.contains(&p3.to_string()) || detail.contains(&p3.to_string()),
        "the 22023 error must carry the position {p3}: {message:?} / {detail:?}"
    );
    assert_eq!(
        checkpoint(&mut c, "nh", 0),
        0,
        "a refused nack must not move the checkpoint"
    );
    assert_eq!(
        poll(&mut c, "nh", 0, 100, None)
            .expect("poll")
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        vec![p1, p2, p3],
        "every event is still to be delivered"
    );
}
