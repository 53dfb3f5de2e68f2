//! "Behind a pooler": the store through a real pgbouncer in transaction mode (Debian 12's 1.18,
//! `/usr/sbin/pgbouncer`, which has no prepared-statement support: `max_prepared_statements`
//! arrived in 1.21), in front of the test cluster. Each test starts its own pgbouncer (as the
//! `postgres` user when run as root) on a free loopback port, with its configuration and log in
//! a directory under `target/pgbouncer/`, and stops it when it ends, also on failure; its log must
//! show no warning or error.
//!
//! What docs/clients.md says "Behind a pooler", shown here with several client connections:
//! - a session `SET` of `es.traceparent`, `es.snapshot_interval` or `es.tracing` stays on the
//!   server connection and applies to other clients' transactions;
//! - `SET LOCAL` inside a transaction takes effect there and nowhere else;
//! - a sqlcommenter `traceparent` comment reaches the extension through the pooler (it is read
//!   per statement, so nothing leaks);
//! - named prepared statements used across transactions fail (`26000`), while a statement
//!   prepared and run inside one transaction, unnamed statements (`query_typed`) and the simple
//!   query protocol work; the same for psycopg, asyncpg and node-postgres with and without the
//!   settings docs/clients.md gives;
//! - `ES001` and its DETAIL reach the client unchanged, and the driver snippets run unchanged;
//! - the Rust client (`crates/event_store_client`) with `ClientOptions::pooler_safe(true)` works
//!   for every kind of call from a pool of more client connections than server connections (its
//!   calls outside the caller's transaction run in short transactions of their own: sqlx's
//!   unnamed statements alone fail, see `each_round_trip_may_run_on_another_server_connection`),
//!   and its per-call `traceparent` comments reach the store and leave no statement behind.
//!
//! Ports: pgbouncer listens on a free loopback port it is given at start (no variable); the
//! cluster is tests/client/run.sh's (`ES_PORT`). `PGBOUNCER` names another pgbouncer binary.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{
    Client, NoTls, PG_USER, TestDb, Uuid, assert_snippet_story, describe, exec, host, port,
    repo_dir, run_driver, sqlstate,
};
use postgres::SimpleQueryMessage;

// The tokio-postgres snippet of docs/clients.md, to run it through the pooler (its own direct test comes
// along and runs here too).
#[path = "tokio_postgres_snippet.rs"]
mod tokio_postgres_snippet;
use postgres::types::Type;

/// Debian's pgbouncer; `PGBOUNCER` overrides.
const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// A W3C traceparent a client would send (sampled).
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A pgbouncer in transaction mode in front of one test database, stopped when dropped.
struct Bouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
    dbname: String,
}

impl Bouncer {
    /// Starts pgbouncer for `db` with at most `pool_size` server connections, handed out as
    /// pgbouncer does by default: the one released last first (LIFO).
    fn start(db: &TestDb, pool_size: u32) -> Bouncer {
        Bouncer::start_with(db, pool_size, false, "transaction")
    }

    /// Starts pgbouncer for `db` with two server connections, both open, handed out in turn
    /// (`server_round_robin = 1`): every round trip of a client (everything up to a Sync outside
    /// a transaction) runs on the other server connection than the one before. What works here
    /// does not depend on which connection the pooler happens to pick.
    fn start_alternating(db: &TestDb) -> Bouncer {
        let bouncer = Bouncer::start_with(db, 2, true, "transaction");
        bouncer.alternate();
        bouncer
    }

    /// Makes sure both server connections are open (a client that disconnects in the middle of
    /// a transaction makes pgbouncer close its server connection), and checks that consecutive
    /// statements of one client alternate between them.
    fn alternate(&self) {
        {
            let (mut c1, mut c2) = (self.connect(), self.connect());
            let (mut t1, mut t2) = (c1.transaction().unwrap(), c2.transaction().unwrap());
            let (p1, p2) = (seen(&mut t1).pid, seen(&mut t2).pid);
            assert_ne!(p1, p2, "two transactions at once, two server connections");
            t1.commit().unwrap();
            t2.commit().unwrap();
        }
        let mut c = self.connect();
        let pids: Vec<i32> = (0..4).map(|_| seen(&mut c).pid).collect();
        assert!(
            pids[0] != pids[1] && pids[0] == pids[2] && pids[1] == pids[3],
            "consecutive statements alternate between the two server connections: {pids:?}"
        );
    }

