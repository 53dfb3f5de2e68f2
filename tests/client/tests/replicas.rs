//! Readers on real replicas are gap-safe (docs/reference.md §11, issue 11 items 3 and 7).
//!
//! A reader that pages through `es.read_all(last, 100)` must never skip an event that commits
//! late, also when it reads from a replica rather than the primary. On a replica the primary's
//! positions in flight (shared memory) are invisible: a streaming standby replays commits in
//! commit order and a logical subscriber applies whole transactions in commit order, neither in
//! position order. So the store caps readers there at `es.watermark`, which the primary's worker
//! writes and which reaches the replicas through WAL. These tests check that with real replicas on
//! loopback, made the way an operator makes them:
//! - a streaming hot standby made with `pg_basebackup -R` from the client-test cluster;
//! - a second cluster with the extension created in a fresh database, subscribed by logical
//!   replication to a publication of the store's tables (`es.events`, `es.streams`,
//!   `es.watermark` and the subscription tables).
//!
//! 8 writer connections on the primary append to random streams inside explicit transactions
//! that sleep 0–30 ms before COMMIT (the pattern of `read_all_gap_safe.rs`), so transactions
//! commit out of position order. Readers page meanwhile — one on the primary (the baseline), one
//! on the standby, one on the subscriber — and after the writers stop and the replicas caught up
//! each one must have seen every committed event exactly once, in increasing order. The measured
//! delivery lag (a commit returned on the primary → the event returned by `read_all` on the
//! replica) is printed for the record, not asserted: it depends on the machine. Before the
//! writers start, one event is appended and the primary must write `es.watermark` up to it while
//! the replicas are connected: without that row a replica's readers get nothing, and the test
//! says so at once instead of through a reader that times out.
//!
//! A second test checks, on a standby, that writes fail with PostgreSQL's read-only error
//! (SQLSTATE 25006) and that `es.poll` of a subscription created on the primary is gap-safe the
//! same way (the consumer acks on the primary, where writes go).
//!
//! The replicas are started and stopped through `scripts/cluster.sh` (tests/client/src/replica.rs)
//! and are stopped also when a test fails; their logs must show no process killed by a signal.
//! Run with `bash tests/client/run.sh --test replicas` (the library preloaded, ES_PRELOAD=1).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::replica::{
    self, LogicalSubscription, LogicalWalLevel, Replica, published_tables,
};
use event_store_client_tests::{
    Client, TestDb, Uuid, append, assert_preloaded, describe, sqlstate,
};
use rand::Rng;

/// Writer connections on the primary.
const WRITERS: usize = 8;
/// Streams the writers pick from at random.
const STREAMS: usize = 64;
/// How long the writers run.
const RUN_FOR: Duration = Duration::from_secs(5);
/// Page size of the readers (`es.read_all(last, PAGE)`, `es.poll(name, 0, PAGE)`).
const PAGE: i64 = 100;
/// How long a reader may take, after the writers stopped, to reach the last committed position.
/// Generous: it bounds a stalled reader, it is not a performance assertion.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(60);
/// How long the primary's worker may take to write the first `es.watermark` once a replica is
/// connected (it writes every `es.watermark_interval`, 10 ms by default; the bound is generous).
const WATERMARK_WITHIN: Duration = Duration::from_secs(15);
/// The subscription the standby's `es.poll` consumer reads.
const POLL_SUBSCRIPTION: &str = "replica_poll";

/// One event as a reader got it: `(global_position, stream_id, version)`.
type Row = (i64, Uuid, i64);

/// Fetches the next page after the given position (the reader's own connections are inside).
type Fetch<'a> = Box<dyn FnMut(i64) -> Vec<Row> + Send + 'a>;

/// A reader to run while the writers write.
struct ReaderSpec<'a> {
    /// Where it reads, for the report (`primary`, `standby`, ...).
    label: &'static str,
    /// Its page function.
    fetch: Fetch<'a>,
}

/// The events of one committed writer transaction.
struct Committed {
    stream: Uuid,
    /// The versions its append took in the stream.
    first_version: i64,
    last_version: i64,
    /// When COMMIT returned on the primary.
    at: Instant,
    /// Whether it counts for the delivery lag (not the setup event, written before the readers
    /// started).
    timed: bool,
}

