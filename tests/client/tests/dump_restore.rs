//! A database that uses the extension survives `pg_dump -Fc` / `pg_restore` (docs/reference.md §1: event and
//! snapshot rows survive a dump and restore).
//!
//! The source database gets a few interleaved streams (with client-given event ids, occurred_at,
//! event_version and metadata) and snapshots; `pg_dump -Fc` dumps it and `pg_restore` loads it into
//! a new empty database (the dump's `CREATE EXTENSION` creates the schema, and the extension's
//! config-dump registration brings the rows and the position sequence). Events (every column),
//! streams, snapshots and global positions must be identical in both databases, and the restored
//! store must keep working: the next append gets a position above every restored one and the
//! right next version, and restored event ids stay unique. A declared aggregate type comes along
//! with its definition, revision, kept states, upcaster and a changed stream-type rule.

use event_store_client_tests::{
    Client, TestDb, Uuid, append, describe, dump_and_restore, sqlstate, stream_version, texts,
};

/// Every row of the extension's tables, rendered whole (so columns added later are compared too).
const TABLES: [(&str, &str); 3] = [
    (
        "es.events",
        "SELECT to_jsonb(e)::text FROM es.events e ORDER BY global_position",
    ),
    (
        "es.streams",
        "SELECT to_jsonb(s)::text FROM es.streams s ORDER BY stream_id",
    ),
    (
        "es.snapshots",
        "SELECT to_jsonb(s)::text FROM es.snapshots s ORDER BY stream_id, version",
    ),
];

/// An event object with every optional key the store reads.
fn full_event(event_type: &str, n: i32) -> (Uuid, String) {
    let id = Uuid::new_v4();
    let json = format!(
        r#"{{"type":"{event_type}","n":{n},"event_id":"{id}","occurred_at":"2024-01-02T03:04:0{}Z","event_version":2,"metadata":{{"correlation_id":"c-{n}","user":"tester"}}}}"#,
        n % 10
    );
    (id, json)
}

