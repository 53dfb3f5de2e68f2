//! Without `shared_preload_libraries` (docs/reference.md §0): everything but `es.read_all` works (tracing is
//! off and `es.tracing_stats()` says so), and
//! `es.read_all` fails with a clear error (55000) whose HINT names the setting. Runs only in the
//! second pass of tests/client/run.sh (`--ignored`), which restarts the cluster with ES_PRELOAD=0.

use event_store_client_tests::{
    TestDb, Uuid, append, assert_not_preloaded, describe, sqlstate, stream_version,
};

#[test]
#[ignore = "needs a cluster without the preload: the second pass of tests/client/run.sh"]
fn the_store_works_and_read_all_explains_the_missing_preload() {
    let db = TestDb::new("nopreload");
    let mut client = db.connect();
    assert_not_preloaded(&mut client);

    let s = Uuid::new_v4();
    let events = [r#"{"type":"A"}"#.to_owned(), r#"{"type":"B"}"#.to_owned()];
    assert_eq!(append(&mut client, s, Some(0), &events).expect("append"), 2);
    assert_eq!(
        append(&mut client, s, None, &events[..1]).expect("append"),
        3
    );
    assert_eq!(stream_version(&mut client, s), 3);
    let loaded: i64 = client
        .query_one("SELECT count(*) FROM es.load_events($1)", &[&s])
        .expect("load_events")
        .get(0);
    assert_eq!(loaded, 3);

    // tracing is off and says why, without failing
    let row = client
        .query_one(
            "SELECT available, status, spans_recorded FROM es.tracing_stats()",
            &[],
        )
        .expect("es.tracing_stats() works without the preload");
    assert!(!row.get::<_, bool>(0));
    assert!(
        row.get::<_, String>(1)
            .contains("not in shared_preload_libraries"),
        "{:?}",
        row.get::<_, String>(1)
    );
    assert_eq!(row.get::<_, Option<i64>>(2), None);

    let err = client
        .query("SELECT * FROM es.read_all(0, 10)", &[])
        .expect_err("read_all must refuse to run without the preload");
    assert_eq!(sqlstate(&err), Some("55000"), "{}", describe(&err));
    let db_err = err.as_db_error().expect("a server error");
    assert_eq!(
        db_err.message(),
        "es.read_all needs the event_store library preloaded"
    );
    assert!(
        db_err
            .hint()
            .unwrap_or_default()
            .contains("shared_preload_libraries"),
        "the HINT must name the setting: {:?}",
        db_err.hint()
    );
}