    fn start_with(db: &TestDb, pool_size: u32, round_robin: bool, pool_mode: &str) -> Bouncer {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let exe = std::env::var("PGBOUNCER").unwrap_or_else(|_| PGBOUNCER.to_owned());
        assert!(
            Path::new(&exe).exists(),
            "{exe} is missing: Debian's pgbouncer package is installed by `bash scripts/setup.sh`"
        );
        let dir = repo_dir().join("target/pgbouncer").join(format!(
            "{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let listen_port = free_port();
        let d = dir.display();
        fs::write(dir.join("userlist.txt"), format!("\"{PG_USER}\" \"\"\n")).unwrap();
        // Clients authenticate with trust (the user must be in auth_file); pgbouncer logs in to
        // the cluster as that user, where the throwaway cluster trusts local connections too.
        // sqlx sends the startup parameter extra_float_digits, which pgbouncer refuses unless
        // told to ignore it.
        let ini = format!(
            "[databases]\n\
             {db} = host={host} port={pgport} dbname={db}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {listen_port}\n\
             unix_socket_dir = {d}\n\
             auth_type = trust\n\
             auth_file = {d}/userlist.txt\n\
             pool_mode = {pool_mode}\n\
             default_pool_size = {pool_size}\n\
             server_round_robin = {round_robin}\n\
             ignore_startup_parameters = extra_float_digits\n\
             max_client_conn = 50\n\
             query_timeout = 120\n\
             logfile = {d}/pgbouncer.log\n\
             pidfile = {d}/pgbouncer.pid\n",
            db = db.name(),
            host = host(),
            pgport = port(),
            round_robin = u8::from(round_robin),
        );
        fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        let stderr = fs::File::create(dir.join("stderr.log")).unwrap();

        let mut command = Command::new(&exe);
        command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // pgbouncer refuses to run as root: run it as the cluster's owner.
        if id(&["-u"]) == 0 {
            let (uid, gid) = (id(&["-u", "postgres"]), id(&["-g", "postgres"]));
            let chown = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(chown.success(), "chown postgres {d} failed");
            command.uid(uid).gid(gid);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
        let mut bouncer = Bouncer {
            child,
            dir,
            port: listen_port,
            dbname: db.name().to_owned(),
        };
        bouncer.wait_ready();
        bouncer
    }

    /// Waits until pgbouncer accepts connections (panics with its log when it exits first).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "pgbouncer exited ({status}) at start:\n{}{}",
                    self.log(),
                    fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen on port {} within 15 s:\n{}",
                self.port,
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Connection settings of a client of the pooler (no `options`: pgbouncer refuses unknown
    /// startup parameters).
    fn config(&self) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(PG_USER)
            .dbname(&self.dbname)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// The pooler's URL for sqlx.
    fn url(&self) -> String {
        format!(
            "postgres://{PG_USER}@127.0.0.1:{}/{}",
            self.port, self.dbname
        )
    }

    /// A new client connection through the pooler.
    fn connect(&self) -> Client {
        self.config()
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("cannot connect through pgbouncer: {}", describe(&e)))
    }

    /// A client connection whose WARNINGs and NOTICEs are collected in `notices`.
    fn connect_with_notices(&self, notices: Arc<Mutex<Vec<String>>>) -> Client {
        self.config()
            .notice_callback(move |n| {
                notices
                    .lock()
                    .unwrap()
                    .push(format!("{}: {}", n.severity(), n.message()))
            })
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("cannot connect through pgbouncer: {}", describe(&e)))
    }

    /// pgbouncer's log so far.
    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    /// Fails when pgbouncer logged a warning, an error or a fatal error.
    fn assert_log_clean(&self) {
        let log = self.log();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| {
                [" WARNING ", " ERROR ", " FATAL "]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect();
        assert!(
            bad.is_empty(),
            "pgbouncer's log ({}) shows problems:\n{}",
            self.dir.join("pgbouncer.log").display(),
            bad.join("\n")
        );
        assert!(
            log.contains("process up: PgBouncer"),
            "pgbouncer's log does not show its start:\n{log}"
        );
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        // SIGTERM: immediate shutdown; SIGKILL if it is still there after 5 s.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("pgbouncer's files are kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `id ARGS` as a number.
fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("id {args:?}: {out:?}"))
}

/// The backend pid and the store's session settings, as a client's statement sees them.
#[derive(Debug, PartialEq)]
struct Seen {
    pid: i32,
    traceparent: String,
    snapshot_interval: String,
    tracing: String,
}

const SEEN_SQL: &str = "SELECT pg_backend_pid(), current_setting('es.traceparent'), \
                        current_setting('es.snapshot_interval'), current_setting('es.tracing')";

fn seen(client: &mut impl postgres::GenericClient) -> Seen {
    // query_typed: an unnamed statement, safe outside a transaction too
    let row = client
        .query_typed_one(SEEN_SQL, &[])
        .unwrap_or_else(|e| panic!("reading the settings: {}", describe(&e)));
    Seen {
        pid: row.get(0),
        traceparent: row.get(1),
        snapshot_interval: row.get(2),
        tracing: row.get(3),
    }
}

/// What a fresh session sees: the defaults.
fn defaults(pid: i32) -> Seen {
    Seen {
        pid,
        traceparent: String::new(),
        snapshot_interval: "100".to_owned(),
        tracing: "on".to_owned(),
    }
}

fn open_account(client: &mut impl postgres::GenericClient, holder: &str) -> Uuid {
    client
        .query_typed_one(
            "SELECT es.open_account($1, 0)",
            &[(&holder.to_owned(), Type::TEXT)],
        )
        .unwrap_or_else(|e| panic!("es.open_account: {}", describe(&e)))
        .get(0)
}

fn deposit(client: &mut impl postgres::GenericClient, account: Uuid) -> i64 {
    client
        .query_typed_one("SELECT es.deposit($1, 100)", &[(&account, Type::UUID)])
        .unwrap_or_else(|e| panic!("es.deposit: {}", describe(&e)))
        .get(0)
}

fn snapshot_versions(client: &mut impl postgres::GenericClient, account: Uuid) -> Vec<i64> {
    client
        .query_typed(
            "SELECT version FROM es.snapshots WHERE stream_id = $1 ORDER BY version",
            &[(&account, Type::UUID)],
        )
        .unwrap_or_else(|e| panic!("reading es.snapshots: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The spans the cluster's calls have made so far: recorded into the span buffer, or dropped
/// because it was full. Both count: with no collector listening (the client tests' default)
/// the buffer can be full of earlier tests' spans, and a call's span is then dropped, not
/// recorded, though the call made it.
fn spans_made(client: &mut Client) -> i64 {
    let row = client
        .query_typed_one(
            "SELECT available, spans_recorded, spans_dropped FROM es.tracing_stats()",
            &[],
        )
        .unwrap_or_else(|e| panic!("es.tracing_stats(): {}", describe(&e)));
    assert!(
        row.get::<_, bool>(0),
        "tracing is not available: these checks need shared_preload_libraries = 'event_store' \
         (tests/client/run.sh's default)"
    );
    row.get::<_, Option<i64>>(1).unwrap_or(0) + row.get::<_, Option<i64>>(2).unwrap_or(0)
}

#[test]
fn a_session_set_leaks_into_other_clients_transactions() {
    let db = TestDb::new("pgb_session_set");
    // One server connection: every client's transaction runs on it, as on a busy pool.
    let bouncer = Bouncer::start(&db, 1);
    let mut a = bouncer.connect();
    let mut b = bouncer.connect();
    a.batch_execute(&format!(
        "SET es.traceparent = '{TRACEPARENT}'; SET es.snapshot_interval = 1; SET es.tracing = off"
    ))
    .unwrap_or_else(|e| panic!("SET: {}", describe(&e)));
    let a_pid = seen(&mut a).pid;

    // B never SET anything, yet its transaction runs with A's settings.
    let mut tx = b.transaction().unwrap();
    let in_b = seen(&mut tx);
    tx.commit().unwrap();
    eprintln!("client B's transaction after client A's session SETs: {in_b:?}");
    assert_eq!(
        in_b,
        Seen {
            pid: a_pid,
            traceparent: TRACEPARENT.to_owned(),
            snapshot_interval: "1".to_owned(),
            tracing: "off".to_owned(),
        },
        "B's transaction ran on A's server connection, with A's session settings"
    );

    // The damage: B's account gets a snapshot at every version, and B's calls record no spans.
    let mut direct = db.connect();
    let spans_before = spans_made(&mut direct);
    let account = open_account(&mut b, "bob");
    assert_eq!(deposit(&mut b, account), 2);
    assert_eq!(deposit(&mut b, account), 3);
    assert_eq!(
        snapshot_versions(&mut direct, account),
        [1, 2, 3],
        "B's appends used A's es.snapshot_interval = 1"
    );
    assert_eq!(
        spans_made(&mut direct),
        spans_before,
        "B's calls ran with A's es.tracing = off"
    );
    // Without the pooler, a session's SET is its own.
    let fresh = seen(&mut direct);
    assert_eq!(
        fresh,
        defaults(fresh.pid),
        "a direct session sees the defaults"
    );
    drop((a, b));
    bouncer.assert_log_clean();
}

#[test]
fn set_local_takes_effect_in_its_transaction_and_does_not_leak() {
    let db = TestDb::new("pgb_set_local");
    let bouncer = Bouncer::start(&db, 2);
    let mut a = bouncer.connect();
    let mut b = bouncer.connect();
    let mut c = bouncer.connect();

    let mut tx = a.transaction().unwrap();
    tx.batch_execute(&format!(
        "SET LOCAL es.snapshot_interval = 2; SET LOCAL es.traceparent = '{TRACEPARENT}'"
    ))
    .unwrap_or_else(|e| panic!("SET LOCAL: {}", describe(&e)));
    let in_a = seen(&mut tx);
    assert_eq!(in_a.snapshot_interval, "2");
    assert_eq!(in_a.traceparent, TRACEPARENT);
    let account = open_account(&mut tx, "alice");
    for version in 2..=5 {
        assert_eq!(deposit(&mut tx, account), version);
    }
    assert_eq!(
        snapshot_versions(&mut tx, account),
        [2, 4],
        "SET LOCAL es.snapshot_interval = 2 applies to the transaction's appends"
    );
    // Meanwhile another client's transaction (on the other server connection) sees the defaults.
    let mut other = b.transaction().unwrap();
    let in_b = seen(&mut other);
    other.commit().unwrap();
    assert_ne!(in_b.pid, in_a.pid, "two server connections");
    assert_eq!(in_b, defaults(in_b.pid), "a concurrent transaction");
    tx.commit().unwrap();

    // After the commit, both server connections (one of them A's) show the defaults: two
    // transactions open at once take both.
    let mut tb = b.transaction().unwrap();
    let mut tc = c.transaction().unwrap();
    let after = [seen(&mut tb), seen(&mut tc)];
    tb.commit().unwrap();
    tc.commit().unwrap();
    eprintln!("inside A's transaction: {in_a:?}; concurrently: {in_b:?}; afterwards: {after:?}");
    assert!(
        after.iter().any(|s| s.pid == in_a.pid),
        "one of them runs on A's server connection: {after:?}"
    );
    for s in &after {
        assert_eq!(*s, defaults(s.pid), "SET LOCAL ended with A's transaction");
    }
    // And other clients' appends snapshot at the default interval (100): none here.
    let account_b = open_account(&mut b, "bob");
    for _ in 0..3 {
        deposit(&mut c, account_b);
    }
    assert_eq!(snapshot_versions(&mut b, account_b), Vec::<i64>::new());
    assert_eq!(
        snapshot_versions(&mut b, account),
        [2, 4],
        "A's snapshots committed"
    );
    drop((a, b, c));
    bouncer.assert_log_clean();
}

#[test]
fn a_sqlcommenter_traceparent_reaches_the_store_through_the_pooler() {
    let db = TestDb::new("pgb_sqlcommenter");
    let bouncer = Bouncer::start(&db, 1);
    let notices = Arc::new(Mutex::new(Vec::new()));
    let mut a = bouncer.connect_with_notices(notices.clone());
    let mut direct = db.connect();
    let stream = Uuid::new_v4();
    let unsampled = TRACEPARENT.replace("-01", "-00");
    let append = |client: &mut Client, comment: &str| {
        let sql = format!(
            "SELECT es.append_events($1, NULL, ARRAY['{{\"type\":\"Traced\"}}']::jsonb[]) {comment}"
        );
        client
            .query_typed_one(&sql, &[(&stream, Type::UUID)])
            .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    };
    // (comment, spans the append records): without a client context a root span (sample ratio
    // 1.0); with an unsampled context nothing, which shows the comment was read.
    let cases = [
        (String::new(), 1),
        (format!("/*traceparent='{unsampled}'*/"), 0),
        (String::new(), 1),
        (format!("/*traceparent='{TRACEPARENT}'*/"), 1),
        (format!("/*action='append',traceparent='{unsampled}'*/"), 0),
    ];
    for (comment, spans) in &cases {
        let before = spans_made(&mut direct);
        append(&mut a, comment);
        assert_eq!(
            spans_made(&mut direct) - before,
            *spans,
            "spans made by an append through the pooler with comment {comment:?}"
        );
    }
    // The simple query protocol carries the comment the same way.
    let before = spans_made(&mut direct);
    a.simple_query(&format!(
        "/*traceparent='{unsampled}'*/ SELECT es.append_events('{stream}', NULL, \
         ARRAY['{{\"type\":\"Traced\"}}']::jsonb[])"
    ))
    .unwrap_or_else(|e| panic!("simple query: {}", describe(&e)));
    assert_eq!(spans_made(&mut direct), before, "simple query protocol");
    // A malformed one: the store says so (a WARNING reaches the client), and the call works.
    append(&mut a, "/*traceparent='00-not-a-context'*/");
    let warned = notices.lock().unwrap().clone();
    assert!(
        warned.iter().any(|n| n.starts_with("WARNING")
            && n.contains("00-not-a-context")
            && n.contains("sqlcommenter")),
        "the extension's WARNING about the malformed comment: {warned:?}"
    );
    assert_eq!(
        event_store_client_tests::stream_version(&mut direct, stream),
        7,
        "every append went through"
    );
    drop(a);
    bouncer.assert_log_clean();
}

#[test]
fn prepared_statements_in_transaction_mode() {
    let db = TestDb::new("pgb_prepared");
    let bouncer = Bouncer::start(&db, 2);
    let mut a = bouncer.connect();
    let mut x = bouncer.connect();
    let stream = Uuid::new_v4();
    let sql = "SELECT es.stream_version($1)";

    // A named statement prepared outside a transaction lives on the server connection that
    // prepared it (S1) ...
    let statement = a.prepare(sql).unwrap();
    // ... which X's open transaction now holds, so A's next statement runs on S2.
    let mut hold = x.transaction().unwrap();
    let held = seen(&mut hold).pid;
    let err = a
        .query_one(&statement, &[&stream])
        .expect_err("a named statement used in another transaction than its PREPARE");
    eprintln!("named statement across transactions: {}", describe(&err));
    assert_eq!(sqlstate(&err), Some("26000"), "{}", describe(&err));
    assert!(
        describe(&err).contains("does not exist"),
        "{}",
        describe(&err)
    );

    // What works while X still holds S1 (so A runs on S2):
    // an unnamed statement: parse, bind and execute in one round trip
    let v: i64 = a
        .query_typed_one(sql, &[(&stream, Type::UUID)])
        .unwrap_or_else(|e| panic!("query_typed: {}", describe(&e)))
        .get(0);
    assert_eq!(v, 0);
    // the simple query protocol (values inlined: mind the quoting)
    let rows = a
        .simple_query(&format!("SELECT es.stream_version('{stream}')"))
        .unwrap_or_else(|e| panic!("simple_query: {}", describe(&e)));
    let values: Vec<Option<&str>> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0)),
            _ => None,
        })
        .collect();
    assert_eq!(values, [Some("0")], "simple query");
    // a statement prepared and executed inside one transaction
    let mut tx = a.transaction().unwrap();
    let pid = seen(&mut tx).pid;
    assert_ne!(
        pid, held,
        "A's transaction runs on the other server connection"
    );
    let inside = tx.prepare(sql).unwrap();
    let v: i64 = tx
        .query_one(&inside, &[&stream])
        .unwrap_or_else(|e| panic!("prepared inside the transaction: {}", describe(&e)))
        .get(0);
    assert_eq!(v, 0);
    tx.commit().unwrap();
    hold.commit().unwrap();
    drop((a, x));
    bouncer.assert_log_clean();
}

/// `sql` with `$1` the stream and `$2` the expected version, as an unnamed statement.
fn append_at(
    client: &mut Client,
    sql: &str,
    stream: Uuid,
    expected: i64,
) -> Result<postgres::Row, postgres::Error> {
    client.query_typed_one(sql, &[(&stream, Type::UUID), (&expected, Type::INT8)])
}

#[test]
fn es001_and_its_detail_survive_the_pooler() {
    let db = TestDb::new("pgb_errors");
    let bouncer = Bouncer::start(&db, 1);
    let mut a = bouncer.connect();
    let stream = Uuid::new_v4();
    let append = "SELECT es.append_events($1, $2, ARRAY['{\"type\":\"A\"}']::jsonb[])";
    for expected in [0_i64, 1] {
        append_at(&mut a, append, stream, expected)
            .unwrap_or_else(|e| panic!("append: {}", describe(&e)));
    }
    let err = append_at(&mut a, append, stream, 1).expect_err("a stale expected version");
    let db_err = err.as_db_error().expect("a server error");
    assert_eq!(db_err.code().code(), "ES001");
    assert_eq!(db_err.detail(), Some("expected: 1, actual: 2"));
    assert!(db_err.hint().is_some(), "the HINT comes along");
    // the same error as without the pooler
    let direct =
        append_at(&mut db.connect(), append, stream, 1).expect_err("a stale expected version");
    assert_eq!(describe(&err), describe(&direct));
    // in the simple query protocol too, and for the account rules' DETAIL
    let err = a
        .simple_query(&format!(
            "SELECT es.append_events('{stream}', 1, ARRAY['{{\"type\":\"A\"}}']::jsonb[])"
        ))
        .expect_err("a stale expected version");
    assert_eq!(sqlstate(&err), Some("ES001"));
    assert_eq!(
        err.as_db_error().and_then(|e| e.detail()),
        Some("expected: 1, actual: 2")
    );
    let account = open_account(&mut a, "carol");
    let err = a
        .query_typed_one("SELECT es.withdraw($1, 500)", &[(&account, Type::UUID)])
        .expect_err("an overdraft");
    assert_eq!(sqlstate(&err), Some("ES101"));
    assert_eq!(
        err.as_db_error().and_then(|e| e.detail()),
        Some("available: 0, requested: 500")
    );
    // the client connection stays usable
    assert_eq!(
        event_store_client_tests::stream_version(&mut a, stream),
        2,
        "after the errors"
    );
    drop(a);
    bouncer.assert_log_clean();
}

/// The driver snippets of docs/clients.md, unchanged, through the pooler (each with its own database, as
/// in drivers.rs), with every round trip on the other server connection than the one before.
#[test]
fn the_driver_snippets_run_through_the_pooler() {
    for (program, script) in [
        ("python", "tests/drivers/python/psycopg_example.py"),
        ("python", "tests/drivers/python/asyncpg_example.py"),
        ("node", "tests/drivers/node/pg_example.js"),
        ("rust", "tests/client/tests/tokio_postgres_snippet.rs"),
    ] {
        let db = TestDb::new("pgb_snippet");
        let bouncer = Bouncer::start_alternating(&db);
        let output = if program == "rust" {
            let conninfo = format!(
                "host=127.0.0.1 port={} user={PG_USER} dbname={}",
                bouncer.port,
                db.name()
            );
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(tokio_postgres_snippet::example(&conninfo))
                .unwrap_or_else(|e| panic!("the tokio-postgres snippet: {}", describe(&e)))
        } else {
            run_driver(program, script, &[], "127.0.0.1", bouncer.port, db.name())
        };
        eprint!("{script} through pgbouncer:\n{output}");
        assert_snippet_story(script, &output);
        bouncer.assert_log_clean();
    }
}

/// Each driver's prepared statements with its default settings (they break across transactions)
/// and with the settings docs/clients.md gives (they work): tests/drivers/*/pooler_prepared.*.
#[test]
fn driver_prepared_statement_settings() {
    let db = TestDb::new("pgb_driver_prepared");
    let cases = [
        (
            "python",
            "tests/drivers/python/pooler_prepared.py",
            "psycopg-default",
            Some("_pg3_"),
        ),
        (
            "python",
            "tests/drivers/python/pooler_prepared.py",
            "psycopg-unprepared",
            None,
        ),
        (
            "python",
            "tests/drivers/python/pooler_prepared.py",
            "asyncpg-default",
            Some("__asyncpg_stmt_"),
        ),
        (
            "python",
            "tests/drivers/python/pooler_prepared.py",
            "asyncpg-uncached",
            None,
        ),
        (
            "node",
            "tests/drivers/node/pooler_prepared.js",
            "named",
            Some("stream_version"),
        ),
        (
            "node",
            "tests/drivers/node/pooler_prepared.js",
            "unnamed",
            None,
        ),
    ];
    for (program, script, case, fails_with) in cases {
        // a fresh pooler per case: its first server connection is the one the dance needs
        let bouncer = Bouncer::start(&db, 2);
        let output = run_driver(
            program,
            script,
            &[case],
            "127.0.0.1",
            bouncer.port,
            db.name(),
        );
        eprint!("{output}");
        let line = output.trim_end();
        match fails_with {
            None => assert_eq!(line, format!("{case}: ok")),
            Some(name) => assert!(
                line.starts_with(&format!("{case}: 26000 prepared statement \"{name}"))
                    && line.ends_with("does not exist"),
                "{case}: expected the named statement to be missing on the other server \
                 connection, got {line:?}"
            ),
        }
        bouncer.assert_log_clean();
    }
}

/// The rule behind every result of the prepared-statement tests: what one client sends up to a
/// Sync outside a transaction may run on another server connection than what it sent before.
/// With two server connections handed out in turn, each such round trip runs on the other one.
#[test]
fn each_round_trip_may_run_on_another_server_connection() {
    let db = TestDb::new("pgb_round_trips");
    let bouncer = Bouncer::start_alternating(&db);
    let mut a = bouncer.connect();
    let stream = Uuid::new_v4();
    let sql = "SELECT es.stream_version($1)";

    // `query(&str, …)` prepares a named statement (Parse, Describe, Sync), then binds it in a
    // second round trip: on the other server connection (within a few attempts: the pooler
    // may hand a quick client the same connection again).
    let err = (0..10)
        .find_map(|_| a.query_one(sql, &[&stream]).err())
        .expect("prepare and execute in two round trips fail");
    eprintln!(
        "postgres crate, query(&str) outside a transaction: {}",
        describe(&err)
    );
    assert_eq!(sqlstate(&err), Some("26000"), "{}", describe(&err));
    // One round trip each: an unnamed statement with its types (parse, bind, execute, sync) ...
    for _ in 0..3 {
        let v: i64 = a
            .query_typed_one(sql, &[(&stream, Type::UUID)])
            .unwrap_or_else(|e| panic!("query_typed: {}", describe(&e)))
            .get(0);
        assert_eq!(v, 0);
    }
    // ... and the simple query protocol.
    for _ in 0..3 {
        a.simple_query(&format!("SELECT es.stream_version('{stream}')"))
            .unwrap_or_else(|e| panic!("simple_query: {}", describe(&e)));
    }
    // Inside a transaction the server connection is the client's: any statement works.
    for _ in 0..2 {
        let mut tx = a.transaction().unwrap();
        let v: i64 = tx
            .query_one(sql, &[&stream])
            .unwrap_or_else(|e| panic!("query in a transaction: {}", describe(&e)))
            .get(0);
        assert_eq!(v, 0);
        tx.commit().unwrap();
    }

    let outcomes = sqlx_outcomes(&bouncer, stream);
    eprintln!("sqlx: {outcomes:#?}");
    // A named statement is missing on the other server connection (26000), or another client's
    // statement of the same name is there: sqlx numbers its statements per connection
    // (sqlx_s_1, …), and the first case left its sqlx_s_1 on one of the server connections
    // (42P05 "already exists", seen in the third case).
    let missing_or_taken: &[&str] = &["26000", "42P05"];
    let expect: [(&str, &[&str]); 4] = [
        ("default (named, cached)", missing_or_taken),
        ("persistent(false)", &["26000"]),
        ("default, in transactions", missing_or_taken),
        ("persistent(false), in transactions", &[]),
    ];
    for ((case, got), (want_case, want)) in outcomes.iter().zip(expect) {
        assert_eq!(*case, want_case);
        let ok = match got {
            Ok(()) => want.is_empty(),
            Err((code, _)) => want.contains(&code.as_str()),
        };
        assert!(
            ok,
            "sqlx, {case}: expected {want:?} (empty: success), got {got:?}"
        );
    }
    drop(a);
    bouncer.assert_log_clean();
}

/// How a sqlx case ended: `Ok`, or the SQLSTATE and message of its first failure.
type SqlxOutcome = Result<(), (String, String)>;

/// sqlx through the pooler, each case on a connection of its own, whose round trips alternate
/// between the two server connections: `Ok`, or the SQLSTATE and message of the first failure
/// within a few attempts.
fn sqlx_outcomes(bouncer: &Bouncer, stream: Uuid) -> Vec<(&'static str, SqlxOutcome)> {
    let url = bouncer.url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let cases: [(&'static str, bool, bool); 4] = [
        // (case, persistent, in transactions)
        ("default (named, cached)", true, false),
        ("persistent(false)", false, false),
        ("default, in transactions", true, true),
        ("persistent(false), in transactions", false, true),
    ];
    cases
        .into_iter()
        .map(|(case, persistent, in_transactions)| {
            bouncer.alternate(); // outside the runtime: the sync client runs its own
            let outcome = runtime.block_on(sqlx_case(&url, stream, persistent, in_transactions));
            (case, outcome)
        })
        .collect()
}

/// Runs `SELECT es.stream_version($1)` with sqlx ten times, each in a transaction of its own or
/// not, with a persistent (named, cached) statement or not; stops at the first failure.
async fn sqlx_case(
    url: &str,
    stream: Uuid,
    persistent: bool,
    in_transactions: bool,
) -> SqlxOutcome {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("sqlx cannot connect through pgbouncer: {e}"));
    let sql = "SELECT es.stream_version($1)";
    let run = async {
        for _ in 0..10 {
            let query = sqlx::query_scalar::<_, i64>(sql)
                .bind(stream)
                .persistent(persistent);
            if in_transactions {
                let mut tx = c.begin().await?;
                query.fetch_one(&mut *tx).await?;
                tx.commit().await?;
            } else {
                query.fetch_one(&mut c).await?;
            }
        }
        Ok::<(), sqlx::Error>(())
    }
    .await;
    let _ = c.close().await;
    run.map_err(|e| match e.as_database_error() {
        Some(d) => (
            d.code().unwrap_or_default().into_owned(),
            d.message().to_owned(),
        ),
        None => ("client".to_owned(), e.to_string()),
    })
}

/// Defaults set for a database or role apply when pgbouncer opens a server connection, and its
/// pools are per database and user: every client of that pool gets them, and only those.
#[test]
fn database_and_role_defaults_apply_through_the_pooler() {
    let db = TestDb::new("pgb_defaults");
    db.connect()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET es.snapshot_interval = 3",
            db.name()
        ))
        .unwrap_or_else(|e| panic!("ALTER DATABASE: {}", describe(&e)));
    let bouncer = Bouncer::start(&db, 2);
    let (mut a, mut b) = (bouncer.connect(), bouncer.connect());
    let (mut ta, mut tb) = (a.transaction().unwrap(), b.transaction().unwrap());
    let seen_a = seen(&mut ta);
    let seen_b = seen(&mut tb);
    assert_ne!(seen_a.pid, seen_b.pid, "two server connections");
    assert_eq!(seen_a.snapshot_interval, "3");
    assert_eq!(seen_b.snapshot_interval, "3");
    ta.commit().unwrap();
    tb.commit().unwrap();
    let account = open_account(&mut a, "dora");
    for _ in 0..3 {
        deposit(&mut b, account);
    }
    assert_eq!(snapshot_versions(&mut a, account), [3]);
    drop((a, b));
    bouncer.assert_log_clean();
}

