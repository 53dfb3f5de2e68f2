//! Upgrades (docs/reference.md §12): a store installed at every released version and filled with events,
//! snapshots and accounts is updated with `ALTER EXTENSION event_store UPDATE`; its schema must
//! then equal a fresh install's, its data must be untouched, and it must go on working.
//!
//! Why: a fresh install runs the current version's generated script (from `sql/bootstrap.sql`
//! and the registrations), an installed store runs the upgrade scripts (`sql/event_store--A--B.sql`,
//! written by `scripts/upgrade_0.2.0.py` while 0.2.0 is unreleased); the two are made separately,
//! so only a comparison proves they agree. Each released version is installed from the
//! repository's own file (checked byte for byte). The schemas are compared through
//! the catalogs of schema `es` (pg_dump leaves out an extension's member objects): every member
//! object, function definition, column, default, index, constraint, trigger, sequence, privilege,
//! comment and dumped configuration table.

use event_store_client_tests::{Client, TestDb, Uuid, append, describe, pg_bin, stream_version};

/// Every released version: each one is installed, filled, and updated to the current version.
const RELEASED: &[&str] = &["0.1.0"];

/// One line per property of schema `es` that a user or the store depends on, sorted.
const SCHEMA_FINGERPRINT: &str = r#"
WITH ext AS (SELECT oid, extconfig, extcondition FROM pg_extension WHERE extname = 'event_store')
SELECT line FROM (
    SELECT 'member ' || pg_describe_object(d.classid, d.objid, 0) AS line
    FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
  UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text || ' '
           || CASE WHEN p.prokind = 'a'
                   THEN (SELECT 'aggregate ' || a.aggtransfn::regproc::text || ' '
                                || a.aggfinalfn::regproc::text || ' ' || a.aggtranstype::regtype::text
                         FROM pg_aggregate a WHERE a.aggfnoid = p.oid)
                   ELSE pg_get_functiondef(p.oid) END
           || ' acl=' || coalesce(p.proacl::text, '-')
           || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
    FROM pg_proc p WHERE p.pronamespace = 'es'::regnamespace
  UNION ALL
    SELECT 'relation ' || c.relname || ' kind=' || c.relkind::text || ' options=' || coalesce(c.reloptions::text, '-')
           || ' acl=' || coalesce(c.relacl::text, '-')
           || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-')
    FROM pg_class c WHERE c.relnamespace = 'es'::regnamespace
  UNION ALL
    SELECT 'column ' || c.relname || '.' || a.attname || ' #' || a.attnum || ' '
           || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull
           || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
           || ' comment=' || coalesce(col_description(c.oid, a.attnum), '-')
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = 'es'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'c')
      AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'es'::regnamespace
  UNION ALL
    SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'es'::regnamespace
  UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid)
           || ' comment=' || coalesce(obj_description(t.oid, 'pg_trigger'), '-')
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'es'::regnamespace AND NOT t.tgisinternal
  UNION ALL
    SELECT 'sequence ' || s.seqrelid::regclass::text || ' ' || format_type(s.seqtypid, NULL)
           || ' start=' || s.seqstart || ' increment=' || s.seqincrement || ' min=' || s.seqmin
           || ' max=' || s.seqmax || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = 'es'::regnamespace
  UNION ALL
    SELECT 'type ' || t.typname || ' kind=' || t.typtype::text
    FROM pg_type t WHERE t.typnamespace = 'es'::regnamespace
  UNION ALL
    SELECT 'schema es comment=' || coalesce(obj_description('es'::regnamespace, 'pg_namespace'), '-')
  UNION ALL
    SELECT 'dumped ' || cfg::regclass::text || ' where=' || coalesce(cond, '-')
    FROM ext, unnest(ext.extconfig, ext.extcondition) AS u(cfg, cond)
) lines
ORDER BY line
"#;

/// A digest of the stored data, to compare before and after the update (the columns of 0.1.0:
/// the ones a later version adds are new, and NULL for the rows stored before).
const DATA_FINGERPRINT: &str = "SELECT concat_ws(' ',
     (SELECT md5(string_agg(e::text, ',' ORDER BY global_position)) FROM es.events e),
     (SELECT md5(string_agg((s.stream_id, s.stream_type, s.version, s.created_at, s.updated_at,
                             s.state)::text, ',' ORDER BY stream_id)) FROM es.streams s),
     (SELECT md5(string_agg((s.stream_id, s.version, s.state, s.taken_at)::text, ','
                            ORDER BY stream_id, version)) FROM es.snapshots s),
     (SELECT last_value FROM es.global_position_seq))";

