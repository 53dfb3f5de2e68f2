//! The store's database workers step out of a DBA's way and run where there is work (issue 18,
//! items 4 and 5): each reproduction below failed before the fix.
//!
//! - `database_commands_work_as_without_the_extension`: in a database whose projection keeps a
//!   worker connected, `ALTER DATABASE … RENAME TO`, `ALTER DATABASE … SET TABLESPACE`, `CREATE
//!   DATABASE … TEMPLATE` and a plain `DROP DATABASE` all succeed (they used to fail with "being
//!   accessed by other users"), and after each the projection runs again where the database
//!   still exists, and in the copy.
//! - `restored_projections_run_without_a_restart`: a database with a projection, dumped with
//!   `pg_dump -Fc` and restored into a new database, gets its worker (the read model catches up
//!   and follows new appends) without a server restart.
//! - `no_worker_stays_where_there_is_no_work`: databases with the extension but neither
//!   projections nor replicas keep no worker.
//! - `drop_extension_while_the_worker_runs_a_batch`: `DROP EXTENSION event_store` while the
//!   worker is inside a batch of the account projections succeeds every time (it was cancelled
//!   as a deadlock now and then).
//! - `es_max_workers_bounds_the_workers_and_every_database_progresses`: with `es.max_workers =
//!   1` and two databases with projections, one of them shows `waiting for a worker slot` with
//!   the reason in `es.projections`, never more than one worker runs, and both read models still
//!   catch up (the running worker yields its slot in turn).
//! - `sigterm_ends_a_handler_in_a_long_statement`: `pg_terminate_backend` of the worker while
//!   a projection's handler sleeps in `pg_sleep(600)` ends the worker within seconds (it used to
//!   see SIGTERM only between rounds, so a fast shutdown waited for the handler); the batch
//!   rolls back, and a new worker handles the event once the handler is quick again.
//!
//! Needs `shared_preload_libraries = 'event_store'` (ES_PRELOAD=1). The tests change a server
//! setting (`es.max_workers`, reset at the end, also on failure): run.sh runs them one at a time.

use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{
    Client, TestDb, Uuid, admin, append, assert_preloaded, connect_with_retry, describe,
    dump_and_restore, exec,
};

/// `timeout_ms` of every `es.wait_for_projection` that must succeed.
const WAIT_MS: i32 = 60_000;
/// Bound of the loops that wait for the launcher and the workers.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

fn connect(name: &str) -> Client {
    connect_with_retry(name, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("cannot connect to {name}: {}", describe(&e)))
}

/// A projection `seen` whose handler writes one row per event into `seen_events`.
fn add_projection(client: &mut Client) {
    exec(
        client,
        "CREATE TABLE seen_events (global_position bigint PRIMARY KEY, stream_id uuid NOT NULL);
         CREATE FUNCTION record_seen(e es.events) RETURNS void LANGUAGE sql AS
           $$ INSERT INTO seen_events VALUES (e.global_position, e.stream_id) $$;
         SELECT es.create_projection('seen', 'record_seen(es.events)'::regprocedure);",
    );
}

/// Appends one event to a fresh stream and waits until the projection `seen` has handled it.
fn append_and_wait(client: &mut Client, label: &str) {
    let position = append_noted(client, Uuid::new_v4(), label);
    wait_until_seen(client, position, label);
}