/// What a reader observed.
struct Reading {
    label: &'static str,
    /// Every event returned, with when it was returned, in the order returned.
    got: Vec<(Row, Instant)>,
    /// How many events were returned while the writers were still running.
    got_while_writing: usize,
    /// Ordering violations: `(last position before, position returned after it)`.
    out_of_order: Vec<(i64, i64)>,
    /// Whether the reader reached the last committed position within [`CATCH_UP_WITHIN`].
    caught_up: bool,
    /// Its last position when it stopped.
    last: i64,
}

/// Increments the shared count of finished writers when dropped (also on panic), so a panicking
/// writer cannot leave the readers waiting for the others forever.
struct DoneOnDrop<'a>(&'a AtomicUsize);

impl Drop for DoneOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// One writer: appends 1..=3 events to a random stream per transaction, sleeps 0–30 ms before
/// COMMIT (so commits come out of position order) and records every commit.
fn write(client: &mut Client, w: usize, streams: &[Uuid], start: &Barrier) -> Vec<Committed> {
    let mut rng = rand::rng();
    let mut commits = Vec::new();
    start.wait();
    let deadline = Instant::now() + RUN_FOR;
    while Instant::now() < deadline {
        let stream = streams[rng.random_range(0..streams.len())];
        let count = rng.random_range(1..=3i64);
        let events: Vec<String> = (0..count)
            .map(|i| format!(r#"{{"type":"Written","writer":{w},"i":{i}}}"#))
            .collect();
        let mut tx = client
            .transaction()
            .unwrap_or_else(|e| panic!("BEGIN: {}", describe(&e)));
        let version = append(&mut tx, stream, None, &events).unwrap_or_else(|e| {
            panic!(
                "writer {w}: append_events(s, NULL, {count}): {}",
                describe(&e)
            )
        });
        thread::sleep(Duration::from_millis(rng.random_range(0..=30)));
        tx.commit()
            .unwrap_or_else(|e| panic!("COMMIT: {}", describe(&e)));
        commits.push(Committed {
            stream,
            first_version: version - count + 1,
            last_version: version,
            at: Instant::now(),
            timed: true,
        });
    }
    commits
}

/// One reader: pages with `fetch` from position 0 until the writers stopped and it reached the
/// last committed position (`final_position`, set once the writers stopped), or gave up after
/// [`CATCH_UP_WITHIN`]. Sleeps 1 ms after an empty page, so its delivery lag is its replica's.
fn read(
    spec: ReaderSpec<'_>,
    start: &Barrier,
    writers_done: &AtomicUsize,
    final_position: &AtomicI64,
) -> Reading {
    let ReaderSpec { label, mut fetch } = spec;
    let mut reading = Reading {
        label,
        got: Vec::new(),
        got_while_writing: 0,
        out_of_order: Vec::new(),
        caught_up: false,
        last: 0,
    };
    let mut writing = true;
    let mut give_up_at = None;
    start.wait();
    loop {
        if writing && writers_done.load(Ordering::SeqCst) == WRITERS {
            writing = false;
            reading.got_while_writing = reading.got.len();
            give_up_at = Some(Instant::now() + CATCH_UP_WITHIN);
        }
        let rows = fetch(reading.last);
        let now = Instant::now();
        for &row in &rows {
            if row.0 <= reading.last {
                reading.out_of_order.push((reading.last, row.0));
            }
            reading.last = reading.last.max(row.0);
            reading.got.push((row, now));
        }
        if rows.is_empty() {
            if let Some(give_up_at) = give_up_at {
                let target = final_position.load(Ordering::SeqCst);
                if target >= 0 && reading.last >= target {
                    reading.caught_up = true;
                    break;
                }
                if Instant::now() >= give_up_at {
                    break;
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
    reading
}

/// Runs the writers on the primary and the readers concurrently; returns every commit and what
/// each reader saw.
fn run_load(db: &TestDb, readers: Vec<ReaderSpec<'_>>) -> (Vec<Committed>, Vec<Reading>) {
    let streams: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::new_v4()).collect();
    let start = Barrier::new(WRITERS + readers.len());
    let writers_done = AtomicUsize::new(0);
    let final_position = AtomicI64::new(-1);
    // Connect first, so nothing can fail between a thread's start and the barrier.
    let clients: Vec<Client> = (0..WRITERS).map(|_| db.connect()).collect();
    let mut primary = db.connect();

    thread::scope(|scope| {
        let writers: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(w, mut client)| {
                let (start, writers_done, streams) = (&start, &writers_done, &streams);
                scope.spawn(move || {
                    let _done = DoneOnDrop(writers_done);
                    write(&mut client, w, streams, start)
                })
            })
            .collect();
        let readers: Vec<_> = readers
            .into_iter()
            .map(|spec| {
                let (start, writers_done, final_position) =
                    (&start, &writers_done, &final_position);
                scope.spawn(move || read(spec, start, writers_done, final_position))
            })
            .collect();
        let mut committed = Vec::new();
        let mut writer_panicked = false;
        for writer in writers {
            match writer.join() {
                Ok(commits) => committed.extend(commits),
                Err(_) => writer_panicked = true,
            }
        }
        // Every writer transaction has ended, so this is the last position that will ever
        // commit in this run: the readers are done when they reach it.
        let last: i64 = primary
            .query_one(
                "SELECT coalesce(max(global_position), 0) FROM es.events",
                &[],
            )
            .expect("max(global_position)")
            .get(0);
        final_position.store(last, Ordering::SeqCst);
        let readings: Vec<Reading> = readers
            .into_iter()
            .map(|r| r.join().expect("reader thread panicked"))
            .collect();
        assert!(!writer_panicked, "a writer thread panicked");
        (committed, readings)
    })
}

/// `es.read_all(after, PAGE)` on `client`, as rows.
fn read_all_page(client: &mut Client, label: &str, after: i64) -> Vec<Row> {
    client
        .query(
            "SELECT global_position, stream_id, version FROM es.read_all($1, $2)",
            &[&after, &PAGE],
        )
        .unwrap_or_else(|e| panic!("es.read_all on the {label}: {}", describe(&e)))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// A reader of `es.read_all` on `client`.
fn read_all_reader(label: &'static str, mut client: Client) -> ReaderSpec<'static> {
    ReaderSpec {
        label,
        fetch: Box::new(move |after| read_all_page(&mut client, label, after)),
    }
}

/// Appends one event on the primary and waits until the primary's worker has written
/// `es.watermark` at or above it, within [`WATERMARK_WITHIN`]. The replicas' readers cap at that
/// row, so without it they can return nothing at all: this turns a missing watermark writer into
/// one clear failure instead of a reader that times out. Returns the commit, for the ledger.
fn first_event_and_watermark(primary: &mut Client) -> Committed {
    let stream = Uuid::new_v4();
    let version = append(primary, stream, None, &[r#"{"type":"Written"}"#.to_owned()])
        .unwrap_or_else(|e| panic!("the first append: {}", describe(&e)));
    let at = Instant::now();
    let position: i64 = primary
        .query_one(
            "SELECT global_position FROM es.events WHERE stream_id = $1",
            &[&stream],
        )
        .expect("the first event's position")
        .get(0);
    loop {
        let watermark: Option<i64> = primary
            .query_opt("SELECT position FROM es.watermark", &[])
            .unwrap_or_else(|e| panic!("es.watermark on the primary: {}", describe(&e)))
            .map(|r| r.get(0));
        if watermark.is_some_and(|w| w >= position) {
            break;
        }
        assert!(
            at.elapsed() < WATERMARK_WITHIN,
            "the primary did not write es.watermark up to its first event (position {position}) \
             within {WATERMARK_WITHIN:?} while a replica was connected (it holds {watermark:?}): \
             readers on a replica cap at that row, so they would get nothing"
        );
        thread::sleep(Duration::from_millis(10));
    }
    Committed {
        stream,
        first_version: version,
        last_version: version,
        at,
        timed: false,
    }
}

/// The primary's stored log, in position order.
fn stored_log(db: &TestDb) -> Vec<Row> {
    db.connect()
        .query(
            "SELECT global_position, stream_id, version FROM es.events ORDER BY 1",
            &[],
        )
        .expect("stored log")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// What a reading lacks or has too much of, against the stored log.
struct Verdict {
    missed: usize,
    duplicates: usize,
    phantoms: usize,
    first_missed: Vec<i64>,
}

fn judge(reading: &Reading, stored: &[Row]) -> Verdict {
    let stored: BTreeSet<i64> = stored.iter().map(|r| r.0).collect();
    let seen: BTreeSet<i64> = reading.got.iter().map(|(r, _)| r.0).collect();
    Verdict {
        missed: stored.difference(&seen).count(),
        duplicates: reading.got.len() - seen.len(),
        phantoms: seen.difference(&stored).count(),
        first_missed: stored.difference(&seen).take(10).copied().collect(),
    }
}

/// `(events, median, p99, max)` of the delivery lag of the events `reading` got: from the moment the
/// COMMIT of the event's transaction returned on the primary to the moment the page holding it
/// came back to the reader. None when no event could be matched.
fn lag(
    reading: &Reading,
    committed: &[Committed],
) -> Option<(usize, Duration, Duration, Duration)> {
    let mut commit_at: HashMap<(Uuid, i64), Instant> = HashMap::new();
    for c in committed.iter().filter(|c| c.timed) {
        for v in c.first_version..=c.last_version {
            commit_at.insert((c.stream, v), c.at);
        }
    }
    let mut lags: Vec<Duration> = reading
        .got
        .iter()
        .filter_map(|((_, stream, version), at)| {
            commit_at
                .get(&(*stream, *version))
                .map(|c| at.saturating_duration_since(*c))
        })
        .collect();
    if lags.is_empty() {
        return None;
    }
    lags.sort();
    let n = lags.len();
    Some((n, lags[n / 2], lags[(n * 99 / 100).min(n - 1)], lags[n - 1]))
}

/// Prints every reader's counts and lag (for the record: to stderr, and to
/// `target/<summary_file>` because a passing test's stderr is captured), then asserts that each
/// reader saw the whole log once, in order, and made progress while the writers ran. `notes` are
/// extra lines for the summary.
fn report_and_assert(
    summary_file: &str,
    notes: &[String],
    readings: &[Reading],
    committed: &[Committed],
    stored: &[Row],
) {
    let committed_events: i64 = committed
        .iter()
        .map(|c| c.last_version - c.first_version + 1)
        .sum();
    let mut summary = format!(
        "replicas: {} events committed by {WRITERS} writers in {RUN_FOR:?} (0-30 ms before each \
         COMMIT), {} stored on the primary; readers page by {PAGE}\n",
        committed_events,
        stored.len()
    );
    let verdicts: Vec<Verdict> = readings.iter().map(|r| judge(r, stored)).collect();
    for (reading, verdict) in readings.iter().zip(&verdicts) {
        let lag_text = match lag(reading, committed) {
            Some((n, median, p99, max)) => format!(
                "delivery lag (COMMIT returned on the primary -> returned to this reader, {n} \
                 events) median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                median.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            ),
            None => "no delivery lag measured".to_owned(),
        };
        summary.push_str(&format!(
            "replicas: {:<12} read {} ({} while writing), missed {}, duplicates {}, \
             out of order {}, not stored {}, caught up {}; {lag_text}\n",
            reading.label,
            reading.got.len(),
            reading.got_while_writing,
            verdict.missed,
            verdict.duplicates,
            reading.out_of_order.len(),
            verdict.phantoms,
            reading.caught_up,
        ));
    }
    for note in notes {
        summary.push_str(&format!("replicas: {note}\n"));
    }
    eprint!("{summary}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(summary_file);
    if let Err(e) = std::fs::write(&path, &summary) {
        eprintln!("warning: cannot write {}: {e}", path.display());
    }
    assert_eq!(
        stored.len() as i64,
        committed_events,
        "es.events must hold exactly the committed events"
    );
    for (reading, verdict) in readings.iter().zip(&verdicts) {
        let label = reading.label;
        assert!(
            reading.caught_up,
            "the {label} reader did not reach the last committed position {} within \
             {CATCH_UP_WITHIN:?} after the writers stopped (it stopped at {})",
            stored.last().map_or(0, |r| r.0),
            reading.last
        );
        assert_eq!(
            verdict.missed, 0,
            "the {label} reader never got {} committed events (first: {:?})",
            verdict.missed, verdict.first_missed
        );
        assert!(
            reading.out_of_order.is_empty(),
            "the {label} reader got positions not above its last one (last, got): {:?}",
            &reading.out_of_order[..reading.out_of_order.len().min(10)]
        );
        assert_eq!(verdict.duplicates, 0, "the {label} reader got duplicates");
        assert_eq!(
            verdict.phantoms, 0,
            "the {label} reader got events that are not stored"
        );
        assert!(
            reading.got_while_writing > 0,
            "the {label} reader got nothing while the writers were running: no progress"
        );
    }
}

/// The primary's `es.watermark_interval` setting, for the record (`unset` in a build without it).
fn watermark_interval(client: &mut Client) -> String {
    client
        .query_one(
            "SELECT coalesce(current_setting('es.watermark_interval', true), 'unset')",
            &[],
        )
        .map(|r| r.get(0))
        .unwrap_or_else(|e| describe(&e))
}

#[test]
fn readers_on_a_standby_and_a_logical_subscriber_miss_nothing() {
    let _exclusive = replica::exclusive();
    // Before the test database: turning on wal_level = logical restarts the primary.
    let _wal = LogicalWalLevel::ensure();
    let db = TestDb::new("replicas");
    let mut primary = db.connect();
    assert_preloaded(&mut primary);
    let tables = published_tables(&mut primary);

    // The standby is a copy of the whole primary cluster, test database included.
    let mut standby = Replica::standby();
    let mut subscriber = Replica::fresh_subscriber();
    let subscription = LogicalSubscription::create(&subscriber, db.name(), &tables);
    let readers = vec![
        read_all_reader("primary", db.connect()),
        read_all_reader("standby", standby.connect(db.name())),
        read_all_reader("subscriber", subscriber.connect(db.name())),
    ];
    let first = first_event_and_watermark(&mut primary);
    let (mut committed, readings) = run_load(&db, readers);
    assert!(!committed.is_empty(), "the writers committed nothing");
    committed.push(first);
    let stored = stored_log(&db);

    // Beyond the readers' view: the replicas hold exactly the primary's log (a missed event
    // above is then the reader's fault, not replication's).
    standby.wait_for_replay(&mut primary, &mut standby.connect(db.name()));
    subscription.wait_for_apply(&mut primary);
    let stored_positions: Vec<i64> = stored.iter().map(|r| r.0).collect();
    let mut replication_differs = Vec::new();
    for (label, mut client) in [
        ("standby", standby.connect(db.name())),
        ("subscriber", subscriber.connect(db.name())),
    ] {
        let positions: Vec<i64> = client
            .query("SELECT global_position FROM es.events ORDER BY 1", &[])
            .unwrap_or_else(|e| panic!("es.events on the {label}: {}", describe(&e)))
            .iter()
            .map(|r| r.get(0))
            .collect();
        if positions != stored_positions {
            replication_differs.push(format!(
                "the {label}'s es.events differs from the primary's ({} rows, the primary {})",
                positions.len(),
                stored_positions.len()
            ));
        }
    }

    let notes = vec![
        format!(
            "standby on port {} (pg_basebackup -R), subscriber on port {} receiving {}",
            standby.port(),
            subscriber.port(),
            subscription.tables().join(", ")
        ),
        format!(
            "es.watermark_interval on the primary: {}",
            watermark_interval(&mut primary)
        ),
    ];
    report_and_assert(
        "replicas-summary.txt",
        &notes,
        &readings,
        &committed,
        &stored,
    );
    assert!(
        replication_differs.is_empty(),
        "{}",
        replication_differs.join("; ")
    );

    drop(subscription);
    let stopped = [standby.stop(), subscriber.stop()];
    for result in stopped {
        result.unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn a_standby_refuses_writes_and_its_poll_is_gap_safe() {
    let _exclusive = replica::exclusive();
    let db = TestDb::new("replicas_poll");
    let mut primary = db.connect();
    assert_preloaded(&mut primary);
    primary
        .execute("SELECT es.create_subscription($1)", &[&POLL_SUBSCRIPTION])
        .unwrap_or_else(|e| panic!("es.create_subscription: {}", describe(&e)));
    let mut standby = Replica::standby();
    let mut reader = standby.connect(db.name());

    // Writes go to the primary: a standby refuses them with PostgreSQL's read-only error.
    let stream = Uuid::new_v4();
    let refused = reader.query_one(
        r#"SELECT es.append_events($1, NULL, ARRAY['{"type":"Written"}']::jsonb[])"#,
        &[&stream],
    );
    match refused {
        Ok(_) => panic!("es.append_events succeeded on a standby"),
        Err(e) => assert_eq!(
            sqlstate(&e),
            Some("25006"),
            "es.append_events on a standby: {}",
            describe(&e)
        ),
    }

    // The consumer polls on the standby and acks on the primary. Its checkpoint reaches the
    // standby later than the ack, so a poll may hand back events it already had: it keeps only
    // those above the last position it saw, as a consumer reading a replica must.
    let mut acker = db.connect();
    let redelivered = AtomicUsize::new(0);
    let poll_reader = ReaderSpec {
        label: "standby poll",
        fetch: Box::new(|after| {
            let rows: Vec<Row> = reader
                .query(
                    "SELECT global_position, stream_id, version FROM es.poll($1, 0, $2)",
                    &[&POLL_SUBSCRIPTION, &PAGE],
                )
                .unwrap_or_else(|e| panic!("es.poll on the standby: {}", describe(&e)))
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let fresh: Vec<Row> = rows.iter().copied().filter(|r| r.0 > after).collect();
            redelivered.fetch_add(rows.len() - fresh.len(), Ordering::Relaxed);
            if let Some(top) = fresh.iter().map(|r| r.0).max() {
                let checkpoint: i64 = acker
                    .query_one("SELECT es.ack($1, 0, $2)", &[&POLL_SUBSCRIPTION, &top])
                    .unwrap_or_else(|e| {
                        panic!(
                            "es.ack on the primary at {top}, a position the standby returned: {}",
                            describe(&e)
                        )
                    })
                    .get(0);
                assert_eq!(checkpoint, top, "es.ack must move the checkpoint to {top}");
            }
            fresh
        }),
    };
    let readers = vec![
        poll_reader,
        read_all_reader("standby", standby.connect(db.name())),
    ];
    let first = first_event_and_watermark(&mut primary);
    let (mut committed, readings) = run_load(&db, readers);
    assert!(!committed.is_empty(), "the writers committed nothing");
    committed.push(first);
    let stored = stored_log(&db);
    let notes = vec![
        format!(
            "the standby's es.poll handed back {} events the consumer already had (its ack on \
             the primary had not reached the standby yet)",
            redelivered.load(Ordering::Relaxed)
        ),
        format!(
            "es.watermark_interval on the primary: {}",
            watermark_interval(&mut primary)
        ),
    ];
    report_and_assert(
        "replicas-poll-summary.txt",
        &notes,
        &readings,
        &committed,
        &stored,
    );

    // Every read function works on the standby and agrees with the primary once replayed.
    standby.wait_for_replay(&mut primary, &mut reader);
    let some_stream = stored.last().expect("events stored").1;
    let query = "SELECT es.stream_version($1), \
                 (SELECT count(*) FROM es.load_events($1)), \
                 (SELECT max(version) FROM es.load_events($1))";
    let on = |client: &mut Client, label: &str| -> (i64, i64, Option<i64>) {
        let row = client
            .query_one(query, &[&some_stream])
            .unwrap_or_else(|e| panic!("read functions on the {label}: {}", describe(&e)));
        (row.get(0), row.get(1), row.get(2))
    };
    let on_primary = on(&mut primary, "primary");
    assert_eq!(
        on(&mut reader, "standby"),
        on_primary,
        "es.stream_version / es.load_events on the standby"
    );
    standby.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A logical subscriber whose publication carries the log, the streams and the snapshots but not
/// `es.watermark` (a publication written by hand, without the recipe of docs/replicas.md). Before the fix
/// every `es.read_all` there answered nothing, with no error, for ever: the readers capped at a
/// watermark that never arrives. Now a reader that cannot be gap-safe refuses (55000) naming the
/// missing table, its DETAIL names the subscription and the publication, and its HINT is the
/// DBA's fix, which the test then applies: afterwards the same reader gets every event.
#[test]
fn a_subscriber_without_the_watermark_refuses_to_read_and_says_how_to_fix_it() {
    let _exclusive = replica::exclusive();
    let _wal = LogicalWalLevel::ensure();
    let db = TestDb::new("replicas_nowm");
    let mut primary = db.connect();
    assert_preloaded(&mut primary);
    let tables: Vec<String> = ["es.events", "es.streams", "es.snapshots"]
        .map(String::from)
        .to_vec();
    let mut subscriber = Replica::fresh_subscriber();
    let subscription = LogicalSubscription::create(&subscriber, db.name(), &tables);
    let name = subscription.name().to_owned();

    let streams: Vec<Uuid> = (1..=3u128)
        .map(|i| Uuid::from_u128(0x0a7e_0000_0000_4000_8000_0000_0000_0000 + i))
        .collect();
    for stream in &streams {
        append(
            &mut primary,
            *stream,
            Some(0),
            &[r#"{"type":"A"}"#.to_owned(), r#"{"type":"B"}"#.to_owned()],
        )
        .unwrap_or_else(|e| panic!("append on the primary: {}", describe(&e)));
    }
    let stored = (streams.len() * 2) as i64;
    subscription.wait_for_apply(&mut primary);
    let mut reader = subscriber.connect(db.name());
    let replicated: i64 = reader
        .query_one("SELECT count(*) FROM es.events", &[])
        .expect("es.events on the subscriber")
        .get(0);
    assert_eq!(
        replicated, stored,
        "the subscriber holds the primary's events"
    );

    let expected_hint = format!(
        "On the publisher: ALTER PUBLICATION {name} ADD TABLE es.watermark; then here: \
         ALTER SUBSCRIPTION {name} REFRESH PUBLICATION."
    );
    for (function, sql) in [
        ("es.read_all", "SELECT count(*) FROM es.read_all(0, 100)"),
        (
            "es.create_subscription",
            "SELECT count(*) FROM es.create_subscription('on_the_subscriber')",
        ),
    ] {
        let err = match reader.query_one(sql, &[]) {
            Ok(row) => panic!(
                "{function} on a subscriber without es.watermark answered {} rows instead of an error",
                row.get::<_, i64>(0)
            ),
            Err(e) => e,
        };
        let db_err = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{function}: {}", describe(&err)));
        assert_eq!(
            (
                db_err.code().code(),
                db_err.message(),
                db_err.detail(),
                db_err.hint()
            ),
            (
                "55000",
                format!(
                    "{function} cannot be gap-safe here: es.events is replicated in by logical \
                     replication but es.watermark is not"
                )
                .as_str(),
                Some(
                    format!(
                        "subscription {name} receives es.events from publication {name} without \
                         es.watermark, the bound of the positions still in flight on the publisher"
                    )
                    .as_str()
                ),
                Some(expected_hint.as_str()),
            ),
            "{function} on a subscriber without es.watermark"
        );
    }

    // The HINT, as a DBA applies it: afterwards the reader gets the log (once the primary's
    // worker, which writes the watermark while a replica is connected, has reached its end).
    primary
        .batch_execute(&format!("ALTER PUBLICATION {name} ADD TABLE es.watermark"))
        .unwrap_or_else(|e| panic!("ALTER PUBLICATION: {}", describe(&e)));
    reader
        .batch_execute(&format!("ALTER SUBSCRIPTION {name} REFRESH PUBLICATION"))
        .unwrap_or_else(|e| panic!("ALTER SUBSCRIPTION: {}", describe(&e)));
    let deadline = Instant::now() + CATCH_UP_WITHIN;
    loop {
        let read: Result<i64, _> = reader
            .query_one("SELECT count(*) FROM es.read_all(0, 100)", &[])
            .map(|r| r.get(0));
        match &read {
            Ok(n) if *n == stored => break,
            Ok(_) => {}
            // until the refresh is visible to this backend's catalog cache, the refusal stands
            Err(e) if sqlstate(e) == Some("55000") => {}
            Err(e) => panic!("es.read_all after the fix: {}", describe(e)),
        }
        assert!(
            Instant::now() < deadline,
            "after the HINT's fix the subscriber's es.read_all did not return the {stored} \
             events within {CATCH_UP_WITHIN:?}: {read:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }

    drop(subscription);
    subscriber.stop().unwrap_or_else(|e| panic!("{e}"));
}