/// Session mode: a client keeps its server connection until it disconnects, so session `SET`
/// and named prepared statements behave as on a direct connection, and pgbouncer resets the
/// server connection (`DISCARD ALL`) before the next client gets it.
#[test]
fn session_mode_keeps_a_server_connection_per_client() {
    let db = TestDb::new("pgb_session_mode");
    let bouncer = Bouncer::start_with(&db, 1, false, "session");
    let stream = Uuid::new_v4();
    let mut a = bouncer.connect();
    a.batch_execute("SET es.snapshot_interval = 1")
        .unwrap_or_else(|e| panic!("SET: {}", describe(&e)));
    let statement = a.prepare("SELECT es.stream_version($1)").unwrap();
    let mut pids = Vec::new();
    for _ in 0..3 {
        let mut tx = a.transaction().unwrap();
        pids.push(seen(&mut tx).pid);
        let v: i64 = tx
            .query_one(&statement, &[&stream])
            .unwrap_or_else(|e| panic!("a named statement in session mode: {}", describe(&e)))
            .get(0);
        assert_eq!(v, 0);
        assert_eq!(seen(&mut tx).snapshot_interval, "1");
        tx.commit().unwrap();
    }
    assert!(
        pids.windows(2).all(|w| w[0] == w[1]),
        "one server connection: {pids:?}"
    );
    drop(statement);
    drop(a);
    // the only server connection, reset, goes to the next client
    let mut b = bouncer.connect();
    let in_b = seen(&mut b);
    assert_eq!(
        in_b,
        defaults(pids[0]),
        "the next client of A's server connection"
    );
    drop(b);
    bouncer.assert_log_clean();
}

