//! Shared helpers of the client-side test suite of the `event_store` extension.
//!
//! The scenarios under `tests/` talk to a running PostgreSQL cluster (15 or 18) that has the extension
//! installed (normally the throwaway cluster that `tests/client/run.sh` starts). This module holds
//! what they all need: the connection settings read from `ES_TEST_PGHOST` / `ES_TEST_PGPORT`, a
//! fresh uniquely named database per test with `CREATE EXTENSION event_store` (dropped again when
//! the test ends, even when it fails), and small wrappers around the SQL API and its errors, so the
//! scenario files read as the property they check.

pub mod otlp;
pub mod replica;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use postgres::{Client, Error, NoTls};
pub use uuid::Uuid;

/// The user every test connects as (the cluster is initialised with `-U postgres`, trust auth).
pub const PG_USER: &str = "postgres";

/// Upper bound of any single statement a test sends, so a hung server cannot hang the suite.
const STATEMENT_TIMEOUT: &str = "120s";

/// Where the client programs (`pg_dump`, `pg_restore`) of the server's version live: `PG_BIN`
/// (scripts/test.sh points it at its copy of 15 or 18), else the machine's PostgreSQL 15.
pub fn pg_bin(program: &str) -> String {
    let dir = std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned());
    format!("{dir}/{program}")
}

/// The major version of the installation in [`pg_bin`] (`pg_config --version`: "PostgreSQL 18.6").
pub fn pg_major() -> u32 {
    let out = Command::new(pg_bin("pg_config"))
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", pg_bin("pg_config")));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("pg_config --version printed {text:?}"))
}

/// Whether the server's installation has the loadable module `name` (e.g. `wal2json`) in its
/// library directory.
pub fn has_library(name: &str) -> bool {
    let out = Command::new(pg_bin("pg_config"))
        .arg("--pkglibdir")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", pg_bin("pg_config")));
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    std::path::Path::new(&dir)
        .join(format!("{name}.so"))
        .exists()
}

