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
//!
//! A second test, `fuzz_aggregates`, fuzzes the aggregates of any domain (see its module).
//!
//! The modules, one subject each: `harness` (calls, connections, transactions, digests, random
//! values, the step), `append`, `reads` (reads and snapshots), `accounts`, `lifecycle`, `admin`
//! (settings and DDL beside the calls), `subscriptions` (subscriptions and projections), `checks`
//! (the end of `fuzz_whole_sql_surface`), `aggregates` and `aggregates_random` (`fuzz_aggregates`).
//! Each subject adds its generators to [`harness::Fuzz`] in an `impl` block of its own.

mod accounts;
mod admin;
mod aggregates;
mod aggregates_random;
mod append;
mod checks;
mod harness;
mod lifecycle;
mod reads;
mod subscriptions;

use aggregates::*;
use aggregates_random::*;
use append::*;
use checks::*;
use harness::*;
use subscriptions::*;

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
