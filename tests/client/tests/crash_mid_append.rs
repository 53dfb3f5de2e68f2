//! A backend killed with SIGKILL in the middle of a big append leaves nothing behind (docs/reference.md §2:
//! appends are atomic, versions stay gapless; §6: never a broken store).
//!
//! One connection appends 50 000 events to a new stream in one `es.append_events` call; a second
//! connection waits until `pg_stat_activity` shows that call running, lets it run ~100 ms, then
//! `kill -9`s the backend. The postmaster treats that as a crash and restarts every backend (and
//! re-creates shared memory, where the extension keeps its in-flight positions). After
//! reconnecting, the stream must not exist (no event, version 0, no `es.streams` row), the same
//! stream and another must accept appends, and the gap-safe `es.read_all` must not be stuck on
//! positions the dead backend had drawn.
//!
//! The append runs in an explicit transaction followed by `pg_sleep` before COMMIT, so even on a
//! machine fast enough to finish the append within the ~100 ms, the kill still lands before the
//! commit and the assertions stay exact; the test prints which of the two cases happened.
//!
//! The crash restart disconnects every session of the cluster, so this must not run concurrently
//! with other tests: `run.sh` runs the suite with `--test-threads=1` (test binaries run one after
//! another anyway) and this file holds a single test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{
    TestDb, Uuid, append, bigints, connect_after_kill, describe, kill_9, stream_version,
};

/// Events in the killed append.
const BULK_EVENTS: i32 = 50_000;
/// How long the append may run before it is killed (once it shows as active).
const LET_IT_RUN: Duration = Duration::from_millis(100);
/// Bound for the append to show up in `pg_stat_activity`.
const APPEAR_WITHIN: Duration = Duration::from_secs(20);
/// Bound for the cluster to accept connections again after the crash restart.
const RECOVER_WITHIN: Duration = Duration::from_secs(30);

const BULK_APPEND: &str = "SELECT es.append_events($1, 0, \
     (SELECT array_agg(jsonb_build_object('type', 'Bulk', 'i', g)) FROM generate_series(1, $2) g))";

#[test]
fn sigkill_during_append_leaves_no_trace_and_the_store_keeps_working() {
    let db = TestDb::new("crash");
    let victim_stream = Uuid::new_v4();
    let other_stream = Uuid::new_v4();

    // Some committed history before the crash, which must survive it.
    {
        let mut client = db.connect();
        let events = vec![
            r#"{"type":"Before","n":1}"#.to_owned(),
            r#"{"type":"Before","n":2}"#.to_owned(),
        ];
        let v = append(&mut client, other_stream, Some(0), &events)
            .unwrap_or_else(|e| panic!("append before the crash: {}", describe(&e)));
        assert_eq!(v, 2);
    }

    let mut victim = db.connect();
    let victim_pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pg_backend_pid")
        .get(0);
    let append_returned = AtomicBool::new(false);

    let (outcome, killed_mid_append) = thread::scope(|scope| {
        let append_returned = &append_returned;
        let victim_thread = scope.spawn(move || -> Result<(), String> {
            let mut tx = victim.transaction().map_err(|e| describe(&e))?;
            tx.query_one(BULK_APPEND, &[&victim_stream, &BULK_EVENTS])
                .map_err(|e| format!("append: {}", describe(&e)))?;
            append_returned.store(true, Ordering::SeqCst);
            tx.batch_execute("SELECT pg_sleep(30)")
                .map_err(|e| format!("pg_sleep after the append: {}", describe(&e)))?;
            tx.commit().map_err(|e| format!("commit: {}", describe(&e)))
        });

        let mut monitor = db.connect();
        let deadline = Instant::now() + APPEAR_WITHIN;
        loop {
            let active: bool = monitor
                .query_one(
                    "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 \
                     AND state = 'active' AND query LIKE '%es.append_events%')",
                    &[&victim_pid],
                )
                .expect("polling pg_stat_activity")
                .get(0);
            if active || append_returned.load(Ordering::SeqCst) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the append did not show up as active in pg_stat_activity within {APPEAR_WITHIN:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(LET_IT_RUN);
        let killed_mid_append = !append_returned.load(Ordering::SeqCst);
        kill_9(victim_pid);
        (
            victim_thread.join().expect("victim thread panicked"),
            killed_mid_append,
        )
    });

    match outcome {
        Err(err) => eprintln!(
            "victim killed {} (its error: {err})",
            if killed_mid_append {
                "while es.append_events was running"
            } else {
                "after es.append_events returned, before COMMIT"
            }
        ),
        Ok(()) => panic!("the killed transaction reported a successful commit"),
    }

    // The postmaster crash-restarts the whole cluster; wait until it accepts connections again.
    let mut client =
        connect_after_kill(db.name(), victim_pid, RECOVER_WITHIN).unwrap_or_else(|e| {
            panic!(
                "the cluster did not come back within {RECOVER_WITHIN:?}: {}",
                describe(&e)
            )
        });

    let leftover: i64 = client
        .query_one(
            "SELECT count(*) FROM es.events WHERE stream_id = $1",
            &[&victim_stream],
        )
        .expect("counting the victim's events")
        .get(0);
    assert_eq!(
        leftover, 0,
        "events of the killed append survived the crash"
    );
    assert_eq!(
        stream_version(&mut client, victim_stream),
        0,
        "the killed append's stream must not exist"
    );
    let stream_rows: i64 = client
        .query_one(
            "SELECT count(*) FROM es.streams WHERE stream_id = $1",
            &[&victim_stream],
        )
        .expect("reading es.streams")
        .get(0);
    assert_eq!(stream_rows, 0, "the killed append left an es.streams row");
    assert_eq!(
        stream_version(&mut client, other_stream),
        2,
        "committed history before the crash must survive it"
    );

    // The store keeps working: the same stream can be created, the other one extended.
    let after = vec![r#"{"type":"After"}"#.to_owned()];
    let v = append(&mut client, victim_stream, Some(0), &after).unwrap_or_else(|e| {
        panic!(
            "append to the victim's stream after the crash: {}",
            describe(&e)
        )
    });
    assert_eq!(
        v, 1,
        "the victim's stream must start at version 1 after the crash"
    );
    let v = append(&mut client, other_stream, Some(2), &after)
        .unwrap_or_else(|e| panic!("append to another stream after the crash: {}", describe(&e)));
    assert_eq!(v, 3);
    let versions = bigints(
        &mut client,
        "SELECT version FROM es.events WHERE stream_id = $1 ORDER BY version",
        &[&victim_stream],
    );
    assert_eq!(
        versions,
        vec![1],
        "the victim's stream must hold only the new event"
    );

    // The gap-safe global read is not stuck on positions the dead backend had drawn.
    let stored = bigints(
        &mut client,
        "SELECT global_position FROM es.events ORDER BY 1",
        &[],
    );
    let read = bigints(
        &mut client,
        "SELECT global_position FROM es.read_all(0, 1000)",
        &[],
    );
    assert_eq!(
        read, stored,
        "es.read_all after the crash must return every stored event"
    );
    assert_eq!(stored.len(), 4);
}
