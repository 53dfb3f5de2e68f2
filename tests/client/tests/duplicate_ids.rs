//! ES004's DETAIL in every case (docs/reference.md §6, issue 12): the one case a single session cannot show is
//! an event id that a concurrent transaction stores while this append runs. The look-up before
//! the insert cannot see an uncommitted row, so the unique index finds it, waits for the other
//! transaction, and the store must still answer with ES004 and a DETAIL, never a raw 23505.

use std::thread;
use std::time::Duration;

use event_store_client_tests::{TestDb, Uuid, append, describe, sqlstate};

#[test]
fn an_id_committed_by_a_concurrent_append_is_es004_with_detail() {
    let db = TestDb::new("duplicate_ids");
    let id = "01890000-0000-7000-8000-00000000d001";
    let event = format!(r#"{{"type":"X","event_id":"{id}"}}"#);
    let (first, second) = (Uuid::from_u128(0xd1), Uuid::from_u128(0xd2));

    // A stores the id in its stream and holds its transaction open.
    let mut a = db.connect();
    let mut tx = a.transaction().unwrap();
    append(&mut tx, first, Some(0), std::slice::from_ref(&event)).unwrap();

    // B appends the same id to another stream: it blocks on A's uncommitted index entry.
    let b_db = db.name().to_owned();
    let b = thread::spawn(move || {
        let mut b = event_store_client_tests::connect_with_retry(&b_db, Duration::from_secs(10))
            .expect("connect");
        append(&mut b, second, Some(0), &[event])
    });
    thread::sleep(Duration::from_millis(500));
    assert!(!b.is_finished(), "B must wait for A's transaction");
    tx.commit().unwrap();

    let err = b.join().unwrap().expect_err("the id is taken");
    assert_eq!(sqlstate(&err), Some("ES004"), "{}", describe(&err));
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.message(), format!("duplicate event id {id}"));
    assert_eq!(
        db_err.detail(),
        Some("the event id is already stored by a concurrent append that committed first")
    );

    // Once committed, the look-up names the stream and version.
    let mut c = db.connect();
    let err = append(
        &mut c,
        second,
        Some(0),
        &[format!(r#"{{"type":"X","event_id":"{id}"}}"#)],
    )
    .expect_err("the id is taken");
    assert_eq!(
        err.as_db_error().and_then(|e| e.detail()),
        Some(format!("the event id is already stored in stream {first} at version 1").as_str())
    );
    // Nothing of B was stored.
    let n: i64 = c
        .query_one("SELECT count(*) FROM es.events", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
