//! Real replicas of the client-test cluster on loopback, for the replica tests (docs/reference.md §11):
//! a streaming hot standby made with `pg_basebackup -R`, a second cluster that subscribes to the
//! store's tables by logical replication, and the primary's `wal_level = logical` that the
//! subscription needs.
//!
//! Why real clusters: the store's gap safety on a replica depends on what PostgreSQL actually
//! ships (WAL replayed in commit order on a standby, whole transactions applied in commit order
//! on a subscriber, shared memory that never travels). A mock would only restate our
//! assumptions. The clusters follow `scripts/cluster.sh`'s conventions (run as the `postgres`
//! user when we are root, `MALLOC_PERTURB_`, the preloaded library, a log checked for crashes)
//! because they are started and stopped through that script, with their own directory under
//! `<repo>/target/` and their own port. Each value here stops its cluster (or drops its
//! subscription) when dropped, also when a test panics, so a failed run leaves no server running
//! and no replication slot pinning WAL on the primary.
//!
//! The ports default to [`STANDBY_PORT`] / [`SUBSCRIBER_PORT`]; `ES_STANDBY_PORT` /
//! `ES_SUBSCRIBER_PORT` move them (and the replicas' directories, which are derived from the
//! port), so two suites on two primaries can run their replica tests at the same time. The
//! failover tests also stop the primary on purpose ([`PrimaryStopped`]) and start it again.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use crate::{PG_USER, config, describe, pg_bin, port};

/// Default port of the streaming standby (`ES_STANDBY_PORT` overrides it).
pub const STANDBY_PORT: u16 = 28821;
/// Default port of the logical-replication subscriber cluster (`ES_SUBSCRIBER_PORT` overrides it).
pub const SUBSCRIBER_PORT: u16 = 28822;

/// The port in the environment variable `var`, else `default`.
fn port_from_env(var: &str, default: u16) -> u16 {
    match std::env::var(var) {
        Ok(raw) if !raw.trim().is_empty() => raw
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var} is not a port number: {raw:?}")),
        _ => default,
    }
}

/// The standby's port: `ES_STANDBY_PORT`, else [`STANDBY_PORT`].
pub fn standby_port() -> u16 {
    port_from_env("ES_STANDBY_PORT", STANDBY_PORT)
}

/// The subscriber's port: `ES_SUBSCRIBER_PORT`, else [`SUBSCRIBER_PORT`].
pub fn subscriber_port() -> u16 {
    port_from_env("ES_SUBSCRIBER_PORT", SUBSCRIBER_PORT)
}

/// The directory of the replica `role` on `port`: `<repo>/target/es-replica-<role>` on the
/// default port (as before the ports could move), `<repo>/target/es-replica-<role>-<port>` on
/// another, so runs on different ports never share (or delete) each other's cluster.
fn replica_dir(role: &str, port: u16, default_port: u16) -> PathBuf {
    if port == default_port {
        crate::repo_dir().join(format!("target/es-replica-{role}"))
    } else {
        crate::repo_dir().join(format!("target/es-replica-{role}-{port}"))
    }
}

/// Serializes the tests that use the replicas: they share the replicas' directories and ports
/// (and one of them restarts the primary), so two of them must never overlap, even when
/// `cargo test` runs without `--test-threads=1`. Hold the guard for the whole test.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A test that panicked while holding the lock has already cleaned up through its guards.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a replica may take to start, to accept connections or to finish its initial copy.
/// Generous: it bounds a hung test, it is not a performance assertion.
const PATIENCE: Duration = Duration::from_secs(60);

/// Why the replica tests must run on their own cluster (for [`crate::ensure_own_cluster`]).
const PRIMARY_RESTART: &str = "the replica tests restart the primary";

/// Whether this process runs as root (then PostgreSQL's programs must run as `postgres`).
fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// A command that runs `program` as the clusters' owner, like `as_pg` in `scripts/cluster.sh`.
fn as_pg(program: &str) -> Command {
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    };
    command
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    command
}

/// Hands a directory we created to the `postgres` user (only needed when we are root).
fn chown_to_postgres(path: &Path) {
    if !running_as_root() {
        return;
    }
    let status = Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .expect("cannot run chown");
    assert!(status.success(), "chown postgres {} failed", path.display());
}

