//! Projections, read models kept by the database itself (docs/reference.md §10, issue 11 items 4, 6, 7): a
//! background worker of the preloaded library feeds each projection's handler its events and
//! acks in the handler's transaction, with no client process involved. Each test appends through
//! ordinary connections and only *waits* (`es.wait_for_projection`) or looks at the read model.
//!
//! - `the_worker_projects_every_event_exactly_once_in_order`: a PL/pgSQL handler `f(es.events)`
//!   writing one row per event; after `es.wait_for_projection` the model holds every event once,
//!   in position order; a projection with `event_types` sees only those; read-your-writes for a
//!   fresh append; `es.projections` shows it caught up; a handler that is not `f(es.events)` is
//!   22023, an unknown projection ES202.
//! - `a_raising_handler_parks_its_event_while_other_events_and_projections_flow`: a handler that
//!   raises for one event: retried, then parked (`es.parked_events`, `es.projections.last_error`)
//!   with the rest of that stream held back; other streams keep flowing through it, and a second
//!   projection keeps running; after the handler is fixed, `es.replay_parked` completes the model.
//! - `pause_resume_reset_and_drop`: a paused projection does not move, resume catches up, reset
//!   rebuilds from the start, drop stops it (another projection proves the worker went on).
//! - `the_worker_survives_a_crash_restart_and_a_reload`: a backend killed with SIGKILL makes the
//!   postmaster restart every process (the worker too) while the worker has a big backlog; after
//!   that, and after `pg_reload_conf()`, new events are still projected, each exactly once.
//! - `the_account_projections_equal_account_state_and_history`: `es.enable_account_projections()`
//!   over accounts opened before and after enabling; once caught up `es.account_balances` equals
//!   `es.account_state` and `es.account_transactions` equals `es.account_history`.
//!
//! Stream ids are fixed (`Uuid::from_u128`). The crash test restarts every backend of the
//! cluster: run.sh runs the suite one test at a time. Needs `shared_preload_libraries =
//! 'event_store'` (ES_PRELOAD=1): the worker is the preloaded library's.

use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{
    Client, TestDb, Uuid, append, assert_preloaded, bigints, connect_with_retry, describe, exec,
    expect_sqlstate, kill_9, position_of, texts, wait_for_projection,
};
use postgres::GenericClient;

/// `timeout_ms` of every `es.wait_for_projection` that must succeed (generous: 2 cores).
const WAIT_MS: i32 = 30_000;
/// Bound of loops that wait for the worker to do something `wait_for_projection` cannot see
/// (parking, a replay).
const SETTLE_WITHIN: Duration = Duration::from_secs(60);
/// Bound for the cluster to accept connections again after a crash restart.
const RECOVER_WITHIN: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A fixed stream id: `tag` names the test, `n` the stream.
fn stream_id(tag: u32, n: u32) -> Uuid {
    Uuid::from_u128(((0x9a0f_0000_u128 + u128::from(tag)) << 96) | u128::from(n))
}

