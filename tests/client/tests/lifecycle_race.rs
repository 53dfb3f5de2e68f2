//! Deletions and truncations racing appenders, a subscription consumer and the seed's two
//! projections (docs/reference.md §14: "a concurrency test against appenders and consumers").
//!
//! For 12 s, four connections append to a pool of generic streams (1–3 events, client-chosen
//! event ids, NULL expected version) and deposit to a pool of accounts; one connection deletes
//! (soft, now and then hard), undeletes and truncates the generic streams and empties, deletes
//! and undeletes the accounts; one consumer polls and acks a subscription of the whole log; the
//! database worker keeps `es.account_balances` and `es.account_transactions`. Every call either
//! succeeds or fails with a SQLSTATE the race explains (ES007 deleted, ES105 not empty, ES101,
//! 55000 not deleted, 22023 a cut past the stream); anything else fails the test.
//!
//! Then, on a fresh connection, the test checks that
//! - nothing is half-deleted: a hard-deleted stream holds exactly its `$stream_deleted` marker
//!   at its version, no snapshot and no kept state, and one audit row says so; every other
//!   stream's events are gapless from its cut (1 when never truncated) to `es.streams.version`,
//!   and a soft-deleted one's head is its `$stream_deleted` marker;
//! - every acknowledged append is stored at its version, or was removed by an audited act
//!   (below the stream's cut, or by its tombstone), and no append landed after a tombstone;
//! - the consumer saw strictly increasing positions and every event still stored, with the
//!   event id stored there (no live event skipped, no position reused);
//! - the projections catch up: a live account's balance row equals `es.account_state`, a
//!   deleted account has none, nothing is parked; amcheck finds the store sound.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{Client, Error, TestDb, Uuid, describe, sqlstate, verify_store};
use rand::Rng;
use rand::seq::IndexedRandom;

const STREAMS: usize = 12;
const ACCOUNTS: usize = 6;
const APPENDERS: usize = 4;
const RUN: Duration = Duration::from_secs(12);

/// An append a connection got an answer for: its event ids at their versions.
struct Acked {
    stream: Uuid,
    first_version: i64,
    ids: Vec<Uuid>,
}

/// Fails the test unless `err` is one of the outcomes the race explains.
fn expected(err: &Error, allowed: &[&str], what: &str) {
    let code = sqlstate(err).unwrap_or("none");
    assert!(
        allowed.contains(&code),
        "{what} failed with {code}, not one of {allowed:?}: {}",
        describe(err)
    );
}

fn appender(db: &TestDb, streams: &[Uuid], accounts: &[Uuid], stop: &AtomicBool) -> Vec<Acked> {
    let mut client = db.connect();
    let mut rng = rand::rng();
    let mut acked = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if rng.random_bool(0.25) {
            let account = *accounts.choose(&mut rng).unwrap();
            if let Err(e) = client.query_one(
                "SELECT es.deposit($1, $2, 'race')",
                &[&account, &rng.random_range(1..100i64)],
            ) {
                expected(&e, &["ES007"], "deposit");
            }
            continue;
        }
        let stream = *streams.choose(&mut rng).unwrap();
        let ids: Vec<Uuid> = (0..rng.random_range(1..=3))
            .map(|_| Uuid::new_v4())
            .collect();
        let events: Vec<String> = ids
            .iter()
            .map(|id| format!(r#"{{"type": "Raced", "event_id": "{id}"}}"#))
            .collect();
        match client.query_one(
            "SELECT es.append_events($1, NULL, $2::text[]::jsonb[])",
            &[&stream, &events],
        ) {
            Ok(row) => {
                let version: i64 = row.get(0);
                acked.push(Acked {
                    stream,
                    first_version: version - ids.len() as i64 + 1,
                    ids,
                });
            }
            Err(e) => expected(&e, &["ES007"], "append"),
        }
    }
    acked
}

fn deleter(db: &TestDb, streams: &[Uuid], accounts: &[Uuid], stop: &AtomicBool) -> (u64, u64) {
    let mut client = db.connect();
    let mut rng = rand::rng();
    let (mut acts, mut refused) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let result = if rng.random_bool(0.3) {
            let account = *accounts.choose(&mut rng).unwrap();
            match rng.random_range(0..3) {
                0 => client
                    .query_one(
                        "SELECT es.withdraw($1, (es.account_state($1)->>'balance_cents')::bigint, 'empty')",
                        &[&account],
                    )
                    .map(|_| ())
                    .map_err(|e| (e, &["ES007", "ES101", "ES103"][..], "withdraw all")),
                1 => client
                    .query_one("SELECT es.delete_stream($1)", &[&account])
                    .map(|_| ())
                    .map_err(|e| (e, &["ES007", "ES105"][..], "delete account")),
                _ => client
                    .query_one("SELECT es.undelete_stream($1)", &[&account])
                    .map(|_| ())
                    .map_err(|e| (e, &["55000"][..], "undelete account")),
            }
        } else {
            let stream = *streams.choose(&mut rng).unwrap();
            match rng.random_range(0..200) {
                0 => client
                    .query_one("SELECT es.delete_stream($1, NULL, true)", &[&stream])
                    .map(|_| ())
                    .map_err(|e| (e, &["ES007"][..], "hard delete")),
                1..50 => client
                    .query_one("SELECT es.delete_stream($1)", &[&stream])
                    .map(|_| ())
                    .map_err(|e| (e, &["ES007"][..], "soft delete")),
                50..180 => client
                    .query_one("SELECT es.undelete_stream($1)", &[&stream])
                    .map(|_| ())
                    .map_err(|e| (e, &["ES007", "55000"][..], "undelete")),
                _ => client
                    .query_one(
                        "SELECT es.truncate_stream($1, greatest(1, es.stream_version($1) - $2))",
                        &[&stream, &rng.random_range(0..20i64)],
                    )
                    .map(|_| ())
                    .map_err(|e| (e, &["ES007", "22023"][..], "truncate")),
            }
        };
        match result {
            Ok(()) => acts += 1,
            Err((e, allowed, what)) => {
                expected(&e, allowed, what);
                refused += 1;
            }
        }
        thread::sleep(Duration::from_millis(rng.random_range(0..15)));
    }
    (acts, refused)
}

