//! The failover runbook of docs/replicas.md ("Failover runbook"), tested with real clusters on loopback
//! (docs/reference.md §2, §9, §10, §11; issue 13 item 4).
//!
//! A failover is the moment a replica becomes the server that takes the writes. What the store
//! must give then: appends go on without reusing a position (never a raw 23505) and without a
//! gap in a stream's versions; `es.read_all`, `es.poll` and `es.wait` stay gap-safe and are no
//! longer capped at the watermark that the old primary wrote for its replicas; subscriptions
//! and projections resume from their replicated checkpoints (nothing lost, nothing twice). Two
//! ways to fail over, one test each, doing what a DBA does:
//!
//! - `promoting_a_streaming_standby`: a `pg_basebackup -R` hot standby of the client-test
//!   cluster streams everything (a subscription with a consumer that acked part of its events,
//!   a test projection paused behind the log, the account projections, accounts, generic
//!   streams); at the crash one transaction has an append in flight and an event above its
//!   position has committed. The primary is stopped with `pg_ctl stop -m immediate` (a crash)
//!   and the standby promoted with `SELECT pg_promote()`. The promoted server must hold exactly
//!   what had committed, read it all (the late event too), start the store's launcher and
//!   projection worker by itself, take appends and account commands, hand the consumer exactly
//!   the events after its last ack, and survive 4 writers committing out of order beside a
//!   paging reader.
//! - `promoting_a_logical_subscriber`: a second cluster subscribed to the store's tables
//!   (`es.events`, `es.streams`, `es.snapshots`, `es.watermark` and the subscription tables; the
//!   position sequence is not replicated by PostgreSQL 15). The publisher is stopped (`pg_ctl
//!   stop -m fast`), the subscription disabled and detached from its slot (`DROP SUBSCRIPTION`
//!   alone fails while the publisher is down); while it still exists an append works but stays
//!   unreadable (readers are still capped at the old watermark); after `DROP SUBSCRIPTION` the
//!   same checks as above, from a session opened before the drop and from new ones, plus the
//!   account rules on the replicated state (snapshots included; an overdraft refused with the
//!   replicated balance) and the account projections created afresh there after dropping the
//!   replicated subscriptions of the publisher's projections.
//! - `a_standby_refuses_every_write_with_the_read_only_error`: what a client still pointed at a
//!   standby gets: every write function fails with 25006 (docs/reference.md §11), never XX000.
//!
//! Figures (promotion time, the sequence before the first draw, ...) are printed and written
//! to `target/failover-summary.txt`. The replicas are stopped when a test ends (also when it
//! fails) and their logs must show no process killed by a signal; the primary is started again
//! after each test ([`PrimaryStopped`]). Run with `bash tests/client/run.sh --test failover`
//! (`ES_STANDBY_PORT` / `ES_SUBSCRIBER_PORT` move the replicas' ports).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::replica::{
    self, LogicalSubscription, LogicalWalLevel, PrimaryStopped, Replica, Shutdown, published_tables,
};
use event_store_client_tests::{
    Client, TestDb, Uuid, append, assert_preloaded, describe, exec, expect_sqlstate, position_of,
    sqlstate, stream_version, verify_store,
};
use postgres::{GenericClient, NoTls};
use rand::Rng;

/// Partitions of the test subscription (both held by one consumer).
const PARTITIONS: i32 = 2;
/// The test subscription and its consumer.
const SUBSCRIPTION: &str = "mailer";
const CONSUMER: &str = "consumer-a";
/// Writer connections of the out-of-order load on the promoted server, and how long they write.
const WRITERS: usize = 4;
const LOAD_FOR: Duration = Duration::from_secs(2);
/// Bound of every wait for something the server does by itself (a replica catching up, the
/// launcher starting, a reader reaching the end). It bounds a hung test; it is not a
/// performance assertion.
const WITHIN: Duration = Duration::from_secs(30);
/// `timeout_ms` of the `es.wait_for_projection` calls that must succeed.
const WAIT_MS: i32 = 30_000;

