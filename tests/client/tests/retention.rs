//! Retention and archiving against a real server (docs/reference.md §14):
//!
//! - the database worker removes expired events while appenders, a subscription consumer and a
//!   projection run: no append fails or goes wrong, nothing is half-deleted (each stream keeps a
//!   contiguous run of its newest versions), no consumer or projection skips an event that is
//!   still there, no position is handed out twice, and the audit adds up;
//! - a paused policy removes nothing, and resumes;
//! - `es.archive` in chunks into an archive on a tablespace of its own, while appenders and a
//!   consumer run: every read answers as before, and the consumer sees every event once;
//! - a kill -9 in the middle of a retention batch (the worker) or of `es.archive` (its backend)
//!   leaves it all or nothing after crash recovery.
//!
//! The tests change cluster settings (`es.retention_naptime`, `es.retention_batch_size`) and
//! restart the server (the kills); tests/client/run.sh runs the tests one at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{
    Client, TestDb, Uuid, admin, connect_after_kill, connect_with_retry, describe, exec, kill_9,
    verify_store,
};
use rand::Rng;

/// How long the appenders run.
const RUN: Duration = Duration::from_secs(8);
/// Bound of every wait for the worker (generous: 2 cores, debug build).
const PATIENCE: Duration = Duration::from_secs(120);

