//! Change data capture of the event log by logical decoding (docs/reference.md §11, issue 13 item 3): the
//! recipe of docs/replicas.md, run for real.
//!
//! Why: a CDC consumer (wal2json through `pg_recvlogical`, or Debezium, which reads `pgoutput`,
//! into Kafka) sees the log as PostgreSQL's logical decoding produces it: whole transactions in
//! commit order, which is not the order of `global_position` when writers commit out of order.
//! What docs/replicas.md promises about that stream is checked here against the stored log, on the
//! client-test cluster restarted with `wal_level = logical` (`replica::LogicalWalLevel`), in a
//! fresh database, with two slots created before anything is written:
//! - a `wal2json` slot (`format-version=2`, `add-tables=es.events`), created and read by
//!   `scripts/cdc.sh`, the README's recipe verbatim (readme_snippets.rs checks the README shows
//!   it), which runs the real `pg_recvlogical` as a subprocess writing to a file: started before
//!   the writers and stopped with SIGINT after them; then started a second time on the same slot
//!   (a consumer restart), when it must resume exactly after what the first run confirmed;
//! - a `pgoutput` slot with `CREATE PUBLICATION es_events FOR TABLE es.events`, read with
//!   `pg_logical_slot_peek_binary_changes` and decoded by the minimal protocol-version-1 decoder
//!   below (Begin, Relation, Insert, Commit: the messages Debezium consumes for this table).
//!
//! The writers, all at once: four connections appending 1–3 events per transaction to six shared
//! streams and sleeping 0–22 ms before COMMIT (every fifth transaction rolls back instead, one
//! commits after a `ROLLBACK TO SAVEPOINT` that discarded an append); one 2,000-event batch append
//! (and a 300-event batch rolled back); account commands (open, deposits, a withdrawal, a freeze,
//! and two refused commands); and a forced inversion: transaction "held" appends first (lower
//! positions), "overtaker" appends after it and commits first, then "held" commits. Event ids are
//! fixed wherever the test chooses them.
//!
//! Asserted, for each of the two streams: every committed event appears exactly once with the
//! stored values (the set of event ids and positions equals `es.events`); nothing of a rolled-back
//! append, savepoint or refused command appears; each committed transaction arrives as one
//! contiguous block (no interleaving) with exactly its events in insert order, and blocks arrive in
//! commit order (commit LSNs increase, and a transaction whose COMMIT returned before another's
//! COMMIT was sent comes first); every stream's versions arrive as 1, 2, 3, …; commit order is NOT
//! position order: at least one inversion is seen and the forced one is seen as forced. The two
//! streams carry the same transactions in the same order. Both slots are dropped at the end, also
//! when the test fails (a Drop guard), so no slot pins the primary's WAL.
//!
//! Run with `bash tests/client/run.sh --test cdc`. No Kafka broker runs here: the decoding side is
//! what is tested; the Debezium configuration in docs/replicas.md is documentation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::replica::{self, LogicalWalLevel};
use event_store_client_tests::{
    Client, PG_USER, TestDb, Uuid, append, connect_with_retry, describe, has_library, host, pg_bin,
    pg_major, port, repo_dir, report_skip, sqlstate,
};
use postgres::Transaction;

/// The publication the pgoutput slot (and Debezium, in docs/replicas.md) reads.
const PUBLICATION: &str = "es_events";
/// Prefix of the wal2json slot's name (the test database's name follows).
const WAL2JSON_SLOT: &str = "w2j_";
/// Prefix of the pgoutput slot's name.
const PGOUTPUT_SLOT: &str = "pgo_";
/// Prefix of the logical messages that mark the end of a test phase in the wal2json stream.
const MARKER_PREFIX: &str = "es_cdc_test";
/// Connections that append small transactions and commit out of position order.
const WRITERS: u64 = 4;
/// Transactions per such connection.
const TXS_PER_WRITER: u64 = 12;
/// Streams those writers share (appends to one stream serialize on its row).
const SHARED_STREAMS: u64 = 6;
/// Events of the big batch append (one call, one transaction).
const BATCH: u64 = 2_000;
/// Events of the batch append that rolls back.
const ROLLED_BACK_BATCH: u64 = 300;
/// Bound of every wait (a slot becoming active, a marker arriving, a confirmation, an exit).
/// Generous: it bounds a hung test, it is not a performance assertion.
const PATIENCE: Duration = Duration::from_secs(60);

/// Base of the fixed event ids (`cdc00000-0000-4000-8000-…`), plus a number per event.
const EVENT_ID_BASE: u128 = 0xcdc0_0000_0000_4000_8000_0000_0000_0000;
/// Base of the fixed stream ids (`cdc50000-0000-4000-8000-…`), plus a number per stream.
const STREAM_ID_BASE: u128 = 0xcdc5_0000_0000_4000_8000_0000_0000_0000;

/// The fixed event id number `n`.
fn event_id(n: u64) -> Uuid {
    Uuid::from_u128(EVENT_ID_BASE + u128::from(n))
}

/// The fixed stream id number `n`.
fn stream_id(n: u64) -> Uuid {
    Uuid::from_u128(STREAM_ID_BASE + u128::from(n))
}

/// The JSON of an event of type `ty` with a fixed id.
fn event_json(ty: &str, id: Uuid) -> String {
    format!(r#"{{"type":"{ty}","event_id":"{id}","note":"cdc test"}}"#)
}

// ---------------------------------------------------------------------------------------------
// What the writers did (the ledger the change streams are checked against)
// ---------------------------------------------------------------------------------------------

/// One committed writer transaction.
#[derive(Debug)]
struct Committed {
    /// What it was, for messages (`writer 2 tx 7`, `batch`, `held`, …).
    label: String,
    /// Its top-level transaction id, as logical decoding reports it.
    xid: u32,
    /// The `(stream, version)` of each event it wrote, in insert order.
    writes: Vec<(Uuid, i64)>,
    /// When COMMIT was sent.
    commit_sent: Instant,
    /// When COMMIT returned (the commit record is flushed: sessions run `synchronous_commit=on`).
    commit_done: Instant,
}

/// What one writer thread did.
#[derive(Default)]
struct Outcome {
    committed: Vec<Committed>,
    /// Event ids that were appended and then rolled back (never stored).
    rolled_back: Vec<Uuid>,
    /// Commands refused by the store (their transaction rolled back), for the summary.
    refused: usize,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.committed.extend(other.committed);
        self.rolled_back.extend(other.rolled_back);
        self.refused += other.refused;
    }
}