/// One stored event: `(global_position, stream_id, version)`.
type Row = (i64, Uuid, i64);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs a one-value query that must succeed and returns that value.
fn one<T>(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> T
where
    T: for<'a> postgres::types::FromSql<'a>,
{
    client
        .query_one(sql, params)
        .unwrap_or_else(|e| panic!("{sql} failed: {}", describe(&e)))
        .get(0)
}

/// A generic (non-account) event.
fn event(kind: &str, n: usize) -> String {
    format!(r#"{{"type":"{kind}","n":{n}}}"#)
}

/// The whole log, in position order.
fn stored_log(client: &mut Client, label: &str) -> Vec<Row> {
    client
        .query(
            "SELECT global_position, stream_id, version FROM es.events ORDER BY 1",
            &[],
        )
        .unwrap_or_else(|e| panic!("es.events on the {label}: {}", describe(&e)))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The highest stored position (0 for an empty log).
fn max_position(client: &mut Client) -> i64 {
    one(
        client,
        "SELECT coalesce(max(global_position), 0) FROM es.events",
        &[],
    )
}

/// `es.watermark` (None while it has no row).
fn watermark(client: &mut Client) -> Option<i64> {
    client
        .query_opt("SELECT position FROM es.watermark", &[])
        .unwrap_or_else(|e| panic!("es.watermark: {}", describe(&e)))
        .map(|r| r.get(0))
}

/// Pages through `es.read_all(last, 100)` from `after` until a page is empty; returns the
/// positions in the order returned.
fn read_all_once(client: &mut Client, label: &str, after: i64) -> Vec<i64> {
    let mut got = Vec::new();
    let mut last = after;
    loop {
        let page: Vec<i64> = client
            .query("SELECT global_position FROM es.read_all($1, 100)", &[&last])
            .unwrap_or_else(|e| panic!("es.read_all({last}, 100) on the {label}: {}", describe(&e)))
            .iter()
            .map(|r| r.get(0))
            .collect();
        let Some(&top) = page.last() else {
            return got;
        };
        got.extend(page);
        last = top;
    }
}

/// Pages through `es.read_all` from 0 until it returned `expected` (every stored position, in
/// order), retrying for [`WITHIN`]: a reader stuck below the end (a leftover watermark cap) fails
/// with the watermark it is stuck at.
fn read_all_must_return(client: &mut Client, label: &str, expected: &[i64]) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let got = read_all_once(client, label, 0);
        if got == expected {
            return;
        }
        if Instant::now() >= deadline {
            let missing: Vec<i64> = expected
                .iter()
                .filter(|p| !got.contains(p))
                .take(10)
                .copied()
                .collect();
            panic!(
                "es.read_all on the {label} paged from 0 returned {} events (last {:?}), the \
                 store holds {} (last {:?}); missing {missing:?}; es.watermark there is {:?}: \
                 the reads are capped (a watermark cap left over from replica mode?)",
                got.len(),
                got.last(),
                expected.len(),
                expected.last(),
                watermark(client)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Every stream's versions are 1..=n without a gap, and `es.stream_version` and `es.streams`
/// both say n.
fn assert_streams_consistent(client: &mut Client, label: &str) {
    let bad: Vec<String> = client
        .query(
            "SELECT e.stream_id::text || ': ' || count(*) || ' events, max version ' || \
                    max(e.version) || ', es.streams ' || coalesce(s.version::text, 'none') || \
                    ', es.stream_version ' || es.stream_version(e.stream_id) \
               FROM es.events e LEFT JOIN es.streams s USING (stream_id) \
              GROUP BY e.stream_id, s.version \
             HAVING count(*) <> max(e.version) OR min(e.version) <> 1 \
                 OR s.version IS DISTINCT FROM max(e.version) \
                 OR es.stream_version(e.stream_id) <> max(e.version)",
            &[],
        )
        .unwrap_or_else(|e| panic!("stream check on the {label}: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        bad.is_empty(),
        "streams with a version gap or a wrong version on the {label}: {bad:?}"
    );
}

/// `es.poll(SUBSCRIPTION, partition, 10000, CONSUMER)`: the positions returned.
fn poll(client: &mut impl GenericClient, label: &str, partition: i32) -> Vec<i64> {
    client
        .query(
            "SELECT global_position FROM es.poll($1, $2, 10000, $3)",
            &[&SUBSCRIPTION, &partition, &CONSUMER],
        )
        .unwrap_or_else(|e| {
            panic!(
                "es.poll partition {partition} on the {label}: {}",
                describe(&e)
            )
        })
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `es.ack(SUBSCRIPTION, partition, position, CONSUMER)`; returns the checkpoint.
fn ack(client: &mut impl GenericClient, label: &str, partition: i32, position: i64) -> i64 {
    client
        .query_one(
            "SELECT es.ack($1, $2, $3, $4)",
            &[&SUBSCRIPTION, &partition, &position, &CONSUMER],
        )
        .unwrap_or_else(|e| {
            panic!(
                "es.ack partition {partition} at {position} on the {label}: {}",
                describe(&e)
            )
        })
        .get(0)
}

/// The positions of partition `partition` of the subscription after `after`, from the table.
fn partition_positions(client: &mut Client, partition: i32, after: i64) -> Vec<i64> {
    client
        .query(
            "SELECT global_position FROM es.events \
              WHERE es.stream_hash(stream_id) % $1 = $2 AND global_position > $3 ORDER BY 1",
            &[&PARTITIONS, &partition, &after],
        )
        .expect("the partition's events")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The consumer on the primary: claims both partitions, then in each polls a batch and acks its
/// first half in one transaction (as a consumer that handled half a batch and then died: the
/// rest was delivered but not acked). Returns each partition's checkpoint.
fn consume_half(client: &mut Client) -> BTreeMap<i32, i64> {
    let held: Vec<i32> = client
        .query(
            "SELECT * FROM es.claim($1, $2, '10 minutes') ORDER BY 1",
            &[&SUBSCRIPTION, &CONSUMER],
        )
        .unwrap_or_else(|e| panic!("es.claim: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(held, [0, 1], "the only consumer holds both partitions");
    let mut acked = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let mut tx = client.transaction().expect("BEGIN");
        let batch = poll(&mut tx, "primary", partition);
        assert!(
            batch.len() >= 2,
            "partition {partition} got {} events; the test needs at least 2",
            batch.len()
        );
        let checkpoint = ack(&mut tx, "primary", partition, batch[batch.len() / 2 - 1]);
        tx.commit().expect("COMMIT");
        acked.insert(partition, checkpoint);
    }
    acked
}

/// After the failover: in each partition the consumer gets exactly the events after its last
/// ack (nothing lost, nothing twice), acks them, and then gets nothing more.
fn consumer_resumes(client: &mut Client, label: &str, acked: &BTreeMap<i32, i64>) -> usize {
    let mut delivered = 0;
    for (&partition, &checkpoint) in acked {
        let expected = partition_positions(client, partition, checkpoint);
        let got = poll(client, label, partition);
        assert_eq!(
            got, expected,
            "partition {partition}: after the failover es.poll must return exactly the events \
             after the consumer's last ack ({checkpoint}) on the {label}"
        );
        if let Some(&last) = got.last() {
            assert_eq!(
                ack(client, label, partition, last),
                last,
                "the ack on the {label}"
            );
        }
        assert!(
            poll(client, label, partition).is_empty(),
            "partition {partition}: es.poll after acking everything on the {label}"
        );
        delivered += got.len();
    }
    delivered
}

/// Opens `n` accounts and makes `deposits` deposits to each; returns the accounts.
fn open_accounts(client: &mut Client, n: usize, deposits: usize) -> Vec<Uuid> {
    let accounts: Vec<Uuid> = (0..n)
        .map(|i| {
            one(
                client,
                "SELECT es.open_account($1, 1000)",
                &[&format!("holder {i}")],
            )
        })
        .collect();
    for account in &accounts {
        deposit_each(client, std::slice::from_ref(account), deposits);
    }
    accounts
}

/// `count` deposits of 100 cents to each account.
fn deposit_each(client: &mut Client, accounts: &[Uuid], count: usize) {
    for account in accounts {
        for _ in 0..count {
            let _: i64 = one(client, "SELECT es.deposit($1, 100, 'salary')", &[account]);
        }
    }
}

/// `n` new stream ids, half of them in each partition of the subscription (so the consumer
/// has events in both, whatever ids the accounts got).
fn streams_in_both_partitions(client: &mut Client, n: usize) -> Vec<Uuid> {
    let mut by_partition: [Vec<Uuid>; 2] = [Vec::new(), Vec::new()];
    while by_partition.iter().any(|v| v.len() < n / 2) {
        let id = Uuid::new_v4();
        let partition: i32 = one(
            client,
            "SELECT es.stream_hash($1) % $2",
            &[&id, &PARTITIONS],
        );
        let bucket = &mut by_partition[partition as usize];
        if bucket.len() < n / 2 {
            bucket.push(id);
        }
    }
    let [a, b] = by_partition;
    a.into_iter().zip(b).flat_map(|(x, y)| [x, y]).collect()
}

/// Appends `count` events to each stream with the expected version it must be at.
fn append_each(client: &mut Client, streams: &[Uuid], count: usize) {
    for &stream in streams {
        let at = stream_version(client, stream);
        let events: Vec<String> = (0..count).map(|i| event("Noted", i)).collect();
        let version = append(client, stream, Some(at), &events)
            .unwrap_or_else(|e| panic!("append to {stream} at {at}: {}", describe(&e)));
        assert_eq!(version, at + count as i64, "the new version of {stream}");
    }
}

/// Account balances and states: `es.account_balances` equals `es.account_state` for every
/// account, and `es.account_transactions` has one row per account event.
fn assert_account_projections(client: &mut Client, label: &str) {
    let differing: Vec<String> = client
        .query(
            "SELECT s.stream_id::text FROM es.streams s \
               LEFT JOIN es.account_balances b ON b.account_id = s.stream_id \
              WHERE s.stream_type = 'account' \
                AND (b.account_id IS NULL OR b.version <> s.version \
                     OR b.balance_cents <> (es.account_state(s.stream_id)->>'balance_cents')::bigint \
                     OR b.status <> es.account_state(s.stream_id)->>'status')",
            &[],
        )
        .unwrap_or_else(|e| panic!("account_balances on the {label}: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        differing.is_empty(),
        "es.account_balances differs from es.account_state on the {label} for {differing:?}"
    );
    let (rows, events): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM es.account_transactions), \
                        (SELECT count(*) FROM es.events e JOIN es.streams s USING (stream_id) \
                          WHERE s.stream_type = 'account')",
                &[],
            )
            .expect("account_transactions");
        (row.get(0), row.get(1))
    };
    assert_eq!(
        rows, events,
        "es.account_transactions must hold one row per account event on the {label}"
    );
}

/// Waits until `es.wait_for_projection(name, position)` is true.
fn wait_for_projection(client: &mut Client, label: &str, name: &str, position: i64) {
    let done: bool = one(
        client,
        "SELECT es.wait_for_projection($1, $2, $3)",
        &[&name, &position, &WAIT_MS],
    );
    assert!(
        done,
        "projection {name} did not reach position {position} within {WAIT_MS} ms on the {label}: \
         {:?}",
        client
            .query_opt(
                "SELECT state || ', checkpoint ' || checkpoint || ', behind ' || events_behind || \
                        ', last error ' || coalesce(last_error, '-') FROM es.projections WHERE name = $1",
                &[&name],
            )
            .ok()
            .flatten()
            .map(|r| r.get::<_, String>(0))
    );
}

/// What the out-of-order load on a promoted server did.
struct Load {
    committed: usize,
    read: usize,
}

/// [`WRITERS`] connections to `dbname` on 127.0.0.1:`port` append 1–3 events to random streams
/// (expected version NULL) in transactions that sleep 0–20 ms before COMMIT, for [`LOAD_FOR`],
/// while a reader pages `es.read_all(last, 100)` from `from`. Every append must succeed (no
/// 23505, no other error); the reader must get every position stored after `from` exactly once,
/// in increasing order, and reach the end within [`WITHIN`] after the writers stop.
fn out_of_order_load(port: u16, dbname: &str, label: &str, streams: &[Uuid], from: i64) -> Load {
    let connect = || {
        replica::loopback_config(port, dbname)
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the {label}: {}", describe(&e)))
    };
    let writing = AtomicBool::new(true);
    let committed = Mutex::new(0usize);
    let mut writers: Vec<Client> = (0..WRITERS).map(|_| connect()).collect();
    let mut reader = connect();
    let mut checker = connect();
    let got = thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut got = Vec::new();
            let mut last = from;
            let mut give_up = None;
            loop {
                let page: Vec<i64> = reader
                    .query("SELECT global_position FROM es.read_all($1, 100)", &[&last])
                    .unwrap_or_else(|e| panic!("es.read_all on the {label}: {}", describe(&e)))
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if let Some(&top) = page.last() {
                    last = top;
                    got.extend(page);
                    continue;
                }
                if !writing.load(Ordering::SeqCst) {
                    let deadline = *give_up.get_or_insert_with(|| Instant::now() + WITHIN);
                    if last >= max_position(&mut checker) || Instant::now() >= deadline {
                        return got;
                    }
                }
                thread::sleep(Duration::from_millis(2));
            }
        });
        let handles: Vec<_> = writers
            .iter_mut()
            .enumerate()
            .map(|(w, client)| {
                let committed = &committed;
                scope.spawn(move || {
                    let mut rng = rand::rng();
                    let stop_at = Instant::now() + LOAD_FOR;
                    let mut mine = 0;
                    while Instant::now() < stop_at {
                        let stream = streams[rng.random_range(0..streams.len())];
                        let count = rng.random_range(1..=3usize);
                        let events: Vec<String> = (0..count).map(|i| event("Loaded", i)).collect();
                        let mut tx = client.transaction().expect("BEGIN");
                        append(&mut tx, stream, None, &events).unwrap_or_else(|e| {
                            panic!(
                                "writer {w}: append_events to {stream} on the {label}: {}",
                                describe(&e)
                            )
                        });
                        thread::sleep(Duration::from_millis(rng.random_range(0..=20)));
                        tx.commit().unwrap_or_else(|e| {
                            panic!("writer {w}: COMMIT on the {label}: {}", describe(&e))
                        });
                        mine += count;
                    }
                    *committed.lock().unwrap() += mine;
                })
            })
            .collect();
        let mut writer_failed = None;
        for handle in handles {
            if let Err(panic) = handle.join() {
                writer_failed = Some(panic);
            }
        }
        writing.store(false, Ordering::SeqCst);
        let got = reader.join();
        if let Some(panic) = writer_failed {
            std::panic::resume_unwind(panic);
        }
        got.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    let stored: Vec<i64> = stored_log(&mut checker, label)
        .into_iter()
        .map(|r| r.0)
        .filter(|&p| p > from)
        .collect();
    let committed = *committed.lock().unwrap();
    assert_eq!(
        stored.len(),
        committed,
        "the {label} must hold exactly the events its writers committed"
    );
    let seen: BTreeSet<i64> = got.iter().copied().collect();
    let missed: Vec<i64> = stored
        .iter()
        .filter(|p| !seen.contains(p))
        .take(10)
        .copied()
        .collect();
    assert!(
        missed.is_empty(),
        "the reader on the {label} never got {} committed events (first {missed:?}); it stopped \
         at {:?}",
        stored.len() - stored.iter().filter(|p| seen.contains(p)).count(),
        got.last()
    );
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "the reader on the {label} got positions out of order or twice"
    );
    assert_eq!(
        got, stored,
        "the reader on the {label} got events that are not stored"
    );
    Load {
        committed,
        read: got.len(),
    }
}

/// Appends `lines` to the summary (stderr, and `target/failover-summary.txt`, a section per
/// test, because a passing test's stderr is captured).
fn summarize(test: &str, lines: &[String]) {
    let mut text = String::new();
    for line in lines {
        // one line per entry (a server message may span several)
        let line = line.replace('\n', " ").replace('\t', "");
        text.push_str(&format!("failover ({test}): {line}\n"));
    }
    eprint!("{text}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/failover-summary.txt");
    let mut all = std::fs::read_to_string(&path).unwrap_or_default();
    // keep the other test's section of this run, replace this test's
    all = all
        .lines()
        .filter(|l| !l.starts_with(&format!("failover ({test}):")))
        .map(|l| format!("{l}\n"))
        .collect();
    all.push_str(&text);
    if let Err(e) = std::fs::write(&path, all) {
        eprintln!("warning: cannot write {}: {e}", path.display());
    }
}

/// Waits until `sql` (one boolean) is true on `client`, for [`WITHIN`]; `what` names it.
fn wait_until(client: &mut Client, sql: &str, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let ok: bool = one(client, sql, &[]);
        if ok {
            return started.elapsed();
        }
        assert!(started.elapsed() < WITHIN, "{what}: not within {WITHIN:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The test projection's handler and read model: one row per event it is fed.
const RECORDER: &str = "
    CREATE TABLE recorded (global_position bigint NOT NULL, stream_id uuid NOT NULL,
                           version bigint NOT NULL);
    CREATE FUNCTION record_event(e es.events) RETURNS void LANGUAGE sql AS
      $$ INSERT INTO recorded VALUES (e.global_position, e.stream_id, e.version) $$;
    SELECT es.create_projection('recorder', 'record_event(es.events)', batch => 50);";

// ---------------------------------------------------------------------------------------------
// A: promoting a streaming standby
// ---------------------------------------------------------------------------------------------

#[test]
fn promoting_a_streaming_standby() {
    let _exclusive = replica::exclusive();
    let db = TestDb::new("failover_standby");
    let mut primary = db.connect();
    assert_preloaded(&mut primary);
    // The standby first: everything below reaches it through WAL, as in production.
    let mut standby = Replica::standby();
    let mut summary = vec![format!(
        "standby on port {} (pg_basebackup -R of the primary on port {})",
        standby.port(),
        event_store_client_tests::port()
    )];

    // --- on the primary: a subscription, projections, accounts, streams ---------------------
    exec(&mut primary, RECORDER);
    exec(&mut primary, "SELECT es.enable_account_projections()");
    exec(
        &mut primary,
        &format!("SELECT es.create_subscription('{SUBSCRIPTION}', 0, partitions => {PARTITIONS})"),
    );
    let accounts = open_accounts(&mut primary, 6, 4);
    let streams = streams_in_both_partitions(&mut primary, 4);
    append_each(&mut primary, &streams, 5);
    let end = max_position(&mut primary);
    for projection in ["recorder", "account_balances", "account_transactions"] {
        wait_for_projection(&mut primary, "primary", projection, end);
    }
    let acked = consume_half(&mut primary);
    // The test projection stops here: at the failover it is behind the log by every later event.
    exec(&mut primary, "SELECT es.pause_projection('recorder')");
    let recorder_checkpoint: i64 = one(
        &mut primary,
        "SELECT checkpoint FROM es.projections WHERE name = 'recorder'",
        &[],
    );
    deposit_each(&mut primary, &accounts, 2);
    exec(
        &mut primary,
        &format!("SELECT es.withdraw('{}', 50, 'rent')", accounts[0]),
    );
    append_each(&mut primary, &streams, 2);
    let end = max_position(&mut primary);
    wait_for_projection(&mut primary, "primary", "account_balances", end);
    wait_for_projection(&mut primary, "primary", "account_transactions", end);

    // At the crash: one append in flight (drawn, never committed), and a later position that
    // committed. The primary's readers, and the standby's (capped at the watermark), must not
    // return the late event while the in-flight position is open.
    let mut in_flight = db.connect();
    let mut in_flight_tx = in_flight.transaction().expect("BEGIN");
    let never_committed = Uuid::new_v4();
    append(
        &mut in_flight_tx,
        never_committed,
        Some(0),
        &[event("NeverCommitted", 0)],
    )
    .unwrap_or_else(|e| panic!("the in-flight append: {}", describe(&e)));
    let in_flight_position = position_of(&mut in_flight_tx, never_committed, 1);
    append_each(&mut primary, &streams[..1], 1);
    let late = position_of(&mut primary, streams[0], 8);
    assert!(
        late > in_flight_position,
        "the late event is above the in-flight position"
    );
    assert!(
        !read_all_once(&mut primary, "primary", 0).contains(&late),
        "es.read_all on the primary returned position {late} while {in_flight_position} is in \
         flight"
    );
    let before = stored_log(&mut primary, "primary");
    let below_in_flight: i64 = one(
        &mut primary,
        "SELECT max(global_position) FROM es.events WHERE global_position < $1",
        &[&in_flight_position],
    );

    // The standby has replayed everything, and its watermark is as high as it can be.
    let mut on_standby = standby.connect(db.name());
    standby.wait_for_replay(&mut primary, &mut on_standby);
    wait_until(
        &mut on_standby,
        &format!(
            "SELECT coalesce((SELECT position FROM es.watermark) >= {below_in_flight}, false)"
        ),
        "the standby's es.watermark reaching the last position below the in-flight one",
    );
    let standby_watermark = watermark(&mut on_standby).expect("a watermark");
    let standby_reads = read_all_once(&mut on_standby, "standby", 0);
    assert!(
        standby_reads.iter().all(|&p| p <= standby_watermark) && !standby_reads.contains(&late),
        "es.read_all on the standby must stay at or below its watermark {standby_watermark} \
         (late event {late}), got up to {:?}",
        standby_reads.last()
    );
    summary.push(format!(
        "before the crash: {} events, one append in flight at position {in_flight_position}, \
         the late event at {late}; the standby's watermark {standby_watermark}, its read_all \
         returned {} events",
        before.len(),
        standby_reads.len()
    ));

    // --- the crash and the promotion ----------------------------------------------------------
    let primary_down = PrimaryStopped::stop(&mut primary, Shutdown::Immediate);
    drop(in_flight_tx);
    drop(in_flight);
    drop(primary);
    let promote_started = Instant::now();
    let promoted_ok: bool = one(
        &mut standby.connect("postgres"),
        "SELECT pg_promote(wait => true, wait_seconds => 60)",
        &[],
    );
    assert!(promoted_ok, "pg_promote() returned false");
    let promotion = promote_started.elapsed();
    let mut promoted = standby.connect(db.name());
    let in_recovery: bool = one(&mut promoted, "SELECT pg_is_in_recovery()", &[]);
    assert!(!in_recovery, "the promoted server is still in recovery");
    // (the session opened on the standby goes on after the promotion)
    let in_recovery: bool = one(&mut on_standby, "SELECT pg_is_in_recovery()", &[]);
    assert!(
        !in_recovery,
        "a session from before the promotion still sees recovery"
    );

    // Exactly what had committed, and all of it readable: no cap at the old watermark, and the
    // in-flight position (which will never commit) blocks nothing.
    let after = stored_log(&mut promoted, "promoted standby");
    assert_eq!(
        after, before,
        "the promoted server must hold exactly the events committed on the primary"
    );
    assert_eq!(stream_version(&mut promoted, never_committed), 0);
    let positions: Vec<i64> = after.iter().map(|r| r.0).collect();
    read_all_must_return(&mut promoted, "promoted standby", &positions);
    read_all_must_return(
        &mut on_standby,
        "promoted standby (old session)",
        &positions,
    );

    // The store's launcher is a static worker that starts when recovery finishes: after the
    // promotion, by itself.
    let launcher_after = wait_until(
        &mut promoted,
        "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_store launcher'",
        "the store's launcher starting on the promoted server",
    );

    // --- appends go on ------------------------------------------------------------------------
    let old_max = *positions.last().expect("events");
    let v0 = stream_version(&mut promoted, streams[0]);
    let new_version = append(
        &mut promoted,
        streams[0],
        Some(v0),
        &[event("AfterFailover", 0)],
    )
    .unwrap_or_else(|e| panic!("append on the promoted server: {}", describe(&e)));
    assert_eq!(new_version, v0 + 1, "the stream's next version");
    let first_new = position_of(&mut promoted, streams[0], new_version);
    assert!(
        first_new > old_max,
        "the first position after the promotion ({first_new}) must be above every stored one \
         ({old_max})"
    );
    // the stream of the append that never committed starts at version 1, and a retry with the
    // same event id is idempotent
    let retried = format!(
        r#"{{"type":"NeverCommitted","event_id":"{}"}}"#,
        Uuid::new_v4()
    );
    for _ in 0..2 {
        let version = append(
            &mut promoted,
            never_committed,
            Some(0),
            std::slice::from_ref(&retried),
        )
        .unwrap_or_else(|e| panic!("append to a new stream: {}", describe(&e)));
        assert_eq!(version, 1, "the retried first append of a new stream");
    }
    let account_version = stream_version(&mut promoted, accounts[1]);
    let deposited: i64 = one(
        &mut promoted,
        "SELECT es.deposit($1, 100, 'after failover', $2)",
        &[&accounts[1], &account_version],
    );
    assert_eq!(
        deposited,
        account_version + 1,
        "a deposit with its expected version"
    );
    expect_sqlstate(
        &mut promoted,
        "SELECT es.deposit($1, 100, 'stale', $2)",
        &[&accounts[1], &account_version],
        "ES001",
    );
    let deposit_position = position_of(&mut promoted, accounts[1], deposited);

    // --- projections: the account projections follow by themselves (no call: the launcher
    // started their worker); the paused one resumes from its checkpoint ----------------------
    let follow_started = Instant::now();
    wait_for_projection(
        &mut promoted,
        "promoted standby",
        "account_balances",
        deposit_position,
    );
    let followed = follow_started.elapsed();
    let workers: i64 = one(
        &mut promoted,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'event_store worker' \
           AND datname = current_database()",
        &[],
    );
    assert_eq!(
        workers, 1,
        "one projection worker of the database on the promoted server"
    );
    let paused: (String, i64) = {
        let row = promoted
            .query_one(
                "SELECT state, checkpoint FROM es.projections WHERE name = 'recorder'",
                &[],
            )
            .expect("es.projections");
        (row.get(0), row.get(1))
    };
    assert_eq!(
        paused,
        ("paused".to_owned(), recorder_checkpoint),
        "the paused projection keeps its state and checkpoint through the failover"
    );
    exec(&mut promoted, "SELECT es.resume_projection('recorder')");

    // --- the subscription resumes from its checkpoints ----------------------------------------
    let delivered = consumer_resumes(&mut promoted, "promoted standby", &acked);
    let woke: bool = {
        let waiter_port = standby.port();
        let name = db.name().to_owned();
        let partition: i32 = one(
            &mut promoted,
            "SELECT es.stream_hash($1) % $2",
            &[&streams[0], &PARTITIONS],
        );
        let mut waiting = replica::loopback_config(waiter_port, &name)
            .connect(NoTls)
            .expect("connect");
        let waiter = thread::spawn(move || {
            let woke: bool = one(
                &mut waiting,
                "SELECT es.wait($1, $2, 20000)",
                &[&SUBSCRIPTION, &partition],
            );
            (woke, Instant::now())
        });
        thread::sleep(Duration::from_millis(200));
        append(&mut promoted, streams[0], None, &[event("Wake", 0)]).expect("append");
        let appended = Instant::now();
        let (woke, returned) = waiter.join().expect("the es.wait thread");
        summary.push(format!(
            "es.wait returned {:.1} ms after the append's commit",
            returned.saturating_duration_since(appended).as_secs_f64() * 1e3
        ));
        woke
    };
    assert!(
        woke,
        "es.wait on the promoted server did not see new events"
    );

    // --- 4 writers committing out of order beside a paging reader ----------------------------
    let from = max_position(&mut promoted);
    let mut load_streams = streams.clone();
    load_streams.extend((0..4).map(|_| Uuid::new_v4()));
    let load = out_of_order_load(
        standby.port(),
        db.name(),
        "promoted standby",
        &load_streams,
        from,
    );
    assert_streams_consistent(&mut promoted, "promoted standby");
    let end = max_position(&mut promoted);
    for projection in ["recorder", "account_balances", "account_transactions"] {
        wait_for_projection(&mut promoted, "promoted standby", projection, end);
    }
    assert_account_projections(&mut promoted, "promoted standby");
    let duplicates: i64 = one(
        &mut promoted,
        "SELECT count(*) - count(DISTINCT global_position) FROM recorded",
        &[],
    );
    assert_eq!(
        duplicates, 0,
        "the resumed projection handled an event twice"
    );
    let recorded: Vec<i64> = promoted
        .query("SELECT global_position FROM recorded ORDER BY 1", &[])
        .expect("recorded")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let all: Vec<i64> = stored_log(&mut promoted, "promoted standby")
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        recorded, all,
        "the resumed projection must have handled every event exactly once"
    );
    // the consumer gets the load's events too, after its new checkpoints
    let acked_now: BTreeMap<i32, i64> = (0..PARTITIONS)
        .map(|p| {
            let c: i64 = one(
                &mut promoted,
                "SELECT checkpoint FROM es.subscriptions WHERE name = $1 AND partition = $2",
                &[&SUBSCRIPTION, &p],
            );
            (p, c)
        })
        .collect();
    let delivered_after_load = consumer_resumes(&mut promoted, "promoted standby", &acked_now);
    verify_store(&mut promoted);

    summary.push(format!(
        "pg_promote took {:.0} ms; the launcher was running {:.0} ms after it; the account \
         projection followed a new deposit in {:.0} ms with no call",
        promotion.as_secs_f64() * 1e3,
        launcher_after.as_secs_f64() * 1e3,
        followed.as_secs_f64() * 1e3
    ));
    summary.push(format!(
        "first position after the promotion {first_new} (stored up to {old_max}: the sequence \
         is WAL-logged ahead, so positions skip up to 32, versions never); the consumer got {} \
         events after its acks, then {} of the load",
        delivered, delivered_after_load
    ));
    summary.push(format!(
        "load on the promoted server: {} events committed by {WRITERS} writers out of order, the \
         reader got {} (none missed, none twice)",
        load.committed, load.read
    ));
    summarize("standby", &summary);

    standby.stop().unwrap_or_else(|e| panic!("{e}"));
    primary_down.start();
}

/// Before a promotion, a hot standby refuses every write with PostgreSQL's read-only error,
/// 25006 (docs/reference.md §11; never XX000, docs/reference.md §6): clients that still point at it after a failover get
/// an error they can recognise and retry elsewhere. Every write function is tried once, and all
/// outcomes are reported together.
#[test]
fn a_standby_refuses_every_write_with_the_read_only_error() {
    let _exclusive = replica::exclusive();
    let db = TestDb::new("failover_readonly");
    let mut primary = db.connect();
    exec(
        &mut primary,
        &format!("SELECT es.create_subscription('{SUBSCRIPTION}', 0, partitions => {PARTITIONS})"),
    );
    let accounts = open_accounts(&mut primary, 1, 1);
    let streams = streams_in_both_partitions(&mut primary, 2);
    append_each(&mut primary, &streams, 2);
    consume_half(&mut primary);
    let mut standby = Replica::standby();
    let mut on_standby = standby.connect(db.name());
    standby.wait_for_replay(&mut primary, &mut on_standby);
    let outcomes = standby_write_outcomes(&mut on_standby, accounts[0], streams[0]);
    drop(on_standby);
    standby.stop().unwrap_or_else(|e| panic!("{e}"));
    let wrong: Vec<&String> = outcomes
        .iter()
        .filter(|outcome| !outcome.ends_with(": 25006"))
        .collect();
    assert!(
        wrong.is_empty(),
        "on a hot standby every write must fail with PostgreSQL's read-only error 25006 (docs/reference.md \
         §11, never XX000); these did not: {wrong:#?}"
    );
}

/// Tries every kind of write on a hot standby; returns one line per call: `call: SQLSTATE`, or
/// `call: succeeded`, or `call: <error without SQLSTATE>`, with the message for anything but
/// 25006.
fn standby_write_outcomes(standby: &mut Client, account: Uuid, stream: Uuid) -> Vec<String> {
    let new_stream = Uuid::new_v4();
    let calls: [(&str, &str, Vec<&(dyn postgres::types::ToSql + Sync)>); 9] = [
        (
            "es.append_events to an existing stream",
            r#"SELECT es.append_events($1, NULL, ARRAY['{"type":"Noted"}']::jsonb[])"#,
            vec![&stream],
        ),
        (
            "es.append_events to a new stream",
            r#"SELECT es.append_events($1, 0, ARRAY['{"type":"Noted"}']::jsonb[])"#,
            vec![&new_stream],
        ),
        ("es.deposit", "SELECT es.deposit($1, 1)", vec![&account]),
        ("es.withdraw", "SELECT es.withdraw($1, 1)", vec![&account]),
        ("es.open_account", "SELECT es.open_account('x', 0)", vec![]),
        (
            "es.save_snapshot",
            "SELECT es.save_snapshot($1, 1, es.account_state($1, at_version => 1))",
            vec![&account],
        ),
        (
            "es.ack",
            "SELECT es.ack('mailer', 0, 1, 'consumer-a')",
            vec![],
        ),
        (
            "es.claim",
            "SELECT count(*) FROM es.claim('mailer', 'consumer-b')",
            vec![],
        ),
        (
            "es.create_subscription",
            "SELECT es.create_subscription('on_standby')",
            vec![],
        ),
    ];
    calls
        .iter()
        .map(|(call, sql, params)| match standby.query(*sql, params) {
            Ok(_) => format!("{call}: succeeded"),
            Err(e) => match sqlstate(&e) {
                Some("25006") => format!("{call}: 25006"),
                _ => format!("{call}: {}", describe(&e)),
            },
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// B: promoting a logical subscriber
// ---------------------------------------------------------------------------------------------

#[test]
fn promoting_a_logical_subscriber() {
    let _exclusive = replica::exclusive();
    // Before the test database: turning on wal_level = logical restarts the primary.
    let _wal = LogicalWalLevel::ensure();
    let db = TestDb::new("failover_logical");
    let mut primary = db.connect();
    assert_preloaded(&mut primary);
    let tables = published_tables(&mut primary);
    let mut summary = Vec::new();

    // --- on the publisher: accounts with snapshots, streams, a subscription -------------------
    exec(&mut primary, "SET es.snapshot_interval = 4");
    exec(&mut primary, "SELECT es.enable_account_projections()");
    exec(
        &mut primary,
        &format!("SELECT es.create_subscription('{SUBSCRIPTION}', 0, partitions => {PARTITIONS})"),
    );
    let accounts = open_accounts(&mut primary, 4, 5);
    let streams = streams_in_both_partitions(&mut primary, 4);
    append_each(&mut primary, &streams, 4);

    // The subscriber copies what exists, then streams what follows.
    let mut subscriber = Replica::fresh_subscriber();
    let subscription = LogicalSubscription::create(&subscriber, db.name(), &tables);
    summary.push(format!(
        "subscriber on port {} receiving {}",
        subscriber.port(),
        subscription.tables().join(", ")
    ));
    deposit_each(&mut primary, &accounts, 3);
    exec(
        &mut primary,
        &format!("SELECT es.withdraw('{}', 200, 'rent')", accounts[0]),
    );
    append_each(&mut primary, &streams, 3);
    let acked = consume_half(&mut primary);

    // An append in flight at the stop, and a later position that committed.
    let mut in_flight = db.connect();
    let mut in_flight_tx = in_flight.transaction().expect("BEGIN");
    let never_committed = Uuid::new_v4();
    append(
        &mut in_flight_tx,
        never_committed,
        Some(0),
        &[event("NeverCommitted", 0)],
    )
    .unwrap_or_else(|e| panic!("the in-flight append: {}", describe(&e)));
    let in_flight_position = position_of(&mut in_flight_tx, never_committed, 1);
    append_each(&mut primary, &streams[..1], 1);
    let late = position_of(&mut primary, streams[0], 8);
    let before = stored_log(&mut primary, "publisher");
    let snapshots: i64 = one(&mut primary, "SELECT count(*) FROM es.snapshots", &[]);
    assert!(
        snapshots > 0,
        "the publisher wrote snapshots (es.snapshot_interval = 4)"
    );
    let balances: Vec<(Uuid, i64, i64)> = accounts
        .iter()
        .map(|a| {
            let row = primary
                .query_one(
                    "SELECT (es.account_state($1)->>'balance_cents')::bigint, es.stream_version($1)",
                    &[a],
                )
                .expect("account_state");
            (*a, row.get(0), row.get(1))
        })
        .collect();
    subscription.wait_for_apply(&mut primary);

    // A session on the subscriber from before the failover: it has read the log capped at the
    // replicated watermark (and cached that es.events is replicated in).
    let mut old_session = subscriber.connect(db.name());
    let capped = read_all_once(&mut old_session, "subscriber", 0);
    let replicated_watermark = watermark(&mut old_session);
    assert!(
        !capped.contains(&late),
        "es.read_all on the subscriber returned {late} while {in_flight_position} was in flight \
         on the publisher"
    );
    summary.push(format!(
        "before the stop: {} events, {snapshots} snapshots, one append in flight at \
         {in_flight_position}, the late event at {late}; the subscriber's watermark \
         {replicated_watermark:?}, its read_all returned {} events",
        before.len(),
        capped.len()
    ));

    // --- the publisher goes away; the DBA detaches the subscriber ----------------------------
    let primary_down = PrimaryStopped::stop(&mut primary, Shutdown::Fast);
    drop(in_flight_tx);
    drop(in_flight);
    drop(primary);
    let mut dba = subscriber.connect(db.name());
    let name = subscription.name().to_owned();
    // DROP SUBSCRIPTION alone connects to the publisher to drop its slot, and fails while the
    // publisher is down; detaching the slot first makes it local.
    let refused = dba.batch_execute(&format!("DROP SUBSCRIPTION {name}"));
    let refused = refused.expect_err("DROP SUBSCRIPTION with the publisher down must fail");
    summary.push(format!(
        "DROP SUBSCRIPTION with the publisher down: {}",
        describe(&refused)
    ));
    let (seq_last, seq_called): (i64, bool) = {
        let row = dba
            .query_one(
                "SELECT last_value, is_called FROM es.global_position_seq",
                &[],
            )
            .expect("the sequence");
        (row.get(0), row.get(1))
    };
    let old_max = before.last().expect("events").0;
    summary.push(format!(
        "the position sequence on the subscriber before the first draw: last_value {seq_last} \
         (is_called {seq_called}); the replicated log goes up to {old_max}"
    ));
    exec(
        &mut dba,
        &format!(
            "ALTER SUBSCRIPTION {name} DISABLE; \
             ALTER SUBSCRIPTION {name} SET (slot_name = NONE);"
        ),
    );
    // Disabled is not yet failed over: while the subscription exists, es.events counts as
    // replicated in, so readers stay capped at the old publisher's watermark (the subscription
    // could be enabled again). An append works (the sequence is moved past the stored
    // positions) but is not readable until the subscription is dropped.
    let probe = Uuid::new_v4();
    append(&mut dba, probe, Some(0), &[event("WhileDisabled", 0)]).unwrap_or_else(|e| {
        panic!(
            "append while the subscription is disabled: {}",
            describe(&e)
        )
    });
    let probe_position = position_of(&mut dba, probe, 1);
    assert!(
        probe_position > old_max,
        "the first position drawn on the subscriber ({probe_position}) must be above every \
         replicated one ({old_max})"
    );
    assert!(
        !read_all_once(&mut dba, "subscriber", 0).contains(&probe_position),
        "es.read_all returned an event above the replicated watermark while the subscription \
         still exists (disabled)"
    );
    exec(&mut dba, &format!("DROP SUBSCRIPTION {name}"));

    // --- what was replicated is all there and all readable ------------------------------------
    let mut after = stored_log(&mut dba, "subscriber");
    assert_eq!(
        after.pop(),
        Some((probe_position, probe, 1)),
        "the event appended while the subscription was disabled is the last one"
    );
    assert_eq!(
        after, before,
        "the subscriber must hold exactly the events committed on the publisher"
    );
    after.push((probe_position, probe, 1));
    let positions: Vec<i64> = after.iter().map(|r| r.0).collect();
    read_all_must_return(
        &mut old_session,
        "subscriber (session from before)",
        &positions,
    );
    read_all_must_return(&mut dba, "subscriber", &positions);
    let replicated_snapshots: i64 = one(&mut dba, "SELECT count(*) FROM es.snapshots", &[]);
    assert_eq!(
        replicated_snapshots, snapshots,
        "the snapshots are replicated"
    );

    // --- appends: never a stored position, never a raw 23505 ---------------------------------
    let v0 = stream_version(&mut old_session, streams[0]);
    let version = append(
        &mut old_session,
        streams[0],
        Some(v0),
        &[event("AfterFailover", 0)],
    )
    .unwrap_or_else(|e| {
        panic!(
            "append from a session opened before the drop: {}",
            describe(&e)
        )
    });
    assert_eq!(version, v0 + 1);
    let first_new = position_of(&mut old_session, streams[0], version);
    assert!(
        first_new > probe_position,
        "a position drawn after the drop ({first_new}) must be above every stored one \
         ({probe_position})"
    );
    let v1 = stream_version(&mut dba, streams[1]);
    let version = append(&mut dba, streams[1], Some(v1), &[event("AfterFailover", 1)])
        .unwrap_or_else(|e| panic!("append from a new session: {}", describe(&e)));
    assert_eq!(version, v1 + 1);
    assert!(position_of(&mut dba, streams[1], version) > first_new);
    assert_eq!(
        append(
            &mut dba,
            never_committed,
            Some(0),
            &[event("NeverCommitted", 0)]
        )
        .unwrap_or_else(|e| panic!("append to a new stream: {}", describe(&e))),
        1,
        "the stream whose append never committed starts at version 1"
    );

    // --- account commands on the replicated state --------------------------------------------
    for &(account, balance, version) in &balances {
        let state: serde_json::Value = one(&mut dba, "SELECT es.account_state($1)", &[&account]);
        assert_eq!(
            state["balance_cents"].as_i64(),
            Some(balance),
            "the replicated balance of {account}"
        );
        let replayed: serde_json::Value = one(
            &mut dba,
            "SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = $1",
            &[&account],
        );
        assert_eq!(
            state, replayed,
            "es.account_state (snapshot + tail) against a full replay"
        );
        let deposited: i64 = one(
            &mut dba,
            "SELECT es.deposit($1, 100, 'after failover', $2)",
            &[&account, &version],
        );
        assert_eq!(
            deposited,
            version + 1,
            "a deposit at the replicated version"
        );
    }
    let (account, balance, _) = balances[1];
    let overdraft = describe(&expect_sqlstate(
        &mut dba,
        "SELECT es.withdraw($1, $2)",
        &[&account, &(balance + 100 + 1)],
        "ES101",
    ));
    assert!(
        overdraft.contains(&format!("available: {}", balance + 100)),
        "the overdraft's DETAIL names the replicated balance plus the deposit: {overdraft}"
    );
    let opened: Uuid = one(&mut dba, "SELECT es.open_account('after failover', 5)", &[]);
    assert_eq!(stream_version(&mut dba, opened), 1);

    // --- the subscription resumes from its replicated checkpoints ----------------------------
    let delivered = consumer_resumes(&mut dba, "subscriber", &acked);

    // --- 4 writers committing out of order beside a paging reader ----------------------------
    let from = max_position(&mut dba);
    let load = out_of_order_load(subscriber.port(), db.name(), "subscriber", &streams, from);
    assert_streams_consistent(&mut dba, "subscriber");
    let dupes: i64 = one(
        &mut dba,
        "SELECT count(*) - count(DISTINCT global_position) FROM es.events",
        &[],
    );
    assert_eq!(dupes, 0, "a position stored twice on the subscriber");

    // --- projections: their read models and configuration were not published, only their
    // subscriptions' rows (es.subscription_config / es.subscription_partitions): the DBA drops
    // those and creates the projections again, which rebuild from the start of the log -------
    let without_drop = match dba.batch_execute("SELECT es.enable_account_projections()") {
        Ok(()) => "succeeded".to_owned(),
        Err(e) => describe(&e),
    };
    summary.push(format!(
        "es.enable_account_projections() before dropping the replicated subscriptions of the \
         publisher's projections: {without_drop}"
    ));
    exec(
        &mut dba,
        "SELECT es.drop_subscription(name) FROM es.subscription_config \
          WHERE name IN ('account_balances', 'account_transactions') \
            AND NOT EXISTS (SELECT 1 FROM es.projection_config j WHERE j.name = subscription_config.name); \
         SELECT es.enable_account_projections();",
    );
    let end = max_position(&mut dba);
    wait_for_projection(&mut dba, "subscriber", "account_balances", end);
    wait_for_projection(&mut dba, "subscriber", "account_transactions", end);
    assert_account_projections(&mut dba, "subscriber");
    verify_store(&mut dba);

    summary.push(format!(
        "first position drawn on the subscriber {probe_position}, then {first_new} after the \
         drop; the consumer got {delivered} events \
         after its acks; load: {} events committed by {WRITERS} writers out of order, the reader \
         got {} (none missed, none twice)",
        load.committed, load.read
    ));
    summarize("logical", &summary);

    drop(old_session);
    drop(dba);
    primary_down.start();
    // the slot the publisher kept for the dropped subscription (a DBA drops it when the old
    // publisher comes back): dropped by `subscription`, which needs both servers up
    drop(subscription);
    subscriber.stop().unwrap_or_else(|e| panic!("{e}"));
}
