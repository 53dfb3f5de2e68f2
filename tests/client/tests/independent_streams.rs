//! Appends to different streams never wait for each other (docs/reference.md §2): the only lock an append
//! takes is its own stream's row, so a transaction that appended to stream X and stays open
//! must not delay an append to stream Y, while a second append to X does wait for it.

use std::time::{Duration, Instant};

use event_store_client_tests::{TestDb, Uuid, append, describe, sqlstate};

#[test]
fn an_open_append_blocks_only_its_own_stream() {
    let db = TestDb::new("independent");
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    let mut setup = db.connect();
    append(
        &mut setup,
        y,
        Some(0),
        &[r#"{"type":"Created"}"#.to_owned()],
    )
    .unwrap_or_else(|e| panic!("creating y: {}", describe(&e)));
    append(
        &mut setup,
        x,
        Some(0),
        &[r#"{"type":"Created"}"#.to_owned()],
    )
    .unwrap_or_else(|e| panic!("creating x: {}", describe(&e)));

    let mut holder = db.connect();
    let mut tx = holder.transaction().expect("BEGIN");
    append(&mut tx, x, Some(1), &[r#"{"type":"Held"}"#.to_owned()])
        .unwrap_or_else(|e| panic!("append inside the open transaction: {}", describe(&e)));

    // Another stream: must go through at once (a lock wait would hit lock_timeout).
    let mut other = db.connect();
    other
        .batch_execute("SET lock_timeout = '2s'")
        .expect("SET lock_timeout");
    let started = Instant::now();
    for expected in [Some(1), None, Some(-1)] {
        append(&mut other, y, expected, &[r#"{"type":"Free"}"#.to_owned()]).unwrap_or_else(|e| {
            panic!(
                "append to y while x is held ({expected:?}): {}",
                describe(&e)
            )
        });
        if expected == Some(1) {
            assert_eq!(
                event_store_client_tests::stream_version(&mut other, y),
                2,
                "the append to y must be visible right away"
            );
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "three appends to another stream took {elapsed:?} while x was held"
    );

    // The same stream waits for the holder: with lock_timeout it gives up (55P03).
    other
        .batch_execute("SET lock_timeout = '200ms'")
        .expect("SET lock_timeout");
    let err = append(&mut other, x, None, &[r#"{"type":"Waiting"}"#.to_owned()])
        .expect_err("an append to the held stream must wait for the holder");
    assert_eq!(sqlstate(&err), Some("55P03"), "{}", describe(&err));

    tx.commit().expect("COMMIT");
    other.batch_execute("RESET lock_timeout").expect("RESET");
    let v = append(&mut other, x, Some(2), &[r#"{"type":"After"}"#.to_owned()])
        .unwrap_or_else(|e| panic!("append to x after the commit: {}", describe(&e)));
    assert_eq!(v, 3);
}
