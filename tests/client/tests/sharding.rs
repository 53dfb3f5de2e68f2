//! Sharding by stream with PL/Proxy (docs/reference.md §11, docs/sharding.md): one proxy
//! database and four partition databases on the test cluster (PL/Proxy connects to them with
//! connection strings over the cluster's socket, like to any other server), set up by the shipped
//! `scripts/shard.sh`. Why here: routing, error propagation across the hop and a partition going
//! down only show with real connections between real databases.
//!
//! What is checked:
//! - the proxy's functions of schema `es` (declared by hand in sql/plproxy/setup.sql) have the
//!   extension's signatures in `pg_proc` (arguments with names, types and defaults, result,
//!   set-returning, kind), or the documented per-shard or own form, and every function of the
//!   extension is proxied or listed as not proxied with its reason;
//! - the proxy's `es.stream_hash` (the store's C function, as the test cluster has the library;
//!   no extension in the proxy) and its portable PL/pgSQL body `es_proxy.stream_hash_portable`
//!   equal the extension's on 10,000 random ids and the core's fixed values;
//! - where the proxy's server has the library, the routed functions returning one value are its
//!   C relay; the PL/pgSQL wrappers a proxy without it keeps give the same scenario results, and
//!   both refuse a role without EXECUTE on the twin alike;
//! - a scenario of the core and account API (appends with expected versions, ES001/ES002/ES003/
//!   ES004/22023 with their DETAILs, an idempotent retry, load_events, snapshots, the account
//!   commands and rules — ES101 with `available: …, requested: …` —, account_state/history, the
//!   Opened event the proxy builds) gives through the proxy exactly what it gives on one node:
//!   same values, same SQLSTATE, message, DETAIL and HINT;
//! - streams spread over the four partitions, each on exactly the partition `es.stream_hash(id) & 3`
//!   names, and the per-shard global log (`es.read_all(shard, after, n)`) returns each event once;
//! - 8 connections racing on one stream through the proxy with explicit expected versions: one
//!   winner per version, every loser `ES001`, nothing else, versions gapless on the partition;
//! - a partition that refuses connections (or whose connection string points at a closed port)
//!   fails the calls of its streams with 08001 naming the shard, while the other partitions keep
//!   working, and it comes back in the same proxy session;
//! - repointing a partition (a moved copy) by running the script again, which live sessions pick
//!   up; and the script's refusals: a count that is not a power of two, connection strings in
//!   the wrong order, another count than the cluster's, a proxy database with the extension.
//!
//! The figures are written to stdout (not captured by the test harness) and to
//! `target/sharding-summary.txt`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Command;
use std::sync::{Barrier, Once};
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{
    Client, Error, TestDb, Uuid, connect_with_retry, describe, host, port, repo_dir, sqlstate,
};
use postgres::types::ToSql;

/// Partitions of the test cluster (a power of two, as PL/Proxy requires).
const SHARDS: usize = 4;