/// Sets cluster settings for the test and resets them when dropped (also on a failed test).
struct Settings(Vec<&'static str>);

impl Settings {
    fn set(pairs: &[(&'static str, &str)]) -> Settings {
        let mut admin = admin();
        for (name, value) in pairs {
            exec(&mut admin, &format!("ALTER SYSTEM SET {name} = '{value}'"));
        }
        exec(&mut admin, "SELECT pg_reload_conf()");
        Settings(pairs.iter().map(|(n, _)| *n).collect())
    }
}

impl Drop for Settings {
    fn drop(&mut self) {
        if let Ok(mut admin) = connect_with_retry("postgres", Duration::from_secs(30)) {
            for name in &self.0 {
                let _ = admin.batch_execute(&format!("ALTER SYSTEM RESET {name}"));
            }
            let _ = admin.batch_execute("SELECT pg_reload_conf()");
        }
    }
}

fn i64_of(client: &mut Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

/// Waits until no active policy has an expired event left.
fn until_retention_done(client: &mut Client) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = i64_of(
            client,
            "SELECT coalesce(sum(events_expired), 0)::bigint FROM es.retention WHERE NOT paused",
        );
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the worker left {left} expired events"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Every (position, stream, version) a reader saw: a position always names the same event.
#[derive(Default)]
struct Seen {
    by_position: HashMap<i64, (Uuid, i64)>,
}

impl Seen {
    fn add(&mut self, who: &str, position: i64, stream: Uuid, version: i64) {
        if let Some(old) = self.by_position.insert(position, (stream, version)) {
            assert_eq!(
                old,
                (stream, version),
                "{who}: position {position} named two events"
            );
        }
    }
}

/// The live events: (position, stream, version).
fn live_events(client: &mut Client) -> Vec<(i64, Uuid, i64)> {
    client
        .query(
            "SELECT global_position, stream_id, version FROM es.events ORDER BY global_position",
            &[],
        )
        .expect("live events")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[test]
fn worker_removes_expired_events_while_appenders_consumers_and_projections_run() {
    let _settings = Settings::set(&[
        ("es.retention_naptime", "50ms"),
        ("es.retention_batch_size", "100"),
    ]);
    let db = TestDb::new("retention_race");
    let mut setup = db.connect();
    let streams: Vec<Uuid> = (0..40u128).map(|i| Uuid::from_u128(0xa000 + i)).collect();
    for s in &streams {
        setup
            .execute(
                "SELECT es.append_events($1, 0, ARRAY['{\"type\":\"Born\"}']::jsonb[])",
                &[s],
            )
            .expect("first event");
    }
    let accounts: Vec<Uuid> = (0..4)
        .map(|i| {
            setup
                .query_one(
                    "SELECT es.open_account($1, 1000)",
                    &[&format!("holder {i}")],
                )
                .expect("open_account")
                .get(0)
        })
        .collect();
    exec(
        &mut setup,
        "CREATE TABLE public.projected (global_position bigint PRIMARY KEY, stream_id uuid NOT NULL, \
           version bigint NOT NULL);
         CREATE FUNCTION public.project(e es.events) RETURNS void LANGUAGE sql AS $$
           INSERT INTO public.projected VALUES (e.global_position, e.stream_id, e.version) $$;
         SELECT es.create_projection('projected', 'public.project(es.events)', batch => 50);
         SELECT es.create_subscription('watch', 0);
         SELECT es.set_retention('', max_count => 5);
         SELECT es.set_retention('account', max_count => 1);",
    );

    let done = AtomicBool::new(false);
    let deadline = Instant::now() + RUN;
    let (appended, deposits, consumed) = thread::scope(|scope| {
        let appenders: Vec<_> = (0..3)
            .map(|_| {
                let mut client = db.connect();
                let streams = &streams;
                scope.spawn(move || {
                    let mut rng = rand::rng();
                    let mut got: Vec<(Uuid, i64)> = Vec::new();
                    while Instant::now() < deadline {
                        let s = streams[rng.random_range(0..streams.len())];
                        let v: i64 = client
                            .query_one(
                                "SELECT es.append_events($1, NULL, ARRAY['{\"type\":\"Tick\"}']::jsonb[])",
                                &[&s],
                            )
                            .unwrap_or_else(|e| panic!("append to {s}: {}", describe(&e)))
                            .get(0);
                        got.push((s, v));
                    }
                    got
                })
            })
            .collect();
        let depositor = {
            let mut client = db.connect();
            exec(&mut client, "SET es.snapshot_interval = 10");
            let accounts = &accounts;
            scope.spawn(move || {
                let mut total: HashMap<Uuid, i64> = HashMap::new();
                let mut n = 0i64;
                while Instant::now() < deadline {
                    let a = accounts[(n % accounts.len() as i64) as usize];
                    n += 1;
                    client
                        .query_one("SELECT es.deposit($1, $2)", &[&a, &(n % 7 + 1)])
                        .unwrap_or_else(|e| panic!("deposit to {a}: {}", describe(&e)));
                    *total.entry(a).or_default() += n % 7 + 1;
                }
                total
            })
        };
        let consumer = {
            let mut client = db.connect();
            let done = &done;
            scope.spawn(move || {
                let mut seen: Vec<(i64, Uuid, i64)> = Vec::new();
                let mut idle_after_done = 0;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let mut tx = client.transaction().expect("begin");
                    let rows = tx
                        .query(
                            "SELECT global_position, stream_id, version FROM es.poll('watch', 0, 500)",
                            &[],
                        )
                        .unwrap_or_else(|e| panic!("poll: {}", describe(&e)));
                    if let Some(last) = rows.last() {
                        let position: i64 = last.get(0);
                        tx.execute("SELECT es.ack('watch', 0, $1)", &[&position])
                            .unwrap_or_else(|e| panic!("ack: {}", describe(&e)));
                    }
                    tx.commit().expect("commit");
                    seen.extend(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))));
                    if rows.is_empty() {
                        if finished {
                            idle_after_done += 1;
                            if idle_after_done >= 3 {
                                return seen;
                            }
                        }
                        thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        };
        let appended: Vec<(Uuid, i64)> = appenders
            .into_iter()
            .flat_map(|h| h.join().expect("appender"))
            .collect();
        let deposits = depositor.join().expect("depositor");
        done.store(true, Ordering::Release);
        let consumed = consumer.join().expect("consumer");
        (appended, deposits, consumed)
    });

    let mut client = db.connect();
    until_retention_done(&mut client);
    let end = i64_of(&mut client, "SELECT max(global_position) FROM es.events");
    let caught_up: bool = client
        .query_one(
            "SELECT es.wait_for_projection('projected', $1, 120000)",
            &[&end],
        )
        .expect("wait_for_projection")
        .get(0);
    assert!(caught_up, "the projection did not reach position {end}");

    // every append got the next version of its stream: 2..N, none twice
    let mut versions: BTreeMap<Uuid, Vec<i64>> = BTreeMap::new();
    for (s, v) in &appended {
        versions.entry(*s).or_default().push(*v);
    }
    for (s, vs) in &mut versions {
        vs.sort_unstable();
        let expected: Vec<i64> = (2..=vs.len() as i64 + 1).collect();
        assert_eq!(*vs, expected, "versions appended to {s}");
    }

    // nothing half-deleted: each generic stream keeps exactly its newest 5 (or all it has), each
    // account a contiguous run up to its head that starts right after a snapshot
    let live = live_events(&mut client);
    let mut kept: BTreeMap<Uuid, Vec<i64>> = BTreeMap::new();
    for (_, s, v) in &live {
        kept.entry(*s).or_default().push(*v);
    }
    for s in &streams {
        let head = versions.get(s).map_or(1, |v| v.len() as i64 + 1);
        let expected: Vec<i64> = ((head - 4).max(1)..=head).collect();
        assert_eq!(
            kept.get(s),
            Some(&expected),
            "the events kept of stream {s}"
        );
    }
    for a in &accounts {
        let vs = kept.get(a).cloned().unwrap_or_default();
        let head = i64_of(&mut client, &format!("SELECT es.stream_version('{a}')"));
        assert_eq!(vs.last().copied(), Some(head), "account {a} keeps its head");
        assert!(
            vs.windows(2).all(|w| w[1] == w[0] + 1),
            "account {a} keeps a contiguous run: {vs:?}"
        );
        let covered = i64_of(
            &mut client,
            &format!("SELECT coalesce(max(version), 0) FROM es.snapshots WHERE stream_id = '{a}'"),
        );
        assert!(
            vs[0] <= covered + 1,
            "account {a}: events above its newest snapshot ({covered}) were removed: {vs:?}"
        );
        // the state the store computes (snapshot + the kept tail) is the true balance
        let balance = i64_of(
            &mut client,
            &format!("SELECT (es.account_state('{a}') ->> 'balance_cents')::bigint"),
        );
        assert_eq!(
            balance,
            1000 + deposits.get(a).copied().unwrap_or(0),
            "balance of {a}"
        );
    }

    // positions: never one for two events, in the consumer's order strictly increasing; no
    // live event skipped by the consumer or the projection
    let mut seen = Seen::default();
    for w in consumed.windows(2) {
        assert!(w[0].0 < w[1].0, "the consumer went back: {w:?}");
    }
    for (p, s, v) in &consumed {
        seen.add("consumer", *p, *s, *v);
    }
    let projected: Vec<(i64, Uuid, i64)> = client
        .query(
            "SELECT global_position, stream_id, version FROM public.projected",
            &[],
        )
        .expect("projected")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for (p, s, v) in &projected {
        seen.add("projection", *p, *s, *v);
    }
    for (p, s, v) in &live {
        seen.add("es.events", *p, *s, *v);
    }
    let consumed_at: HashSet<i64> = consumed.iter().map(|e| e.0).collect();
    let projected_at: HashSet<i64> = projected.iter().map(|e| e.0).collect();
    let skipped: Vec<_> = live
        .iter()
        .filter(|e| !consumed_at.contains(&e.0))
        .collect();
    assert!(
        skipped.is_empty(),
        "the consumer skipped live events: {skipped:?}"
    );
    let skipped: Vec<_> = live
        .iter()
        .filter(|e| !projected_at.contains(&e.0))
        .collect();
    assert!(
        skipped.is_empty(),
        "the projection skipped live events: {skipped:?}"
    );

    // the audit adds up: every event appended is live or was removed by an audited batch
    let removed_audited = i64_of(
        &mut client,
        "SELECT coalesce(sum((detail ->> 'events_removed')::bigint), 0)::bigint FROM es.data_audit \
          WHERE action = 'retention'",
    );
    let removed_view = i64_of(
        &mut client,
        "SELECT sum(events_removed)::bigint FROM es.retention",
    );
    assert_eq!(removed_audited, removed_view, "audit and progress disagree");
    let heads = i64_of(&mut client, "SELECT sum(version)::bigint FROM es.streams");
    assert_eq!(
        heads,
        live.len() as i64 + removed_audited,
        "every event ever appended is live or was removed by an audited batch"
    );
    assert!(removed_audited > 0, "the worker removed nothing");
    exec(
        &mut client,
        "SELECT es.drop_projection('projected'); SELECT es.set_retention(''); \
         SELECT es.set_retention('account');",
    );
    verify_store(&mut client);
}

#[test]
fn a_paused_policy_removes_nothing_until_resumed() {
    let _settings = Settings::set(&[("es.retention_naptime", "50ms")]);
    let db = TestDb::new("retention_pause");
    let mut client = db.connect();
    exec(
        &mut client,
        "SELECT es.append_events('b0000000-0000-0000-0000-000000000001', 0,
                ARRAY['{\"type\":\"A\"}', '{\"type\":\"B\"}', '{\"type\":\"C\"}']::jsonb[]);
         BEGIN;
         SELECT es.set_retention('', max_count => 1);
         SELECT es.pause_retention('');
         COMMIT;",
    );
    // many naptimes pass: a paused policy's events stay
    thread::sleep(Duration::from_secs(2));
    assert_eq!(i64_of(&mut client, "SELECT count(*) FROM es.events"), 3);
    assert_eq!(
        i64_of(&mut client, "SELECT events_expired FROM es.retention"),
        2
    );
    exec(&mut client, "SELECT es.resume_retention()");
    until_retention_done(&mut client);
    assert_eq!(i64_of(&mut client, "SELECT count(*) FROM es.events"), 1);
    exec(&mut client, "SELECT es.set_retention('')");
}

/// A tablespace in a fresh directory owned by the server's user; dropped with its directory.
struct Tablespace {
    name: String,
    dir: String,
}

impl Tablespace {
    fn new() -> Tablespace {
        let name = format!("lifearchive_ts_{}", std::process::id());
        let dir = format!("/tmp/{name}");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("tablespace directory");
        let owner = Command::new("chown")
            .args(["postgres:postgres", &dir])
            .status()
            .expect("chown");
        assert!(owner.success(), "chown postgres {dir}");
        exec(
            &mut admin(),
            &format!("CREATE TABLESPACE {name} LOCATION '{dir}'"),
        );
        Tablespace { name, dir }
    }
}

impl Drop for Tablespace {
    fn drop(&mut self) {
        if let Ok(mut admin) = connect_with_retry("postgres", Duration::from_secs(30)) {
            let _ = admin.batch_execute(&format!("DROP TABLESPACE IF EXISTS {}", self.name));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the reads answer about the accounts and the start of the log.
fn answers(client: &mut Client, accounts: &[Uuid], upto: i64) -> Vec<String> {
    let mut out = Vec::new();
    for a in accounts {
        for sql in [
            "SELECT es.account_state($1)::text",
            "SELECT es.account_state($1, at_version => 3)::text",
            "SELECT json_agg(h ORDER BY h.version)::text FROM es.account_history($1) h",
            "SELECT json_agg(e ORDER BY e.version)::text FROM es.load_events($1) e",
            "SELECT json_agg(e ORDER BY e.version)::text FROM es.load_events($1, 5, 3) e",
            "SELECT es.state($1)::text",
        ] {
            let row = client
                .query_one(sql, &[a])
                .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
            out.push(row.get::<_, Option<String>>(0).unwrap_or_default());
        }
    }
    let log: Option<String> = client
        .query_one(
            "SELECT json_agg(e ORDER BY e.global_position)::text FROM es.read_all(0, 100000) e \
              WHERE e.global_position <= $1",
            &[&upto],
        )
        .expect("read_all")
        .get(0);
    out.push(log.unwrap_or_default());
    out
}

#[test]
fn archive_in_chunks_onto_a_tablespace_reads_through_while_appenders_and_a_consumer_run() {
    let space = Tablespace::new();
    {
        let db = TestDb::new("archive_race");
        let mut client = db.connect();
        exec(
            &mut client,
            &format!(
                "ALTER TABLE es.events_archive SET TABLESPACE {0};
                 ALTER INDEX es.events_archive_pkey SET TABLESPACE {0};
                 ALTER INDEX es.events_archive_global_position_key SET TABLESPACE {0};
                 ALTER INDEX es.events_archive_event_id_idx SET TABLESPACE {0};
                 SET es.snapshot_interval = 4;",
                space.name
            ),
        );
        let placed = i64_of(
            &mut client,
            &format!(
                "SELECT count(*) FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace \
                  WHERE t.spcname = '{}' AND c.relnamespace = 'es'::regnamespace",
                space.name
            ),
        );
        assert_eq!(
            placed, 4,
            "the archive and its three indexes on the tablespace"
        );
        let accounts: Vec<Uuid> = (0..5)
            .map(|i| {
                let a: Uuid = client
                    .query_one("SELECT es.open_account($1, 100)", &[&format!("old {i}")])
                    .expect("open")
                    .get(0);
                for n in 1..=12i64 {
                    client
                        .query_one("SELECT es.deposit($1, $2)", &[&a, &n])
                        .expect("deposit");
                }
                a
            })
            .collect();
        exec(&mut client, "SELECT es.create_subscription('follow', 0)");
        let upto = i64_of(&mut client, "SELECT max(global_position) FROM es.events");
        let before = answers(&mut client, &accounts, upto);

        let done = AtomicBool::new(false);
        let deadline = Instant::now() + Duration::from_secs(4);
        let (appended, consumed, chunks) = thread::scope(|scope| {
            let appenders: Vec<_> = (0..2)
                .map(|w| {
                    let mut c = db.connect();
                    scope.spawn(move || {
                        let mut n = 0i64;
                        while Instant::now() < deadline {
                            let s = Uuid::from_u128(0xc000 + (w * 1000 + n % 20) as u128);
                            c.query_one(
                                "SELECT es.append_events($1, NULL, ARRAY['{\"type\":\"New\"}']::jsonb[])",
                                &[&s],
                            )
                            .unwrap_or_else(|e| panic!("append: {}", describe(&e)));
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let archiver = {
                let mut c = db.connect();
                scope.spawn(move || {
                    let mut chunks = 0;
                    // archive in chunks of 25 while the appends go on, until nothing is older
                    // than the end of the appends
                    loop {
                        let moved: i64 = c
                            .query_one("SELECT es.archive(clock_timestamp(), 25)", &[])
                            .unwrap_or_else(|e| panic!("archive: {}", describe(&e)))
                            .get(0);
                        chunks += 1;
                        if moved == 0 && Instant::now() > deadline {
                            return chunks;
                        }
                    }
                })
            };
            let consumer = {
                let mut c = db.connect();
                let done = &done;
                scope.spawn(move || {
                    let mut seen: Vec<i64> = Vec::new();
                    let mut idle = 0;
                    loop {
                        let finished = done.load(Ordering::Acquire);
                        let rows = c
                            .query("SELECT global_position FROM es.poll('follow', 0, 100)", &[])
                            .unwrap_or_else(|e| panic!("poll: {}", describe(&e)));
                        if let Some(last) = rows.last() {
                            let p: i64 = last.get(0);
                            c.execute("SELECT es.ack('follow', 0, $1)", &[&p])
                                .expect("ack");
                        }
                        seen.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
                        if rows.is_empty() {
                            if finished {
                                idle += 1;
                                if idle >= 3 {
                                    return seen;
                                }
                            }
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                })
            };
            let appended: i64 = appenders
                .into_iter()
                .map(|h| h.join().expect("appender"))
                .sum();
            let chunks = archiver.join().expect("archiver");
            done.store(true, Ordering::Release);
            (appended, consumer.join().expect("consumer"), chunks)
        });
        assert!(chunks > 1, "archived in one chunk only");
        let live = i64_of(&mut client, "SELECT count(*) FROM es.events");
        let archived = i64_of(&mut client, "SELECT count(*) FROM es.events_archive");
        let total = accounts.len() as i64 * 13 + appended;
        assert_eq!(
            live + archived,
            total,
            "every event is in exactly one table"
        );
        assert_eq!(
            i64_of(
                &mut client,
                "SELECT count(*) FROM es.events e JOIN es.events_archive a USING (global_position)"
            ),
            0,
            "no event in both tables"
        );
        assert_eq!(
            i64_of(
                &mut client,
                "SELECT coalesce(sum((detail ->> 'events_moved')::bigint), 0)::bigint \
                   FROM es.data_audit WHERE action = 'archive'"
            ),
            archived,
            "the audit counts what moved"
        );
        assert!(
            archived >= accounts.len() as i64 * 13,
            "the old events moved"
        );
        // the consumer saw every event once, in order
        assert_eq!(consumed.len() as i64, total, "the consumer saw every event");
        assert!(
            consumed.windows(2).all(|w| w[0] < w[1]),
            "in position order"
        );
        // every read answers as before
        assert_eq!(answers(&mut client, &accounts, upto), before);
        // commands on archived accounts start from the same state
        for a in &accounts {
            client
                .query_one("SELECT es.withdraw($1, 1)", &[a])
                .unwrap_or_else(|e| panic!("withdraw: {}", describe(&e)));
            let balance = i64_of(
                &mut client,
                &format!("SELECT (es.account_state('{a}') ->> 'balance_cents')::bigint"),
            );
            assert_eq!(balance, 100 + 78 - 1);
        }
        verify_store(&mut client);
        exec(&mut client, "SELECT es.drop_subscription('follow')");
        drop(client);
        drop(db);
    }
    drop(space);
}

/// A trigger that holds a statement on `table` (an ALWAYS trigger: it fires inside the store's
/// removal too) until `public.hold` says go: the test kills the backend while it waits there,
/// in the middle of the batch.
fn install_hold(client: &mut Client, table: &str, event: &str) {
    exec(
        client,
        &format!(
            "CREATE TABLE IF NOT EXISTS public.hold (go boolean NOT NULL);
             INSERT INTO public.hold SELECT false WHERE NOT EXISTS (SELECT 1 FROM public.hold);
             CREATE OR REPLACE FUNCTION public.wait_for_go() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               LOOP
                 EXIT WHEN (SELECT go FROM public.hold);
                 PERFORM pg_catalog.pg_sleep(0.02);
               END LOOP;
               RETURN NULL;
             END $$;
             CREATE TRIGGER hold_here AFTER {event} ON {table}
               FOR EACH STATEMENT EXECUTE FUNCTION public.wait_for_go();
             ALTER TABLE {table} ENABLE ALWAYS TRIGGER hold_here;"
        ),
    );
}

/// The pid of a process of `db` that waits in the hold: a backend whose query matches `like`,
/// or the database's worker (`like` None; a worker reports no query text).
fn held_backend(monitor: &mut Client, db: &str, like: Option<&str>) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let row = monitor
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event = 'PgSleep' \
                   AND CASE WHEN $2::text IS NULL THEN backend_type = 'event_store worker' \
                            ELSE query LIKE $2 END LIMIT 1",
                &[&db, &like],
            )
            .expect("pg_stat_activity");
        if let Some(r) = row {
            return r.get(0);
        }
        assert!(
            Instant::now() < deadline,
            "nothing waits in the hold ({like:?})"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Lets whatever waits in the hold go when dropped (also when the test fails: a database worker
/// held there would keep the server from shutting down).
struct Release(String);

impl Drop for Release {
    fn drop(&mut self) {
        if let Ok(mut c) = connect_with_retry(&self.0, Duration::from_secs(30)) {
            let _ = c.batch_execute("UPDATE public.hold SET go = true");
        }
    }
}

#[test]
fn a_kill_in_the_middle_of_a_retention_batch_or_an_archive_leaves_all_or_nothing() {
    let db = TestDb::new("retention_crash");
    let _release = Release(db.name().to_owned());
    let mut client = db.connect();
    exec(
        &mut client,
        "SELECT es.append_events(('d0000000-0000-0000-0000-00000000000' || n)::uuid, 0,
                ARRAY['{\"type\":\"A\"}', '{\"type\":\"B\"}', '{\"type\":\"C\"}', '{\"type\":\"D\"}']::jsonb[])
           FROM generate_series(1, 9) n",
    );
    install_hold(&mut client, "es.events", "DELETE");
    exec(&mut client, "SELECT es.set_retention('', max_count => 1)");
    let mut monitor = admin();
    let worker = held_backend(&mut monitor, db.name(), None);
    kill_9(worker);
    // crash recovery: the batch was all or nothing, and here it is nothing
    let mut client = connect_after_kill(db.name(), worker, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("reconnect: {}", describe(&e)));
    thread::sleep(Duration::from_millis(200));
    assert_eq!(i64_of(&mut client, "SELECT count(*) FROM es.events"), 36);
    assert_eq!(
        i64_of(
            &mut client,
            "SELECT count(*) FROM es.data_audit WHERE action = 'retention'"
        ),
        0
    );
    assert_eq!(
        i64_of(&mut client, "SELECT events_removed FROM es.retention"),
        0
    );
    // let the (restarted) worker go: all of it
    exec(&mut client, "UPDATE public.hold SET go = true");
    until_retention_done(&mut client);
    assert_eq!(i64_of(&mut client, "SELECT count(*) FROM es.events"), 9);
    assert_eq!(
        i64_of(
            &mut client,
            "SELECT sum((detail ->> 'events_removed')::bigint)::bigint FROM es.data_audit \
              WHERE action = 'retention'"
        ),
        27
    );
    exec(
        &mut client,
        "SELECT es.set_retention(''); DROP TRIGGER hold_here ON es.events;
         UPDATE public.hold SET go = false;",
    );

    // es.archive killed after it moved the rows, before it committed
    install_hold(&mut client, "es.events_archive", "INSERT");
    let name = db.name().to_owned();
    let archiver = thread::spawn(move || {
        let mut c = connect_with_retry(&name, Duration::from_secs(30)).expect("connect");
        c.query_one("SELECT es.archive(clock_timestamp())", &[])
            .err()
            .map(|e| describe(&e))
    });
    let mut monitor = admin();
    let backend = held_backend(&mut monitor, db.name(), Some("%es.archive%"));
    kill_9(backend);
    let failed = archiver.join().expect("archiver thread");
    assert!(failed.is_some(), "the killed es.archive reported success");
    let mut client = connect_after_kill(db.name(), backend, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("reconnect: {}", describe(&e)));
    assert_eq!(i64_of(&mut client, "SELECT count(*) FROM es.events"), 9);
    assert_eq!(
        i64_of(&mut client, "SELECT count(*) FROM es.events_archive"),
        0
    );
    assert_eq!(
        i64_of(
            &mut client,
            "SELECT count(*) FROM es.data_audit WHERE action = 'archive'"
        ),
        0
    );
    exec(&mut client, "UPDATE public.hold SET go = true");
    assert_eq!(
        i64_of(&mut client, "SELECT es.archive(clock_timestamp())"),
        9
    );
    assert_eq!(i64_of(&mut client, "SELECT count(*) FROM es.events"), 0);
    assert_eq!(
        i64_of(&mut client, "SELECT count(*) FROM es.read_all(0, 1000)"),
        9
    );
    exec(&mut client, "DROP TRIGGER hold_here ON es.events_archive");
    verify_store(&mut client);
}
