//! Crash recovery under load (docs/reference.md §2: appends are atomic and versions gapless; §3: the global log
//! is gap-safe; §5: the account rules hold; §6: a crash never leaves a broken store).
//!
//! `crash_mid_append` kills the one backend of a quiet server in one big append; a real server
//! dies while many sessions are halfway through appends, commands and commits, and may crash
//! again soon after. Here, for six cycles, four connections keep the store busy:
//! `es.append_events` batches of 1..=50 events with client-chosen `event_id`s to a shared pool of
//! streams, with `expected_version` NULL or the version the connection believes (an `ES001`
//! conflict is a normal outcome), and the account commands `es.open_account`, `es.deposit` and
//! `es.withdraw` (`ES101` is normal), in autocommit and in explicit transactions of 2..=4 calls.
//! Each connection records what was **acknowledged** (the call returned and, in a transaction,
//! its COMMIT returned) and what was **in flight** when its connection died; a few appends commit
//! and then hold their answer back for 100 ms, so that calls which committed but were never
//! acknowledged occur too. Then the server crashes: mostly `pg_ctl stop -m immediate` and a start
//! (crash recovery replays the WAL), and in some cycles one busy backend is killed with SIGKILL,
//! after which the postmaster restarts every backend by itself and re-creates the shared memory
//! where the extension tracks the positions in flight.
//!
//! After every restart, on a fresh connection, the test checks that
//! - every acknowledged event is stored, with its id, in its stream, at its version (sessions run
//!   with `synchronous_commit = on`, so an acknowledged commit is in the WAL that recovery
//!   replays; an append that returned V for k events owns versions V-k+1..=V);
//! - every call, and every transaction, in flight at the crash is all or nothing: either all its
//!   events are stored, consecutive and in order in their stream, or none is;
//! - no event of a refused call or of a rolled-back transaction is stored, and no event appears
//!   that no client wrote;
//! - versions are gapless 1..N in every stream, in the order of their global positions, and
//!   `es.streams.version` is N; the account streams are exactly the accounts opened, their
//!   `es.account_state` equals the replay of their events and their running balance is never
//!   negative;
//! - `es.read_all`, paged by 500 from position 0, returns every stored event exactly once, in
//!   order: it is not stuck behind positions a dead backend had drawn;
//! - a client's retry of an append it never got an answer for (same event ids, NULL expected
//!   version) returns the stored version without writing when the batch was stored, and appends
//!   it when it was not;
//! - appends and commands work again, and `amcheck` finds the indexes and heaps sound.
//!
//! The store picks the event ids of command events, so the commands carry a client-chosen tag (a
//! uuid) in the `description` (deposit, withdraw) or as the holder (open) to find them again.
//!
//! `a_hard_delete_or_truncation_killed_midway_is_all_or_nothing` (docs/reference.md §14) kills the backend
//! of a hard delete, then of a truncation, of a 100,000-event stream while it runs: after
//! recovery each act is all (tombstone or cut, events gone, audit row) or nothing.
//!
//! The test restarts the cluster it runs against, so it needs that cluster's `ES_CLUSTER_DIR` and
//! `ES_PORT` (tests/client/run.sh exports them) and refuses to run when they do not name the server
//! `ES_TEST_PGHOST`/`ES_TEST_PGPORT` point at; no other test may run at the same time (run.sh runs
//! one at a time). The figures go to stderr and to `target/crash-recovery-summary.txt`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{
    Client, Error, TestDb, Uuid, append, bigints, connect_after_kill, connect_with_retry, describe,
    ensure_own_cluster, kill_9, sqlstate, stream_version, verify_store,
};
use postgres::GenericClient;
use rand::Rng;
use rand::seq::IndexedRandom;

/// Connections appending under load.
const WORKERS: usize = 4;
/// Crash cycles.
const CYCLES: usize = 6;
/// The cycles that SIGKILL one busy backend; the others stop the server with `-m immediate`.
const SIGKILL_CYCLES: [usize; 2] = [1, 4];
/// Load before each crash, in milliseconds (drawn at random).
const LOAD_MS: std::ops::RangeInclusive<u64> = 500..=2_500;
/// Largest append batch.
const MAX_BATCH: usize = 50;
/// Plain streams the connections share (conflicts need sharing).
const PLAIN_STREAMS: usize = 24;
/// Accounts the connections share.
const ACCOUNTS: usize = 8;
/// Opening balance of every account, in cents.
const OPENING_BALANCE: i64 = 20_000;
/// A small snapshot interval, so that snapshots are written in the crashed transactions too and
/// `es.account_state` after recovery starts from them.
const SNAPSHOT_INTERVAL: &str = "SET es.snapshot_interval = 10";
/// Bound for the cluster to accept connections again after a crash.
const RECOVER_WITHIN: Duration = Duration::from_secs(60);
/// Bound for every worker connection to notice the crash (the server closes them all).
const DIE_WITHIN: Duration = Duration::from_secs(30);
/// How long to look for a backend that is running a statement before killing any worker's.
const FIND_BUSY_WITHIN: Duration = Duration::from_secs(2);
/// `es.read_all` page size.
const PAGE: i64 = 500;
/// Pause between the COMMIT of a late-answer append and its answer.
const LATE_ANSWER: &str = "0.1";
/// Share of autocommit appends sent as late-answer appends: a worker then spends about a third
/// of its time waiting for such an answer, so most crashes catch a committed but unacknowledged
/// call.
const LATE_ANSWER_SHARE: f64 = 0.03;

/// One call a worker makes.
#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: Uuid,
        expected: Option<i64>,
        ids: Vec<Uuid>,
        events: Vec<String>,
        /// Sent as `BEGIN; append; COMMIT; pg_sleep` in one simple query, so the server commits
        /// and the client gets its answer only [`LATE_ANSWER`] later: a crash in between makes
        /// a committed call that was never acknowledged (autocommit units only).
        late_answer: bool,
    },
    Open {
        tag: Uuid,
    },
    Deposit {
        account: Uuid,
        tag: Uuid,
        amount: i64,
        expected: Option<i64>,
    },
    Withdraw {
        account: Uuid,
        tag: Uuid,
        amount: i64,
        expected: Option<i64>,
    },
}

