//! A projection's handler runs with its creator's rights and nothing more (docs/security.md).
//!
//! The database worker is connected as the bootstrap superuser; it runs each handler as the role
//! that called `es.create_projection`, the way REFRESH MATERIALIZED VIEW runs a view owner's
//! code: the current user switched to the creator inside a security-restricted operation, with
//! the handler's settings rolled back afterwards. Each test creates its own roles (dropped when
//! it ends) and a creator that has no privilege beyond `USAGE` on schema `es`, `EXECUTE` on the
//! store's functions and a schema of its own, as in the reproduction of the bug:
//!
//! - `the_handler_runs_as_its_creator_without_reading_es_events`: the handler sees
//!   `current_user` = the creator and gets the event although the creator cannot read
//!   `es.events`; what a superuser may do (ALTER ROLE … SUPERUSER) fails in it.
//! - one test per escape that worked before (each made the creator a superuser): `RESET ROLE`,
//!   `SET ROLE <superuser>`, `set_config('role', 'none', false)`, `SET SESSION AUTHORIZATION
//!   DEFAULT`; and `RESET ROLE` / `SET ROLE` from inside a `SECURITY DEFINER` function the
//!   creator owns. Each fails: the event is retried, parked, the error is in
//!   `es.projections.last_error`, and the creator is still not a superuser.
//! - `settings_a_handler_changes_do_not_leak`: `SET search_path` / `SET work_mem` (not LOCAL) in
//!   a handler are gone at its next event and in the next projection's handler.
//! - `a_revoked_handler_parks_until_granted_again`: REVOKE EXECUTE on the handler from its
//!   creator: the next event fails with PostgreSQL's permission error and parks; GRANT again
//!   and `es.replay_parked` resume it.
//! - `a_dropped_creator_parks_each_event`: DROP ROLE of the creator succeeds (the store records
//!   no dependency); each event then fails with an error naming the missing role and parks.
//! - `the_creator_is_the_caller_of_create_projection`: a projection created from inside a
//!   handler, or from a `SECURITY DEFINER` function another role owns, runs as that function's
//!   role (the current user of the call), never as the session's user.
//!
//! - `the_creator_is_dumped_by_name`: `pg_dump` / `pg_restore` keep the creator (a `regrole`:
//!   written by name, read back as the role's OID).
//!
//! Needs `shared_preload_libraries = 'event_store'` (ES_PRELOAD=1). Stream ids are fixed.

use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{
    Client, NoTls, TestDb, Uuid, admin, append, assert_preloaded, config, describe,
    dump_and_restore, exec, position_of, wait_for_projection,
};

/// `timeout_ms` of every `es.wait_for_projection` that must succeed (generous: 2 cores).
const WAIT_MS: i32 = 30_000;
/// Bound of the loops that wait for the worker to park an event.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

/// A role of the cluster, created for one test and dropped (with what it owns in the test's
/// database already gone) when the value goes out of scope. Declare it before the `TestDb`, so
/// the database is dropped first.
struct Role {
    name: String,
}

impl Role {
    fn new(name: &str) -> Role {
        let mut admin = admin();
        admin
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN"
            ))
            .unwrap_or_else(|e| panic!("CREATE ROLE {name}: {}", describe(&e)));
        Role {
            name: name.to_owned(),
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if let Err(e) = admin().batch_execute(&format!("DROP ROLE IF EXISTS {}", self.name)) {
            eprintln!(
                "warning: could not drop role {}: {}",
                self.name,
                describe(&e)
            );
        }
    }
}

/// A connection to `db` as `role`.
fn connect_as(db: &TestDb, role: &str) -> Client {
    config(db.name())
        .user(role)
        .connect(NoTls)
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to {} as {role}: {}",
                db.name(),
                describe(&e)
            )
        })
}

/// The creator of the reproduction: `USAGE` on schema `es`, `EXECUTE` on every function of the
/// store, a schema of its own with a table `<role>.seen` its handlers write to. Nothing else.
fn unprivileged_creator(c: &mut Client, role: &str) {
    exec(
        c,
        &format!(
            "GRANT USAGE ON SCHEMA es TO {role};
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA es TO {role};
             CREATE SCHEMA {role} AUTHORIZATION {role};
             CREATE TABLE {role}.seen (global_position bigint, who text, note text);
             ALTER TABLE {role}.seen OWNER TO {role};"
        ),
    );
}

/// A fixed stream id of test `tag`.
fn stream_id(tag: u32) -> Uuid {
    Uuid::from_u128((0x5ec0_0000_u128 + u128::from(tag)) << 96)
}

