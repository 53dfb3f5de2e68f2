//! Racing appends to ONE stream from 8 connections (docs/reference.md §2, optimistic concurrency).
//!
//! With an explicit expected version, each connection reads `es.stream_version` and appends at
//! that version: exactly one append may win per version, every loser must get `ES001` (never a
//! raw unique violation 23505, never a deadlock 40P01, nothing else), and the stream must end up
//! gapless with exactly one event per version. With `NULL` (no check) or `-1` (must exist) the
//! racing appends must all serialize and succeed. These properties only show under real
//! concurrency between backends, which the extension's in-process tests cannot create.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{
    Client, TestDb, Uuid, append, bigints, describe, sqlstate, stream_version, verify_store,
};

/// Connections racing on the stream.
const CONNECTIONS: usize = 8;

/// The event every racer appends.
const RACED: &str = r#"{"type":"Raced","n":1}"#;

/// What one racing connection observed.
#[derive(Default)]
struct Tally {
    /// `(expected_version, returned new version)` of each successful append.
    wins: Vec<(Option<i64>, i64)>,
    /// Appends refused with `ES001`.
    conflicts: u64,
    /// Any other error (the connection stops racing at the first one).
    other_errors: Vec<String>,
}

/// Runs `CONNECTIONS` threads for `run_for`; each loops `pick_expected` (given the connection and
/// the stream) then `es.append_events` with one `RACED` event, and tallies the outcomes.
fn race(
    db: &TestDb,
    stream: Uuid,
    run_for: Duration,
    pick_expected: fn(&mut Client, Uuid) -> Option<i64>,
) -> Vec<Tally> {
    race_with(db, stream, run_for, pick_expected, &[])
}