/// Appends one `Noted` event to `stream` (a new one) and returns its global position.
fn append_noted(client: &mut Client, stream: Uuid, label: &str) -> i64 {
    append(client, stream, None, &[r#"{"type":"Noted"}"#.to_owned()])
        .unwrap_or_else(|e| panic!("{label}: append: {}", describe(&e)));
    client
        .query_one(
            "SELECT global_position FROM es.events WHERE stream_id = $1",
            &[&stream],
        )
        .expect("position")
        .get(0)
}

/// Waits until the projection `seen` has handled `position`, and checks it did so once.
fn wait_until_seen(client: &mut Client, position: i64, label: &str) {
    let handled: bool = client
        .query_one(
            "SELECT es.wait_for_projection('seen', $1, $2)",
            &[&position, &WAIT_MS],
        )
        .unwrap_or_else(|e| panic!("{label}: wait_for_projection: {}", describe(&e)))
        .get(0);
    assert!(
        handled,
        "{label}: the projection did not handle position {position} within {WAIT_MS} ms"
    );
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM seen_events WHERE global_position = $1",
            &[&position],
        )
        .expect("seen_events")
        .get(0);
    assert_eq!(rows, 1, "{label}: the read model must hold the event once");
}

/// The pid of the worker connected to database `name`, if one is.
fn worker_pid(admin: &mut Client, name: &str) -> Option<i32> {
    admin
        .query_opt(
            "SELECT pid FROM pg_stat_activity
              WHERE backend_type = 'event_store worker' AND datname = $1",
            &[&name],
        )
        .expect("pg_stat_activity")
        .map(|r| r.get(0))
}

/// Waits until `database`'s worker is connected.
fn wait_for_worker(admin: &mut Client, name: &str) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(pid) = worker_pid(admin, name) {
            return pid;
        }
        assert!(
            start.elapsed() < SETTLE_WITHIN,
            "no worker connected to {name} within {SETTLE_WITHIN:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Renames a database back when the test ends (TestDb drops it by its first name).
struct RenamedBack {
    from: String,
    to: String,
}

impl Drop for RenamedBack {
    fn drop(&mut self) {
        let _ = admin().batch_execute(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            self.from, self.to
        ));
    }
}

/// Drops a database (with FORCE) when the test ends.
struct DropLater(String);

impl Drop for DropLater {
    fn drop(&mut self) {
        let _ = admin().batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
    }
}

/// Puts `es.max_workers` back to its default when the test ends, also after a failure.
struct MaxWorkers;

impl MaxWorkers {
    fn set(n: i32) -> MaxWorkers {
        let mut admin = admin();
        exec(
            &mut admin,
            &format!("ALTER SYSTEM SET es.max_workers = {n}"),
        );
        exec(&mut admin, "SELECT pg_reload_conf()");
        MaxWorkers
    }
}

impl Drop for MaxWorkers {
    fn drop(&mut self) {
        let mut admin = admin();
        let _ = admin.batch_execute("ALTER SYSTEM RESET es.max_workers");
        let _ = admin.batch_execute("SELECT pg_reload_conf()");
    }
}

#[test]
fn database_commands_work_as_without_the_extension() {
    let db = TestDb::new("dbcmd");
    let mut client = db.connect();
    assert_preloaded(&mut client);
    add_projection(&mut client);
    append_and_wait(&mut client, "before");
    drop(client);
    let mut admin = admin();
    wait_for_worker(&mut admin, db.name());

    // RENAME: refused while the worker was connected
    let renamed = format!("{}_r", db.name());
    exec(
        &mut admin,
        &format!("ALTER DATABASE {} RENAME TO {renamed}", db.name()),
    );
    let back = RenamedBack {
        from: renamed.clone(),
        to: db.name().to_owned(),
    };
    append_and_wait(&mut connect(&renamed), "after RENAME");
    wait_for_worker(&mut admin, &renamed);
    drop(back); // renamed back (the worker steps out again)
    append_and_wait(&mut db.connect(), "after renaming back");

    // SET TABLESPACE
    let location = std::env::temp_dir().join(format!("{}_ts", db.name()));
    let status = std::process::Command::new("install")
        .args(["-d", "-o", "postgres", "-g", "postgres"])
        .arg(&location)
        .status()
        .expect("install -d");
    assert!(status.success(), "cannot make {}", location.display());
    let tablespace = format!("{}_ts", db.name());
    exec(
        &mut admin,
        &format!(
            "CREATE TABLESPACE {tablespace} LOCATION '{}'",
            location.display()
        ),
    );
    wait_for_worker(&mut admin, db.name());
    exec(
        &mut admin,
        &format!("ALTER DATABASE {} SET TABLESPACE {tablespace}", db.name()),
    );
    append_and_wait(&mut db.connect(), "after SET TABLESPACE");
    exec(
        &mut admin,
        &format!("ALTER DATABASE {} SET TABLESPACE pg_default", db.name()),
    );
    exec(&mut admin, &format!("DROP TABLESPACE {tablespace}"));
    let _ = std::fs::remove_dir_all(&location);

    // CREATE DATABASE … TEMPLATE: the copy's projection runs too
    wait_for_worker(&mut admin, db.name());
    let copy = format!("{}_c", db.name());
    let _copy_dropped = DropLater(copy.clone());
    exec(
        &mut admin,
        &format!("CREATE DATABASE {copy} TEMPLATE {}", db.name()),
    );
    append_and_wait(&mut connect(&copy), "in the copy");
    append_and_wait(&mut db.connect(), "in the template after the copy");

    // the other spellings of CREATE DATABASE still work through the hook
    for (suffix, template) in [
        ("_d", " TEMPLATE DEFAULT"),
        ("_z", " TEMPLATE = template0"),
        ("_p", ""),
    ] {
        let name = format!("{}{suffix}", db.name());
        let _dropped = DropLater(name.clone());
        exec(&mut admin, &format!("CREATE DATABASE {name}{template}"));
    }

    // DROP DATABASE, without FORCE
    wait_for_worker(&mut admin, &copy);
    exec(&mut admin, &format!("DROP DATABASE {copy}"));
    let gone: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&copy],
        )
        .expect("pg_database")
        .get(0);
    assert_eq!(gone, 0, "DROP DATABASE {copy} must have dropped it");
    assert_eq!(worker_pid(&mut admin, &copy), None);
}

