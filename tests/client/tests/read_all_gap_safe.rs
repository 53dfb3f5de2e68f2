//! The global read `es.read_all` is gap-safe (docs/reference.md §3).
//!
//! 8 writer connections append to random streams, each inside an explicit transaction that sleeps
//! 0–30 ms before COMMIT, so transactions commit out of global-position order; meanwhile one reader
//! pages through `es.read_all(last, 100)` with the last position it saw. A naive `WHERE
//! global_position > last` reader skips the positions that commit after a higher one was already
//! read; the store must never let that happen. After the writers stop, the reader drains the log,
//! and what it saw must be every committed event exactly once, in strictly increasing order. A
//! second test mixes in rolled-back appends, whose positions must not stall the reader either.
//! Needs the cluster started with `shared_preload_libraries = 'event_store'` (ES_PRELOAD=1).

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{
    Client, TestDb, Uuid, append, assert_preloaded, bigints, describe, verify_store,
};
use rand::Rng;

/// Writer connections.
const WRITERS: usize = 8;
/// Streams the writers pick from at random.
const STREAMS: usize = 64;
/// How long the writers run.
const RUN_FOR: Duration = Duration::from_secs(4);
/// Page size of the reader.
const PAGE: i64 = 100;
/// Bound of the final drain after the writers stopped.
const DRAIN_WITHIN: Duration = Duration::from_secs(20);

/// What the reader observed.
struct Reading {
    /// Every position returned, in the order returned.
    seen: Vec<i64>,
    /// How many positions were returned while writers were still running.
    seen_while_writing: usize,
    /// Ordering violations: `(previous last position, position returned after it)`.
    out_of_order: Vec<(i64, i64)>,
}

/// Increments the shared count of finished writers when dropped (also on panic).
struct DoneOnDrop<'a>(&'a AtomicUsize);

impl Drop for DoneOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Reads one page `es.read_all(*last, PAGE)`, records it, advances `*last`; returns the row count.
fn read_page(client: &mut Client, last: &mut i64, reading: &mut Reading) -> usize {
    let positions = bigints(
        client,
        "SELECT global_position FROM es.read_all($1, $2)",
        &[&*last, &PAGE],
    );
    for &position in &positions {
        if position <= *last {
            reading.out_of_order.push((*last, position));
        }
        *last = (*last).max(position);
        reading.seen.push(position);
    }
    positions.len()
}