/// The Rust client's `ClientOptions::pooler_safe(true)` through the pooler whose round trips
/// alternate between its two server connections, from a sqlx pool of four connections (more
/// client connections than server connections, so consecutive statements of one client cross
/// server connections): every call of the client works, on the pool, with the caller's
/// transaction, concurrently, through the streams and the consumer.
#[test]
fn the_rust_client_in_pooler_safe_mode() {
    let db = TestDb::new("pgb_rust_client");
    exec(&mut db.connect(), RUST_CLIENT_SCHEMA);
    let bouncer = Bouncer::start_alternating(&db);
    let mut direct = db.connect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let options = rust_client::ClientOptions::default()
        .pooler_safe(true)
        .without_traceparent()
        .page_size(2);
    let log = runtime.block_on(rust_client::story(&bouncer.url(), options));
    // What the story appended is in the database, as a direct connection reads it.
    let stored: i64 = direct
        .query_typed_one("SELECT count(*) FROM es.events", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, log, "every event the story appended is stored");
    let handled: i64 = direct
        .query_typed_one("SELECT count(*) FROM handled", &[])
        .unwrap()
        .get(0);
    assert_eq!(handled, log, "the consumer handled every event once");
    drop(direct);
    bouncer.assert_log_clean();
}

/// The client's sqlcommenter `traceparent` through the pooler: its statement text changes with
/// every call, so it is always sent unnamed, and in pooler-safe mode inside the call's own
/// transaction. Every call works, every comment reaches the store (an unsampled context makes
/// the store record no span; a lost comment would make it record a root span), and no named
/// statement is left on either server connection or in the client's cache.
#[test]
fn the_rust_clients_traceparent_through_the_pooler_leaves_no_statement() {
    let db = TestDb::new("pgb_rust_traceparent");
    exec(&mut db.connect(), RUST_CLIENT_SCHEMA);
    let bouncer = Bouncer::start_alternating(&db);
    let mut direct = db.connect();
    let spans_before = spans_made(&mut direct);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    // A new unsampled context per call: another statement text each time.
    let options = rust_client::ClientOptions::default()
        .pooler_safe(true)
        .traceparent_from(move || {
            // from 1: an all-zero span id is not a valid context
            let n = counted.fetch_add(1, Ordering::Relaxed) + 1;
            Some(format!("00-0af7651916cd43dd8448eb211c80319c-{n:016x}-00"))
        });
    let cached = runtime.block_on(rust_client::traced_calls(&bouncer.url(), options));
    assert_eq!(cached, 0, "no statement in the client's cache");
    assert!(
        calls.load(Ordering::Relaxed) >= 8,
        "each call asked for its traceparent"
    );
    assert_eq!(
        spans_made(&mut direct),
        spans_before,
        "every call carried its unsampled traceparent to the store"
    );
    // Both server connections are looked at: consecutive statements of one client alternate
    // between them (round robin), unless another client's release reorders them for a turn,
    // so look until both were seen (at most 20 statements).
    let mut a = bouncer.connect();
    let mut pids: Vec<String> = Vec::new();
    for _ in 0..20 {
        if pids.len() == 2 {
            break;
        }
        let rows = a
            .simple_query("SELECT pg_backend_pid(), (SELECT count(*) FROM pg_prepared_statements)")
            .unwrap_or_else(|e| panic!("pg_prepared_statements: {}", describe(&e)));
        let row = rows
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((r.get(0).unwrap().to_owned(), r.get(1).unwrap().to_owned()))
                }
                _ => None,
            })
            .expect("a row");
        assert_eq!(
            row.1, "0",
            "no named statement on server connection {}",
            row.0
        );
        if !pids.contains(&row.0) {
            pids.push(row.0);
        }
    }
    assert_eq!(
        pids.len(),
        2,
        "both server connections were looked at: {pids:?}"
    );
    drop((a, direct));
    bouncer.assert_log_clean();
}