/// Says on the terminal that a test did not run and why. Written to stderr directly: the test
/// harness hides what a passing test prints with `eprintln!`, and a skip must be seen.
pub fn report_skip(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// The server's host: a unix socket directory (starts with `/`) or `127.0.0.1`, from `ES_TEST_PGHOST`.
pub fn host() -> String {
    std::env::var("ES_TEST_PGHOST").unwrap_or_else(|_| {
        panic!(
            "ES_TEST_PGHOST is not set: run the suite with tests/client/run.sh, or export \
             ES_TEST_PGHOST/ES_TEST_PGPORT from `scripts/cluster.sh env`"
        )
    })
}

/// The server's port, from `ES_TEST_PGPORT`.
pub fn port() -> u16 {
    let raw = std::env::var("ES_TEST_PGPORT").unwrap_or_else(|_| {
        panic!("ES_TEST_PGPORT is not set: run the suite with tests/client/run.sh")
    });
    raw.trim()
        .parse()
        .unwrap_or_else(|_| panic!("ES_TEST_PGPORT is not a port number: {raw:?}"))
}

/// Connection settings for database `dbname` on the test cluster.
///
/// Sessions run with `synchronous_commit = on` although the throwaway cluster defaults to `off`:
/// the crash test restarts the server, and an asynchronous commit (even `CREATE EXTENSION`) may
/// still sit in the WAL buffers that a crash restart discards. With `fsync = off` on that cluster
/// this costs a `write()`, not a disk flush.
pub fn config(dbname: &str) -> postgres::Config {
    let mut config = postgres::Config::new();
    config
        .host(&host())
        .port(port())
        .user(PG_USER)
        .dbname(dbname)
        .application_name("event_store_client_tests")
        .connect_timeout(Duration::from_secs(10))
        .options(&format!(
            "-c statement_timeout={STATEMENT_TIMEOUT} -c synchronous_commit=on"
        ));
    config
}

/// Opens a connection to `dbname`, retrying for up to `within` (used after a crash restart,
/// while the postmaster is still recovering and refuses connections).
pub fn connect_with_retry(dbname: &str, within: Duration) -> Result<Client, Error> {
    let deadline = Instant::now() + within;
    loop {
        let attempt = config(dbname).connect(NoTls).and_then(|mut client| {
            client.simple_query("SELECT 1")?;
            Ok(client)
        });
        match attempt {
            Ok(client) => return Ok(client),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Opens a connection to `dbname` once the crash restart that killing backend `killed` causes
/// is over, retrying for up to `within`. Why not [`connect_with_retry`] alone: the postmaster
/// notices the death a moment after the kill, so a connection can be made before the restart
/// and be closed by it. A killed backend's entry stays in `pg_stat_activity` until the restart
/// resets shared memory, so a session that no longer sees it was started after the restart.
pub fn connect_after_kill(dbname: &str, killed: i32, within: Duration) -> Result<Client, Error> {
    let deadline = Instant::now() + within;
    loop {
        let mut client =
            connect_with_retry(dbname, deadline.saturating_duration_since(Instant::now()))?;
        match client.query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
            &[&killed],
        ) {
            Ok(row) if !row.get::<_, bool>(0) => return Ok(client),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Ok(_) | Err(_) => thread::sleep(Duration::from_millis(50)),
        }
        assert!(
            Instant::now() < deadline,
            "backend {killed} is still in pg_stat_activity {within:?} after its kill: no crash restart"
        );
    }
}

/// The SQLSTATE of a server error (`None` for client-side errors such as a closed connection).
pub fn sqlstate(err: &Error) -> Option<&str> {
    err.code().map(|code| code.code())
}

/// A one-line description of an error with its SQLSTATE, message, DETAIL and HINT, for assertion
/// messages.
pub fn describe(err: &Error) -> String {
    match err.as_db_error() {
        Some(db) => {
            let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" DETAIL: {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!(" HINT: {hint}"));
            }
            text
        }
        None => format!("client error: {err}"),
    }
}

/// Runs a statement that must fail with SQLSTATE `code`, panicking with the statement and what
/// it did otherwise; returns the error, for the assertions on its message and DETAIL
/// ([`message_and_detail`], [`describe`]).
pub fn expect_sqlstate(
    client: &mut impl postgres::GenericClient,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    code: &str,
) -> Error {
    match client.query(sql, params) {
        Ok(rows) => panic!(
            "{sql} succeeded ({} rows), expected SQLSTATE {code}",
            rows.len()
        ),
        Err(err) => {
            assert_eq!(
                sqlstate(&err),
                Some(code),
                "{sql}: expected SQLSTATE {code}, got {}",
                describe(&err)
            );
            err
        }
    }
}

/// A server error's message and DETAIL (`""` without one); panics on a client-side error.
pub fn message_and_detail(err: &Error) -> (String, String) {
    let db = err.as_db_error().expect("a server error");
    (
        db.message().to_owned(),
        db.detail().unwrap_or("").to_owned(),
    )
}

/// `es.wait_for_projection(name, position, timeout_ms)`: whether projection `name` reached
/// `position` within `timeout_ms`; panics when the call fails.
pub fn wait_for_projection(
    client: &mut impl postgres::GenericClient,
    name: &str,
    position: i64,
    timeout_ms: i32,
) -> bool {
    client
        .query_one(
            "SELECT es.wait_for_projection($1, $2, $3)",
            &[&name, &position, &timeout_ms],
        )
        .unwrap_or_else(|e| {
            panic!(
                "es.wait_for_projection({name}, {position}): {}",
                describe(&e)
            )
        })
        .get(0)
}

/// Panics unless `ES_CLUSTER_DIR` / `ES_PORT` (exported by tests/client/run.sh) name the server
/// `client` is connected to. A test that stops or restarts that cluster through
/// `scripts/cluster.sh` calls it first: the script's default is the demo cluster, which a test
/// must never touch. `why` completes the message when `ES_CLUSTER_DIR` is missing ("this test
/// restarts the cluster").
pub fn ensure_own_cluster(client: &mut Client, why: &str) {
    let dir = std::env::var("ES_CLUSTER_DIR").unwrap_or_else(|_| {
        panic!(
            "ES_CLUSTER_DIR is not set: {why}, run it with tests/client/run.sh or export \
             ES_CLUSTER_DIR/ES_PORT of the cluster under test"
        )
    });
    let cluster_port: u16 = std::env::var("ES_PORT")
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("ES_PORT is not set to a port number"));
    assert_eq!(
        cluster_port,
        port(),
        "ES_PORT must be the port the tests connect to (ES_TEST_PGPORT)"
    );
    let data_dir: String = client
        .query_one("SELECT current_setting('data_directory')", &[])
        .expect("data_directory")
        .get(0);
    let canonical = |p: &std::path::Path| {
        std::fs::canonicalize(p).unwrap_or_else(|e| panic!("cannot resolve {}: {e}", p.display()))
    };
    assert_eq!(
        canonical(std::path::Path::new(&data_dir)),
        canonical(&std::path::Path::new(&dir).join("data")),
        "the server under test is not the cluster in ES_CLUSTER_DIR"
    );
}

/// Calls `es.append_events(stream, expected_version, events)` with the events given as JSON texts;
/// `expected_version = None` sends SQL NULL (no check). Returns the stream's new version.
pub fn append(
    client: &mut impl postgres::GenericClient,
    stream: Uuid,
    expected_version: Option<i64>,
    events: &[String],
) -> Result<i64, Error> {
    let row = client.query_one(
        "SELECT es.append_events($1, $2, $3::text[]::jsonb[])",
        &[&stream, &expected_version, &events],
    )?;
    Ok(row.get(0))
}

/// `es.stream_version(stream)`.
pub fn stream_version(client: &mut impl postgres::GenericClient, stream: Uuid) -> i64 {
    client
        .query_one("SELECT es.stream_version($1)", &[&stream])
        .unwrap_or_else(|e| panic!("es.stream_version failed: {}", describe(&e)))
        .get(0)
}

/// Runs a query whose single column is a `bigint` and collects it (e.g. positions or versions).
pub fn bigints(
    client: &mut impl postgres::GenericClient,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Vec<i64> {
    client
        .query(sql, params)
        .unwrap_or_else(|e| panic!("{sql} failed: {}", describe(&e)))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Runs a query whose single column is `text` (NULL read as `None`) and collects it; used to
/// compare whole rows rendered with `to_jsonb(row)::text`.
pub fn texts(client: &mut impl postgres::GenericClient, sql: &str) -> Vec<Option<String>> {
    client
        .query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql} failed: {}", describe(&e)))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Sends SIGKILL to a process (a server backend) by pid. The tests run as root or as the cluster's
/// owner, so they may signal the `postgres` user's processes. The pid is first added to the file
/// `ES_KILLED_PIDS` names (set by tests/client/run.sh), so `scripts/cluster.sh check-log` knows this
/// death was asked for and does not count it as a crash of the server.
pub fn kill_9(pid: i32) {
    if let Ok(path) = std::env::var("ES_KILLED_PIDS") {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        writeln!(file, "{pid}").unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }
    let status = Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill -9 {pid} failed: {status}");
}

/// A throwaway database on the test cluster, uniquely named per test, dropped (with `FORCE`) when
/// the value goes out of scope.
pub struct TestDb {
    name: String,
}

impl TestDb {
    /// Creates a fresh database and runs `CREATE EXTENSION event_store` in it. `tag` (lowercase
    /// letters, digits, `_`) goes into the name, to find a leftover database's test.
    pub fn new(tag: &str) -> TestDb {
        let db = TestDb::empty(tag);
        let mut client = db.connect();
        if let Err(err) = client.batch_execute("CREATE EXTENSION event_store") {
            panic!(
                "CREATE EXTENSION event_store failed in {}: {} (is the extension installed? \
                 bash scripts/install.sh)",
                db.name,
                describe(&err)
            );
        }
        db
    }

    /// Creates a fresh empty database, without the extension (a target for `pg_restore`).
    pub fn empty(tag: &str) -> TestDb {
        let name = unique_name(tag);
        let mut admin = connect_with_retry("postgres", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {}", describe(&e)));
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {}", describe(&e)));
        TestDb { name }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new connection to the database (panics with the server's message when it cannot connect).
    pub fn connect(&self) -> Client {
        config(&self.name)
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {}", self.name, describe(&e)))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // A fresh admin connection each time: a crash test may have restarted the server.
        let dropped = connect_with_retry("postgres", Duration::from_secs(30)).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
        });
        if let Err(err) = dropped {
            // Never panic in drop (it may run while unwinding): leave a note instead.
            eprintln!(
                "warning: could not drop test database {}: {}",
                self.name,
                describe(&err)
            );
        }
    }
}

/// `es_ct_<tag>_<pid>_<counter>_<time>`: unique across concurrent test processes and reruns.
fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("es_ct_{tag}_{}_{n}_{nanos:x}", std::process::id())
}

/// Verifies the store's physical integrity with `amcheck`: every B-tree of `es.events` and
/// `es.streams` is structurally sound and holds an entry for every heap tuple
/// (`heapallindexed`), and the heaps have no corruption. The append hot path writes rows and
/// index entries itself, so concurrency tests end with this check.
pub fn verify_store(client: &mut Client) {
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        .unwrap_or_else(|e| panic!("CREATE EXTENSION amcheck: {}", describe(&e)));
    let checked: i64 = client
        .query_one(
            "SELECT count(bt_index_check(x.indexrelid, true)::text) + count(*) FROM pg_index x \
             WHERE x.indrelid IN ('es.events'::regclass, 'es.streams'::regclass)",
            &[],
        )
        .unwrap_or_else(|e| panic!("amcheck of the es indexes failed: {}", describe(&e)))
        .get(0);
    assert!(
        checked >= 4,
        "expected at least the four es indexes to be checked"
    );
    for table in ["es.events", "es.streams"] {
        let problems: i64 = client
            .query_one(
                "SELECT count(*) FROM verify_heapam($1::text::regclass)",
                &[&table],
            )
            .unwrap_or_else(|e| panic!("verify_heapam({table}): {}", describe(&e)))
            .get(0);
        assert_eq!(problems, 0, "verify_heapam({table}) reported corruption");
    }
}

/// The repository's root directory (this crate lives in `tests/client`).
pub fn repo_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    dir.canonicalize().unwrap_or(dir)
}

/// The driver snippets' runtimes (tests/drivers): `python` is the venv `target/venv` and `node`
/// needs `tests/drivers/node/node_modules`, both made by scripts/setup.sh. Panics with a clear
/// message when what `program` needs is missing; returns the program to run.
pub fn driver_program(program: &str) -> std::path::PathBuf {
    let repo = repo_dir();
    let (exe, needs, what) = match program {
        "python" => {
            let exe = repo.join("target/venv/bin/python");
            (
                exe.clone(),
                exe,
                "the Python venv target/venv (psycopg, asyncpg)",
            )
        }
        "node" => (
            std::path::PathBuf::from("node"),
            repo.join("tests/drivers/node/node_modules/pg"),
            "tests/drivers/node/node_modules (node-postgres; `npm ci` there)",
        ),
        other => panic!("unknown driver runtime {other:?}"),
    };
    assert!(
        needs.exists(),
        "{} is missing: {what} is made by `bash scripts/setup.sh`",
        needs.display()
    );
    exe
}

/// Runs a driver script (`program` from [`driver_program`], `script` relative to the repository,
/// then `args`) with only the libpq connection variables PGHOST/PGPORT/PGUSER/PGDATABASE set from
/// the given values (other `PG*` variables of the caller are removed), and returns its standard
/// output. Panics with its output when it fails.
pub fn run_driver(
    program: &str,
    script: &str,
    args: &[&str],
    pghost: &str,
    pgport: u16,
    dbname: &str,
) -> String {
    let exe = driver_program(program);
    let mut command = Command::new(&exe);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(&key);
        }
    }
    let output = command
        .arg(repo_dir().join(script))
        .args(args)
        .current_dir(repo_dir())
        .env("PGHOST", pghost)
        .env("PGPORT", pgport.to_string())
        .env("PGUSER", PG_USER)
        .env("PGDATABASE", dbname)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {script} failed ({}):\n--- stdout\n{stdout}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Checks the three lines every driver snippet prints (tests/drivers, see tests/drivers.rs) in a
/// database that holds only its own events.
pub fn assert_snippet_story(script: &str, output: &str) {
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "{script}: expected three lines, got:\n{output}"
    );
    assert_eq!(lines[0], "appended: version 3", "{script}: the appends");
    assert_eq!(
        lines[1], "conflict: ES001 expected: 2, actual: 3",
        "{script}: the wrong expected version, with SQLSTATE ES001 and its DETAIL"
    );
    let last: i64 = lines[2]
        .strip_prefix("read: 3 events in 2 pages, last position ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{script}: the fresh database's 3 events, read 2 per page, then the last \
                 position; got {:?}",
                lines[2]
            )
        });
    assert!(last >= 3, "{script}: a position below 3 after 3 events");
}