/// Polls and acks until `stop` and then until the log is drained; returns what it saw:
/// position → (stream, version, event id).
fn consumer(db: &TestDb, stop: &AtomicBool) -> BTreeMap<i64, (Uuid, i64, Uuid)> {
    let mut client = db.connect();
    let mut seen = BTreeMap::new();
    let mut last = 0i64;
    let mut empty_after_stop = 0;
    loop {
        let rows = client
            .query(
                "SELECT global_position, stream_id, version, event_id FROM es.poll('race', 0, 500)",
                &[],
            )
            .unwrap_or_else(|e| panic!("poll: {}", describe(&e)));
        for row in &rows {
            let position: i64 = row.get(0);
            assert!(
                position > last,
                "the consumer got position {position} after {last}"
            );
            last = position;
            seen.insert(position, (row.get(1), row.get(2), row.get(3)));
        }
        if let Some(row) = rows.last() {
            let position: i64 = row.get(0);
            client
                .query_one("SELECT es.ack('race', 0, $1)", &[&position])
                .unwrap_or_else(|e| panic!("ack: {}", describe(&e)));
        } else if stop.load(Ordering::Relaxed) {
            empty_after_stop += 1;
            if empty_after_stop >= 3 {
                return seen;
            }
            thread::sleep(Duration::from_millis(100));
        } else {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

fn one_i64(client: &mut Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

#[test]
fn deletions_and_truncations_race_appenders_consumers_and_projections() {
    let db = TestDb::new("lifecycle_race");
    let mut setup = db.connect();
    setup
        .batch_execute(
            "SELECT es.create_subscription('race', 0); SELECT es.enable_account_projections();",
        )
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    let streams: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::new_v4()).collect();
    for s in &streams {
        setup
            .query_one(
                r#"SELECT es.append_events($1, 0, ARRAY['{"type": "Raced"}']::jsonb[])"#,
                &[s],
            )
            .unwrap_or_else(|e| panic!("create stream: {}", describe(&e)));
    }
    let accounts: Vec<Uuid> = (0..ACCOUNTS)
        .map(|i| {
            setup
                .query_one("SELECT es.open_account($1, 100)", &[&format!("holder {i}")])
                .unwrap_or_else(|e| panic!("open_account: {}", describe(&e)))
                .get(0)
        })
        .collect();

    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (acked, (acts, refused), seen) = thread::scope(|scope| {
        let appenders: Vec<_> = (0..APPENDERS)
            .map(|_| scope.spawn(|| appender(&db, &streams, &accounts, &stop)))
            .collect();
        let deleter = scope.spawn(|| deleter(&db, &streams, &accounts, &stop));
        let consumer = scope.spawn(|| consumer(&db, &stop));
        thread::sleep(RUN);
        stop.store(true, Ordering::Relaxed);
        let acked: Vec<Acked> = appenders
            .into_iter()
            .flat_map(|h| h.join().expect("appender panicked"))
            .collect();
        let deleted = deleter.join().expect("deleter panicked");
        (acked, deleted, consumer.join().expect("consumer panicked"))
    });
    eprintln!(
        "lifecycle race: {} appends acknowledged, {acts} acts done, {refused} refused, {} events consumed in {:?}",
        acked.len(),
        seen.len(),
        started.elapsed()
    );
    assert!(acts > 20, "the deleter did too little: {acts} acts");

    let mut client = db.connect();
    // Nothing half-deleted.
    let bad: Vec<String> = client
        .query(
            "SELECT s.stream_id::text || ' ' || coalesce(s.deleted, 'live') || ' v' || s.version
                    || ' cut ' || coalesce(s.truncated_before, 1) || ' events ' || count(e.*)
                    || ' [' || coalesce(min(e.version), 0) || '..' || coalesce(max(e.version), 0) || ']'
               FROM es.streams s LEFT JOIN es.events e ON e.stream_id = s.stream_id
              GROUP BY s.stream_id
             HAVING max(e.version) IS DISTINCT FROM s.version
                 OR min(e.version) IS DISTINCT FROM
                        CASE WHEN s.deleted = 'hard' THEN s.version ELSE coalesce(s.truncated_before, 1) END
                 OR count(*) <> max(e.version) - min(e.version) + 1
                 OR (s.deleted = 'hard' AND (s.state IS NOT NULL
                     OR EXISTS (SELECT 1 FROM es.snapshots n WHERE n.stream_id = s.stream_id)
                     OR (SELECT count(*) FROM es.data_audit a WHERE a.target = s.stream_id::text
                           AND a.action = 'delete_stream' AND (a.detail->>'hard')::boolean) <> 1))
                 OR (s.deleted IS NOT NULL AND NOT EXISTS (SELECT 1 FROM es.events h
                       WHERE h.stream_id = s.stream_id AND h.version = s.version
                         AND h.event_type = '$stream_deleted'))",
            &[],
        )
        .unwrap_or_else(|e| panic!("half-deleted check: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(bad.is_empty(), "streams half deleted: {bad:#?}");

    // Every acknowledged append is stored, or was removed by an audited act.
    let life: HashMap<Uuid, (Option<String>, i64, i64)> = client
        .query(
            "SELECT stream_id, deleted, version, coalesce(truncated_before, 1) FROM es.streams",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    let stored: HashMap<Uuid, (Uuid, i64, i64)> = client
        .query(
            "SELECT event_id, stream_id, version, global_position FROM es.events",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    let (mut kept, mut removed) = (0u64, 0u64);
    for a in &acked {
        let (deleted, version, cut) = &life[&a.stream];
        for (i, id) in a.ids.iter().enumerate() {
            let at = a.first_version + i as i64;
            match stored.get(id) {
                Some((stream, v, _)) => {
                    assert_eq!((*stream, *v), (a.stream, at), "event {id} moved");
                    kept += 1;
                }
                None => {
                    let hard = deleted.as_deref() == Some("hard");
                    assert!(
                        at < *cut || (hard && at < *version),
                        "acknowledged event {id} at version {at} of {} is gone, though the \
                         stream's cut is {cut} and it is {deleted:?} at version {version}",
                        a.stream
                    );
                    removed += 1;
                }
            }
        }
    }
    eprintln!("lifecycle race: acknowledged events kept {kept}, removed by acts {removed}");
    assert!(kept > 0, "no acknowledged event is left to check");

    // The consumer skipped no event that is still stored, and positions were never reused.
    for (event_id, (stream, version, position)) in &stored {
        match seen.get(position) {
            Some((s, v, id)) => assert_eq!(
                (s, v, id),
                (stream, version, event_id),
                "position {position} was delivered as another event than the one stored there"
            ),
            None => panic!(
                "the consumer skipped the live event {event_id} (stream {stream} version \
                 {version}, position {position})"
            ),
        }
    }

    // The projections catch up and agree with the store.
    let end = one_i64(&mut client, "SELECT max(global_position) FROM es.events");
    for name in ["account_balances", "account_transactions"] {
        let caught_up: bool = client
            .query_one(
                "SELECT es.wait_for_projection($1, $2, 60000)",
                &[&name, &end],
            )
            .unwrap_or_else(|e| panic!("wait_for_projection({name}): {}", describe(&e)))
            .get(0);
        assert!(caught_up, "projection {name} did not catch up with {end}");
    }
    assert_eq!(
        one_i64(&mut client, "SELECT count(*) FROM es.parked_events"),
        0,
        "a projection parked an event"
    );
    let wrong: Vec<String> = client
        .query(
            "SELECT s.stream_id::text || ' ' || coalesce(s.deleted, 'live') || ' row ' || coalesce(to_jsonb(b)::text, 'none')
               FROM es.streams s LEFT JOIN es.account_balances b ON b.account_id = s.stream_id
              WHERE s.stream_type = 'account'
                AND CASE WHEN s.deleted IS NOT NULL THEN b.account_id IS NOT NULL
                         ELSE b.account_id IS NULL
                           OR (b.balance_cents, b.version) IS DISTINCT FROM (
                              (es.account_state(s.stream_id)->>'balance_cents')::bigint,
                              (es.account_state(s.stream_id)->>'version')::bigint) END",
            &[],
        )
        .unwrap_or_else(|e| panic!("projection check: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        wrong.is_empty(),
        "es.account_balances disagrees: {wrong:#?}"
    );
    verify_store(&mut client);
}