/// The transaction's top-level xid (assigning one if it has none yet).
fn xid(tx: &mut Transaction<'_>) -> u32 {
    let xid: i64 = tx
        .query_one("SELECT pg_current_xact_id()::xid::text::bigint", &[])
        .unwrap_or_else(|e| panic!("pg_current_xact_id: {}", describe(&e)))
        .get(0);
    u32::try_from(xid).expect("an xid fits 32 bits")
}

/// Commits `tx` and records it.
fn commit(mut tx: Transaction<'_>, label: String, writes: Vec<(Uuid, i64)>) -> Committed {
    let xid = xid(&mut tx);
    let commit_sent = Instant::now();
    tx.commit()
        .unwrap_or_else(|e| panic!("COMMIT of {label}: {}", describe(&e)));
    Committed {
        label,
        xid,
        writes,
        commit_sent,
        commit_done: Instant::now(),
    }
}

/// Appends `ids` (events of type `ty`) to `stream` with no expected version; returns the
/// `(stream, version)` of each, in order.
fn append_ids(tx: &mut Transaction<'_>, stream: Uuid, ty: &str, ids: &[Uuid]) -> Vec<(Uuid, i64)> {
    let events: Vec<String> = ids.iter().map(|&id| event_json(ty, id)).collect();
    let version = append(tx, stream, None, &events)
        .unwrap_or_else(|e| panic!("append of {} events: {}", ids.len(), describe(&e)));
    let first = version - ids.len() as i64 + 1;
    (first..=version).map(|v| (stream, v)).collect()
}

/// Writer `w`: [`TXS_PER_WRITER`] transactions of 1–3 events to a shared stream, each sleeping
/// 0–22 ms before COMMIT so commits come out of position order; every fifth rolls back; writer
/// 0's seventh transaction rolls back an append to a savepoint and appends again before COMMIT.
fn interleaved_writer(client: &mut Client, w: u64, start: &Barrier) -> Outcome {
    let mut outcome = Outcome::default();
    start.wait();
    for t in 0..TXS_PER_WRITER {
        let stream = stream_id((w * 5 + t) % SHARED_STREAMS);
        let count = 1 + (w + t) % 3;
        let ids: Vec<Uuid> = (0..count)
            .map(|i| event_id(1_000_000 + w * 10_000 + t * 100 + i))
            .collect();
        let pause = Duration::from_millis((w * 7 + t * 11) % 23);
        let mut tx = client
            .transaction()
            .unwrap_or_else(|e| panic!("BEGIN: {}", describe(&e)));
        let mut writes = append_ids(&mut tx, stream, "Written", &ids);
        if t % 5 == 4 {
            thread::sleep(pause);
            tx.rollback()
                .unwrap_or_else(|e| panic!("ROLLBACK: {}", describe(&e)));
            outcome.rolled_back.extend(ids);
            continue;
        }
        if w == 0 && t == 6 {
            // An append discarded by ROLLBACK TO SAVEPOINT inside a transaction that commits:
            // its event must not appear, the append after it (same version) must.
            let discarded = event_id(1_000_000 + w * 10_000 + t * 100 + 50);
            let mut savepoint = tx
                .savepoint("cdc")
                .unwrap_or_else(|e| panic!("SAVEPOINT: {}", describe(&e)));
            append_ids(&mut savepoint, stream, "Discarded", &[discarded]);
            savepoint
                .rollback()
                .unwrap_or_else(|e| panic!("ROLLBACK TO SAVEPOINT: {}", describe(&e)));
            outcome.rolled_back.push(discarded);
            let kept = event_id(1_000_000 + w * 10_000 + t * 100 + 51);
            writes.extend(append_ids(&mut tx, stream, "Written", &[kept]));
        }
        thread::sleep(pause);
        outcome
            .committed
            .push(commit(tx, format!("writer {w} tx {t}"), writes));
    }
    outcome
}

/// One call appending [`BATCH`] events, committed after a pause; before it, a call appending
/// [`ROLLED_BACK_BATCH`] events that rolls back.
fn batch_writer(client: &mut Client, start: &Barrier) -> Outcome {
    let mut outcome = Outcome::default();
    let stream = stream_id(100);
    start.wait();
    let ids: Vec<Uuid> = (0..ROLLED_BACK_BATCH)
        .map(|i| event_id(3_000_000 + i))
        .collect();
    let mut tx = client.transaction().expect("BEGIN");
    append_ids(&mut tx, stream, "Batched", &ids);
    thread::sleep(Duration::from_millis(15));
    tx.rollback().expect("ROLLBACK of the batch");
    outcome.rolled_back.extend(ids);

    let ids: Vec<Uuid> = (0..BATCH).map(|i| event_id(2_000_000 + i)).collect();
    let mut tx = client.transaction().expect("BEGIN");
    let writes = append_ids(&mut tx, stream, "Batched", &ids);
    thread::sleep(Duration::from_millis(40));
    outcome
        .committed
        .push(commit(tx, "batch".to_owned(), writes));
    outcome
}

/// Runs one account command (`sql` returning the account's new version) in its own transaction;
/// a refusal with `refused_with` rolls back (nothing may appear), any other error fails the test.
fn account_command(
    client: &mut Client,
    outcome: &mut Outcome,
    account: Uuid,
    label: &str,
    sql: &str,
    refused_with: Option<&str>,
) {
    let mut tx = client.transaction().expect("BEGIN");
    match tx.query_one(sql, &[&account]) {
        Ok(row) => {
            assert!(
                refused_with.is_none(),
                "{label} should have been refused with {refused_with:?}"
            );
            let version: i64 = row.get(0);
            thread::sleep(Duration::from_millis(3));
            outcome.committed.push(commit(
                tx,
                format!("account {label}"),
                vec![(account, version)],
            ));
        }
        Err(err) => {
            assert_eq!(
                sqlstate(&err),
                refused_with,
                "{label}: unexpected error {}",
                describe(&err)
            );
            tx.rollback().expect("ROLLBACK of a refused command");
            outcome.refused += 1;
        }
    }
}