fn lines(client: &mut Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .unwrap_or_else(|e| panic!("{}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn text(client: &mut Client, sql: &str) -> String {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

/// Writes what a store of any version holds: generic streams with client ids, accounts through
/// the commands with automatic snapshots, a snapshot saved by hand.
fn fill(client: &mut Client, stream: Uuid) -> Uuid {
    let events: Vec<String> = (1..=5)
        .map(|i| {
            format!(
                r#"{{"type":"Step","n":{i},"event_id":"{}"}}"#,
                Uuid::new_v4()
            )
        })
        .collect();
    assert_eq!(append(client, stream, Some(0), &events).expect("append"), 5);
    client
        .batch_execute("SET es.snapshot_interval = 3")
        .expect("SET");
    let account: Uuid = client
        .query_one("SELECT es.open_account('Upgrader', 100)", &[])
        .expect("open_account")
        .get(0);
    for (f, amount) in [
        ("deposit", 50i64),
        ("withdraw", 30),
        ("deposit", 7),
        ("withdraw", 1),
    ] {
        client
            .query_one(
                &format!("SELECT es.{f}($1, $2, 'upgrade')"),
                &[&account, &amount],
            )
            .unwrap_or_else(|e| panic!("es.{f}: {}", describe(&e)));
    }
    client
        .execute("SELECT es.save_snapshot($1, 2, '{\"n\": 2}')", &[&stream])
        .expect("save_snapshot");
    account
}

/// The install script of a released version that the server runs is the repository's own file,
/// byte for byte: installed by `scripts/install.sh` from `sql/`, never a copy some earlier
/// install left on the machine.
fn assert_installed_from_repository(version: &str) {
    let sharedir = std::process::Command::new(pg_bin("pg_config"))
        .arg("--sharedir")
        .output()
        .expect("pg_config --sharedir");
    let sharedir = String::from_utf8(sharedir.stdout).expect("utf-8");
    let name = format!("event_store--{version}.sql");
    let installed = std::path::Path::new(sharedir.trim())
        .join("extension")
        .join(&name);
    let repository = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../sql")
        .join(&name);
    let installed = std::fs::read(&installed)
        .unwrap_or_else(|e| panic!("{} is not installed: {e}", installed.display()));
    let repository =
        std::fs::read(&repository).unwrap_or_else(|e| panic!("{}: {e}", repository.display()));
    assert!(
        installed == repository,
        "the installed {name} differs from the repository's sql/{name}"
    );
}

#[test]
fn every_released_version_updates_to_a_fresh_install() {
    let fresh = TestDb::new("upgrade_fresh");
    let mut fresh_client = fresh.connect();
    let current = text(
        &mut fresh_client,
        "SELECT extversion FROM pg_extension WHERE extname = 'event_store'",
    );
    let want = lines(&mut fresh_client, SCHEMA_FINGERPRINT);
    assert!(
        want.len() > 50,
        "the fingerprint must see the schema: {want:?}"
    );

    for version in RELEASED {
        assert_installed_from_repository(version);
        let db = TestDb::empty("upgrade_from");
        let mut client = db.connect();
        client
            .batch_execute(&format!("CREATE EXTENSION event_store VERSION '{version}'"))
            .unwrap_or_else(|e| panic!("CREATE EXTENSION VERSION {version}: {}", describe(&e)));
        let stream = Uuid::new_v4();
        let account = fill(&mut client, stream);
        let data_before = text(&mut client, DATA_FINGERPRINT);
        let state_before = text(
            &mut client,
            &format!("SELECT es.account_state('{account}')::text"),
        );

        client
            .batch_execute("ALTER EXTENSION event_store UPDATE")
            .unwrap_or_else(|e| panic!("ALTER EXTENSION UPDATE from {version}: {}", describe(&e)));
        assert_eq!(
            text(
                &mut client,
                "SELECT extversion FROM pg_extension WHERE extname = 'event_store'"
            ),
            current,
            "the update from {version} must reach the current version"
        );

        // The schema is the fresh install's.
        let got = lines(&mut client, SCHEMA_FINGERPRINT);
        let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
        let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{version} updated differs from a fresh {current}:\nonly in the fresh install: {missing:#?}\nonly in the updated one: {extra:#?}"
        );

        // The data is untouched.
        let mut again = db.connect();
        assert_eq!(
            text(&mut again, DATA_FINGERPRINT),
            data_before,
            "data changed by the update"
        );
        assert_eq!(
            text(
                &mut again,
                &format!("SELECT es.account_state('{account}')::text")
            ),
            state_before
        );

        // And the store goes on: versions, positions, the account rules, replay, the log.
        let next = [r#"{"type":"AfterUpdate"}"#.to_owned()];
        assert_eq!(
            append(&mut again, stream, Some(5), &next).expect("append"),
            6
        );
        assert_eq!(stream_version(&mut again, stream), 6);
        let balance: i64 = again
            .query_one("SELECT es.deposit($1, 4, 'after')", &[&account])
            .map(|_| ())
            .and_then(|()| {
                again.query_one(
                    "SELECT (es.account_state($1)->>'balance_cents')::bigint",
                    &[&account],
                )
            })
            .expect("deposit after the update")
            .get(0);
        assert_eq!(balance, 100 + 50 - 30 + 7 - 1 + 4);
        let err = again
            .query_one("SELECT es.withdraw($1, 1000)", &[&account])
            .expect_err("an overdraft is still refused");
        assert_eq!(event_store_client_tests::sqlstate(&err), Some("ES101"));
        // A projection of the updated store gets its worker (nothing restarted): the account
        // projections, created after the update, catch up with the accounts from before it.
        let last: i64 = again
            .query_one("SELECT max(global_position) FROM es.events", &[])
            .expect("max position")
            .get(0);
        again
            .batch_execute("SELECT es.enable_account_projections()")
            .expect("es.enable_account_projections after the update");
        let caught_up: bool = again
            .query_one(
                "SELECT es.wait_for_projection('account_balances', $1, 60000)",
                &[&last],
            )
            .expect("wait_for_projection after the update")
            .get(0);
        assert!(
            caught_up,
            "the projections of the updated store did not run"
        );
        let replayed = text(
            &mut again,
            &format!(
                "SELECT es.account_replay(data ORDER BY version)::text FROM es.events WHERE stream_id = '{account}'"
            ),
        );
        assert_eq!(
            replayed,
            text(
                &mut again,
                &format!("SELECT es.account_state('{account}')::text")
            )
        );
        let positions: Vec<i64> = again
            .query("SELECT global_position FROM es.read_all(0, 1000)", &[])
            .expect("read_all")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let stored: Vec<i64> = again
            .query("SELECT global_position FROM es.events ORDER BY 1", &[])
            .expect("events")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(positions, stored, "read_all after the update");
        assert_eq!(stored.len(), 5 + 5 + 1 + 1);
    }
}