/// Appends `count` events of type `event_type` (`{"type":..,"n":i,...extra}`) to `stream`, no
/// version check; returns the global position of the last one.
fn note(
    client: &mut impl GenericClient,
    stream: Uuid,
    event_type: &str,
    first: i64,
    count: i64,
    extra: &str,
) -> i64 {
    let events: Vec<String> = (first..first + count)
        .map(|i| format!(r#"{{"type":"{event_type}","n":{i}{extra}}}"#))
        .collect();
    let version = append(client, stream, None, &events)
        .unwrap_or_else(|e| panic!("append to {stream}: {}", describe(&e)));
    position_of(client, stream, version)
}

/// The last global position of the log.
fn log_end(client: &mut impl GenericClient) -> i64 {
    let end: Option<i64> = client
        .query_one("SELECT max(global_position) FROM es.events", &[])
        .expect("max(global_position)")
        .get(0);
    end.unwrap_or(0)
}

/// Creates the read-model table `<name>_model` and the handler `<name>_handler(es.events)` that
/// writes one row per event (the row's `seq` records the order the handler saw them in).
fn create_model_and_handler(client: &mut impl GenericClient, name: &str) {
    exec(
        client,
        &format!(
            "CREATE TABLE public.{name}_model (seq bigserial PRIMARY KEY, \
               global_position bigint NOT NULL, stream_id uuid NOT NULL, version bigint NOT NULL, \
               event_type text NOT NULL); \
             CREATE FUNCTION public.{name}_handler(e es.events) RETURNS void LANGUAGE plpgsql AS $$ \
             BEGIN \
               INSERT INTO public.{name}_model (global_position, stream_id, version, event_type) \
               VALUES (e.global_position, e.stream_id, e.version, e.event_type); \
             END $$;"
        ),
    );
}

/// A model table plus handler plus `es.create_projection(name, handler)`.
fn create_projection(client: &mut impl GenericClient, name: &str) {
    create_model_and_handler(client, name);
    exec(
        client,
        &format!("SELECT es.create_projection('{name}', 'public.{name}_handler(es.events)')"),
    );
}

/// Waits (generously) until projection `name` has reached `position`, failing with its
/// `es.projections` row otherwise.
fn caught_up(client: &mut impl GenericClient, name: &str, position: i64) {
    if !wait_for_projection(client, name, position, WAIT_MS) {
        panic!(
            "projection {name} did not reach position {position} within {WAIT_MS} ms: {:?}",
            projection_row(client, name)
        );
    }
}

/// The positions in `<name>_model`, sorted.
fn model_positions(client: &mut impl GenericClient, name: &str) -> Vec<i64> {
    bigints(
        client,
        &format!("SELECT global_position FROM public.{name}_model ORDER BY global_position"),
        &[],
    )
}

/// The positions in `<name>_model` in the order the handler wrote them.
fn model_in_handling_order(client: &mut impl GenericClient, name: &str) -> Vec<(Uuid, i64, i64)> {
    client
        .query(
            &format!(
                "SELECT stream_id, version, global_position FROM public.{name}_model ORDER BY seq"
            ),
            &[],
        )
        .unwrap_or_else(|e| panic!("reading {name}_model: {}", describe(&e)))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Global positions of `es.events` matching `filter` (an SQL condition), sorted.
fn stored(client: &mut impl GenericClient, filter: &str) -> Vec<i64> {
    bigints(
        client,
        &format!("SELECT global_position FROM es.events WHERE {filter} ORDER BY 1"),
        &[],
    )
}

/// A row of `es.projections`.
#[derive(Debug)]
struct ProjectionRow {
    state: String,
    checkpoint: i64,
    events_behind: i64,
    last_error: Option<String>,
}

/// The `es.projections` row of `name`, if any.
fn projection_row(client: &mut impl GenericClient, name: &str) -> Option<ProjectionRow> {
    client
        .query(
            "SELECT state::text, checkpoint::bigint, events_behind::bigint, last_error::text \
             FROM es.projections WHERE name = $1",
            &[&name],
        )
        .unwrap_or_else(|e| panic!("es.projections: {}", describe(&e)))
        .first()
        .map(|r| ProjectionRow {
            state: r.get(0),
            checkpoint: r.get(1),
            events_behind: r.get(2),
            last_error: r.get(3),
        })
}

/// Asserts that the handler saw each stream's versions in increasing order.
fn assert_per_stream_order(seen: &[(Uuid, i64, i64)], what: &str) {
    let mut last: std::collections::BTreeMap<Uuid, i64> = Default::default();
    for &(stream, version, position) in seen {
        let before = last.insert(stream, version).unwrap_or(0);
        assert!(
            version > before,
            "{what}: stream {stream} v{version} (position {position}) handled after v{before}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (a) the worker projects every event exactly once
// ---------------------------------------------------------------------------------------------

#[test]
fn the_worker_projects_every_event_exactly_once_in_order() {
    let db = TestDb::new("proj_basic");
    let mut c = db.connect();
    assert_preloaded(&mut c);
    // Events before the projection exists are projected too (it starts from the beginning).
    let streams: Vec<Uuid> = (0..8).map(|n| stream_id(1, n)).collect();
    for (i, &s) in streams.iter().enumerate() {
        note(&mut c, s, "Noted", 1, 5, &format!(r#","s":{i}"#));
    }
    create_projection(&mut c, "basic");
    create_model_and_handler(&mut c, "flagged");
    exec(
        &mut c,
        "SELECT es.create_projection('flagged', 'public.flagged_handler(es.events)', \
           event_types => ARRAY['Flagged'])",
    );
    for (i, &s) in streams.iter().enumerate() {
        note(
            &mut c,
            s,
            if i % 2 == 0 { "Flagged" } else { "Noted" },
            6,
            5,
            "",
        );
    }
    let last = log_end(&mut c);
    caught_up(&mut c, "basic", last);
    caught_up(&mut c, "flagged", last);

    let all = stored(&mut c, "true");
    assert_eq!(all.len(), 80, "events stored");
    assert_eq!(
        model_positions(&mut c, "basic"),
        all,
        "basic: every event exactly once"
    );
    let in_order: Vec<i64> = model_in_handling_order(&mut c, "basic")
        .iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(
        in_order, all,
        "basic: the handler saw the events in position order"
    );
    assert_eq!(
        model_positions(&mut c, "flagged"),
        stored(&mut c, "event_type = 'Flagged'"),
        "flagged: exactly the Flagged events, once each"
    );

    // Read-your-writes: the position of a fresh append is projected when the wait returns.
    let fresh = note(&mut c, streams[0], "Noted", 11, 1, "");
    caught_up(&mut c, "basic", fresh);
    assert_eq!(
        model_positions(&mut c, "basic").last(),
        Some(&fresh),
        "basic: the fresh event is in the model once wait_for_projection returned true"
    );

    let row = projection_row(&mut c, "basic").expect("es.projections row of basic");
    assert_eq!(
        (
            row.state.as_str(),
            row.checkpoint,
            row.events_behind,
            row.last_error.as_deref()
        ),
        ("running", fresh, 0, None),
        "es.projections of a caught-up projection: {row:?}"
    );
    let subscription_rows: i64 = c
        .query_one(
            "SELECT count(*) FROM es.subscriptions WHERE name = 'basic'",
            &[],
        )
        .expect("es.subscriptions")
        .get(0);
    assert_eq!(
        subscription_rows, 1,
        "a projection registers a subscription of its name"
    );

    // Bad handlers: 22023; unknown projection: ES202.
    exec(
        &mut c,
        "CREATE FUNCTION public.not_events(i int) RETURNS void LANGUAGE sql AS 'SELECT'; \
         CREATE FUNCTION public.two_args(e es.events, i int) RETURNS void LANGUAGE sql AS 'SELECT'",
    );
    for handler in ["public.not_events(int)", "public.two_args(es.events, int)"] {
        expect_sqlstate(
            &mut c,
            "SELECT es.create_projection('bad', $1::text::regprocedure)",
            &[&handler],
            "22023",
        );
    }
    assert!(
        projection_row(&mut c, "bad").is_none(),
        "a refused projection must not exist"
    );
    for sql in [
        "SELECT es.pause_projection('nope')",
        "SELECT es.resume_projection('nope')",
        "SELECT es.reset_projection('nope')",
        "SELECT es.drop_projection('nope')",
        "SELECT es.wait_for_projection('nope', 1, 10)",
    ] {
        expect_sqlstate(&mut c, sql, &[], "ES202");
    }
}

// ---------------------------------------------------------------------------------------------
// (b) a raising handler: retried, parked; the rest flows
// ---------------------------------------------------------------------------------------------

#[test]
fn a_raising_handler_parks_its_event_while_other_events_and_projections_flow() {
    let db = TestDb::new("proj_failing");
    let mut c = db.connect();
    assert_preloaded(&mut c);
    exec(
        &mut c,
        "CREATE TABLE public.fragile_model (seq bigserial PRIMARY KEY, \
           global_position bigint NOT NULL, stream_id uuid NOT NULL, version bigint NOT NULL); \
         CREATE TABLE public.fragile_attempts (global_position bigint NOT NULL); \
         CREATE FUNCTION public.fragile_handler(e es.events) RETURNS void LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF e.data->>'poison' = 'yes' THEN \
             RAISE EXCEPTION 'poison event % of stream %', e.version, e.stream_id; \
           END IF; \
           INSERT INTO public.fragile_model (global_position, stream_id, version) \
           VALUES (e.global_position, e.stream_id, e.version); \
         END $$; \
         SELECT es.create_projection('fragile', 'public.fragile_handler(es.events)');",
    );
    create_projection(&mut c, "steady");
    let (s1, s2, s3) = (stream_id(2, 1), stream_id(2, 2), stream_id(2, 3));
    let p1 = note(&mut c, s1, "Noted", 1, 1, "");
    let p2 = note(&mut c, s2, "Noted", 1, 1, "");
    let poison = note(&mut c, s1, "Noted", 2, 1, r#","poison":"yes""#);
    let p4 = note(&mut c, s2, "Noted", 2, 1, "");
    let p5 = note(&mut c, s1, "Noted", 3, 1, "");
    let p6 = note(&mut c, s2, "Noted", 3, 1, "");

    // The steady projection is not held up by the other one's failures.
    caught_up(&mut c, "steady", p6);
    assert_eq!(
        model_positions(&mut c, "steady"),
        vec![p1, p2, poison, p4, p5, p6]
    );

    // The poison event is retried, then parked with the handler's error.
    let deadline = Instant::now() + SETTLE_WITHIN;
    let parked = loop {
        let rows = c
            .query(
                "SELECT global_position, stream_id, attempts::bigint, error::text \
                 FROM es.parked_events WHERE subscription = 'fragile' ORDER BY global_position",
                &[],
            )
            .unwrap_or_else(|e| panic!("es.parked_events: {}", describe(&e)));
        if !rows.is_empty() {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the poison event was not parked within {SETTLE_WITHIN:?}: {:?}",
            projection_row(&mut c, "fragile")
        );
        thread::sleep(Duration::from_millis(50));
    };
    let (position, stream, attempts, error): (i64, Uuid, i64, Option<String>) = (
        parked[0].get(0),
        parked[0].get(1),
        parked[0].get(2),
        parked[0].get(3),
    );
    assert_eq!(
        (position, stream),
        (poison, s1),
        "the parked event is the poison one"
    );
    assert!(
        attempts >= 2,
        "the poison event was parked after {attempts} attempt(s), not retried"
    );
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("poison event 2 of stream")),
        "es.parked_events.error must carry the handler's error: {error:?}"
    );
    let row = projection_row(&mut c, "fragile").expect("es.projections row of fragile");
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("poison event 2 of stream")),
        "es.projections.last_error must carry the handler's error: {row:?}"
    );
    assert_eq!(
        row.state, "failed",
        "a projection with a parked event: {row:?}"
    );
    eprintln!("fragile after parking: {row:?}, attempts {attempts}");

    // The other stream flows through the failing projection; s1 is held back behind the poison.
    caught_up(&mut c, "fragile", p6);
    let p7 = note(&mut c, s3, "Noted", 1, 1, "");
    let p8 = note(&mut c, s1, "Noted", 4, 1, "");
    let p9 = note(&mut c, s2, "Noted", 4, 1, "");
    caught_up(&mut c, "fragile", p9);
    caught_up(&mut c, "steady", p9);
    assert_eq!(
        model_positions(&mut c, "fragile"),
        vec![p1, p2, p4, p6, p7, p9],
        "fragile: every event except the poison one and the later ones of its stream"
    );
    assert_eq!(
        model_positions(&mut c, "steady"),
        vec![p1, p2, poison, p4, p5, p6, p7, p8, p9],
        "steady: every event"
    );
    let held = bigints(
        &mut c,
        "SELECT global_position FROM es.parked_events WHERE subscription = 'fragile' ORDER BY 1",
        &[],
    );
    assert_eq!(
        held,
        vec![poison, p5, p8],
        "s1's later events are parked behind the poison one"
    );

    // Fixed handler + replay: the model completes, s1 in order.
    exec(
        &mut c,
        "CREATE OR REPLACE FUNCTION public.fragile_handler(e es.events) RETURNS void \
         LANGUAGE plpgsql AS $$ \
         BEGIN \
           INSERT INTO public.fragile_model (global_position, stream_id, version) \
           VALUES (e.global_position, e.stream_id, e.version); \
         END $$",
    );
    let replayed: i32 = c
        .query_one("SELECT es.replay_parked('fragile')", &[])
        .unwrap_or_else(|e| panic!("es.replay_parked: {}", describe(&e)))
        .get(0);
    assert_eq!(replayed, 3, "es.replay_parked('fragile')");
    let all = vec![p1, p2, poison, p4, p5, p6, p7, p8, p9];
    let deadline = Instant::now() + SETTLE_WITHIN;
    while model_positions(&mut c, "fragile").len() < all.len() {
        assert!(
            Instant::now() < deadline,
            "the replayed events were not projected within {SETTLE_WITHIN:?}: model {:?}, {:?}",
            model_positions(&mut c, "fragile"),
            projection_row(&mut c, "fragile")
        );
        thread::sleep(Duration::from_millis(50));
    }
    // One more event through the whole pipeline, so nothing is still in flight.
    let p10 = note(&mut c, s1, "Noted", 5, 1, "");
    caught_up(&mut c, "fragile", p10);
    let mut all = all;
    all.push(p10);
    assert_eq!(
        model_positions(&mut c, "fragile"),
        all,
        "fragile: every event once after replay"
    );
    assert_per_stream_order(&model_in_handling_order(&mut c, "fragile"), "fragile");
    let still: i64 = c
        .query_one(
            "SELECT count(*) FROM es.parked_events WHERE subscription = 'fragile'",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(still, 0, "nothing stays parked after the replay");
    let row = projection_row(&mut c, "fragile").expect("fragile");
    assert_eq!(row.state, "running", "fragile after the replay: {row:?}");
}

// ---------------------------------------------------------------------------------------------
// (c) pause, resume, reset, drop
// ---------------------------------------------------------------------------------------------

#[test]
fn pause_resume_reset_and_drop() {
    let db = TestDb::new("proj_lifecycle");
    let mut c = db.connect();
    assert_preloaded(&mut c);
    create_projection(&mut c, "pr");
    create_projection(&mut c, "witness");
    let s = stream_id(3, 1);
    let first = note(&mut c, s, "Noted", 1, 10, "");
    caught_up(&mut c, "pr", first);

    // Paused: nothing moves.
    exec(&mut c, "SELECT es.pause_projection('pr')");
    let row = projection_row(&mut c, "pr").expect("pr");
    assert_eq!(row.state, "paused", "after pause: {row:?}");
    let second = note(&mut c, s, "Noted", 11, 10, "");
    caught_up(&mut c, "witness", second);
    assert!(
        !wait_for_projection(&mut c, "pr", second, 1_500),
        "a paused projection must not reach new events"
    );
    assert_eq!(
        model_positions(&mut c, "pr"),
        stored(&mut c, &format!("global_position <= {first}"))
    );
    let row = projection_row(&mut c, "pr").expect("pr");
    assert_eq!(
        (row.checkpoint, row.events_behind),
        (first, 10),
        "a paused projection's checkpoint and lag: {row:?}"
    );

    // Resumed: catches up.
    exec(&mut c, "SELECT es.resume_projection('pr')");
    caught_up(&mut c, "pr", second);
    assert_eq!(model_positions(&mut c, "pr"), stored(&mut c, "true"));
    assert_eq!(projection_row(&mut c, "pr").expect("pr").state, "running");

    // Reset (while paused, after emptying the model): a rebuild from the start.
    exec(
        &mut c,
        "SELECT es.pause_projection('pr'); TRUNCATE public.pr_model",
    );
    exec(&mut c, "SELECT es.reset_projection('pr')");
    assert_eq!(
        projection_row(&mut c, "pr").expect("pr").checkpoint,
        0,
        "reset puts the checkpoint back to the start"
    );
    exec(&mut c, "SELECT es.resume_projection('pr')");
    caught_up(&mut c, "pr", second);
    assert_eq!(
        model_positions(&mut c, "pr"),
        stored(&mut c, "true"),
        "rebuilt, once each"
    );

    // Dropped: gone, and it projects nothing more (the witness shows the worker went on).
    exec(&mut c, "SELECT es.drop_projection('pr')");
    assert!(
        projection_row(&mut c, "pr").is_none(),
        "es.projections after drop"
    );
    let subs: i64 = c
        .query_one(
            "SELECT count(*) FROM es.subscriptions WHERE name = 'pr'",
            &[],
        )
        .expect("es.subscriptions")
        .get(0);
    assert_eq!(subs, 0, "the projection's subscription is dropped with it");
    let before = model_positions(&mut c, "pr");
    let third = note(&mut c, s, "Noted", 21, 5, "");
    caught_up(&mut c, "witness", third);
    assert_eq!(
        model_positions(&mut c, "pr"),
        before,
        "a dropped projection projects nothing"
    );
    assert_eq!(model_positions(&mut c, "witness"), stored(&mut c, "true"));
    expect_sqlstate(&mut c, "SELECT es.drop_projection('pr')", &[], "ES202");
    expect_sqlstate(
        &mut c,
        "SELECT es.wait_for_projection('pr', 1, 10)",
        &[],
        "ES202",
    );
}

// ---------------------------------------------------------------------------------------------
// (d) crash restart and reload
// ---------------------------------------------------------------------------------------------

/// Events in the backlog the worker is busy with when the cluster crashes.
const BACKLOG: i32 = 3_000;

#[test]
fn the_worker_survives_a_crash_restart_and_a_reload() {
    let db = TestDb::new("proj_crash");
    let mut c = db.connect();
    assert_preloaded(&mut c);
    create_projection(&mut c, "survivor");
    let s = stream_id(4, 1);
    let first = note(&mut c, s, "Noted", 1, 20, "");
    caught_up(&mut c, "survivor", first);

    // A backlog the handler works through slowly (1 ms per event, batches of 100 per
    // transaction), then a SIGKILL of an idle backend once the worker has committed part of it:
    // the postmaster restarts every process, the worker included, in the middle of a batch.
    exec(
        &mut c,
        "CREATE OR REPLACE FUNCTION public.survivor_handler(e es.events) RETURNS void \
         LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF e.event_type = 'Bulk' THEN PERFORM pg_sleep(0.001); END IF; \
           INSERT INTO public.survivor_model (global_position, stream_id, version, event_type) \
           VALUES (e.global_position, e.stream_id, e.version, e.event_type); \
         END $$",
    );
    let mut victim = db.connect();
    let victim_pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pg_backend_pid")
        .get(0);
    c.query_one(
        "SELECT es.append_events($1, NULL, (SELECT array_agg(jsonb_build_object('type', 'Bulk', \
           'i', g)) FROM generate_series(1, $2) g))",
        &[&stream_id(4, 2), &BACKLOG],
    )
    .unwrap_or_else(|e| panic!("backlog append: {}", describe(&e)));
    let total = 20 + i64::from(BACKLOG);
    let deadline = Instant::now() + SETTLE_WITHIN;
    let projected_before = loop {
        let n: i64 = c
            .query_one("SELECT count(*) FROM public.survivor_model", &[])
            .expect("count")
            .get(0);
        if n > 20 {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not start on the backlog within {SETTLE_WITHIN:?}"
        );
        thread::sleep(Duration::from_millis(5));
    };
    kill_9(victim_pid);
    let deadline = Instant::now() + RECOVER_WITHIN;
    while c.simple_query("SELECT 1").is_ok() {
        assert!(
            Instant::now() < deadline,
            "the crash restart did not end the other sessions"
        );
        thread::sleep(Duration::from_millis(20));
    }
    drop(victim);
    let mut c = connect_with_retry(db.name(), RECOVER_WITHIN)
        .unwrap_or_else(|e| panic!("the cluster did not come back: {}", describe(&e)));
    eprintln!(
        "crash: {projected_before} of {total} events were projected when the backend was killed"
    );

    let after_crash = note(&mut c, s, "Noted", 21, 10, "");
    caught_up(&mut c, "survivor", after_crash);
    assert_eq!(
        model_positions(&mut c, "survivor"),
        stored(&mut c, "true"),
        "after the crash restart every event is projected exactly once"
    );

    // A configuration reload (pg_ctl reload) must not stop the worker either.
    let reloaded: bool = c
        .query_one("SELECT pg_reload_conf()", &[])
        .expect("pg_reload_conf")
        .get(0);
    assert!(reloaded, "pg_reload_conf()");
    thread::sleep(Duration::from_millis(500));
    let after_reload = note(&mut c, s, "Noted", 31, 10, "");
    caught_up(&mut c, "survivor", after_reload);
    assert_eq!(
        model_positions(&mut c, "survivor"),
        stored(&mut c, "true"),
        "after the reload every event is projected exactly once"
    );
    let in_order: Vec<i64> = model_in_handling_order(&mut c, "survivor")
        .iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(
        in_order,
        stored(&mut c, "true"),
        "handled in position order across the crash"
    );
    let row = projection_row(&mut c, "survivor").expect("survivor");
    assert_eq!(
        (row.state.as_str(), row.events_behind),
        ("running", 0),
        "{row:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// (e) the account projections
// ---------------------------------------------------------------------------------------------

#[test]
fn the_account_projections_equal_account_state_and_history() {
    let db = TestDb::new("proj_accounts");
    let mut c = db.connect();
    assert_preloaded(&mut c);
    let open = |c: &mut Client, holder: &str, initial: i64| -> Uuid {
        c.query_one("SELECT es.open_account($1, $2)", &[&holder, &initial])
            .unwrap_or_else(|e| panic!("open_account({holder}): {}", describe(&e)))
            .get(0)
    };
    let money = |c: &mut Client, f: &str, account: Uuid, amount: i64, description: &str| {
        c.query_one(
            &format!("SELECT es.{f}($1, $2, $3)"),
            &[&account, &amount, &description],
        )
        .unwrap_or_else(|e| panic!("{f}({account}, {amount}): {}", describe(&e)));
    };

    // Before enabling: history the projections must pick up.
    let ada = open(&mut c, "Ada", 10_000);
    money(&mut c, "deposit", ada, 2_500, "salary");
    money(&mut c, "withdraw", ada, 700, "groceries");
    note(&mut c, stream_id(5, 1), "Noted", 1, 3, ""); // not an account stream
    exec(&mut c, "SELECT es.enable_account_projections()");

    // After enabling.
    let bob = open(&mut c, "Bob", 0);
    money(&mut c, "deposit", bob, 1_000, "gift");
    money(&mut c, "withdraw", bob, 1_000, "rent");
    money(&mut c, "deposit", bob, 42, "");
    let cy = open(&mut c, "Cy", 500);
    exec(
        &mut c,
        &format!(
            "SELECT es.freeze_account('{cy}', 'audit'); SELECT es.close_account('{cy}', 'moved')"
        ),
    );
    money(&mut c, "deposit", ada, 1, "interest");
    for i in 0..20 {
        money(&mut c, "deposit", bob, 10 + i, &format!("d{i}"));
    }

    let last = log_end(&mut c);
    caught_up(&mut c, "account_balances", last);
    caught_up(&mut c, "account_transactions", last);

    let balances = texts(
        &mut c,
        "SELECT to_jsonb(x)::text FROM (SELECT account_id, holder_name::text, \
           balance_cents::bigint, status::text, version::bigint \
         FROM es.account_balances ORDER BY account_id) x",
    );
    let states = texts(
        &mut c,
        "SELECT to_jsonb(x)::text FROM (SELECT s.stream_id AS account_id, \
           a->>'holder_name' AS holder_name, (a->>'balance_cents')::bigint AS balance_cents, \
           a->>'status' AS status, (a->>'version')::bigint AS version \
         FROM es.streams s CROSS JOIN LATERAL es.account_state(s.stream_id) AS a \
         WHERE s.stream_type = 'account' ORDER BY s.stream_id) x",
    );
    assert_eq!(states.len(), 3, "three accounts");
    assert_eq!(balances, states, "es.account_balances vs es.account_state");

    let transactions = texts(
        &mut c,
        "SELECT to_jsonb(x)::text FROM (SELECT account_id, version::bigint, event_type::text, \
           amount_cents::bigint, balance_cents::bigint, description::text, occurred_at \
         FROM es.account_transactions ORDER BY account_id, version) x",
    );
    let history = texts(
        &mut c,
        "SELECT to_jsonb(x)::text FROM (SELECT s.stream_id AS account_id, h.version, \
           h.event_type, h.amount_cents, h.balance_cents, h.description, h.occurred_at \
         FROM es.streams s CROSS JOIN LATERAL es.account_history(s.stream_id) AS h \
         WHERE s.stream_type = 'account' ORDER BY s.stream_id, h.version) x",
    );
    assert_eq!(
        history.len(),
        4 + 24 + 3,
        "account events (Ada 4, Bob 24, Cy 3)"
    );
    assert_eq!(
        transactions, history,
        "es.account_transactions vs es.account_history"
    );
    for name in ["account_balances", "account_transactions"] {
        let row =
            projection_row(&mut c, name).unwrap_or_else(|| panic!("{name} in es.projections"));
        assert_eq!(
            (row.state.as_str(), row.checkpoint, row.events_behind),
            ("running", last, 0),
            "{name}: {row:?}"
        );
    }
}