/// Appends one event of type `Noted` to the test's stream (as the administrator: who appends
/// does not matter, and the creators cannot read the log); returns its global position.
fn note(c: &mut Client, tag: u32) -> i64 {
    let stream = stream_id(tag);
    let version = append(c, stream, None, &[r#"{"type":"Noted"}"#.to_owned()])
        .unwrap_or_else(|e| panic!("append: {}", describe(&e)));
    position_of(c, stream, version)
}

/// Waits until the event at `position` is parked by projection `name`; returns the projection's
/// `(state, last_error)` then.
fn parked(c: &mut Client, name: &str, position: i64) -> (String, String) {
    parked_unless(c, name, position, |_| None)
}

/// [`parked`], failing at once when `broken` reports something (an escape that succeeded).
fn parked_unless(
    c: &mut Client,
    name: &str,
    position: i64,
    mut broken: impl FnMut(&mut Client) -> Option<String>,
) -> (String, String) {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        if let Some(what) = broken(c) {
            panic!("projection {name}, position {position}: {what}");
        }
        let rows = c
            .query(
                "SELECT k.attempts, p.state::text, p.last_error::text
                   FROM es.parked_events k JOIN es.projections p ON p.name = k.subscription
                  WHERE k.subscription = $1 AND k.global_position = $2 AND NOT k.replay",
                &[&name, &position],
            )
            .unwrap_or_else(|e| panic!("es.parked_events: {}", describe(&e)));
        if let Some(r) = rows.first() {
            let attempts: i32 = r.get(0);
            assert!(
                attempts > 1,
                "parked without a retry: {attempts} attempt(s)"
            );
            return (r.get(1), r.get::<_, Option<String>>(2).unwrap_or_default());
        }
        assert!(
            Instant::now() < deadline,
            "projection {name} did not park position {position} within {SETTLE_WITHIN:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn is_superuser(c: &mut Client, role: &str) -> bool {
    c.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .unwrap_or_else(|e| panic!("pg_roles: {}", describe(&e)))
        .get(0)
}

fn seen(c: &mut Client, role: &str) -> Vec<(i64, String, String)> {
    c.query(
        &format!(
            "SELECT global_position, who, note FROM {role}.seen ORDER BY global_position, note"
        ),
        &[],
    )
    .unwrap_or_else(|e| panic!("{role}.seen: {}", describe(&e)))
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// One escape attempt: the creator's handler runs `escape` (PL/pgSQL statements), then records
/// `current_user` and tries to make its creator a superuser. The escape must fail: nothing
/// recorded, the event retried and parked with the error, the creator no superuser.
fn escape_fails(tag: u32, role: &str, escape: &str, expected_error: &str) {
    let role = Role::new(role);
    let role = role.name.as_str();
    let db = TestDb::new(&format!("sec_{tag}"));
    let mut c = db.connect();
    assert_preloaded(&mut c);
    unprivileged_creator(&mut c, role);
    let mut alice = connect_as(&db, role);
    exec(
        &mut alice,
        &format!(
            "CREATE FUNCTION {role}.h(e es.events) RETURNS void LANGUAGE plpgsql AS $h$
             BEGIN
               {escape}
               INSERT INTO {role}.seen VALUES (e.global_position, current_user, 'after the escape');
               EXECUTE 'ALTER ROLE {role} SUPERUSER';
             END $h$;
             SELECT es.create_projection('escape', '{role}.h(es.events)'::regprocedure);"
        ),
    );
    let position = note(&mut c, tag);
    let (state, error) = parked_unless(&mut c, "escape", position, |c| {
        if is_superuser(c, role) {
            Some(format!("{role} became a superuser"))
        } else if !seen(c, role).is_empty() {
            Some("the handler went past the escape".to_owned())
        } else {
            None
        }
    });
    assert_eq!(state, "failed");
    assert!(
        error.contains(expected_error),
        "last_error {error:?} should contain {expected_error:?}"
    );
    assert!(!is_superuser(&mut c, role), "{role} became a superuser");
    assert!(
        seen(&mut c, role).is_empty(),
        "the handler went past the escape"
    );
}

// ---------------------------------------------------------------------------------------------

#[test]
fn the_handler_runs_as_its_creator_without_reading_es_events() {
    let role = Role::new("es_sec_alice_plain");
    let role = role.name.as_str();
    let db = TestDb::new("sec_plain");
    let mut c = db.connect();
    assert_preloaded(&mut c);
    unprivileged_creator(&mut c, role);
    exec(
        &mut c,
        &format!("REVOKE ALL ON ALL TABLES IN SCHEMA es FROM {role}"),
    );
    let mut alice = connect_as(&db, role);
    // the creator cannot read the log itself
    let err = alice
        .query("SELECT count(*) FROM es.events", &[])
        .expect_err("the creator must not read es.events");
    assert_eq!(err.code().map(|s| s.code()), Some("42501"));
    exec(
        &mut alice,
        &format!(
            "CREATE FUNCTION {role}.h(e es.events) RETURNS void LANGUAGE plpgsql AS $h$
             BEGIN
               INSERT INTO {role}.seen VALUES (e.global_position, current_user, e.event_type);
               IF e.event_type = 'Escalate' THEN
                 EXECUTE 'ALTER ROLE {role} SUPERUSER';
               END IF;
             END $h$;
             SELECT es.create_projection('plain', '{role}.h(es.events)'::regprocedure);"
        ),
    );
    let first = note(&mut c, 1);
    assert!(
        wait_for_projection(&mut c, "plain", first, WAIT_MS),
        "the handler did not run"
    );
    assert_eq!(
        seen(&mut c, role),
        vec![(first, role.to_owned(), "Noted".to_owned())],
        "the handler runs as its creator and gets the event"
    );
    // what only a superuser may do fails in the handler
    let version = append(
        &mut c,
        stream_id(1),
        None,
        &[r#"{"type":"Escalate"}"#.to_owned()],
    )
    .unwrap_or_else(|e| panic!("append: {}", describe(&e)));
    let escalate = position_of(&mut c, stream_id(1), version);
    let (_, error) = parked(&mut c, "plain", escalate);
    assert!(
        error.contains("permission denied") || error.contains("must be superuser"),
        "{error:?}"
    );
    assert!(!is_superuser(&mut c, role));
    assert_eq!(
        seen(&mut c, role).len(),
        1,
        "the failed event's row is rolled back"
    );
}

#[test]
fn reset_role_in_a_handler_fails() {
    escape_fails(
        2,
        "es_sec_alice_reset",
        "RESET ROLE;",
        "cannot set parameter \"role\"",
    );
}

#[test]
fn set_role_to_a_superuser_in_a_handler_fails() {
    escape_fails(
        3,
        "es_sec_alice_setrole",
        "SET ROLE postgres;",
        "cannot set parameter \"role\"",
    );
}

#[test]
fn set_config_role_none_in_a_handler_fails() {
    escape_fails(
        4,
        "es_sec_alice_setconfig",
        "PERFORM set_config('role', 'none', false);",
        "cannot set parameter \"role\"",
    );
}

#[test]
fn set_session_authorization_default_in_a_handler_fails() {
    escape_fails(
        5,
        "es_sec_alice_sessauth",
        "SET SESSION AUTHORIZATION DEFAULT;",
        "cannot set parameter \"session_authorization\"",
    );
}

#[test]
fn reset_role_in_a_security_definer_function_of_the_creator_fails() {
    let role = "es_sec_alice_secdef";
    // the handler (re)creates a SECURITY DEFINER function of its creator and calls it: a
    // function's own user switch must not open a way out of the restricted operation. (This
    // case was refused before the fix too: PostgreSQL refuses role changes inside any SECURITY
    // DEFINER function. It guards the restricted operation's flags staying set inside one.)
    escape_fails(
        6,
        role,
        &format!(
            "CREATE OR REPLACE FUNCTION {role}.up() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
               AS $u$ BEGIN RESET ROLE; SET ROLE postgres; END $u$;
             PERFORM {role}.up();"
        ),
        "cannot set parameter \"role\"",
    );
}

#[test]
fn settings_a_handler_changes_do_not_leak() {
    let role = Role::new("es_sec_alice_gucs");
    let role = role.name.as_str();
    let db = TestDb::new("sec_gucs");
    let mut c = db.connect();
    assert_preloaded(&mut c);
    unprivileged_creator(&mut c, role);
    let defaults: (String, String) = {
        let r = c
            .query_one(
                "SELECT current_setting('work_mem'), current_setting('search_path')",
                &[],
            )
            .expect("defaults");
        (r.get(0), r.get(1))
    };
    let mut alice = connect_as(&db, role);
    // `a_setter` runs before `b_observer` in each round (the worker goes by name); each records
    // what it sees, then changes both settings (not LOCAL)
    exec(
        &mut alice,
        &format!(
            "CREATE FUNCTION {role}.setter(e es.events) RETURNS void LANGUAGE plpgsql AS $h$
             BEGIN
               INSERT INTO {role}.seen VALUES (e.global_position, 'a_setter',
                 current_setting('work_mem') || ' ' || current_setting('search_path'));
               SET work_mem = '77MB';
               SET search_path = {role}, pg_catalog;
             END $h$;
             CREATE FUNCTION {role}.observer(e es.events) RETURNS void LANGUAGE plpgsql AS $h$
             BEGIN
               INSERT INTO {role}.seen VALUES (e.global_position, 'b_observer',
                 current_setting('work_mem') || ' ' || current_setting('search_path'));
             END $h$;
             SELECT es.create_projection('a_setter', '{role}.setter(es.events)'::regprocedure);
             SELECT es.create_projection('b_observer', '{role}.observer(es.events)'::regprocedure);"
        ),
    );
    let first = note(&mut c, 7);
    let second = note(&mut c, 7);
    assert!(wait_for_projection(&mut c, "a_setter", second, WAIT_MS));
    assert!(wait_for_projection(&mut c, "b_observer", second, WAIT_MS));
    let expected = format!("{} {}", defaults.0, defaults.1);
    let rows = seen(&mut c, role);
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (position, who, settings) in rows {
        assert!(position == first || position == second);
        assert_eq!(
            settings, expected,
            "{who} at position {position} saw a setting a handler left behind"
        );
    }
}

#[test]
fn a_revoked_handler_parks_until_granted_again() {
    let role = Role::new("es_sec_alice_revoke");
    let role = role.name.as_str();
    let db = TestDb::new("sec_revoke");
    let mut c = db.connect();
    assert_preloaded(&mut c);
    unprivileged_creator(&mut c, role);
    // the handler belongs to the administrator, who lets the creator run it
    exec(
        &mut c,
        &format!(
            "CREATE FUNCTION public.granted(e es.events) RETURNS void LANGUAGE plpgsql AS $h$
             BEGIN
               INSERT INTO {role}.seen VALUES (e.global_position, current_user, 'granted');
             END $h$;
             REVOKE ALL ON FUNCTION public.granted(es.events) FROM PUBLIC;
             GRANT EXECUTE ON FUNCTION public.granted(es.events) TO {role};"
        ),
    );
    let mut alice = connect_as(&db, role);
    exec(
        &mut alice,
        "SELECT es.create_projection('granted', 'public.granted(es.events)'::regprocedure)",
    );
    let first = note(&mut c, 8);
    assert!(wait_for_projection(&mut c, "granted", first, WAIT_MS));
    exec(
        &mut c,
        &format!("REVOKE EXECUTE ON FUNCTION public.granted(es.events) FROM {role}"),
    );
    let second = note(&mut c, 8);
    let (state, error) = parked(&mut c, "granted", second);
    assert_eq!(state, "failed");
    assert!(
        error.contains("permission denied for function granted"),
        "{error:?}"
    );
    exec(
        &mut c,
        &format!(
            "GRANT EXECUTE ON FUNCTION public.granted(es.events) TO {role};
             SELECT es.replay_parked('granted');"
        ),
    );
    let third = note(&mut c, 8);
    assert!(
        wait_for_projection(&mut c, "granted", third, WAIT_MS),
        "resumed after GRANT"
    );
    let deadline = Instant::now() + SETTLE_WITHIN;
    while seen(&mut c, role).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the parked event was not replayed"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let rows = seen(&mut c, role);
    let positions: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(positions, vec![first, second, third]);
    assert!(rows.iter().all(|r| r.1 == role));
}

#[test]
fn a_dropped_creator_parks_each_event() {
    let role = Role::new("es_sec_alice_dropped");
    let role = role.name.as_str();
    let db = TestDb::new("sec_dropped");
    let mut c = db.connect();
    assert_preloaded(&mut c);
    exec(
        &mut c,
        &format!(
            "GRANT USAGE ON SCHEMA es TO {role};
             GRANT EXECUTE ON FUNCTION es.create_projection(text, regprocedure, text[], integer) TO {role};
             CREATE TABLE public.dropped_seen (global_position bigint, who text);
             GRANT INSERT ON public.dropped_seen TO {role};
             CREATE FUNCTION public.dropped_h(e es.events) RETURNS void LANGUAGE sql AS $h$
               INSERT INTO public.dropped_seen VALUES (e.global_position, current_user)
             $h$;"
        ),
    );
    let mut alice = connect_as(&db, role);
    exec(
        &mut alice,
        "SELECT es.create_projection('orphan', 'public.dropped_h(es.events)'::regprocedure)",
    );
    drop(alice);
    let first = note(&mut c, 9);
    assert!(wait_for_projection(&mut c, "orphan", first, WAIT_MS));
    // the creator owns nothing: DROP ROLE goes through (privileges first, as DROP OWNED does)
    exec(&mut c, &format!("DROP OWNED BY {role}; DROP ROLE {role};"));
    let second = note(&mut c, 9);
    let (state, error) = parked(&mut c, "orphan", second);
    assert_eq!(state, "failed");
    assert!(
        error.contains("that created projection orphan does not exist"),
        "{error:?}"
    );
    let who: Vec<String> = c
        .query("SELECT who FROM public.dropped_seen", &[])
        .expect("dropped_seen")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(who, vec![role.to_owned()], "nothing ran after the drop");
}

#[test]
fn the_creator_is_the_caller_of_create_projection() {
    let alice = Role::new("es_sec_alice_creator");
    let bob = Role::new("es_sec_bob_creator");
    let (alice, bob) = (alice.name.as_str(), bob.name.as_str());
    let db = TestDb::new("sec_creator");
    let mut c = db.connect();
    assert_preloaded(&mut c);
    unprivileged_creator(&mut c, alice);
    unprivileged_creator(&mut c, bob);
    // alice's handler creates a projection (the worker's session user is a superuser)
    let mut a = connect_as(&db, alice);
    exec(
        &mut a,
        &format!(
            "CREATE FUNCTION {alice}.noop(e es.events) RETURNS void LANGUAGE sql AS 'SELECT';
             CREATE FUNCTION {alice}.spawner(e es.events) RETURNS void LANGUAGE plpgsql AS $h$
             BEGIN
               IF NOT EXISTS (SELECT 1 FROM {alice}.seen) THEN
                 PERFORM es.create_projection('spawned', '{alice}.noop(es.events)'::regprocedure);
                 INSERT INTO {alice}.seen VALUES (e.global_position, current_user, 'spawned');
               END IF;
             END $h$;
             SELECT es.create_projection('spawner', '{alice}.spawner(es.events)'::regprocedure);"
        ),
    );
    let first = note(&mut c, 10);
    assert!(wait_for_projection(&mut c, "spawner", first, WAIT_MS));
    // bob's SECURITY DEFINER function creates a projection; the superuser calls it
    let mut b = connect_as(&db, bob);
    exec(
        &mut b,
        &format!(
            "CREATE FUNCTION {bob}.noop(e es.events) RETURNS void LANGUAGE sql AS 'SELECT';
             CREATE FUNCTION {bob}.trap() RETURNS void LANGUAGE sql SECURITY DEFINER AS $t$
               SELECT es.create_projection('trapped', '{bob}.noop(es.events)'::regprocedure)
             $t$;"
        ),
    );
    exec(&mut c, &format!("SELECT {bob}.trap()"));
    let owners: Vec<(String, String)> = c
        .query(
            "SELECT name, run_as::text FROM es.projection_config ORDER BY name",
            &[],
        )
        .expect("es.projection_config")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        owners,
        vec![
            ("spawned".to_owned(), alice.to_owned()),
            ("spawner".to_owned(), alice.to_owned()),
            ("trapped".to_owned(), bob.to_owned()),
        ]
    );
}

#[test]
fn the_creator_is_dumped_by_name() {
    let role = Role::new("es_sec_alice_dump");
    let role = role.name.as_str();
    let source = TestDb::new("sec_dump_src");
    let mut c = source.connect();
    assert_preloaded(&mut c);
    unprivileged_creator(&mut c, role);
    let mut alice = connect_as(&source, role);
    exec(
        &mut alice,
        &format!(
            "CREATE FUNCTION {role}.h(e es.events) RETURNS void LANGUAGE sql AS 'SELECT';
             SELECT es.create_projection('dumped', '{role}.h(es.events)'::regprocedure);"
        ),
    );
    drop(alice);
    let target = dump_and_restore(&source, "sec_dump_dst");
    let mut dst = target.connect();
    let row = dst
        .query_one(
            "SELECT j.run_as::text, j.run_as::oid = r.oid FROM es.projection_config j
               JOIN pg_roles r ON r.rolname = $1 WHERE j.name = 'dumped'",
            &[&role],
        )
        .unwrap_or_else(|e| panic!("restored es.projection_config: {}", describe(&e)));
    assert_eq!(row.get::<_, String>(0), role);
    assert!(
        row.get::<_, bool>(1),
        "the restored creator is the role's OID"
    );
}