/// Which kind of call an acknowledged batch came from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Append,
    Open,
    Money,
}

/// A batch whose commit was acknowledged: its events, by key in order, end at `version` of
/// `stream`.
#[derive(Clone, Debug)]
struct Acked {
    stream: Uuid,
    version: i64,
    keys: Vec<Uuid>,
    kind: Kind,
}

impl Op {
    /// The stream the call writes; `None` for `es.open_account`, whose stream id the store picks.
    fn stream(&self) -> Option<Uuid> {
        match self {
            Op::Append { stream, .. } => Some(*stream),
            Op::Open { .. } => None,
            Op::Deposit { account, .. } | Op::Withdraw { account, .. } => Some(*account),
        }
    }

    /// The keys the call's events are found by: an append's event ids, a command's tag.
    fn keys(&self) -> Vec<Uuid> {
        match self {
            Op::Append { ids, .. } => ids.clone(),
            Op::Open { tag } | Op::Deposit { tag, .. } | Op::Withdraw { tag, .. } => vec![*tag],
        }
    }

    /// A one-line description for failure messages (without the events' JSON).
    fn label(&self) -> String {
        match self {
            Op::Append {
                stream,
                expected,
                ids,
                late_answer,
                ..
            } => format!(
                "append of {} events to {stream} (expected {expected:?}, late answer: \
                 {late_answer}, first id {})",
                ids.len(),
                ids[0]
            ),
            Op::Open { tag } => format!("open_account (tag {tag})"),
            Op::Deposit {
                account,
                tag,
                amount,
                expected,
            } => format!("deposit {amount} to {account} (expected {expected:?}, tag {tag})"),
            Op::Withdraw {
                account,
                tag,
                amount,
                expected,
            } => format!("withdraw {amount} from {account} (expected {expected:?}, tag {tag})"),
        }
    }

    /// Sends the call; on success, what it wrote (acknowledged once its transaction commits).
    fn run(&self, client: &mut impl GenericClient) -> Result<Acked, Error> {
        match self {
            Op::Append {
                stream,
                expected,
                ids,
                events,
                late_answer: true,
            } => Ok(Acked {
                stream: *stream,
                version: append_late_answer(client, *stream, *expected, events)?,
                keys: ids.clone(),
                kind: Kind::Append,
            }),
            Op::Append {
                stream,
                expected,
                ids,
                events,
                late_answer: false,
            } => Ok(Acked {
                stream: *stream,
                version: append(client, *stream, *expected, events)?,
                keys: ids.clone(),
                kind: Kind::Append,
            }),
            Op::Open { tag } => {
                let id: Uuid = client
                    .query_one(
                        "SELECT es.open_account($1, $2)",
                        &[&tag.to_string(), &OPENING_BALANCE],
                    )?
                    .get(0);
                Ok(Acked {
                    stream: id,
                    version: 1,
                    keys: vec![*tag],
                    kind: Kind::Open,
                })
            }
            Op::Deposit {
                account,
                tag,
                amount,
                expected,
            }
            | Op::Withdraw {
                account,
                tag,
                amount,
                expected,
            } => {
                let sql = if matches!(self, Op::Deposit { .. }) {
                    "SELECT es.deposit($1, $2, $3, $4)"
                } else {
                    "SELECT es.withdraw($1, $2, $3, $4)"
                };
                let version: i64 = client
                    .query_one(sql, &[account, amount, &tag.to_string(), expected])?
                    .get(0);
                Ok(Acked {
                    stream: *account,
                    version,
                    keys: vec![*tag],
                    kind: Kind::Money,
                })
            }
        }
    }
}

/// `es.append_events` in its own transaction, answered only [`LATE_ANSWER`] seconds after its
/// COMMIT (see [`Op::Append`]); returns the new version.
fn append_late_answer(
    client: &mut impl GenericClient,
    stream: Uuid,
    expected: Option<i64>,
    events: &[String],
) -> Result<i64, Error> {
    let expected = expected.map_or("NULL".to_owned(), |v| v.to_string());
    let events: Vec<String> = events
        .iter()
        .map(|e| format!("'{}'::jsonb", e.replace('\'', "''")))
        .collect();
    let sql = format!(
        "BEGIN; SELECT es.append_events('{stream}'::uuid, {expected}, ARRAY[{}]); COMMIT; \
         SELECT pg_sleep({LATE_ANSWER})",
        events.join(", ")
    );
    let answer = client.simple_query(&sql).inspect_err(|_| {
        // A failed statement leaves the explicit transaction open and aborted; if the connection
        // is gone the next call will tell.
        let _ = client.batch_execute("ROLLBACK");
    })?;
    let version = answer
        .iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .expect("es.append_events returned no row");
    Ok(version.parse().expect("es.append_events returned a bigint"))
}

/// The streams and accounts the workers share; fixed for the whole run, so they collide often.
struct Pool {
    streams: Vec<Uuid>,
    accounts: Vec<Uuid>,
}

/// When the controller began crashing the server in this cycle: a lost connection is a normal
/// outcome only after that moment, before it is a failure.
#[derive(Default)]
struct CrashClock(OnceLock<Instant>);

impl CrashClock {
    /// Marks the start of the crash; must happen before the signal is sent.
    fn start(&self) {
        let _ = self.0.set(Instant::now());
    }

    /// Whether the crash has begun.
    fn started(&self) -> bool {
        self.0.get().is_some()
    }
}