/// Panics with the program's output unless it succeeded.
fn expect_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `scripts/cluster.sh <args>` for the cluster in `dir` on `port`, with the library
/// preloaded and no extra settings (whatever the caller's environment says).
fn cluster_script(dir: &Path, port: u16, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(crate::repo_dir().join("scripts/cluster.sh"))
        .args(args)
        .env("ES_CLUSTER_DIR", dir)
        .env("ES_PORT", port.to_string())
        .env("ES_PRELOAD", "1")
        .env("ES_EXTRA_CONF", "")
        .output()
        .expect("cannot run scripts/cluster.sh")
}

/// Connection settings for `dbname` on a cluster of this machine listening on 127.0.0.1:`port`
/// (loopback TCP, as a replica's clients would come over the network).
pub fn loopback_config(port: u16, dbname: &str) -> postgres::Config {
    let mut config = postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(PG_USER)
        .dbname(dbname)
        .application_name("event_store_replica_tests")
        .connect_timeout(Duration::from_secs(10))
        .options("-c statement_timeout=120s");
    config
}

/// Connects to `dbname` on 127.0.0.1:`port`, retrying while the server is still starting.
fn connect_loopback(port: u16, dbname: &str) -> Client {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match loopback_config(port, dbname).connect(NoTls) {
            Ok(client) => return client,
            Err(err) if Instant::now() >= deadline => panic!(
                "cannot connect to {dbname} on port {port}: {}",
                describe(&err)
            ),
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Restarts the primary with `scripts/cluster.sh restart` (the environment run.sh exported).
fn restart_primary() {
    let out = Command::new("bash")
        .arg(crate::repo_dir().join("scripts/cluster.sh"))
        .arg("restart")
        .output()
        .expect("cannot run scripts/cluster.sh");
    expect_success("scripts/cluster.sh restart (the primary)", &out);
}

/// How [`PrimaryStopped::stop`] takes the primary down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// `pg_ctl stop -m fast`: sessions are ended, open transactions roll back, a shutdown
    /// checkpoint is written (a planned switchover).
    Fast,
    /// `pg_ctl stop -m immediate`: every process quits at once, as in a crash or a power cut of
    /// the server; open transactions simply never commit.
    Immediate,
}

/// The primary (the client-test cluster that run.sh started) taken down on purpose, as in a
/// failover. Dropping the value starts it again (also when a test panics), so the later tests,
/// the test databases' `DROP DATABASE` and the replication slots' cleanup find it running.
/// Declare it after every value whose drop needs the primary, so it is dropped first.
pub struct PrimaryStopped {
    /// Whether the primary is still down (cleared by [`PrimaryStopped::start`]).
    down: bool,
}

impl PrimaryStopped {
    /// Stops the primary `client` is connected to with `scripts/cluster.sh stop` or
    /// `stop-immediate` (the environment run.sh exported), after checking that it is the cluster
    /// of `ES_CLUSTER_DIR`, and checks that it no longer accepts connections.
    pub fn stop(client: &mut Client, mode: Shutdown) -> PrimaryStopped {
        crate::ensure_own_cluster(client, PRIMARY_RESTART);
        let command = match mode {
            Shutdown::Fast => "stop",
            Shutdown::Immediate => "stop-immediate",
        };
        let out = Command::new("bash")
            .arg(crate::repo_dir().join("scripts/cluster.sh"))
            .arg(command)
            .output()
            .expect("cannot run scripts/cluster.sh");
        let stopped = PrimaryStopped { down: true };
        expect_success(&format!("scripts/cluster.sh {command} (the primary)"), &out);
        let still_up = config("postgres")
            .connect_timeout(Duration::from_secs(2))
            .connect(NoTls)
            .is_ok();
        assert!(
            !still_up,
            "the primary still accepts connections after {command}"
        );
        stopped
    }

    /// Starts the primary again (`scripts/cluster.sh start`, with crash recovery after an
    /// immediate stop).
    pub fn start(mut self) {
        self.start_again().unwrap_or_else(|e| panic!("{e}"));
    }

    fn start_again(&mut self) -> Result<(), String> {
        if !self.down {
            return Ok(());
        }
        self.down = false;
        let out = Command::new("bash")
            .arg(crate::repo_dir().join("scripts/cluster.sh"))
            .arg("start")
            .output()
            .map_err(|e| format!("cannot run scripts/cluster.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "starting the primary again failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for PrimaryStopped {
    fn drop(&mut self) {
        // Never panic in drop (it may run while unwinding): report instead.
        if let Err(err) = self.start_again() {
            eprintln!("warning: {err}");
        }
    }
}

/// The primary running with `wal_level = logical`, which a logical subscription needs (PG 15's
/// default, `replica`, is enough for a streaming standby).
///
/// `scripts/cluster.sh` leaves `wal_level` at its default, so when it is not `logical` this sets
/// it with `ALTER SYSTEM` and restarts the primary; dropping the value resets it and restarts the
/// primary again, so the other tests (and the benchmarks' view of the WAL volume) see the cluster
/// as run.sh made it. Create it before any [`crate::TestDb`]: the restart ends every session.
pub struct LogicalWalLevel {
    /// Whether this value changed the setting (and must put it back).
    changed: bool,
}

impl LogicalWalLevel {
    /// Makes sure the primary runs with `wal_level = logical` and can serve replicas.
    pub fn ensure() -> LogicalWalLevel {
        let mut admin = crate::connect_with_retry("postgres", PATIENCE)
            .unwrap_or_else(|e| panic!("cannot connect to the primary: {}", describe(&e)));
        // A standby and a subscription each hold a WAL sender (the subscription's initial copy
        // briefly one more per table); PG 15's default of 10 is plenty, but a cluster configured
        // with 0 could not serve them at all.
        for setting in ["max_wal_senders", "max_replication_slots"] {
            let value: String = admin
                .query_one(&format!("SHOW {setting}"), &[])
                .unwrap_or_else(|e| panic!("SHOW {setting}: {}", describe(&e)))
                .get(0);
            let value: i64 = value.parse().unwrap_or(0);
            assert!(
                value >= 4,
                "the primary runs with {setting} = {value}; the replica tests need at least 4"
            );
        }
        let level: String = admin
            .query_one("SHOW wal_level", &[])
            .expect("SHOW wal_level")
            .get(0);
        if level == "logical" {
            return LogicalWalLevel { changed: false };
        }
        crate::ensure_own_cluster(&mut admin, PRIMARY_RESTART);
        admin
            .batch_execute("ALTER SYSTEM SET wal_level = 'logical'")
            .unwrap_or_else(|e| panic!("ALTER SYSTEM SET wal_level: {}", describe(&e)));
        drop(admin);
        restart_primary();
        let mut admin = crate::connect_with_retry("postgres", PATIENCE)
            .unwrap_or_else(|e| panic!("cannot reconnect to the primary: {}", describe(&e)));
        let level: String = admin
            .query_one("SHOW wal_level", &[])
            .expect("SHOW wal_level")
            .get(0);
        assert_eq!(level, "logical", "the primary did not take wal_level");
        LogicalWalLevel { changed: true }
    }
}

impl Drop for LogicalWalLevel {
    fn drop(&mut self) {
        if !self.changed {
            return;
        }
        // Never panic in drop (it may run while unwinding): report and leave the setting.
        let reset = crate::connect_with_retry("postgres", PATIENCE).and_then(|mut admin| {
            // A server with a logical slot refuses to start below wal_level = logical: keep the
            // setting if a subscription's slot survived (the slot itself is the real leak).
            let slots: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'",
                    &[],
                )?
                .get(0);
            if slots > 0 {
                eprintln!(
                    "warning: {slots} logical replication slot(s) left on the primary; \
                     wal_level stays logical"
                );
                return Ok(false);
            }
            admin.batch_execute("ALTER SYSTEM RESET wal_level")?;
            Ok(true)
        });
        match reset {
            Ok(true) => {
                let out = Command::new("bash")
                    .arg(crate::repo_dir().join("scripts/cluster.sh"))
                    .arg("restart")
                    .output();
                if !matches!(&out, Ok(o) if o.status.success()) {
                    eprintln!("warning: restarting the primary to reset wal_level failed: {out:?}");
                }
            }
            Ok(false) => {}
            Err(err) => eprintln!("warning: could not reset wal_level: {}", describe(&err)),
        }
    }
}

/// A replica cluster of this machine: its directory under `<repo>/target/`, its port, and
/// whether it still runs. Dropping it stops the server (`pg_ctl stop -m fast`).
pub struct Replica {
    /// What it is, for messages (`standby`, `subscriber`).
    role: &'static str,
    /// The cluster directory (`data/`, `run/`, `postgres.log`), as in scripts/cluster.sh.
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    port: u16,
    /// Whether the server may still be running (cleared by [`Replica::stop`]).
    running: bool,
}

impl Replica {
    /// Stops and deletes a leftover cluster in `dir` (from an earlier run that was killed), so
    /// every run starts from a clean copy and a fresh log.
    fn clear(dir: &Path, port: u16) {
        if dir.join("data/PG_VERSION").exists() {
            let out = cluster_script(dir, port, &["stop"]);
            expect_success("scripts/cluster.sh stop (a leftover replica)", &out);
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot remove {}: {e}", dir.display()));
        }
    }

    /// Makes a streaming hot standby of the test cluster with `pg_basebackup -R` (over loopback
    /// TCP, WAL streamed during the copy, a fast checkpoint) in `<repo>/target/es-replica-standby`
    /// and starts it on [`standby_port`] (see [`replica_dir`] for another port). `-R` writes
    /// `primary_conninfo` and `standby.signal`, so the copy comes up as a hot standby that
    /// streams from the primary. No replication slot is kept: nothing is left on the primary
    /// when the standby goes away, and the primary's `max_wal_size` (4 GB) keeps the WAL a short
    /// test needs.
    pub fn standby() -> Replica {
        let own_port = standby_port();
        let dir = replica_dir("standby", own_port, STANDBY_PORT);
        Replica::clear(&dir, own_port);
        std::fs::create_dir_all(dir.join("run"))
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        chown_to_postgres(&dir);
        chown_to_postgres(&dir.join("run"));
        let data = dir.join("data");
        let out = as_pg(&pg_bin("pg_basebackup"))
            .arg("--host=127.0.0.1")
            .arg(format!("--port={}", port()))
            .arg(format!("--username={PG_USER}"))
            .arg("--pgdata")
            .arg(&data)
            .args([
                "--write-recovery-conf",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-sync",
                "--label=event_store replica tests",
            ])
            .output()
            .expect("cannot run pg_basebackup");
        expect_success("pg_basebackup", &out);
        // The copy carries the primary's postgresql.conf: its port and socket directory. Later
        // lines win, so appending (the file keeps its owner) moves the standby to its own.
        // hot_standby_feedback keeps the primary's VACUUM from removing rows a standby query
        // still reads, so no reader query is cancelled by a replay conflict.
        let mut conf = OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open the standby's postgresql.conf");
        writeln!(
            conf,
            "\n# event_store replica tests: the standby's own port and sockets\n\
             port = {own_port}\n\
             unix_socket_directories = '{}'\n\
             hot_standby = on\n\
             hot_standby_feedback = on",
            dir.join("run").display()
        )
        .expect("write the standby's postgresql.conf");
        drop(conf);
        let replica = Replica {
            role: "standby",
            dir,
            port: own_port,
            running: true,
        };
        replica.start();
        replica
    }

    /// Makes a fresh cluster (initdb, the library preloaded) in
    /// `<repo>/target/es-replica-subscriber` and starts it on [`subscriber_port`] (see
    /// [`replica_dir`] for another port): the target of a logical subscription.
    pub fn fresh_subscriber() -> Replica {
        let own_port = subscriber_port();
        let dir = replica_dir("subscriber", own_port, SUBSCRIBER_PORT);
        Replica::clear(&dir, own_port);
        let replica = Replica {
            role: "subscriber",
            dir,
            port: own_port,
            running: true,
        };
        replica.start();
        replica
    }

    /// `scripts/cluster.sh start` for this cluster (it runs initdb when there is no data yet).
    fn start(&self) {
        let out = cluster_script(&self.dir, self.port, &["start"]);
        expect_success(&format!("starting the {}", self.role), &out);
    }

    /// The port the replica listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server log's path.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A new connection to `dbname` on the replica, retrying while it starts up.
    pub fn connect(&self, dbname: &str) -> Client {
        connect_loopback(self.port, dbname)
    }

    /// Waits until the standby has replayed the primary's WAL up to the primary's current
    /// insert position (taken now), so everything committed before this call is visible there.
    pub fn wait_for_replay(&self, primary: &mut Client, standby: &mut Client) {
        let target: String = primary
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .expect("pg_current_wal_insert_lsn")
            .get(0);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let caught_up: bool = standby
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&target],
                )
                .unwrap_or_else(|e| panic!("pg_last_wal_replay_lsn: {}", describe(&e)))
                .get(0);
            if caught_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the {} did not replay the primary's WAL up to {target} within {PATIENCE:?}",
                self.role
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server and fails when its log shows a process terminated by a signal or a
    /// PANIC (as `scripts/cluster.sh check-log` does for the primary; the log is fresh, every
    /// run makes a new cluster). Returns the error text instead of panicking, so a caller can
    /// report every replica before asserting.
    pub fn stop(&mut self) -> Result<(), String> {
        if self.running {
            self.running = false;
            let out = cluster_script(&self.dir, self.port, &["stop"]);
            if !out.status.success() {
                return Err(format!(
                    "stopping the {} failed: {}",
                    self.role,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let out = cluster_script(&self.dir, self.port, &["check-log", "0"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "the {}'s log shows a crash: {}",
                self.role,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if self.running {
            // Never panic in drop (it may run while unwinding): report instead.
            if let Err(err) = self.stop() {
                eprintln!("warning: {err}");
            }
        }
    }
}

/// A logical subscription on the subscriber cluster to a publication of the store's tables on
/// the primary. Dropping it drops the subscription (which drops its slot on the primary) and, if
/// that failed, the slot directly: a leftover logical slot would pin the primary's WAL, block
/// `DROP DATABASE` of the test database and keep the primary from starting at `wal_level =
/// replica`.
pub struct LogicalSubscription {
    /// The subscription's (and its slot's) name.
    name: String,
    /// The subscriber's port.
    subscriber_port: u16,
    /// The database on the subscriber that holds the subscription.
    subscriber_db: String,
    /// The tables published, as `schema.table`.
    tables: Vec<String>,
}

impl LogicalSubscription {
    /// Publishes `tables` (each `schema.table`) of database `primary_db` on the primary, creates
    /// database `primary_db` on the subscriber with `CREATE EXTENSION event_store` (so its
    /// tables exist and are empty), subscribes it to the publication over loopback and waits for
    /// the initial copy of every table to finish.
    pub fn create(
        subscriber: &Replica,
        primary_db: &str,
        tables: &[String],
    ) -> LogicalSubscription {
        // The slot lives on the primary, whose slot names are cluster-wide: the test database's
        // name (unique per run) keeps it apart from any other run's.
        let name = format!("sub_{primary_db}");
        let mut primary = config(primary_db)
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the primary: {}", describe(&e)));
        primary
            .batch_execute(&format!(
                "CREATE PUBLICATION {name} FOR TABLE {}",
                tables.join(", ")
            ))
            .unwrap_or_else(|e| panic!("CREATE PUBLICATION: {}", describe(&e)));

        let mut admin = subscriber.connect("postgres");
        admin
            .batch_execute(&format!("CREATE DATABASE {primary_db} TEMPLATE template0"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE on the subscriber: {}", describe(&e)));
        let subscription = LogicalSubscription {
            name,
            subscriber_port: subscriber.port(),
            subscriber_db: primary_db.to_owned(),
            tables: tables.to_vec(),
        };
        let mut client = subscriber.connect(primary_db);
        client
            .batch_execute("CREATE EXTENSION event_store")
            .unwrap_or_else(|e| {
                panic!(
                    "CREATE EXTENSION event_store on the subscriber: {}",
                    describe(&e)
                )
            });
        client
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION {0} CONNECTION 'host=127.0.0.1 port={1} user={PG_USER} \
                 dbname={primary_db} application_name={0}' PUBLICATION {0}",
                subscription.name,
                port()
            ))
            .unwrap_or_else(|e| panic!("CREATE SUBSCRIPTION: {}", describe(&e)));
        // Until every table reached state 'r' (ready) the subscriber may still be copying.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let pending: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s \
                     ON s.oid = r.srsubid WHERE s.subname = $1 AND r.srsubstate <> 'r'",
                    &[&subscription.name],
                )
                .expect("pg_subscription_rel")
                .get(0);
            let known: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s \
                     ON s.oid = r.srsubid WHERE s.subname = $1",
                    &[&subscription.name],
                )
                .expect("pg_subscription_rel")
                .get(0);
            if pending == 0 && known == tables.len() as i64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the subscription's initial copy did not finish within {PATIENCE:?} \
                 ({pending} of {known} tables pending)"
            );
            thread::sleep(Duration::from_millis(50));
        }
        subscription
    }

    /// The subscription's name (also its publication's and its slot's on the primary).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tables the subscription receives.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    /// Waits until the subscription has applied the primary's WAL up to the primary's current
    /// position (taken now): everything committed before this call is on the subscriber.
    pub fn wait_for_apply(&self, primary: &mut Client) {
        let target: String = primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .expect("pg_current_wal_lsn")
            .get(0);
        let deadline = Instant::now() + PATIENCE;
        loop {
            // confirmed_flush_lsn is what the subscriber reported as applied (and flushed).
            let applied: bool = primary
                .query_one(
                    "SELECT coalesce(bool_and(confirmed_flush_lsn >= $2::text::pg_lsn), false) \
                     FROM pg_replication_slots WHERE slot_name = $1",
                    &[&self.name, &target],
                )
                .expect("pg_replication_slots")
                .get(0);
            if applied {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the subscriber did not apply the primary's WAL up to {target} within {PATIENCE:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LogicalSubscription {
    fn drop(&mut self) {
        // DROP SUBSCRIPTION connects to the primary and drops the slot there too. (IF EXISTS: a
        // failover test drops it itself, as a DBA does, and leaves only the slot to clean up.)
        let dropped = loopback_config(self.subscriber_port, &self.subscriber_db)
            .connect(NoTls)
            .and_then(|mut c| {
                c.batch_execute(&format!("DROP SUBSCRIPTION IF EXISTS {}", self.name))
            });
        if let Err(err) = dropped {
            eprintln!(
                "warning: DROP SUBSCRIPTION {} failed ({}); dropping its slot on the primary",
                self.name,
                describe(&err)
            );
        }
        // Whatever happened above: no slot of ours may survive on the primary. A slot still
        // held by a WAL sender cannot be dropped, so end that sender first and retry briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let result = crate::connect_with_retry("postgres", PATIENCE).and_then(|mut c| {
                c.query_one(
                    "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots \
                     WHERE slot_name = $1 AND active_pid IS NOT NULL",
                    &[&self.name],
                )?;
                c.query_one(
                    "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots \
                     WHERE slot_name = $1 AND NOT active",
                    &[&self.name],
                )?;
                let left: i64 = c
                    .query_one(
                        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                        &[&self.name],
                    )?
                    .get(0);
                Ok(left)
            });
            match result {
                Ok(0) => return,
                Ok(_) | Err(_) if Instant::now() >= deadline => {
                    eprintln!(
                        "warning: replication slot {} may be left on the primary: {}",
                        self.name,
                        match result {
                            Err(e) => describe(&e),
                            Ok(n) => format!("{n} left"),
                        }
                    );
                    return;
                }
                _ => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// The store's tables a logical replica receives, as docs/replicas.md's publication lists them
/// (the log, the streams, the snapshots, the watermark and the subscriptions' state), those of them
/// this build has. `es.watermark` is what carries gap safety to the subscriber.
pub fn published_tables(client: &mut Client) -> Vec<String> {
    let wanted = [
        "events",
        "streams",
        "snapshots",
        "watermark",
        "subscription_config",
        "subscription_partitions",
        "subscription_consumers",
        "parked_events",
    ];
    client
        .query(
            "SELECT relname::text FROM pg_class WHERE relnamespace = 'es'::regnamespace \
             AND relkind = 'r' AND relname = ANY($1) ORDER BY array_position($1, relname::text)",
            &[&&wanted[..]],
        )
        .expect("the store's tables")
        .iter()
        .map(|r| format!("es.{}", r.get::<_, String>(0)))
        .collect()
}