/// The seed's bank account through the store's commands (their event ids are the store's own).
fn account_writer(client: &mut Client, start: &Barrier) -> Outcome {
    let mut outcome = Outcome::default();
    start.wait();
    let mut tx = client.transaction().expect("BEGIN");
    let account: Uuid = tx
        .query_one("SELECT es.open_account('cdc holder', 10000)", &[])
        .unwrap_or_else(|e| panic!("es.open_account: {}", describe(&e)))
        .get(0);
    thread::sleep(Duration::from_millis(3));
    outcome
        .committed
        .push(commit(tx, "account open".to_owned(), vec![(account, 1)]));
    let commands: [(&str, &str, Option<&str>); 6] = [
        ("deposit", "SELECT es.deposit($1, 500, 'salary')", None),
        ("withdraw", "SELECT es.withdraw($1, 200, 'rent')", None),
        (
            "overdraft",
            "SELECT es.withdraw($1, 999999, 'too much')",
            Some("ES101"),
        ),
        ("deposit 2", "SELECT es.deposit($1, 700, 'bonus')", None),
        ("freeze", "SELECT es.freeze_account($1, 'audit')", None),
        (
            "deposit while frozen",
            "SELECT es.deposit($1, 1, 'late')",
            Some("ES102"),
        ),
    ];
    for (label, sql, refused_with) in commands {
        account_command(client, &mut outcome, account, label, sql, refused_with);
    }
    outcome
}

/// The forced inversion: "held" appends first (lower positions), "overtaker" appends after it
/// and commits first, then "held" commits. A CDC consumer receives "overtaker" first.
fn inversion_writer(held: &mut Client, overtaker: &mut Client, start: &Barrier) -> Outcome {
    let mut outcome = Outcome::default();
    start.wait();
    let mut held_tx = held.transaction().expect("BEGIN (held)");
    let held_ids = [event_id(4_000_000), event_id(4_000_001)];
    let held_writes = append_ids(&mut held_tx, stream_id(200), "Held", &held_ids);
    let mut overtaker_tx = overtaker.transaction().expect("BEGIN (overtaker)");
    let overtaker_ids = [event_id(4_000_100), event_id(4_000_101)];
    let overtaker_writes = append_ids(
        &mut overtaker_tx,
        stream_id(201),
        "Overtaker",
        &overtaker_ids,
    );
    outcome.committed.push(commit(
        overtaker_tx,
        "overtaker".to_owned(),
        overtaker_writes,
    ));
    thread::sleep(Duration::from_millis(5));
    outcome
        .committed
        .push(commit(held_tx, "held".to_owned(), held_writes));
    outcome
}

/// Runs every writer at once (connections opened first, then a common start).
fn run_writers(db: &TestDb) -> Outcome {
    let mut interleaved: Vec<Client> = (0..WRITERS).map(|_| db.connect()).collect();
    let mut batch = db.connect();
    let mut account = db.connect();
    let (mut held, mut overtaker) = (db.connect(), db.connect());
    let start = Barrier::new(WRITERS as usize + 3);
    let start = &start;
    thread::scope(|scope| {
        let mut handles = Vec::new();
        for (w, client) in interleaved.iter_mut().enumerate() {
            handles.push(scope.spawn(move || interleaved_writer(client, w as u64, start)));
        }
        handles.push(scope.spawn(move || batch_writer(&mut batch, start)));
        handles.push(scope.spawn(move || account_writer(&mut account, start)));
        handles.push(scope.spawn(move || inversion_writer(&mut held, &mut overtaker, start)));
        let mut all = Outcome::default();
        for handle in handles {
            all.merge(handle.join().expect("a writer thread panicked"));
        }
        all
    })
}

// ---------------------------------------------------------------------------------------------
// What a change stream carried
// ---------------------------------------------------------------------------------------------

/// One event row as a change stream carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CdcRow {
    position: i64,
    stream: Uuid,
    version: i64,
    event_id: Uuid,
}

/// One transaction as a change stream carried it (only those with `es.events` rows are kept).
#[derive(Debug)]
struct CdcTx {
    /// The top-level transaction id.
    xid: u32,
    /// The commit record's LSN, when the stream says it.
    commit_lsn: Option<u64>,
    /// Its rows, in the order received.
    rows: Vec<CdcRow>,
}

/// Parses an LSN written as `X/Y` (hexadecimal halves).
fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    let part = |p: &str| u64::from_str_radix(p, 16).unwrap_or_else(|_| panic!("LSN {text:?}"));
    (part(hi) << 32) | part(lo)
}

/// Builds a row from its column values by name; `what` says where it came from.
fn row_from(mut value_of: impl FnMut(&str) -> Option<String>, what: &str) -> CdcRow {
    let mut get =
        |name: &str| value_of(name).unwrap_or_else(|| panic!("{what}: no value for column {name}"));
    let uuid = |text: String| {
        Uuid::parse_str(&text).unwrap_or_else(|_| panic!("{what}: not a uuid: {text}"))
    };
    let int = |text: String| {
        text.parse::<i64>()
            .unwrap_or_else(|_| panic!("{what}: not an integer: {text}"))
    };
    CdcRow {
        position: int(get("global_position")),
        stream: uuid(get("stream_id")),
        version: int(get("version")),
        event_id: uuid(get("event_id")),
    }
}