/// How a call failed.
enum Failure {
    /// A refusal the workload provokes on purpose (`ES001`, `ES101`): the call wrote nothing.
    Refused(&'static str),
    /// The connection died under the call (crash in progress): its outcome is unknown.
    Lost,
    /// Anything else, with its description.
    Unexpected(String),
}

/// Sorts an error into [`Failure`]s; a dead connection counts as lost only once the crash began.
fn classify(err: &Error, crash: &CrashClock) -> Failure {
    let dead = err.is_closed()
        || match sqlstate(err) {
            None => true,
            // 57P0x: the server terminates the session (shutdown, crash of another backend);
            // 08xxx: connection failures.
            Some(code) => code.starts_with("57P") || code.starts_with("08"),
        };
    match sqlstate(err) {
        Some("ES001") => Failure::Refused("ES001"),
        Some("ES101") => Failure::Refused("ES101"),
        _ if dead && crash.started() => Failure::Lost,
        _ if dead => Failure::Unexpected(format!(
            "connection lost before any crash: {}",
            describe(err)
        )),
        _ => Failure::Unexpected(describe(err)),
    }
}

/// What one connection did in one cycle.
#[derive(Default)]
struct WorkerLog {
    acked: Vec<Acked>,
    /// Acknowledged calls that ran inside an explicit transaction.
    acked_in_tx: u64,
    committed_txs: u64,
    rolled_back_txs: u64,
    /// Calls the crash cut off, grouped by transaction (one call for autocommit).
    in_flight: Vec<Vec<Op>>,
    /// Keys of calls that can never be committed: refused, or in a rolled-back transaction.
    refused_keys: Vec<Uuid>,
    conflicts: u64,
    insufficient: u64,
    unexpected: Vec<String>,
}

impl WorkerLog {
    /// Counts a deliberate refusal.
    fn refused(&mut self, code: &str) {
        match code {
            "ES001" => self.conflicts += 1,
            _ => self.insufficient += 1,
        }
    }
}

/// A fresh batch of 1..=[`MAX_BATCH`] events with new event ids, padded to vary their size.
fn new_batch(rng: &mut impl Rng, worker: usize) -> (Vec<Uuid>, Vec<String>) {
    let ids: Vec<Uuid> = (0..rng.random_range(1..=MAX_BATCH))
        .map(|_| Uuid::new_v4())
        .collect();
    let events = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let pad = "x".repeat(rng.random_range(0..200));
            format!(
                r#"{{"type":"Load","event_id":"{id}","worker":{worker},"i":{i},"pad":"{pad}"}}"#
            )
        })
        .collect();
    (ids, events)
}

/// NULL half of the time, else the version this connection last saw of the stream (stale when
/// another connection wrote since: then the call fails with `ES001`).
fn believed(rng: &mut impl Rng, belief: &HashMap<Uuid, i64>, stream: Uuid) -> Option<i64> {
    if rng.random_bool(0.5) {
        belief.get(&stream).copied()
    } else {
        None
    }
}

/// Draws the next call: mostly appends (a tenth of them creating a new stream), some account
/// commands, with withdrawals a little larger than deposits so that `ES101` happens too.
fn next_op(rng: &mut impl Rng, worker: usize, pool: &Pool, belief: &HashMap<Uuid, i64>) -> Op {
    let roll = rng.random_range(0..100);
    if roll < 60 {
        let (stream, expected) = if rng.random_bool(0.1) {
            (Uuid::new_v4(), Some(0))
        } else {
            let stream = *pool.streams.choose(rng).expect("stream pool");
            (stream, believed(rng, belief, stream))
        };
        let (ids, events) = new_batch(rng, worker);
        Op::Append {
            stream,
            expected,
            ids,
            events,
            late_answer: false,
        }
    } else if roll < 64 {
        Op::Open {
            tag: Uuid::new_v4(),
        }
    } else {
        let account = *pool.accounts.choose(rng).expect("account pool");
        let expected = believed(rng, belief, account);
        let tag = Uuid::new_v4();
        if roll < 82 {
            Op::Deposit {
                account,
                tag,
                amount: rng.random_range(1..=5_000),
                expected,
            }
        } else {
            Op::Withdraw {
                account,
                tag,
                amount: rng.random_range(1..=6_000),
                expected,
            }
        }
    }
}

/// Runs one autocommit call or one explicit transaction and records its outcome; returns false
/// when the connection is gone (or something unexpected happened) and the worker should stop.
fn run_unit(
    client: &mut Client,
    mut ops: Vec<Op>,
    log: &mut WorkerLog,
    belief: &mut HashMap<Uuid, i64>,
    crash: &CrashClock,
) -> bool {
    if ops.len() == 1 {
        let op = &ops[0];
        return match op.run(client) {
            Ok(acked) => {
                belief.insert(acked.stream, acked.version);
                log.acked.push(acked);
                true
            }
            Err(err) => match classify(&err, crash) {
                Failure::Refused(code) => {
                    log.refused(code);
                    if let Some(stream) = op.stream() {
                        belief.remove(&stream);
                    }
                    log.refused_keys.extend(op.keys());
                    true
                }
                Failure::Lost => {
                    log.in_flight.push(ops);
                    false
                }
                Failure::Unexpected(what) => {
                    log.unexpected.push(format!("{}: {what}", op.label()));
                    log.refused_keys.extend(op.keys());
                    false
                }
            },
        };
    }

    // One lock order for every transaction (by stream id), so the workload makes no deadlocks
    // of its own.
    ops.sort_by_key(Op::stream);
    let mut tx = match client.transaction() {
        Ok(tx) => tx,
        Err(err) => {
            if let Failure::Unexpected(what) = classify(&err, crash) {
                log.unexpected.push(format!("BEGIN: {what}"));
            }
            return false;
        }
    };
    let mut done = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        match op.run(&mut tx) {
            Ok(acked) => done.push(acked),
            Err(err) => {
                let sent = &ops[..=i];
                return match classify(&err, crash) {
                    Failure::Refused(code) => {
                        log.refused(code);
                        if let Some(stream) = op.stream() {
                            belief.remove(&stream);
                        }
                        // The transaction is aborted: nothing it sent can commit, whether or not
                        // the ROLLBACK gets through.
                        let _ = tx.rollback();
                        log.rolled_back_txs += 1;
                        log.refused_keys.extend(sent.iter().flat_map(Op::keys));
                        true
                    }
                    Failure::Lost => {
                        log.in_flight.push(sent.to_vec());
                        false
                    }
                    Failure::Unexpected(what) => {
                        log.unexpected
                            .push(format!("{} in a transaction: {what}", op.label()));
                        log.refused_keys.extend(sent.iter().flat_map(Op::keys));
                        false
                    }
                };
            }
        }
    }
    match tx.commit() {
        Ok(()) => {
            log.committed_txs += 1;
            log.acked_in_tx += done.len() as u64;
            for acked in done {
                belief.insert(acked.stream, acked.version);
                log.acked.push(acked);
            }
            true
        }
        Err(err) => {
            match classify(&err, crash) {
                Failure::Lost => log.in_flight.push(ops),
                Failure::Refused(_) | Failure::Unexpected(_) => {
                    log.unexpected.push(format!(
                        "COMMIT of {} calls: {}",
                        ops.len(),
                        describe(&err)
                    ));
                    log.refused_keys.extend(ops.iter().flat_map(Op::keys));
                }
            }
            false
        }
    }
}