/// The schema of the Rust client's tests through the pooler: an aggregate type (`counter`) for
/// the typed appends, and the consumer's read model.
const RUST_CLIENT_SCHEMA: &str = "
    CREATE FUNCTION public.count_evolve(state jsonb, event jsonb) RETURNS jsonb
      LANGUAGE sql IMMUTABLE
      RETURN jsonb_build_object('n', (state->>'n')::int + coalesce((event->>'by')::int, 0));
    SELECT es.define_aggregate('counter', 'public.count_evolve(jsonb, jsonb)'::regprocedure,
                               '{\"n\": 0}');
    CREATE TABLE handled (position bigint PRIMARY KEY);
    CREATE TABLE orders (id uuid PRIMARY KEY);";

/// The Rust client's calls, run through the pooler by the tests above.
mod rust_client {
    pub use event_store_client::ClientOptions;
    use event_store_client::{
        Aggregate, Consumer, EventStore, EventStoreClient, EventStoreError, ExpectedVersion,
        SubscriptionSpec,
    };
    use futures::{StreamExt, TryStreamExt};
    use serde::{Deserialize, Serialize};
    use sqlx::postgres::PgPoolOptions;
    use std::time::Duration;
    use uuid::Uuid;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum Shop {
        Ordered { sku: String },
        Paid { cents: i64 },
        Shipped,
    }