/// Fills the source database: three streams with interleaved appends, and snapshots.
fn populate(client: &mut Client, streams: &[Uuid; 3]) -> Uuid {
    let plain = |t: &str, n: i32| format!(r#"{{"type":"{t}","n":{n}}}"#);
    let (reused_id, first) = full_event("Created", 1);
    let steps: Vec<(usize, Option<i64>, Vec<String>)> = vec![
        (0, Some(0), vec![first, full_event("Renamed", 2).1]),
        (1, Some(0), vec![plain("Started", 1)]),
        (0, Some(2), vec![plain("Touched", 3)]),
        (2, None, (1..=5).map(|n| plain("Batch", n)).collect()),
        (1, Some(-1), vec![full_event("Finished", 2).1]),
        (0, None, vec![plain("Touched", 4)]),
    ];
    for (which, expected, events) in steps {
        append(client, streams[which], expected, &events)
            .unwrap_or_else(|e| panic!("populating stream {which}: {}", describe(&e)));
    }
    for (stream, version, state) in [
        (streams[0], 1i64, r#"{"x":1}"#),
        (streams[0], 3, r#"{"x":3}"#),
        (streams[2], 5, r#"{"sum":15}"#),
    ] {
        client
            .execute(
                "SELECT es.save_snapshot($1, $2, $3::text::jsonb)",
                &[&stream, &version, &state],
            )
            .unwrap_or_else(|e| panic!("es.save_snapshot: {}", describe(&e)));
    }
    reused_id
}

#[test]
fn dump_and_restore_keep_every_row_and_the_store_keeps_working() {
    let source = TestDb::new("dump_src");
    let streams = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let mut src = source.connect();
    let reused_id = populate(&mut src, &streams);

    let target = dump_and_restore(&source, "dump_dst");
    let mut dst = target.connect();

    // Same session settings on both sides, so timestamps render alike.
    for client in [&mut src, &mut dst] {
        client
            .batch_execute("SET TimeZone = 'UTC'")
            .expect("SET TimeZone");
    }
    for (table, sql) in TABLES {
        let before = texts(&mut src, sql);
        let after = texts(&mut dst, sql);
        assert!(
            !before.is_empty(),
            "{table} of the source database is empty"
        );
        assert_eq!(
            before, after,
            "{table} differs between the dumped and the restored database"
        );
    }
    assert_eq!(
        texts(&mut dst, TABLES[0].1).len(),
        11,
        "11 events were appended"
    );
    assert_eq!(
        texts(&mut dst, TABLES[2].1).len(),
        3,
        "3 snapshots were saved"
    );
    for &stream in &streams {
        assert_eq!(
            stream_version(&mut src, stream),
            stream_version(&mut dst, stream),
            "es.stream_version differs after the restore"
        );
    }
    let snapshot: (i64, String) = dst
        .query_one(
            "SELECT version, state::text FROM es.load_snapshot($1, 2)",
            &[&streams[0]],
        )
        .map(|row| (row.get(0), row.get(1)))
        .unwrap_or_else(|e| panic!("es.load_snapshot in the restored db: {}", describe(&e)));
    assert_eq!(snapshot, (1, r#"{"x": 1}"#.to_owned()));

    // The restored store keeps working: positions continue above the restored ones, versions too.
    let max_restored: i64 = dst
        .query_one("SELECT max(global_position) FROM es.events", &[])
        .expect("max position")
        .get(0);
    let next = vec![r#"{"type":"AfterRestore"}"#.to_owned()];
    let v = append(&mut dst, streams[0], Some(4), &next)
        .unwrap_or_else(|e| panic!("append after restore: {}", describe(&e)));
    assert_eq!(
        v, 5,
        "the restored stream must continue at its next version"
    );
    let fresh = Uuid::new_v4();
    let v = append(&mut dst, fresh, Some(0), &next)
        .unwrap_or_else(|e| panic!("append to a new stream after restore: {}", describe(&e)));
    assert_eq!(v, 1);
    let new_positions: Vec<i64> = dst
        .query(
            "SELECT global_position FROM es.events \
             WHERE (stream_id = $1 AND version = 5) OR stream_id = $2 ORDER BY 1",
            &[&streams[0], &fresh],
        )
        .expect("new positions")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(new_positions.len(), 2);
    assert!(
        new_positions.iter().all(|&p| p > max_restored),
        "positions after the restore {new_positions:?} must be above every restored one \
         (max {max_restored})"
    );

    // Restored event ids are still unique across the store.
    let dup = format!(r#"{{"type":"Copy","event_id":"{reused_id}"}}"#);
    match append(&mut dst, Uuid::new_v4(), None, &[dup]) {
        Ok(v) => panic!("reusing a restored event_id in another stream succeeded (version {v})"),
        Err(err) => assert_eq!(
            sqlstate(&err),
            Some("ES004"),
            "reusing a restored event_id must fail with ES004, got {}",
            describe(&err)
        ),
    }
}

/// A declared aggregate type survives a dump and restore with everything it needs: its row in
/// `es.aggregates` (functions by name, revision), its streams' kept states of that revision, a
/// changed stream-type rule, its upcaster; and in the restored database its rules still refuse,
/// its state is the same, and old events are still read upcast.
#[test]
fn a_declared_type_survives_a_dump_and_restore() {
    let source = TestDb::new("dump_types_src");
    let mut src = source.connect();
    src.batch_execute(
        r#"
        CREATE SCHEMA counter;
        CREATE FUNCTION counter.evolve(state jsonb, event jsonb) RETURNS jsonb
        LANGUAGE sql IMMUTABLE SET search_path = pg_catalog AS
        $$ SELECT jsonb_build_object('n', (state->>'n')::int + coalesce((event->>'by')::int, 0)) $$;
        CREATE FUNCTION counter.check(state jsonb, event jsonb) RETURNS void
        LANGUAGE plpgsql SET search_path = pg_catalog AS $$
        BEGIN
            IF (state->>'n')::int + coalesce((event->>'by')::int, 0) > 10 THEN
                RAISE EXCEPTION 'counter past 10' USING ERRCODE = 'CN001';
            END IF;
        END $$;
        CREATE FUNCTION counter.by_from_step(event jsonb) RETURNS jsonb
        LANGUAGE sql IMMUTABLE SET search_path = pg_catalog AS
        $$ SELECT (event - 'step') || jsonb_build_object('by', event->'step', 'event_version', 2) $$;
        SELECT es.define_aggregate('counter', 'counter.evolve(jsonb,jsonb)', '{"n": 0}',
                                   'counter.check(jsonb,jsonb)', 2);
        SELECT es.define_upcaster('Inc', 1, 'counter.by_from_step(jsonb)');
        UPDATE es.stream_type_rules SET stream_type = 'counter' WHERE first_event_type = 'Opened';
        "#,
    )
    .unwrap_or_else(|e| panic!("declaring the type: {}", describe(&e)));
    let stream = Uuid::new_v4();
    let events = [
        r#"{"type":"Opened"}"#.to_owned(),
        r#"{"type":"Inc","step":3}"#.to_owned(),
        r#"{"type":"Inc","by":4,"event_version":2}"#.to_owned(),
    ];
    append(&mut src, stream, Some(0), &events)
        .unwrap_or_else(|e| panic!("appending to the counter: {}", describe(&e)));

    let target = dump_and_restore(&source, "dump_types_dst");
    let mut dst = target.connect();
    let rows = |client: &mut Client, sql: &str| texts(client, sql);
    for sql in [
        "SELECT concat_ws(' ', stream_type, evolve, \"check\", initial_state, snapshot_every, revision, native) \
         FROM es.aggregates ORDER BY stream_type",
        "SELECT concat_ws(' ', first_event_type, stream_type) FROM es.stream_type_rules ORDER BY 1",
        "SELECT concat_ws(' ', event_type, from_version, upcast) FROM es.upcasters ORDER BY 1",
        "SELECT concat_ws(' ', stream_id, stream_type, version, state, state_revision) FROM es.streams ORDER BY 1",
        "SELECT concat_ws(' ', stream_id, version, state, revision) FROM es.snapshots ORDER BY stream_id, version",
    ] {
        assert_eq!(
            rows(&mut src, sql),
            rows(&mut dst, sql),
            "differs after the restore: {sql}"
        );
    }
    let state = |client: &mut Client| -> String {
        client
            .query_one("SELECT es.state($1)::text", &[&stream])
            .map(|r| r.get(0))
            .unwrap_or_else(|e| panic!("es.state: {}", describe(&e)))
    };
    assert_eq!(state(&mut dst), r#"{"n": 7}"#);
    assert_eq!(state(&mut src), state(&mut dst));
    // the rules and the upcaster still work in the restored database
    let too_much = [r#"{"type":"Inc","step":4}"#.to_owned()];
    match append(&mut dst, stream, None, &too_much) {
        Ok(v) => panic!("the restored counter accepted 7 + 4 (version {v})"),
        Err(e) => assert_eq!(sqlstate(&e), Some("CN001"), "{}", describe(&e)),
    }
    let fine = [r#"{"type":"Inc","step":3}"#.to_owned()];
    assert_eq!(append(&mut dst, stream, None, &fine).expect("7 + 3"), 4);
    assert_eq!(state(&mut dst), r#"{"n": 10}"#);
    // the changed rule: a new stream starting with Opened is a counter
    let other = Uuid::new_v4();
    append(&mut dst, other, Some(0), &events[..1]).expect("a new Opened stream");
    let ty: Option<String> = dst
        .query_one(
            "SELECT stream_type FROM es.streams WHERE stream_id = $1",
            &[&other],
        )
        .expect("its type")
        .get(0);
    assert_eq!(ty.as_deref(), Some("counter"));
}