/// One worker connection: calls until its connection dies in the crash, or until `give_up`
/// (the crash never reached it, or the controller failed), which is a failure.
fn run_worker(
    worker: usize,
    mut client: Client,
    pool: &Pool,
    crash: &CrashClock,
    give_up: Instant,
) -> WorkerLog {
    let mut rng = rand::rng();
    let mut log = WorkerLog::default();
    let mut belief = HashMap::new();
    loop {
        if Instant::now() > give_up {
            log.unexpected.push(format!(
                "worker {worker}: the connection still worked {DIE_WITHIN:?} after the crash was due"
            ));
            return log;
        }
        let calls = if rng.random_bool(0.3) {
            rng.random_range(2..=4)
        } else {
            1
        };
        let mut ops: Vec<Op> = (0..calls)
            .map(|_| next_op(&mut rng, worker, pool, &belief))
            .collect();
        if let [Op::Append { late_answer, .. }] = &mut ops[..] {
            *late_answer = rng.random_bool(LATE_ANSWER_SHARE);
        }
        if !run_unit(&mut client, ops, &mut log, &mut belief, crash) {
            return log;
        }
    }
}

/// The repository root, where `scripts/cluster.sh` lives.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `scripts/cluster.sh <action>` with the environment run.sh exported (the same cluster).
fn cluster(action: &str) {
    let status = Command::new("bash")
        .arg("scripts/cluster.sh")
        .arg(action)
        .current_dir(repo_root())
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run scripts/cluster.sh {action}: {e}"));
    assert!(
        status.success(),
        "scripts/cluster.sh {action} failed: {status}"
    );
}

/// Creates the shared streams (one event each) and accounts, acknowledged like any other call.
fn setup(client: &mut Client, ledger: &mut Ledger) -> Pool {
    let mut rng = rand::rng();
    let mut streams = Vec::with_capacity(PLAIN_STREAMS);
    for _ in 0..PLAIN_STREAMS {
        let (ids, events) = new_batch(&mut rng, 0);
        let acked = Op::Append {
            stream: Uuid::new_v4(),
            expected: Some(0),
            ids,
            events,
            late_answer: false,
        }
        .run(client)
        .unwrap_or_else(|e| panic!("creating a stream: {}", describe(&e)));
        streams.push(acked.stream);
        ledger.acked.push(acked);
    }
    let mut accounts = Vec::with_capacity(ACCOUNTS);
    for _ in 0..ACCOUNTS {
        let acked = Op::Open {
            tag: Uuid::new_v4(),
        }
        .run(client)
        .unwrap_or_else(|e| panic!("opening an account: {}", describe(&e)));
        accounts.push(acked.stream);
        ledger.accounts.insert(acked.stream);
        ledger.acked.push(acked);
    }
    Pool { streams, accounts }
}

/// Runs the workers for `load`, then crashes the server under them (SIGKILL of a busy backend
/// when `sigkill`, else `stop -m immediate`) and collects their logs once every connection died.
/// Returns the logs and the killed pid.
fn load_and_crash(
    db: &TestDb,
    pool: &Pool,
    load: Duration,
    sigkill: bool,
) -> (Vec<WorkerLog>, Option<i32>) {
    let mut clients = Vec::with_capacity(WORKERS);
    let mut pids = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        let mut client = db.connect();
        client.batch_execute(SNAPSHOT_INTERVAL).expect("SET");
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .expect("pg_backend_pid")
            .get(0);
        clients.push(client);
        pids.push(pid);
    }
    let mut monitor = sigkill.then(|| db.connect());
    let crash = CrashClock::default();
    let give_up = Instant::now() + load + FIND_BUSY_WITHIN + DIE_WITHIN;
    thread::scope(|scope| {
        let workers: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(worker, client)| {
                let crash = &crash;
                scope.spawn(move || run_worker(worker, client, pool, crash, give_up))
            })
            .collect();
        thread::sleep(load);
        let victim = match monitor.as_mut() {
            Some(monitor) => {
                let pid = busy_backend(monitor, &pids);
                crash.start();
                kill_9(pid);
                Some(pid)
            }
            None => {
                crash.start();
                cluster("stop-immediate");
                None
            }
        };
        // Joining proves that the postmaster reacted (every session is gone) before anyone
        // reconnects, so a new session cannot slip in before the crash restart and die in it.
        let logs = workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect();
        (logs, victim)
    })
}