/// The wal2json (format-version 2, one JSON object a line) output of `pg_recvlogical`: its
/// transactions with `es.events` rows, and the contents of the test's marker messages seen.
///
/// A line is `{"action":"B"|"I"|"C"|"M", "xid":…, "lsn":…, …}`; `I` carries
/// `"columns":[{"name","type","value"},…]`. wal2json sends a `B`/`C` pair for every transaction
/// of the database, also those that wrote nothing to `es.events` (they are skipped here). A
/// transaction the consumer was stopped in the middle of must have no rows (the test stops it
/// after its marker, when only such transactions can follow).
fn parse_wal2json(text: &str, source: &str) -> (Vec<CdcTx>, Vec<String>) {
    let mut txs = Vec::new();
    let mut markers = Vec::new();
    let mut open: Option<CdcTx> = None;
    // Only complete lines: the last one may still be being written.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    for (n, line) in complete.lines().enumerate() {
        let at = format!("{source} line {}", n + 1);
        let msg: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{at}: not JSON ({e}): {line}"));
        let action = msg["action"].as_str().unwrap_or("");
        let xid = || {
            msg["xid"]
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .unwrap_or_else(|| panic!("{at}: no xid (include-xids=1): {line}"))
        };
        match action {
            "B" => {
                if let Some(previous) = &open {
                    panic!(
                        "{at}: transaction {} begins inside transaction {}: transactions \
                         interleave",
                        xid(),
                        previous.xid
                    );
                }
                open = Some(CdcTx {
                    xid: xid(),
                    commit_lsn: msg["lsn"].as_str().map(parse_lsn),
                    rows: Vec::new(),
                });
            }
            "I" => {
                let tx = open
                    .as_mut()
                    .unwrap_or_else(|| panic!("{at}: a change outside a transaction: {line}"));
                assert_eq!(tx.xid, xid(), "{at}: a change of another transaction");
                assert_eq!(
                    (msg["schema"].as_str(), msg["table"].as_str()),
                    (Some("es"), Some("events")),
                    "{at}: add-tables=es.events let another table through"
                );
                let columns = msg["columns"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{at}: no columns: {line}"));
                tx.rows.push(row_from(
                    |name| {
                        columns
                            .iter()
                            .find(|c| c["name"] == name)
                            .map(|c| match &c["value"] {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                    },
                    &at,
                ));
            }
            "C" => {
                let tx = open
                    .take()
                    .unwrap_or_else(|| panic!("{at}: a commit outside a transaction: {line}"));
                assert_eq!(tx.xid, xid(), "{at}: the commit of another transaction");
                if !tx.rows.is_empty() {
                    txs.push(tx);
                }
            }
            "M" => {
                if msg["prefix"] == MARKER_PREFIX {
                    markers.push(msg["content"].as_str().unwrap_or("").to_owned());
                }
            }
            other => panic!("{at}: unexpected action {other:?} (es.events is append-only): {line}"),
        }
    }
    if let Some(tx) = open {
        assert!(
            tx.rows.is_empty(),
            "{source}: the output ends inside transaction {} after {} of its rows",
            tx.xid,
            tx.rows.len()
        );
    }
    (txs, markers)
}

/// A minimal decoder of the logical replication protocol, version 1, as `pgoutput` writes it
/// (PostgreSQL docs, "Logical Replication Message Formats"): big-endian integers, C strings.
/// It knows the four messages an insert-only table produces and fails on anything else, since a
/// message it does not understand would make the test's conclusions unsound:
/// - `B` Begin: Int64 final (commit) LSN, Int64 commit time, Int32 xid;
/// - `R` Relation: Int32 relation oid, String namespace, String name, Int8 replica identity,
///   Int16 column count, per column Int8 flags, String name, Int32 type oid, Int32 type modifier;
/// - `I` Insert: Int32 relation oid, Byte1 `N`, TupleData: Int16 column count, per column Byte1
///   kind (`n` null, `u` unchanged TOAST, `t` text: Int32 length and the value's text);
/// - `C` Commit: Int8 flags, Int64 commit LSN, Int64 end LSN, Int64 commit time.
///
/// (`Y` type messages are sent for non-built-in column types only; `es.events` has none.)
struct PgOutputReader<'a> {
    buf: &'a [u8],
    at: usize,
    /// The message's LSN, for error messages.
    lsn: &'a str,
}

impl<'a> PgOutputReader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let end = self.at + n;
        assert!(
            end <= self.buf.len(),
            "pgoutput message at {} is truncated ({} bytes, wanted {end})",
            self.lsn,
            self.buf.len()
        );
        let bytes = &self.buf[self.at..end];
        self.at = end;
        bytes
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().expect("2 bytes"))
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().expect("4 bytes"))
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().expect("8 bytes"))
    }
    fn cstring(&mut self) -> String {
        let len = self.buf[self.at..]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or_else(|| panic!("pgoutput message at {}: unterminated string", self.lsn));
        let text = String::from_utf8_lossy(self.take(len)).into_owned();
        self.take(1);
        text
    }
    fn done(&self) {
        assert_eq!(
            self.at,
            self.buf.len(),
            "pgoutput message at {}: {} bytes left over",
            self.lsn,
            self.buf.len() - self.at
        );
    }
}