/// Runs the writers (rolling back `rollback_percent` % of their transactions) and the reader, and
/// returns what the reader saw plus the number of events the writers committed.
fn run(db: &TestDb, rollback_percent: u32) -> (Reading, i64) {
    let streams: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::new_v4()).collect();
    let start = Barrier::new(WRITERS + 1);
    let writers_done = AtomicUsize::new(0);
    // Connect first, so nothing can fail between a thread's start and the barrier.
    let mut clients: Vec<Client> = (0..=WRITERS).map(|_| db.connect()).collect();
    let mut reader_client = clients.pop().expect("WRITERS + 1 connections");

    thread::scope(|scope| {
        let writers: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(w, mut client)| {
                let (start, writers_done, streams) = (&start, &writers_done, &streams);
                scope.spawn(move || {
                    // Counts this writer as done however it ends, so a panicking writer cannot
                    // leave the reader waiting forever.
                    let _done = DoneOnDrop(writers_done);
                    let mut rng = rand::rng();
                    let mut committed_events = 0i64;
                    start.wait();
                    let deadline = Instant::now() + RUN_FOR;
                    while Instant::now() < deadline {
                        let stream = streams[rng.random_range(0..streams.len())];
                        let count = rng.random_range(1..=3);
                        let events: Vec<String> = (0..count)
                            .map(|i| format!(r#"{{"type":"Written","writer":{w},"i":{i}}}"#))
                            .collect();
                        let mut tx = client
                            .transaction()
                            .unwrap_or_else(|e| panic!("BEGIN: {}", describe(&e)));
                        if let Err(e) = append(&mut tx, stream, None, &events) {
                            panic!(
                                "writer {w}: append_events(s, NULL, {count}): {}",
                                describe(&e)
                            );
                        }
                        thread::sleep(Duration::from_millis(rng.random_range(0..=30)));
                        if rng.random_range(0..100) < rollback_percent {
                            tx.rollback()
                                .unwrap_or_else(|e| panic!("ROLLBACK: {}", describe(&e)));
                        } else {
                            tx.commit()
                                .unwrap_or_else(|e| panic!("COMMIT: {}", describe(&e)));
                            committed_events += count;
                        }
                    }
                    committed_events
                })
            })
            .collect();

        let reader = scope.spawn(|| {
            let client = &mut reader_client;
            let mut reading = Reading {
                seen: Vec::new(),
                seen_while_writing: 0,
                out_of_order: Vec::new(),
            };
            let mut last = 0i64;
            start.wait();
            while writers_done.load(Ordering::SeqCst) < WRITERS {
                if read_page(client, &mut last, &mut reading) == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            reading.seen_while_writing = reading.seen.len();
            // Every writer transaction has ended: drain until a page comes back empty.
            let deadline = Instant::now() + DRAIN_WITHIN;
            while read_page(client, &mut last, &mut reading) > 0 {
                assert!(
                    Instant::now() < deadline,
                    "read_all kept returning rows for {DRAIN_WITHIN:?} after the writers stopped"
                );
            }
            reading
        });

        let committed: i64 = writers
            .into_iter()
            .map(|w| w.join().expect("writer thread panicked"))
            .sum();
        (reader.join().expect("reader thread panicked"), committed)
    })
}

/// The reader's view must be exactly the committed log, in order.
fn assert_saw_everything_once_in_order(db: &TestDb, reading: &Reading, committed: i64) {
    let mut client = db.connect();
    let stored = bigints(
        &mut client,
        "SELECT global_position FROM es.events ORDER BY 1",
        &[],
    );
    eprintln!(
        "read_all: {} events committed, {} stored, {} read ({} while writing)",
        committed,
        stored.len(),
        reading.seen.len(),
        reading.seen_while_writing
    );
    assert_eq!(
        stored.len() as i64,
        committed,
        "es.events must hold exactly the committed events"
    );
    assert!(
        reading.out_of_order.is_empty(),
        "read_all returned positions not above the reader's last one (last, got): {:?}",
        &reading.out_of_order[..reading.out_of_order.len().min(10)]
    );
    if reading.seen != stored {
        let seen: std::collections::BTreeSet<i64> = reading.seen.iter().copied().collect();
        let stored_set: std::collections::BTreeSet<i64> = stored.iter().copied().collect();
        let missed: Vec<_> = stored_set.difference(&seen).take(10).collect();
        let phantom: Vec<_> = seen.difference(&stored_set).take(10).collect();
        panic!(
            "the reader did not see every committed event exactly once: stored {}, read {} \
             ({} distinct); first missed {:?}; first read but not stored {:?}",
            stored.len(),
            reading.seen.len(),
            seen.len(),
            missed,
            phantom
        );
    }
    assert!(
        reading.seen_while_writing > 0,
        "read_all returned nothing while the writers were running: the reader made no progress"
    );
}

#[test]
fn reader_sees_every_commit_once_in_order_despite_out_of_order_commits() {
    let db = TestDb::new("read_all");
    assert_preloaded(&mut db.connect());
    let (reading, committed) = run(&db, 0);
    assert!(committed > 0, "the writers committed nothing");
    assert_saw_everything_once_in_order(&db, &reading, committed);
    verify_store(&mut db.connect());
}

#[test]
fn rolled_back_appends_neither_show_nor_stall_the_reader() {
    let db = TestDb::new("read_all_rb");
    assert_preloaded(&mut db.connect());
    let (reading, committed) = run(&db, 20);
    assert!(committed > 0, "the writers committed nothing");
    assert_saw_everything_once_in_order(&db, &reading, committed);
    verify_store(&mut db.connect());
}

/// A database with one committed event, and a writer that holds the next position: the setup
/// connection, the last committed position, the writer's connection (its transaction open) and
/// its stream.
fn low_position_in_flight(db: &TestDb) -> (Client, i64, Client, Uuid) {
    let mut setup = db.connect();
    assert_preloaded(&mut setup);
    append(
        &mut setup,
        Uuid::new_v4(),
        Some(0),
        &[r#"{"type":"Before"}"#.to_owned()],
    )
    .unwrap();
    let before: i64 = setup
        .query_one("SELECT max(global_position) FROM es.events", &[])
        .unwrap()
        .get(0);
    let mut low = db.connect();
    low.batch_execute("BEGIN").unwrap();
    let low_stream = Uuid::new_v4();
    append(
        &mut low,
        low_stream,
        Some(0),
        &[r#"{"type":"Low"}"#.to_owned()],
    )
    .unwrap();
    (setup, before, low, low_stream)
}

/// A statement's snapshot is not the read's (docs/reference.md §3): `es.read_all` takes the
/// gap-safe bound and its own snapshot together. Here a cursor's snapshot is taken at DECLARE,
/// while a writer holds a lower position; a second writer's higher position is committed and
/// visible to it; the first writer commits before the FETCH. A read in the cursor's snapshot up
/// to the bound found at FETCH (no position in flight any more) would return the higher position
/// without the lower one, a gap the reader pages past for ever; this guards any future read
/// that runs in the calling statement's snapshot (an inlined SQL read was tried, see
/// docs/benchmarks.md).
#[test]
fn a_writer_committing_after_the_statement_snapshot_is_not_skipped() {
    let db = TestDb::new("read_all_late");
    let (mut setup, before, mut low, low_stream) = low_position_in_flight(&db);
    let high_stream = Uuid::new_v4();
    append(
        &mut setup,
        high_stream,
        Some(0),
        &[r#"{"type":"High"}"#.to_owned()],
    )
    .unwrap();

    let mut reader = db.connect();
    reader
        .batch_execute(&format!(
            "BEGIN; DECLARE c CURSOR FOR SELECT global_position, stream_id FROM es.read_all({before}, 1000)"
        ))
        .unwrap();
    low.batch_execute("COMMIT").unwrap();
    let rows = reader.query("FETCH ALL FROM c", &[]).unwrap();
    reader.batch_execute("COMMIT").unwrap();
    let streams: Vec<Uuid> = rows.iter().map(|r| r.get(1)).collect();
    assert_eq!(
        streams,
        vec![low_stream, high_stream],
        "both events, the late commit's lower position first"
    );
    verify_store(&mut setup);
}

/// The gap-safe bound is checked on each row the read fetches (one index key, `> after`, as the
/// hand-written query has): while a writer holds a lower position, a second writer's higher
/// positions are committed and visible to the read's snapshot, yet no page returns them,
/// whatever its size; once the first writer commits, all come back in position order.
#[test]
fn committed_positions_above_one_in_flight_are_not_returned() {
    let db = TestDb::new("read_all_above");
    let (mut setup, before, mut low, low_stream) = low_position_in_flight(&db);
    let high_stream = Uuid::new_v4();
    let high: Vec<String> = (1..=3)
        .map(|i| format!(r#"{{"type":"High{i}"}}"#))
        .collect();
    append(&mut setup, high_stream, Some(0), &high).unwrap();
    let committed_above: i64 = setup
        .query_one(
            "SELECT count(*) FROM es.events WHERE global_position > $1",
            &[&before],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        committed_above, 3,
        "the high events are committed and visible"
    );

    let mut reader = db.connect();
    for page in [1i64, 2, 3, 1000] {
        let positions = bigints(
            &mut reader,
            "SELECT global_position FROM es.read_all($1, $2)",
            &[&before, &page],
        );
        assert!(
            positions.is_empty(),
            "a page of {page} returned {positions:?} above the position in flight"
        );
    }
    low.batch_execute("COMMIT").unwrap();
    let streams: Vec<Uuid> = reader
        .query("SELECT stream_id FROM es.read_all($1, 1000)", &[&before])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        streams,
        vec![low_stream, high_stream, high_stream, high_stream],
        "the low event first, then the high ones"
    );
    verify_store(&mut setup);
}