/// Fails early with a clear message when the cluster runs without the preload the store's
/// worker, gap-safe reads and subscriptions need.
pub fn assert_preloaded(client: &mut Client) {
    let preload: String = client
        .query_one("SHOW shared_preload_libraries", &[])
        .expect("SHOW shared_preload_libraries")
        .get(0);
    assert!(
        preload.contains("event_store"),
        "the test cluster must run with shared_preload_libraries = 'event_store' (ES_PRELOAD=1), \
         it has {preload:?}"
    );
}

/// Panics unless the test cluster runs without the library preloaded (the second pass of
/// tests/client/run.sh, ES_PRELOAD=0).
pub fn assert_not_preloaded(client: &mut Client) {
    let preload: String = client
        .query_one("SHOW shared_preload_libraries", &[])
        .expect("SHOW shared_preload_libraries")
        .get(0);
    assert!(
        !preload.contains("event_store"),
        "this pass must run without the preload, it has {preload:?}"
    );
}

/// The global position of `stream`'s event at `version`, read in `client`'s transaction.
pub fn position_of(client: &mut impl postgres::GenericClient, stream: Uuid, version: i64) -> i64 {
    client
        .query_one(
            "SELECT global_position FROM es.events WHERE stream_id = $1 AND version = $2",
            &[&stream, &version],
        )
        .unwrap_or_else(|e| panic!("position of {stream} v{version}: {}", describe(&e)))
        .get(0)
}