/// [`race`], with each connection first running `setup` and also accepting the SQLSTATEs in
/// `tolerated` as conflicts (counted with the ES001s).
fn race_with(
    db: &TestDb,
    stream: Uuid,
    run_for: Duration,
    pick_expected: fn(&mut Client, Uuid) -> Option<i64>,
    tolerated: &[&str],
) -> Vec<Tally> {
    // Connect first, so nothing can fail between a racer's start and the barrier.
    let clients: Vec<Client> = (0..CONNECTIONS)
        .map(|_| {
            let mut c = db.connect();
            if !tolerated.is_empty() {
                c.batch_execute("SET default_transaction_isolation = 'repeatable read'")
                    .unwrap_or_else(|e| panic!("SET isolation: {}", describe(&e)));
            }
            c
        })
        .collect();
    let start = Barrier::new(CONNECTIONS);
    thread::scope(|scope| {
        let racers: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                let start = &start;
                scope.spawn(move || {
                    let events = vec![RACED.to_owned()];
                    let mut tally = Tally::default();
                    start.wait();
                    let deadline = Instant::now() + run_for;
                    while Instant::now() < deadline {
                        let expected = pick_expected(&mut client, stream);
                        match append(&mut client, stream, expected, &events) {
                            Ok(new_version) => tally.wins.push((expected, new_version)),
                            Err(err) if sqlstate(&err) == Some("ES001") => tally.conflicts += 1,
                            Err(err) if sqlstate(&err).is_some_and(|c| tolerated.contains(&c)) => {
                                tally.conflicts += 1
                            }
                            Err(err) => {
                                tally.other_errors.push(format!(
                                    "append_events(s, {expected:?}, [Raced]): {}",
                                    describe(&err)
                                ));
                                break;
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|racer| racer.join().expect("racer thread panicked"))
            .collect()
    })
}

/// Checks what the store holds for the stream after `wins` successful one-event appends: the
/// version everywhere is `wins`, and the events are exactly versions 1..=wins, one `RACED` each.
fn assert_stream_is_gapless(db: &TestDb, stream: Uuid, wins: i64) {
    let mut client = db.connect();
    assert_eq!(
        stream_version(&mut client, stream),
        wins,
        "es.stream_version must equal the number of successful appends"
    );
    let row_version: i64 = client
        .query_one(
            "SELECT version FROM es.streams WHERE stream_id = $1",
            &[&stream],
        )
        .unwrap_or_else(|e| panic!("reading es.streams: {}", describe(&e)))
        .get(0);
    assert_eq!(
        row_version, wins,
        "es.streams.version must equal the number of successful appends"
    );

    let versions = bigints(
        &mut client,
        "SELECT version FROM es.events WHERE stream_id = $1 ORDER BY version",
        &[&stream],
    );
    let expected: Vec<i64> = (1..=wins).collect();
    if versions != expected {
        let dupes: Vec<_> = versions
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        panic!(
            "events of the stream are not exactly versions 1..={wins}: {} rows, first {:?}, \
             last {:?}, duplicated versions {:?}",
            versions.len(),
            versions.first(),
            versions.last(),
            &dupes[..dupes.len().min(10)]
        );
    }
    let foreign: i64 = client
        .query_one(
            "SELECT count(*) FROM es.events WHERE stream_id = $1 \
             AND (event_type <> 'Raced' OR data <> $2::text::jsonb)",
            &[&stream, &RACED],
        )
        .unwrap_or_else(|e| panic!("reading es.events: {}", describe(&e)))
        .get(0);
    assert_eq!(
        foreign, 0,
        "every stored event must be the appended Raced event, unchanged"
    );
    verify_store(&mut client);
}

/// Sorted new versions returned to the winners; panics on any other error of any racer.
fn returned_versions(tallies: &[Tally]) -> Vec<i64> {
    let others: Vec<_> = tallies.iter().flat_map(|t| t.other_errors.iter()).collect();
    assert!(
        others.is_empty(),
        "racing appends must fail only with ES001, got: {others:#?}"
    );
    let mut versions: Vec<i64> = tallies
        .iter()
        .flat_map(|t| t.wins.iter().map(|w| w.1))
        .collect();
    versions.sort_unstable();
    versions
}

#[test]
fn expected_version_race_has_exactly_one_winner_per_version() {
    let db = TestDb::new("race_expected");
    let stream = Uuid::new_v4();
    let tallies = race(&db, stream, Duration::from_secs(4), |client, stream| {
        Some(stream_version(client, stream))
    });

    let versions = returned_versions(&tallies);
    let conflicts: u64 = tallies.iter().map(|t| t.conflicts).sum();
    let wins = versions.len() as i64;
    eprintln!("expected-version race: {wins} wins, {conflicts} ES001 conflicts");
    assert!(wins > 0, "no append succeeded in 4 s");
    assert!(
        conflicts > 0,
        "8 connections racing for 4 s never conflicted: the test did not exercise the race"
    );

    // Each winner appended exactly one event right after the version it read.
    for tally in &tallies {
        for &(expected, new_version) in &tally.wins {
            assert_eq!(
                Some(new_version - 1),
                expected,
                "append_events with expected_version {expected:?} returned {new_version}"
            );
        }
    }
    // One winner per version: the returned versions are exactly 1..=wins, no repeats.
    let one_each: Vec<i64> = (1..=wins).collect();
    assert_eq!(
        versions, one_each,
        "two appends won the same version, or a version was skipped"
    );
    assert_stream_is_gapless(&db, stream, wins);
}

#[test]
fn null_expected_version_appends_all_succeed_and_serialize() {
    let db = TestDb::new("race_null");
    let stream = Uuid::new_v4();
    let tallies = race(&db, stream, Duration::from_secs(3), |_, _| None);

    let versions = returned_versions(&tallies);
    let conflicts: u64 = tallies.iter().map(|t| t.conflicts).sum();
    assert_eq!(
        conflicts, 0,
        "appends with expected_version NULL must never fail with ES001"
    );
    let calls = versions.len() as i64;
    eprintln!("NULL race: {calls} appends");
    assert!(calls > 0, "no append succeeded in 3 s");
    let one_each: Vec<i64> = (1..=calls).collect();
    assert_eq!(
        versions, one_each,
        "returned versions must be 1..=calls, each once"
    );
    assert_stream_is_gapless(&db, stream, calls);
}

#[test]
fn must_exist_appends_all_succeed_and_serialize() {
    let db = TestDb::new("race_exists");
    let stream = Uuid::new_v4();
    {
        let mut client = db.connect();
        let first = append(&mut client, stream, Some(0), &[RACED.to_owned()])
            .unwrap_or_else(|e| panic!("creating the stream: {}", describe(&e)));
        assert_eq!(first, 1);
    }
    let tallies = race(&db, stream, Duration::from_secs(2), |_, _| Some(-1));

    let versions = returned_versions(&tallies);
    let conflicts: u64 = tallies.iter().map(|t| t.conflicts).sum();
    assert_eq!(
        conflicts, 0,
        "appends with expected_version -1 to an existing stream must not fail"
    );
    let calls = versions.len() as i64;
    assert!(calls > 0, "no append succeeded in 2 s");
    let after_first: Vec<i64> = (2..=calls + 1).collect();
    assert_eq!(
        versions, after_first,
        "returned versions must be 2..=calls+1, each once"
    );
    assert_stream_is_gapless(&db, stream, calls + 1);
}

#[test]
fn repeatable_read_racers_get_es001_or_a_serialization_failure() {
    // Under REPEATABLE READ a racer whose snapshot predates the winner's commit cannot see the
    // new version: PostgreSQL's answer is a serialization failure (40001), as for any UPDATE of
    // a concurrently updated row. Anything else, or a gap, is a bug.
    let db = TestDb::new("race_rr");
    let stream = Uuid::new_v4();
    let tallies = race_with(
        &db,
        stream,
        Duration::from_secs(3),
        |client, stream| Some(stream_version(client, stream)),
        &["40001"],
    );
    let versions = returned_versions(&tallies);
    let wins = versions.len() as i64;
    assert!(wins > 0, "no append succeeded in 3 s");
    let one_each: Vec<i64> = (1..=wins).collect();
    assert_eq!(
        versions, one_each,
        "two appends won the same version, or one was skipped"
    );
    assert_stream_is_gapless(&db, stream, wins);
}

#[test]
fn appends_stay_gapless_along_a_long_hot_chain_under_a_vacuum_loop() {
    // The append prunes the stream row's page only when it is nearly full (docs/reference.md
    // §1): between prunes the row's versions form a long HOT chain that every append walks
    // from the index entry's root. A VACUUM of es.streams (and the pruning index scan of a
    // plain reader) running meanwhile redirects the chain's root, frees dead line pointers and
    // moves tuples on the page between one append's index probe and its heap fetch. Appends
    // with NULL expected version must all succeed, return 1..=calls, and leave es.streams.version
    // equal to the newest event's version.
    let db = TestDb::new("race_vacuum");
    let stream = Uuid::new_v4();
    // Neighbours on the same pages, so the page also fills with other rows' versions.
    let neighbours: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    {
        let mut client = db.connect();
        for &n in &neighbours {
            append(&mut client, n, Some(0), &[RACED.to_owned()])
                .unwrap_or_else(|e| panic!("creating a neighbour: {}", describe(&e)));
        }
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let (tallies, vacuums) = thread::scope(|scope| {
        let vacuum = scope.spawn(|| {
            let mut client = db.connect();
            let mut rounds = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .batch_execute("VACUUM es.streams")
                    .unwrap_or_else(|e| panic!("VACUUM es.streams: {}", describe(&e)));
                // A reader's index scan prunes the page whenever PostgreSQL's own test says so.
                client
                    .batch_execute(
                        "SET enable_seqscan = off; SET enable_bitmapscan = off; \
                         SELECT count(*) FROM es.streams WHERE stream_id = ANY(ARRAY(\
                         SELECT stream_id FROM es.streams))",
                    )
                    .unwrap_or_else(|e| panic!("reading es.streams: {}", describe(&e)));
                rounds += 1;
            }
            rounds
        });
        let neighbour_appends = scope.spawn(|| {
            let mut client = db.connect();
            let mut i = 0usize;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                append(
                    &mut client,
                    neighbours[i % neighbours.len()],
                    None,
                    &[RACED.to_owned()],
                )
                .unwrap_or_else(|e| panic!("appending to a neighbour: {}", describe(&e)));
                i += 1;
            }
        });
        let tallies = race(&db, stream, Duration::from_secs(4), |_, _| None);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        neighbour_appends.join().expect("neighbour thread panicked");
        (tallies, vacuum.join().expect("vacuum thread panicked"))
    });

    let versions = returned_versions(&tallies);
    let calls = versions.len() as i64;
    eprintln!("NULL race under VACUUM: {calls} appends, {vacuums} VACUUM rounds");
    assert!(calls > 0, "no append succeeded in 4 s");
    assert!(vacuums > 0, "no VACUUM ran during the race");
    let one_each: Vec<i64> = (1..=calls).collect();
    assert_eq!(
        versions, one_each,
        "returned versions must be 1..=calls, each once"
    );
    assert_stream_is_gapless(&db, stream, calls);
    // Every neighbour's head is its newest event's version too.
    let mut client = db.connect();
    let off: i64 = client
        .query_one(
            "SELECT count(*) FROM es.streams s WHERE s.version IS DISTINCT FROM \
             (SELECT max(e.version) FROM es.events e WHERE e.stream_id = s.stream_id)",
            &[],
        )
        .unwrap_or_else(|e| panic!("comparing es.streams with es.events: {}", describe(&e)))
        .get(0);
    assert_eq!(
        off, 0,
        "es.streams.version must be the newest event's version"
    );
}
