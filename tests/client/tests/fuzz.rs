//! A seeded, time-bounded fuzz of the whole SQL surface of `event_store` (docs/reference.md §2–§6, §9, §10).
//!
//! Why: the extension is native code that decodes jsonb, arrays and tuples itself and keeps
//! per-stream state in its own rows and memory. The scenario tests walk the intended paths; a
//! user can send anything, in any order, inside any transaction. This test sends a random but
//! reproducible mix of every entry point (appends, reads, the global log, snapshots, the account
//! aggregate as aggregate and as window function, the account commands, time travel, history,
//! the tracing counters, the deletion, undeletion and truncation of streams) with adversarial
//! arguments: NULLs, extreme bigints, wrong JSON types for
//! every key the store reads, numbers past bigint, floats where integers go, deep and huge
//! (TOASTed) values, 2-D arrays, reused event ids, balances near `i64::MAX`. The calls run on
//! three connections, in transactions with savepoints that commit or roll back at random, beside
//! VACUUM, VACUUM FULL, REINDEX, CLUSTER and `ALTER TABLE … ADD/DROP COLUMN` of the store's
//! tables, and include the pattern "append, then roll back a 400-event batch, then read the
//! stream back".
//!
//! Subscriptions and projections (docs/reference.md §9, §10) are a third of the calls, interleaved with the
//! rest: `es.stream_hash`, create/drop subscription, `poll`, `ack`, `nack`, `claim`, `release`,
//! `replay_parked`, `wait` (timeouts of 0–20 ms, and a long one cancelled by a
//! `statement_timeout`), create/pause/resume/reset/drop projection with handlers that work,
//! raise sometimes, always, with `XX000`, pause themselves, sleep, return a set, get dropped and
//! re-created, and with functions that are no handler (or do not exist, or NULL);
//! `wait_for_projection`, `enable_account_projections`, and reads of `es.subscriptions`,
//! `es.projections`, `es.parked_events`. Names are taken or missing, empty, 63 and 64
//! characters (also multi-byte), with control characters, quotes, `%s`, 100 kB, NULL;
//! partitions, positions, counts and timeouts in and out of range, negative, `i32::MAX`,
//! `i64::MAX`, NULL; leases zero, negative, mixed-sign, past the timestamp range; and literal
//! calls with wrong argument types. A consumer scenario claims, polls, acks or nacks what it
//! got (repeatedly, to park it), replays, releases, inside a transaction or savepoint that
//! commits or rolls back. The database's projection worker runs beside all of it.
//!
//! What it checks:
//! - no call ends in an internal error (SQLSTATE class `XX` or `58`) or a lost connection (a
//!   crashed backend): the test fails with the seed, the call, its arguments and the calls that
//!   came before it;
//! - a failing call changes nothing: a digest of `es.streams`, `es.events` and `es.snapshots`
//!   taken right before it equals the one after its rollback (its own savepoint inside a
//!   transaction, the statement itself in autocommit);
//! - at the end, on a fresh connection: versions are gapless `1..N` per stream (from the cut
//!   of a truncated stream; only the marker of a hard-deleted one) and equal
//!   `es.streams.version`, with no stream row without events and no events without a stream
//!   row; every live, untruncated account stream's `es.account_state` equals the replay of its
//!   events with `es.account_replay`; `es.read_all` paged by 100 returns every event once, in position
//!   order; amcheck finds the heaps and B-trees of all three tables sound.
//!
//! And for subscriptions and projections:
//! - a failing call fails only with a SQLSTATE the spec allows for it ([`FLOW_CODES`], plus the
//!   range and type errors of the calls that send such values, 57014 under a
//!   `statement_timeout`, 40001 in REPEATABLE READ / SERIALIZABLE, 40P01 only in a transaction
//!   that altered a store table), and leaves a digest of their tables unchanged;
//! - `es.stream_hash` is FNV-1a masked to 31 bits; `es.poll` returns at most `max_count`
//!   events, in ascending position order, each in the polled partition and matching the
//!   subscription's filters; `es.ack` returns a checkpoint at or past the acked position; a
//!   consumer that just claimed a partition can poll it while another consumer (or none) gets
//!   ES201; acking what a poll of a plain subscription returned, or nacking its head, succeeds;
//! - at the end: the subscription tables agree with each other (no rows of a dropped
//!   subscription); the seed's two projections catch up with the whole log within 20 s and then
//!   equal `es.account_state` / `es.account_history`; at most one projection worker ran for the
//!   database at any sampled moment; the worker's server log lines are printed.
//!
//! Replay a run with `ES_FUZZ_SEED=<u64>` (printed at the start and in every failure) and
//! `ES_FUZZ_SECS` (default 45). All calls come from one thread, so a seed replays the same
//! sequence as long as the server answers the same way (lock timeouts between the connections
//! and server-generated ids can make a replay drift). The outcome counts go to stderr and to
//! `target/fuzz-summary.txt` at the repository root.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Debug;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use event_store_client_tests::{Client, Error, TestDb, Uuid, describe, sqlstate, verify_store};
use postgres::types::ToSql;
use postgres::{Row, SimpleQueryMessage};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Seed when `ES_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x00E5_F022_0001;
/// Run time when `ES_FUZZ_SECS` is not set.
const DEFAULT_SECS: u64 = 45;
/// Fixed stream ids the calls pick from, so that they collide.
const POOL: usize = 20;
/// Pool streams below this index are meant to become accounts (their first event is `Opened`).
const ACCOUNT_POOL: usize = 10;
/// Accounts from `es.open_account` kept to be used again.
const MAX_ACCOUNTS: usize = 12;
/// Above this many events, no more large batches are generated: the per-call digest counts
/// `es.events`, so the store has to stay small for it to stay cheap.
const STORE_CAP: i64 = 30_000;
/// Size of the batch that the rolled-back-batch scenario appends and rolls back.
const BIG_BATCH: i32 = 400;
/// Calls remembered for a failure report.
const HISTORY: usize = 30;
/// Characters of one argument shown in a report.
const SHOW_ARG: usize = 160;

/// The connection that runs transactions and savepoints.
const TX0: usize = 0;
/// The connection that runs every call in autocommit, beside TX0's open transactions.
const AUTO: usize = 1;
/// The connection for VACUUM and ALTER TABLE.
const ADMIN: usize = 2;

/// A digest of everything a call could change, cheap while the store is small: counts, version
/// sums and the newest position, a hash of the stream rows' type and state, and the stored size
/// of snapshot states (not their hash: they may be megabytes, and `pg_column_size` does not
/// detoast).
const DIGEST: &str = "SELECT concat_ws(' ', \
     (SELECT count(*) FROM es.streams), \
     (SELECT coalesce(sum(version), 0) FROM es.streams), \
     (SELECT coalesce(sum(hashtext(coalesce(stream_type, '-') || coalesce(state::text, '-'))), 0) \
        FROM es.streams), \
     (SELECT count(*) FROM es.events), \
     (SELECT coalesce(max(global_position), 0) FROM es.events), \
     (SELECT count(*) FROM es.snapshots), \
     (SELECT coalesce(sum(version), 0) || '/' || coalesce(sum(pg_column_size(state)), 0) \
        FROM es.snapshots))";

/// `es.append_events` with the events bound as a text array.
const APPEND: &str = "SELECT es.append_events($1, $2, $3::text[]::jsonb[])";

/// Keys of an event object that the store (or the account rules) read; each gets wrong values.
const EVENT_KEYS: &[&str] = &[
    "type",
    "event_id",
    "occurred_at",
    "event_version",
    "metadata",
    "aggregate_id",
    "sequence_number",
    "account_holder",
    "initial_balance_cents",
    "amount_cents",
    "description",
    "reason",
];

/// Keys of an account state (snapshots, `account_replay`'s initial state).
const STATE_KEYS: &[&str] = &["holder_name", "balance_cents", "status", "version"];

/// Raw JSON values of every type and edge, put where some other type is expected: numbers past
/// bigint and int, floats where integers go, strings that look like numbers, malformed uuids and
/// timestamps, containers, escapes jsonb refuses (`\u0000`, a lone surrogate).
const WRONG: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1",
    "2",
    "1.5",
    "1.0",
    "-0.0",
    "0.0",
    "1e2",
    "1E2",
    "1e30",
    "-1e30",
    "1e-7",
    "99999999999999999999",
    "-99999999999999999999",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "2147483647",
    "2147483648",
    "-2147483649",
    "\"\"",
    "\" \"",
    "\"x\"",
    "\"1\"",
    "\"100\"",
    "\"-5\"",
    "\"1.5\"",
    "\"true\"",
    "\"null\"",
    "\"not-a-uuid\"",
    "\"00000000-0000-0000-0000-000000000000\"",
    "\"{00000000-0000-0000-0000-000000000001}\"",
    "\"0000000000000000000000000000000g\"",
    "\"2024-13-45T00:00:00Z\"",
    "\"2024-01-01T00:00:00\"",
    "\"2024-01-01\"",
    "\"2024-01-01 00:00:00+00\"",
    "\"2024-01-01T00:00:00+99:00\"",
    "\"infinity\"",
    "\"-infinity\"",
    "\"294277-01-01T00:00:00Z\"",
    "\"0000-01-01T00:00:00Z\"",
    "\"-0001-01-01T00:00:00Z\"",
    "\"2024-01-01T24:00:00Z\"",
    "\"2024-02-30T00:00:00Z\"",
    "\"2024-01-01T00:00:60Z\"",
    "[]",
    "{}",
    "[1]",
    "{\"a\":1}",
    "[null]",
    "[[[]]]",
    "{\"correlation_id\":null}",
    "\"Opened\"",
    "\"Deposited\"",
    "\"Active\"",
    "\"é✓\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"line\\nbreak\"",
];

/// Elements of an events array that are not event objects (some not even valid JSON).
const NON_OBJECTS: &[&str] = &[
    "[]",
    "[1,2]",
    "1",
    "-0.0",
    "1e30",
    "\"Opened\"",
    "\"\"",
    "null",
    "true",
    "{}",
    "[{\"type\":\"A\"}]",
    "{",
    "{\"type\":}",
    "",
];

/// Valid `occurred_at` values at the edges of RFC 3339 and of PostgreSQL's range.
const OCCURRED: &[&str] = &[
    "2024-02-29T12:00:00Z",
    "2024-02-29T12:00:00.123456789Z",
    "2024-01-01T00:00:00+14:00",
    "2024-06-01T10:00:00-07:30",
    "1970-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
];

/// Bigints at the edges, for every bigint argument.
const EXTREMES: &[i64] = &[
    i64::MIN,
    i64::MIN + 1,
    -1000,
    -2,
    -1,
    0,
    1,
    2,
    1 << 53,
    i64::MAX - 1,
    i64::MAX,
];

/// Amounts at the edges (zero, negative, overflowing a balance, past a double's precision).
const AMOUNT_EXTREMES: &[i64] = &[
    0,
    -1,
    1,
    100,
    i64::MIN,
    i64::MIN + 1,
    i64::MAX,
    i64::MAX - 1,
    i64::MAX / 2 + 1,
    (1 << 53) + 1,
];

/// Ints at the edges, for `read_all`'s `max_count` (a bigint; these are the int edges).
const INT_EXTREMES: &[i32] = &[i32::MIN, -1, 0, 1, 2, 100, 1000, i32::MAX];

// ---- subscriptions and projections (docs/reference.md §9, §10) ----------------------------------------------

/// Share of the random calls that go to the subscription and projection surface.
const FLOW_SHARE: f64 = 0.3;

/// On: some projection handlers raise `assert_failure` (P0004), which PL/pgSQL's `WHEN OTHERS`
/// does not catch. `es.run_handler` catches it by name; anything that still escapes aborts
/// only that projection's batch (the worker then goes one event at a time and parks the event
/// that causes it), and the other projections keep running (docs/reference.md §10). The fuzz found the
/// escape first: the worker used to die and every projection of the database stopped.
const FUZZ_ESCAPING_HANDLER: bool = true;

/// On: consumer names of 6 kB that do not compress. They must fail with 22023 (1 to 63
/// characters, like subscription names), not with 54000 from the index of
/// `es.subscription_consumers` (what the fuzz found first).
const FUZZ_INCOMPRESSIBLE_CONSUMER: bool = true;

/// False: a 40P01 from a subscription or projection call fails the run (true only counts it).
/// The worker and every client function lock a projection's partition row before anything else
/// of it; the fuzz first found the worker locking the configuration row first, which deadlocked
/// with a transaction that called `es.claim` and then `es.pause_projection` (ES_FUZZ_SEED=12).
const TOLERATE_WORKER_DEADLOCKS: bool = false;

/// False: rows of a dropped subscription left behind (parked events, consumers) fail the run;
/// true only reports them. `es.drop_subscription`, `es.drop_projection` and
/// `es.reset_projection` lock the partition rows before they delete, so an `es.nack` in flight
/// commits first and what it parked is deleted too (the fuzz found it surviving a drop whose
/// DELETEs shared one snapshot).
const TOLERATE_DROP_RACE_ORPHANS: bool = false;

/// False: more than one `event_store worker` running at once for the fuzz's database fails the
/// run; true only reports it. A worker claims its database in shared memory at start (a second
/// one exits), and only the launcher replaces one that died (the fuzz found duplicates when the
/// postmaster restarted a worker the launcher had already replaced).
const TOLERATE_DUPLICATE_WORKERS: bool = false;

/// The SQLSTATEs every subscription or projection call may fail with: subscription leased by
/// another consumer, no such subscription or projection, invalid argument, NULL argument,
/// duplicate name, and the `lock_timeout` the fuzz's connections set (200 ms beside TX0's
/// open transactions, 5 s on TX0). See [`Fuzz::flow_allows`] for the ones allowed only in some
/// transactions.
const FLOW_CODES: &[&str] = &["ES201", "ES202", "22023", "22004", "42710", "55P03"];

/// Out-of-range literals and values: an interval or timestamp past PostgreSQL's range
/// (`now() + lease`), an interval field overflow.
const RANGE_CODES: &[&str] = &["22008", "22015", "22003"];

/// Deliberately wrong argument types (42883, 42804) and malformed or out-of-range literals
/// (22P02, 22003, 22008, 22015 interval field overflow, 22007 invalid interval syntax).
const TYPE_CODES: &[&str] = &[
    "42883", "42804", "22P02", "22003", "22008", "22015", "22007",
];

/// Subscription and projection names the flow calls pick from, so that they collide: plain,
/// unicode, quotes and backslashes, printf-style directives, a leading space, one letter.
const FLOW_NAMES: &[&str] = &[
    "fz_sub_a",
    "fz_sub_b",
    "fz_sub_c",
    "fz_proj_a",
    "fz_proj_b",
    "Fz Ünïcödé ✓ 名前",
    "a'b\"c\\d",
    "%s%n%x%d",
    " lead",
    "x",
];

/// The seed's projections (`es.enable_account_projections`). The fuzz never acks, nacks or
/// claims them, so that the final check can compare their tables with the store.
const ACCOUNT_PROJECTIONS: &[&str] = &["account_balances", "account_transactions"];

/// A subscription whose event type never occurs: `es.wait` on it sleeps to its timeout.
const PROBE_NEVER: &str = "fz_probe_never";

/// Consumers of `es.claim` and friends.
const CONSUMERS: &[&str] = &["c1", "c2", "c3", "Ünïcödé consumer ✓", "%s"];

/// Handlers `f(es.events)` created at the start (see [`FLOW_SETUP`]).
const VALID_HANDLERS: &[&str] = &[
    "public.fz_ok(es.events)",
    "public.fz_ok(es.events)",
    "public.fz_flaky(es.events)",
    "public.fz_always(es.events)",
    "public.\"Fz Hándler ✓\"(es.events)",
    "public.fz_raise_internal(es.events)",
    "public.fz_pauser(es.events)",
    "public.fz_slow(es.events)",
    "public.fz_dropme(es.events)",
    "public.fz_setof(es.events)",
];

/// Functions that are not handlers (22023), or no function at all (42883 from the cast).
const INVALID_HANDLERS: &[&str] = &[
    "public.fz_int(integer)",
    "public.fz_two(es.events,integer)",
    "public.fz_default(es.events,text)",
    "public.fz_proc(es.events)",
    "es.account_replay(jsonb)",
    "es.poll(text,integer,bigint,text)",
    "pg_catalog.now()",
    "public.fz_nope(es.events)",
];

/// The handlers of [`VALID_HANDLERS`] and the non-handlers of [`INVALID_HANDLERS`], with a
/// read model for `fz_ok`, and the probe subscription.
const FLOW_SETUP: &str = r#"
CREATE TABLE public.fz_model (global_position bigint PRIMARY KEY, event_type text);
CREATE FUNCTION public.fz_ok(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.fz_model VALUES (e.global_position, e.event_type) ON CONFLICT DO NOTHING;
END $$;
CREATE FUNCTION public.fz_flaky(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.global_position % 4 = 0 THEN
        RAISE EXCEPTION 'fz flaky handler at %', e.global_position;
    END IF;
END $$;
CREATE FUNCTION public.fz_always(e es.events) RETURNS bigint LANGUAGE sql
AS $$ SELECT 1 / (e.version - e.version) $$;
CREATE FUNCTION public."Fz Hándler ✓"(e es.events) RETURNS boolean LANGUAGE sql
AS $$ SELECT e.version > 0 $$;
CREATE FUNCTION public.fz_raise_internal(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.global_position % 3 = 0 THEN
        RAISE EXCEPTION 'fz handler raises XX000 at %', e.global_position USING ERRCODE = 'XX000';
    END IF;
END $$;
CREATE FUNCTION public.fz_pauser(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.global_position % 25 = 0 THEN
        PERFORM es.pause_projection(j.name) FROM es.projection_config j
          WHERE j.handler = 'public.fz_pauser';
    END IF;
END $$;
CREATE FUNCTION public.fz_slow(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.global_position % 16 = 0 THEN
        PERFORM pg_sleep(0.002);
    END IF;
END $$;
CREATE FUNCTION public.fz_dropme(e es.events) RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
CREATE FUNCTION public.fz_setof(e es.events) RETURNS SETOF integer LANGUAGE sql
AS $$ SELECT generate_series(1, 3) $$;
CREATE FUNCTION public.fz_escape(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    ASSERT e.global_position % 2 = 0, 'fz handler assertion escapes es.run_handler';
END $$;
CREATE FUNCTION public.fz_int(e integer) RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
CREATE FUNCTION public.fz_two(e es.events, x integer) RETURNS void LANGUAGE plpgsql
AS $$ BEGIN NULL; END $$;
CREATE FUNCTION public.fz_default(e es.events, x text DEFAULT '') RETURNS void LANGUAGE plpgsql
AS $$ BEGIN NULL; END $$;
CREATE PROCEDURE public.fz_proc(e es.events) LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
SELECT es.create_subscription('fz_probe_never', NULL, ARRAY['FzNeverAppended']);
"#;

/// A digest of the subscription state a failing call must not change: the subscriptions,
/// their partitions (checkpoint, lease, failing head), the competing consumers, the parked
/// events, the projections. Rows of projections are left out where the projection worker
/// writes them (checkpoints, parked events, `paused` through the `fz_pauser` handler,
/// `last_run_at`).
const FLOW_DIGEST: &str = "SELECT concat_ws(' ', \
     (SELECT count(*) || ':' || coalesce(sum(hashtext(concat_ws('|', name, start_after, \
        event_types::text, stream_type, partitions, max_attempts))), 0) \
        FROM es.subscription_config WHERE name NOT IN (SELECT name FROM es.projection_config)), \
     (SELECT count(*) || ':' || coalesce(sum(hashtext(concat_ws('|', subscription, partition, \
        checkpoint, owner, lease_until, head_position, head_attempts, head_error))), 0) \
        FROM es.subscription_partitions \
        WHERE subscription NOT IN (SELECT name FROM es.projection_config)), \
     (SELECT count(*) || ':' || coalesce(sum(hashtext(concat_ws('|', subscription, consumer, \
        seen_until))), 0) FROM es.subscription_consumers), \
     (SELECT count(*) || ':' || coalesce(sum(hashtext(concat_ws('|', subscription, partition, \
        global_position, stream_id, attempts, error, replay))), 0) \
        FROM es.parked_events WHERE subscription NOT IN (SELECT name FROM es.projection_config)), \
     (SELECT count(*) || ':' || coalesce(sum(hashtext(concat_ws('|', name, handler, batch, \
        run_as))), 0) FROM es.projection_config))";

/// `es.stream_hash` as docs/reference.md §9 defines it: 32-bit FNV-1a over the uuid's 16 bytes, top bit
/// cleared.
fn fnv1a31(bytes: &[u8; 16]) -> i32 {
    let h = bytes.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (h & 0x7fff_ffff) as i32
}

/// One SQL call of the fuzz: its statement, bound parameters and a printable copy of them.
struct Call {
    label: String,
    sql: String,
    params: Vec<Box<dyn ToSql + Sync>>,
    shown: Vec<String>,
    /// Sent with the simple protocol, without parameters (VACUUM, ALTER TABLE).
    simple: bool,
    /// A call of the subscription and projection surface (docs/reference.md §9, §10): the SQLSTATEs it may
    /// fail with besides [`FLOW_CODES`], and it is checked against [`FLOW_DIGEST`] too. `None`
    /// for the other calls, which are only checked for internal errors.
    allowed: Option<Vec<&'static str>>,
}

impl Call {
    /// A call with parameters bound by [`Call::arg`].
    fn new(label: &str, sql: impl Into<String>) -> Call {
        Call {
            label: label.to_owned(),
            sql: sql.into(),
            params: Vec::new(),
            shown: Vec::new(),
            simple: false,
            allowed: None,
        }
    }

    /// Marks a call of the subscription and projection surface: it may fail only with
    /// [`FLOW_CODES`] and `extra` (see [`Fuzz::flow_allows`]).
    fn flow(mut self, extra: &[&'static str]) -> Call {
        self.allowed = Some(extra.to_vec());
        self
    }

    /// A statement without parameters, sent with the simple query protocol.
    fn simple(label: &str, sql: impl Into<String>) -> Call {
        Call {
            simple: true,
            ..Call::new(label, sql)
        }
    }

    /// Binds the next parameter (`$n`).
    fn arg<T: ToSql + Sync + Debug + 'static>(mut self, value: T) -> Call {
        self.shown.push(short(&format!("{value:?}"), SHOW_ARG));
        self.params.push(Box::new(value));
        self
    }

    /// The call for a report: label, statement and arguments, each truncated.
    fn text(&self) -> String {
        format!(
            "{}: `{}` with [{}]",
            self.label,
            short(&self.sql, 600),
            self.shown.join(", ")
        )
    }
}

/// What to learn from a call's result.
enum After {
    Nothing,
    /// The first column of the first row is the stream's version.
    Version(Option<Uuid>),
    /// A successful append: learn the version, keep the batch to send it again.
    Appended(Batch),
    /// `es.open_account`'s new id.
    Opened,
    /// The third column of the first row is a global position.
    Position,
    /// `es.poll`: what to check of its rows.
    Polled(Polled),
    /// `es.ack` of this position: the checkpoint it returns is at least the position.
    Acked(Option<i64>),
    /// `es.stream_hash` of this stream: FNV-1a, masked to 31 bits.
    Hashed(Option<Uuid>),
    /// A projection created with this name.
    Projected(Option<String>),
    /// A subscription created with this many partitions (NULL: the default, 1).
    Subscribed {
        name: Option<String>,
        partitions: Option<i32>,
    },
}

/// An `es.poll` call: the first column of each row is a global position; with `checked`, the
/// second says whether the event belongs to the partition and matches the subscription's
/// filters.
struct Polled {
    name: Option<String>,
    partition: Option<i32>,
    max: Option<i64>,
    checked: bool,
}

/// A successful append, kept to be sent again (an idempotent retry, or a duplicate elsewhere).
#[derive(Clone)]
struct Batch {
    stream: Option<Uuid>,
    expected: Option<i64>,
    events: Vec<Option<String>>,
}

/// One of the fuzz's connections and its transaction state.
struct Conn {
    name: &'static str,
    client: Client,
    in_tx: bool,
    tx_calls: u32,
    tx_budget: u32,
    /// Depth of the user savepoints `s1..sN` open in the transaction.
    savepoints: u32,
    /// The transaction is REPEATABLE READ or SERIALIZABLE (a concurrent update is 40001).
    strict_iso: bool,
    /// The transaction ran ALTER TABLE on a store table (its locks can deadlock, 40P01, with
    /// the projection worker).
    ddl: bool,
}

/// How often an SQLSTATE came back from one kind of call, and the first message with it.
#[derive(Default)]
struct Seen {
    count: u64,
    first: String,
}

/// What the run did, for the summary.
#[derive(Default)]
struct Stats {
    calls: u64,
    classes: BTreeMap<String, u64>,
    /// Per kind of call: (succeeded, failed), to see that every entry point ran.
    labels: BTreeMap<String, (u64, u64)>,
    codes: BTreeMap<String, Seen>,
    begun: u64,
    committed: u64,
    rolled_back: u64,
    commit_failed: u64,
    savepoints: u64,
    savepoint_rollbacks: u64,
    call_rollbacks: u64,
    digests_compared: u64,
    big_batch_rollbacks: u64,
    slowest: Option<(Duration, String)>,
    /// Failed subscription/projection calls whose [`FLOW_DIGEST`] was compared.
    flow_digests_compared: u64,
    /// Samples of the database's projection workers, and the most seen at once.
    worker_samples: u64,
    max_workers: usize,
}

/// A JSON object under construction, kept as raw key/value texts so that values serde_json
/// cannot hold exactly (`99999999999999999999`, `-0.0`, duplicate keys) reach the server verbatim.
struct Obj(Vec<(String, String)>);

impl Obj {
    /// `{"type": ty}`.
    fn typed(ty: &str) -> Obj {
        Obj(vec![("type".to_owned(), quote(ty))])
    }

    /// Sets `key` to the raw JSON `raw` (replacing an earlier value).
    fn set(&mut self, key: &str, raw: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = raw,
            None => self.0.push((key.to_owned(), raw)),
        }
    }

    fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    fn render(&self) -> String {
        let members: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}:{v}", quote(k)))
            .collect();
        format!("{{{}}}", members.join(","))
    }
}

/// `s` as a JSON string literal.
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// `s` cut to at most `max` characters (on a char boundary), marked when cut.
fn short(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes]", &s[..end], s.len())
}

/// A u64 from the environment, decimal or `0x` hex.
fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    let raw = raw.trim();
    let parsed = match raw.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={raw:?} is not a u64")))
}

/// The fuzzer: connections, RNG, what the calls taught about the store, and the counts.
struct Fuzz {
    seed: u64,
    secs: u64,
    rng: StdRng,
    conns: Vec<Conn>,
    pool: Vec<Uuid>,
    accounts: Vec<Uuid>,
    versions: HashMap<Uuid, i64>,
    recent_ids: Vec<Uuid>,
    batches: Vec<Batch>,
    last_position: i64,
    stored_events: i64,
    history: VecDeque<String>,
    stats: Stats,
    /// Partitions of the subscriptions the fuzz created (possibly dropped or rolled back since;
    /// a BTreeMap so that a seed picks the same names again).
    partitions: BTreeMap<String, i32>,
    /// Projections the fuzz created (possibly dropped or rolled back since).
    projections: Vec<String>,
    /// Per subscription and partition, the positions the last `es.poll` returned (first, last).
    heads: HashMap<(String, i32), (i64, i64)>,
    /// Every pid seen as this database's `event_store worker`, and what was seen when more
    /// than one ran at once.
    worker_pids: BTreeSet<i32>,
    duplicate_workers: Vec<String>,
    steps: u64,
}

impl Fuzz {
    /// Opens the three connections. The two that run beside TX0's open transactions wait at
    /// most 200 ms for a lock: with all calls on one thread, a wait for TX0 would never end.
    fn new(db: &TestDb, seed: u64, secs: u64) -> Fuzz {
        let open = |name: &'static str, settings: &str| {
            let mut client = db.connect();
            client
                .batch_execute(settings)
                .unwrap_or_else(|e| panic!("setting up connection {name}: {}", describe(&e)));
            Conn {
                name,
                client,
                in_tx: false,
                tx_calls: 0,
                tx_budget: 0,
                savepoints: 0,
                strict_iso: false,
                ddl: false,
            }
        };
        let conns = vec![
            open(
                "tx",
                "SET lock_timeout = '5s'; SET statement_timeout = '60s'",
            ),
            open(
                "auto",
                "SET lock_timeout = '200ms'; SET statement_timeout = '60s'",
            ),
            // VACUUM (FREEZE) waits for buffer pins without a lock_timeout: bound it here.
            open(
                "admin",
                "SET lock_timeout = '200ms'; SET statement_timeout = '10s'",
            ),
        ];
        let mut rng = StdRng::seed_from_u64(seed);
        let pool = (0..POOL).map(|_| Uuid::from_u128(rng.random())).collect();
        Fuzz {
            seed,
            secs,
            rng,
            conns,
            pool,
            accounts: Vec::new(),
            versions: HashMap::new(),
            recent_ids: Vec::new(),
            batches: Vec::new(),
            last_position: 0,
            stored_events: 0,
            history: VecDeque::new(),
            stats: Stats::default(),
            partitions: BTreeMap::new(),
            projections: Vec::new(),
            heads: HashMap::new(),
            worker_pids: BTreeSet::new(),
            duplicate_workers: Vec::new(),
            steps: 0,
        }
    }

    // ---- bookkeeping -------------------------------------------------------------------------

    /// Fails the test with the seed, `what`, and the calls that led to it.
    fn fail(&self, c: usize, what: &str) -> ! {
        let conn = &self.conns[c];
        let mut report = format!(
            "fuzz failure (replay: ES_FUZZ_SEED={} ES_FUZZ_SECS={}) on connection `{}`{}:\n  {what}\n\
             last calls, oldest first (* = inside a transaction):\n",
            self.seed,
            self.secs,
            conn.name,
            if conn.in_tx {
                " inside a transaction"
            } else {
                ""
            },
        );
        for line in &self.history {
            report.push_str("  ");
            report.push_str(line);
            report.push('\n');
        }
        panic!("{report}");
    }

    /// Remembers a statement and its outcome for a failure report.
    fn note(&mut self, c: usize, what: &str, outcome: &str) {
        let conn = &self.conns[c];
        let line = format!(
            "{}{} {} -> {}",
            conn.name,
            if conn.in_tx { "*" } else { "" },
            short(what, 500),
            short(outcome, 300)
        );
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(line);
    }

    /// Runs a bookkeeping statement (transaction control, savepoints) that must succeed.
    fn meta(&mut self, c: usize, sql: &str) {
        let result = self.conns[c].client.batch_execute(sql);
        match result {
            Ok(()) => self.note(c, sql, "ok"),
            Err(err) => {
                self.note(c, sql, &describe(&err));
                self.fail(
                    c,
                    &format!("bookkeeping statement `{sql}` failed: {}", describe(&err)),
                )
            }
        }
    }

    /// The store's digest as connection `c` sees it now. Sent with the simple protocol: an
    /// extended-protocol portal stays open in a transaction until the next Bind, and this one's
    /// `max(global_position)` index scan would keep its pages pinned meanwhile, so that a
    /// `VACUUM (FREEZE)` on the admin connection would wait for the pin (a wait `lock_timeout`
    /// does not cover).
    fn digest(&mut self, c: usize) -> String {
        let result = self.conns[c].client.simple_query(DIGEST);
        let digest = match result {
            Ok(messages) => messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            }),
            Err(err) => self.fail(
                c,
                &format!("the store digest query failed: {}", describe(&err)),
            ),
        };
        let Some(digest) = digest else {
            self.fail(c, "the store digest query returned no row")
        };
        if c != ADMIN
            && let Some(events) = digest.split(' ').nth(3).and_then(|n| n.parse().ok())
        {
            self.stored_events = events;
        }
        digest
    }

    /// Whether an error means the server broke: an internal error, or a lost connection.
    fn fatal(&self, c: usize, err: &Error) -> bool {
        match sqlstate(err) {
            None => true,
            Some(code) => {
                code.starts_with("XX") || code.starts_with("58") || self.conns[c].client.is_closed()
            }
        }
    }

    fn count_outcome(&mut self, label: &str, code: Option<&str>, message: &str) {
        let class = match code {
            None => "ok".to_owned(),
            Some(code) => code[..2].to_owned(),
        };
        *self.stats.classes.entry(class).or_default() += 1;
        let tally = self.stats.labels.entry(label.to_owned()).or_default();
        if code.is_none() {
            tally.0 += 1;
        } else {
            tally.1 += 1;
        }
        if let Some(code) = code {
            let seen = self
                .stats
                .codes
                .entry(format!("{code} {label}"))
                .or_default();
            seen.count += 1;
            if seen.first.is_empty() {
                seen.first = short(message, 400);
            }
        }
    }

    /// Runs `call` on connection `c` and checks the properties every call must keep: no
    /// internal error, no lost connection, and when it fails, an unchanged store. Inside a
    /// transaction the call runs in its own savepoint, so that a failure is rolled back to the
    /// state right before it (and the transaction goes on).
    fn exec(&mut self, c: usize, call: &Call) -> Result<Vec<Row>, String> {
        let in_tx = self.conns[c].in_tx;
        if in_tx {
            self.meta(c, "SAVEPOINT fz_call");
        }
        let before = self.digest(c);
        let flow_before = if call.allowed.is_some() {
            Some(self.flow_digest(c))
        } else {
            None
        };
        let refs: Vec<&(dyn ToSql + Sync)> = call.params.iter().map(|p| p.as_ref()).collect();
        let started = Instant::now();
        let result = if call.simple {
            self.conns[c]
                .client
                .batch_execute(&call.sql)
                .map(|()| Vec::new())
        } else {
            self.conns[c].client.query(&call.sql, &refs)
        };
        let took = started.elapsed();
        if self.stats.slowest.as_ref().is_none_or(|(d, _)| took > *d) {
            self.stats.slowest = Some((took, short(&call.text(), 300)));
        }
        self.stats.calls += 1;
        if in_tx {
            self.conns[c].tx_calls += 1;
        }
        match result {
            Ok(rows) => {
                self.note(c, &call.text(), "ok");
                if in_tx {
                    self.meta(c, "RELEASE SAVEPOINT fz_call");
                }
                self.count_outcome(&call.label, None, "");
                Ok(rows)
            }
            Err(err) => {
                let text = describe(&err);
                self.note(c, &call.text(), &text);
                if self.fatal(c, &err) {
                    self.fail(
                        c,
                        &format!(
                            "internal error or lost connection: {} -> {text}",
                            call.text()
                        ),
                    );
                }
                let code = sqlstate(&err).unwrap_or("?????").to_owned();
                if !self.flow_allows(c, &code, call) {
                    self.fail(
                        c,
                        &format!(
                            "SQLSTATE {code} is not one this call may fail with (allowed: {}): \
                             {} -> {text}",
                            self.allowed_text(c, call),
                            call.text()
                        ),
                    );
                }
                if in_tx {
                    self.meta(
                        c,
                        "ROLLBACK TO SAVEPOINT fz_call; RELEASE SAVEPOINT fz_call",
                    );
                    self.stats.call_rollbacks += 1;
                }
                if let Some(flow_before) = flow_before {
                    let flow_after = self.flow_digest(c);
                    self.stats.flow_digests_compared += 1;
                    if flow_after != flow_before {
                        self.fail(
                            c,
                            &format!(
                                "a failing call changed the subscriptions or projections: {} -> \
                                 {text}\n  flow digest before: {flow_before}\n  flow digest \
                                 after:  {flow_after}",
                                call.text()
                            ),
                        );
                    }
                }
                let after = self.digest(c);
                self.stats.digests_compared += 1;
                if after != before {
                    self.fail(
                        c,
                        &format!(
                            "a failing call changed the store: {} -> {text}\n  digest before: \
                             {before}\n  digest after:  {after}",
                            call.text()
                        ),
                    );
                }
                self.count_outcome(&call.label, Some(&code), &text);
                Err(code)
            }
        }
    }

    /// Runs a generated call (sometimes behind a sqlcommenter comment, which the tracing layer
    /// parses) and learns from its result.
    fn run(&mut self, c: usize, call: (Call, After)) -> bool {
        self.run_code(c, call).is_ok()
    }

    /// [`Fuzz::run`], with the SQLSTATE of a failure.
    fn run_code(&mut self, c: usize, (mut call, after): (Call, After)) -> Result<(), String> {
        if !call.simple && self.chance(0.03) {
            let tp = self.pick(&[
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-00000000000000000000000000000000-0000000000000000-01",
                "zz-not-a-traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                "",
            ]);
            call.sql = format!("/*traceparent='{tp}'*/ {}", call.sql);
        }
        let rows = self.exec(c, &call)?;
        let first = rows.first();
        match after {
            After::Nothing => {}
            After::Version(stream) => {
                if let (Some(s), Some(Ok(Some(v)))) =
                    (stream, first.map(|r| r.try_get::<_, Option<i64>>(0)))
                {
                    self.versions.insert(s, v);
                }
            }
            After::Appended(batch) => {
                if let (Some(s), Some(Ok(Some(v)))) =
                    (batch.stream, first.map(|r| r.try_get::<_, Option<i64>>(0)))
                {
                    self.versions.insert(s, v);
                }
                if !batch.events.is_empty() {
                    if self.batches.len() < 50 {
                        self.batches.push(batch);
                    } else {
                        let i = self.rng.random_range(0..self.batches.len());
                        self.batches[i] = batch;
                    }
                }
            }
            After::Opened => {
                if let Some(Ok(Some(id))) = first.map(|r| r.try_get::<_, Option<Uuid>>(0)) {
                    if self.accounts.len() < MAX_ACCOUNTS {
                        self.accounts.push(id);
                    } else {
                        let i = self.rng.random_range(0..self.accounts.len());
                        self.accounts[i] = id;
                    }
                }
            }
            After::Position => {
                if let Some(Ok(Some(p))) = first.map(|r| r.try_get::<_, Option<i64>>(2)) {
                    self.last_position = self.last_position.max(p);
                }
            }
            After::Polled(polled) => self.check_poll(c, &call, &rows, polled),
            After::Acked(position) => {
                let checkpoint = first.and_then(|r| r.try_get::<_, Option<i64>>(0).ok().flatten());
                if let (Some(p), Some(cp)) = (position, checkpoint)
                    && cp < p
                {
                    self.fail(
                        c,
                        &format!(
                            "es.ack returned the checkpoint {cp}, below the acked position {p}: {}",
                            call.text()
                        ),
                    );
                }
            }
            After::Hashed(stream) => {
                let got = first.and_then(|r| r.try_get::<_, Option<i32>>(0).ok().flatten());
                let want = stream.map(|s| fnv1a31(s.as_bytes()));
                if got != want {
                    self.fail(
                        c,
                        &format!(
                            "es.stream_hash returned {got:?}, FNV-1a masked to 31 bits is {want:?}: {}",
                            call.text()
                        ),
                    );
                }
            }
            After::Projected(name) => {
                if let Some(name) = name
                    && !self.projections.contains(&name)
                {
                    if self.projections.len() < 12 {
                        self.projections.push(name);
                    } else {
                        let i = self.rng.random_range(0..self.projections.len());
                        self.projections[i] = name;
                    }
                }
            }
            After::Subscribed { name, partitions } => {
                if let Some(name) = name {
                    self.partitions.insert(name, partitions.unwrap_or(1));
                }
            }
        }
        Ok(())
    }

    // ---- transactions ------------------------------------------------------------------------

    fn begin(&mut self, c: usize) {
        let sql = self.pick(&[
            "BEGIN",
            "BEGIN",
            "BEGIN",
            "BEGIN ISOLATION LEVEL REPEATABLE READ",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
        ]);
        self.meta(c, sql);
        let budget = self.rng.random_range(1..=25);
        let conn = &mut self.conns[c];
        conn.in_tx = true;
        conn.tx_calls = 0;
        conn.tx_budget = budget;
        conn.savepoints = 0;
        conn.strict_iso = sql != "BEGIN";
        conn.ddl = false;
        self.stats.begun += 1;
    }

    /// Commits or rolls back at random. A COMMIT may fail (a serialization failure under
    /// SERIALIZABLE): that ends the transaction too, and counts as a failed commit.
    fn end_tx(&mut self, c: usize) {
        if self.chance(0.55) {
            let result = self.conns[c].client.batch_execute("COMMIT");
            match result {
                Ok(()) => {
                    self.note(c, "COMMIT", "ok");
                    self.stats.committed += 1;
                }
                Err(err) => {
                    self.note(c, "COMMIT", &describe(&err));
                    if self.fatal(c, &err) {
                        self.fail(c, &format!("COMMIT: {}", describe(&err)));
                    }
                    let code = sqlstate(&err).unwrap_or("?????").to_owned();
                    self.count_outcome("COMMIT", Some(&code), &describe(&err));
                    self.stats.commit_failed += 1;
                }
            }
        } else {
            self.meta(c, "ROLLBACK");
            self.stats.rolled_back += 1;
        }
        let conn = &mut self.conns[c];
        conn.in_tx = false;
        conn.savepoints = 0;
    }

    /// Before a call on TX0: maybe begin, end, or work with savepoints.
    fn tx_control(&mut self) {
        let conn = &self.conns[TX0];
        if !conn.in_tx {
            if self.chance(0.15) {
                self.begin(TX0);
            }
            return;
        }
        if conn.tx_calls >= conn.tx_budget {
            self.end_tx(TX0);
            return;
        }
        let depth = conn.savepoints;
        let r = self.rng.random_range(0..100);
        if r < 8 {
            self.meta(TX0, &format!("SAVEPOINT s{}", depth + 1));
            self.conns[TX0].savepoints += 1;
            self.stats.savepoints += 1;
        } else if r < 13 && depth > 0 {
            let k = self.rng.random_range(1..=depth);
            self.meta(TX0, &format!("ROLLBACK TO SAVEPOINT s{k}"));
            self.conns[TX0].savepoints = k;
            self.stats.savepoint_rollbacks += 1;
        } else if r < 16 && depth > 0 {
            let k = self.rng.random_range(1..=depth);
            self.meta(TX0, &format!("RELEASE SAVEPOINT s{k}"));
            self.conns[TX0].savepoints = k - 1;
        }
    }

    // ---- random values -----------------------------------------------------------------------

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).expect("a non-empty choice")
    }

    /// A stream id: mostly from the pool or the opened accounts, sometimes unknown, nil or NULL.
    fn pick_stream(&mut self) -> Option<Uuid> {
        let r = self.rng.random_range(0..100);
        if r < 70 || (r < 85 && self.accounts.is_empty()) {
            let i = self.rng.random_range(0..POOL);
            Some(self.pool[i])
        } else if r < 85 {
            let i = self.rng.random_range(0..self.accounts.len());
            Some(self.accounts[i])
        } else if r < 95 {
            Some(Uuid::from_u128(self.rng.random()))
        } else if r < 98 {
            Some(Uuid::nil())
        } else {
            None
        }
    }

    /// An account id for a command: mostly an opened or pool account.
    fn pick_account(&mut self) -> Option<Uuid> {
        if !self.accounts.is_empty() && self.chance(0.75) {
            let i = self.rng.random_range(0..self.accounts.len());
            Some(self.accounts[i])
        } else if self.chance(0.6) {
            let i = self.rng.random_range(0..ACCOUNT_POOL);
            Some(self.pool[i])
        } else {
            self.pick_stream()
        }
    }

    /// The last version seen for a stream (0 if never seen).
    fn known(&self, stream: Option<Uuid>) -> i64 {
        stream
            .and_then(|s| self.versions.get(&s).copied())
            .unwrap_or(0)
    }

    fn is_account(&self, stream: Option<Uuid>) -> bool {
        stream.is_some_and(|s| self.pool[..ACCOUNT_POOL].contains(&s) || self.accounts.contains(&s))
    }

    /// A bigint argument: NULL, near `near`, an extreme, or random.
    fn pick_bigint(&mut self, near: i64) -> Option<i64> {
        match self.rng.random_range(0..100) {
            0..10 => None,
            10..35 => Some(near),
            35..45 => Some(near.saturating_sub(1)),
            45..55 => Some(near.saturating_add(1)),
            55..85 => Some(self.pick(EXTREMES)),
            85..95 => Some(self.rng.random_range(0..1000)),
            _ => Some(self.rng.random()),
        }
    }

    /// An expected version: mostly right or NULL, so that streams grow.
    fn pick_expected(&mut self, stream: Option<Uuid>) -> Option<i64> {
        let known = self.known(stream);
        match self.rng.random_range(0..100) {
            0..30 => None,
            30..70 => Some(known),
            _ => self.pick_bigint(known),
        }
    }

    fn pick_int(&mut self) -> Option<i32> {
        match self.rng.random_range(0..100) {
            0..10 => None,
            10..50 => Some(self.pick(INT_EXTREMES)),
            _ => Some(self.rng.random_range(0..500)),
        }
    }

    /// An amount in cents: mostly small and positive, else zero, negative, or near `i64::MAX`.
    fn pick_amount(&mut self) -> Option<i64> {
        match self.rng.random_range(0..100) {
            0..50 => Some(self.rng.random_range(1..=5000)),
            50..60 => Some(self.rng.random_range(1..=10_000_000)),
            60..85 => Some(self.pick(AMOUNT_EXTREMES)),
            85..95 => Some(self.rng.random_range(-1000..=0)),
            _ => None,
        }
    }

    /// An opening balance: mostly ordinary, sometimes right below `i64::MAX` (so deposits
    /// overflow), sometimes an extreme.
    fn pick_balance(&mut self) -> Option<i64> {
        match self.rng.random_range(0..100) {
            0..75 => Some(self.rng.random_range(0..100_000)),
            75..80 => Some(i64::MAX - self.rng.random_range(0..1000)),
            _ => self.pick_amount(),
        }
    }

    /// A holder, description or reason: ordinary, empty, unicode, 10 kB, 2 MB, a NUL byte
    /// (not valid in text), JSON-looking, or NULL.
    fn pick_text(&mut self) -> Option<String> {
        match self.rng.random_range(0..100) {
            0..55 => Some(format!("fz-{}", self.rng.random_range(0..1000))),
            55..65 => Some(String::new()),
            65..70 => Some(" ".to_owned()),
            70..78 => Some("é✓ \"quote\" \\ back".to_owned()),
            78..82 => Some("x".repeat(10_000)),
            82..84 => Some("y".repeat(2_000_000)),
            84..86 => Some("nul\0byte".to_owned()),
            86..90 => Some("{\"type\":\"Opened\"}".to_owned()),
            _ => None,
        }
    }

    /// An `as_of` time: NULL, the epoch, 1900, now, a second ago, a year ahead.
    fn pick_time(&mut self) -> Option<SystemTime> {
        let now = SystemTime::now();
        match self.rng.random_range(0..6) {
            0 => None,
            1 => Some(UNIX_EPOCH),
            2 => Some(UNIX_EPOCH - Duration::from_secs(70 * 365 * 86_400)),
            3 => Some(now),
            4 => Some(now - Duration::from_secs(1)),
            _ => Some(now + Duration::from_secs(365 * 86_400)),
        }
    }

    /// An event id: mostly new, sometimes one sent before (a duplicate or an idempotent retry).
    fn event_id(&mut self) -> Uuid {
        if !self.recent_ids.is_empty() && self.chance(0.15) {
            let i = self.rng.random_range(0..self.recent_ids.len());
            return self.recent_ids[i];
        }
        let id = Uuid::from_u128(self.rng.random());
        if self.recent_ids.len() < 300 {
            self.recent_ids.push(id);
        } else {
            let i = self.rng.random_range(0..self.recent_ids.len());
            self.recent_ids[i] = id;
        }
        id
    }

    /// Replaces, removes or duplicates 1–3 keys with wrong values.
    fn mutate(&mut self, o: &mut Obj, keys: &[&str]) {
        for _ in 0..self.rng.random_range(1..=3) {
            let key = self.pick(keys);
            let wrong = self.pick(WRONG).to_owned();
            match self.rng.random_range(0..10) {
                0..2 => o.remove(key),
                2 => o.0.push((key.to_owned(), wrong)),
                _ => o.set(key, wrong),
            }
        }
    }

    /// A well-formed account event for the event at `version` (mostly `Opened` first).
    fn account_event(&mut self, version: i64) -> Obj {
        let kind = if version == 1 && self.chance(0.9) {
            "Opened"
        } else {
            match self.rng.random_range(0..100) {
                0..45 => "Deposited",
                45..82 => "Withdrawn",
                82..85 => "Frozen",
                85..86 => "Closed",
                86..91 => "Opened",
                _ => self.pick(&[
                    "AccountOpened",
                    "MoneyDeposited",
                    "Unknown",
                    "",
                    "deposited",
                ]),
            }
        };
        let mut o = Obj::typed(kind);
        match kind {
            "Opened" => {
                let holder = format!("holder-{}", self.rng.random_range(0..100));
                o.set("account_holder", quote(&holder));
                let balance = self.pick_balance().unwrap_or(0);
                o.set("initial_balance_cents", balance.to_string());
            }
            "Deposited" | "Withdrawn" => {
                let amount = if self.chance(0.85) {
                    self.rng.random_range(1..=500)
                } else {
                    self.pick(AMOUNT_EXTREMES)
                };
                o.set("amount_cents", amount.to_string());
                o.set("description", quote(&format!("d{version}")));
            }
            "Frozen" | "Closed" => o.set("reason", quote("fz reason")),
            _ => {}
        }
        o
    }

    /// One element of an events array: a NULL, a non-object, a deeply nested event, or an
    /// object (account or generic) with optional keys, sometimes with wrong values.
    fn gen_event(
        &mut self,
        stream: Option<Uuid>,
        version: i64,
        account: bool,
        with_ids: bool,
    ) -> Option<String> {
        let r = self.rng.random_range(0..100);
        if r < 2 {
            return None;
        }
        if r < 6 {
            return Some(self.pick(NON_OBJECTS).to_owned());
        }
        if r < 8 {
            let n = self.pick(&[10, 100, 1000, 3000]);
            return Some(format!(
                "{{\"type\":\"Deep\",\"d\":{}{}}}",
                "[".repeat(n),
                "]".repeat(n)
            ));
        }
        let mut o = if account {
            self.account_event(version)
        } else {
            let mut o = Obj::typed(&format!("T{}", self.rng.random_range(0..5)));
            o.set("n", self.rng.random_range(0..1000).to_string());
            o
        };
        if with_ids || self.chance(0.2) {
            let id = self.event_id();
            o.set("event_id", quote(&id.to_string()));
        }
        if self.chance(0.1) {
            let at = self.pick(OCCURRED);
            o.set("occurred_at", quote(at));
        }
        if self.chance(0.1) {
            o.set("event_version", self.rng.random_range(1..4).to_string());
        }
        if self.chance(0.1) {
            let id = Uuid::from_u128(self.rng.random());
            o.set(
                "metadata",
                format!("{{\"correlation_id\":{}}}", quote(&id.to_string())),
            );
        }
        if self.chance(0.15) {
            // The seed's flattened EventMetadata, right or off by one.
            if let Some(s) = stream {
                o.set("aggregate_id", quote(&s.to_string()));
            }
            let off = self.pick(&[0, 0, 0, 1, -1]);
            o.set("sequence_number", (version + off).to_string());
        }
        if self.chance(0.25) {
            self.mutate(&mut o, EVENT_KEYS);
        }
        Some(o.render())
    }

    /// An events array for `stream`: empty, one, a few, or up to 400 events.
    fn gen_batch(&mut self, stream: Option<Uuid>, account: bool) -> Vec<Option<String>> {
        let big_ok = self.stored_events < STORE_CAP;
        let n: i64 = match self.rng.random_range(0..100) {
            0..5 => 0,
            5..55 => 1,
            55..88 => self.rng.random_range(2..=5),
            88..97 => self.rng.random_range(6..=50),
            _ if big_ok => self.rng.random_range(51..=400),
            _ => 3,
        };
        let known = self.known(stream);
        let with_ids = self.chance(0.4);
        (0..n)
            .map(|i| self.gen_event(stream, known + i + 1, account, with_ids))
            .collect()
    }

    /// An account state JSON for a snapshot or `account_replay`'s initial state: valid, with
    /// wrong keys, not an object, empty, or NULL.
    fn gen_state(&mut self, version: i64) -> Option<String> {
        let valid = |fz: &mut Fuzz| {
            let status = fz.pick(&["Active", "Active", "Frozen", "Closed"]);
            let balance = if fz.chance(0.9) {
                fz.rng.random_range(0..100_000)
            } else {
                i64::MAX
            };
            Obj(vec![
                ("holder_name".to_owned(), quote("fz")),
                ("balance_cents".to_owned(), balance.to_string()),
                ("status".to_owned(), quote(status)),
                ("version".to_owned(), version.to_string()),
            ])
        };
        match self.rng.random_range(0..100) {
            0..40 => Some(valid(self).render()),
            40..65 => {
                let mut o = valid(self);
                self.mutate(&mut o, STATE_KEYS);
                Some(o.render())
            }
            65..80 => Some(self.pick(WRONG).to_owned()),
            80..90 => Some(self.pick(&["{}", "{\"a\":1}", "[]"]).to_owned()),
            90..95 => None,
            _ => {
                let mut o = valid(self);
                o.set("extra", "[1,2,3]".to_owned());
                Some(o.render())
            }
        }
    }

    // ---- calls -------------------------------------------------------------------------------

    /// A random call of the SQL surface (no admin statements).
    fn random_call(&mut self) -> (Call, After) {
        if self.chance(FLOW_SHARE) {
            return self.gen_flow();
        }
        match self.rng.random_range(0..100) {
            0..30 => self.gen_append(),
            30..37 => self.gen_load_events(),
            37..41 => self.gen_stream_version(),
            41..45 => self.gen_read_all(),
            45..50 => self.gen_save_snapshot(),
            50..54 => self.gen_load_snapshot(),
            54..62 => self.gen_replay(),
            62..66 => self.gen_open_account(),
            66..74 => self.gen_money(true),
            74..80 => self.gen_money(false),
            80..81 => {
                let freeze = self.chance(0.6);
                self.gen_freeze_or_close(freeze)
            }
            81..82 => self.gen_money(true),
            82..89 => self.gen_account_state(),
            89..95 => self.gen_account_history(),
            95..97 => (
                Call::new("tracing_stats", "SELECT * FROM es.tracing_stats()"),
                After::Nothing,
            ),
            97..99 => self.gen_lifecycle(),
            _ => self.gen_setting(),
        }
    }

    /// The life of a stream (docs/reference.md §14): soft and hard deletes, undeletes and truncations of
    /// the pool's streams with versions and flags at the edges. Rare, since a hard delete
    /// takes a pool stream out for the rest of the run.
    fn gen_lifecycle(&mut self) -> (Call, After) {
        let stream = self.pick_stream();
        let known = self.known(stream);
        match self.rng.random_range(0..10) {
            0..3 => {
                let expected = self.pick_expected(stream);
                let hard = match self.rng.random_range(0..10) {
                    0 => None,
                    1..3 => Some(true),
                    _ => Some(false),
                };
                let call = Call::new("delete_stream", "SELECT es.delete_stream($1, $2, $3)")
                    .arg(stream)
                    .arg(expected)
                    .arg(hard);
                (call, After::Version(stream))
            }
            3..6 => (
                Call::new("undelete_stream", "SELECT es.undelete_stream($1)").arg(stream),
                After::Version(stream),
            ),
            _ => {
                let before = self.pick_bigint(known);
                let call = Call::new("truncate_stream", "SELECT es.truncate_stream($1, $2)")
                    .arg(stream)
                    .arg(before);
                (call, After::Nothing)
            }
        }
    }

    fn gen_append(&mut self) -> (Call, After) {
        let r = self.rng.random_range(0..100);
        if r < 8 && !self.batches.is_empty() {
            // An idempotent retry (same stream, same ids), or the same ids elsewhere (ES004).
            let i = self.rng.random_range(0..self.batches.len());
            let mut batch = self.batches[i].clone();
            if self.chance(0.3) {
                batch.expected = self.pick_expected(batch.stream);
            }
            if self.chance(0.15) {
                batch.stream = self.pick_stream();
            }
            let call = Call::new("append_events(again)", APPEND)
                .arg(batch.stream)
                .arg(batch.expected)
                .arg(Some(batch.events.clone()));
            return (call, After::Version(batch.stream));
        }
        let stream = self.pick_stream();
        if r < 18 {
            return self.gen_append_server_side(stream);
        }
        let account = self.is_account(stream) ^ self.chance(0.1);
        let expected = self.pick_expected(stream);
        let events = self.gen_batch(stream, account);
        if self.chance(0.02) {
            let call = Call::new("append_events", APPEND)
                .arg(stream)
                .arg(expected)
                .arg(None::<Vec<Option<String>>>);
            return (call, After::Nothing);
        }
        let call = Call::new("append_events", APPEND)
            .arg(stream)
            .arg(expected)
            .arg(Some(events.clone()));
        (
            call,
            After::Appended(Batch {
                stream,
                expected,
                events,
            }),
        )
    }

    /// Appends whose events are built by the server: MB-sized (TOASTed) and deeply nested
    /// values, bulk batches, 2-D arrays, arrays with another lower bound, NULL arrays.
    fn gen_append_server_side(&mut self, stream: Option<Uuid>) -> (Call, After) {
        let expected = self.pick_expected(stream);
        let big_ok = self.stored_events < STORE_CAP;
        let (label, array, n): (&str, &str, Option<i32>) = match self.rng.random_range(0..16) {
            0 => (
                "append_events(huge)",
                "ARRAY[jsonb_build_object('type', 'Huge', 'blob', repeat('x', $3))]",
                Some(self.pick(&[1_000_000, 5_000_000])),
            ),
            1 => (
                "append_events(huge incompressible)",
                "ARRAY[jsonb_build_object('type', 'Huge', 'blob', \
                 (SELECT string_agg(md5(g::text), '') FROM generate_series(1, $3) g))]",
                Some(self.pick(&[10_000, 60_000])),
            ),
            2 => (
                "append_events(deep arrays)",
                "ARRAY[jsonb_build_object('type', 'Deep', 'd', \
                 (repeat('[', $3) || repeat(']', $3))::jsonb)]",
                Some(self.pick(&[1000, 5000, 200_000])),
            ),
            3 => (
                "append_events(deep objects)",
                "ARRAY[jsonb_build_object('type', 'Deep', 'd', \
                 (repeat('{\"a\":', $3) || '1' || repeat('}', $3))::jsonb)]",
                Some(self.pick(&[1000, 5000, 200_000])),
            ),
            4 => (
                "append_events(huge type)",
                "ARRAY[jsonb_build_object('type', repeat('T', $3))]",
                Some(self.pick(&[100, 100_000, 1_000_000])),
            ),
            5 => (
                "append_events(huge metadata)",
                "ARRAY[jsonb_build_object('type', 'M', 'metadata', \
                 jsonb_build_object('m', repeat('m', $3)))]",
                Some(self.pick(&[10_000, 2_000_000])),
            ),
            6 => (
                "append_events(huge event_id)",
                "ARRAY[jsonb_build_object('type', 'M', 'event_id', repeat('a', $3))]",
                Some(self.pick(&[37, 100_000])),
            ),
            7 => (
                "append_events(huge description)",
                "ARRAY[jsonb_build_object('type', 'Deposited', 'amount_cents', 1, \
                 'description', repeat('d', $3))]",
                Some(self.pick(&[100_000, 3_000_000])),
            ),
            8 => (
                "append_events(2-D array)",
                "ARRAY[['{\"type\":\"A\"}'::jsonb, '{\"type\":\"B\"}'::jsonb], \
                 ['{\"type\":\"C\"}'::jsonb, '{\"type\":\"D\"}'::jsonb]]",
                None,
            ),
            9 => (
                "append_events(2-D array)",
                "array_fill('{\"type\":\"F\"}'::jsonb, ARRAY[2, 2])",
                None,
            ),
            10 => (
                "append_events(lower bound 3)",
                "'[3:4]={\"{\\\"type\\\":\\\"A\\\"}\",\"{\\\"type\\\":\\\"B\\\"}\"}'::jsonb[]",
                None,
            ),
            11 => (
                "append_events(NULL elements)",
                "array_fill(NULL::jsonb, ARRAY[2])",
                None,
            ),
            12 => ("append_events(NULL array)", "NULL::jsonb[]", None),
            13 => ("append_events(empty array)", "'{}'::jsonb[]", None),
            14 => (
                "append_events(bulk deposits)",
                "(SELECT array_agg(jsonb_build_object('type', 'Deposited', 'amount_cents', 1, \
                 'description', 'bulk ' || g) ORDER BY g) FROM generate_series(1, $3) g)",
                Some(if big_ok { BIG_BATCH } else { 3 }),
            ),
            _ => (
                "append_events(bulk)",
                "(SELECT array_agg(jsonb_build_object('type', 'Bulk', 'i', g) ORDER BY g) \
                 FROM generate_series(1, $3) g)",
                Some(if big_ok { 2000 } else { 3 }),
            ),
        };
        let array = array.replace("$3", "$3::int");
        let mut call = Call::new(label, format!("SELECT es.append_events($1, $2, {array})"))
            .arg(stream)
            .arg(expected);
        if let Some(n) = n {
            call = call.arg(n);
        }
        (call, After::Version(stream))
    }

    fn gen_load_events(&mut self) -> (Call, After) {
        let stream = self.pick_stream();
        let known = self.known(stream);
        let from = self.pick_bigint(known / 2);
        let small = self.rng.random_range(0..10);
        let max = self.pick_bigint(small);
        let (label, sql) = match self.rng.random_range(0..7) {
            0 => (
                "load_events(count)",
                "SELECT count(*), min(version), max(version) FROM es.load_events($1, $2, $3)",
            ),
            1 => (
                "load_events(limit)",
                "SELECT * FROM es.load_events($1, $2, $3) LIMIT 5",
            ),
            2 => (
                "load_events(detoast)",
                "SELECT version, event_type, length(data::text), metadata, occurred_at \
                 FROM es.load_events($1, $2, $3) e",
            ),
            3 => (
                "load_events(in target list)",
                "SELECT (es.load_events($1, $2, $3)).version",
            ),
            4 => (
                "load_events(lateral)",
                "SELECT count(*) FROM (VALUES ($1::uuid), ($1::uuid)) s(id), \
                 LATERAL es.load_events(s.id, $2, $3)",
            ),
            5 => {
                let call = Call::new(
                    "load_events(defaults)",
                    "SELECT count(*) FROM es.load_events($1)",
                )
                .arg(stream);
                return (call, After::Nothing);
            }
            _ => {
                let call = Call::new(
                    "load_events(named)",
                    "SELECT count(*) FROM es.load_events(stream_id => $1, max_count => $2)",
                )
                .arg(stream)
                .arg(max);
                return (call, After::Nothing);
            }
        };
        let call = Call::new(label, sql).arg(stream).arg(from).arg(max);
        (call, After::Nothing)
    }

    fn gen_stream_version(&mut self) -> (Call, After) {
        let stream = self.pick_stream();
        let call = Call::new("stream_version", "SELECT es.stream_version($1)").arg(stream);
        (call, After::Version(stream))
    }

    fn gen_read_all(&mut self) -> (Call, After) {
        let after = self.pick_bigint(self.last_position / 2);
        // A bigint, like load_events' (issue 12): the ints at the edges and the bigint ones.
        let max = if self.rng.random_bool(0.7) {
            self.pick_int().map(i64::from)
        } else {
            self.pick_bigint(1000)
        };
        match self.rng.random_range(0..5) {
            0 => (
                Call::new(
                    "read_all(count)",
                    "SELECT count(*), min(global_position), max(global_position) \
                     FROM es.read_all($1, $2)",
                )
                .arg(after)
                .arg(max),
                After::Position,
            ),
            1 => (
                Call::new(
                    "read_all(limit)",
                    "SELECT global_position, stream_id, version FROM es.read_all($1, $2) LIMIT 3",
                )
                .arg(after)
                .arg(max),
                After::Nothing,
            ),
            2 => (
                Call::new("read_all(defaults)", "SELECT count(*) FROM es.read_all()"),
                After::Nothing,
            ),
            3 => (
                Call::new(
                    "read_all(after only)",
                    "SELECT count(*) FROM es.read_all($1)",
                )
                .arg(after),
                After::Nothing,
            ),
            _ => (
                Call::new(
                    "read_all(in target list)",
                    "SELECT (es.read_all($1, $2)).global_position LIMIT 10",
                )
                .arg(after)
                .arg(max),
                After::Nothing,
            ),
        }
    }

    fn gen_save_snapshot(&mut self) -> (Call, After) {
        let stream = self.pick_stream();
        let known = self.known(stream);
        let version = self.pick_bigint(known);
        let call = match self.rng.random_range(0..10) {
            0..7 => {
                let state = self.gen_state(version.unwrap_or(0));
                Call::new(
                    "save_snapshot",
                    "SELECT es.save_snapshot($1, $2, $3::text::jsonb)",
                )
                .arg(stream)
                .arg(version)
                .arg(state)
            }
            7 => Call::new(
                "save_snapshot(replayed)",
                "SELECT es.save_snapshot($1::uuid, $2::bigint, \
                 (SELECT es.account_replay(data ORDER BY version) FROM es.events \
                  WHERE stream_id = $1::uuid AND version <= $2::bigint))",
            )
            .arg(stream)
            .arg(version),
            8 => {
                let n = self.pick(&[100_000, 3_000_000]);
                Call::new(
                    "save_snapshot(huge)",
                    "SELECT es.save_snapshot($1::uuid, $2::bigint, jsonb_build_object(\
                     'holder_name', repeat('h', $3::int), 'balance_cents', 0, \
                     'status', 'Active', 'version', $2::bigint))",
                )
                .arg(stream)
                .arg(version)
                .arg(n)
            }
            _ => {
                let n = self.pick(&[1000, 5000, 200_000]);
                Call::new(
                    "save_snapshot(deep)",
                    "SELECT es.save_snapshot($1, $2, \
                     (repeat('[', $3::int) || repeat(']', $3::int))::jsonb)",
                )
                .arg(stream)
                .arg(version)
                .arg(n)
            }
        };
        (call, After::Nothing)
    }

    fn gen_load_snapshot(&mut self) -> (Call, After) {
        let stream = self.pick_stream();
        let known = self.known(stream);
        let at = self.pick_bigint(known);
        let call = match self.rng.random_range(0..3) {
            0 => Call::new(
                "load_snapshot",
                "SELECT version, length(state::text), taken_at FROM es.load_snapshot($1, $2)",
            )
            .arg(stream)
            .arg(at),
            1 => Call::new(
                "load_snapshot(newest)",
                "SELECT * FROM es.load_snapshot($1)",
            )
            .arg(stream),
            _ => Call::new(
                "load_snapshot(count)",
                "SELECT count(*) FROM es.load_snapshot($1, $2)",
            )
            .arg(stream)
            .arg(at),
        };
        (call, After::Nothing)
    }

    /// `es.account_replay` in its forms: ordered and unordered aggregate, from an initial
    /// state, window function (running, moving frame, whole partition), grouped, filtered, over
    /// VALUES, over `es.events`, from a snapshot plus tail, and with values built server-side.
    fn gen_replay(&mut self) -> (Call, After) {
        const UNNEST: &str = "unnest($1::text[]::jsonb[]) WITH ORDINALITY AS u(e, n)";
        let n: i64 = self.rng.random_range(0..8);
        let events: Vec<Option<String>> = (0..n)
            .map(|i| self.gen_event(None, i + 1, true, false))
            .collect();
        let with_events = |label: &str, sql: String| Call::new(label, sql).arg(events.clone());
        let call = match self.rng.random_range(0..16) {
            0 => with_events(
                "account_replay(agg)",
                format!("SELECT es.account_replay(e ORDER BY n) FROM {UNNEST}"),
            ),
            1 => with_events(
                "account_replay(agg unordered)",
                format!("SELECT es.account_replay(e) FROM {UNNEST}"),
            ),
            2 => {
                let state = self.gen_state(0);
                with_events(
                    "account_replay(state, agg)",
                    format!(
                        "SELECT es.account_replay($2::text::jsonb, e ORDER BY n) FROM {UNNEST}"
                    ),
                )
                .arg(state)
            }
            3 => with_events(
                "account_replay(window)",
                format!("SELECT n, es.account_replay(e) OVER (ORDER BY n) FROM {UNNEST}"),
            ),
            4 => with_events(
                "account_replay(moving window)",
                format!(
                    "SELECT n, es.account_replay(e) OVER (ORDER BY n ROWS BETWEEN 1 PRECEDING \
                     AND CURRENT ROW) FROM {UNNEST}"
                ),
            ),
            5 => with_events(
                "account_replay(window whole)",
                format!("SELECT n, es.account_replay(e) OVER () FROM {UNNEST}"),
            ),
            6 => with_events(
                "account_replay(grouped)",
                format!("SELECT n % 2, es.account_replay(e ORDER BY n) FROM {UNNEST} GROUP BY 1"),
            ),
            7 => {
                let state = self.gen_state(0);
                with_events(
                    "account_replay(state, window)",
                    format!(
                        "SELECT n, es.account_replay($2::text::jsonb, e) OVER (ORDER BY n) \
                         FROM {UNNEST}"
                    ),
                )
                .arg(state)
            }
            8 => with_events(
                "account_replay(filter)",
                format!(
                    "SELECT es.account_replay(e ORDER BY n) FILTER (WHERE n <> 2) FROM {UNNEST}"
                ),
            ),
            9 | 10 => {
                let mut three: Vec<Option<String>> = (1..=3)
                    .map(|v| self.gen_event(None, v, true, false))
                    .collect();
                three.resize(3, None);
                let sql = if self.chance(0.5) {
                    "SELECT es.account_replay(e ORDER BY n) FROM (VALUES (1, $1::text::jsonb), \
                     (2, $2::text::jsonb), (3, $3::text::jsonb)) v(n, e)"
                } else {
                    "SELECT n, es.account_replay(e) OVER (ORDER BY n) FROM (VALUES \
                     (1, $1::text::jsonb), (2, $2::text::jsonb), (3, $3::text::jsonb)) v(n, e)"
                };
                let [a, b, c] = <[Option<String>; 3]>::try_from(three).expect("three events");
                Call::new("account_replay(values)", sql)
                    .arg(a)
                    .arg(b)
                    .arg(c)
            }
            11 => {
                let stream = self.pick_account();
                Call::new(
                    "account_replay(es.events)",
                    "SELECT es.account_replay(data ORDER BY version) FROM es.events \
                     WHERE stream_id = $1",
                )
                .arg(stream)
            }
            12 => {
                let stream = self.pick_account();
                Call::new(
                    "account_replay(es.events window)",
                    "SELECT count(s), max((s->>'balance_cents')::numeric) FROM (SELECT \
                     es.account_replay(data) OVER (ORDER BY version) AS s FROM es.events \
                     WHERE stream_id = $1) w",
                )
                .arg(stream)
            }
            13 => {
                let stream = self.pick_account();
                Call::new(
                    "account_replay(snapshot + tail)",
                    "SELECT es.account_replay(s.state, e.data ORDER BY e.version) \
                     FROM es.load_snapshot($1::uuid) s JOIN es.events e \
                     ON e.stream_id = $1::uuid AND e.version > s.version",
                )
                .arg(stream)
            }
            14 => {
                let opening = self.pick_balance();
                let amount = self.pick_amount();
                let len = self.pick(&[1, 1000, 3_000_000]);
                Call::new(
                    "account_replay(server-built)",
                    "SELECT es.account_replay(e ORDER BY n) FROM (VALUES \
                     (1, jsonb_build_object('type', 'Opened', 'account_holder', 'A', \
                      'initial_balance_cents', $1::bigint)), \
                     (2, jsonb_build_object('type', 'Deposited', 'amount_cents', $2::bigint, \
                      'description', repeat('x', $3::int)))) v(n, e)",
                )
                .arg(opening)
                .arg(amount)
                .arg(len)
            }
            _ => {
                let n = self.pick(&[1000, 5000, 200_000]);
                Call::new(
                    "account_replay(deep)",
                    "SELECT es.account_replay((repeat('[', $1::int) || repeat(']', $1::int))::jsonb)",
                )
                .arg(n)
            }
        };
        (call, After::Nothing)
    }

    fn gen_open_account(&mut self) -> (Call, After) {
        let holder = self.pick_text();
        let call = if self.chance(0.8) {
            let balance = self.pick_balance();
            Call::new("open_account", "SELECT es.open_account($1, $2)")
                .arg(holder)
                .arg(balance)
        } else {
            Call::new("open_account(default)", "SELECT es.open_account($1)").arg(holder)
        };
        (call, After::Opened)
    }

    /// `es.deposit` or `es.withdraw`, in their 4-, 3-, 2-argument and named forms.
    fn gen_money(&mut self, deposit: bool) -> (Call, After) {
        let f = if deposit { "deposit" } else { "withdraw" };
        let account = self.pick_account();
        let amount = self.pick_amount();
        let description = self.pick_text();
        let expected = if self.chance(0.6) {
            None
        } else {
            let known = self.known(account);
            self.pick_bigint(known)
        };
        let call = match self.rng.random_range(0..10) {
            0..6 => Call::new(f, format!("SELECT es.{f}($1, $2, $3, $4)"))
                .arg(account)
                .arg(amount)
                .arg(description)
                .arg(expected),
            6..8 => Call::new(f, format!("SELECT es.{f}($1, $2, $3)"))
                .arg(account)
                .arg(amount)
                .arg(description),
            8 => Call::new(f, format!("SELECT es.{f}($1, $2)"))
                .arg(account)
                .arg(amount),
            _ => Call::new(
                f,
                format!(
                    "SELECT es.{f}(account_id => $1, amount_cents => $2, expected_version => $3)"
                ),
            )
            .arg(account)
            .arg(amount)
            .arg(expected),
        };
        (call, After::Version(account))
    }

    fn gen_freeze_or_close(&mut self, freeze: bool) -> (Call, After) {
        let f = if freeze {
            "freeze_account"
        } else {
            "close_account"
        };
        let account = self.pick_account();
        let reason = self.pick_text();
        let call = Call::new(f, format!("SELECT es.{f}($1, $2)"))
            .arg(account)
            .arg(reason);
        (call, After::Version(account))
    }

    fn gen_account_state(&mut self) -> (Call, After) {
        let account = self.pick_account();
        let known = self.known(account);
        let at = self.pick_bigint(known);
        let call = match self.rng.random_range(0..6) {
            0 => Call::new("account_state", "SELECT es.account_state($1)").arg(account),
            1 | 2 => {
                let as_of = self.pick_time();
                Call::new(
                    "account_state(as_of, at)",
                    "SELECT es.account_state($1, $2, $3)",
                )
                .arg(account)
                .arg(as_of)
                .arg(at)
            }
            3 => {
                let bound = self.pick(&["infinity", "-infinity"]);
                Call::new(
                    "account_state(infinite as_of)",
                    format!("SELECT es.account_state($1, '{bound}', $2)"),
                )
                .arg(account)
                .arg(at)
            }
            4 => Call::new(
                "account_state(at)",
                "SELECT es.account_state($1, at_version => $2)",
            )
            .arg(account)
            .arg(at),
            _ => {
                let other = self.pick_account();
                Call::new(
                    "account_state(several)",
                    "SELECT es.account_state(s) FROM unnest($1::uuid[]) s",
                )
                .arg(vec![account, other, account])
            }
        };
        (call, After::Nothing)
    }

    fn gen_account_history(&mut self) -> (Call, After) {
        let account = self.pick_account();
        let sql = self.pick(&[
            "SELECT count(*), sum(amount_cents), max(balance_cents)::text \
             FROM es.account_history($1)",
            "SELECT * FROM es.account_history($1) LIMIT 3",
            "SELECT h.* FROM es.account_history($1) h ORDER BY version DESC LIMIT 1",
            "SELECT (es.account_history($1)).balance_cents",
        ]);
        (
            Call::new("account_history", sql).arg(account),
            After::Nothing,
        )
    }

    /// `set_config` of the extension's settings, valid and invalid (a reset with NULL too).
    fn gen_setting(&mut self) -> (Call, After) {
        let (name, values): (&str, &[&str]) = match self.rng.random_range(0..3) {
            0 => (
                "es.snapshot_interval",
                &[
                    "0",
                    "1",
                    "2",
                    "3",
                    "7",
                    "100",
                    "-1",
                    "2147483647",
                    "abc",
                    "",
                ],
            ),
            1 => (
                "es.traceparent",
                &[
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    "00-00000000000000000000000000000000-0000000000000000-01",
                    "garbage",
                    "",
                ],
            ),
            _ => (
                "es.trace_sample_ratio",
                &["0", "0.5", "1", "2", "-1", "NaN"],
            ),
        };
        let value = if self.chance(0.1) {
            None
        } else {
            Some(self.pick(values).to_owned())
        };
        let local = self.chance(0.3);
        let call = Call::new("set_config", "SELECT set_config($1, $2, $3)")
            .arg(name.to_owned())
            .arg(value)
            .arg(local);
        (call, After::Nothing)
    }

    /// Whether `table` has the fuzz's extra column, as connection `c` sees it.
    fn has_extra_column(&mut self, c: usize, table: &str) -> bool {
        let result = self.conns[c].client.query_one(
            "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = $1::text::regclass \
             AND attname = 'fz_extra' AND NOT attisdropped)",
            &[&table],
        );
        match result {
            Ok(row) => row.get(0),
            Err(err) => self.fail(c, &format!("reading pg_attribute: {}", describe(&err))),
        }
    }

    /// Adds `fz_extra` to `table` (with or without a default), or drops it if it is there.
    fn toggle_column(&mut self, c: usize, table: &str) -> Call {
        if self.has_extra_column(c, table) {
            Call::simple(
                "alter table drop column",
                format!("ALTER TABLE {table} DROP COLUMN fz_extra"),
            )
        } else if self.chance(0.6) {
            Call::simple(
                "alter table add column",
                format!("ALTER TABLE {table} ADD COLUMN fz_extra text"),
            )
        } else {
            Call::simple(
                "alter table add column",
                format!("ALTER TABLE {table} ADD COLUMN fz_extra text DEFAULT 'fz'"),
            )
        }
    }

    /// Maintenance from the admin connection while TX0 may hold a transaction open. While it
    /// does, VACUUM skips truncating the table: truncation needs TX0's lock and would retry for
    /// PostgreSQL's fixed 5 s before giving up, time the fuzz would not spend calling anything.
    fn admin(&mut self) {
        let truncate = if self.conns[TX0].in_tx {
            "TRUNCATE false, "
        } else {
            ""
        };
        let call = match self.rng.random_range(0..100) {
            0..30 => Call::simple(
                "vacuum",
                format!("VACUUM ({truncate}ANALYZE false) es.events"),
            ),
            30..40 => Call::simple("vacuum", format!("VACUUM ({truncate}FREEZE) es.events")),
            40..48 => Call::simple(
                "vacuum",
                format!("VACUUM ({truncate}ANALYZE false) es.streams, es.snapshots"),
            ),
            48..53 => Call::simple("analyze", "ANALYZE es.events"),
            53..56 => Call::simple("vacuum full", "VACUUM FULL es.events"),
            56..58 => Call::simple("reindex", "REINDEX TABLE es.events"),
            58..60 => Call::simple("cluster", "CLUSTER es.events USING events_pkey"),
            60..90 => self.toggle_column(ADMIN, "es.events"),
            _ => {
                let table = self.pick(&["es.streams", "es.snapshots"]);
                self.toggle_column(ADMIN, table)
            }
        };
        self.run(ADMIN, (call, After::Nothing));
    }

    // ---- scenarios ---------------------------------------------------------------------------

    /// Append to a stream, append a 400-event batch in a transaction (or savepoint) and roll it
    /// back, then read the stream back every way: the rolled-back batch must leave no trace in
    /// what a later call sees (cached state, snapshot written by the batch, positions in flight).
    fn scenario_rolled_back_batch(&mut self) {
        let i = self.rng.random_range(0..POOL);
        let stream = Some(self.pool[i]);
        let account = i < ACCOUNT_POOL;
        let nested = self.conns[TX0].in_tx;
        let known = self.known(stream);
        let first = if account && known == 0 {
            format!(
                "{{\"type\":\"Opened\",\"account_holder\":\"big-{i}\",\"initial_balance_cents\":{}}}",
                self.rng.random_range(0..1000)
            )
        } else if account {
            "{\"type\":\"Deposited\",\"amount_cents\":5,\"description\":\"before big\"}".to_owned()
        } else {
            "{\"type\":\"BeforeBig\"}".to_owned()
        };
        let call = Call::new("append_events", APPEND)
            .arg(stream)
            .arg(None::<i64>)
            .arg(Some(vec![Some(first)]));
        self.run(TX0, (call, After::Version(stream)));

        if !nested {
            self.begin(TX0);
        }
        let use_savepoint = nested || self.chance(0.3);
        if use_savepoint {
            self.meta(TX0, "SAVEPOINT fz_big");
        }
        let element = if account {
            "jsonb_build_object('type', 'Deposited', 'amount_cents', 1, 'description', 'big ' || g)"
        } else {
            "jsonb_build_object('type', 'Big', 'i', g)"
        };
        let call = Call::new(
            "append_events(big batch, rolled back)",
            format!(
                "SELECT es.append_events($1, NULL, (SELECT array_agg({element} ORDER BY g) \
                 FROM generate_series(1, $2::int) g))"
            ),
        )
        .arg(stream)
        .arg(BIG_BATCH);
        self.run(TX0, (call, After::Nothing));
        if self.chance(0.5) {
            let call = Call::new(
                "load_events(inside big batch)",
                "SELECT count(*) FROM es.load_events($1)",
            )
            .arg(stream);
            self.run(TX0, (call, After::Nothing));
        }
        if use_savepoint {
            self.meta(
                TX0,
                "ROLLBACK TO SAVEPOINT fz_big; RELEASE SAVEPOINT fz_big",
            );
            self.stats.savepoint_rollbacks += 1;
            if !nested {
                self.end_tx(TX0);
            }
        } else {
            self.meta(TX0, "ROLLBACK");
            self.stats.rolled_back += 1;
            self.conns[TX0].in_tx = false;
            self.conns[TX0].savepoints = 0;
        }
        self.stats.big_batch_rollbacks += 1;

        let reads: [(&str, &str); 7] = [
            (
                "load_events(after rollback)",
                "SELECT count(*) FROM es.load_events($1)",
            ),
            (
                "stream_version(after rollback)",
                "SELECT es.stream_version($1)",
            ),
            (
                "account_state(after rollback)",
                "SELECT es.account_state($1)",
            ),
            (
                "account_history(after rollback)",
                "SELECT count(*), max(balance_cents) FROM es.account_history($1)",
            ),
            (
                "account_replay(after rollback)",
                "SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = $1",
            ),
            (
                "load_snapshot(after rollback)",
                "SELECT version, state FROM es.load_snapshot($1)",
            ),
            (
                "read_all(after rollback)",
                "SELECT count(*) FROM es.read_all(0, 100000) WHERE stream_id = $1",
            ),
        ];
        for (label, sql) in reads {
            let c = if self.chance(0.2) { AUTO } else { TX0 };
            let after = if label.starts_with("stream_version") {
                After::Version(stream)
            } else {
                After::Nothing
            };
            self.run(c, (Call::new(label, sql).arg(stream), after));
        }
    }

    /// ALTER TABLE inside TX0's transaction, calls that see the new shape, then COMMIT or
    /// ROLLBACK: the calls after a rolled-back ALTER must not use the discarded shape.
    fn scenario_ddl_in_tx(&mut self) {
        if self.conns[TX0].in_tx {
            return;
        }
        self.begin(TX0);
        let table = self.pick(&["es.events", "es.events", "es.streams", "es.snapshots"]);
        let ddl = self.toggle_column(TX0, table);
        if self.run(TX0, (ddl, After::Nothing)) {
            self.conns[TX0].ddl = true;
        }
        for _ in 0..self.rng.random_range(1..=4) {
            let call = self.random_call();
            self.run(TX0, call);
        }
        self.end_tx(TX0);
    }

    /// One step of the fuzz.
    fn step(&mut self) {
        self.steps += 1;
        if self.steps.is_multiple_of(16) {
            self.sample_workers();
        }
        match self.rng.random_range(0..1000) {
            0..20 => self.admin(),
            20..28 => self.scenario_rolled_back_batch(),
            28..31 => self.scenario_ddl_in_tx(),
            31..51 => self.scenario_consume(),
            51..54 => self.scenario_wait_timeout(),
            54..62 => self.scenario_wait_then_poll(),
            _ => {
                let c = if self.chance(0.7) { TX0 } else { AUTO };
                if c == TX0 {
                    self.tx_control();
                }
                let call = self.random_call();
                self.run(c, call);
            }
        }
    }

    /// Ends an open transaction at the deadline, at random like any other.
    fn finish(&mut self) {
        if self.conns[TX0].in_tx {
            self.end_tx(TX0);
        }
    }
}

/// The subscription and projection surface (docs/reference.md §9, §10).
impl Fuzz {
    // ---- checks ------------------------------------------------------------------------------

    /// [`FLOW_DIGEST`] as connection `c` sees it now (simple protocol, as [`Fuzz::digest`]).
    fn flow_digest(&mut self, c: usize) -> String {
        let result = self.conns[c].client.simple_query(FLOW_DIGEST);
        let digest = match result {
            Ok(messages) => messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            }),
            Err(err) => self.fail(
                c,
                &format!("the flow digest query failed: {}", describe(&err)),
            ),
        };
        digest.unwrap_or_else(|| self.fail(c, "the flow digest query returned no row"))
    }

    /// Whether a call may fail with `code`: every code for the calls outside the subscription
    /// and projection surface; for those, [`FLOW_CODES`], the call's own extras, 40001 in a
    /// REPEATABLE READ or SERIALIZABLE transaction (a row the projection worker updated since
    /// the snapshot), and 40P01 in a transaction that holds ALTER TABLE locks on the store
    /// (the worker waits for them while holding its projection's rows), or in any transaction
    /// with [`TOLERATE_WORKER_DEADLOCKS`].
    fn flow_allows(&self, c: usize, code: &str, call: &Call) -> bool {
        let Some(extra) = &call.allowed else {
            return true;
        };
        if FLOW_CODES.contains(&code) || extra.contains(&code) {
            return true;
        }
        let conn = &self.conns[c];
        match code {
            "40001" => conn.in_tx && conn.strict_iso,
            "40P01" => conn.in_tx && (conn.ddl || TOLERATE_WORKER_DEADLOCKS),
            _ => false,
        }
    }

    fn allowed_text(&self, c: usize, call: &Call) -> String {
        let mut codes: Vec<&str> = FLOW_CODES.to_vec();
        codes.extend(call.allowed.iter().flatten());
        let conn = &self.conns[c];
        if conn.in_tx && conn.strict_iso {
            codes.push("40001");
        }
        if conn.in_tx && (conn.ddl || TOLERATE_WORKER_DEADLOCKS) {
            codes.push("40P01");
        }
        codes.join(", ")
    }

    /// `es.poll`'s rows: at most `max_count`, in strictly ascending position order, and (when
    /// the query says) each in the partition and matching the filters. Remembers the first and
    /// last position for the acks and nacks that follow.
    fn check_poll(&mut self, c: usize, call: &Call, rows: &[Row], polled: Polled) {
        let mut positions = Vec::with_capacity(rows.len());
        for row in rows {
            let Ok(position) = row.try_get::<_, i64>(0) else {
                return;
            };
            positions.push(position);
            if polled.checked && row.try_get::<_, Option<bool>>(1).ok().flatten() == Some(false) {
                self.fail(
                    c,
                    &format!(
                        "es.poll returned the event at {position}, which is not in the polled \
                         partition or does not match the subscription's event types or stream \
                         type: {}",
                        call.text()
                    ),
                );
            }
        }
        if let Some(max) = polled.max
            && positions.len() > max.max(0) as usize
        {
            self.fail(
                c,
                &format!(
                    "es.poll returned {} events, max_count was {max}: {}",
                    positions.len(),
                    call.text()
                ),
            );
        }
        if let Some(w) = positions.windows(2).find(|w| w[0] >= w[1]) {
            self.fail(
                c,
                &format!(
                    "es.poll returned position {} before {} (not in global_position order): {}",
                    w[0],
                    w[1],
                    call.text()
                ),
            );
        }
        if let (Some(name), Some(partition)) = (polled.name, polled.partition) {
            match (positions.first(), positions.last()) {
                (Some(&first), Some(&last)) => self.heads.insert((name, partition), (first, last)),
                _ => self.heads.remove(&(name, partition)),
            };
        }
    }

    /// Looks at this database's projection workers: one at most may run.
    fn sample_workers(&mut self) {
        let result = self.conns[AUTO].client.query(
            "SELECT pid, backend_start::text FROM pg_stat_activity \
             WHERE backend_type = 'event_store worker' AND datname = current_database() \
             ORDER BY pid",
            &[],
        );
        let rows = match result {
            Ok(rows) => rows,
            Err(err) => self.fail(
                AUTO,
                &format!("reading pg_stat_activity: {}", describe(&err)),
            ),
        };
        self.stats.worker_samples += 1;
        self.stats.max_workers = self.stats.max_workers.max(rows.len());
        let workers: Vec<String> = rows
            .iter()
            .map(|r| {
                let pid: i32 = r.get(0);
                self.worker_pids.insert(pid);
                format!("pid {pid} started {}", r.get::<_, String>(1))
            })
            .collect();
        if workers.len() > 1 && self.duplicate_workers.len() < 10 {
            let mut seen = format!("after {} calls: {}", self.stats.calls, workers.join(", "));
            if self.duplicate_workers.is_empty() {
                // What led to it: the last calls (a worker ERROR, e.g. a deadlock with one of
                // TX0's transactions, comes before a second worker).
                seen.push_str("; the calls before:\n      ");
                seen.push_str(
                    &self
                        .history
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n      "),
                );
            }
            self.duplicate_workers.push(seen);
        }
    }

    // ---- random values -----------------------------------------------------------------------

    /// A subscription or projection name: mostly from [`FLOW_NAMES`] (and the seed's
    /// projections when `account_ok`), else 63 characters (ASCII, 2-byte, 4-byte), 64
    /// characters, empty, control characters, 100 kB, a missing one, or NULL.
    fn pick_flow_name(&mut self, account_ok: bool) -> Option<String> {
        let r = self.rng.random_range(0..100);
        Some(match r {
            0..72 => self.pick(FLOW_NAMES).to_owned(),
            72..77 if account_ok => self.pick(ACCOUNT_PROJECTIONS).to_owned(),
            72..77 => PROBE_NEVER.to_owned(),
            77..80 => "n".repeat(63),
            80..82 => "é".repeat(63),
            82..83 => "𝄞".repeat(63),
            83..85 => "n".repeat(64),
            85..87 => String::new(),
            87..88 => "ctl\u{1}x".to_owned(),
            88..89 => "tab\tx".to_owned(),
            89..90 => "x".repeat(100_000),
            90..94 => format!("fz_missing_{}", self.rng.random_range(0..1000)),
            _ => return None,
        })
    }

    /// A subscription to poll, ack, nack or claim: mostly one the fuzz created, never one of
    /// the seed's projections.
    fn pick_sub_name(&mut self) -> Option<String> {
        if !self.partitions.is_empty() && self.chance(0.6) {
            let i = self.rng.random_range(0..self.partitions.len());
            return self.partitions.keys().nth(i).cloned();
        }
        if !self.projections.is_empty() && self.chance(0.2) {
            let i = self.rng.random_range(0..self.projections.len());
            return Some(self.projections[i].clone());
        }
        self.pick_flow_name(false)
    }

    /// A projection to pause, resume, reset, drop or wait for: mostly one the fuzz created.
    fn pick_projection_name(&mut self) -> Option<String> {
        if !self.projections.is_empty() && self.chance(0.5) {
            let i = self.rng.random_range(0..self.projections.len());
            return Some(self.projections[i].clone());
        }
        self.pick_flow_name(true)
    }

    fn pick_consumer(&mut self) -> Option<String> {
        if FUZZ_INCOMPRESSIBLE_CONSUMER && self.chance(0.05) {
            return Some(
                (0..375)
                    .map(|_| format!("{:016x}", self.rng.random::<u64>()))
                    .collect(),
            );
        }
        Some(match self.rng.random_range(0..100) {
            0..75 => self.pick(CONSUMERS).to_owned(),
            75..80 => String::new(),
            80..83 => "c".repeat(10_000),
            83..86 => "ctl\u{1}".to_owned(),
            _ => return None,
        })
    }

    /// A partition of `name`: mostly in range, else one past, negative, huge or NULL.
    fn pick_partition(&mut self, name: &Option<String>) -> Option<i32> {
        let n = name
            .as_ref()
            .and_then(|n| self.partitions.get(n).copied())
            .unwrap_or(1)
            .max(1);
        match self.rng.random_range(0..100) {
            0..65 => Some(self.rng.random_range(0..n)),
            65..72 => Some(n),
            72..78 => Some(-1),
            78..82 => Some(i32::MIN),
            82..86 => Some(i32::MAX),
            86..89 => Some(1024),
            89..93 => Some(0),
            _ => None,
        }
    }

    fn pick_max_count(&mut self) -> Option<i64> {
        match self.rng.random_range(0..100) {
            0..55 => Some(self.rng.random_range(1..=10)),
            55..65 => Some(100),
            65..68 => Some(i32::MAX.into()),
            68..70 => Some(i64::MAX),
            70..78 => Some(0),
            78..82 => Some(-1),
            82..86 => Some(i64::MIN),
            86..88 => Some(i32::MIN.into()),
            88..93 => Some(1000),
            _ => None,
        }
    }

    /// A position for ack or nack: mostly the head or the last event of the partition's last
    /// poll, else near the end of the log, an extreme, or NULL.
    fn pick_flow_position(&mut self, name: &Option<String>, partition: Option<i32>) -> Option<i64> {
        let head = match (name, partition) {
            (Some(n), Some(p)) => self.heads.get(&(n.clone(), p)).copied(),
            _ => None,
        };
        let r = self.rng.random_range(0..100);
        match (r, head) {
            (0..45, Some((first, _))) => Some(first),
            (45..60, Some((_, last))) => Some(last),
            (0..60, None) | (60..70, _) => Some(self.last_position),
            _ => self.pick_bigint(self.last_position + 1),
        }
    }

    /// A `timeout_ms`: 0 to 20 ms, negative or NULL (never long: calls run on one thread).
    fn pick_timeout(&mut self) -> Option<i32> {
        match self.rng.random_range(0..100) {
            0..80 => Some(self.rng.random_range(0..=20)),
            80..87 => Some(-1),
            87..92 => Some(i32::MIN),
            _ => None,
        }
    }

    /// A lease interval as text (cast by the statement): short, long, zero, negative, mixed
    /// signs, past the timestamp range, or NULL.
    fn pick_lease(&mut self) -> Option<String> {
        if self.chance(0.6) {
            return Some(
                self.pick(&["1 ms", "100 ms", "500 ms", "1 s", "2 s"])
                    .to_owned(),
            );
        }
        let lease = self.pick(&[
            "30 s",
            "10 min",
            "1 day",
            "0",
            "-1 s",
            "-1 day",
            "1 mon -40 days",
            "-1 mon 40 days",
            "1 mon -30 days 1 us",
            "100 years",
            "1000000 years",
            "178000000 years",
            "-178000000 years",
            "2147483647 days",
            "",
        ]);
        if lease.is_empty() {
            None
        } else {
            Some(lease.to_owned())
        }
    }

    /// An `event_types` array: NULL, ordinary, matching nothing, empty, with an empty or NULL
    /// element, 1000 elements, a 100 kB element.
    fn pick_event_types(&mut self) -> Option<Vec<Option<String>>> {
        let some = |v: &[&str]| Some(v.iter().map(|t| Some((*t).to_owned())).collect());
        match self.rng.random_range(0..100) {
            0..45 => None,
            45..60 => some(&["T0", "T1"]),
            60..68 => some(&["Opened", "Deposited", "Withdrawn"]),
            68..74 => some(&["T2", "T2", "Bulk", "Big"]),
            74..78 => some(&["FzNeverAppended"]),
            78..82 => Some(Vec::new()),
            82..85 => some(&["T0", ""]),
            85..88 => Some(vec![Some("T1".to_owned()), None]),
            88..92 => Some((0..1000).map(|i| Some(format!("T{i}"))).collect()),
            92..95 => Some(vec![Some("T".repeat(100_000))]),
            _ => some(&["Ünïcödé ✓"]),
        }
    }

    /// A handler `f(es.events)`: one of [`VALID_HANDLERS`], or with [`FUZZ_ESCAPING_HANDLER`]
    /// sometimes the one whose error escapes `es.run_handler`.
    fn pick_valid_handler(&mut self) -> &'static str {
        if FUZZ_ESCAPING_HANDLER && self.chance(0.5) {
            "public.fz_escape(es.events)"
        } else {
            self.pick(VALID_HANDLERS)
        }
    }

    /// An error text for nack: any of [`Fuzz::pick_text`]'s, with a NUL byte (not valid in
    /// text, refused by the server before the call) replaced by a control character.
    fn pick_error_text(&mut self) -> Option<String> {
        self.pick_text().map(|t| t.replace('\0', "\u{1}"))
    }

    // ---- calls -------------------------------------------------------------------------------

    /// A random call of the subscription and projection surface.
    fn gen_flow(&mut self) -> (Call, After) {
        match self.rng.random_range(0..100) {
            0..3 => self.gen_stream_hash(),
            3..11 => self.gen_create_subscription(),
            11..14 => {
                let name = self.pick_flow_name(true);
                (
                    Call::new("drop_subscription", "SELECT es.drop_subscription($1)")
                        .arg(name)
                        .flow(&[]),
                    After::Nothing,
                )
            }
            14..28 => self.gen_poll(),
            28..36 => self.gen_ack(),
            36..44 => self.gen_nack(),
            44..50 => self.gen_claim(),
            50..53 => {
                let name = self.pick_sub_name();
                let consumer = self.pick_consumer();
                (
                    Call::new("release", "SELECT es.release($1, $2)")
                        .arg(name)
                        .arg(consumer)
                        .flow(&[]),
                    After::Nothing,
                )
            }
            53..56 => {
                let name = self.pick_flow_name(true);
                (
                    Call::new("replay_parked", "SELECT es.replay_parked($1)")
                        .arg(name)
                        .flow(&[]),
                    After::Nothing,
                )
            }
            56..61 => self.gen_wait(),
            61..67 => self.gen_create_projection(),
            67..75 => {
                let f = self.pick(&[
                    "pause_projection",
                    "resume_projection",
                    "resume_projection",
                    "reset_projection",
                    "drop_projection",
                ]);
                let name = self.pick_projection_name();
                (
                    Call::new(f, format!("SELECT es.{f}($1)"))
                        .arg(name)
                        .flow(&[]),
                    After::Nothing,
                )
            }
            75..79 => {
                let name = self.pick_projection_name();
                let position = self.pick_bigint(self.last_position);
                let timeout = self.pick_timeout();
                (
                    Call::new(
                        "wait_for_projection",
                        "SELECT es.wait_for_projection($1, $2, $3)",
                    )
                    .arg(name)
                    .arg(position)
                    .arg(timeout)
                    .flow(&[]),
                    After::Nothing,
                )
            }
            79..80 => (
                Call::new(
                    "enable_account_projections",
                    "SELECT es.enable_account_projections()",
                )
                .flow(&[]),
                After::Nothing,
            ),
            80..88 => self.gen_flow_view(),
            88..93 => self.gen_wrong_types(),
            93..95 => {
                let sql = if self.chance(0.5) {
                    "DROP FUNCTION IF EXISTS public.fz_dropme(es.events)"
                } else {
                    "CREATE OR REPLACE FUNCTION public.fz_dropme(e es.events) RETURNS void \
                     LANGUAGE plpgsql AS $$ BEGIN NULL; END $$"
                };
                (
                    Call::simple("drop or create a handler", sql).flow(&[]),
                    After::Nothing,
                )
            }
            _ => self.gen_poll(),
        }
    }

    fn gen_stream_hash(&mut self) -> (Call, After) {
        if self.chance(0.8) {
            let stream = self.pick_stream();
            return (
                Call::new("stream_hash", "SELECT es.stream_hash($1)")
                    .arg(stream)
                    .flow(&[]),
                After::Hashed(stream),
            );
        }
        let n = self.pick(&[1, 2, 7, 1024, 0, -1]);
        (
            Call::new(
                "stream_hash(of the log)",
                "SELECT es.stream_hash(stream_id) % nullif($1::int, 0), count(*) \
                 FROM es.events GROUP BY 1 ORDER BY 1 LIMIT 50",
            )
            .arg(n)
            .flow(&[]),
            After::Nothing,
        )
    }

    fn gen_create_subscription(&mut self) -> (Call, After) {
        let account_ok = self.chance(0.2);
        let name = self.pick_flow_name(account_ok);
        if self.chance(0.45) {
            // All arguments valid (the name may still be taken: 42710).
            let name = Some(self.pick(FLOW_NAMES).to_owned());
            let start_after = self.pick(&[Some(0), Some(0), None, Some(self.last_position / 2)]);
            let types = self.pick(&[
                None,
                None,
                Some(["T0", "T1"]),
                Some(["Opened", "Deposited"]),
            ]);
            let types = types.map(|t| t.iter().map(|s| Some((*s).to_owned())).collect::<Vec<_>>());
            let stream_type = self.pick(&[None, None, None, Some("account")]);
            let partitions = self.pick(&[1, 1, 2, 3, 4, 8]);
            let max_attempts = self.pick(&[1, 2, 3, 5]);
            return (
                Call::new(
                    "create_subscription",
                    "SELECT es.create_subscription($1, $2, $3, $4, $5, $6)",
                )
                .arg(name.clone())
                .arg(start_after)
                .arg(types)
                .arg(stream_type.map(str::to_owned))
                .arg(Some(partitions))
                .arg(Some(max_attempts))
                .flow(&[]),
                After::Subscribed {
                    name,
                    partitions: Some(partitions),
                },
            );
        }
        let start_after = match self.rng.random_range(0..100) {
            0..25 => None,
            25..60 => Some(0),
            60..70 => Some(self.last_position),
            70..75 => Some(self.last_position + 1),
            75..80 => Some(self.last_position + 1_000_000),
            80..85 => Some(self.rng.random_range(0..=self.last_position.max(0))),
            _ => Some(self.pick(EXTREMES)),
        };
        let partitions = match self.rng.random_range(0..100) {
            0..40 => Some(1),
            40..70 => Some(self.pick(&[2, 3, 4, 8])),
            70..72 => Some(1024),
            72..90 => Some(self.pick(&[0, -1, 1025, i32::MAX, i32::MIN])),
            _ => None,
        };
        let max_attempts = match self.rng.random_range(0..100) {
            0..70 => Some(self.pick(&[1, 2, 3, 5])),
            70..75 => Some(i32::MAX),
            75..90 => Some(self.pick(&[0, -1, i32::MIN])),
            _ => None,
        };
        let after = After::Subscribed {
            name: name.clone(),
            partitions,
        };
        let call = match self.rng.random_range(0..10) {
            0..6 => {
                let types = self.pick_event_types();
                let stream_type = self.pick(&[
                    None,
                    None,
                    None,
                    Some("account"),
                    Some(""),
                    Some("fz-never"),
                    Some("Ünï ✓"),
                ]);
                Call::new(
                    "create_subscription",
                    "SELECT es.create_subscription($1, $2, $3, $4, $5, $6)",
                )
                .arg(name)
                .arg(start_after)
                .arg(types)
                .arg(stream_type.map(str::to_owned))
                .arg(partitions)
                .arg(max_attempts)
            }
            6 => {
                return (
                    Call::new(
                        "create_subscription(defaults)",
                        "SELECT es.create_subscription($1)",
                    )
                    .arg(name.clone())
                    .flow(&[]),
                    After::Subscribed {
                        name,
                        partitions: Some(1),
                    },
                );
            }
            7 | 8 => Call::new(
                "create_subscription(named)",
                "SELECT es.create_subscription($1, partitions => $2, start_after => $3, \
                 max_attempts => $4)",
            )
            .arg(name)
            .arg(partitions)
            .arg(start_after)
            .arg(max_attempts),
            _ => {
                let array = self.pick(&[
                    "'{{T0,T1},{T2,T3}}'::text[]",
                    "'[3:4]={T0,T1}'::text[]",
                    "'[-5:-5]={T2}'::text[]",
                    "array_fill('T1'::text, ARRAY[2, 2, 2])",
                    "ARRAY[]::text[]",
                    "'{NULL}'::text[]",
                ]);
                Call::new(
                    "create_subscription(odd arrays)",
                    format!("SELECT es.create_subscription($1, 0, {array}, NULL, $2)"),
                )
                .arg(name)
                .arg(partitions)
            }
        };
        (call.flow(&[]), after)
    }

    fn gen_poll(&mut self) -> (Call, After) {
        let name = self.pick_sub_name();
        let partition = self.pick_partition(&name);
        let max = self.pick_max_count();
        let consumer = self.pick_consumer();
        let polled = |checked| {
            After::Polled(Polled {
                name: name.clone(),
                partition,
                max,
                checked,
            })
        };
        let (call, after) = match self.rng.random_range(0..10) {
            0..4 => (
                Call::new(
                    "poll(checked)",
                    "SELECT p.global_position, \
                       es.stream_hash(p.stream_id) % c.partitions = $2 \
                       AND (c.event_types IS NULL OR p.event_type = ANY (c.event_types)) \
                       AND (c.stream_type IS NULL OR EXISTS (SELECT 1 FROM es.streams s \
                            WHERE s.stream_id = p.stream_id AND s.stream_type = c.stream_type)) \
                     FROM es.poll($1, $2, $3, $4) WITH ORDINALITY AS p \
                     LEFT JOIN es.subscription_config c ON c.name = $1 \
                     ORDER BY p.ordinality",
                )
                .arg(name.clone())
                .arg(partition)
                .arg(max)
                .arg(consumer),
                polled(true),
            ),
            4 | 5 => (
                Call::new("poll(rows)", "SELECT * FROM es.poll($1, $2, $3, $4)")
                    .arg(name.clone())
                    .arg(partition)
                    .arg(max)
                    .arg(consumer),
                polled(false),
            ),
            6 => (
                Call::new("poll(defaults)", "SELECT (es.poll($1, $2)).global_position")
                    .arg(name.clone())
                    .arg(partition),
                After::Polled(Polled {
                    name: name.clone(),
                    partition,
                    max: Some(100),
                    checked: false,
                }),
            ),
            7 => (
                Call::new(
                    "poll(limit 1)",
                    "SELECT global_position FROM es.poll($1, $2, $3, $4) LIMIT 1",
                )
                .arg(name.clone())
                .arg(partition)
                .arg(max)
                .arg(consumer),
                After::Nothing,
            ),
            8 => (
                Call::new(
                    "poll(named)",
                    "SELECT count(*) FROM es.poll(name => $1, consumer => $2, max_count => $3)",
                )
                .arg(name.clone())
                .arg(consumer)
                .arg(max),
                After::Nothing,
            ),
            _ => (
                Call::new(
                    "poll(lateral over partitions)",
                    "SELECT g, p.global_position FROM unnest(ARRAY[0, 1, $2::int]) g, \
                     LATERAL es.poll($1, g, 3, $3) p",
                )
                .arg(name.clone())
                .arg(partition)
                .arg(consumer),
                After::Nothing,
            ),
        };
        (call.flow(&[]), after)
    }

    fn gen_ack(&mut self) -> (Call, After) {
        let name = self.pick_sub_name();
        let partition = self.pick_partition(&name);
        let position = self.pick_flow_position(&name, partition);
        let consumer = self.pick_consumer();
        let call = match self.rng.random_range(0..10) {
            0..6 => Call::new("ack", "SELECT es.ack($1, $2, $3, $4)")
                .arg(name)
                .arg(partition)
                .arg(position)
                .arg(consumer),
            6..9 => Call::new("ack", "SELECT es.ack($1, $2, $3)")
                .arg(name)
                .arg(partition)
                .arg(position),
            _ => Call::new(
                "ack(named)",
                "SELECT es.ack(name => $1, partition => $2, \"position\" => $3)",
            )
            .arg(name)
            .arg(partition)
            .arg(position),
        };
        (call.flow(&[]), After::Acked(position))
    }

    fn gen_nack(&mut self) -> (Call, After) {
        let name = self.pick_sub_name();
        let partition = self.pick_partition(&name);
        let position = self.pick_flow_position(&name, partition);
        let error = self.pick_error_text();
        let call = if self.chance(0.6) {
            let consumer = self.pick_consumer();
            Call::new("nack", "SELECT es.nack($1, $2, $3, $4, $5)")
                .arg(name)
                .arg(partition)
                .arg(position)
                .arg(error)
                .arg(consumer)
        } else {
            Call::new("nack", "SELECT es.nack($1, $2, $3, $4)")
                .arg(name)
                .arg(partition)
                .arg(position)
                .arg(error)
        };
        (call.flow(&[]), After::Nothing)
    }

    fn gen_claim(&mut self) -> (Call, After) {
        let name = self.pick_sub_name();
        let consumer = self.pick_consumer();
        let call = if self.chance(0.8) {
            let lease = self.pick_lease();
            Call::new(
                "claim",
                "SELECT partition, lease_until FROM es.claim($1, $2, $3::text::interval)",
            )
            .arg(name)
            .arg(consumer)
            .arg(lease)
        } else {
            Call::new("claim(default lease)", "SELECT * FROM es.claim($1, $2)")
                .arg(name)
                .arg(consumer)
        };
        (call.flow(RANGE_CODES), After::Nothing)
    }

    fn gen_wait(&mut self) -> (Call, After) {
        let name = if self.chance(0.2) {
            Some(PROBE_NEVER.to_owned())
        } else {
            self.pick_sub_name()
        };
        let partition = self.pick_partition(&name);
        let timeout = self.pick_timeout();
        (
            Call::new("wait", "SELECT es.wait($1, $2, $3)")
                .arg(name)
                .arg(partition)
                .arg(timeout)
                .flow(&[]),
            After::Nothing,
        )
    }

    fn gen_create_projection(&mut self) -> (Call, After) {
        let account_ok = self.chance(0.1);
        let name = self.pick_flow_name(account_ok);
        if self.chance(0.4) {
            // All arguments valid (the name may still be taken: 42710).
            let name = Some(self.pick(FLOW_NAMES).to_owned());
            let handler = self.pick_valid_handler();
            let types = self.pick(&[
                None,
                None,
                Some(["T0", "T1"]),
                Some(["Opened", "Deposited"]),
            ]);
            let types = types.map(|t| t.iter().map(|s| Some((*s).to_owned())).collect::<Vec<_>>());
            let batch = self.pick(&[1, 10, 100, 100, 1000]);
            return (
                Call::new(
                    "create_projection",
                    "SELECT es.create_projection($1, $2::text::regprocedure, $3, $4)",
                )
                .arg(name.clone())
                .arg(handler.to_owned())
                .arg(types)
                .arg(Some(batch))
                .flow(&["42883"]),
                After::Projected(name),
            );
        }
        let after = After::Projected(name.clone());
        let types = self.pick_event_types();
        let batch = self.pick(&[
            Some(1),
            Some(10),
            Some(100),
            Some(100),
            Some(500),
            Some(i32::MAX),
            Some(0),
            Some(-1),
            None,
        ]);
        let call = match self.rng.random_range(0..10) {
            0..6 => {
                let handler = if self.chance(0.75) {
                    self.pick_valid_handler()
                } else {
                    self.pick(INVALID_HANDLERS)
                };
                Call::new(
                    "create_projection",
                    "SELECT es.create_projection($1, $2::text::regprocedure, $3, $4)",
                )
                .arg(name)
                .arg(handler.to_owned())
                .arg(types)
                .arg(batch)
            }
            6 | 7 => {
                let handler = if self.chance(0.75) {
                    self.pick_valid_handler()
                } else {
                    self.pick(INVALID_HANDLERS)
                };
                Call::new(
                    "create_projection(defaults)",
                    "SELECT es.create_projection($1, $2::text::regprocedure)",
                )
                .arg(name)
                .arg(handler.to_owned())
            }
            8 => {
                let oid = self.pick(&[Some(0u32), Some(1), Some(99_999_999), Some(u32::MAX), None]);
                Call::new(
                    "create_projection(oid)",
                    "SELECT es.create_projection($1, $2::oid::regprocedure, $3)",
                )
                .arg(name)
                .arg(oid)
                .arg(types)
            }
            _ => Call::new(
                "create_projection(NULL handler)",
                "SELECT es.create_projection($1, NULL, $2, $3)",
            )
            .arg(name)
            .arg(types)
            .arg(batch),
        };
        // 42883: a handler that does not exist fails in the cast to regprocedure.
        (call.flow(&["42883"]), after)
    }

    fn gen_flow_view(&mut self) -> (Call, After) {
        let name = self.pick_flow_name(true);
        let call = match self.rng.random_range(0..6) {
            0 => Call::new(
                "es.subscriptions",
                "SELECT * FROM es.subscriptions ORDER BY name, partition LIMIT 40",
            ),
            1 => Call::new(
                "es.subscriptions(one)",
                "SELECT name, partition, checkpoint, events_behind, seconds_behind, owner, \
                 lease_until, head_attempts, parked FROM es.subscriptions WHERE name = $1",
            )
            .arg(name),
            2 => Call::new("es.projections", "SELECT * FROM es.projections"),
            3 => Call::new(
                "es.projections(one)",
                "SELECT name, state, checkpoint, events_behind, seconds_behind, last_error \
                 FROM es.projections WHERE name = $1",
            )
            .arg(name),
            4 => Call::new(
                "es.parked_events",
                "SELECT count(*), max(attempts), min(global_position), max(length(error)) \
                 FROM es.parked_events WHERE subscription = $1",
            )
            .arg(name),
            _ => Call::new(
                "es.subscriptions join es.projections",
                "SELECT s.name, s.partition, s.checkpoint, p.state, p.last_error \
                 FROM es.subscriptions s LEFT JOIN es.projections p USING (name) \
                 WHERE s.partition < 2 ORDER BY 1, 2 LIMIT 40",
            ),
        };
        (call.flow(&[]), After::Nothing)
    }

    /// Literal calls with wrong argument types and out-of-range literals.
    fn gen_wrong_types(&mut self) -> (Call, After) {
        let sql = self.pick(&[
            "SELECT es.poll('fz_sub_a', 'x')",
            "SELECT es.poll(1, 2)",
            "SELECT es.poll(ARRAY['fz_sub_a'])",
            "SELECT es.poll('fz_sub_a', 0, '99999999999')",
            "SELECT es.ack('fz_sub_a', 0, 1.5)",
            "SELECT es.ack('fz_sub_a', 0, '1e3')",
            "SELECT es.ack('fz_sub_a', 0, '9223372036854775808')",
            "SELECT es.nack('fz_sub_a', 0, 1, 42)",
            "SELECT es.wait('fz_sub_a', 0, 2147483648)",
            "SELECT es.wait('fz_sub_a', '2147483648', 0)",
            "SELECT es.claim('fz_sub_a', 'c1', 5)",
            "SELECT es.claim('fz_sub_a', 'c1', '1 day'::text)",
            "SELECT es.claim('fz_sub_a', 'c1', '2147483648 days')",
            "SELECT es.claim('fz_sub_a', 'c1', 'not an interval')",
            "SELECT es.stream_hash('x')",
            "SELECT es.stream_hash(5)",
            "SELECT es.stream_hash('00000000-0000-0000-0000-000000000000'::text)",
            "SELECT es.create_subscription('fz_sub_a', 99999999999999999999)",
            "SELECT es.create_subscription('fz_sub_a', partitions => 2147483648)",
            "SELECT es.create_subscription('fz_sub_a', 0, '{\"a\"')",
            "SELECT es.create_subscription('fz_sub_a', 0, 'T0')",
            "SELECT es.create_subscription(NULL::int)",
            "SELECT es.create_projection('fz_proj_a', 'fz_ok')",
            "SELECT es.create_projection('fz_proj_a', 'public.fz_ok'::regproc)",
            "SELECT es.create_projection('fz_proj_a', 5)",
            "SELECT es.create_projection('fz_proj_a', 'public.fz_ok(es.events)', batch => 2147483648)",
            "SELECT es.wait_for_projection('fz_proj_a', '9223372036854775808', 0)",
            "SELECT es.wait_for_projection('fz_proj_a', 1, 1.5)",
            "SELECT es.release('fz_sub_a', 1)",
            "SELECT es.replay_parked(1)",
        ]);
        (
            Call::new("wrong types", sql).flow(TYPE_CODES),
            After::Nothing,
        )
    }

    // ---- scenarios ---------------------------------------------------------------------------

    /// A consumer on TX0, in a transaction (or a savepoint of an open one) that commits, rolls
    /// back, or rolls back to its savepoint: claim, poll partitions, ack or nack (repeatedly,
    /// to park) what came back, release.
    fn scenario_consume(&mut self) {
        let nested = self.conns[TX0].in_tx;
        if !nested {
            self.begin(TX0);
        }
        let savepoint = nested || self.chance(0.3);
        if savepoint {
            self.meta(TX0, "SAVEPOINT fz_flow");
        }
        let name = if self.chance(0.25) {
            Some(self.pick(&FLOW_NAMES[..5]).to_owned())
        } else {
            self.pick_sub_name()
        };
        let consumer = if self.chance(0.8) {
            Some(self.pick(CONSUMERS).to_owned())
        } else {
            self.pick_consumer()
        };
        // Partitions this consumer holds for 30 s (claimed right now).
        let mut held: Vec<i32> = Vec::new();
        if self.chance(0.6) {
            let lease = self.pick(&["1 s", "5 s", "30 s", "100 ms"]);
            let call = Call::new(
                "claim(consumer)",
                "SELECT partition, lease_until FROM es.claim($1, $2, $3::text::interval)",
            )
            .arg(name.clone())
            .arg(consumer.clone())
            .arg(lease.to_owned())
            .flow(RANGE_CODES);
            if let Ok(rows) = self.exec(TX0, &call)
                && lease == "30 s"
            {
                held = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
            }
        }
        // Fencing: while the lease runs, another consumer (or none) may not poll, ack or nack.
        if let Some(&partition) = held.first()
            && self.chance(0.5)
        {
            let rival = self.pick(&[None, Some("c1"), Some("c2"), Some("rival ✓")]);
            if rival != consumer.as_deref() {
                let f = self.pick(&["poll", "ack", "nack"]);
                let sql = match f {
                    "poll" => "SELECT count(*) FROM es.poll($1, $2, 1, $3)",
                    "ack" => "SELECT es.ack($1, $2, 0, $3)",
                    _ => "SELECT es.nack($1, $2, 1, 'rival', $3)",
                };
                let call = Call::new(&format!("{f}(rival consumer)"), sql)
                    .arg(name.clone())
                    .arg(partition)
                    .arg(rival.map(str::to_owned))
                    .flow(&[]);
                let text = call.text();
                match self.run_code(TX0, (call, After::Nothing)) {
                    Err(code) if code == "ES201" => {}
                    // (position 1 may not be the head: which error comes first is open)
                    Err(code) if code == "22023" && f == "nack" => {}
                    outcome => self.fail(
                        TX0,
                        &format!(
                            "{consumer:?} holds partition {partition} of {name:?} (claimed with a \
                             lease of 30 s just now), yet {text} did not fail with ES201 \
                             but with {outcome:?}"
                        ),
                    ),
                }
            }
        }
        let n = name
            .as_ref()
            .and_then(|n| self.partitions.get(n).copied())
            .unwrap_or(1)
            .clamp(1, 4);
        for partition in 0..n {
            let max: i64 = self.pick(&[1, 3, 10, 100]);
            let call = Call::new(
                "poll(consumer)",
                "SELECT global_position FROM es.poll($1, $2, $3, $4)",
            )
            .arg(name.clone())
            .arg(partition)
            .arg(max)
            .arg(consumer.clone())
            .flow(&[]);
            let polled = After::Polled(Polled {
                name: name.clone(),
                partition: Some(partition),
                max: Some(max),
                checked: false,
            });
            match self.run_code(TX0, (call, polled)) {
                Ok(()) => {}
                Err(code) if code == "ES201" && held.contains(&partition) => self.fail(
                    TX0,
                    &format!(
                        "es.poll of partition {partition} of {name:?} by {consumer:?}, which \
                         claimed it just now, failed with ES201 (the last call above)"
                    ),
                ),
                Err(_) => continue,
            }
            let key = (name.clone().unwrap_or_default(), partition);
            let Some(&(first, last)) = self.heads.get(&key) else {
                continue;
            };
            // Nothing else moves a plain subscription's partition between this poll and the
            // ack or nack below (one thread; the worker only runs projections): acking what
            // the poll returned and nacking its head must succeed.
            let strict = !self.is_projection(TX0, &key.0);
            match self.rng.random_range(0..10) {
                0..4 => {
                    let call = Call::new("ack(consumer)", "SELECT es.ack($1, $2, $3, $4)")
                        .arg(name.clone())
                        .arg(partition)
                        .arg(Some(last))
                        .arg(consumer.clone())
                        .flow(&[]);
                    if !self.run(TX0, (call, After::Acked(Some(last)))) && strict {
                        self.fail(
                            TX0,
                            &format!(
                                "es.ack of position {last}, the last event es.poll just returned \
                                 for partition {partition} of subscription {key:?}, failed (the \
                                 last call above)"
                            ),
                        );
                    }
                }
                4..8 => {
                    for attempt in 0..self.rng.random_range(1..=6) {
                        let call =
                            Call::new("nack(consumer)", "SELECT es.nack($1, $2, $3, $4, $5)")
                                .arg(name.clone())
                                .arg(partition)
                                .arg(Some(first))
                                .arg(Some("fz consumer failed".to_owned()))
                                .arg(consumer.clone())
                                .flow(&[]);
                        let call = (call, After::Nothing);
                        if !self.run(TX0, call) {
                            if attempt == 0 && strict {
                                self.fail(
                                    TX0,
                                    &format!(
                                        "es.nack of position {first}, the head es.poll just \
                                         returned for partition {partition} of subscription \
                                         {key:?}, failed (the last call above)"
                                    ),
                                );
                            }
                            break;
                        }
                    }
                }
                8 => {
                    let call = Call::new("ack(consumer)", "SELECT es.ack($1, $2, $3, $4)")
                        .arg(name.clone())
                        .arg(partition)
                        .arg(Some(first))
                        .arg(consumer.clone())
                        .flow(&[]);
                    self.run(TX0, (call, After::Acked(Some(first))));
                }
                _ => {
                    let call = Call::new("replay_parked", "SELECT es.replay_parked($1)")
                        .arg(name.clone())
                        .flow(&[]);
                    self.run(TX0, (call, After::Nothing));
                }
            }
        }
        if self.chance(0.4) {
            let call = Call::new("release(consumer)", "SELECT es.release($1, $2)")
                .arg(name)
                .arg(consumer)
                .flow(&[]);
            self.run(TX0, (call, After::Nothing));
        }
        if savepoint && self.chance(0.5) {
            self.meta(
                TX0,
                "ROLLBACK TO SAVEPOINT fz_flow; RELEASE SAVEPOINT fz_flow",
            );
            self.stats.savepoint_rollbacks += 1;
        } else if savepoint {
            self.meta(TX0, "RELEASE SAVEPOINT fz_flow");
        }
        if !nested {
            self.end_tx(TX0);
        }
    }

    /// `es.wait(name, p, 0)` then `es.poll(name, p, 1)` of a plain subscription, with nothing
    /// in between that could change the partition: true must mean the poll returns an event,
    /// false that it returns none.
    fn scenario_wait_then_poll(&mut self) {
        if self.partitions.is_empty() {
            return;
        }
        let c = if self.chance(0.5) { TX0 } else { AUTO };
        let i = self.rng.random_range(0..self.partitions.len());
        let Some((name, &n)) = self.partitions.iter().nth(i) else {
            return;
        };
        let name = name.clone();
        let partition = self.rng.random_range(0..n.max(1));
        if self.is_projection(c, &name) {
            return;
        }
        let wait = Call::new("wait(then poll)", "SELECT es.wait($1, $2, 0)")
            .arg(Some(name.clone()))
            .arg(Some(partition))
            .flow(&[]);
        let Ok(rows) = self.exec(c, &wait) else {
            return;
        };
        let Some(ready) = rows.first().and_then(|r| r.try_get::<_, bool>(0).ok()) else {
            return;
        };
        let poll = Call::new(
            "poll(after wait)",
            "SELECT global_position FROM es.poll($1, $2, 1)",
        )
        .arg(Some(name.clone()))
        .arg(Some(partition))
        .flow(&[]);
        let text = poll.text();
        if let Ok(rows) = self.exec(c, &poll)
            && ready == rows.is_empty()
        {
            self.fail(
                c,
                &format!(
                    "es.wait({name:?}, {partition}, 0) returned {ready}, then {text} returned {} \
                     rows",
                    rows.len()
                ),
            );
        }
    }

    /// Whether `name` is a projection, as connection `c` sees it.
    fn is_projection(&mut self, c: usize, name: &str) -> bool {
        let result = self.conns[c].client.query_one(
            "SELECT EXISTS (SELECT 1 FROM es.projection_config WHERE name = $1)",
            &[&name],
        );
        match result {
            Ok(row) => row.get(0),
            Err(err) => self.fail(
                c,
                &format!("reading es.projection_config: {}", describe(&err)),
            ),
        }
    }

    /// `es.wait` and `es.wait_for_projection` cancelled by a `statement_timeout` (57014): the
    /// sleeping call must answer the cancel, and the session (or transaction) go on.
    fn scenario_wait_timeout(&mut self) {
        let c = if self.chance(0.6) { TX0 } else { AUTO };
        let wait = if self.chance(0.6) {
            format!("SELECT es.wait('{PROBE_NEVER}', 0, 3000)")
        } else {
            let name = self.pick(&["fz_proj_a", "fz_proj_b", "account_balances", "x"]);
            format!("SELECT es.wait_for_projection('{name}', 9223372036854775807, 3000)")
        };
        let sql = format!("SET statement_timeout = '30ms'; {wait}; SET statement_timeout = '60s'");
        self.run(
            c,
            (
                Call::simple("wait under statement_timeout", sql).flow(&["57014"]),
                After::Nothing,
            ),
        );
    }
}

/// What the final flow check found, for the summary.
struct FlowEnd {
    subscriptions: i64,
    projections: i64,
    parked: i64,
    accounts_compared: i64,
    catch_up: Duration,
    worker_pids: usize,
    worker_errors: Vec<String>,
}

/// The end of the server log from byte `from`, when the test can read it (run.sh exports
/// `ES_CLUSTER_DIR`).
fn server_log_since(from: Option<u64>) -> Option<String> {
    let dir = std::env::var("ES_CLUSTER_DIR").ok()?;
    let bytes = std::fs::read(Path::new(&dir).join("postgres.log")).ok()?;
    let from = usize::try_from(from?).ok()?.min(bytes.len());
    Some(String::from_utf8_lossy(&bytes[from..]).into_owned())
}

fn server_log_size() -> Option<u64> {
    let dir = std::env::var("ES_CLUSTER_DIR").ok()?;
    std::fs::metadata(Path::new(&dir).join("postgres.log"))
        .ok()
        .map(|m| m.len())
}

/// The final checks of subscriptions and projections, on a fresh connection: their tables are
/// consistent; the seed's two projections (re-created when the fuzz dropped or replaced them,
/// the others dropped so the worker has only them to do) catch up with the whole log and then
/// equal `es.account_state` / `es.account_history` for every account without a parked event;
/// at most one worker ran for the database; the worker's errors in the server log.
fn final_flow_checks(db: &TestDb, seed: u64, fuzz: &Fuzz, log_from: Option<u64>) -> FlowEnd {
    let mut client = db.connect();
    let fail = |what: String| -> ! {
        panic!("fuzz final flow check failed (ES_FUZZ_SEED={seed}): {what}")
    };
    let count = |client: &mut Client, what: &str, sql: &str| -> i64 {
        client
            .query_one(sql, &[])
            .unwrap_or_else(|e| fail(format!("{what}: `{sql}`: {}", describe(&e))))
            .get(0)
    };

    // The tables agree with each other.
    let mut orphans = Vec::new();
    for (what, sql) in [
        (
            "partitions without a subscription",
            "SELECT p.subscription || ' partition ' || p.partition \
             FROM es.subscription_partitions p WHERE NOT EXISTS \
             (SELECT 1 FROM es.subscription_config c WHERE c.name = p.subscription)",
        ),
        (
            "subscriptions whose partition rows are not exactly 0..partitions-1",
            "SELECT c.name FROM es.subscription_config c WHERE (SELECT count(*) \
             FROM es.subscription_partitions p WHERE p.subscription = c.name \
             AND p.partition >= 0 AND p.partition < c.partitions) <> c.partitions \
             OR EXISTS (SELECT 1 FROM es.subscription_partitions p WHERE p.subscription = c.name \
             AND (p.partition < 0 OR p.partition >= c.partitions))",
        ),
        (
            "projections without a subscription",
            "SELECT j.name FROM es.projection_config j WHERE NOT EXISTS \
             (SELECT 1 FROM es.subscription_config c WHERE c.name = j.name)",
        ),
        (
            "parked events that are not stored events",
            "SELECT k.subscription || ' ' || k.global_position FROM es.parked_events k \
             WHERE NOT EXISTS (SELECT 1 FROM es.events e \
             WHERE e.global_position = k.global_position AND e.stream_id = k.stream_id)",
        ),
        (
            "parked events in another partition than their stream's",
            "SELECT k.subscription || ' ' || k.global_position FROM es.parked_events k \
             JOIN es.subscription_config c ON c.name = k.subscription \
             WHERE es.stream_hash(k.stream_id) % c.partitions <> k.partition",
        ),
    ] {
        let rows: Vec<String> = client
            .query(&format!("{sql} LIMIT 10"), &[])
            .unwrap_or_else(|e| fail(format!("{what}: `{sql}`: {}", describe(&e))))
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !rows.is_empty() {
            fail(format!("{what}: {}", rows.join(", ")));
        }
    }
    // Left behind by es.drop_subscription / es.drop_projection when a concurrent transaction
    // (a consumer's es.nack or es.claim, the projection worker) committed rows after the
    // drop's snapshot; a subscription created later with the same name inherits them.
    for (what, sql) in [
        (
            "parked events of no subscription",
            "SELECT k.subscription || ' position ' || k.global_position || ' stream ' \
             || k.stream_id || ' attempts ' || k.attempts || ' error ' || coalesce(k.error, '-') \
             || ' parked at ' || k.parked_at FROM es.parked_events k WHERE NOT EXISTS \
             (SELECT 1 FROM es.subscription_config c WHERE c.name = k.subscription)",
        ),
        (
            "consumers of no subscription",
            "SELECT u.subscription || ' consumer ' || u.consumer FROM es.subscription_consumers u \
             WHERE NOT EXISTS (SELECT 1 FROM es.subscription_config c \
             WHERE c.name = u.subscription)",
        ),
    ] {
        let rows: Vec<String> = client
            .query(&format!("{sql} LIMIT 10"), &[])
            .unwrap_or_else(|e| fail(format!("{what}: `{sql}`: {}", describe(&e))))
            .iter()
            .map(|r| short(&r.get::<_, String>(0), 300))
            .collect();
        if !rows.is_empty() {
            orphans.push(format!("{what}: {}", rows.join("; ")));
        }
    }
    if !orphans.is_empty() {
        let text = format!(
            "rows of dropped subscriptions left behind (a drop racing a transaction that \
             parked or claimed):\n  {}",
            orphans.join("\n  ")
        );
        if TOLERATE_DROP_RACE_ORPHANS {
            eprintln!("fuzz: {text}");
        } else {
            fail(text);
        }
    }
    let subscriptions = count(
        &mut client,
        "es.subscriptions",
        "SELECT count(*) FROM es.subscriptions",
    );
    let parked = count(
        &mut client,
        "parked events",
        "SELECT count(*) FROM es.parked_events",
    );

    // Only the seed's projections, with their own handlers (and any escaping handler, which
    // must not stop them).
    let exec = |client: &mut Client, sql: &str| {
        client
            .batch_execute(sql)
            .unwrap_or_else(|e| fail(format!("`{sql}`: {}", describe(&e))))
    };
    exec(
        &mut client,
        "SELECT es.drop_projection(name) FROM es.projection_config \
         WHERE handler NOT IN ('es.project_account_balances', 'es.project_account_transactions', \
                               'public.fz_escape') \
            OR (name = 'account_balances') <> (handler = 'es.project_account_balances') \
            OR (name = 'account_transactions') <> (handler = 'es.project_account_transactions'); \
         SELECT es.drop_subscription(name) FROM es.subscription_config c \
         WHERE name IN ('account_balances', 'account_transactions') \
           AND NOT EXISTS (SELECT 1 FROM es.projection_config j WHERE j.name = c.name); \
         SELECT es.enable_account_projections(); \
         SELECT es.resume_projection(name) FROM es.projection_config",
    );
    let projections = count(
        &mut client,
        "es.projections",
        "SELECT count(*) FROM es.projections",
    );
    let end = count(
        &mut client,
        "the end of the log",
        "SELECT coalesce(max(global_position), 0) FROM es.events",
    );
    let started = Instant::now();
    let budget = Duration::from_secs(20);
    for name in ACCOUNT_PROJECTIONS {
        let left = budget.saturating_sub(started.elapsed()).as_millis() as i32;
        let caught_up: bool = client
            .query_one(
                "SELECT es.wait_for_projection($1, $2, $3)",
                &[name, &end, &left.max(1)],
            )
            .unwrap_or_else(|e| fail(format!("es.wait_for_projection({name}): {}", describe(&e))))
            .get(0);
        if !caught_up {
            let rows = client
                .query(
                    "SELECT name || ' ' || state || ' checkpoint ' || checkpoint || ' behind ' \
                     || events_behind || ' last error ' || coalesce(last_error, '-') \
                     FROM es.projections ORDER BY name",
                    &[],
                )
                .map(|rows| {
                    rows.iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let (duplicates, lines, _) = worker_report(&mut client, fuzz, log_from);
            fail(format!(
                "projection {name} did not reach position {end} within {budget:?} (the \
                 database's worker is stuck or gone): {}\n  more than one worker at once: \
                 {duplicates:?}\n  the workers' log lines:\n  {}",
                rows.join("; "),
                lines.join("\n  ")
            ));
        }
    }
    let catch_up = started.elapsed();

    // The seed's projections equal the store, for accounts without a parked event.
    let balances_sql = "SELECT s.stream_id::text, to_jsonb(b)::text, a::text \
         FROM es.streams s CROSS JOIN LATERAL es.account_state(s.stream_id) AS a \
         LEFT JOIN es.account_balances b ON b.account_id = s.stream_id \
         WHERE s.stream_type = 'account' AND s.deleted IS NULL AND s.truncated_before IS NULL \
           AND NOT EXISTS (SELECT 1 FROM es.parked_events k \
                WHERE k.subscription = 'account_balances' AND k.stream_id = s.stream_id) \
           AND (b.account_id IS NULL OR (b.holder_name, b.balance_cents, b.status, b.version) \
                IS DISTINCT FROM (a->>'holder_name', (a->>'balance_cents')::bigint, \
                                  a->>'status', (a->>'version')::bigint)) \
         LIMIT 5";
    let transactions_sql = "SELECT s.stream_id::text, d::text FROM es.streams s \
         CROSS JOIN LATERAL ( \
           (SELECT 'history' AS side, h.version, h.event_type, h.amount_cents, h.balance_cents, \
                   h.description, h.occurred_at FROM es.account_history(s.stream_id) h \
            EXCEPT SELECT 'history', t.version, t.event_type, t.amount_cents, t.balance_cents, \
                   t.description, t.occurred_at FROM es.account_transactions t \
            WHERE t.account_id = s.stream_id) \
           UNION ALL \
           (SELECT 'projection', t.version, t.event_type, t.amount_cents, t.balance_cents, \
                   t.description, t.occurred_at FROM es.account_transactions t \
            WHERE t.account_id = s.stream_id \
            EXCEPT SELECT 'projection', h.version, h.event_type, h.amount_cents, \
                   h.balance_cents, h.description, h.occurred_at \
            FROM es.account_history(s.stream_id) h)) d \
         WHERE s.stream_type = 'account' AND s.deleted IS NULL AND s.truncated_before IS NULL \
           AND NOT EXISTS (SELECT 1 FROM es.parked_events k \
                WHERE k.subscription = 'account_transactions' AND k.stream_id = s.stream_id) \
         LIMIT 5";
    for (what, sql) in [
        (
            "es.account_balances differs from es.account_state",
            balances_sql,
        ),
        (
            "es.account_transactions differs from es.account_history",
            transactions_sql,
        ),
    ] {
        let rows = client
            .query(sql, &[])
            .unwrap_or_else(|e| fail(format!("{what}: {}", describe(&e))));
        if !rows.is_empty() {
            let shown: Vec<String> = rows
                .iter()
                .map(|r| {
                    (1..r.len())
                        .map(|i| r.get::<_, Option<String>>(i).unwrap_or_default())
                        .fold(r.get::<_, String>(0), |a, b| format!("{a} {b}"))
                })
                .collect();
            fail(format!("{what} once caught up:\n  {}", shown.join("\n  ")));
        }
    }
    let accounts_compared = count(
        &mut client,
        "accounts",
        "SELECT count(*) FROM es.streams WHERE stream_type = 'account'",
    );

    // One worker per database; what the workers logged.
    let (duplicates, worker_errors, pids) = worker_report(&mut client, fuzz, log_from);
    if !duplicates.is_empty() {
        let text = format!(
            "more than one event_store worker ran at once for the database (docs/reference.md §10: one per \
             database):\n  {}\n  their log lines:\n  {}",
            duplicates.join("\n  "),
            worker_errors.join("\n  ")
        );
        if TOLERATE_DUPLICATE_WORKERS {
            eprintln!("fuzz: {text}");
        } else {
            fail(text);
        }
    }
    FlowEnd {
        subscriptions,
        projections,
        parked,
        accounts_compared,
        catch_up,
        worker_pids: pids,
        worker_errors,
    }
}

/// The database's projection workers: the times more than one ran at once (sampled during
/// the run, and now), the server log lines of every worker pid seen (errors, and the worker's
/// own LOG lines about projections), and how many pids were seen.
fn worker_report(
    client: &mut Client,
    fuzz: &Fuzz,
    log_from: Option<u64>,
) -> (Vec<String>, Vec<String>, usize) {
    let now: Vec<i32> = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'event_store worker' \
             AND datname = current_database()",
            &[],
        )
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    let mut pids = fuzz.worker_pids.clone();
    pids.extend(&now);
    let mut duplicates = fuzz.duplicate_workers.clone();
    if now.len() > 1 {
        duplicates.push(format!("at the end: pids {now:?}"));
    }
    let mut lines = Vec::new();
    if let Some(log) = server_log_since(log_from) {
        for line in log.lines() {
            let ours = pids.iter().any(|pid| line.contains(&format!("[{pid}] ")));
            let noteworthy = ["ERROR:", "FATAL:", "PANIC:", "WARNING:", "DETAIL:"]
                .iter()
                .any(|k| line.contains(k))
                || line.contains("LOG:  event_store: projection");
            if ours && noteworthy && lines.len() < 40 {
                lines.push(short(line, 400));
            }
        }
    }
    (duplicates, lines, pids.len())
}

/// Counts read after the final checks.
struct Final {
    events: i64,
    streams: i64,
    accounts: usize,
    snapshots: i64,
    read_all_checked: bool,
}

/// The final checks, on a fresh connection (see the header); panics with the seed on failure.
fn final_checks(db: &TestDb, seed: u64) -> Final {
    let mut client = db.connect();
    let fail =
        |what: String| -> ! { panic!("fuzz final check failed (ES_FUZZ_SEED={seed}): {what}") };

    // Gapless 1..N per stream, equal to the stream row's version, no orphan on either side.
    let bad = client
        .query(
            "SELECT coalesce(e.stream_id, s.stream_id)::text, e.n, e.lo, e.hi, e.d, s.version \
             FROM (SELECT stream_id, count(*) AS n, min(version) AS lo, max(version) AS hi, \
                          count(DISTINCT version) AS d FROM es.events GROUP BY stream_id) e \
             FULL JOIN es.streams s ON s.stream_id = e.stream_id \
             WHERE e.stream_id IS NULL OR s.stream_id IS NULL \
                OR e.lo <> CASE WHEN s.deleted = 'hard' THEN s.version \
                                ELSE coalesce(s.truncated_before, 1) END \
                OR e.hi - e.lo + 1 <> e.n OR e.d <> e.n OR s.version IS DISTINCT FROM e.hi \
             LIMIT 10",
            &[],
        )
        .unwrap_or_else(|e| fail(format!("version check query: {}", describe(&e))));
    if !bad.is_empty() {
        let rows: Vec<String> = bad
            .iter()
            .map(|r| {
                format!(
                    "stream {} events {:?} min {:?} max {:?} distinct {:?} stream row version {:?}",
                    r.get::<_, String>(0),
                    r.get::<_, Option<i64>>(1),
                    r.get::<_, Option<i64>>(2),
                    r.get::<_, Option<i64>>(3),
                    r.get::<_, Option<i64>>(4),
                    r.get::<_, Option<i64>>(5)
                )
            })
            .collect();
        fail(format!(
            "streams whose events are not exactly versions 1..version:\n  {}",
            rows.join("\n  ")
        ));
    }

    // Every account's state equals the replay of its events.
    let accounts: Vec<Uuid> = client
        .query(
            "SELECT stream_id FROM es.streams WHERE stream_type = 'account' \
             AND deleted IS NULL AND truncated_before IS NULL ORDER BY 1",
            &[],
        )
        .unwrap_or_else(|e| fail(format!("listing accounts: {}", describe(&e))))
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut mismatches = Vec::new();
    for id in &accounts {
        let row = client
            .query_one(
                "SELECT a IS NOT DISTINCT FROM r, a::text, r::text \
                 FROM (SELECT es.account_state($1) AS a, (SELECT es.account_replay(data ORDER BY \
                       version) FROM es.events WHERE stream_id = $1) AS r) x",
                &[id],
            )
            .unwrap_or_else(|e| {
                fail(format!(
                    "account_state / account_replay of account {id}: {}",
                    describe(&e)
                ))
            });
        if !row.get::<_, bool>(0) {
            mismatches.push(format!(
                "account {id}: account_state {:?} but replay {:?}",
                row.get::<_, Option<String>>(1),
                row.get::<_, Option<String>>(2)
            ));
        }
    }
    if !mismatches.is_empty() {
        fail(format!(
            "{} of {} accounts: es.account_state differs from the replay of the events:\n  {}",
            mismatches.len(),
            accounts.len(),
            mismatches.join("\n  ")
        ));
    }

    // read_all paged by 100 returns every event once, in position order (needs the preload).
    let preloaded: bool = client
        .query_one(
            "SELECT current_setting('shared_preload_libraries') LIKE '%event_store%'",
            &[],
        )
        .unwrap_or_else(|e| fail(format!("reading the preload setting: {}", describe(&e))))
        .get(0);
    let all: Vec<i64> = client
        .query("SELECT global_position FROM es.events ORDER BY 1", &[])
        .unwrap_or_else(|e| fail(format!("reading positions: {}", describe(&e))))
        .iter()
        .map(|r| r.get(0))
        .collect();
    if preloaded {
        let mut paged: Vec<i64> = Vec::with_capacity(all.len());
        let mut after = 0i64;
        loop {
            let page: Vec<i64> = client
                .query(
                    "SELECT global_position FROM es.read_all($1, 100)",
                    &[&after],
                )
                .unwrap_or_else(|e| fail(format!("read_all({after}, 100): {}", describe(&e))))
                .iter()
                .map(|r| r.get(0))
                .collect();
            let Some(&last) = page.last() else { break };
            if page.len() > 100 || last <= after {
                fail(format!(
                    "read_all({after}, 100) returned {} rows ending at {last}",
                    page.len()
                ));
            }
            paged.extend(page);
            after = last;
            if paged.len() > all.len() {
                break;
            }
        }
        if paged != all {
            let first_diff = paged.iter().zip(&all).position(|(a, b)| a != b);
            fail(format!(
                "read_all paged by 100 returned {} positions, es.events holds {}; first \
                 difference at index {first_diff:?}",
                paged.len(),
                all.len()
            ));
        }
    } else {
        eprintln!("fuzz: server started without the preload: final read_all check skipped");
    }

    // amcheck of es.events and es.streams (the crate's check), then of es.snapshots.
    verify_store(&mut client);
    let checked: i64 = client
        .query_one(
            "SELECT count(bt_index_check(x.indexrelid, true)::text) FROM pg_index x \
             WHERE x.indrelid = 'es.snapshots'::regclass",
            &[],
        )
        .unwrap_or_else(|e| {
            fail(format!(
                "amcheck of es.snapshots' indexes: {}",
                describe(&e)
            ))
        })
        .get(0);
    assert!(
        checked >= 1,
        "expected es.snapshots' primary key to be checked"
    );
    let problems: i64 = client
        .query_one("SELECT count(*) FROM verify_heapam('es.snapshots')", &[])
        .unwrap_or_else(|e| fail(format!("verify_heapam(es.snapshots): {}", describe(&e))))
        .get(0);
    if problems != 0 {
        fail(format!(
            "verify_heapam(es.snapshots) reported {problems} problems"
        ));
    }

    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM es.streams), (SELECT count(*) FROM es.snapshots)",
            &[],
        )
        .unwrap_or_else(|e| fail(format!("final counts: {}", describe(&e))));
    Final {
        events: all.len() as i64,
        streams: counts.get(0),
        accounts: accounts.len(),
        snapshots: counts.get(1),
        read_all_checked: preloaded,
    }
}

#[test]
fn fuzz_whole_sql_surface() {
    let seed = env_u64("ES_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let secs = env_u64("ES_FUZZ_SECS").unwrap_or(DEFAULT_SECS);
    eprintln!("fuzz: seed {seed}, {secs} s (replay: ES_FUZZ_SEED={seed} ES_FUZZ_SECS={secs})");

    let db = TestDb::new("fuzz");
    let log_from = server_log_size();
    db.connect()
        .batch_execute(FLOW_SETUP)
        .unwrap_or_else(|e| panic!("creating the fuzz's handlers: {}", describe(&e)));
    let mut fuzz = Fuzz::new(&db, seed, secs);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    while Instant::now() < deadline {
        fuzz.step();
    }
    fuzz.finish();
    let ran = started.elapsed();
    let stats = std::mem::take(&mut fuzz.stats);

    let end = final_checks(&db, seed);
    let flow = final_flow_checks(&db, seed, &fuzz, log_from);
    drop(fuzz);

    let mut lines = vec![
        format!("fuzz seed: {seed}"),
        format!("fuzz seconds: {:.1} (budget {secs})", ran.as_secs_f64()),
        format!("fuzz calls: {}", stats.calls),
    ];
    for (class, n) in &stats.classes {
        lines.push(format!("fuzz outcome {class}: {n}"));
    }
    lines.extend([
        format!(
            "fuzz transactions: {} begun, {} committed, {} rolled back, {} failed at commit",
            stats.begun, stats.committed, stats.rolled_back, stats.commit_failed
        ),
        format!(
            "fuzz savepoints: {} taken, {} rolled back to; {} calls rolled back to their own savepoint",
            stats.savepoints, stats.savepoint_rollbacks, stats.call_rollbacks
        ),
        format!(
            "fuzz rolled-back {BIG_BATCH}-event batches: {}",
            stats.big_batch_rollbacks
        ),
        format!(
            "fuzz failed calls with the store digest compared: {} (and the flow digest: {})",
            stats.digests_compared, stats.flow_digests_compared
        ),
        format!(
            "fuzz flow at the end: {} subscription partitions, {} projections kept, {} parked \
             events; account projections caught up in {:.1} s and equal the store for {} \
             accounts",
            flow.subscriptions,
            flow.projections,
            flow.parked,
            flow.catch_up.as_secs_f64(),
            flow.accounts_compared
        ),
        format!(
            "fuzz projection workers: {} samples, at most {} at once, {} pids seen, {} log \
             lines of theirs",
            stats.worker_samples,
            stats.max_workers,
            flow.worker_pids,
            flow.worker_errors.len()
        ),
        format!(
            "fuzz stored at the end: {} events, {} streams ({} accounts), {} snapshots; read_all paging {}",
            end.events,
            end.streams,
            end.accounts,
            end.snapshots,
            if end.read_all_checked {
                "checked"
            } else {
                "skipped (no preload)"
            }
        ),
    ]);
    let deadlocks: u64 = stats
        .codes
        .iter()
        .filter(|(key, _)| key.starts_with("40P01 "))
        .map(|(_, seen)| seen.count)
        .sum();
    lines.push(format!(
        "fuzz 40P01 deadlocks of calls with the projection worker: {deadlocks}{}",
        if TOLERATE_WORKER_DEADLOCKS {
            " (tolerated: TOLERATE_WORKER_DEADLOCKS)"
        } else {
            ""
        }
    ));
    if let Some((took, call)) = &stats.slowest {
        lines.push(format!(
            "fuzz slowest call: {:.2} s {call}",
            took.as_secs_f64()
        ));
    }
    for line in &lines {
        eprintln!("{line}");
    }
    if !flow.worker_errors.is_empty() {
        eprintln!("fuzz: the projection worker's log lines during the run:");
        for line in &flow.worker_errors {
            eprintln!("  {line}");
        }
    }
    eprintln!("fuzz calls by kind (succeeded / failed):");
    for (label, (ok, failed)) in &stats.labels {
        eprintln!("  {label}: {ok} / {failed}");
    }
    eprintln!("fuzz SQLSTATEs by call (count, first message):");
    for (key, seen) in &stats.codes {
        eprintln!("  {key}: {} — {}", seen.count, seen.first);
    }

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-summary.txt");
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut text = lines.join("\n");
    text.push('\n');
    if let Err(err) = std::fs::write(&path, text) {
        eprintln!("fuzz: could not write {}: {err}", path.display());
    }
}

// ---- aggregates for any domain (README "Aggregates for any domain") ------------------------------
//
// A second test, `fuzz_aggregates`: the declared aggregate types' SQL surface
// (`es.define_aggregate`, `es.alter_aggregate`, `es.drop_aggregate`, `es.append_events`'
// `stream_type`, `es.state`, `es.history`, `es.replay`, `es.rebuild_batch` /
// `CALL es.rebuild_states`, `es.define_upcaster`) with hostile arguments and with user functions
// that misbehave in every way a `check` or an `evolve` can: raise any SQLSTATE (with DETAIL and
// HINT), return NULL or a non-object, loop until a `statement_timeout`, recurse past the stack
// depth, append to the stream they judge (or to another), update `es.streams` themselves, change
// the role or the session authorization, change settings, commit, create temporary tables,
// listen, open cursors, return huge and deep states; and functions replaced (also in another
// language) or dropped while another session appends in a loop. First fixed scenarios with the
// SQLSTATE each call must end with, then a seeded random mix (in and out of transactions, each
// call in its own savepoint there), then the concurrent phase.
//
// Every call: no internal error (class XX or 58, except the very XX000 a check function raised
// on purpose, which passes through unchanged by contract) and no lost connection; the session
// is usable afterwards (`SELECT 1`, no leaked setting, role or authorization); a failing call
// leaves the store and the registry as they were (digest); versions are gapless and equal to
// `es.streams.version`. At the end: the checks of `fuzz_whole_sql_surface` (gapless, accounts,
// read_all, amcheck), every stream of the never-touched type `fz_ok` keeps the state that
// `es.replay` computes from its events, and the server log shows no crash.
//
// Replay with `ES_FUZZ_SEED`; `ES_FUZZ_AGG_SECS` (default 12) is the random phase's budget and
// `ES_FUZZ_AGG_RACE_SECS` (default 6) the concurrent phase's.

/// The random phase's seconds when `ES_FUZZ_AGG_SECS` is not set.
const AGG_SECS: u64 = 12;
/// The concurrent phase's seconds when `ES_FUZZ_AGG_RACE_SECS` is not set.
const AGG_RACE_SECS: u64 = 6;
/// The message of the XX000 a check raises on purpose (it passes through unchanged).
const USER_XX: &str = "fz check raises an internal error on purpose";

/// The user functions of the aggregate fuzz. `fa.act(state, event, key)` does what
/// `event->>key` names (`ck` for the check, `ev` for the evolve); `fa.ev` also returns what no
/// evolve may (NULL, an array, a scalar, JSON null). `fa.ok_*` are the control type's functions,
/// never changed. `fa.swap_*` are replaced and dropped while another session appends.
const AGG_SETUP: &str = r#"
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fa_other') THEN CREATE ROLE fa_other; END IF;
END $$;
CREATE SCHEMA fa;
CREATE FUNCTION fa.recurse(n int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN fa.recurse(n + 1); END $$;
CREATE FUNCTION fa.act(state jsonb, event jsonb, what text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    CASE event ->> what
    WHEN 'raise' THEN
        RAISE EXCEPTION USING ERRCODE = event ->> 'code', MESSAGE = coalesce(event ->> 'message', 'fz raised'),
            DETAIL = coalesce(event ->> 'detail', 'fz detail'), HINT = coalesce(event ->> 'hint', 'fz hint');
    WHEN 'divzero' THEN PERFORM 1 / 0;
    WHEN 'loop' THEN LOOP PERFORM 1; END LOOP;
    WHEN 'sleep' THEN PERFORM pg_sleep(0.02);
    WHEN 'recurse' THEN PERFORM fa.recurse(1);
    WHEN 'append' THEN
        PERFORM es.append_events((event ->> 'stream')::uuid, NULL, ARRAY['{"type":"Inner"}'::jsonb]);
    WHEN 'update_streams' THEN
        UPDATE es.streams SET version = version WHERE stream_id = (event ->> 'stream')::uuid;
    WHEN 'set_role' THEN SET ROLE fa_other;
    WHEN 'reset_role' THEN RESET ROLE;
    WHEN 'session_auth' THEN SET SESSION AUTHORIZATION fa_other;
    WHEN 'set_config' THEN
        PERFORM set_config('work_mem', '7777kB', false);
        PERFORM set_config('search_path', 'fa', false);
        PERFORM set_config('es.tracing', 'off', false);
    WHEN 'set_local' THEN SET LOCAL work_mem = '6666kB'; SET statement_timeout = '1ms';
    WHEN 'commit' THEN COMMIT;
    WHEN 'rollback' THEN ROLLBACK;
    WHEN 'temp' THEN CREATE TEMP TABLE fz_temp (x int);
    WHEN 'listen' THEN LISTEN fz_channel;
    WHEN 'txid' THEN PERFORM txid_current();
    WHEN 'subxact' THEN
        BEGIN PERFORM 1 / 0; EXCEPTION WHEN division_by_zero THEN NULL; END;
    WHEN 'cursor' THEN
        DECLARE c refcursor := 'fz_cursor_' || txid_current(); BEGIN OPEN c FOR SELECT * FROM es.events; END;
    WHEN 'notice' THEN RAISE NOTICE 'fz notice'; RAISE WARNING 'fz warning';
    WHEN 'lock' THEN LOCK TABLE es.streams IN SHARE MODE;
    WHEN 'huge' THEN
        RETURN state || (SELECT jsonb_object_agg('k' || g, md5(g::text)) FROM generate_series(1, 30000) g);
    WHEN 'deep' THEN RETURN (repeat('{"a":', 2000) || '1' || repeat('}', 2000))::jsonb;
    ELSE NULL;
    END CASE;
    RETURN NULL;
END $$;
CREATE FUNCTION fa.ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CASE event ->> 'ev'
    WHEN 'null' THEN RETURN NULL;
    WHEN 'array' THEN RETURN '[1, 2]';
    WHEN 'scalar' THEN RETURN '7';
    WHEN 'string' THEN RETURN '"s"';
    WHEN 'jnull' THEN RETURN 'null';
    ELSE r := fa.act(state, event, 'ev');
    END CASE;
    RETURN coalesce(r, state || jsonb_build_object('n', coalesce((state ->> 'n')::bigint, 0) + 1));
END $$;
CREATE FUNCTION fa.ck(state jsonb, event jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF event ->> 'ck' = 'raise_xx' THEN
        RAISE EXCEPTION 'fz check raises an internal error on purpose' USING ERRCODE = 'XX000';
    END IF;
    PERFORM fa.act(state, event, 'ck');
END $$;
CREATE FUNCTION fa.ev_sql(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql
AS $$ SELECT state || jsonb_build_object('m', coalesce((state ->> 'm')::bigint, 0) + 1, 'last', event -> 'type') $$;
CREATE FUNCTION fa.ev_strict(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql STRICT
AS $$ SELECT CASE WHEN event ? 'ev' THEN NULL ELSE state END $$;
CREATE FUNCTION fa.ev_definer(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET work_mem = '5MB' AS $$ BEGIN RETURN fa.ev(state, event); END $$;
CREATE FUNCTION fa.ok_ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN state || jsonb_build_object('n', (state ->> 'n')::bigint + 1, 'types',
        (state -> 'types') || jsonb_build_array(event -> 'type'));
END $$;
CREATE FUNCTION fa.ok_ck(state jsonb, event jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF event ->> 'type' = 'Refused' THEN
        RAISE EXCEPTION 'fz ok refuses' USING ERRCODE = 'FZ001', DETAIL = 'n: ' || (state ->> 'n');
    END IF;
END $$;
CREATE FUNCTION fa.swap_ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql
AS $$ SELECT state || jsonb_build_object('n', coalesce((state ->> 'n')::bigint, 0) + 1) $$;
CREATE FUNCTION fa.swap_ck(state jsonb, event jsonb) RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
CREATE FUNCTION fa.one(event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT event $$;
CREATE FUNCTION fa.setof(state jsonb, event jsonb) RETURNS SETOF jsonb LANGUAGE sql AS $$ SELECT state $$;
CREATE PROCEDURE fa.proc(state jsonb, event jsonb) LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION fa.sf3(acc jsonb, state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT acc $$;
CREATE AGGREGATE fa.agg(jsonb, jsonb) (SFUNC = fa.sf3, STYPE = jsonb);
CREATE FUNCTION fa.txt(state jsonb, event jsonb) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
CREATE FUNCTION fa.json(state json, event json) RETURNS json LANGUAGE sql AS $$ SELECT state $$;
CREATE FUNCTION fa.dflt(state jsonb, event jsonb, x int DEFAULT 1) RETURNS jsonb LANGUAGE sql AS $$ SELECT state $$;
CREATE FUNCTION fa.poly(state anyelement, event anyelement) RETURNS anyelement LANGUAGE sql AS $$ SELECT state $$;
CREATE FUNCTION fa.var(VARIADIC x jsonb[]) RETURNS jsonb LANGUAGE sql AS $$ SELECT x[1] $$;
CREATE FUNCTION fa.trig() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE FUNCTION fa.win(jsonb, jsonb) RETURNS jsonb LANGUAGE internal WINDOW AS 'window_row_number';
SELECT es.define_aggregate('fz_ok', 'fa.ok_ev(jsonb,jsonb)', '{"n": 0, "types": []}', 'fa.ok_ck(jsonb,jsonb)', 3);
SELECT es.define_aggregate('fz_hostile', 'fa.ev(jsonb,jsonb)', '{}', 'fa.ck(jsonb,jsonb)', 2);
SELECT es.define_aggregate('fz_sql', 'fa.ev_sql(jsonb,jsonb)', '{"m": 0}', NULL, 0);
SELECT es.define_aggregate('fz_swap', 'fa.swap_ev(jsonb,jsonb)', '{}', 'fa.swap_ck(jsonb,jsonb)', 4);
"#;

/// What a call of the aggregate fuzz may end with.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Success.
    Ok,
    /// An error with one of these SQLSTATEs.
    Code(&'static [&'static str]),
    /// Success, or any error that is not internal.
    Any,
}

/// A failed call: SQLSTATE, message, DETAIL, HINT.
#[derive(Debug, Default)]
struct Failed {
    code: String,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

impl Failed {
    fn text(&self) -> String {
        format!(
            "{}: {} DETAIL: {:?} HINT: {:?}",
            self.code, self.message, self.detail, self.hint
        )
    }
}

/// `s` as an SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A uuid as an SQL literal.
fn ulit(u: Uuid) -> String {
    format!("'{u}'::uuid")
}

/// The store's digest and the registry's: a failing call changes neither.
fn agg_digest_sql() -> String {
    format!(
        "SELECT ({DIGEST}) || ' ' || concat_ws(' ', \
           (SELECT count(*) || ':' || coalesce(sum(hashtext(t::text)), 0) FROM es.aggregate_types t), \
           (SELECT count(*) || ':' || coalesce(sum(hashtext(u::text)), 0) FROM es.upcasters u), \
           (SELECT count(*) || ':' || coalesce(sum(hashtext(r::text)), 0) FROM es.stream_type_rules r))"
    )
}

/// Streams whose versions are not gapless 1..N or disagree with `es.streams.version`.
const GAPLESS: &str = "SELECT count(*) FROM (SELECT stream_id, count(*) AS n, min(version) AS lo, \
     max(version) AS hi FROM es.events GROUP BY stream_id) e FULL JOIN es.streams s USING (stream_id) \
     WHERE e.lo IS DISTINCT FROM 1 OR e.hi IS DISTINCT FROM e.n OR s.version IS DISTINCT FROM e.hi";

/// What a session must still be after any call: who it is and its settings.
const SESSION: &str = "SELECT concat_ws(' | ', current_user, session_user, current_setting('role'), \
     current_setting('work_mem'), current_setting('search_path'), current_setting('es.tracing'), \
     current_setting('statement_timeout'), current_setting('lock_timeout'))";

/// The behaviours of `fa.act` a random call picks from (`loop` only under a timeout).
const ACTS: &[&str] = &[
    "",
    "",
    "",
    "",
    "raise",
    "raise",
    "divzero",
    "sleep",
    "recurse",
    "append",
    "append_other",
    "update_streams",
    "set_role",
    "reset_role",
    "session_auth",
    "set_config",
    "set_local",
    "commit",
    "rollback",
    "temp",
    "listen",
    "txid",
    "subxact",
    "cursor",
    "notice",
    "lock",
    "huge",
    "deep",
    "loop",
];

/// What only an evolve can do wrong.
const EV_RESULTS: &[&str] = &["null", "array", "scalar", "string", "jnull"];

/// SQLSTATEs the functions raise: user-defined, every class the store treats apart (40, 53, 54,
/// 57 pass through an evolve), warnings and "no data" raised as errors, built-in errors.
const RAISED_CODES: &[&str] = &[
    "P0001", "CT001", "FZ999", "22012", "23505", "40001", "40P01", "53200", "54001", "57014",
    "0A000", "42501", "01000", "02000", "2BP01", "ES301", "ES001",
];

struct AggFuzz {
    seed: u64,
    rng: StdRng,
    client: Client,
    in_tx: bool,
    digest_sql: String,
    session: String,
    history: VecDeque<String>,
    labels: BTreeMap<String, (u64, u64)>,
    codes: BTreeMap<String, Seen>,
    calls: u64,
    /// Streams of the hostile types, and of the control type.
    hostile: Vec<Uuid>,
    ok_streams: Vec<Uuid>,
    next_id: u128,
    /// Another session appends meanwhile: a failing call's digest is not compared.
    concurrent: bool,
}

impl AggFuzz {
    fn new(db: &TestDb, seed: u64) -> AggFuzz {
        let mut client = db.connect();
        client
            .batch_execute("SET lock_timeout = '5s'; SET statement_timeout = '60s'")
            .unwrap_or_else(|e| {
                panic!("setting up the aggregate fuzz's session: {}", describe(&e))
            });
        let session = client
            .query_one(SESSION, &[])
            .unwrap_or_else(|e| panic!("reading the session: {}", describe(&e)))
            .get(0);
        AggFuzz {
            seed,
            rng: StdRng::seed_from_u64(seed ^ 0xA66),
            client,
            in_tx: false,
            digest_sql: agg_digest_sql(),
            session,
            history: VecDeque::new(),
            labels: BTreeMap::new(),
            codes: BTreeMap::new(),
            calls: 0,
            hostile: Vec::new(),
            ok_streams: Vec::new(),
            next_id: 0xfa00_0000_0000_0000_0000_0000_0000_0000,
            concurrent: false,
        }
    }

    /// A new stream id (deterministic).
    fn new_stream(&mut self) -> Uuid {
        self.next_id += 1;
        Uuid::from_u128(self.next_id)
    }

    fn fail(&self, what: &str) -> ! {
        let mut report = format!(
            "aggregate fuzz failure (replay: ES_FUZZ_SEED={}){}:\n  {what}\nlast calls, oldest first:\n",
            self.seed,
            if self.in_tx {
                " inside a transaction"
            } else {
                ""
            }
        );
        for line in &self.history {
            report.push_str("  ");
            report.push_str(line);
            report.push('\n');
        }
        panic!("{report}");
    }

    fn note(&mut self, what: &str, outcome: &str) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(format!(
            "{}{} -> {}",
            if self.in_tx { "* " } else { "" },
            short(what, 400),
            short(outcome, 300)
        ));
    }

    /// A statement that must succeed (transaction control, settings).
    fn meta(&mut self, sql: &str) {
        if let Err(e) = self.client.batch_execute(sql) {
            let text = describe(&e);
            self.note(sql, &text);
            self.fail(&format!("`{sql}` failed: {text}"));
        }
    }

    fn one_text(&mut self, sql: &str) -> String {
        match self.client.simple_query(sql) {
            Ok(messages) => messages
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                })
                .unwrap_or_default(),
            Err(e) => {
                let text = describe(&e);
                self.fail(&format!(
                    "the session is not usable: `{}` failed: {text}",
                    short(sql, 200)
                ))
            }
        }
    }

    /// Runs `sql` (no parameters; a `CALL` with the simple protocol, as a procedure that
    /// commits needs) and checks what every call must keep; `want` is what it may end with.
    fn call(&mut self, label: &str, sql: &str, want: Want) -> Result<Vec<Row>, Failed> {
        self.call_with(label, sql, want, None)
    }

    /// [`AggFuzz::call`] under a `statement_timeout` of `timeout` (set before, reset after).
    fn call_with(
        &mut self,
        label: &str,
        sql: &str,
        want: Want,
        timeout: Option<&str>,
    ) -> Result<Vec<Row>, Failed> {
        // a procedure that commits, and several statements, go with the simple protocol
        let simple = sql.trim_start().starts_with("CALL") || sql.contains("; ");
        if self.in_tx {
            self.meta("SAVEPOINT fa_call");
        }
        // a procedure commits inside: what it did before failing stays; another session's
        // appends change the store meanwhile
        let before = (!sql.trim_start().starts_with("CALL") && !self.concurrent)
            .then(|| self.one_text(&self.digest_sql.clone()));
        if let Some(t) = timeout {
            self.meta(&format!("SET statement_timeout = {}", lit(t)));
        }
        self.calls += 1;
        let result = if simple {
            self.client.batch_execute(sql).map(|()| Vec::new())
        } else {
            self.client.query(sql, &[])
        };
        let outcome = match result {
            Ok(rows) => {
                self.note(sql, "ok");
                if timeout.is_some() {
                    self.meta("SET statement_timeout = '60s'");
                }
                if self.in_tx {
                    self.meta("RELEASE SAVEPOINT fa_call");
                }
                if let Want::Code(codes) = want {
                    self.fail(&format!(
                        "{label}: succeeded, but it must fail with one of {codes:?}: {}",
                        short(sql, 600)
                    ));
                }
                let tally = self.labels.entry(label.to_owned()).or_default();
                tally.0 += 1;
                Ok(rows)
            }
            Err(err) => {
                let text = describe(&err);
                self.note(sql, &text);
                let Some(db) = err.as_db_error() else {
                    self.fail(&format!(
                        "{label}: lost the connection (a crashed backend?): {text}"
                    ))
                };
                let failed = Failed {
                    code: db.code().code().to_owned(),
                    message: db.message().to_owned(),
                    detail: db.detail().map(str::to_owned),
                    hint: db.hint().map(str::to_owned),
                };
                let internal = failed.code.starts_with("XX") || failed.code.starts_with("58");
                if self.client.is_closed() || (internal && failed.message != USER_XX) {
                    self.fail(&format!(
                        "{label}: an internal error or a lost connection: {}",
                        failed.text()
                    ));
                }
                let allowed = match want {
                    Want::Ok => false,
                    Want::Code(codes) => codes.contains(&failed.code.as_str()),
                    Want::Any => true,
                };
                if !allowed {
                    self.fail(&format!(
                        "{label}: failed with {}, wanted {want:?}: {}",
                        failed.text(),
                        short(sql, 600)
                    ));
                }
                if self.in_tx {
                    self.meta("ROLLBACK TO SAVEPOINT fa_call; RELEASE SAVEPOINT fa_call");
                }
                if timeout.is_some() {
                    self.meta("SET statement_timeout = '60s'");
                }
                if let Some(before) = before {
                    let after = self.one_text(&self.digest_sql.clone());
                    if after != before {
                        self.fail(&format!(
                            "{label}: a failing call changed the store or the registry: {}\n  \
                             before: {before}\n  after:  {after}",
                            failed.text()
                        ));
                    }
                }
                let tally = self.labels.entry(label.to_owned()).or_default();
                tally.1 += 1;
                let seen = self
                    .codes
                    .entry(format!("{} {label}", failed.code))
                    .or_default();
                seen.count += 1;
                if seen.first.is_empty() {
                    seen.first = short(&failed.text(), 300);
                }
                Err(failed)
            }
        };
        self.check_session(label);
        outcome
    }

    /// The session is usable, is who it was with the settings it had, and the store is whole.
    fn check_session(&mut self, label: &str) {
        let now = self.one_text(SESSION);
        if now != self.session {
            self.fail(&format!(
                "{label}: the call changed the session: it was `{}`, it is `{now}`",
                self.session
            ));
        }
        let bad = self.one_text(GAPLESS);
        if bad != "0" {
            self.fail(&format!(
                "{label}: {bad} streams are not gapless 1..N or disagree with es.streams.version"
            ));
        }
    }

    fn append_sql(stream: Uuid, events: &[String], stream_type: Option<&str>) -> String {
        let array: Vec<String> = events.iter().map(|e| lit(e)).collect();
        format!(
            "SELECT es.append_events({}, NULL, ARRAY[{}]::jsonb[]{})",
            ulit(stream),
            array.join(", "),
            stream_type
                .map(|t| format!(", {}", lit(t)))
                .unwrap_or_default()
        )
    }

    /// An event of the hostile type asking the check (`ck`) or the evolve (`ev`) to `act`.
    fn act_event(&self, key: &str, act: &str, stream: Uuid, code: &str) -> String {
        let other = Uuid::from_u128(self.next_id + 0x1_0000);
        let target = if act == "append_other" { other } else { stream };
        let act = if act == "append_other" { "append" } else { act };
        serde_json::json!({
            "type": "Act",
            key: act,
            "stream": target.to_string(),
            "code": code,
            "detail": format!("fz detail of {code}"),
            "hint": format!("fz hint of {code}"),
        })
        .to_string()
    }
}

/// The fixed scenarios: each call with the outcome the contract gives it.
impl AggFuzz {
    /// Definitions with hostile arguments.
    fn scenario_definitions(&mut self) {
        const INVALID: &[&str] = &["ES301"];
        let ok = "'fa.ev_sql(jsonb,jsonb)'";
        let cases: Vec<(String, Want)> = vec![
            (format!("es.define_aggregate(NULL, {ok})"), Want::Code(&["22004"])),
            (format!("es.define_aggregate('', {ok})"), Want::Code(&["22023"])),
            ("es.define_aggregate('t', NULL)".into(), Want::Code(&["22004"])),
            (format!("es.define_aggregate('t', {ok}, NULL)"), Want::Code(&["22004"])),
            (format!("es.define_aggregate('t', {ok}, '{{}}', NULL, NULL)"), Want::Code(&["22004"])),
            (format!("es.define_aggregate('t', {ok}, '{{}}', NULL, -1)"), Want::Code(&["22023"])),
            (format!("es.define_aggregate('t', {ok}, '{{}}', NULL, -2147483648)"), Want::Code(&["22023"])),
            (format!("es.define_aggregate('t', {ok}, '[]')"), Want::Code(INVALID)),
            (format!("es.define_aggregate('t', {ok}, '7')"), Want::Code(INVALID)),
            (format!("es.define_aggregate('t', {ok}, '\"x\"')"), Want::Code(INVALID)),
            (format!("es.define_aggregate('t', {ok}, 'null')"), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.ck(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.setof(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.proc(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.agg(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.win(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.one(jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.txt(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.json(json,json)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.dflt(jsonb,jsonb,integer)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.poly(anyelement,anyelement)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.var(jsonb[])')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.trig()')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'es.replay(text,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'es.account_check(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 0::regprocedure)".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 4294967295::oid::regprocedure)".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.nope(jsonb,jsonb)')".into(), Want::Code(&["42883"])),
            (format!("es.define_aggregate('t', {ok}, '{{}}', 'fa.ev_sql(jsonb,jsonb)')"), Want::Code(INVALID)),
            (format!("es.define_aggregate('t', {ok}, '{{}}', 'fa.proc(jsonb,jsonb)')"), Want::Code(INVALID)),
            (format!("es.define_aggregate('t', {ok}, '{{}}', 0::regprocedure)"), Want::Code(INVALID)),
            (format!("es.define_aggregate('account', {ok})"), Want::Code(&["42710"])),
            (format!("es.define_aggregate('fz_ok', {ok})"), Want::Code(&["42710"])),
            // a name past the primary key's index row (54000), a long one that compresses
            (format!("es.define_aggregate((SELECT string_agg(md5(g::text), '') FROM generate_series(1, 300) g), {ok})"), Want::Code(&["54000"])),
            (format!("es.define_aggregate(repeat('x', 100000), {ok})"), Want::Ok),
            ("es.drop_aggregate(repeat('x', 100000))".into(), Want::Ok),
            (format!("es.define_aggregate(E'fz \\x01 ''quoted'' \"x\" \\\\ %s é✓', {ok}, '{{\"a\": [1, {{\"b\": null}}]}}', NULL, 2147483647)"), Want::Ok),
            ("es.define_aggregate('fz_builtin', 'jsonb_concat(jsonb,jsonb)', '{}', NULL, 1)".into(), Want::Ok),
            // the store's own functions cannot define another type
            ("es.define_aggregate('fz_native', 'es.account_evolve(jsonb,jsonb)', '{}', 'es.account_check(jsonb,jsonb)', 1)".into(), Want::Code(&["ES301"])),
            ("es.define_aggregate('fz_definer', 'fa.ev_definer(jsonb,jsonb)', '{}', 'fa.ck(jsonb,jsonb)', 1)".into(), Want::Ok),
            ("es.define_aggregate('fz_strict', 'fa.ev_strict(jsonb,jsonb)')".into(), Want::Ok),
            // a huge initial state (about 1 MB before compression), a deep one
            ("es.define_aggregate('fz_huge', 'fa.ev_sql(jsonb,jsonb)', (SELECT jsonb_object_agg('k' || g, md5(g::text)) FROM generate_series(1, 25000) g), NULL, 1)".into(), Want::Ok),
            ("es.define_aggregate('fz_deep', 'fa.ev_sql(jsonb,jsonb)', (repeat('{\"a\":', 5000) || '1' || repeat('}', 5000))::jsonb, NULL, 1)".into(), Want::Any),
            ("es.alter_aggregate(NULL, 'fa.ev_sql(jsonb,jsonb)')".into(), Want::Code(&["22004"])),
            ("es.alter_aggregate('fz_nope', 'fa.ev_sql(jsonb,jsonb)')".into(), Want::Code(&["ES303"])),
            ("es.alter_aggregate('account', 'fa.ev_sql(jsonb,jsonb)')".into(), Want::Code(&["42501"])),
            ("es.alter_aggregate('fz_builtin', 'fa.setof(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.alter_aggregate('fz_builtin', 'jsonb_concat(jsonb,jsonb)', '[]')".into(), Want::Code(INVALID)),
            ("es.alter_aggregate('fz_builtin', 'jsonb_concat(jsonb,jsonb)', '{}', NULL, -5)".into(), Want::Code(&["22023"])),
            ("es.drop_aggregate(NULL)".into(), Want::Code(&["22004"])),
            ("es.drop_aggregate('fz_builtin', NULL)".into(), Want::Code(&["22004"])),
            ("es.drop_aggregate('fz_nope')".into(), Want::Code(&["ES303"])),
            ("es.drop_aggregate('account')".into(), Want::Code(&["42501"])),
            ("es.drop_aggregate('account', true)".into(), Want::Code(&["42501"])),
            ("es.define_upcaster(NULL, 1, 'fa.one(jsonb)')".into(), Want::Code(&["22004"])),
            ("es.define_upcaster('FzEv', NULL, 'fa.one(jsonb)')".into(), Want::Code(&["22004"])),
            ("es.define_upcaster('FzEv', 1, NULL)".into(), Want::Code(&["22004"])),
            ("es.define_upcaster('FzEv', 0, 'fa.one(jsonb)')".into(), Want::Code(&["22023"])),
            ("es.define_upcaster('FzEv', -2147483648, 'fa.one(jsonb)')".into(), Want::Code(&["22023"])),
            ("es.define_upcaster('FzEv', 1, 'fa.ev(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_upcaster('FzEv', 1, 'fa.var(jsonb[])')".into(), Want::Code(INVALID)),
            ("es.define_upcaster('FzEv', 1, 0::regprocedure)".into(), Want::Code(INVALID)),
            ("es.define_upcaster('FzEv', 2147483647, 'fa.one(jsonb)')".into(), Want::Ok),
            ("es.define_upcaster('FzEv', 2147483647, 'fa.one(jsonb)')".into(), Want::Code(&["42710"])),
            ("es.drop_upcaster('FzEv', 2147483647)".into(), Want::Ok),
            ("es.drop_upcaster('FzEv', 2147483647)".into(), Want::Code(&["ES202"])),
            ("es.drop_upcaster(NULL, 1)".into(), Want::Code(&["22004"])),
            ("es.rebuild_batch(NULL)".into(), Want::Code(&["22004"])),
            ("es.rebuild_batch('fz_ok', NULL)".into(), Want::Code(&["22004"])),
            ("es.rebuild_batch('fz_ok', 0)".into(), Want::Code(&["22023"])),
            ("es.rebuild_batch('fz_ok', -2147483648)".into(), Want::Code(&["22023"])),
            ("es.rebuild_batch('fz_nope')".into(), Want::Code(&["ES303"])),
            ("es.rebuild_batch('account', 2147483647)".into(), Want::Ok),
            // retention and archiving (docs/reference.md §14): hostile arguments; the valid calls name a
            // type no stream has and a bound before every event, so nothing of the fuzz's
            // streams goes
            ("es.set_retention(NULL)".into(), Want::Code(&["22004"])),
            ("es.set_retention(NULL, '1 day')".into(), Want::Code(&["22004"])),
            ("es.set_retention('fz_none', '-1 day')".into(), Want::Code(&["22023"])),
            ("es.set_retention('fz_none', '0')".into(), Want::Code(&["22023"])),
            ("es.set_retention('fz_none', '178000000 years')".into(), Want::Code(&["22023"])),
            ("es.set_retention('fz_none', NULL, 0)".into(), Want::Code(&["22023"])),
            ("es.set_retention('fz_none', NULL, -9223372036854775808)".into(), Want::Code(&["22023"])),
            ("es.set_retention('fz_none', '1 microsecond', 9223372036854775807)".into(), Want::Ok),
            ("es.set_retention('', '1000 years')".into(), Want::Ok),
            ("es.set_retention('', '100000 years')".into(), Want::Code(&["22023"])),
            ("es.set_retention('Fz Ünïcödé ✓ 名前', NULL, 1)".into(), Want::Ok),
            ("es.pause_retention('fz_nope')".into(), Want::Code(&["22023"])),
            ("es.pause_retention()".into(), Want::Ok),
            ("es.resume_retention(NULL)".into(), Want::Ok),
            ("es.set_retention_paused('fz_none', NULL)".into(), Want::Code(&["22004"])),
            ("es.set_retention_paused(NULL, true)".into(), Want::Ok),
            ("es.retention_expired('fz_none', -9223372036854775808, 9223372036854775807, 0)".into(), Want::Ok),
            ("es.retention_expired(NULL, NULL, NULL, NULL)".into(), Want::Ok),
            ("es.retention_batch('fz_none', -2147483648, 9223372036854775807)".into(), Want::Ok),
            ("es.retention_batch('fz_none', 2147483647, -9223372036854775808)".into(), Want::Ok),
            ("es.retention_batch(NULL, NULL, NULL)".into(), Want::Ok),
            ("es.wake_retention()".into(), Want::Ok),
            ("es.set_retention('fz_none')".into(), Want::Ok),
            ("es.set_retention('')".into(), Want::Ok),
            ("es.set_retention('Fz Ünïcödé ✓ 名前')".into(), Want::Ok),
            ("es.archive(NULL)".into(), Want::Code(&["22004"])),
            ("es.archive('-infinity')".into(), Want::Ok),
            ("es.archive('1900-01-01', -1)".into(), Want::Code(&["22023"])),
            ("es.archive('1900-01-01', -9223372036854775808)".into(), Want::Code(&["22023"])),
            ("es.archive('1900-01-01', 9223372036854775807)".into(), Want::Ok),
            ("es.archive('infinity', 0)".into(), Want::Ok),
            ("es.state(NULL)".into(), Want::Code(&["22004"])),
            ("es.state('00000000-0000-0000-0000-000000000000')".into(), Want::Code(&["ES002"])),
            ("es.replay(NULL, '{}'::jsonb)".into(), Want::Code(&["22004"])),
            ("es.replay('fz_nope', '{}'::jsonb)".into(), Want::Code(&["ES303"])),
            ("es.replay('fz_sql', NULL::jsonb)".into(), Want::Code(&["ES301"])),
            ("es.replay('fz_sql', '[]'::jsonb, '{}'::jsonb)".into(), Want::Code(&["22023"])),
            ("es.replay('fz_sql', '7'::jsonb, '{}'::jsonb)".into(), Want::Code(&["22023"])),
            ("es.replay('fz_builtin', '[1]'::jsonb)".into(), Want::Code(&["ES301"])),
            ("es.replay('fz_sql', '{\"type\": \"A\"}'::jsonb)".into(), Want::Ok),
            ("es.replay('fz_hostile', '{\"type\": \"A\", \"ev\": \"null\"}'::jsonb)".into(), Want::Code(&["ES301"])),
            ("es.replay('fz_strict', '{\"type\": \"A\", \"ev\": 1}'::jsonb)".into(), Want::Code(&["ES301"])),
            ("es.replay('fz_native', '{\"type\": \"Deposited\"}'::jsonb)".into(), Want::Code(&["ES303"])),
            ("es.replay('account', '{\"type\": \"Deposited\"}'::jsonb)".into(), Want::Code(&["ES003"])),
            // personal data (crypto-shredding) with hostile paths, subjects and sealed look-alikes
            ("es.define_personal_data(NULL, ARRAY['a'])".into(), Want::Code(&["22004"])),
            ("es.define_personal_data('FzPersonal', NULL)".into(), Want::Code(&["22004"])),
            ("es.define_personal_data('FzPersonal', ARRAY[NULL]::text[])".into(), Want::Code(&["22023"])),
            ("es.define_personal_data('FzPersonal', ARRAY['', 'a'])".into(), Want::Code(&["22023"])),
            ("es.define_personal_data('FzPersonal', ARRAY['a', 'a.b'])".into(), Want::Code(&["22023"])),
            ("es.define_personal_data('FzPersonal', ARRAY[E'a\\nb'])".into(), Want::Code(&["22023"])),
            ("es.define_personal_data('Opened', ARRAY['initial_balance_cents'])".into(), Want::Code(&["22023"])),
            ("es.define_personal_data('FzPersonal', '{{a},{b}}'::text[])".into(), Want::Any),
            ("es.define_personal_data('FzPersonal', ARRAY[repeat('x', 100000)])".into(), Want::Any),
            ("es.define_personal_data(repeat('x', 100000), ARRAY['a'])".into(), Want::Any),
            ("es.define_personal_data('FzPersonal', ARRAY['who', 'a.b.c', E'é✓ \\x01 %s'])".into(), Want::Ok),
            ("es.append_events(gen_random_uuid(), 0, ARRAY['{\"type\": \"FzPersonal\", \"who\": {\"x\": [1, 2.50]}, \"a\": {\"b\": {\"c\": 1e300}}, \"metadata\": {\"data_subject\": \"fz subject ✓\"}}'::jsonb, '{\"type\": \"FzPersonal\", \"who\": \"es:enc:v1:1:AAAA\", \"a\": 7}'::jsonb])".into(), Want::Ok),
            ("es.append_events(gen_random_uuid(), 0, ARRAY['{\"type\": \"FzPersonal\", \"who\": null, \"metadata\": {\"data_subject\": 5}}'::jsonb])".into(), Want::Ok),
            ("es.forget(NULL)".into(), Want::Code(&["22004"])),
            ("es.forget('')".into(), Want::Ok),
            ("es.forget('fz subject ✓')".into(), Want::Ok),
            ("es.forget(repeat('x', 100000))".into(), Want::Any),
            ("es.reveal(NULL)".into(), Want::Ok),
            ("es.reveal('\"es:enc:v1:1:AAAA\"')".into(), Want::Ok),
            ("es.reveal('{\"es:enc:v1:1:A\": \"es:enc:v1:99999999999999999999:x\", \"b\": [\"es:enc:v1:-1:\", \"es:enc:v1:\"]}')".into(), Want::Ok),
            ("es.reveal((repeat('[', 3000) || '\"es:enc:v1:1:AAAA\"' || repeat(']', 3000))::jsonb)".into(), Want::Any),
            ("es.define_personal_data('FzPersonal', ARRAY[]::text[])".into(), Want::Ok),
        ];
        for (expr, want) in cases {
            let _ = self.call("definition", &format!("SELECT {expr}"), want);
        }
        let _ = self.call(
            "history",
            "SELECT * FROM es.history(NULL)",
            Want::Code(&["22004"]),
        );
        for sql in [
            "CALL es.rebuild_states(NULL)",
            "CALL es.rebuild_states('fz_ok', 0)",
            "CALL es.rebuild_states('fz_nope')",
        ] {
            let _ = self.call(
                "rebuild_states",
                sql,
                Want::Code(&["22004", "22023", "ES303"]),
            );
        }
        // a procedure that commits, inside a transaction block
        self.meta("BEGIN");
        self.in_tx = true;
        let _ = self.call(
            "rebuild_states in a transaction",
            "CALL es.rebuild_states('fz_ok')",
            Want::Code(&["2D000"]),
        );
        self.meta("ROLLBACK");
        self.in_tx = false;
    }

    /// Appends naming types: new streams of each type, conflicts (ES302), undeclared names.
    fn scenario_stream_types(&mut self) {
        for _ in 0..6 {
            let s = self.new_stream();
            let _ = self.call(
                "append fz_ok",
                &Self::append_sql(
                    s,
                    &[r#"{"type":"Opened"}"#.into(), r#"{"type":"Added"}"#.into()],
                    Some("fz_ok"),
                ),
                Want::Ok,
            );
            self.ok_streams.push(s);
        }
        let s = self.ok_streams[0];
        let conflict = Self::append_sql(s, &[r#"{"type":"A"}"#.into()], Some("fz_sql"));
        let _ = self.call("append conflicting type", &conflict, Want::Code(&["ES302"]));
        let refused = Self::append_sql(
            s,
            &[r#"{"type":"A"}"#.into(), r#"{"type":"Refused"}"#.into()],
            None,
        );
        match self.call("append refused by check", &refused, Want::Code(&["FZ001"])) {
            Err(f) if f.detail.as_deref() == Some("n: 3") => {}
            other => self.fail(&format!(
                "the check's DETAIL did not pass through unchanged: {other:?}"
            )),
        }
        for name in ["", "fz undeclared", "account"] {
            let s = self.new_stream();
            let _ = self.call(
                "append naming a type",
                &Self::append_sql(s, &[r#"{"type":"A"}"#.into()], Some(name)),
                Want::Any,
            );
        }
        let _ = self.call(
            "append with NULL events",
            &format!("SELECT es.append_events({}, NULL, NULL, 'fz_ok')", ulit(s)),
            Want::Code(&["22004"]),
        );
        for ty in [
            "fz_hostile",
            "fz_sql",
            "fz_builtin",
            "fz_definer",
            "fz_strict",
            "fz_huge",
            "fz_native",
        ] {
            let s = self.new_stream();
            let first = if ty == "fz_native" {
                r#"{"type":"Opened","account_holder":"Fz","initial_balance_cents":5}"#
            } else {
                r#"{"type":"Opened"}"#
            };
            // fz_native was refused: its streams are generic (es.state: ES303)
            let want = if ty == "fz_native" {
                Want::Any
            } else {
                Want::Ok
            };
            let _ = self.call(
                &format!("append {ty}"),
                &Self::append_sql(s, &[first.into()], Some(ty)),
                want,
            );
            if ty != "fz_native" && ty != "fz_huge" {
                self.hostile.push(s);
            }
            let _ = self.call("state", &format!("SELECT es.state({})", ulit(s)), want);
        }
    }

    /// Every behaviour of the check and the evolve, appended to an existing stream of the
    /// hostile type and to a new one; the result each must give.
    fn scenario_behaviours(&mut self) {
        let existing = self.hostile[0];
        for act in ACTS.iter().chain(EV_RESULTS) {
            for key in ["ck", "ev"] {
                if key == "ck" && EV_RESULTS.contains(act) {
                    continue;
                }
                for new in [false, true] {
                    let stream = if new { self.new_stream() } else { existing };
                    let event = self.act_event(key, act, stream, "CT042");
                    let sql = Self::append_sql(stream, &[event], Some("fz_hostile"));
                    let want = expected(key, act);
                    let timeout = (*act == "loop").then_some("150ms");
                    let label =
                        format!("append {key} {}", if act.is_empty() { "fine" } else { act });
                    let result = self.call_with(&label, &sql, want, timeout);
                    self.check_behaviour(key, act, &result);
                    if new && result.is_err() {
                        let n = self.one_text(&format!(
                            "SELECT count(*) FROM es.streams WHERE stream_id = {}",
                            ulit(stream)
                        ));
                        if n != "0" {
                            self.fail(&format!(
                                "{label}: a refused first append left the stream row"
                            ));
                        }
                    }
                }
            }
        }
        // every SQLSTATE, through the check (unchanged, with DETAIL and HINT) and the evolve
        for code in RAISED_CODES {
            for key in ["ck", "ev"] {
                let event = self.act_event(key, "raise", existing, code);
                let sql = Self::append_sql(existing, &[event], None);
                let passes = ["40", "53", "54", "57"].iter().any(|c| code.starts_with(c));
                let want: &'static [&'static str] = if key == "ck" || passes {
                    std::slice::from_ref(RAISED_CODES.iter().find(|c| *c == code).expect("a code"))
                } else {
                    &["ES301"]
                };
                let result = self.call(&format!("raise {key}"), &sql, Want::Code(want));
                if let Err(f) = result {
                    let detail = format!("fz detail of {code}");
                    if (key == "ck" || passes)
                        && (f.detail.as_deref() != Some(detail.as_str()) || f.hint.is_none())
                    {
                        self.fail(&format!(
                            "{code} raised by {key}: DETAIL or HINT lost: {}",
                            f.text()
                        ));
                    }
                    if key == "ev"
                        && !passes
                        && !f.detail.as_deref().unwrap_or_default().contains(code)
                    {
                        self.fail(&format!(
                            "ES301 does not name the evolve's {code}: {}",
                            f.text()
                        ));
                    }
                }
            }
        }
        let xx = self.act_event("ck", "raise_xx", existing, "XX000");
        match self.call(
            "check raises XX000",
            &Self::append_sql(existing, &[xx], None),
            Want::Code(&["XX000"]),
        ) {
            Err(f) if f.message == USER_XX => {}
            other => self.fail(&format!(
                "a check's own XX000 did not pass through unchanged: {other:?}"
            )),
        }
        // a batch that fails at its last event stores none of it
        let mut batch: Vec<String> = (0..50)
            .map(|i| format!(r#"{{"type":"A","i":{i}}}"#))
            .collect();
        batch.push(self.act_event("ev", "array", existing, ""));
        let _ = self.call(
            "batch failing at its end",
            &Self::append_sql(existing, &batch, None),
            Want::Code(&["ES301"]),
        );
    }

    /// Checks what the error of a behaviour says (the role changes must be refused as such).
    fn check_behaviour(&mut self, key: &str, act: &str, result: &Result<Vec<Row>, Failed>) {
        if let Err(f) = result
            && matches!(act, "set_role" | "reset_role" | "session_auth")
        {
            let text = f.text();
            if !(text.contains("42501") && text.contains("within security-")) {
                self.fail(&format!(
                    "{key} {act}: not refused as a security-restricted operation: {text}"
                ));
            }
        }
    }

    /// Streams appended while their type was not declared, holding events every behaviour
    /// reacts to, then the type declared: es.state, es.history, es.replay and the rebuild meet
    /// the behaviours on replay.
    fn scenario_replays(&mut self) {
        let mut late = Vec::new();
        for act in ACTS.iter().chain(EV_RESULTS) {
            let s = self.new_stream();
            let events = vec![
                r#"{"type":"Opened"}"#.to_owned(),
                self.act_event("ev", act, s, "CT043"),
                r#"{"type":"After"}"#.to_owned(),
            ];
            let _ = self.call(
                "append undeclared",
                &Self::append_sql(s, &events, Some("fz_late")),
                Want::Ok,
            );
            late.push((*act, s));
        }
        let _ = self.call(
            "state of undeclared",
            &format!("SELECT es.state({})", ulit(late[0].1)),
            Want::Code(&["ES303"]),
        );
        let _ = self.call(
            "define fz_late",
            "SELECT es.define_aggregate('fz_late', 'fa.ev(jsonb,jsonb)', '{}', 'fa.ck(jsonb,jsonb)', 1)",
            Want::Ok,
        );
        for (act, s) in late.clone() {
            let want = expected("ev", act);
            let timeout = (act == "loop").then_some("150ms");
            let id = ulit(s);
            for (label, sql) in [
                ("state", format!("SELECT es.state({id})")),
                (
                    "state at",
                    format!("SELECT es.state({id}, at_version => 2)"),
                ),
                ("history", format!("SELECT count(*) FROM es.history({id})")),
                (
                    "replay",
                    format!(
                        "SELECT es.replay('fz_late', data ORDER BY version) FROM es.events WHERE stream_id = {id}"
                    ),
                ),
                (
                    "replay window",
                    format!(
                        "SELECT es.replay('fz_late', '{{\"w\": 1}}', data) OVER (ORDER BY version) FROM es.events WHERE stream_id = {id}"
                    ),
                ),
                (
                    "append after",
                    Self::append_sql(s, &[r#"{"type":"Later"}"#.into()], Some("fz_late")),
                ),
            ] {
                let r = self.call_with(&format!("{label} {act}"), &sql, want, timeout);
                self.check_behaviour("ev", act, &r);
            }
        }
        // the rebuild meets them one stream at a time
        for _ in 0..late.len() + 2 {
            let _ = self.call_with(
                "rebuild_batch",
                "SELECT es.rebuild_batch('fz_late', 1)",
                Want::Any,
                Some("300ms"),
            );
        }
        let _ = self.call_with(
            "rebuild_states",
            "CALL es.rebuild_states('fz_late', 3)",
            Want::Any,
            Some("300ms"),
        );
        // replaced by a type whose evolve is fine: the rebuild completes, the reads agree
        let _ = self.call(
            "alter fz_late",
            "SELECT es.alter_aggregate('fz_late', 'fa.ev_sql(jsonb,jsonb)', '{}', NULL, 2)",
            Want::Ok,
        );
        let _ = self.call_with(
            "rebuild_states",
            "CALL es.rebuild_states('fz_late', 2)",
            Want::Ok,
            Some("20s"),
        );
        let stale =
            self.one_text("SELECT stale_streams FROM es.aggregates WHERE stream_type = 'fz_late'");
        if stale != "0" {
            self.fail(&format!(
                "after es.rebuild_states, {stale} streams of fz_late are stale"
            ));
        }
        let differ = self.one_text(
            "SELECT count(*) FROM es.streams s WHERE stream_type = 'fz_late' AND state IS DISTINCT FROM \
             (SELECT es.replay('fz_late', data ORDER BY version) FROM es.events e WHERE e.stream_id = s.stream_id)",
        );
        if differ != "0" {
            self.fail(&format!(
                "{differ} rebuilt streams of fz_late keep a state other than their replay"
            ));
        }
        let _ = self.call(
            "drop fz_late in use",
            "SELECT es.drop_aggregate('fz_late')",
            Want::Code(&["2BP01"]),
        );
        let _ = self.call(
            "drop fz_late detached",
            "SELECT es.drop_aggregate('fz_late', true)",
            Want::Ok,
        );
        let _ = self.call(
            "state detached",
            &format!("SELECT es.state({})", ulit(late[0].1)),
            Want::Code(&["ES303"]),
        );
    }
}

/// What an append whose `key` function (`ck` / `ev`) does `act` must end with.
fn expected(key: &str, act: &str) -> Want {
    let ck = key == "ck";
    match act {
        "" | "sleep" | "append_other" | "set_config" | "set_local" | "txid" | "subxact"
        | "cursor" | "notice" | "lock" | "huge" | "deep" => Want::Ok,
        "loop" => Want::Code(&["57014"]),
        "recurse" => Want::Code(&["54001"]),
        // its own error passes through a check; an evolve's is ES301
        "raise" if ck => Want::Code(&["CT042", "CT043"]),
        "divzero" if ck => Want::Code(&["22012"]),
        "set_role" | "reset_role" | "session_auth" | "temp" | "listen" if ck => {
            Want::Code(&["42501", "55000"])
        }
        "commit" | "rollback" if ck => Want::Code(&["2D000"]),
        // the stream it judges: refused (ES301); its row updated under the append: ES301 too
        "append" => Want::Code(&["ES301"]),
        "update_streams" => Want::Any,
        _ => Want::Code(&["ES301"]),
    }
}

/// The random phase.
impl AggFuzz {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).expect("a non-empty choice")
    }

    fn random_step(&mut self) {
        if !self.in_tx && self.chance(0.12) {
            let begin = self.pick(&["BEGIN", "BEGIN ISOLATION LEVEL REPEATABLE READ"]);
            self.meta(begin);
            self.in_tx = true;
        } else if self.in_tx && self.chance(0.2) {
            let end = self.pick(&["COMMIT", "ROLLBACK"]);
            if let Err(e) = self.client.batch_execute(end) {
                // a COMMIT may fail only with a serialization failure
                if sqlstate(&e) != Some("40001") {
                    self.fail(&format!("{end}: {}", describe(&e)));
                }
            }
            self.note(end, "done");
            self.in_tx = false;
        }
        match self.rng.random_range(0..100) {
            0..60 => self.random_append(),
            60..75 => self.random_read(),
            75..88 => self.random_definition(),
            _ => self.random_rebuild(),
        }
    }

    fn random_stream(&mut self) -> Uuid {
        match self.rng.random_range(0..10) {
            0 => self.new_stream(),
            1 if !self.ok_streams.is_empty() => self.pick(&self.ok_streams.clone()),
            _ => self.pick(&self.hostile.clone()),
        }
    }

    fn random_event(&mut self, stream: Uuid) -> (String, Option<&'static str>) {
        if self.chance(0.5) {
            return (
                format!(r#"{{"type":"E{}"}}"#, self.rng.random_range(0..5)),
                None,
            );
        }
        let key = self.pick(&["ck", "ev"]);
        let act = if key == "ev" && self.chance(0.15) {
            self.pick(EV_RESULTS)
        } else {
            self.pick(ACTS)
        };
        let code = self.pick(RAISED_CODES);
        let timeout = (act == "loop").then_some("100ms");
        (self.act_event(key, act, stream, code), timeout)
    }

    fn random_append(&mut self) {
        let stream = self.random_stream();
        let n = self.pick(&[1, 1, 1, 2, 3, 20]);
        let mut events = Vec::new();
        let mut timeout = None;
        for _ in 0..n {
            let (e, t) = self.random_event(stream);
            timeout = timeout.or(t);
            events.push(e);
        }
        let ty = self.pick(&[
            None,
            None,
            Some("fz_hostile"),
            Some("fz_sql"),
            Some("fz_ok"),
            Some("fz_r1"),
        ]);
        let sql = Self::append_sql(stream, &events, ty);
        let _ = self.call_with("random append", &sql, Want::Any, timeout.or(Some("5s")));
    }

    fn random_read(&mut self) {
        let stream = self.random_stream();
        let id = ulit(stream);
        let ty = self.pick(&[
            "fz_hostile",
            "fz_sql",
            "fz_r1",
            "fz_builtin",
            "fz_ok",
            "account",
            "fz_nope",
        ]);
        let at = self.pick(&["NULL", "1", "2", "0", "-1", "9223372036854775807"]);
        let as_of = self.pick(&["NULL", "'infinity'", "'-infinity'", "now()", "'2000-01-01'"]);
        let sql = match self.rng.random_range(0..5) {
            0 => format!("SELECT es.state({id}, {at}, {as_of})"),
            1 => format!("SELECT count(*) FROM es.history({id})"),
            2 => format!(
                "SELECT es.replay('{ty}', data ORDER BY version) FROM es.events WHERE stream_id = {id}"
            ),
            3 => format!(
                "SELECT es.replay('{ty}', '{{\"n\": 1}}', data) OVER (ORDER BY version) FROM es.events WHERE stream_id = {id}"
            ),
            _ => format!(
                "SELECT es.replay('{ty}', data) FROM es.events WHERE stream_id = {id} GROUP BY event_type"
            ),
        };
        // a stored event may ask the evolve to loop
        let _ = self.call_with("random read", &sql, Want::Any, Some("300ms"));
    }

    fn random_definition(&mut self) {
        let ty = self.pick(&[
            "fz_r1",
            "fz_r2",
            "fz_hostile",
            "fz_sql",
            "fz_builtin",
            "account",
            "",
            "fz_r1",
        ]);
        let evolve = self.pick(&[
            "'fa.ev(jsonb,jsonb)'",
            "'fa.ev_sql(jsonb,jsonb)'",
            "'fa.ev_strict(jsonb,jsonb)'",
            "'fa.ev_definer(jsonb,jsonb)'",
            "'jsonb_concat(jsonb,jsonb)'",
            "'fa.ck(jsonb,jsonb)'",
            "'fa.setof(jsonb,jsonb)'",
            "0::regprocedure",
            "NULL",
        ]);
        let check = self.pick(&[
            "NULL",
            "'fa.ck(jsonb,jsonb)'",
            "'fa.ev(jsonb,jsonb)'",
            "'fa.proc(jsonb,jsonb)'",
        ]);
        let initial = self.pick(&["'{}'", "'{\"n\": 1}'", "'[]'", "NULL", "'null'"]);
        let every = self.pick(&["0", "1", "2", "100", "-1", "NULL", "2147483647"]);
        let detach = self.pick(&["true", "false", "NULL"]);
        let sql = match self.rng.random_range(0..4) {
            0 => {
                format!("SELECT es.define_aggregate('{ty}', {evolve}, {initial}, {check}, {every})")
            }
            1 => {
                format!("SELECT es.alter_aggregate('{ty}', {evolve}, {initial}, {check}, {every})")
            }
            2 => format!("SELECT es.drop_aggregate('{ty}', {detach})"),
            _ => {
                let from = self.pick(&["1", "2", "0", "NULL", "2147483647"]);
                let upcast = self.pick(&["'fa.one(jsonb)'", "'fa.ev(jsonb,jsonb)'", "NULL"]);
                if self.chance(0.5) {
                    format!(
                        "SELECT es.define_upcaster('E{}', {from}, {upcast})",
                        self.rng.random_range(0..3)
                    )
                } else {
                    format!(
                        "SELECT es.drop_upcaster('E{}', {from})",
                        self.rng.random_range(0..3)
                    )
                }
            }
        };
        let _ = self.call("random definition", &sql, Want::Any);
    }

    fn random_rebuild(&mut self) {
        let ty = self.pick(&[
            "fz_r1",
            "fz_hostile",
            "fz_sql",
            "fz_ok",
            "fz_nope",
            "account",
        ]);
        let size = self.pick(&["1", "2", "1000", "0", "NULL"]);
        if self.in_tx || self.chance(0.6) {
            let sql = format!("SELECT es.rebuild_batch('{ty}', {size})");
            let _ = self.call_with("random rebuild_batch", &sql, Want::Any, Some("300ms"));
        } else {
            let sql = format!("CALL es.rebuild_states('{ty}', {size})");
            let _ = self.call_with("random rebuild_states", &sql, Want::Any, Some("1s"));
        }
    }

    fn end_tx(&mut self) {
        if self.in_tx {
            self.meta("ROLLBACK");
            self.in_tx = false;
        }
    }
}

/// The appending session of the concurrent phase: appends to the `fz_swap` streams until
/// `deadline`; returns its outcome counts, or what went wrong.
fn swap_appender(
    db_name: String,
    streams: Vec<Uuid>,
    deadline: Instant,
) -> Result<BTreeMap<String, u64>, String> {
    let mut client = event_store_client_tests::config(&db_name)
        .connect(postgres::NoTls)
        .map_err(|e| format!("connecting: {}", describe(&e)))?;
    client
        .batch_execute("SET statement_timeout = '5s'; SET lock_timeout = '5s'")
        .map_err(|e| describe(&e))?;
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut i = 0usize;
    while Instant::now() < deadline {
        i += 1;
        let stream = streams[i % streams.len()];
        let events: Vec<String> = (0..1 + i % 3)
            .map(|k| format!(r#"{{"type":"Swap","i":{i},"k":{k}}}"#))
            .collect();
        let named: Option<&str> = i.is_multiple_of(2).then_some("fz_swap");
        let result = client.query(
            "SELECT es.append_events($1, NULL, $2::text[]::jsonb[], $3)",
            &[&stream, &events, &named],
        );
        let key = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => {
                let Some(code) = sqlstate(&e) else {
                    return Err(format!("append {i}: lost the connection: {}", describe(&e)));
                };
                if code.starts_with("XX") || code.starts_with("58") {
                    return Err(format!("append {i}: an internal error: {}", describe(&e)));
                }
                let text: String = describe(&e)
                    .chars()
                    .map(|c| if c.is_ascii_digit() { '#' } else { c })
                    .collect();
                short(&text, 140)
            }
        };
        *outcomes.entry(key).or_default() += 1;
        client.simple_query("SELECT 1").map_err(|e| {
            format!(
                "the session is not usable after append {i}: {}",
                describe(&e)
            )
        })?;
    }
    Ok(outcomes)
}

/// The concurrent phase: while [`swap_appender`] appends, the type's functions are replaced
/// (also changing their language), dropped and created again, the type altered, dropped and
/// declared again, and rebuilt.
fn swap_race(fuzz: &mut AggFuzz, db: &TestDb, secs: u64) -> BTreeMap<String, u64> {
    let streams: Vec<Uuid> = (0..4).map(|_| fuzz.new_stream()).collect();
    for &s in &streams {
        let _ = fuzz.call(
            "append fz_swap",
            &AggFuzz::append_sql(s, &[r#"{"type":"Opened"}"#.into()], Some("fz_swap")),
            Want::Ok,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let name = db.name().to_owned();
    let appender = {
        let streams = streams.clone();
        std::thread::spawn(move || swap_appender(name, streams, deadline))
    };
    let steps = [
        "CREATE OR REPLACE FUNCTION fa.swap_ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$ \
         BEGIN RETURN state || jsonb_build_object('n', coalesce((state ->> 'n')::bigint, 0) + 1, 'lang', 'plpgsql'); END $$",
        "CREATE OR REPLACE FUNCTION fa.swap_ck(state jsonb, event jsonb) RETURNS void LANGUAGE plpgsql AS $$ \
         BEGIN IF (event ->> 'i')::int % 7 = 0 THEN RAISE EXCEPTION 'fz swap refuses' USING ERRCODE = 'FZ007'; END IF; END $$",
        "CREATE OR REPLACE FUNCTION fa.swap_ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql \
         AS $$ SELECT state || jsonb_build_object('n', coalesce((state ->> 'n')::bigint, 0) + 1, 'lang', 'sql') $$",
        "CREATE OR REPLACE FUNCTION fa.swap_ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$ \
         BEGIN IF (event ->> 'i')::int % 5 = 0 THEN RETURN NULL; END IF; RETURN state || '{\"lang\": \"plpgsql2\"}'; END $$",
        "DROP FUNCTION fa.swap_ck(jsonb, jsonb); CREATE FUNCTION fa.swap_ck(state jsonb, event jsonb) RETURNS void \
         LANGUAGE sql AS $$ SELECT NULL::void $$",
        "SELECT es.alter_aggregate('fz_swap', 'fa.swap_ev(jsonb,jsonb)', '{}', 'fa.swap_ck(jsonb,jsonb)', 4)",
        "DROP FUNCTION fa.swap_ev(jsonb, jsonb); CREATE FUNCTION fa.swap_ev(state jsonb, event jsonb) RETURNS jsonb \
         LANGUAGE sql AS $$ SELECT state || '{\"lang\": \"sql2\"}' $$",
        "ALTER FUNCTION fa.swap_ck(jsonb, jsonb) SET work_mem = '3MB'",
        "SELECT es.alter_aggregate('fz_swap', 'fa.swap_ev(jsonb,jsonb)', '{}', 'fa.swap_ck(jsonb,jsonb)', 2)",
        "CALL es.rebuild_states('fz_swap', 1)",
        "SELECT es.drop_aggregate('fz_swap', true)",
        "SELECT es.define_aggregate('fz_swap', 'fa.swap_ev(jsonb,jsonb)', '{}', 'fa.swap_ck(jsonb,jsonb)', 3)",
        "ALTER FUNCTION fa.swap_ev(jsonb, jsonb) SECURITY DEFINER",
        "CALL es.rebuild_states('fz_swap', 2)",
    ];
    let mut i = 0;
    fuzz.concurrent = true;
    while Instant::now() < deadline {
        let sql = steps[i % steps.len()];
        let _ = fuzz.call_with("race ddl", sql, Want::Any, Some("5s"));
        i += 1;
        std::thread::sleep(Duration::from_millis(15));
    }
    let joined = appender.join();
    fuzz.concurrent = false;
    let outcomes = match joined {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(what)) => fuzz.fail(&format!("the concurrent appender: {what}")),
        Err(_) => fuzz.fail("the concurrent appender panicked"),
    };
    // the type declared with working functions again: every stream rebuilds and agrees
    for sql in [
        "CREATE OR REPLACE FUNCTION fa.swap_ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql \
         AS $$ SELECT state || jsonb_build_object('n', coalesce((state ->> 'n')::bigint, 0) + 1) $$",
        "CREATE OR REPLACE FUNCTION fa.swap_ck(state jsonb, event jsonb) RETURNS void LANGUAGE sql AS $$ SELECT NULL::void $$",
    ] {
        let _ = fuzz.call("race end", sql, Want::Ok);
    }
    let defined =
        fuzz.one_text("SELECT count(*) FROM es.aggregate_types WHERE stream_type = 'fz_swap'");
    let verb = if defined == "1" { "alter" } else { "define" };
    let _ = fuzz.call(
        "race end",
        &format!("SELECT es.{verb}_aggregate('fz_swap', 'fa.swap_ev(jsonb,jsonb)', '{{}}', 'fa.swap_ck(jsonb,jsonb)', 3)"),
        Want::Ok,
    );
    let _ = fuzz.call_with(
        "race end",
        "CALL es.rebuild_states('fz_swap', 2)",
        Want::Ok,
        Some("30s"),
    );
    let differ = fuzz.one_text(
        "SELECT count(*) FROM es.streams s WHERE stream_type = 'fz_swap' AND state IS DISTINCT FROM \
         (SELECT es.replay('fz_swap', data ORDER BY version) FROM es.events e WHERE e.stream_id = s.stream_id)",
    );
    if differ != "0" {
        fuzz.fail(&format!(
            "{differ} streams of fz_swap keep a state other than their replay after the rebuild"
        ));
    }
    outcomes
}

#[test]
fn fuzz_aggregates() {
    let seed = env_u64("ES_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let secs = env_u64("ES_FUZZ_AGG_SECS").unwrap_or(AGG_SECS);
    let race_secs = env_u64("ES_FUZZ_AGG_RACE_SECS").unwrap_or(AGG_RACE_SECS);
    eprintln!("aggregate fuzz: seed {seed}, {secs} s random, {race_secs} s concurrent");
    let started = Instant::now();
    let db = TestDb::new("fuzz_agg");
    let log_from = server_log_size();
    db.connect()
        .batch_execute(AGG_SETUP)
        .unwrap_or_else(|e| panic!("creating the aggregate fuzz's functions: {}", describe(&e)));
    let mut fuzz = AggFuzz::new(&db, seed);

    fuzz.scenario_definitions();
    fuzz.scenario_stream_types();
    fuzz.scenario_behaviours();
    fuzz.scenario_replays();
    let scenarios = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        fuzz.random_step();
    }
    fuzz.end_tx();
    let race = swap_race(&mut fuzz, &db, race_secs);

    // the control type's streams keep the state their events give
    let differ = fuzz.one_text(
        "SELECT count(*) FROM es.streams s WHERE stream_type = 'fz_ok' AND state IS DISTINCT FROM \
         (SELECT es.replay('fz_ok', data ORDER BY version) FROM es.events e WHERE e.stream_id = s.stream_id)",
    );
    if differ != "0" {
        fuzz.fail(&format!(
            "{differ} streams of fz_ok keep a state other than the replay of their events"
        ));
    }
    let end = final_checks(&db, seed);
    if let Some(log) = server_log_since(log_from) {
        let crashes: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("terminated by signal") || l.contains("PANIC"))
            .collect();
        assert!(
            crashes.is_empty(),
            "aggregate fuzz: the server log shows a crash:\n{}",
            crashes.join("\n")
        );
    }

    eprintln!(
        "aggregate fuzz: {} calls in {:.1} s (fixed scenarios {:.1} s); stored at the end: {} events, {} streams",
        fuzz.calls,
        started.elapsed().as_secs_f64(),
        scenarios.as_secs_f64(),
        end.events,
        end.streams
    );
    eprintln!("aggregate fuzz: calls by kind (succeeded / failed):");
    for (label, (ok, failed)) in &fuzz.labels {
        eprintln!("  {label}: {ok} / {failed}");
    }
    eprintln!("aggregate fuzz: SQLSTATEs by call (count, first message):");
    for (key, seen) in &fuzz.codes {
        eprintln!("  {key}: {} — {}", seen.count, seen.first);
    }
    eprintln!("aggregate fuzz: the concurrent appender's outcomes:");
    for (key, n) in &race {
        eprintln!("  {key}: {n}");
    }
}