/// A line of the results: to the real stdout (the harness captures `println!` only) and to the
/// summary file.
fn report(line: &str) {
    static FRESH: Once = Once::new();
    let path = repo_dir().join("target/sharding-summary.txt");
    FRESH.call_once(|| {
        let _ = std::fs::write(&path, "");
    });
    let mut out = std::io::stdout();
    let _ = writeln!(out, "sharding: {line}");
    let _ = out.flush();
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

/// One proxy database and `SHARDS` partition databases, set up with `scripts/shard.sh`; all
/// dropped at the end (the proxy first, then the partitions).
struct Sharded {
    proxy: TestDb,
    parts: Vec<TestDb>,
}

impl Sharded {
    fn new(tag: &str) -> Sharded {
        let parts: Vec<TestDb> = (0..SHARDS)
            .map(|i| TestDb::new(&format!("{tag}_p{i}")))
            .collect();
        let proxy = TestDb::empty(&format!("{tag}_px"));
        let sharded = Sharded { proxy, parts };
        let connstrs = sharded.connstrs();
        let out = shard_sh(&sharded.proxy_connstr(), &connstrs, &[]);
        assert!(
            out.ok,
            "scripts/shard.sh failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        sharded
    }

    /// The partitions' connection strings, as the proxy's server uses them (the session user is
    /// added by PL/Proxy).
    fn connstrs(&self) -> Vec<String> {
        self.parts.iter().map(|p| part_connstr(p.name())).collect()
    }

    fn proxy_connstr(&self) -> String {
        format!(
            "host={} port={} dbname={}",
            host(),
            port(),
            self.proxy.name()
        )
    }

    fn proxy(&self) -> Client {
        self.proxy.connect()
    }
}

/// A partition database's connection string for the proxy's server.
fn part_connstr(dbname: &str) -> String {
    format!(
        "host={} port={} dbname={dbname} application_name=es_proxy_test",
        host(),
        port()
    )
}

/// What a run of `scripts/shard.sh` printed.
struct ScriptRun {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `scripts/shard.sh --proxy-db PROXY --partition … EXTRA…` as the `postgres` role (its psql
/// connects to the partitions and the proxy), without other `PG*` variables of the caller.
fn shard_sh(proxy: &str, partitions: &[String], extra: &[&str]) -> ScriptRun {
    let mut command = Command::new("bash");
    command.arg(repo_dir().join("scripts/shard.sh"));
    command.arg("--proxy-db").arg(proxy);
    for p in partitions {
        command.arg("--partition").arg(p);
    }
    command.args(extra);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(&key);
        }
    }
    command.env("PGUSER", "postgres");
    let out = command.output().expect("cannot run scripts/shard.sh");
    ScriptRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An error as the client sees it: SQLSTATE, message, DETAIL, HINT.
fn error_text(err: &Error) -> String {
    match err.as_db_error() {
        Some(db) => format!(
            "{} | {} | DETAIL {:?} | HINT {:?}",
            db.code().code(),
            db.message(),
            db.detail(),
            db.hint()
        ),
        None => format!("client error: {err}"),
    }
}

/// The outcome of one step, as text: `ok <value>` or the error.
fn outcome<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => error_text(&e),
    }
}

/// Runs one query; its rows rendered as text, one `a|b|c` line per row (all columns are read
/// as text by the query itself).
fn rows(
    client: &mut Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<String>, Error> {
    Ok(client
        .query(sql, params)?
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "∅".into())
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect())
}

fn append(
    client: &mut Client,
    stream: Uuid,
    expected: Option<i64>,
    events: &[&str],
) -> Result<i64, Error> {
    let events: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    client
        .query_one(
            "SELECT es.append_events($1, $2, $3::text[]::jsonb[])",
            &[&stream, &expected, &events],
        )
        .map(|r| r.get(0))
}

fn one_i64(client: &mut Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<i64, Error> {
    client.query_one(sql, params).map(|r| r.get(0))
}

fn one_text(
    client: &mut Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<String>, Error> {
    client.query_one(sql, params).map(|r| r.get(0))
}

/// The scenario of the core and account API; every step's outcome, with the account ids the
/// store made replaced by `<account>` (they differ between two runs by nature).
fn scenario(client: &mut Client) -> Vec<(String, String)> {
    let s1 = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0001);
    let s2 = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0002);
    let missing = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_00ff);
    let typed = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0003);
    let x_id = "0193a000-0000-7000-8000-00000000000a";
    let with_id = format!(r#"{{"type":"C","n":3,"event_id":"{x_id}"}}"#);
    let mut steps: Vec<(String, String)> = Vec::new();
    let mut step = |name: &str, text: String| steps.push((name.to_owned(), text));

    step(
        "append 2 to a new stream",
        outcome(append(
            client,
            s1,
            Some(0),
            &[r#"{"type":"A","n":1}"#, r#"{"type":"B","n":2}"#],
        )),
    );
    step(
        "append expecting no stream (ES001)",
        outcome(append(client, s1, Some(0), &[r#"{"type":"C"}"#])),
    );
    step(
        "append at version 2 with an event id",
        outcome(append(client, s1, Some(2), &[&with_id])),
    );
    step(
        "idempotent retry",
        outcome(append(client, s1, Some(2), &[&with_id])),
    );
    step(
        "the id again elsewhere (ES004)",
        outcome(append(client, s1, Some(3), &[&with_id])),
    );
    step(
        "append to a missing stream with -1 (ES002)",
        outcome(append(client, s2, Some(-1), &[r#"{"type":"A"}"#])),
    );
    step("empty batch", outcome(append(client, s1, None, &[])));
    step(
        "expected version -2 (22023)",
        outcome(append(client, s1, Some(-2), &[r#"{"type":"A"}"#])),
    );
    step(
        "event without a type (ES003)",
        outcome(append(client, s1, None, &[r#"{"typ":"A"}"#])),
    );
    step(
        "NULL events (22004)",
        outcome(
            client
                .query_one("SELECT es.append_events($1, NULL, NULL::jsonb[])", &[&s1])
                .map(|r| r.get::<_, Option<i64>>(0)),
        ),
    );
    // the fourth argument, stream_type, reaches the shard
    let typed_sql = "SELECT es.append_events($1, NULL, ARRAY['{\"type\":\"A\"}']::jsonb[], $2)";
    step(
        "append naming a stream type to a new stream",
        outcome(one_i64(client, typed_sql, &[&typed, &"sharded_type"])),
    );
    step(
        "append naming another stream type (ES302)",
        outcome(one_i64(client, typed_sql, &[&typed, &"another_type"])),
    );
    step(
        "stream_version",
        outcome(one_i64(client, "SELECT es.stream_version($1)", &[&s1])),
    );
    step(
        "stream_version of a missing stream",
        outcome(one_i64(client, "SELECT es.stream_version($1)", &[&missing])),
    );
    // event ids the store made (UUIDv7) differ between two runs: shown only when the client gave one
    let events_sql = "SELECT version::text, event_type, data::text, \
                      CASE WHEN data ? 'event_id' THEN event_id::text ELSE 'made by the store' END, \
                      event_version::text, (occurred_at = recorded_at)::text \
                      FROM es.load_events($1, $2, $3)";
    step(
        "load_events all",
        outcome(rows(client, events_sql, &[&s1, &0i64, &None::<i64>])),
    );
    step(
        "load_events after 1, at most 1",
        outcome(rows(client, events_sql, &[&s1, &1i64, &Some(1i64)])),
    );
    step(
        "save_snapshot",
        outcome(
            client
                .execute("SELECT es.save_snapshot($1, 2, '{\"x\":1}')", &[&s1])
                .map(|_| ()),
        ),
    );
    step(
        "save_snapshot past the stream (ES005)",
        outcome(
            client
                .execute("SELECT es.save_snapshot($1, 9, '{}')", &[&s1])
                .map(|_| ()),
        ),
    );
    let snap_sql = "SELECT version::text, state::text FROM es.load_snapshot($1, $2)";
    step(
        "load_snapshot",
        outcome(rows(client, snap_sql, &[&s1, &None::<i64>])),
    );
    step(
        "load_snapshot at 1 (none)",
        outcome(rows(client, snap_sql, &[&s1, &Some(1i64)])),
    );

    // the life of a stream (outcomes that carry the deletion time stay out: they differ
    // between the two runs)
    step(
        "truncate_stream before 2",
        outcome(one_i64(client, "SELECT es.truncate_stream($1, 2)", &[&s1])),
    );
    step(
        "load_events below the cut (ES008)",
        outcome(rows(client, events_sql, &[&s1, &0i64, &None::<i64>])),
    );
    step(
        "delete_stream at a wrong version (ES001)",
        outcome(one_i64(client, "SELECT es.delete_stream($1, 1)", &[&s1])),
    );
    step(
        "delete_stream",
        outcome(one_i64(client, "SELECT es.delete_stream($1)", &[&s1])),
    );
    step(
        "load_events of a deleted stream (none)",
        outcome(rows(client, events_sql, &[&s1, &2i64, &None::<i64>])),
    );
    step(
        "undelete_stream",
        outcome(one_i64(client, "SELECT es.undelete_stream($1)", &[&s1])),
    );
    step(
        "undelete_stream of a live stream (55000)",
        outcome(one_i64(client, "SELECT es.undelete_stream($1)", &[&s1])),
    );
    step(
        "delete_stream of a missing stream (ES002)",
        outcome(one_i64(client, "SELECT es.delete_stream($1)", &[&missing])),
    );

    // the account commands and rules
    let account: Uuid = match client.query_one("SELECT es.open_account('Alice', 100)", &[]) {
        Ok(row) => row.get(0),
        Err(e) => panic!("es.open_account failed: {}", describe(&e)),
    };
    let cmd = |client: &mut Client, sql: &str, params: &[&(dyn ToSql + Sync)]| {
        outcome(one_i64(client, sql, params))
    };
    step(
        "deposit 500",
        cmd(client, "SELECT es.deposit($1, 500, 'salary')", &[&account]),
    );
    step(
        "withdraw 200",
        cmd(client, "SELECT es.withdraw($1, 200, 'rent')", &[&account]),
    );
    step(
        "overdraft (ES101)",
        cmd(client, "SELECT es.withdraw($1, 10000, 'car')", &[&account]),
    );
    step(
        "withdraw 0 (ES103)",
        cmd(client, "SELECT es.withdraw($1, 0, 'nothing')", &[&account]),
    );
    step(
        "deposit at a stale version (ES001)",
        cmd(client, "SELECT es.deposit($1, 5, 'late', 1)", &[&account]),
    );
    step(
        "deposit at the current version",
        cmd(
            client,
            "SELECT es.deposit($1, 5, 'on time', 3)",
            &[&account],
        ),
    );
    step(
        "freeze",
        cmd(client, "SELECT es.freeze_account($1, 'audit')", &[&account]),
    );
    step(
        "deposit while frozen (ES102)",
        cmd(client, "SELECT es.deposit($1, 5)", &[&account]),
    );
    step(
        "close",
        cmd(client, "SELECT es.close_account($1, 'bye')", &[&account]),
    );
    step(
        "close again (ES102)",
        cmd(client, "SELECT es.close_account($1, 'again')", &[&account]),
    );
    step(
        "deposit to a missing account (ES002)",
        cmd(client, "SELECT es.deposit($1, 5)", &[&missing]),
    );
    step(
        "deposit to a stream that is not an account (ES104)",
        cmd(client, "SELECT es.deposit($1, 5)", &[&s1]),
    );
    step(
        "open with a NULL holder (22004)",
        outcome(one_text(
            client,
            "SELECT es.open_account(NULL, 0)::text",
            &[],
        )),
    );
    step(
        "open with a negative balance (ES103)",
        outcome(one_text(
            client,
            "SELECT es.open_account('Bob', -1)::text",
            &[],
        )),
    );
    step(
        "append an overdraft to the account (ES101 on every write path)",
        outcome(append(
            client,
            account,
            None,
            &[r#"{"type":"Withdrawn","amount_cents":1,"description":"x"}"#],
        )),
    );
    step(
        "account_state",
        outcome(one_text(
            client,
            "SELECT es.account_state($1)::text",
            &[&account],
        )),
    );
    step(
        "account_state at version 3",
        outcome(one_text(
            client,
            "SELECT es.account_state($1, at_version => 3)::text",
            &[&account],
        )),
    );
    step(
        "account_state at version 99 (22023)",
        outcome(one_text(
            client,
            "SELECT es.account_state($1, at_version => 99)::text",
            &[&account],
        )),
    );
    step(
        "account_history",
        outcome(rows(
            client,
            "SELECT version::text, event_type, amount_cents::text, balance_cents::text, status, \
             description FROM es.account_history($1) ORDER BY version",
            &[&account],
        )),
    );
    // the events the commands (and, through the proxy, the proxy's open_account) wrote: the
    // seed's whole shape, consistent with the row
    step(
        "the account's events",
        outcome(rows(
            client,
            "SELECT version::text, event_type, \
                    (data - 'event_id' - 'aggregate_id' - 'occurred_at')::text, \
                    (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(data) k), \
                    ((data->>'event_id')::uuid = event_id AND (data->>'aggregate_id')::uuid = stream_id \
                     AND (data->>'occurred_at')::timestamptz = occurred_at \
                     AND occurred_at = recorded_at)::text \
             FROM es.load_events($1)",
            &[&account],
        )),
    );
    // A NULL stream or account id, for every function routed by it: PL/Proxy cannot route a NULL
    // (its hash is NULL), so the proxy must give the one-node 22004 itself.
    let null_id: [(&str, &str); 14] = [
        ("delete_stream", "SELECT es.delete_stream(NULL)::text"),
        ("undelete_stream", "SELECT es.undelete_stream(NULL)::text"),
        (
            "truncate_stream",
            "SELECT es.truncate_stream(NULL, 1)::text",
        ),
        (
            "append_events",
            r#"SELECT es.append_events(NULL, NULL, ARRAY['{"type":"A"}']::jsonb[])::text"#,
        ),
        (
            "load_events",
            "SELECT count(*)::text FROM es.load_events(NULL)",
        ),
        ("stream_version", "SELECT es.stream_version(NULL)::text"),
        (
            "save_snapshot",
            "SELECT es.save_snapshot(NULL, 1, '{}')::text",
        ),
        (
            "load_snapshot",
            "SELECT count(*)::text FROM es.load_snapshot(NULL)",
        ),
        ("deposit", "SELECT es.deposit(NULL, 5, 'x')::text"),
        ("withdraw", "SELECT es.withdraw(NULL, 5, 'x')::text"),
        (
            "freeze_account",
            "SELECT es.freeze_account(NULL, 'x')::text",
        ),
        ("close_account", "SELECT es.close_account(NULL, 'x')::text"),
        ("account_state", "SELECT es.account_state(NULL)::text"),
        (
            "account_history",
            "SELECT count(*)::text FROM es.account_history(NULL)",
        ),
    ];
    for (function, sql) in null_id {
        step(
            &format!("{function} with a NULL id (22004)"),
            outcome(one_text(client, sql, &[])),
        );
    }
    let id = account.to_string();
    steps
        .into_iter()
        .map(|(name, text)| (name, text.replace(&id, "<account>")))
        .collect()
}

#[test]
fn the_proxy_hash_is_the_store_hash() {
    let sharded = Sharded::new("shard_hash");
    let mut proxy = sharded.proxy();
    let mut part = sharded.parts[0].connect();
    let mut ids: Vec<Uuid> = (0..10_000).map(|_| Uuid::new_v4()).collect();
    ids.extend([Uuid::nil(), Uuid::max(), Uuid::from_u128(1)]);
    let sql = "SELECT array_agg(es.stream_hash(u) ORDER BY n) FROM unnest($1::uuid[]) WITH ORDINALITY AS t(u, n)";
    let in_store: Vec<i32> = part.query_one(sql, &[&ids]).unwrap().get(0);
    // the test cluster has the event_store library, so the proxy's es.stream_hash is the store's
    // C function (sql/plproxy/setup.sql); the PL/pgSQL body a proxy without the library gets is
    // es_proxy.stream_hash_portable, checked here as well
    let language: String = proxy
        .query_one(
            "SELECT l.lanname::text FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
              WHERE p.oid = 'es.stream_hash(uuid)'::regprocedure",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        language, "c",
        "the proxy's es.stream_hash is not the library's C function although the library is installed"
    );
    for (name, sql) in [
        ("es.stream_hash", sql.to_string()),
        (
            "es_proxy.stream_hash_portable",
            sql.replace("es.stream_hash", "es_proxy.stream_hash_portable"),
        ),
    ] {
        let on_proxy: Vec<i32> = proxy.query_one(sql.as_str(), &[&ids]).unwrap().get(0);
        assert_eq!(on_proxy.len(), ids.len());
        let differ = on_proxy
            .iter()
            .zip(&in_store)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differ, 0, "the proxy's {name} differs from the store's");
        // the core's fixed values (crates/event_store_core/src/subscription.rs)
        assert_eq!(
            &on_proxy[ids.len() - 3..],
            &[1_768_495_365, 906_459_637, 1_751_717_746],
            "{name}"
        );
    }
    report(&format!(
        "es.stream_hash: the proxy's (the library's C function) and the portable plpgsql FNV-1a \
         equal the extension's on {} ids",
        ids.len()
    ));
}

/// How a function of schema `es` on the proxy stands to the extension's function of the same
/// name (compared in [`the_proxy_functions_have_the_store_signatures`]).
enum Proxied {
    /// The extension's arguments (names, types, modes, defaults) and result, unchanged: a client
    /// sends the same SQL to the proxy as to one node.
    Same,
    /// On the shard a caller names: `shard integer` first, then the extension's arguments and
    /// its result, or the result given here (with the reason) where the rows gain the shard
    /// number.
    OnOneShard(Option<(&'static str, &'static str)>),
    /// Differs on purpose: the proxy's arguments and result, the extension's arguments they
    /// stand for (so a change of either side fails the test), and why.
    Own {
        arguments: &'static str,
        result: &'static str,
        store_arguments: &'static str,
        why: &'static str,
    },
    /// The proxy's own, not a function of the extension.
    ProxyOnly(&'static str),
}

/// Every function of schema `es` that sql/plproxy/setup.sql declares, by its arguments as
/// `pg_get_function_identity_arguments` prints them.
const PROXIED: &[(&str, &str, Proxied)] = &[
    // routed by stream (RUN ON es_proxy.route(stream_id), i.e. es.stream_hash(stream_id))
    (
        "append_events",
        "stream_id uuid, expected_version bigint, events jsonb[], stream_type text",
        Proxied::Same,
    ),
    (
        "load_events",
        "stream_id uuid, from_version bigint, max_count bigint",
        Proxied::Same,
    ),
    ("stream_version", "stream_id uuid", Proxied::Same),
    (
        "save_snapshot",
        "stream_id uuid, version bigint, state jsonb",
        Proxied::Same,
    ),
    (
        "load_snapshot",
        "stream_id uuid, at_version bigint",
        Proxied::Same,
    ),
    (
        "delete_stream",
        "stream_id uuid, expected_version bigint, hard boolean",
        Proxied::Same,
    ),
    ("undelete_stream", "stream_id uuid", Proxied::Same),
    (
        "truncate_stream",
        "stream_id uuid, before_version bigint",
        Proxied::Same,
    ),
    // the proxy makes the id and appends the Opened event on its shard: same signature
    (
        "open_account",
        "holder text, initial_balance_cents bigint",
        Proxied::Same,
    ),
    (
        "deposit",
        "account_id uuid, amount_cents bigint, description text, expected_version bigint",
        Proxied::Same,
    ),
    (
        "withdraw",
        "account_id uuid, amount_cents bigint, description text, expected_version bigint",
        Proxied::Same,
    ),
    (
        "freeze_account",
        "account_id uuid, reason text",
        Proxied::Same,
    ),
    (
        "close_account",
        "account_id uuid, reason text",
        Proxied::Same,
    ),
    (
        "account_state",
        "account_id uuid, as_of timestamp with time zone, at_version bigint",
        Proxied::Same,
    ),
    ("account_history", "account_id uuid", Proxied::Same),
    // the global log and subscriptions of one shard: a global position is (shard, position)
    (
        "read_all",
        "shard integer, after_position bigint, max_count bigint",
        Proxied::Own {
            arguments: "shard integer, after_position bigint, max_count bigint",
            result: "SETOF es.shard_events",
            store_arguments: "after_position bigint DEFAULT 0, max_count bigint DEFAULT 1000",
            why: "one shard's log, its rows with the shard number; no defaults, so that a one-node \
                  call es.read_all(after, n) fails instead of reading shard `after`",
        },
    ),
    (
        "poll",
        "shard integer, name text, partition integer, max_count bigint, consumer text, wait_ms integer",
        // the rows carry the shard number (es.shard_events: es.events and `shard`)
        Proxied::OnOneShard(Some(("SETOF es.shard_events", "SETOF es.events"))),
    ),
    (
        "ack",
        "shard integer, name text, partition integer, \"position\" bigint, consumer text",
        Proxied::OnOneShard(None),
    ),
    (
        "nack",
        "shard integer, name text, partition integer, \"position\" bigint, error text, consumer text",
        Proxied::OnOneShard(None),
    ),
    (
        "claim",
        "shard integer, name text, consumer text, lease interval",
        Proxied::OnOneShard(None),
    ),
    (
        "release",
        "shard integer, name text, consumer text",
        Proxied::OnOneShard(None),
    ),
    (
        "replay_parked",
        "shard integer, name text",
        Proxied::OnOneShard(None),
    ),
    (
        "wait",
        "shard integer, name text, partition integer, timeout_ms integer",
        Proxied::OnOneShard(None),
    ),
    (
        "create_subscription",
        "shard integer, name text, start_after bigint, event_types text[], stream_type text, partitions integer, max_attempts integer",
        Proxied::OnOneShard(None),
    ),
    (
        "drop_subscription",
        "shard integer, name text",
        Proxied::OnOneShard(None),
    ),
    // on every shard at once
    (
        "create_subscription",
        "name text, start_after bigint, event_types text[], stream_type text, partitions integer, max_attempts integer",
        Proxied::Same,
    ),
    ("drop_subscription", "name text", Proxied::Same),
    // local to the proxy
    ("stream_hash", "stream_id uuid", Proxied::Same),
    (
        "shard_count",
        "",
        Proxied::ProxyOnly("the number of partitions of cluster es_shards"),
    ),
    (
        "shard_of",
        "stream_id uuid",
        Proxied::ProxyOnly("the partition a stream lives on"),
    ),
    (
        "shards",
        "",
        Proxied::ProxyOnly("the partitions and their connection strings"),
    ),
];

/// A reason of [`NOT_PROXIED`].
const AGGREGATE: &str = "an aggregate over rows the caller selects: PL/Proxy routes calls, \
     not aggregates; run it on the partition that holds the rows";
/// A reason of [`NOT_PROXIED`].
const AGGREGATE_STEP: &str = "a support function of the aggregate es.account_replay / es.replay";
/// A reason of [`NOT_PROXIED`].
const DEFINITION: &str = "a definition every partition needs (like CREATE EXTENSION): run it \
     on each partition; the proxy does not fan definitions out";
/// A reason of [`NOT_PROXIED`].
const PROJECTIONS: &str = "projections run in each partition's database, where their read \
     model lives: managed on each partition";
/// A reason of [`NOT_PROXIED`].
const RETENTION: &str = "retention and archiving run in each partition's database (its own \
     worker and policies): managed on each partition";
/// A reason of [`NOT_PROXIED`].
const REBUILD: &str =
    "rebuilds the states of a type from the partition's own streams: run on each partition";
/// A reason of [`NOT_PROXIED`].
const TRIGGER: &str = "a trigger function of the store's own tables";
/// A reason of [`NOT_PROXIED`].
const PER_DATABASE: &str = "about one server or database: asked on each partition";
/// A reason of [`NOT_PROXIED`].
const KEYS: &str =
    "crypto-shredding keeps a subject's keys in each partition's database: run on each partition";
/// A reason of [`NOT_PROXIED`].
const NOT_ROUTED_YET: &str = "a stream's function not routed yet (it could be, like \
     es.account_state): call it on the partition es.shard_of(stream_id) names";

/// The extension's functions of schema `es` that the proxy does not declare, each with why.
const NOT_PROXIED: &[(&str, &str)] = &[
    (
        "account_check",
        "the account's rules as a check function of (state, event): no stream to route by, the \
         partitions run it inside their appends",
    ),
    (
        "account_evolve",
        "the account's rules as an evolve function of (state, event): no stream to route by, the \
         partitions run it inside their appends",
    ),
    ("account_replay", AGGREGATE),
    ("account_replay_final", AGGREGATE_STEP),
    ("account_replay_from_step", AGGREGATE_STEP),
    ("account_replay_step", AGGREGATE_STEP),
    ("replay", AGGREGATE),
    ("replay_final", AGGREGATE_STEP),
    ("replay_from_step", AGGREGATE_STEP),
    ("replay_step", AGGREGATE_STEP),
    ("define_aggregate", DEFINITION),
    ("alter_aggregate", DEFINITION),
    ("drop_aggregate", DEFINITION),
    ("define_upcaster", DEFINITION),
    ("drop_upcaster", DEFINITION),
    ("define_personal_data", DEFINITION),
    ("rebuild_batch", REBUILD),
    ("rebuild_states", REBUILD),
    ("create_projection", PROJECTIONS),
    ("drop_projection", PROJECTIONS),
    ("pause_projection", PROJECTIONS),
    ("resume_projection", PROJECTIONS),
    ("reset_projection", PROJECTIONS),
    ("wait_for_projection", PROJECTIONS),
    ("enable_account_projections", PROJECTIONS),
    (
        "project_account_balances",
        "the handler of a projection, called by its partition's worker",
    ),
    (
        "project_account_transactions",
        "the handler of a projection, called by its partition's worker",
    ),
    (
        "run_handler",
        "called by a partition's projection worker around a handler",
    ),
    (
        "partition_lag",
        "the lag of one subscription partition; the proxy's view es.subscriptions gives every \
         shard's",
    ),
    ("archive", RETENTION),
    ("pause_retention", RETENTION),
    ("resume_retention", RETENTION),
    ("set_retention", RETENTION),
    ("set_retention_paused", RETENTION),
    ("wake_retention", RETENTION),
    ("retention_batch", RETENTION),
    ("retention_expired", RETENTION),
    ("remove_events", RETENTION),
    (
        "purge_stream",
        "the removal step of es.delete_stream(hard) and of retention, run inside the partition",
    ),
    ("forget", KEYS),
    ("reveal", KEYS),
    ("key_provider_call", KEYS),
    ("key_provider_get", KEYS),
    ("tracing_stats", PER_DATABASE),
    ("worker_status", PER_DATABASE),
    ("keep_archive_shape", TRIGGER),
    ("refuse_archive_change", TRIGGER),
    ("refuse_history_change", TRIGGER),
    ("registry_changed", TRIGGER),
    ("stream_type_rules_replace", TRIGGER),
    ("projections_changed", TRIGGER),
    ("state", NOT_ROUTED_YET),
    ("history", NOT_ROUTED_YET),
];

/// A function of schema `es` as the catalogs describe it.
#[derive(Debug, Clone, PartialEq)]
struct Signature {
    name: String,
    identity: String,
    /// Names, modes, types and defaults (`pg_get_function_arguments`).
    arguments: String,
    /// `pg_get_function_result`: `SETOF …` and `TABLE(…)` included.
    result: String,
    retset: bool,
    /// `f` function, `p` procedure, `a` aggregate, `w` window function.
    kind: String,
}

/// The functions of schema `es` of the database `client` is connected to; `members_only` keeps
/// the extension's member functions (not a user's function created in its schema).
fn es_functions(client: &mut Client, members_only: bool) -> Vec<Signature> {
    client
        .query(
            "SELECT p.proname::text, pg_get_function_identity_arguments(p.oid),
                    pg_get_function_arguments(p.oid), coalesce(pg_get_function_result(p.oid), ''),
                    p.proretset, p.prokind::text
               FROM pg_proc p
              WHERE p.pronamespace = 'es'::regnamespace
                AND (NOT $1 OR EXISTS (SELECT 1 FROM pg_depend d
                                        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                          AND d.refclassid = 'pg_extension'::regclass
                                          AND d.deptype = 'e'))
              ORDER BY 1, 2",
            &[&members_only],
        )
        .expect("the functions of schema es")
        .iter()
        .map(|r| Signature {
            name: r.get(0),
            identity: r.get(1),
            arguments: r.get(2),
            result: r.get(3),
            retset: r.get(4),
            kind: r.get(5),
        })
        .collect()
}

/// The columns of view `es.subscriptions` as `name type` lines, in order.
fn subscriptions_view_columns(client: &mut Client) -> Vec<String> {
    client
        .query(
            "SELECT attname || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute
              WHERE attrelid = 'es.subscriptions'::regclass AND attnum > 0 AND NOT attisdropped
              ORDER BY attnum",
            &[],
        )
        .expect("the columns of es.subscriptions")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The proxy declares about ninety functions by hand (sql/plproxy/setup.sql, with bodies of its
/// own: routing, the store's errors without PL/Proxy's decorations), so nothing but this test
/// keeps them in step with the extension: each proxy function of schema `es` is compared, by
/// [`PROXIED`], with the extension's function of the same name in `pg_proc` (arguments with their
/// names, types, modes and defaults, result, set-returning, kind), every extension function is
/// either proxied or on [`NOT_PROXIED`] with its reason, and the proxy's `es.subscriptions` is the
/// extension's with the shard number first. A function added to the extension, or a signature
/// changed on either side, fails here until the proxy (or one of the lists) follows.
#[test]
fn the_proxy_functions_have_the_store_signatures() {
    let sharded = Sharded::new("shard_sig");
    let proxy = es_functions(&mut sharded.proxy(), false);
    let store = es_functions(&mut sharded.parts[0].connect(), true);
    let mut problems: Vec<String> = Vec::new();
    let mut covered: BTreeSet<(String, String)> = BTreeSet::new();
    let store_fn = |name: &str, identity: &str| {
        store
            .iter()
            .find(|s| s.name == name && s.identity == identity)
    };
    let declared: BTreeSet<(String, String)> = PROXIED
        .iter()
        .map(|(n, i, _)| ((*n).to_owned(), (*i).to_owned()))
        .collect();
    assert_eq!(
        declared.len(),
        PROXIED.len(),
        "PROXIED lists a function twice"
    );
    for p in &proxy {
        if !declared.contains(&(p.name.clone(), p.identity.clone())) {
            problems.push(format!(
                "the proxy declares es.{}({}) which PROXIED does not list",
                p.name, p.identity
            ));
        }
    }
    for (name, identity, how) in PROXIED {
        let Some(p) = proxy
            .iter()
            .find(|p| p.name == *name && p.identity == *identity)
        else {
            problems.push(format!(
                "PROXIED lists es.{name}({identity}) but the proxy does not declare it"
            ));
            continue;
        };
        // What the extension's function must be for the proxy's to be right.
        let (store_identity, store_arguments, store_result) = match how {
            Proxied::ProxyOnly(what) => {
                if store.iter().any(|s| s.name == *name) {
                    problems.push(format!(
                        "es.{name} is the proxy's own ({what}), but the extension has it too"
                    ));
                }
                continue;
            }
            Proxied::Same => (p.identity.clone(), p.arguments.clone(), p.result.clone()),
            Proxied::OnOneShard(result) => {
                let strip = |text: &str| {
                    text.strip_prefix("shard integer")
                        .map(|rest| rest.strip_prefix(", ").unwrap_or(rest).to_owned())
                };
                let (Some(identity), Some(arguments)) = (strip(&p.identity), strip(&p.arguments))
                else {
                    problems.push(format!(
                        "es.{name}({}) is on one shard (PROXIED) but does not start with \
                         `shard integer`",
                        p.identity
                    ));
                    continue;
                };
                let result = match result {
                    Some((proxy_result, store_result)) => {
                        if p.result != *proxy_result {
                            problems.push(format!(
                                "es.{name}({identity}) on the proxy returns {}, PROXIED says \
                                 {proxy_result}",
                                p.result
                            ));
                        }
                        (*store_result).to_owned()
                    }
                    None => p.result.clone(),
                };
                (identity, arguments, result)
            }
            Proxied::Own {
                arguments,
                result,
                store_arguments,
                why,
            } => {
                if p.arguments != *arguments || p.result != *result {
                    problems.push(format!(
                        "es.{name} on the proxy: ({}) RETURNS {}; PROXIED says ({arguments}) \
                         RETURNS {result} ({why})",
                        p.arguments, p.result
                    ));
                }
                let Some(s) = store
                    .iter()
                    .find(|s| s.name == *name && s.arguments == *store_arguments)
                else {
                    problems.push(format!(
                        "es.{name}({store_arguments}), which the proxy's es.{name} stands for, \
                         is not a function of the extension: {:?}",
                        store
                            .iter()
                            .filter(|s| s.name == *name)
                            .map(|s| &s.arguments)
                            .collect::<Vec<_>>()
                    ));
                    continue;
                };
                covered.insert((s.name.clone(), s.identity.clone()));
                continue;
            }
        };
        let Some(s) = store_fn(name, &store_identity) else {
            problems.push(format!(
                "the proxy's es.{name}({}) stands for es.{name}({store_identity}), which the \
                 extension does not have (it has: {:?})",
                p.identity,
                store
                    .iter()
                    .filter(|s| s.name == *name)
                    .map(|s| &s.identity)
                    .collect::<Vec<_>>()
            ));
            continue;
        };
        covered.insert((s.name.clone(), s.identity.clone()));
        if s.arguments != store_arguments
            || s.result != store_result
            || s.retset != p.retset
            || s.kind != p.kind
        {
            problems.push(format!(
                "es.{name}: the proxy's signature drifted from the extension's:\n  proxy:     ({}) \
                 RETURNS {} (set: {}, kind {})\n  extension: ({}) RETURNS {} (set: {}, kind {})",
                p.arguments, p.result, p.retset, p.kind, s.arguments, s.result, s.retset, s.kind
            ));
        }
    }
    let not_proxied: BTreeMap<&str, &str> = NOT_PROXIED.iter().copied().collect();
    assert_eq!(
        not_proxied.len(),
        NOT_PROXIED.len(),
        "NOT_PROXIED lists a name twice"
    );
    let mut unlisted = Vec::new();
    let mut used = BTreeSet::new();
    for s in &store {
        if covered.contains(&(s.name.clone(), s.identity.clone())) {
            continue;
        }
        if not_proxied.contains_key(s.name.as_str()) {
            used.insert(s.name.as_str());
        } else {
            unlisted.push(format!("es.{}({})", s.name, s.identity));
        }
    }
    if !unlisted.is_empty() {
        problems.push(format!(
            "extension functions neither proxied nor on NOT_PROXIED (with the reason): {}",
            unlisted.join(", ")
        ));
    }
    for name in not_proxied.keys() {
        if !used.contains(name) {
            problems.push(format!(
                "NOT_PROXIED lists es.{name}, which is proxied or not a function of the extension"
            ));
        }
    }
    let mut want_view = vec!["shard integer".to_owned()];
    want_view.extend(subscriptions_view_columns(&mut sharded.parts[0].connect()));
    let view = subscriptions_view_columns(&mut sharded.proxy());
    if view != want_view {
        problems.push(format!(
            "the proxy's es.subscriptions is not the extension's with the shard first:\n  proxy: \
             {view:?}\n  wanted: {want_view:?}"
        ));
    }
    assert!(
        problems.is_empty(),
        "sql/plproxy/setup.sql and the extension disagree:\n{}",
        problems.join("\n")
    );
    report(&format!(
        "signatures: {} proxy functions of schema es match the extension's pg_proc ({} extension \
         functions covered, {} names not proxied on purpose)",
        proxy.len(),
        covered.len(),
        NOT_PROXIED.len()
    ));
}

#[test]
fn the_api_through_the_proxy_gives_the_one_node_results() {
    let sharded = Sharded::new("shard_api");
    let single = TestDb::new("shard_api_single");
    let one_node = scenario(&mut single.connect());
    let t0 = Instant::now();
    // the session stays open until its connections to the partitions have been looked at
    let mut proxy = sharded.proxy();
    let through = scenario(&mut proxy);
    let elapsed = t0.elapsed();
    assert_eq!(one_node.len(), through.len());
    let mut differences = Vec::new();
    for ((name, a), (_, b)) in one_node.iter().zip(&through) {
        if a != b {
            differences.push(format!("{name}:\n  one node: {a}\n  proxy:    {b}"));
        }
    }
    assert!(
        differences.is_empty(),
        "the proxy differs from one node:\n{}",
        differences.join("\n")
    );
    // the errors did come through with their codes and DETAILs (not just equal by accident)
    let find = |step: &str| {
        &through
            .iter()
            .find(|(n, _)| n == step)
            .unwrap_or_else(|| panic!("no step {step}"))
            .1
    };
    assert!(
        find("append expecting no stream (ES001)").starts_with("ES001 | wrong expected version")
            && find("append expecting no stream (ES001)")
                .contains(r#"DETAIL Some("expected: 0 (no stream), actual: 2")"#),
        "{}",
        find("append expecting no stream (ES001)")
    );
    assert!(
        find("overdraft (ES101)").contains(r#"DETAIL Some("available: 400, requested: 10000")"#),
        "{}",
        find("overdraft (ES101)")
    );
    assert_eq!(find("idempotent retry"), "ok 3");
    assert_eq!(find("append naming a stream type to a new stream"), "ok 1");
    assert!(
        find("append naming another stream type (ES302)").starts_with("ES302 | "),
        "{}",
        find("append naming another stream type (ES302)")
    );
    for (name, text) in &through {
        assert!(
            !text.contains("REMOTE") && !text.contains("Remote detail"),
            "{name}: PL/Proxy's decoration reached the client: {text}"
        );
    }
    // those calls went over the relay's own wire: the partitions ran its prepared statements
    let wired = partition_statements(&sharded);
    assert!(
        wired
            .iter()
            .any(|q| q.starts_with("SELECT es.") && q.contains("($1") && !q.contains("::")),
        "no prepared statement of the relay on the partitions: {wired:?}"
    );
    // and through the PL/Proxy twins (es.proxy_wire off) the scenario gives the same results
    let twin = Sharded::new("shard_api_twin");
    let mut twin_proxy = twin.proxy();
    twin_proxy.batch_execute("SET es.proxy_wire = off").unwrap();
    let through_twin = scenario(&mut twin_proxy);
    assert_eq!(
        through_twin, through,
        "the relay's wire and the PL/Proxy twins differ"
    );
    assert!(
        partition_statements(&twin)
            .iter()
            .all(|q| !q.contains("($1,") || q.contains("::")),
        "es.proxy_wire = off still sent the relay's statements"
    );
    let errors = through.iter().filter(|(_, t)| !t.starts_with("ok")).count();
    report(&format!(
        "API scenario: {} steps ({} of them errors: ES001-ES005, ES101-ES104, ES302, 22004, 22023) equal \
         through the proxy and on one node (SQLSTATE, message, DETAIL, HINT); {:.0} ms through the proxy",
        through.len(),
        errors,
        elapsed.as_secs_f64() * 1000.0
    ));
    report(&format!(
        "  e.g. {}",
        find("append expecting no stream (ES001)")
    ));
}

/// The last statement of each session the proxy's server holds on the partitions of `sharded`
/// (their `application_name` is the one of [`part_connstr`]).
fn partition_statements(sharded: &Sharded) -> Vec<String> {
    let names: Vec<String> = sharded.parts.iter().map(|p| p.name().to_owned()).collect();
    let mut admin = connect_with_retry("postgres", Duration::from_secs(10)).unwrap();
    admin
        .query(
            "SELECT query FROM pg_stat_activity
              WHERE datname = ANY($1) AND application_name = 'es_proxy_test' ORDER BY query",
            &[&names],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The language of the proxy's `es.append_events` (`c`: the library's relay; `plpgsql`: the
/// wrapper with an EXCEPTION block).
fn append_language(client: &mut Client) -> String {
    client
        .query_one(
            "SELECT l.lanname::text FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
              WHERE p.oid = 'es.append_events(uuid, bigint, jsonb[], text)'::regprocedure",
            &[],
        )
        .unwrap()
        .get(0)
}

/// What a role without EXECUTE on `es_proxy.append_events` gets from `es.append_events` (the
/// SQL call of the twin refuses it, and the relay checks the same privilege).
fn append_without_execute(proxy: &mut Client, role: &str) -> String {
    proxy
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role};
             GRANT USAGE ON SCHEMA es, es_proxy TO {role};
             REVOKE EXECUTE ON FUNCTION es_proxy.append_events(uuid, bigint, jsonb[], text) FROM PUBLIC"
        ))
        .unwrap();
    proxy.batch_execute(&format!("SET ROLE {role}")).unwrap();
    let refused = append(proxy, Uuid::from_u128(7), None, &[r#"{"type":"Refused"}"#]);
    proxy
        .batch_execute(&format!(
            "RESET ROLE;
             GRANT EXECUTE ON FUNCTION es_proxy.append_events(uuid, bigint, jsonb[], text) TO PUBLIC;
             REVOKE ALL ON SCHEMA es, es_proxy FROM {role}; DROP ROLE {role}"
        ))
        .unwrap();
    outcome(refused)
}

#[test]
fn the_relay_and_the_plpgsql_fallback_give_the_same_errors() {
    // The test cluster has the library, so the routed functions returning one value are its C
    // relay (sql/plproxy/setup.sql's last block); a proxy whose server has no library keeps the
    // PL/pgSQL wrappers above that block: made here by running the file up to it again, and
    // then the whole scenario must still give the one-node results.
    let sharded = Sharded::new("shard_fallback");
    let mut proxy = sharded.proxy();
    assert_eq!(append_language(&mut proxy), "c");
    let relay_refusal = append_without_execute(&mut proxy, "es_ct_shard_relay_role");
    let setup = std::fs::read_to_string(repo_dir().join("sql/plproxy/setup.sql")).unwrap();
    let marker = "-- The routed functions returning one value, as the store's C relay";
    let head = &setup[..setup
        .find(marker)
        .expect("the relay block's comment in setup.sql")];
    proxy
        .batch_execute(&format!("SET client_min_messages = warning; {head}"))
        .unwrap();
    assert_eq!(append_language(&mut proxy), "plpgsql");
    let fallback_refusal = append_without_execute(&mut proxy, "es_ct_shard_fallback_role");
    assert!(
        relay_refusal.starts_with("42501 | permission denied for function append_events"),
        "{relay_refusal}"
    );
    assert_eq!(relay_refusal, fallback_refusal);

    let single = TestDb::new("shard_fallback_single");
    let one_node = scenario(&mut single.connect());
    let through = scenario(&mut proxy);
    let differences: Vec<String> = one_node
        .iter()
        .zip(&through)
        .filter(|((_, a), (_, b))| a != b)
        .map(|((name, a), (_, b))| format!("{name}:\n  one node: {a}\n  proxy:    {b}"))
        .collect();
    assert_eq!(one_node.len(), through.len());
    assert!(
        differences.is_empty(),
        "the PL/pgSQL proxy differs from one node:\n{}",
        differences.join("\n")
    );
    report(&format!(
        "fallback: the {} scenario steps through the PL/pgSQL wrappers equal one node as through the \
         relay; without EXECUTE on the twin both give {relay_refusal}",
        through.len()
    ));
}

#[test]
fn streams_spread_over_the_partitions_and_each_shard_log_reads_back() {
    let sharded = Sharded::new("shard_spread");
    let mut proxy = sharded.proxy();
    let streams: Vec<Uuid> = (0..400).map(|_| Uuid::new_v4()).collect();
    let t0 = Instant::now();
    for (i, s) in streams.iter().enumerate() {
        let event = format!(r#"{{"type":"Spread","i":{i}}}"#);
        let v = append(&mut proxy, *s, Some(0), &[&event, r#"{"type":"Second"}"#])
            .unwrap_or_else(|e| panic!("append through the proxy: {}", describe(&e)));
        assert_eq!(v, 2);
    }
    let per_call = t0.elapsed().as_secs_f64() * 1e6 / streams.len() as f64;
    // where each stream is: on exactly one partition, the one its hash names
    let mut counts = [0usize; SHARDS];
    let mut placed: BTreeMap<Uuid, usize> = BTreeMap::new();
    for (i, part) in sharded.parts.iter().enumerate() {
        let mut c = part.connect();
        for row in c
            .query(
                "SELECT stream_id, es.stream_hash(stream_id) & 3 FROM es.streams",
                &[],
            )
            .unwrap()
        {
            let id: Uuid = row.get(0);
            let hashed: i32 = row.get(1);
            assert_eq!(
                hashed as usize, i,
                "stream {id} is on partition {i}, its hash names {hashed}"
            );
            assert!(
                placed.insert(id, i).is_none(),
                "stream {id} is on two partitions"
            );
            counts[i] += 1;
        }
    }
    assert_eq!(
        placed.len(),
        streams.len(),
        "streams missing from the partitions"
    );
    for (i, n) in counts.iter().enumerate() {
        assert!(*n > 40, "partition {i} got {n} of 400 streams: {counts:?}");
        let shard_of: i64 = proxy
            .query_one(
                "SELECT count(*) FROM unnest($1::uuid[]) s WHERE es.shard_of(s) = $2",
                &[&streams, &(i as i32)],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            shard_of as usize, *n,
            "es.shard_of on the proxy disagrees for shard {i}"
        );
    }
    // the global log, per shard, paged with (shard, position): every event once, in order
    let mut seen: BTreeSet<(Uuid, i64)> = BTreeSet::new();
    for shard in 0..SHARDS as i32 {
        let mut after = 0i64;
        loop {
            let page = proxy
                .query(
                    "SELECT shard, global_position, stream_id, version FROM es.read_all($1, $2, 150)",
                    &[&shard, &after],
                )
                .unwrap_or_else(|e| panic!("es.read_all({shard}, {after}, 150): {}", describe(&e)));
            if page.is_empty() {
                break;
            }
            for row in &page {
                let (s, pos, id, v): (i32, i64, Uuid, i64) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                assert_eq!(s, shard, "a row of shard {shard} says shard {s}");
                assert!(pos > after, "positions of shard {shard} not ascending");
                assert_eq!(
                    placed[&id], shard as usize,
                    "shard {shard}'s log has a stream of another"
                );
                assert!(seen.insert((id, v)), "event {id} v{v} read twice");
                after = pos;
            }
        }
    }
    assert_eq!(
        seen.len(),
        streams.len() * 2,
        "the shards' logs miss events"
    );
    // the lag of a subscription on every shard, through the proxy's view: each shard's own log
    // (fewer than 10,000 events after checkpoint 0, so exact, as on one node)
    proxy
        .execute("SELECT es.create_subscription('spread_lag', 0)", &[])
        .unwrap_or_else(|e| panic!("es.create_subscription through the proxy: {}", describe(&e)));
    let lag: Vec<(i32, i64, bool)> = proxy
        .query(
            "SELECT shard, events_behind, events_behind_is_estimate FROM es.subscriptions \
             WHERE name = 'spread_lag' ORDER BY shard",
            &[],
        )
        .unwrap_or_else(|e| panic!("es.subscriptions through the proxy: {}", describe(&e)))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected_lag: Vec<(i32, i64, bool)> = counts
        .iter()
        .enumerate()
        .map(|(i, n)| (i as i32, 2 * *n as i64, false))
        .collect();
    assert_eq!(
        lag, expected_lag,
        "es.subscriptions through the proxy: (shard, events behind, estimate)"
    );
    proxy
        .execute("SELECT es.drop_subscription('spread_lag')", &[])
        .unwrap_or_else(|e| panic!("es.drop_subscription through the proxy: {}", describe(&e)));
    // what an error costs through the proxy: PL/Proxy drops its connection to the partition after
    // a remote error and reconnects at the next call
    let probe = streams[0];
    let time_pairs = |proxy: &mut Client, fail: bool| {
        let t0 = Instant::now();
        for _ in 0..50 {
            if fail {
                let e = append(proxy, probe, Some(0), &[r#"{"type":"Late"}"#]).unwrap_err();
                assert_eq!(sqlstate(&e), Some("ES001"), "{}", describe(&e));
            } else {
                one_i64(proxy, "SELECT es.stream_version($1)", &[&probe]).unwrap();
            }
            one_i64(proxy, "SELECT es.stream_version($1)", &[&probe]).unwrap();
        }
        t0.elapsed().as_secs_f64() * 1e3 / 50.0
    };
    let ok_pair_ms = time_pairs(&mut proxy, false);
    let error_pair_ms = time_pairs(&mut proxy, true);
    let out_of_range = proxy.query("SELECT * FROM es.read_all(4, 0, 10)", &[]);
    let err = out_of_range.expect_err("es.read_all(4, …) with 4 shards must fail");
    assert_eq!(sqlstate(&err), Some("22023"), "{}", describe(&err));
    report(&format!(
        "spread: 400 streams over 4 partitions {counts:?}, each on partition stream_hash & 3; \
         {} events read back once from the 4 shard logs; {per_call:.0} µs per 2-event append \
         through the proxy (one connection)",
        seen.len()
    ));
    report(&format!(
        "errors: an ES001 through the proxy and the next call take {error_pair_ms:.2} ms, two \
         successful reads {ok_pair_ms:.2} ms (after a remote error PL/Proxy drops its connection to \
         the partition and opens a new one at the next call)"
    ));
}

/// What one racing connection observed.
#[derive(Default)]
struct Tally {
    wins: Vec<(i64, i64)>,
    conflicts: u64,
    others: Vec<String>,
}

#[test]
fn racing_appends_through_the_proxy_have_one_winner_per_version() {
    let sharded = Sharded::new("shard_race");
    let stream = Uuid::new_v4();
    let run_for = Duration::from_secs(4);
    let clients: Vec<Client> = (0..8).map(|_| sharded.proxy()).collect();
    let start = Barrier::new(clients.len());
    let tallies: Vec<Tally> = thread::scope(|scope| {
        let racers: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                let start = &start;
                scope.spawn(move || {
                    let mut tally = Tally::default();
                    start.wait();
                    let deadline = Instant::now() + run_for;
                    while Instant::now() < deadline {
                        let expected = match one_i64(
                            &mut client,
                            "SELECT es.stream_version($1)",
                            &[&stream],
                        ) {
                            Ok(v) => v,
                            Err(e) => {
                                tally
                                    .others
                                    .push(format!("stream_version: {}", describe(&e)));
                                break;
                            }
                        };
                        match append(
                            &mut client,
                            stream,
                            Some(expected),
                            &[r#"{"type":"Raced"}"#],
                        ) {
                            Ok(v) => tally.wins.push((expected, v)),
                            Err(e) if sqlstate(&e) == Some("ES001") => {
                                let detail = e.as_db_error().and_then(|d| d.detail()).unwrap_or("");
                                let want = if expected == 0 {
                                    "expected: 0 (no stream), actual: ".to_owned()
                                } else {
                                    format!("expected: {expected}, actual: ")
                                };
                                if detail.starts_with(&want) {
                                    tally.conflicts += 1;
                                } else {
                                    tally.others.push(format!("ES001 with DETAIL {detail:?}"));
                                    break;
                                }
                            }
                            Err(e) => {
                                tally.others.push(describe(&e));
                                break;
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|r| r.join().expect("racer panicked"))
            .collect()
    });
    let others: Vec<&String> = tallies.iter().flat_map(|t| t.others.iter()).collect();
    assert!(
        others.is_empty(),
        "racing through the proxy must fail only with ES001: {others:#?}"
    );
    let mut versions: Vec<i64> = tallies
        .iter()
        .flat_map(|t| t.wins.iter().map(|w| w.1))
        .collect();
    for t in &tallies {
        for &(expected, got) in &t.wins {
            assert_eq!(got, expected + 1, "an append at {expected} returned {got}");
        }
    }
    versions.sort_unstable();
    let wins = versions.len() as i64;
    let conflicts: u64 = tallies.iter().map(|t| t.conflicts).sum();
    assert!(
        wins > 0 && conflicts > 0,
        "the race did not happen: {wins} wins, {conflicts} conflicts"
    );
    assert_eq!(
        versions,
        (1..=wins).collect::<Vec<_>>(),
        "two winners of one version, or a gap"
    );
    // on the partition that holds the stream: versions 1..wins, nothing else
    let shard: i32 = sharded
        .proxy()
        .query_one("SELECT es.shard_of($1)", &[&stream])
        .unwrap()
        .get(0);
    let mut part = sharded.parts[shard as usize].connect();
    let stored: Vec<i64> = part
        .query(
            "SELECT version FROM es.events WHERE stream_id = $1 ORDER BY version",
            &[&stream],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        stored,
        (1..=wins).collect::<Vec<_>>(),
        "partition {shard} holds a gap or a duplicate"
    );
    for (i, p) in sharded.parts.iter().enumerate() {
        if i != shard as usize {
            let n: i64 = p
                .connect()
                .query_one("SELECT count(*) FROM es.events", &[])
                .unwrap()
                .get(0);
            assert_eq!(
                n, 0,
                "partition {i} got events of a stream of partition {shard}"
            );
        }
    }
    report(&format!(
        "race: 8 connections through the proxy on one stream (shard {shard}) for {} s: {wins} wins, one per \
         version, {conflicts} ES001 with DETAIL `expected: N, actual: M`, nothing else \
         (the relay's wire keeps its connection after a remote error; PL/Proxy reconnects)",
        run_for.as_secs()
    ));
}

/// A stream id that hashes to `shard` (ids are tried in order until one fits).
fn stream_on(proxy: &mut Client, shard: i32, salt: u128) -> Uuid {
    (0u128..)
        .map(|n| Uuid::from_u128((salt << 64) | n))
        .find(|id| {
            proxy
                .query_one("SELECT es.shard_of($1)", &[id])
                .unwrap()
                .get::<_, i32>(0)
                == shard
        })
        .unwrap()
}

#[test]
fn a_partition_that_is_down_fails_its_streams_only() {
    let sharded = Sharded::new("shard_down");
    let mut proxy = sharded.proxy();
    let ids: Vec<Uuid> = (0..SHARDS as i32)
        .map(|s| stream_on(&mut proxy, s, 0xd0 + s as u128))
        .collect();
    for id in &ids {
        append(&mut proxy, *id, Some(0), &[r#"{"type":"Before"}"#])
            .unwrap_or_else(|e| panic!("append before: {}", describe(&e)));
    }
    let down = 2usize;
    let mut admin = connect_with_retry("postgres", Duration::from_secs(10)).unwrap();
    let name = sharded.parts[down].name().to_owned();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"
        ))
        .unwrap();
    // its sessions end, including the proxy's cached connection
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&name],
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
            &[&name],
        )
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "the sessions of {name} did not end"
        );
        thread::sleep(Duration::from_millis(20));
    }

    // the first call notices the lost connection; every later one cannot connect: 08001
    let first = append(&mut proxy, ids[down], None, &[r#"{"type":"During"}"#])
        .expect_err("an append to the shard that is down must fail");
    assert!(
        matches!(sqlstate(&first), Some("08006" | "08001")),
        "the first call after the shard's sessions ended: {}",
        describe(&first)
    );
    let mut later = Vec::new();
    for _ in 0..3 {
        let e = append(&mut proxy, ids[down], None, &[r#"{"type":"During"}"#])
            .expect_err("an append to the shard that is down must fail");
        later.push(e);
    }
    for e in &later {
        assert_eq!(sqlstate(e), Some("08001"), "{}", describe(e));
        let msg = e.as_db_error().unwrap().message();
        assert!(
            msg.starts_with(&format!("shard {down} (database {name}) is unavailable: "))
                && msg.contains("is not currently accepting connections"),
            "{msg}"
        );
    }
    let read_err = proxy
        .query("SELECT * FROM es.read_all($1, 0, 10)", &[&(down as i32)])
        .expect_err("reading the shard that is down must fail");
    assert_eq!(
        sqlstate(&read_err),
        Some("08001"),
        "{}",
        describe(&read_err)
    );
    // the other shards keep working, in this session and in a new one
    for (s, id) in ids.iter().enumerate().filter(|(s, _)| *s != down) {
        let v = append(&mut proxy, *id, None, &[r#"{"type":"During"}"#])
            .unwrap_or_else(|e| panic!("shard {s} while shard {down} is down: {}", describe(&e)));
        assert_eq!(v, 2);
        let n = proxy
            .query("SELECT * FROM es.read_all($1, 0, 10)", &[&(s as i32)])
            .unwrap_or_else(|e| panic!("read_all({s}) while {down} is down: {}", describe(&e)))
            .len();
        assert_eq!(n, 2);
    }
    let mut fresh = sharded.proxy();
    assert_eq!(
        one_i64(&mut fresh, "SELECT es.stream_version($1)", &[&ids[0]]).unwrap(),
        2
    );
    let view_err = fresh
        .query("SELECT * FROM es.subscriptions", &[])
        .expect_err("the all-shards view needs every shard");
    assert_eq!(
        sqlstate(&view_err),
        Some("08001"),
        "{}",
        describe(&view_err)
    );

    // back: the same proxy session reaches it again
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"
        ))
        .unwrap();
    let v = append(&mut proxy, ids[down], None, &[r#"{"type":"After"}"#])
        .unwrap_or_else(|e| panic!("shard {down} after it came back: {}", describe(&e)));
    assert_eq!(v, 2, "no append reached the shard while it was down");

    // a connection string that points at a closed port: the same 08001, for that shard only
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    admin.close().ok();
    let mut px_admin = sharded.proxy();
    px_admin
        .batch_execute(&format!(
            "ALTER SERVER es_shards OPTIONS (SET p{down} 'host=127.0.0.1 port={closed_port} dbname={name} connect_timeout=2')"
        ))
        .unwrap();
    let refused = append(&mut proxy, ids[down], None, &[r#"{"type":"During"}"#])
        .expect_err("a shard whose server does not answer must fail");
    assert_eq!(sqlstate(&refused), Some("08001"), "{}", describe(&refused));
    append(&mut proxy, ids[0], None, &[r#"{"type":"During"}"#]).unwrap_or_else(|e| {
        panic!(
            "shard 0 while p{down} points at a closed port: {}",
            describe(&e)
        )
    });

    report(&format!(
        "partition down (ALLOW_CONNECTIONS false + its sessions ended): first call {}; then {}",
        error_text(&first),
        error_text(&later[0])
    ));
    report(&format!(
        "partition down: the 3 other shards kept appending and reading; shard {down} came back in \
         the same proxy session; a closed port: {}",
        sqlstate(&refused).unwrap_or("?")
    ));
}

/// The pids of the proxy's sessions on partition database `name`.
fn proxy_sessions(admin: &mut Client, name: &str) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'es_proxy_test'",
            &[&name],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn the_relays_wire_survives_a_lost_session_a_cancel_and_a_changed_mapping() {
    // The relay's own connection to a shard (es.proxy_wire, on by default): what becomes of it
    // when the shard's session ends under it, when the proxy's statement is cancelled while the
    // shard is slow, and when the user mapping changes between two calls.
    let sharded = Sharded::new("shard_wire");
    let mut proxy = sharded.proxy();
    let shard = 1usize;
    let name = sharded.parts[shard].name().to_owned();
    let id = stream_on(&mut proxy, shard as i32, 0x3e);
    let event = [r#"{"type":"Wired"}"#];
    assert_eq!(append(&mut proxy, id, Some(0), &event).unwrap(), 1);
    let mut admin = connect_with_retry("postgres", Duration::from_secs(10)).unwrap();
    let sessions = proxy_sessions(&mut admin, &name);
    assert_eq!(sessions.len(), 1, "one session of the proxy on {name}");

    // 1. the shard's session ends (as in a restart of its server): the next call fails 08006,
    //    the one after it connects again
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&sessions[0]])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy_sessions(&mut admin, &name).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the session on {name} did not end"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let lost = append(&mut proxy, id, Some(1), &event).expect_err("the lost session must fail");
    assert_eq!(sqlstate(&lost), Some("08006"), "{}", describe(&lost));
    let msg = lost.as_db_error().unwrap().message();
    assert!(
        msg.starts_with(&format!("shard {shard} (database {name}) ")),
        "{msg}"
    );
    assert_eq!(append(&mut proxy, id, Some(1), &event).unwrap(), 2);

    // 2. a slow shard (the stream's row locked there) and the proxy's statement_timeout: 57014
    //    promptly, the shard's statement cancelled, nothing appended, the next call works
    let mut locker = sharded.parts[shard].connect();
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM es.streams WHERE stream_id = '{id}' FOR UPDATE"
        ))
        .unwrap();
    proxy
        .batch_execute("SET statement_timeout = '300ms'")
        .unwrap();
    let t0 = Instant::now();
    let cancelled = append(&mut proxy, id, Some(2), &event).expect_err("the timeout must cancel");
    let waited = t0.elapsed();
    assert_eq!(
        sqlstate(&cancelled),
        Some("57014"),
        "{}",
        describe(&cancelled)
    );
    assert!(
        waited < Duration::from_secs(5),
        "the cancel took {waited:?}"
    );
    proxy.batch_execute("RESET statement_timeout").unwrap();
    // the shard's statement was cancelled and its connection closed: the lock holder is alone
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy_sessions(&mut admin, &name).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the cancelled call's session on {name} is still there"
        );
        thread::sleep(Duration::from_millis(20));
    }
    locker.batch_execute("ROLLBACK").unwrap();
    assert_eq!(append(&mut proxy, id, Some(2), &event).unwrap(), 3);

    // 3. the user mapping changes between two calls: the cached connection is closed and the
    //    next one is made with the new mapping (a role that does not exist: refused, 08001)
    proxy
        .batch_execute(
            "ALTER USER MAPPING FOR PUBLIC SERVER es_shards OPTIONS (ADD user 'es_ct_no_such_role')",
        )
        .unwrap();
    let refused = append(&mut proxy, id, Some(3), &event).expect_err("the new mapping's role");
    assert_eq!(sqlstate(&refused), Some("08001"), "{}", describe(&refused));
    assert!(
        refused
            .as_db_error()
            .unwrap()
            .message()
            .contains("es_ct_no_such_role"),
        "{}",
        describe(&refused)
    );
    proxy
        .batch_execute("ALTER USER MAPPING FOR PUBLIC SERVER es_shards OPTIONS (DROP user)")
        .unwrap();
    assert_eq!(append(&mut proxy, id, Some(3), &event).unwrap(), 4);
    assert_eq!(
        one_i64(&mut proxy, "SELECT es.stream_version($1)", &[&id]).unwrap(),
        4
    );
    report(&format!(
        "relay's wire: a lost session {} then reconnected; a cancel while the shard was slow {} \
         after {} ms; a changed user mapping {} then back",
        sqlstate(&lost).unwrap_or("?"),
        sqlstate(&cancelled).unwrap_or("?"),
        waited.as_millis(),
        sqlstate(&refused).unwrap_or("?")
    ));
}

/// The libpq files mapped into process `pid` (`/proc/<pid>/maps`: the test runs as root or as
/// the server's user, so it may read any server process's).
fn libpq_mapped(pid: i32) -> BTreeSet<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/maps: {e}"));
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|file| {
            file.rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with("libpq.so"))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn libpq_is_loaded_by_the_backend_of_the_first_wired_call_never_by_the_postmaster() {
    // Why the wire was once reverted: linked into the preloaded library, libpq was mapped by the
    // postmaster and inherited by every server process, so a PostgreSQL 18 standby's WAL
    // receiver got the machine's older libpq by its soname and refused its primary_conninfo.
    // The relay now opens the server's own libpq in the backend that first needs it.
    let sharded = Sharded::new("shard_libpq");
    let mut proxy = sharded.proxy();
    event_store_client_tests::assert_preloaded(&mut proxy);
    let data_dir: String = proxy
        .query_one("SELECT current_setting('data_directory')", &[])
        .unwrap()
        .get(0);
    let pid_file = std::fs::read_to_string(format!("{data_dir}/postmaster.pid")).unwrap();
    let postmaster: i32 = pid_file
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in postmaster.pid: {pid_file:?}"));
    let backend: i32 = proxy
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        libpq_mapped(postmaster),
        BTreeSet::new(),
        "the postmaster maps libpq"
    );
    assert_eq!(
        libpq_mapped(backend),
        BTreeSet::new(),
        "a new backend maps libpq"
    );

    let id = stream_on(&mut proxy, 2, 0x5a);
    assert_eq!(
        append(&mut proxy, id, Some(0), &[r#"{"type":"Wired"}"#]).unwrap(),
        1
    );
    // the call went over the relay's wire (its prepared statement ran on the partition) ...
    let statements = partition_statements(&sharded);
    assert!(
        statements
            .iter()
            .any(|q| q.starts_with("SELECT es.append_events($1")),
        "the append did not go over the relay's wire: {statements:?}"
    );
    // ... whose backend mapped one libpq: the server's own (its library directory's) where the
    // installation has one, else the one the dynamic linker finds by its soname (the relay
    // resolves its PL/Proxy twin first, so this is the libpq plproxy.so links, which the wire
    // found loaded and reused: both are the server's own here)
    let mapped = libpq_mapped(backend);
    let libdir = Command::new(event_store_client_tests::pg_bin("pg_config"))
        .arg("--libdir")
        .output()
        .expect("pg_config --libdir");
    let own =
        std::path::Path::new(String::from_utf8_lossy(&libdir.stdout).trim()).join("libpq.so.5");
    let which = match std::fs::canonicalize(&own) {
        Ok(own) => {
            let own = own.display().to_string();
            assert_eq!(
                mapped,
                BTreeSet::from([own.clone()]),
                "the wired backend's libpq"
            );
            own
        }
        Err(_) => {
            assert_eq!(mapped.len(), 1, "the wired backend's libpq: {mapped:?}");
            format!("{mapped:?}, the soname's: no {}", own.display())
        }
    };
    assert_eq!(
        libpq_mapped(postmaster),
        BTreeSet::new(),
        "the postmaster maps libpq after a wired call"
    );
    // a backend started after it inherits nothing
    let mut other = sharded.proxy();
    let fresh: i32 = other
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        libpq_mapped(fresh),
        BTreeSet::new(),
        "a later backend maps libpq"
    );
    // where PL/Proxy's twin made the calls first (es.proxy_wire off), the wire's first call
    // uses the libpq already loaded instead of mapping a second one beside it
    other.batch_execute("SET es.proxy_wire = off").unwrap();
    assert_eq!(
        append(&mut other, id, Some(1), &[r#"{"type":"Twin"}"#]).unwrap(),
        2
    );
    let plproxys = libpq_mapped(fresh);
    assert_eq!(plproxys.len(), 1, "PL/Proxy's libpq: {plproxys:?}");
    other.batch_execute("SET es.proxy_wire = on").unwrap();
    assert_eq!(
        append(&mut other, id, Some(2), &[r#"{"type":"Wired"}"#]).unwrap(),
        3
    );
    let statements = partition_statements(&sharded);
    assert!(
        statements
            .iter()
            .filter(|q| q.starts_with("SELECT es.append_events($1"))
            .count()
            >= 2,
        "the second session's append did not go over the relay's wire: {statements:?}"
    );
    assert_eq!(
        libpq_mapped(fresh),
        plproxys,
        "the wire mapped a second libpq beside PL/Proxy's"
    );
    report(&format!(
        "libpq: mapped by the wired backend only ({which}), not by the postmaster nor a later \
         backend; after PL/Proxy's twin, the wire reuses its libpq ({plproxys:?})"
    ));
}

/// A database made by this test outside TestDb (a copy of a partition), dropped at the end.
struct Copy(String);

impl Drop for Copy {
    fn drop(&mut self) {
        if let Ok(mut c) = connect_with_retry("postgres", Duration::from_secs(10)) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
        }
    }
}

#[test]
fn the_script_repoints_a_moved_partition_and_refuses_wrong_clusters() {
    let sharded = Sharded::new("shard_move");
    let mut proxy = sharded.proxy();
    let streams: Vec<Uuid> = (0..64).map(|_| Uuid::new_v4()).collect();
    for s in &streams {
        append(&mut proxy, *s, Some(0), &[r#"{"type":"One"}"#]).unwrap();
    }
    let connstrs = sharded.connstrs();
    let proxy_cs = sharded.proxy_connstr();

    // refusals: nothing changes
    let three = shard_sh(&proxy_cs, &connstrs[..3], &[]);
    assert!(
        !three.ok && three.stderr.contains("power of two"),
        "{}",
        three.stderr
    );
    let mut swapped = connstrs.clone();
    swapped.swap(0, 1);
    let wrong_order = shard_sh(&proxy_cs, &swapped, &[]);
    assert!(
        !wrong_order.ok && wrong_order.stderr.contains("hash to another partition"),
        "{}",
        wrong_order.stderr
    );
    let two = shard_sh(&proxy_cs, &connstrs[..2], &[]);
    assert!(
        !two.ok && two.stderr.contains("has 4 partitions, not 2"),
        "{}",
        two.stderr
    );
    let with_store = TestDb::new("shard_move_badpx");
    let bad_proxy = shard_sh(
        &format!(
            "host={} port={} dbname={}",
            host(),
            port(),
            with_store.name()
        ),
        &connstrs,
        &[],
    );
    assert!(
        !bad_proxy.ok && bad_proxy.stderr.contains("has the event_store extension"),
        "{}",
        bad_proxy.stderr
    );
    // running it again with the same arguments is a no-op that succeeds
    let again = shard_sh(&proxy_cs, &connstrs, &[]);
    assert!(again.ok, "{}\n{}", again.stdout, again.stderr);

    // move partition 3: a copy of its database (as pg_basebackup or a logical replica would
    // give on a new server), then the script repoints p3; a live proxy session follows
    let moved = 3usize;
    let old = sharded.parts[moved].name().to_owned();
    let copy = Copy(format!("{old}_moved"));
    let mut admin = connect_with_retry("postgres", Duration::from_secs(10)).unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {old} WITH ALLOW_CONNECTIONS false"
        ))
        .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&old],
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match admin.batch_execute(&format!("CREATE DATABASE {} TEMPLATE {old}", copy.0)) {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline && sqlstate(&e) == Some("55006") => {
                thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("CREATE DATABASE … TEMPLATE {old}: {}", describe(&e)),
        }
    }
    let mut repointed = connstrs.clone();
    repointed[moved] = part_connstr(&copy.0);
    let t0 = Instant::now();
    let run = shard_sh(&proxy_cs, &repointed, &[]);
    let script_ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert!(run.ok, "repointing failed:\n{}\n{}", run.stdout, run.stderr);
    let on_moved: Vec<Uuid> = streams
        .iter()
        .copied()
        .filter(|s| {
            proxy
                .query_one("SELECT es.shard_of($1)", &[s])
                .unwrap()
                .get::<_, i32>(0)
                == moved as i32
        })
        .collect();
    assert!(!on_moved.is_empty());
    for s in &on_moved {
        let v = append(&mut proxy, *s, Some(1), &[r#"{"type":"Two"}"#])
            .unwrap_or_else(|e| panic!("append after the move: {}", describe(&e)));
        assert_eq!(v, 2, "the moved partition lost a stream's history");
    }
    let mut copy_client = connect_with_retry(&copy.0, Duration::from_secs(5)).unwrap();
    let two_in_copy: i64 = copy_client
        .query_one("SELECT count(*) FROM es.events WHERE version = 2", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        two_in_copy as usize,
        on_moved.len(),
        "the appends did not land in the copy"
    );
    admin
        .batch_execute(&format!("ALTER DATABASE {old} WITH ALLOW_CONNECTIONS true"))
        .unwrap();
    let two_in_old: i64 = sharded.parts[moved]
        .connect()
        .query_one("SELECT count(*) FROM es.events WHERE version = 2", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        two_in_old, 0,
        "the old partition still got appends after the move"
    );
    drop(copy_client);
    drop(proxy);
    report(&format!(
        "script: refused 3 partitions, swapped connection strings, 2 partitions for a 4-partition \
         cluster, a proxy database with the extension; a rerun is a no-op; partition {moved} moved \
         to a copy and repointed in {script_ms:.0} ms, a live session appended {} events there",
        on_moved.len()
    ));
}