/// A worker backend that is running a statement right now, from `pg_stat_activity`; any worker's
/// backend when none shows up within [`FIND_BUSY_WITHIN`].
fn busy_backend(monitor: &mut Client, pids: &[i32]) -> i32 {
    let deadline = Instant::now() + FIND_BUSY_WITHIN;
    let mut rng = rand::rng();
    loop {
        let busy = monitor
            .query(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1) AND state = 'active'",
                &[&pids],
            )
            .unwrap_or_else(|e| panic!("reading pg_stat_activity: {}", describe(&e)));
        if let Some(row) = busy.choose(&mut rng) {
            return row.get(0);
        }
        if Instant::now() >= deadline {
            eprintln!("no worker backend was active: killing an idle one");
            return *pids.choose(&mut rng).expect("worker pids");
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Everything the clients know about the store, checked after every restart.
#[derive(Default)]
struct Ledger {
    acked: Vec<Acked>,
    /// Calls cut off by the latest crash, grouped by transaction, until classified.
    in_flight: Vec<Vec<Op>>,
    /// Keys that must never be stored: refused calls, rolled-back transactions, lost commands
    /// that recovery did not keep.
    never: HashSet<Uuid>,
    /// Every account opened (acknowledged, or found stored after its call was lost).
    accounts: HashSet<Uuid>,
}

/// The run's figures.
#[derive(Default)]
struct Totals {
    immediate_stops: usize,
    sigkills: usize,
    calls_acked: u64,
    calls_acked_in_tx: u64,
    events_acked: u64,
    committed_txs: u64,
    rolled_back_txs: u64,
    conflicts: u64,
    insufficient: u64,
    in_flight_txs: u64,
    in_flight_stored: u64,
    in_flight_absent: u64,
    retries_idempotent: u64,
    retries_appended: u64,
    slowest_recovery: Duration,
}

impl Ledger {
    /// Takes in the workers' logs of one cycle; panics on anything unexpected they saw.
    fn absorb(&mut self, logs: Vec<WorkerLog>, totals: &mut Totals) {
        let unexpected: Vec<String> = logs.iter().flat_map(|l| l.unexpected.clone()).collect();
        assert!(
            unexpected.is_empty(),
            "unexpected outcomes under load:\n{}",
            unexpected.join("\n")
        );
        for log in logs {
            totals.calls_acked += log.acked.len() as u64;
            totals.calls_acked_in_tx += log.acked_in_tx;
            totals.committed_txs += log.committed_txs;
            totals.rolled_back_txs += log.rolled_back_txs;
            totals.conflicts += log.conflicts;
            totals.insufficient += log.insufficient;
            totals.in_flight_txs += log.in_flight.iter().filter(|g| g.len() > 1).count() as u64;
            for acked in &log.acked {
                totals.events_acked += acked.keys.len() as u64;
                if acked.kind == Kind::Open {
                    self.accounts.insert(acked.stream);
                }
            }
            self.acked.extend(log.acked);
            self.in_flight.extend(log.in_flight);
            self.never.extend(log.refused_keys);
        }
    }
}

/// One stored event.
struct Row {
    position: i64,
    stream: Uuid,
    version: i64,
    event_id: Uuid,
    /// A command's tag (the description, or the holder of `Opened`), when it is a uuid.
    tag: Option<Uuid>,
}

/// The stored events, indexed by key.
struct Store {
    rows: Vec<Row>,
    /// Key (event id, or a command's tag) → (stream, version).
    at: HashMap<Uuid, (Uuid, i64)>,
}

/// Reads every event, in global position order.
fn read_store(client: &mut Client) -> Store {
    let rows: Vec<Row> = client
        .query(
            "SELECT global_position, stream_id, version, event_id, \
                    coalesce(data->>'description', data->>'account_holder') \
             FROM es.events ORDER BY global_position",
            &[],
        )
        .unwrap_or_else(|e| panic!("reading es.events: {}", describe(&e)))
        .iter()
        .map(|r| Row {
            position: r.get(0),
            stream: r.get(1),
            version: r.get(2),
            event_id: r.get(3),
            tag: r
                .get::<_, Option<String>>(4)
                .and_then(|t| Uuid::parse_str(&t).ok()),
        })
        .collect();
    let mut at = HashMap::with_capacity(rows.len() * 2);
    for row in &rows {
        for key in std::iter::once(row.event_id).chain(row.tag) {
            if let Some(earlier) = at.insert(key, (row.stream, row.version)) {
                panic!(
                    "key {key} is stored twice: at {earlier:?} and at ({}, {})",
                    row.stream, row.version
                );
            }
        }
    }
    Store { rows, at }
}

/// Checks everything the ledger knows and the store's own invariants; returns the store read.
fn check_store(client: &mut Client, ledger: &Ledger) -> Store {
    let store = read_store(client);

    // Gapless versions, in position order, and es.streams agreeing.
    let mut versions: HashMap<Uuid, Vec<i64>> = HashMap::new();
    for row in &store.rows {
        versions.entry(row.stream).or_default().push(row.version);
    }
    for (stream, seen) in &versions {
        let gapless = seen.iter().zip(1..).all(|(&v, want)| v == want);
        assert!(
            gapless,
            "stream {stream}: versions in position order are not 1..{}: {seen:?}",
            seen.len()
        );
    }
    let mut streams: HashMap<Uuid, (i64, Option<String>)> = HashMap::new();
    for row in client
        .query(
            "SELECT stream_id, version, stream_type FROM es.streams",
            &[],
        )
        .unwrap_or_else(|e| panic!("reading es.streams: {}", describe(&e)))
    {
        streams.insert(row.get(0), (row.get(1), row.get(2)));
    }
    for (stream, seen) in &versions {
        let row = streams
            .get(stream)
            .unwrap_or_else(|| panic!("stream {stream} has events but no es.streams row"));
        assert_eq!(
            row.0,
            seen.len() as i64,
            "es.streams.version of {stream} is not its number of events"
        );
    }
    for (stream, (version, _)) in &streams {
        assert!(
            versions.contains_key(stream),
            "es.streams has a row for {stream} (version {version}) without events"
        );
    }

    // Acknowledged events at their place.
    for acked in &ledger.acked {
        let first = acked.version - acked.keys.len() as i64 + 1;
        for (key, version) in acked.keys.iter().zip(first..) {
            let found = store.at.get(key);
            assert_eq!(
                found,
                Some(&(acked.stream, version)),
                "acknowledged event {key} ({:?} call that returned version {} for {} events) is \
                 not at version {version} of {}",
                acked.kind,
                acked.version,
                acked.keys.len(),
                acked.stream
            );
        }
    }
    // Nothing that was refused or rolled back, and nothing nobody wrote.
    for key in &ledger.never {
        assert!(
            !store.at.contains_key(key),
            "event {key} of a refused call or rolled-back transaction is stored at {:?}",
            store.at[key]
        );
    }
    let mut written: HashSet<Uuid> = ledger.acked.iter().flat_map(|a| a.keys.clone()).collect();
    written.extend(ledger.in_flight.iter().flatten().flat_map(Op::keys));
    for row in &store.rows {
        assert!(
            written.contains(&row.event_id) || row.tag.is_some_and(|t| written.contains(&t)),
            "event {} at ({}, {}) was written by no client",
            row.event_id,
            row.stream,
            row.version
        );
    }

    // Accounts: exactly the ones opened; state = replay; never below zero.
    let account_streams: HashSet<Uuid> = streams
        .iter()
        .filter(|(_, (_, kind))| kind.as_deref() == Some("account"))
        .map(|(id, _)| *id)
        .collect();
    let mut expected_accounts = ledger.accounts.clone();
    // An open_account lost in this crash may have committed; settle_in_flight adds it after.
    for op in ledger.in_flight.iter().flatten() {
        if let Op::Open { tag } = op
            && let Some(&(stream, _)) = store.at.get(tag)
        {
            expected_accounts.insert(stream);
        }
    }
    assert_eq!(
        account_streams, expected_accounts,
        "the account streams are not the accounts opened"
    );
    for row in client
        .query(
            "SELECT stream_id, state::text, replay::text, state = replay, lowest FROM ( \
               SELECT s.stream_id, es.account_state(s.stream_id) AS state, \
                      (SELECT es.account_replay(e.data ORDER BY e.version) FROM es.events e \
                        WHERE e.stream_id = s.stream_id) AS replay, \
                      (SELECT min((r.state->>'balance_cents')::bigint) FROM ( \
                         SELECT es.account_replay(e.data) OVER (ORDER BY e.version) AS state \
                         FROM es.events e WHERE e.stream_id = s.stream_id) r) AS lowest \
               FROM es.streams s WHERE s.stream_type = 'account') x",
            &[],
        )
        .unwrap_or_else(|e| panic!("checking the accounts: {}", describe(&e)))
    {
        let account: Uuid = row.get(0);
        let (state, replay): (Option<String>, Option<String>) = (row.get(1), row.get(2));
        assert_eq!(
            row.get::<_, Option<bool>>(3),
            Some(true),
            "account {account}: es.account_state {state:?} is not the replay {replay:?}"
        );
        let lowest: Option<i64> = row.get(4);
        assert!(
            lowest.is_some_and(|b| b >= 0),
            "account {account}: the running balance went down to {lowest:?}"
        );
    }

    // The gap-safe global log returns everything, once, in order.
    let stored: Vec<i64> = store.rows.iter().map(|r| r.position).collect();
    let mut read = Vec::with_capacity(stored.len());
    let mut after = 0i64;
    for _ in 0..=stored.len() / PAGE as usize + 1 {
        let page = bigints(
            client,
            "SELECT global_position FROM es.read_all($1, $2)",
            &[&after, &PAGE],
        );
        if page.is_empty() {
            break;
        }
        for position in page {
            assert!(
                position > after,
                "es.read_all after {after} returned {position}"
            );
            after = position;
            read.push(position);
        }
    }
    if read != stored {
        let differ = read.iter().zip(&stored).position(|(a, b)| a != b);
        panic!(
            "es.read_all paged from 0 returned {} events, {} are stored; first difference at \
             index {differ:?} (read {:?}, stored {:?})",
            read.len(),
            stored.len(),
            differ.map(|i| read[i]),
            differ.map(|i| stored[i]),
        );
    }

    verify_store(client);
    store
}

/// Classifies the calls cut off by the latest crash (all or nothing, per call and per
/// transaction), then retries the lost appends as a client would: same event ids, NULL expected
/// version. Moves everything into `ledger.acked` or `ledger.never`.
fn settle_in_flight(client: &mut Client, store: &Store, ledger: &mut Ledger, totals: &mut Totals) {
    for group in std::mem::take(&mut ledger.in_flight) {
        let mut outcomes = Vec::with_capacity(group.len());
        for op in &group {
            let keys = op.keys();
            let found: Vec<(Uuid, i64)> = keys
                .iter()
                .filter_map(|k| store.at.get(k).copied())
                .collect();
            let place = if found.is_empty() {
                None
            } else {
                assert_eq!(
                    found.len(),
                    keys.len(),
                    "a call lost in the crash is partly stored: {} of {} events ({})",
                    found.len(),
                    keys.len(),
                    op.label()
                );
                let stream = found[0].0;
                assert!(
                    op.stream().is_none_or(|s| s == stream),
                    "a lost call's events are in stream {stream}, not its own ({})",
                    op.label()
                );
                let consecutive = found
                    .iter()
                    .zip(found[0].1..)
                    .all(|(&(s, v), want)| s == stream && v == want);
                assert!(
                    consecutive,
                    "a lost call's events are not consecutive and in order: {found:?} ({})",
                    op.label()
                );
                Some((stream, found[found.len() - 1].1))
            };
            outcomes.push(place);
        }
        let stored = outcomes.iter().filter(|o| o.is_some()).count();
        assert!(
            stored == 0 || stored == group.len(),
            "a transaction lost in the crash is partly stored: {stored} of its {} calls: {:?}",
            group.len(),
            group.iter().map(Op::label).collect::<Vec<_>>()
        );
        for (op, place) in group.into_iter().zip(outcomes) {
            if place.is_some() {
                totals.in_flight_stored += 1;
            } else {
                totals.in_flight_absent += 1;
            }
            match (op, place) {
                (
                    Op::Append {
                        stream,
                        ids,
                        events,
                        ..
                    },
                    place,
                ) => {
                    let before = stream_version(client, stream);
                    let version = append(client, stream, None, &events).unwrap_or_else(|e| {
                        panic!(
                            "retrying a lost append to {stream} (stored: {}): {}",
                            place.is_some(),
                            describe(&e)
                        )
                    });
                    match place {
                        Some((_, last)) => {
                            assert_eq!(
                                version, last,
                                "the retry of a stored batch must return its version"
                            );
                            assert_eq!(
                                stream_version(client, stream),
                                before,
                                "the retry of a stored batch wrote to {stream}"
                            );
                            totals.retries_idempotent += 1;
                        }
                        None => {
                            assert_eq!(
                                version,
                                before + ids.len() as i64,
                                "the retry of a lost batch must append it"
                            );
                            totals.retries_appended += 1;
                        }
                    }
                    ledger.acked.push(Acked {
                        stream,
                        version,
                        keys: ids,
                        kind: Kind::Append,
                    });
                }
                (op, Some((stream, version))) => {
                    let kind = if matches!(op, Op::Open { .. }) {
                        ledger.accounts.insert(stream);
                        Kind::Open
                    } else {
                        Kind::Money
                    };
                    ledger.acked.push(Acked {
                        stream,
                        version,
                        keys: op.keys(),
                        kind,
                    });
                }
                // Commands carry no id to retry by: a lost one that did not commit never will.
                (op, None) => ledger.never.extend(op.keys()),
            }
        }
    }
}

/// After a restart, an append to an existing stream, one to a new stream and a deposit work.
fn append_again(client: &mut Client, pool: &Pool, ledger: &mut Ledger) {
    let mut rng = rand::rng();
    let existing = *pool.streams.choose(&mut rng).expect("stream pool");
    let version = stream_version(client, existing);
    let ops = [
        (existing, Some(version), version + 1),
        (Uuid::new_v4(), Some(0), 1),
    ];
    for (stream, expected, want) in ops {
        let id = Uuid::new_v4();
        let acked = Op::Append {
            stream,
            expected,
            ids: vec![id],
            events: vec![format!(r#"{{"type":"AfterCrash","event_id":"{id}"}}"#)],
            late_answer: false,
        }
        .run(client)
        .unwrap_or_else(|e| panic!("append to {stream} after the crash: {}", describe(&e)));
        assert_eq!(acked.version, want, "append to {stream} after the crash");
        ledger.acked.push(acked);
    }
    let account = *pool.accounts.choose(&mut rng).expect("account pool");
    let version = stream_version(client, account);
    let acked = Op::Deposit {
        account,
        tag: Uuid::new_v4(),
        amount: 1,
        expected: Some(version),
    }
    .run(client)
    .unwrap_or_else(|e| panic!("deposit after the crash: {}", describe(&e)));
    assert_eq!(acked.version, version + 1, "deposit after the crash");
    ledger.acked.push(acked);
}

#[test]
fn acknowledged_events_survive_crashes_under_load_and_lost_calls_are_all_or_nothing() {
    let started = Instant::now();
    let db = TestDb::new("crashrec");
    let mut ledger = Ledger::default();
    let pool = {
        let mut client = db.connect();
        ensure_own_cluster(&mut client, "this test restarts the cluster");
        client.batch_execute(SNAPSHOT_INTERVAL).expect("SET");
        setup(&mut client, &mut ledger)
    };
    let mut totals = Totals::default();
    let mut rng = rand::rng();

    for cycle in 0..CYCLES {
        let sigkill = SIGKILL_CYCLES.contains(&cycle);
        let load = Duration::from_millis(rng.random_range(LOAD_MS));
        let (logs, victim) = load_and_crash(&db, &pool, load, sigkill);
        let crashed = Instant::now();
        if sigkill {
            totals.sigkills += 1;
        } else {
            totals.immediate_stops += 1;
            cluster("start");
        }
        let mut client = connect_with_retry(db.name(), RECOVER_WITHIN).unwrap_or_else(|e| {
            panic!(
                "the cluster did not come back within {RECOVER_WITHIN:?} after cycle {cycle}: {}",
                describe(&e)
            )
        });
        let recovery = crashed.elapsed();
        totals.slowest_recovery = totals.slowest_recovery.max(recovery);
        let checking = Instant::now();

        let (calls_before, stored_before, absent_before) = (
            totals.calls_acked,
            totals.in_flight_stored,
            totals.in_flight_absent,
        );
        ledger.absorb(logs, &mut totals);
        let store = check_store(&mut client, &ledger);
        settle_in_flight(&mut client, &store, &mut ledger, &mut totals);
        append_again(&mut client, &pool, &mut ledger);
        eprintln!(
            "cycle {cycle}: {} after {} ms of load: {} calls acknowledged, {} lost calls stored, \
             {} absent; {} events stored; back in {:.2} s, checked in {:.2} s",
            match victim {
                Some(pid) => format!("SIGKILL of backend {pid}"),
                None => "stop -m immediate".to_owned(),
            },
            load.as_millis(),
            totals.calls_acked - calls_before,
            totals.in_flight_stored - stored_before,
            totals.in_flight_absent - absent_before,
            store.rows.len(),
            recovery.as_secs_f64(),
            checking.elapsed().as_secs_f64(),
        );
    }

    // A last check without a crash covers the retries and appends of the last cycle.
    let mut client = db.connect();
    let store = check_store(&mut client, &ledger);
    let verified: usize = ledger.acked.iter().map(|a| a.keys.len()).sum();

    let mut summary = String::new();
    let t = &totals;
    let _ = writeln!(
        summary,
        "crash_recovery: {CYCLES} cycles ({} stop -m immediate, {} SIGKILL of a busy backend), \
         {WORKERS} connections",
        t.immediate_stops, t.sigkills
    );
    let _ = writeln!(
        summary,
        "  calls acknowledged under load: {} ({} in {} committed transactions); refused: {} \
         ES001, {} ES101; {} transactions rolled back",
        t.calls_acked,
        t.calls_acked_in_tx,
        t.committed_txs,
        t.conflicts,
        t.insufficient,
        t.rolled_back_txs
    );
    let _ = writeln!(
        summary,
        "  events acknowledged under load: {}; acknowledged events verified at the end: \
         {verified} (with setup, retries and post-restart appends); events stored: {}",
        t.events_acked,
        store.rows.len()
    );
    let _ = writeln!(
        summary,
        "  calls in flight at a crash: {} found stored, {} absent ({} multi-call transactions); \
         retried appends: {} idempotent, {} appended",
        t.in_flight_stored,
        t.in_flight_absent,
        t.in_flight_txs,
        t.retries_idempotent,
        t.retries_appended
    );
    let _ = writeln!(
        summary,
        "  slowest recovery: {:.2} s; total: {:.1} s",
        t.slowest_recovery.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    eprint!("{summary}");
    let path = repo_root().join("target/crash-recovery-summary.txt");
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, &summary)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Events of the large stream the lifecycle crash test deletes or truncates.
const LARGE: i64 = 100_000;

/// The stream's row and events after recovery: (deleted, truncated_before, version, events,
/// lowest version, markers, audit rows of the act).
fn life_after(
    client: &mut Client,
    stream: Uuid,
) -> (Option<String>, Option<i64>, i64, i64, i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT s.deleted, s.truncated_before, s.version,
                    (SELECT count(*) FROM es.events e WHERE e.stream_id = s.stream_id),
                    (SELECT coalesce(min(version), 0) FROM es.events e WHERE e.stream_id = s.stream_id),
                    (SELECT count(*) FROM es.events e WHERE e.stream_id = s.stream_id
                        AND e.event_type LIKE '$%'),
                    (SELECT count(*) FROM es.data_audit a WHERE a.target = s.stream_id::text)
               FROM es.streams s WHERE s.stream_id = $1",
            &[&stream],
        )
        .unwrap_or_else(|e| panic!("reading the stream after recovery: {}", describe(&e)));
    (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
    )
}

/// docs/reference.md §14: a hard delete and a truncation of a large stream, each killed with SIGKILL while it
/// runs (the postmaster then restarts every backend and recovers): afterwards each act is all
/// (the stream tombstoned or cut, the events gone, its audit row there) or nothing (every event,
/// no marker, no audit row), and the store works and is sound.
#[test]
fn a_hard_delete_or_truncation_killed_midway_is_all_or_nothing() {
    let db = TestDb::new("crashlife");
    {
        let mut client = db.connect();
        ensure_own_cluster(&mut client, "this test restarts the cluster");
    }
    let mut rng = rand::rng();
    let mut outcomes = Vec::new();
    for act in ["hard delete", "truncation"] {
        let stream = Uuid::new_v4();
        let mut client = db.connect();
        for _ in 0..LARGE / 20_000 {
            client
                .query_one(
                    "SELECT es.append_events($1, NULL, (SELECT array_agg(jsonb_build_object(\
                     'type', 'Bulk', 'n', g, 'pad', repeat('x', 100))) FROM generate_series(1, 20000) g))",
                    &[&stream],
                )
                .unwrap_or_else(|e| panic!("filling the stream: {}", describe(&e)));
        }
        let mut actor = db.connect();
        let pid: i32 = actor
            .query_one("SELECT pg_backend_pid()", &[])
            .expect("pid")
            .get(0);
        let sql = match act {
            "hard delete" => "SELECT es.delete_stream($1, NULL, true)",
            _ => "SELECT es.truncate_stream($1, es.stream_version($1))",
        };
        // The thread hands the connection back, so that an act that finished before the kill
        // leaves its backend alive (idle) to be killed rather than gone.
        let call = thread::spawn(move || {
            let answered = actor.query_one(sql, &[&stream]).map(|r| r.get::<_, i64>(0));
            (answered, actor)
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let active: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 \
                     AND state = 'active' AND query LIKE '%_stream(%')",
                    &[&pid],
                )
                .expect("pg_stat_activity")
                .get(0);
            if active || call.is_finished() || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        thread::sleep(Duration::from_millis(rng.random_range(5..150)));
        kill_9(pid);
        let (answered, actor) = call.join().expect("the act's thread panicked");
        drop(actor);
        let mut client = connect_after_kill(db.name(), pid, Duration::from_secs(90))
            .unwrap_or_else(|e| panic!("no connection after the kill: {}", describe(&e)));
        let (deleted, cut, version, events, lowest, markers, audits) =
            life_after(&mut client, stream);
        let all = match act {
            "hard delete" => {
                deleted.as_deref() == Some("hard")
                    && version == LARGE + 1
                    && (events, lowest, markers, audits) == (1, LARGE + 1, 1, 1)
            }
            _ => {
                cut == Some(LARGE)
                    && version == LARGE
                    && (events, lowest, markers, audits) == (1, LARGE, 0, 1)
            }
        };
        let nothing = deleted.is_none()
            && cut.is_none()
            && version == LARGE
            && (events, lowest, markers, audits) == (LARGE, 1, 0, 0);
        assert!(
            all ^ nothing,
            "{act} killed mid-way left the stream half done: deleted {deleted:?}, cut {cut:?}, \
             version {version}, {events} events from {lowest}, {markers} markers, {audits} audit rows"
        );
        if answered.is_ok() {
            assert!(all, "{act} returned {answered:?} but did not happen");
        }
        // The store works on: a live stream takes appends, a tombstoned one refuses them.
        let appended = client.query_one(
            r#"SELECT es.append_events($1, NULL, ARRAY['{"type": "After"}']::jsonb[])"#,
            &[&stream],
        );
        match (act, all) {
            ("hard delete", true) => {
                let err = appended.expect_err("an append to a tombstone");
                assert_eq!(sqlstate(&err), Some("ES007"), "{}", describe(&err));
            }
            _ => {
                appended.unwrap_or_else(|e| panic!("append after recovery: {}", describe(&e)));
            }
        }
        verify_store(&mut client);
        outcomes.push(format!(
            "{act}: {} ({})",
            if all { "all" } else { "nothing" },
            if answered.is_ok() {
                "answered"
            } else {
                "killed"
            }
        ));
    }
    eprintln!("lifecycle crash: {}", outcomes.join(", "));
}