#[test]
fn restored_projections_run_without_a_restart() {
    let source = TestDb::new("wrk_src");
    let mut src = source.connect();
    assert_preloaded(&mut src);
    add_projection(&mut src);
    append_and_wait(&mut src, "source");
    // Events appended while it is paused: the dump may hold events it has not handled yet.
    exec(&mut src, "SELECT es.pause_projection('seen')");
    for _ in 0..5 {
        append(
            &mut src,
            Uuid::new_v4(),
            None,
            &[r#"{"type":"Later"}"#.to_owned()],
        )
        .expect("append");
    }
    exec(&mut src, "SELECT es.resume_projection('seen')");
    let target = dump_and_restore(&source, "wrk_dst");
    let mut dst = target.connect();
    let last: i64 = dst
        .query_one("SELECT max(global_position) FROM es.events", &[])
        .expect("max")
        .get(0);
    let caught_up: bool = dst
        .query_one(
            "SELECT es.wait_for_projection('seen', $1, $2)",
            &[&last, &WAIT_MS],
        )
        .expect("wait_for_projection")
        .get(0);
    assert!(
        caught_up,
        "the restored projection did not catch up without a restart: {:?}",
        dst.query_one(
            "SELECT state, events_behind, state_reason FROM es.projections",
            &[]
        )
        .map(|r| (
            r.get::<_, String>(0),
            r.get::<_, i64>(1),
            r.get::<_, Option<String>>(2)
        ))
    );
    let events: i64 = dst
        .query_one("SELECT count(*) FROM es.events", &[])
        .expect("count")
        .get(0);
    let seen: i64 = dst
        .query_one("SELECT count(*) FROM seen_events", &[])
        .expect("count")
        .get(0);
    assert_eq!(
        seen, events,
        "every restored event is in the read model once"
    );
    append_and_wait(&mut dst, "a new append in the restored database");
}

#[test]
fn no_worker_stays_where_there_is_no_work() {
    let dbs: Vec<TestDb> = (0..3).map(|_| TestDb::new("idle")).collect();
    let mut admin = admin();
    assert_preloaded(&mut dbs[0].connect());
    for db in &dbs {
        // an append and a subscription: a consumer's work, not the worker's
        let mut c = db.connect();
        append(
            &mut c,
            Uuid::new_v4(),
            None,
            &[r#"{"type":"A"}"#.to_owned()],
        )
        .expect("append");
        exec(&mut c, "SELECT es.create_subscription('s')");
    }
    // the launcher looks at new databases within its rescan interval, and a look at a database
    // without work leaves at once: give it time to have looked, then none may be connected
    thread::sleep(Duration::from_secs(8));
    let start = Instant::now();
    loop {
        let connected: Vec<String> = dbs
            .iter()
            .filter(|db| worker_pid(&mut admin, db.name()).is_some())
            .map(|db| db.name().to_owned())
            .collect();
        if connected.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "workers stay connected to databases without projections: {connected:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let status: String = dbs[0]
        .connect()
        .query_one("SELECT state FROM es.worker_status()", &[])
        .expect("worker_status")
        .get(0);
    assert_eq!(status, "idle");
}

#[test]
fn es_max_workers_bounds_the_workers_and_every_database_progresses() {
    let _limit = MaxWorkers::set(1);
    let a = TestDb::new("limit_a");
    let b = TestDb::new("limit_b");
    let mut ca = a.connect();
    let mut cb = b.connect();
    assert_preloaded(&mut ca);
    add_projection(&mut ca);
    add_projection(&mut cb);
    let mut admin = admin();
    // one of the two waits, and says why
    let start = Instant::now();
    let mut saw_waiting = None;
    while saw_waiting.is_none() {
        for c in [&mut ca, &mut cb] {
            let row = c
                .query_one("SELECT state, state_reason FROM es.projections", &[])
                .expect("es.projections");
            let state: String = row.get(0);
            if state == "waiting for a worker slot" {
                saw_waiting = row.get::<_, Option<String>>(1);
            }
        }
        let workers: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE backend_type = 'event_store worker' AND datname IN ($1, $2)",
                &[&a.name(), &b.name()],
            )
            .expect("pg_stat_activity")
            .get(0);
        assert!(
            workers <= 1,
            "es.max_workers = 1, yet {workers} workers run"
        );
        assert!(
            start.elapsed() < SETTLE_WITHIN,
            "neither projection ever waited for a worker slot"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let reason = saw_waiting.expect("a reason");
    assert!(
        reason.contains("es.max_workers (1)"),
        "the reason names the setting: {reason}"
    );
    // both progress: the running worker yields its slot in turn
    append_and_wait(&mut ca, "database a under es.max_workers = 1");
    append_and_wait(&mut cb, "database b under es.max_workers = 1");
}

/// `DROP EXTENSION event_store` while the database's worker is in the middle of a batch of the
/// seed's account projections (whose read models are the extension's own tables): the command
/// succeeds every time and the worker leaves. Before the store's utility hook held the database
/// for it, the command took exclusive locks on the store's tables one by one while the worker held
/// a share lock on one and waited for another, and PostgreSQL's deadlock detector cancelled the
/// command now and then ("deadlock detected").
#[test]
fn drop_extension_while_the_worker_runs_a_batch() {
    let db = TestDb::new("dropext");
    let mut admin = admin();
    assert_preloaded(&mut db.connect());
    for round in 0..8 {
        let mut c = db.connect();
        if round > 0 {
            exec(&mut c, "CREATE EXTENSION event_store");
        }
        exec(
            &mut c,
            "SELECT es.enable_account_projections();
             SELECT es.pause_projection('account_balances'), es.pause_projection('account_transactions');
             CREATE TEMP TABLE accounts AS SELECT es.open_account('holder ' || g) AS id FROM generate_series(1, 200) g;
             SELECT count(es.deposit(id, 100)) FROM accounts, generate_series(1, 20);
             SELECT es.resume_projection('account_balances'), es.resume_projection('account_transactions');",
        );
        wait_for_worker(&mut admin, db.name());
        // inside the catch-up: some events handled, not all
        let start = Instant::now();
        while c
            .query_one("SELECT count(*) FROM es.account_transactions", &[])
            .expect("account_transactions")
            .get::<_, i64>(0)
            == 0
        {
            assert!(
                start.elapsed() < SETTLE_WITHIN,
                "round {round}: the projections handled nothing"
            );
            thread::sleep(Duration::from_millis(2));
        }
        if let Err(e) = c.batch_execute("DROP EXTENSION event_store CASCADE") {
            panic!("round {round}: DROP EXTENSION failed: {}", describe(&e));
        }
        let start = Instant::now();
        while worker_pid(&mut admin, db.name()).is_some() {
            assert!(
                start.elapsed() < SETTLE_WITHIN,
                "round {round}: a worker stays connected after DROP EXTENSION"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn sigterm_ends_a_handler_in_a_long_statement() {
    let db = TestDb::new("sigterm");
    let mut admin = admin();
    let mut c = db.connect();
    assert_preloaded(&mut c);
    exec(
        &mut c,
        "CREATE TABLE seen_events (global_position bigint PRIMARY KEY, stream_id uuid NOT NULL);
         CREATE TABLE slow_handler (on_ boolean NOT NULL);
         INSERT INTO slow_handler VALUES (true);
         CREATE FUNCTION record_seen(e es.events) RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
           IF (SELECT on_ FROM slow_handler) THEN PERFORM pg_sleep(600); END IF;
           INSERT INTO seen_events VALUES (e.global_position, e.stream_id);
         END $$;
         SELECT es.create_projection('seen', 'record_seen(es.events)'::regprocedure);",
    );
    let stream = Uuid::from_u128(0x5167_e000_0000_0000_0000_0000_0000_0001);
    let position = append_noted(&mut c, stream, "sigterm");
    // the worker inside the handler's pg_sleep
    let pid = wait_for_worker(&mut admin, db.name());
    let start = Instant::now();
    while admin
        .query_opt(
            "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'PgSleep'",
            &[&pid],
        )
        .expect("pg_stat_activity")
        .is_none()
    {
        assert!(
            start.elapsed() < SETTLE_WITHIN,
            "the worker {pid} did not reach the handler's pg_sleep within {SETTLE_WITHIN:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let signalled: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .expect("pg_terminate_backend")
        .get(0);
    assert!(signalled, "pg_terminate_backend({pid}) found no process");
    // gone long before the handler's 600 s
    let start = Instant::now();
    while admin
        .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .expect("pg_stat_activity")
        .is_some()
    {
        assert!(
            start.elapsed() < SETTLE_WITHIN,
            "the worker {pid} still runs {SETTLE_WITHIN:?} after SIGTERM: it waits for its \
             handler's pg_sleep(600)"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let checkpoint: i64 = c
        .query_one(
            "SELECT checkpoint FROM es.projections WHERE name = 'seen'",
            &[],
        )
        .expect("es.projections")
        .get(0);
    assert!(
        checkpoint < position,
        "the interrupted batch must roll back: checkpoint {checkpoint}, event at {position}"
    );
    let seen: i64 = c
        .query_one("SELECT count(*) FROM seen_events", &[])
        .expect("seen_events")
        .get(0);
    assert_eq!(seen, 0, "the interrupted handler's row must roll back");
    // a quick handler again: a new worker handles the event, once
    exec(&mut c, "UPDATE slow_handler SET on_ = false");
    wait_until_seen(&mut c, position, "after SIGTERM");
}
