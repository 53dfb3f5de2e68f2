//! `examples/walkthrough.sql` (what `scripts/main.sh` runs, the README's walkthrough) never
//! touches the database it is started from.
//!
//! It used to begin with `DROP EXTENSION IF EXISTS event_store CASCADE`: run with psql against a
//! real store, it deleted the history. Now it makes a database of its own,
//! `es_walkthrough_scratch` (dropped and created anew at each run, marked by its comment), and
//! works there after `\connect`. The test runs it with psql, as a user would, from a database
//! holding a stream of its own, and checks that the stream is still there afterwards, that the
//! walkthrough did its work in the scratch database, that a second run starts over, and that a
//! database of that name which the walkthrough did not make is left alone (psql fails instead).
//! Run with `bash tests/client/run.sh --test walkthrough` (the library preloaded: the walkthrough
//! reads the log and waits for the projections).

use std::process::Output;

use event_store_client_tests::{
    TestDb, Uuid, append, assert_preloaded, client_command, connect_with_retry, describe, repo_dir,
    stream_version,
};

/// The walkthrough's own database.
const SCRATCH: &str = "es_walkthrough_scratch";
/// The first stream of the walkthrough (section 1), at version 4 after section 4.
const WALKTHROUGH_STREAM: Uuid = Uuid::from_u128(0x7f3c2a10_0000_4000_8000_000000000001);

/// `psql -X -f examples/walkthrough.sql` connected to `dbname` on the test cluster.
fn run_walkthrough(dbname: &str) -> Output {
    let mut command = client_command("psql");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(&key);
        }
    }
    command
        .args(["-X", "-q", "-d", dbname, "-f"])
        .arg(repo_dir().join("examples/walkthrough.sql"))
        .output()
        .expect("cannot run psql")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Drops the scratch database (whoever made it).
fn drop_scratch() {
    let mut admin = connect_with_retry("postgres", std::time::Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {}", describe(&e)));
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)"))
        .unwrap_or_else(|e| panic!("DROP DATABASE {SCRATCH}: {}", describe(&e)));
}

/// What the walkthrough leaves in its database: its first stream at version 4.
fn scratch_stream_version() -> i64 {
    let mut client = connect_with_retry(SCRATCH, std::time::Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("cannot connect to {SCRATCH}: {}", describe(&e)));
    stream_version(&mut client, WALKTHROUGH_STREAM)
}

#[test]
fn the_walkthrough_leaves_the_database_it_is_started_from_alone() {
    drop_scratch();
    let db = TestDb::new("walkthrough");
    let mut client = db.connect();
    assert_preloaded(&mut client);
    let mine = Uuid::from_u128(0x0a1c_e000_0000_4000_8000_0000_0000_0001);
    let events = [
        r#"{"type":"Kept"}"#.to_owned(),
        r#"{"type":"Kept"}"#.to_owned(),
    ];
    append(&mut client, mine, Some(0), &events)
        .unwrap_or_else(|e| panic!("append: {}", describe(&e)));
    client
        .batch_execute(
            "CREATE TABLE my_read_model (id int PRIMARY KEY); INSERT INTO my_read_model VALUES (1)",
        )
        .expect("a table of the user's");

    // Twice: the second run drops the scratch database the first one made and starts over.
    for run in 1..=2 {
        let out = run_walkthrough(db.name());
        assert!(
            out.status.success(),
            "run {run} of the walkthrough failed:\n{}",
            text(&out)
        );
        let mut client = db.connect();
        let kept: (i64, i64, i64) = client
            .query_one(
                "SELECT es.stream_version($1), \
                        (SELECT count(*) FROM es.events WHERE stream_id = $1), \
                        (SELECT count(*) FROM my_read_model)",
                &[&mine],
            )
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .unwrap_or_else(|e| {
                panic!(
                    "after run {run} the database the walkthrough was started from lost the \
                     store or the user's table: {}",
                    describe(&e)
                )
            });
        assert_eq!(
            kept,
            (2, 2, 1),
            "after run {run}: the stream of the database the walkthrough was started from \
             (version, events) and the user's table (rows)"
        );
        let theirs: i64 = client
            .query_one(
                "SELECT count(*) FROM es.events WHERE stream_id <> $1",
                &[&mine],
            )
            .expect("es.events")
            .get(0);
        assert_eq!(
            theirs, 0,
            "after run {run} the walkthrough wrote into the database it was started from"
        );
        assert_eq!(
            scratch_stream_version(),
            4,
            "after run {run}: the walkthrough's first stream in {SCRATCH}"
        );
    }

    // Started from its own scratch database, it refuses (it would have to drop it).
    let out = run_walkthrough(SCRATCH);
    assert!(
        !out.status.success() && text(&out).contains("start it from another database"),
        "the walkthrough started from {SCRATCH}:\n{}",
        text(&out)
    );

    // A database of that name that the walkthrough did not make is not dropped: psql fails.
    drop_scratch();
    let mut admin = connect_with_retry("postgres", std::time::Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {}", describe(&e)));
    admin
        .batch_execute(&format!("CREATE DATABASE {SCRATCH} TEMPLATE template0"))
        .expect("a database of the same name, not the walkthrough's");
    let mut foreign = connect_with_retry(SCRATCH, std::time::Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("cannot connect to {SCRATCH}: {}", describe(&e)));
    foreign
        .batch_execute("CREATE TABLE precious (id int); INSERT INTO precious VALUES (7)")
        .expect("a table in it");
    drop(foreign);
    let out = run_walkthrough(db.name());
    assert!(
        !out.status.success() && text(&out).contains("that the walkthrough did not make"),
        "the walkthrough with a database {SCRATCH} it did not make:\n{}",
        text(&out)
    );
    let mut foreign = connect_with_retry(SCRATCH, std::time::Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{SCRATCH} was dropped: {}", describe(&e)));
    let precious: i64 = foreign
        .query_one("SELECT count(*) FROM precious", &[])
        .expect("the table survives")
        .get(0);
    assert_eq!(precious, 1);
    drop(foreign);
    drop_scratch();
}