/// A PostgreSQL client program (`pg_dump`, `psql`, …) with the test cluster's connection
/// arguments, ready for its own arguments.
pub fn client_command(program: &str) -> std::process::Command {
    let mut command = std::process::Command::new(pg_bin(program));
    command.args([
        "-h",
        &host(),
        "-p",
        &port().to_string(),
        "-U",
        PG_USER,
        "-w",
    ]);
    command
}

/// Runs a PostgreSQL client program against the test cluster and panics with its output on failure.
pub fn run_client_program(program: &str, args: &[&str]) {
    let output = client_command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", pg_bin(program)));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Dumps `source` with `pg_dump -Fc` and restores it with `pg_restore` into a new empty
/// database (`tag` names it), which is returned.
pub fn dump_and_restore(source: &TestDb, tag: &str) -> TestDb {
    let dump = std::env::temp_dir().join(format!("{}.dump", source.name()));
    let dump_path = dump.to_str().expect("temp path is UTF-8").to_owned();
    run_client_program("pg_dump", &["-Fc", "-f", &dump_path, source.name()]);
    let target = TestDb::empty(tag);
    let restored = std::panic::catch_unwind(|| {
        run_client_program(
            "pg_restore",
            &["--exit-on-error", "-d", target.name(), &dump_path],
        )
    });
    let _ = std::fs::remove_file(&dump);
    if let Err(panic) = restored {
        std::panic::resume_unwind(panic);
    }
    target
}

/// Runs statements that must succeed.
pub fn exec(client: &mut impl postgres::GenericClient, sql: &str) {
    client
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql} failed: {}", describe(&e)));
}

/// A new connection to the cluster's `postgres` database (for commands on other databases,
/// roles and settings).
pub fn admin() -> Client {
    connect_with_retry("postgres", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {}", describe(&e)))
}
