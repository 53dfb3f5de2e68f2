//! Managed and restricted servers (docs/installation.md, "Managed and restricted servers"): a cluster without
//! `shared_preload_libraries`, a database owned by a role that is not a superuser, and the store
//! created there by a superuser (as a provider's administrator would). The docs say plainly
//! what needs a superuser and what needs the preload; this test holds it to that, from the
//! restricted role's own connection:
//! - the owner cannot `CREATE EXTENSION event_store` itself (42501: the control file says
//!   `superuser = true`), nor `ALTER EXTENSION … UPDATE`;
//! - with the grants the docs list, the owner appends, reads, snapshots, runs the account
//!   commands, declares an aggregate type of its own and reads states and history;
//! - what needs the preload fails with a clear error naming the setting (55000): `es.read_all`,
//!   `es.create_subscription`, `es.create_projection`; tracing says it is off; nothing crashes.
//!
//! Runs only in the second pass of tests/client/run.sh (`--ignored`), which restarts the cluster
//! with ES_PRELOAD=0.

use event_store_client_tests::{
    NoTls, TestDb, Uuid, admin, assert_not_preloaded, config, describe, exec, sqlstate,
};

/// The restricted role: it owns the test database and nothing else (no superuser, no role or
/// database creation). Roles are cluster-wide, so it is made once and kept.
const OWNER: &str = "es_managed_owner";

/// The grants docs/installation.md ("Managed and restricted servers") gives the database owner
/// after `CREATE EXTENSION` (what the administrator runs once).
const GRANTS: &str = "
GRANT USAGE ON SCHEMA es TO es_managed_owner;
GRANT SELECT ON ALL TABLES IN SCHEMA es TO es_managed_owner;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA es TO es_managed_owner;
";

#[test]
#[ignore = "needs a cluster without the preload: the second pass of tests/client/run.sh"]
fn a_non_superuser_owner_without_the_preload_uses_the_documented_subset() {
    let mut root = admin();
    exec(
        &mut root,
        &format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER}') THEN
                 CREATE ROLE {OWNER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
               END IF;
             END $$"
        ),
    );
    assert_not_preloaded(&mut root);
    let db = TestDb::empty("managed");
    exec(
        &mut root,
        &format!("ALTER DATABASE {} OWNER TO {OWNER}", db.name()),
    );
    let mut owner = config(db.name())
        .user(OWNER)
        .connect(NoTls)
        .unwrap_or_else(|e| panic!("cannot connect as {OWNER}: {}", describe(&e)));
    let is_super: bool = owner
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .expect("rolsuper")
        .get(0);
    assert!(!is_super, "{OWNER} must not be a superuser");

    // the database owner alone cannot create the extension: it needs a superuser
    let err = owner
        .batch_execute("CREATE EXTENSION event_store")
        .expect_err("a non-superuser must not be able to create the extension");
    assert_eq!(sqlstate(&err), Some("42501"), "{}", describe(&err));

    // the administrator creates it and grants what docs/installation.md lists
    let mut admin_db = db.connect();
    exec(&mut admin_db, "CREATE EXTENSION event_store");
    exec(&mut admin_db, GRANTS);

    // appends, optimistic concurrency, reads, snapshots
    let stream = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let version: i64 = owner
        .query_one(
            "SELECT es.append_events($1, 0, ARRAY['{\"type\":\"A\"}','{\"type\":\"B\"}']::jsonb[])",
            &[&stream],
        )
        .unwrap_or_else(|e| panic!("append as the owner: {}", describe(&e)))
        .get(0);
    assert_eq!(version, 2);
    let err = owner
        .query_one(
            "SELECT es.append_events($1, 0, ARRAY['{\"type\":\"C\"}']::jsonb[])",
            &[&stream],
        )
        .expect_err("a stale expected version must be refused");
    assert_eq!(sqlstate(&err), Some("ES001"), "{}", describe(&err));
    let loaded: i64 = owner
        .query_one("SELECT count(*) FROM es.load_events($1)", &[&stream])
        .expect("load_events")
        .get(0);
    assert_eq!(loaded, 2);
    exec(
        &mut owner,
        &format!("SELECT es.save_snapshot('{stream}', 2, '{{\"n\": 2}}')"),
    );
    let snap: i64 = owner
        .query_one("SELECT version FROM es.load_snapshot($1)", &[&stream])
        .expect("load_snapshot")
        .get(0);
    assert_eq!(snap, 2);

    // the account commands and the built-in aggregate's reads
    let account: Uuid = owner
        .query_one("SELECT es.open_account('Managed', 1000)", &[])
        .unwrap_or_else(|e| panic!("es.open_account as the owner: {}", describe(&e)))
        .get(0);
    exec(
        &mut owner,
        &format!("SELECT es.deposit('{account}', 250, 'salary')"),
    );
    let balance: i64 = owner
        .query_one(
            "SELECT (es.account_state($1)->>'balance_cents')::bigint",
            &[&account],
        )
        .unwrap_or_else(|e| panic!("es.account_state as the owner: {}", describe(&e)))
        .get(0);
    assert_eq!(balance, 1250);

    // an aggregate type of the owner's own, in a schema of its own
    exec(
        &mut owner,
        "CREATE SCHEMA shop;
         CREATE FUNCTION shop.count_evolve(state jsonb, event jsonb) RETURNS jsonb
           LANGUAGE sql IMMUTABLE
           RETURN jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1);
         SELECT es.define_aggregate('counter', 'shop.count_evolve(jsonb, jsonb)'::regprocedure);",
    );
    let counted = Uuid::from_u128(7);
    exec(
        &mut owner,
        &format!(
            "SELECT es.append_events('{counted}', 0,
               ARRAY['{{\"type\":\"Tick\"}}','{{\"type\":\"Tick\"}}']::jsonb[], 'counter')"
        ),
    );
    let n: String = owner
        .query_one("SELECT es.state($1)->>'n'", &[&counted])
        .unwrap_or_else(|e| panic!("es.state as the owner: {}", describe(&e)))
        .get(0);
    assert_eq!(n, "2");

    // what reads the global log or runs in the background needs the preload
    exec(
        &mut owner,
        "CREATE FUNCTION shop.on_event(e es.events) RETURNS void LANGUAGE sql RETURN NULL",
    );
    for (sql, what) in [
        ("SELECT * FROM es.read_all(0, 10)", "es.read_all"),
        (
            "SELECT es.create_subscription('managed_sub')",
            "es.create_subscription",
        ),
        (
            "SELECT es.create_projection('managed_proj', 'shop.on_event(es.events)'::regprocedure)",
            "es.create_projection",
        ),
    ] {
        let err = owner
            .query(sql, &[])
            .expect_err("reading the global log needs the preload");
        assert_eq!(sqlstate(&err), Some("55000"), "{what}: {}", describe(&err));
        let hint = err
            .as_db_error()
            .and_then(|e| e.hint())
            .unwrap_or_default()
            .to_owned();
        assert!(
            hint.contains("shared_preload_libraries"),
            "{what}: the HINT must name the setting: {hint:?}"
        );
    }
    let tracing: bool = owner
        .query_one("SELECT available FROM es.tracing_stats()", &[])
        .expect("tracing_stats")
        .get(0);
    assert!(!tracing, "tracing is off without the preload");

    // updating the extension is the administrator's too
    let err = owner
        .batch_execute("ALTER EXTENSION event_store UPDATE")
        .expect_err("a non-superuser must not be able to update the extension");
    assert_eq!(sqlstate(&err), Some("42501"), "{}", describe(&err));

    drop(owner);
    drop(admin_db);
    drop(db);
}