    /// The `counter` aggregate of `RUST_CLIENT_SCHEMA`.
    struct Counter;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum CounterEvent {
        Inc { by: i64 },
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct CounterState {
        n: i64,
    }

    impl Aggregate for Counter {
        const STREAM_TYPE: &'static str = "counter";
        type Event = CounterEvent;
        type State = CounterState;
        fn initial() -> CounterState {
            CounterState { n: 0 }
        }
        fn apply(state: &mut CounterState, event: &CounterEvent) {
            let CounterEvent::Inc { by } = event;
            state.n += by;
        }
    }

    fn order() -> Vec<Shop> {
        vec![
            Shop::Ordered { sku: "A1".into() },
            Shop::Paid { cents: 250 },
        ]
    }

    async fn pool(url: &str) -> sqlx::PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("sqlx cannot connect through pgbouncer: {e}"))
    }

    /// Every kind of call of the client through the pooler; returns how many events it
    /// appended in all (the log's length).
    pub async fn story(url: &str, options: ClientOptions) -> i64 {
        let store = EventStoreClient::with_options(pool(url).await, options);
        let mut appended = 0;

        // Events of a serde type, on the pool.
        let id = Uuid::new_v4();
        let v = store
            .append(id, ExpectedVersion::NoStream, &order())
            .await
            .expect("append on the pool");
        assert_eq!(v, 2);
        let v = store
            .append(id, ExpectedVersion::Exact(2), &[Shop::Shipped])
            .await
            .expect("append at a version");
        assert_eq!(v, 3);
        appended += 3;
        // A refusal arrives typed, and the call's transaction is gone with it.
        let conflict = store
            .append(id, ExpectedVersion::Exact(1), &[Shop::Shipped])
            .await;
        assert!(
            matches!(conflict, Err(EventStoreError::ConcurrencyConflict { .. })),
            "{conflict:?}"
        );
        let mut want = order();
        want.push(Shop::Shipped);
        assert_eq!(store.load_as::<Shop>(id).await.expect("load_as"), want);
        assert_eq!(store.stream_version(id).await.expect("stream_version"), 3);
        assert_eq!(
            store
                .load_recorded(id, 1, None)
                .await
                .expect("load_recorded")
                .len(),
            2
        );

        // A typed append of an aggregate, its state and its fold.
        let counter = Uuid::new_v4();
        let events = [CounterEvent::Inc { by: 2 }, CounterEvent::Inc { by: 3 }];
        store
            .append_to::<Counter>(counter, ExpectedVersion::NoStream, &events)
            .await
            .expect("append_to");
        appended += 2;
        assert_eq!(store.load::<Counter>(counter).await.expect("load"), events);
        assert_eq!(
            store.state::<Counter>(counter).await.expect("state"),
            CounterState { n: 5 }
        );
        assert_eq!(
            store.fold::<Counter>(counter).await.expect("fold").0,
            CounterState { n: 5 }
        );

        // The caller's transaction: the client's calls and the caller's writes commit together
        // (and roll back together).
        for commit in [true, false] {
            let order_id = Uuid::new_v4();
            let mut tx = store.pool().begin().await.expect("begin");
            sqlx::query("INSERT INTO orders (id) VALUES ($1)")
                .bind(order_id)
                .persistent(false)
                .execute(&mut *tx)
                .await
                .expect("the caller's insert");
            store
                .append_in(&mut *tx, order_id, ExpectedVersion::NoStream, &order())
                .await
                .expect("append_in the caller's transaction");
            let seen = store
                .load_in(&mut *tx, order_id, 0, None)
                .await
                .expect("load_in the caller's transaction");
            assert_eq!(seen.len(), 2, "the transaction sees its own append");
            store
                .append_to_in::<Counter, _>(
                    &mut *tx,
                    order_id_counter(order_id),
                    ExpectedVersion::NoStream,
                    &[CounterEvent::Inc { by: 1 }],
                )
                .await
                .expect("append_to_in the caller's transaction");
            if commit {
                tx.commit().await.expect("commit");
                appended += 3;
            } else {
                tx.rollback().await.expect("rollback");
            }
            assert_eq!(
                store
                    .stream_version(order_id)
                    .await
                    .expect("stream_version"),
                if commit { 2 } else { 0 }
            );
        }

        // The bank account's calls and the EventStore trait.
        let account = store
            .open_account("Alice", 1_000)
            .await
            .expect("open_account");
        store
            .deposit(account, 500, "salary", None)
            .await
            .expect("deposit");
        let refused = store.withdraw(account, 10_000, "car", None).await;
        assert!(
            matches!(refused, Err(EventStoreError::InsufficientFunds { .. })),
            "{refused:?}"
        );
        assert_eq!(
            store
                .account_state(account)
                .await
                .expect("account_state")
                .balance_cents,
            1_500
        );
        assert_eq!(
            EventStore::load_events(&store, account)
                .await
                .expect("load_events")
                .len(),
            2
        );
        appended += 2;

        // Concurrent calls: more at once than there are server connections.
        let streams: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
        let events = order();
        let versions = futures::future::join_all(
            streams
                .iter()
                .map(|s| store.append(*s, ExpectedVersion::NoStream, &events)),
        )
        .await;
        for v in versions {
            assert_eq!(v.expect("a concurrent append"), 2);
        }
        appended += 16;

        // The log: a page, and the streams a page (2 events) at a time.
        let log = store.read_all(0, 1_000).await.expect("read_all");
        assert_eq!(log.len() as i64, appended);
        let streamed: Vec<_> = store
            .read_all_stream(0)
            .try_collect()
            .await
            .expect("read_all_stream");
        assert_eq!(streamed, log);
        let of_id: Vec<_> = store
            .load_events_stream(id, 0)
            .try_collect()
            .await
            .expect("load_events_stream");
        assert_eq!(of_id.len(), 3);

        // A subscription's partition as a stream (it acks what was consumed), and es.wait.
        let spec = SubscriptionSpec::default();
        store
            .create_subscription("tail", &spec)
            .await
            .expect("create_subscription");
        let tailed: Vec<_> = store
            .subscription_stream("tail", 0, None, Duration::from_millis(10))
            .take(appended as usize)
            .try_collect()
            .await
            .expect("subscription_stream");
        assert_eq!(tailed, log);
        assert!(
            store
                .wait("tail", 0, Duration::from_millis(0))
                .await
                .expect("wait")
        );

        // The consumer: two partitions, each batch in its transaction with the handler's
        // writes, then a claim, a lease renewal and a release.
        let spec = SubscriptionSpec {
            partitions: 2,
            ..SubscriptionSpec::default()
        };
        store
            .create_subscription("mailer", &spec)
            .await
            .expect("create_subscription");
        let mut consumer = Consumer::new(store.clone(), "mailer", "worker-a").batch_size(3);
        let progress = consumer
            .run_until_idle(|tx, event| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO handled (position) VALUES ($1)")
                        .bind(event.global_position)
                        .persistent(false)
                        .execute(&mut **tx)
                        .await?;
                    Ok::<_, sqlx::Error>(())
                })
            })
            .await
            .expect("the consumer");
        assert_eq!(progress.acked as i64, appended);
        assert_eq!(progress.failed, 0);
        assert_eq!(
            store
                .claim("mailer", "worker-a", Duration::from_secs(30))
                .await
                .expect("claim"),
            [0, 1]
        );
        assert_eq!(
            store.release("mailer", "worker-a").await.expect("release"),
            2
        );
        store.pool().close().await;
        appended
    }

    /// The counter stream that goes with an order of the transaction case.
    fn order_id_counter(order: Uuid) -> Uuid {
        Uuid::from_u128(order.as_u128() ^ 1)
    }

    /// Calls of every shape with a trace context; returns how many statements the pool's
    /// connections cached in all.
    pub async fn traced_calls(url: &str, options: ClientOptions) -> usize {
        use sqlx::Connection;
        let store = EventStoreClient::with_options(pool(url).await, options);
        let id = Uuid::new_v4();
        store
            .append(id, ExpectedVersion::NoStream, &order())
            .await
            .expect("traced append");
        for _ in 0..3 {
            store
                .append(id, ExpectedVersion::Any, &[Shop::Shipped])
                .await
                .expect("traced append");
        }
        assert_eq!(
            store.load_as::<Shop>(id).await.expect("traced load").len(),
            5
        );
        assert_eq!(
            store.read_all(0, 100).await.expect("traced read_all").len(),
            5
        );
        let mut tx = store.pool().begin().await.expect("begin");
        store
            .append_in(&mut *tx, id, ExpectedVersion::Exact(5), &[Shop::Shipped])
            .await
            .expect("traced append in the caller's transaction");
        tx.commit().await.expect("commit");
        assert_eq!(store.stream_version(id).await.expect("traced version"), 6);
        // Every connection of the pool at once (all four, opened if need be).
        let mut connections = Vec::new();
        for _ in 0..4 {
            connections.push(store.pool().acquire().await.expect("acquire"));
        }
        let cached = connections
            .iter_mut()
            .map(|c| c.cached_statements_size())
            .sum();
        drop(connections);
        store.pool().close().await;
        cached
    }
}