/// Decodes the messages of a pgoutput slot (`(lsn, data)` as the peek function returns them)
/// into transactions with `es.events` rows, checking the framing on the way: Begin and Commit
/// alternate (transactions never interleave), an Insert comes inside a transaction and after
/// its relation's Relation message, and a Commit carries its Begin's final LSN.
fn decode_pgoutput(messages: &[(String, Vec<u8>)]) -> Vec<CdcTx> {
    let mut relations: HashMap<u32, (String, Vec<String>)> = HashMap::new();
    let mut txs = Vec::new();
    let mut open: Option<(CdcTx, u64)> = None;
    for (lsn, data) in messages {
        let mut r = PgOutputReader {
            buf: data,
            at: 0,
            lsn,
        };
        match r.u8() {
            b'B' => {
                let final_lsn = r.u64();
                let _commit_time = r.u64();
                let xid = r.u32();
                r.done();
                if let Some((previous, _)) = &open {
                    panic!(
                        "pgoutput at {lsn}: transaction {xid} begins inside transaction {}: \
                         transactions interleave",
                        previous.xid
                    );
                }
                let tx = CdcTx {
                    xid,
                    commit_lsn: Some(final_lsn),
                    rows: Vec::new(),
                };
                open = Some((tx, final_lsn));
            }
            b'R' => {
                let oid = r.u32();
                let name = format!("{}.{}", r.cstring(), r.cstring());
                let _replica_identity = r.u8();
                let columns = (0..r.u16())
                    .map(|_| {
                        let _flags = r.u8();
                        let column = r.cstring();
                        let _type_oid = r.u32();
                        let _type_modifier = r.u32();
                        column
                    })
                    .collect();
                r.done();
                relations.insert(oid, (name, columns));
            }
            b'I' => {
                let oid = r.u32();
                assert_eq!(
                    r.u8(),
                    b'N',
                    "pgoutput at {lsn}: an insert without a new tuple"
                );
                let (name, columns) = relations
                    .get(&oid)
                    .unwrap_or_else(|| panic!("pgoutput at {lsn}: insert before its relation"));
                assert_eq!(
                    name, "es.events",
                    "pgoutput at {lsn}: the publication sent another table"
                );
                let count = usize::from(r.u16());
                assert_eq!(count, columns.len(), "pgoutput at {lsn}: column count");
                let mut values: HashMap<&str, String> = HashMap::new();
                for column in columns {
                    match r.u8() {
                        b'n' => {}
                        b't' => {
                            let len = r.u32() as usize;
                            let text = String::from_utf8_lossy(r.take(len)).into_owned();
                            values.insert(column, text);
                        }
                        kind => panic!(
                            "pgoutput at {lsn}: column {column} of an insert has kind {:?}",
                            kind as char
                        ),
                    }
                }
                r.done();
                let (tx, _) = open
                    .as_mut()
                    .unwrap_or_else(|| panic!("pgoutput at {lsn}: insert outside a transaction"));
                let what = format!("pgoutput at {lsn}");
                tx.rows
                    .push(row_from(|name| values.get(name).cloned(), &what));
            }
            b'C' => {
                let _flags = r.u8();
                let commit_lsn = r.u64();
                let _end_lsn = r.u64();
                let _commit_time = r.u64();
                r.done();
                let (tx, final_lsn) = open
                    .take()
                    .unwrap_or_else(|| panic!("pgoutput at {lsn}: commit outside a transaction"));
                assert_eq!(
                    commit_lsn, final_lsn,
                    "pgoutput at {lsn}: the commit LSN differs from its Begin's"
                );
                if !tx.rows.is_empty() {
                    txs.push(tx);
                }
            }
            kind => panic!(
                "pgoutput at {lsn}: unexpected message {:?} (es.events is append-only)",
                kind as char
            ),
        }
    }
    assert!(
        open.is_none(),
        "pgoutput: the stream ends inside a transaction"
    );
    txs
}

// ---------------------------------------------------------------------------------------------
// Checking a change stream against the stored log and the ledger
// ---------------------------------------------------------------------------------------------

/// What the checks found, for the summary line.
struct Seen {
    txs: usize,
    rows: usize,
    /// Consecutive events whose position goes down (commit order is not position order).
    inversions: usize,
}

/// Checks one change stream (`source`, its transactions in arrival order) against the stored
/// log (`stored`: every row of `es.events`) and what the writers did.
fn check_stream(source: &str, txs: &[CdcTx], stored: &[CdcRow], outcome: &Outcome) -> Seen {
    // Exactly once, with the stored values.
    let by_id: HashMap<Uuid, &CdcRow> = stored.iter().map(|r| (r.event_id, r)).collect();
    let by_key: HashMap<(Uuid, i64), &CdcRow> =
        stored.iter().map(|r| ((r.stream, r.version), r)).collect();
    let mut seen: HashSet<Uuid> = HashSet::new();
    let rows: Vec<&CdcRow> = txs.iter().flat_map(|tx| &tx.rows).collect();
    for row in &rows {
        let stored_row = by_id.get(&row.event_id).unwrap_or_else(|| {
            panic!(
                "{source}: event {} (position {}) is not in es.events",
                row.event_id, row.position
            )
        });
        assert_eq!(
            **row, **stored_row,
            "{source}: an event's values differ from the stored row"
        );
        assert!(
            seen.insert(row.event_id),
            "{source}: event {} (position {}) arrived twice",
            row.event_id,
            row.position
        );
    }
    let missing: Vec<i64> = stored
        .iter()
        .filter(|r| !seen.contains(&r.event_id))
        .map(|r| r.position)
        .collect();
    assert!(
        missing.is_empty(),
        "{source}: {} committed events never arrived, positions {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    // Nothing rolled back (the store did not keep it either).
    for id in &outcome.rolled_back {
        assert!(
            !seen.contains(id) && !by_id.contains_key(id),
            "{source}: rolled-back event {id} arrived (or was stored)"
        );
    }

    // Whole transactions: each committed writer transaction is exactly one block with exactly
    // its events in insert order; every block is one of them.
    let mut index_of_xid: HashMap<u32, usize> = HashMap::new();
    for (i, tx) in txs.iter().enumerate() {
        assert!(
            index_of_xid.insert(tx.xid, i).is_none(),
            "{source}: transaction {} arrived as two blocks",
            tx.xid
        );
        assert!(
            tx.rows.windows(2).all(|w| w[0].position < w[1].position),
            "{source}: transaction {} is not in insert (position) order within",
            tx.xid
        );
    }
    assert_eq!(
        txs.len(),
        outcome.committed.len(),
        "{source}: blocks received vs committed writer transactions"
    );
    let mut index_of_label: HashMap<&str, usize> = HashMap::new();
    for committed in &outcome.committed {
        let i = *index_of_xid.get(&committed.xid).unwrap_or_else(|| {
            panic!(
                "{source}: {} (xid {}) never arrived as a transaction",
                committed.label, committed.xid
            )
        });
        let expected: Vec<CdcRow> = committed
            .writes
            .iter()
            .map(|key| {
                **by_key
                    .get(key)
                    .unwrap_or_else(|| panic!("{}: {key:?} is not stored", committed.label))
            })
            .collect();
        assert_eq!(
            txs[i].rows, expected,
            "{source}: {} (xid {}) arrived with other rows than it wrote",
            committed.label, committed.xid
        );
        index_of_label.insert(&committed.label, i);
    }

    // Commit order: the commit LSNs increase, and a transaction whose COMMIT returned before
    // another's COMMIT was sent arrives first.
    let lsns: Vec<u64> = txs.iter().filter_map(|tx| tx.commit_lsn).collect();
    assert_eq!(
        lsns.len(),
        txs.len(),
        "{source}: a transaction without its LSN"
    );
    assert!(
        lsns.windows(2).all(|w| w[0] < w[1]),
        "{source}: commit LSNs do not increase"
    );
    for x in &outcome.committed {
        for y in &outcome.committed {
            if x.commit_done < y.commit_sent {
                assert!(
                    index_of_label[x.label.as_str()] < index_of_label[y.label.as_str()],
                    "{source}: {} committed before {} began to commit but arrived after it",
                    x.label,
                    y.label
                );
            }
        }
    }

    // Per stream, versions arrive as 1, 2, 3, … (a stream's appends serialize on its row, so
    // their commit order is their version order).
    let mut next_version: BTreeMap<Uuid, i64> = BTreeMap::new();
    for row in &rows {
        let next = next_version.entry(row.stream).or_insert(1);
        assert_eq!(
            row.version, *next,
            "{source}: stream {} arrived out of version order",
            row.stream
        );
        *next += 1;
    }

    // Commit order is not position order.
    let inversions = rows
        .windows(2)
        .filter(|w| w[1].position < w[0].position)
        .count();
    let (held, overtaker) = (index_of_label["held"], index_of_label["overtaker"]);
    assert!(
        txs[held].rows.last().unwrap().position < txs[overtaker].rows[0].position,
        "{source}: the held transaction should hold the lower positions"
    );
    assert!(
        overtaker < held,
        "{source}: the overtaker committed first and must arrive first"
    );
    assert!(
        inversions >= 1,
        "{source}: no position inversion seen although one was forced"
    );
    Seen {
        txs: txs.len(),
        rows: rows.len(),
        inversions,
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster side: the plugin allow-list, the slots, pg_recvlogical
// ---------------------------------------------------------------------------------------------

/// `wal2json` allowed as an output plugin. PostgreSQL 15.19 and later load only the plugins
/// listed in `output_plugin_libraries` (default `pgoutput, test_decoding`); this adds the plugin
/// with `ALTER SYSTEM` and a reload when it is missing, and resets the setting when dropped. On
/// an older server (no such setting) it does nothing.
struct OutputPlugins {
    changed: bool,
}

impl OutputPlugins {
    fn allow(plugin: &str) -> OutputPlugins {
        let mut admin = connect_with_retry("postgres", PATIENCE)
            .unwrap_or_else(|e| panic!("cannot connect: {}", describe(&e)));
        let setting: Option<String> = admin
            .query_opt(
                "SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'",
                &[],
            )
            .expect("pg_settings")
            .map(|r| r.get(0));
        let Some(setting) = setting else {
            return OutputPlugins { changed: false };
        };
        let mut list: Vec<String> = setting
            .split(',')
            .map(|p| p.trim().trim_matches('"').to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        if list.iter().any(|p| p == plugin) {
            return OutputPlugins { changed: false };
        }
        list.push(plugin.to_owned());
        // A list setting: one quoted literal per element (a single quoted string would be one
        // element named "pgoutput, test_decoding, wal2json").
        let literals: Vec<String> = list
            .iter()
            .map(|p| format!("'{}'", p.replace('\'', "''")))
            .collect();
        // (ALTER SYSTEM refuses to run in a transaction block: one statement per call.)
        admin
            .batch_execute(&format!(
                "ALTER SYSTEM SET output_plugin_libraries = {}",
                literals.join(", ")
            ))
            .unwrap_or_else(|e| panic!("allowing {plugin}: {}", describe(&e)));
        let guard = OutputPlugins { changed: true };
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .unwrap_or_else(|e| panic!("pg_reload_conf: {}", describe(&e)));
        // The reload reaches new sessions once the postmaster has read the file.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut fresh = connect_with_retry("postgres", PATIENCE).expect("connect");
            let now: String = fresh
                .query_one("SHOW output_plugin_libraries", &[])
                .expect("SHOW output_plugin_libraries")
                .get(0);
            if now.split(',').any(|p| p.trim() == plugin) {
                return guard;
            }
            assert!(
                Instant::now() < deadline,
                "output_plugin_libraries did not take {plugin}: {now}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OutputPlugins {
    fn drop(&mut self) {
        if !self.changed {
            return;
        }
        let reset = connect_with_retry("postgres", PATIENCE).and_then(|mut admin| {
            admin.batch_execute("ALTER SYSTEM RESET output_plugin_libraries")?;
            admin.batch_execute("SELECT pg_reload_conf()")
        });
        if let Err(err) = reset {
            eprintln!(
                "warning: could not reset output_plugin_libraries: {}",
                describe(&err)
            );
        }
    }
}

/// The test's replication slots, dropped when this value is dropped (also when the test panics):
/// a forgotten logical slot keeps every WAL segment from its position on, blocks `DROP
/// DATABASE` of the test database and keeps the primary from going back to `wal_level =
/// replica`. A slot still held by a WAL sender is freed by ending that sender first.
struct Slots {
    names: Vec<String>,
}

impl Slots {
    /// Drops every slot of ours that exists; returns how many are left.
    fn drop_all(&self) -> Result<i64, postgres::Error> {
        let mut admin = connect_with_retry("postgres", PATIENCE)?;
        admin.query_one(
            "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots \
             WHERE slot_name = ANY($1) AND active_pid IS NOT NULL",
            &[&self.names],
        )?;
        admin.query_one(
            "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots \
             WHERE slot_name = ANY($1) AND NOT active",
            &[&self.names],
        )?;
        Ok(admin
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = ANY($1)",
                &[&self.names],
            )?
            .get(0))
    }

    /// Drops the idle slots an earlier run of this test left behind when it was killed (no
    /// Drop guard ran): each one would pin the primary's WAL for good.
    fn drop_leftovers() {
        let mut admin = connect_with_retry("postgres", PATIENCE)
            .unwrap_or_else(|e| panic!("cannot connect: {}", describe(&e)));
        let dropped: i64 = admin
            .query_one(
                &format!(
                    "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots \
                     WHERE NOT active AND slot_name ~ '^({WAL2JSON_SLOT}|{PGOUTPUT_SLOT})es_ct_cdc_'"
                ),
                &[],
            )
            .unwrap_or_else(|e| panic!("dropping leftover slots: {}", describe(&e)))
            .get(0);
        if dropped > 0 {
            eprintln!("note: dropped {dropped} replication slot(s) an earlier run left behind");
        }
    }

    /// Drops them, retrying for a while (a terminated sender releases its slot asynchronously).
    fn drop_within(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            match self.drop_all() {
                Ok(0) => return Ok(()),
                result if Instant::now() >= deadline => {
                    return Err(match result {
                        Ok(n) => format!("{n} of the slots {:?} are left", self.names),
                        Err(e) => describe(&e),
                    });
                }
                _ => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // Never panic in drop (it may run while unwinding): report instead.
        if let Err(err) = self.drop_within(Duration::from_secs(10)) {
            eprintln!("warning: replication slots may be left on the primary: {err}");
        }
    }
}

/// A running `pg_recvlogical --start` writing the slot's changes to a file; dropping it kills
/// the process if it still runs.
struct RecvLogical {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl RecvLogical {
    /// Runs `scripts/cdc.sh` (the recipe of docs/replicas.md: `pg_recvlogical --create-slot
    /// --if-not-exists -P wal2json`, then `exec pg_recvlogical --start` with the wal2json
    /// options) for `slot` of database `db`, writing to `out` (stderr next to it), with only the
    /// test cluster's libpq variables set. The extra options `--status-interval=1
    /// --fsync-interval=1` make it confirm what it wrote every second (the defaults are 10 s), so
    /// the test does not wait long for the slot to advance; `--no-loop` makes a lost connection
    /// an exit the test sees, not a silent retry.
    fn start(db: &str, slot: &str, out: &Path) -> RecvLogical {
        let err = out.with_extension("stderr");
        let _ = std::fs::remove_file(out);
        let stderr = std::fs::File::create(&err)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", err.display()));
        let pg_recvlogical = PathBuf::from(pg_bin("pg_recvlogical"));
        let mut command = Command::new("bash");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                command.env_remove(&key);
            }
        }
        let child = command
            .arg(repo_dir().join("scripts/cdc.sh"))
            .arg(db)
            .args(["--status-interval=1", "--fsync-interval=1", "--no-loop"])
            .env("PGHOST", host())
            .env("PGPORT", port().to_string())
            .env("PGUSER", PG_USER)
            .env("PG_BIN", pg_recvlogical.parent().expect("PG_BIN"))
            .env("ES_CDC_SLOT", slot)
            .env("ES_CDC_OUT", out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("cannot run scripts/cdc.sh");
        RecvLogical {
            child,
            out: out.to_owned(),
            err,
        }
    }

    /// What it wrote to stderr so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Panics (with its stderr) if it has exited.
    fn assert_running(&mut self, while_doing: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "pg_recvlogical exited ({status}) while {while_doing}: {}",
                self.stderr()
            );
        }
    }

    /// Waits until the slot is held by its WAL sender (it is streaming).
    fn wait_active(&mut self, admin: &mut Client, slot: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let active: bool = admin
                .query_one(
                    "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots \
                     WHERE slot_name = $1",
                    &[&slot],
                )
                .expect("pg_replication_slots")
                .get(0);
            if active {
                return;
            }
            self.assert_running("connecting");
            assert!(Instant::now() < deadline, "pg_recvlogical did not connect");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// After it stopped: waits until the server's WAL sender has let go of the slot (it ends
    /// a moment after the client), so the next consumer is not refused with "slot is active".
    fn wait_released(admin: &mut Client, slot: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let active: bool = admin
                .query_one(
                    "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots \
                     WHERE slot_name = $1",
                    &[&slot],
                )
                .expect("pg_replication_slots")
                .get(0);
            if !active {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the slot {slot} stayed active after pg_recvlogical exited"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until its output holds the test's marker message `marker`.
    fn wait_for_marker(&mut self, marker: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            let found = complete.lines().any(|line| {
                serde_json::from_str::<serde_json::Value>(line).is_ok_and(|m| {
                    m["action"] == "M" && m["prefix"] == MARKER_PREFIX && m["content"] == marker
                })
            });
            if found {
                return;
            }
            self.assert_running("streaming");
            assert!(
                Instant::now() < deadline,
                "the marker {marker:?} did not arrive in {} within {PATIENCE:?}",
                self.out.display()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it as a user does with Ctrl-C (SIGINT; the script `exec`s pg_recvlogical, so the
    /// signal reaches it) and returns its exit status and stderr.
    fn stop(&mut self) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -INT pg_recvlogical failed");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for pg_recvlogical") {
                return (status, self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "pg_recvlogical did not stop on SIGINT"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The output it wrote.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.out.display()))
    }
}

impl Drop for RecvLogical {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes a transactional logical message with the test's prefix; returns its LSN.
fn emit_marker(admin: &mut Client, content: &str) -> String {
    admin
        .query_one(
            "SELECT pg_logical_emit_message(true, $1, $2)::text",
            &[&MARKER_PREFIX, &content],
        )
        .unwrap_or_else(|e| panic!("pg_logical_emit_message: {}", describe(&e)))
        .get(0)
}

/// Waits until the slot's consumer has confirmed everything up to `lsn`.
fn wait_confirmed(admin: &mut Client, recv: &mut RecvLogical, slot: &str, lsn: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let confirmed: bool = admin
            .query_one(
                "SELECT coalesce(bool_or(confirmed_flush_lsn >= $2::text::pg_lsn), false) \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot, &lsn],
            )
            .expect("pg_replication_slots")
            .get(0);
        if confirmed {
            return;
        }
        recv.assert_running("confirming");
        assert!(
            Instant::now() < deadline,
            "pg_recvlogical did not confirm {lsn} within {PATIENCE:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Every stored event, in position order.
fn stored_log(client: &mut Client) -> Vec<CdcRow> {
    client
        .query(
            "SELECT global_position, stream_id, version, event_id FROM es.events ORDER BY 1",
            &[],
        )
        .expect("es.events")
        .iter()
        .map(|r| CdcRow {
            position: r.get(0),
            stream: r.get(1),
            version: r.get(2),
            event_id: r.get(3),
        })
        .collect()
}

/// The order of a stream: `(xid, event ids)` per transaction.
fn shape(txs: &[CdcTx]) -> Vec<(u32, Vec<Uuid>)> {
    txs.iter()
        .map(|tx| (tx.xid, tx.rows.iter().map(|r| r.event_id).collect()))
        .collect()
}

#[test]
fn logical_decoding_streams_committed_events_once_in_commit_order() {
    // wal2json is Debian's package for PostgreSQL 15; for 18 Debian 12 has none, and
    // scripts/setup.sh cannot build it (no source tarball in the archive it may use): on a version
    // after 15 without it the test cannot run, and says so. On 15 a missing wal2json still fails.
    if pg_major() > 15 && !has_library("wal2json") {
        report_skip(
            "cdc",
            &format!("wal2json is not installed for PostgreSQL {}", pg_major()),
        );
        return;
    }
    let began = Instant::now();
    // The guards drop in reverse order: pg_recvlogical, the slots, the database, the plugin
    // setting, wal_level, the lock.
    let _exclusive = replica::exclusive();
    let _wal_level = LogicalWalLevel::ensure();
    let _plugins = OutputPlugins::allow("wal2json");
    Slots::drop_leftovers();
    let db = TestDb::new("cdc");
    let mut admin = db.connect();
    admin
        .batch_execute(&format!(
            "CREATE PUBLICATION {PUBLICATION} FOR TABLE es.events WITH (publish = 'insert')"
        ))
        .unwrap_or_else(|e| panic!("CREATE PUBLICATION: {}", describe(&e)));
    // Slot names are cluster-wide: the database's unique name keeps runs apart.
    let wal2json_slot = format!("{WAL2JSON_SLOT}{}", db.name());
    let pgoutput_slot = format!("{PGOUTPUT_SLOT}{}", db.name());
    let slots = Slots {
        names: vec![wal2json_slot.clone(), pgoutput_slot.clone()],
    };

    // Debezium's kind of slot (the wal2json one is made by the recipe, scripts/cdc.sh, below).
    admin
        .query_one(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&pgoutput_slot],
        )
        .unwrap_or_else(|e| panic!("creating the pgoutput slot: {}", describe(&e)));

    let files = repo_dir().join("target");
    let pass1_file = files.join(format!("{}-pass1.wal2json", db.name()));
    let pass2_file = files.join(format!("{}-pass2.wal2json", db.name()));

    // Pass 1: the recipe creates its slot and streams while the writers write (the slot exists
    // and is active before the first write).
    let mut pass1 = RecvLogical::start(db.name(), &wal2json_slot, &pass1_file);
    pass1.wait_active(&mut admin, &wal2json_slot);
    let writing = Instant::now();
    let mut outcome = run_writers(&db);
    let writing = writing.elapsed();
    let end1 = emit_marker(&mut admin, "end of pass 1");
    pass1.wait_for_marker("end of pass 1");
    wait_confirmed(&mut admin, &mut pass1, &wal2json_slot, &end1);
    let (status1, stderr1) = pass1.stop();
    assert!(
        status1.success(),
        "pg_recvlogical (pass 1) exited with {status1} on SIGINT: {stderr1}"
    );
    RecvLogical::wait_released(&mut admin, &wal2json_slot);

    // Pass 2: a restarted consumer resumes after the confirmed position: it must receive the
    // next transaction and nothing of pass 1.
    let mut pass2 = RecvLogical::start(db.name(), &wal2json_slot, &pass2_file);
    pass2.wait_active(&mut admin, &wal2json_slot);
    let mut tail_client = db.connect();
    let mut tx = tail_client.transaction().expect("BEGIN");
    let tail_ids = [event_id(5_000_000), event_id(5_000_001)];
    let writes = append_ids(&mut tx, stream_id(300), "AfterRestart", &tail_ids);
    let tail = commit(tx, "after restart".to_owned(), writes);
    let tail_xid = tail.xid;
    outcome.committed.push(tail);
    emit_marker(&mut admin, "end of pass 2");
    pass2.wait_for_marker("end of pass 2");
    let (status2, stderr2) = pass2.stop();
    assert!(
        status2.success(),
        "pg_recvlogical (pass 2) exited with {status2} on SIGINT: {stderr2}"
    );

    let (pass1_txs, markers1) = parse_wal2json(&pass1.output(), "wal2json pass 1");
    let (pass2_txs, markers2) = parse_wal2json(&pass2.output(), "wal2json pass 2");
    assert_eq!(markers1, ["end of pass 1"], "pass 1's markers");
    assert!(
        markers2
            .iter()
            .all(|m| m == "end of pass 1" || m == "end of pass 2")
            && markers2.last().map(String::as_str) == Some("end of pass 2"),
        "pass 2's markers: {markers2:?}"
    );
    assert_eq!(
        shape(&pass2_txs),
        [(tail_xid, tail_ids.to_vec())],
        "the restarted consumer must get exactly the transaction after its confirmed position \
         (nothing of pass 1 again)"
    );
    let mut wal2json_txs = pass1_txs;
    wal2json_txs.extend(pass2_txs);

    // The pgoutput slot, read the way the SQL interface offers (what Debezium receives over
    // the replication protocol).
    let messages: Vec<(String, Vec<u8>)> = admin
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
             'proto_version', '1', 'publication_names', $2)",
            &[&pgoutput_slot, &PUBLICATION],
        )
        .unwrap_or_else(|e| panic!("pg_logical_slot_peek_binary_changes: {}", describe(&e)))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let pgoutput_txs = decode_pgoutput(&messages);

    let stored = stored_log(&mut admin);
    let wal2json = check_stream("wal2json", &wal2json_txs, &stored, &outcome);
    let pgoutput = check_stream("pgoutput", &pgoutput_txs, &stored, &outcome);
    assert!(
        shape(&wal2json_txs) == shape(&pgoutput_txs),
        "wal2json and pgoutput carried different transactions or orders"
    );

    // Slot hygiene: both slots go away (the guard would do it too, also on failure).
    drop(admin);
    slots
        .drop_within(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("dropping the slots: {e}"));

    println!(
        "cdc: {} events stored in {} committed transactions ({} rolled-back events, {} refused \
         commands) written in {writing:?}; wal2json (pg_recvlogical, 2 passes): {} transactions, \
         {} events, {} position inversions; pgoutput: {} transactions, {} events, {} \
         inversions; test took {:?}",
        stored.len(),
        outcome.committed.len(),
        outcome.rolled_back.len(),
        outcome.refused,
        wal2json.txs,
        wal2json.rows,
        wal2json.inversions,
        pgoutput.txs,
        pgoutput.rows,
        pgoutput.inversions,
        began.elapsed()
    );
    for file in [&pass1_file, &pass2_file] {
        let _ = std::fs::remove_file(file);
        let _ = std::fs::remove_file(file.with_extension("stderr"));
    }
}
