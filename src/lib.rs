//! event_store: a complete event store inside PostgreSQL.
//!
//! Three layers, one direction (see ARCHITECTURE.md): [`api`], one entry point per SQL
//! function, and beside it [`workers`], the background workers; [`store`], the use cases;
//! [`pg`], the PostgreSQL glue, which knows nothing above it, and beside it [`trace`], tracing in
//! backends. Below them the pure crates: the core (`event_store_core`) and the span model
//! (`event_store_telemetry`).

pub mod api;
pub mod pg;
pub mod store;
pub mod trace;
pub mod workers;

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!(
    "../sql/aggregates.sql",
    name = "aggregates",
    requires = [
        "es_account_replay_step",
        "es_account_replay_from_step",
        "es_account_replay_final"
    ]
);

pgrx::extension_sql_file!(
    "../sql/flow.sql",
    name = "flow",
    requires = [
        "es_stream_hash",
        "es_create_projection",
        "es_worker_status",
        "es_projections_changed",
        "es_account_evolve",
        "es_account_check",
        "es_registry_changed",
        "es_replay_step",
        "es_replay_from_step",
        "es_replay_final",
        "es_rebuild_batch",
        "es_wake_retention"
    ]
);

/// The store's segments of shared memory: the positions in flight, the waiters for new events,
/// the span ring and the registry of the per-database workers.
static SEGMENTS: [&pg::shmem::Segment; 4] = [
    &pg::positions::SEGMENT,
    &pg::wake::SEGMENT,
    &trace::ring_segment::SEGMENT,
    &pg::worker_registry::SEGMENT,
];

/// Library initialization. Under `shared_preload_libraries` (in the postmaster, before any
/// fork) it installs the shared-memory hooks for positions in flight and the span ring, and
/// registers the OTLP export worker and the launcher (nothing that runs is created here; no worker
/// at all in pg_upgrade's binary-upgrade mode); loaded on demand in a
/// backend it installs nothing, and everything but `es.read_all` and tracing works. Either way
/// the `tracing` subscriber is set (a pointer; it records only when the ring exists).
#[pg_guard]
#[allow(non_snake_case)]
pub extern "C-unwind" fn _PG_init() {
    trace::settings::init();
    pg::presorted::install();
    pg::wire::install();
    pg::settings::init();
    pg::registry::install();
    trace::install();
    // SAFETY: a flag the postmaster sets while it loads shared_preload_libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        #[cfg(feature = "pg_test")]
        tests::perturb_malloc();
        pg::shmem::install(&SEGMENTS);
        pg::positions::install_callback();
        // No background worker in binary-upgrade mode (`postgres -b`, the servers pg_upgrade
        // starts, old and new): they would run projections and connect to every database while
        // pg_upgrade dumps the old cluster's schema, whose data files it copies afterwards.
        // PostgreSQL keeps its own logical replication launcher out for the same reason.
        // SAFETY: a flag the postmaster sets from its command line before it loads
        // shared_preload_libraries; read here in the postmaster, before any fork.
        if !unsafe { pg_sys::IsBinaryUpgrade } {
            workers::register();
        }
        pg::utility::install();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    // SAFETY: glibc's own prototypes (`mallopt`, `malloc`, `free`), used by the tests only.
    unsafe extern "C" {
        #[cfg(feature = "pg_test")]
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        fn malloc(size: usize) -> *mut u8;
        fn free(p: *mut u8);
    }

    /// glibc's `M_PERTURB` (malloc.h): what `MALLOC_PERTURB_` sets.
    #[cfg(feature = "pg_test")]
    const M_PERTURB: std::ffi::c_int = -6;
    /// The pattern the other suites' servers get from `MALLOC_PERTURB_=165`.
    const PERTURB: std::ffi::c_int = 165;

    /// The `cargo pgrx test` server is started by pgrx through `sudo`, which passes no
    /// `MALLOC_PERTURB_`; the test build sets the same glibc setting in the postmaster (from
    /// `_PG_init` under the preload), and every backend inherits it with the fork.
    #[cfg(feature = "pg_test")]
    pub fn perturb_malloc() {
        // SAFETY: sets a process-global malloc option, in the postmaster, before any fork.
        unsafe { mallopt(M_PERTURB, PERTURB) };
    }

    /// A fresh malloc'd block carries the perturb pattern (`165 ^ 0xff`): use-after-free and
    /// reads of uninitialized memory in the native paths fail loudly in these tests too.
    #[pg_test]
    fn the_server_runs_with_malloc_perturb() {
        // A block larger than glibc's per-thread cache (which hands out blocks unperturbed)
        // and smaller than its mmap threshold (mmapped memory is zeroed).
        const SIZE: usize = 32 * 1024;
        // SAFETY: reads the bytes of a fresh block of SIZE bytes, then frees it.
        let first = unsafe {
            let p = malloc(SIZE);
            assert!(!p.is_null());
            let bytes = std::slice::from_raw_parts(p, 64).to_vec();
            free(p);
            bytes
        };
        assert!(
            first.iter().all(|&b| b == (PERTURB as u8) ^ 0xff),
            "fresh malloc memory is not perturbed: {first:?}"
        );
    }

    /// Runs `sql` and asserts it fails with exactly `sqlstate`, using PL/pgSQL so the real
    /// SQLSTATE is compared (pgrx maps codes it does not know).
    pub fn assert_sqlstate(sql: &str, sqlstate: &str) {
        let block = format!(
            "DO $t$ BEGIN {sql}; RAISE EXCEPTION 'no error from: %', $q${sql}$q$ USING ERRCODE = 'XX999';
             EXCEPTION WHEN SQLSTATE '{sqlstate}' THEN NULL; END $t$"
        );
        Spi::run(&block).unwrap();
    }

    #[pg_test]
    fn append_then_load_round_trips() {
        let v = Spi::get_one::<i64>(
            "SELECT es.append_events('00000000-0000-0000-0000-00000000000a', 0,
                ARRAY['{\"type\":\"A\",\"n\":1}', '{\"type\":\"B\",\"metadata\":{\"user\":\"u\"}}']::jsonb[])",
        )
        .unwrap();
        assert_eq!(v, Some(2));
        let types = Spi::get_one::<String>(
            "SELECT string_agg(event_type || ':' || version || ':' || coalesce(metadata->>'user', '-'), ',' ORDER BY version)
             FROM es.load_events('00000000-0000-0000-0000-00000000000a')",
        )
        .unwrap();
        assert_eq!(types.as_deref(), Some("A:1:-,B:2:u"));
        let sv =
            Spi::get_one::<i64>("SELECT es.stream_version('00000000-0000-0000-0000-00000000000a')")
                .unwrap();
        assert_eq!(sv, Some(2));
    }

    #[pg_test]
    fn custom_sqlstates_reach_plpgsql() {
        Spi::run("SELECT es.append_events('00000000-0000-0000-0000-00000000000b', 0, ARRAY['{\"type\":\"A\"}']::jsonb[])").unwrap();
        assert_sqlstate(
            "PERFORM es.append_events('00000000-0000-0000-0000-00000000000b', 0, ARRAY['{\"type\":\"A\"}']::jsonb[])",
            "ES001",
        );
        assert_sqlstate(
            "PERFORM es.append_events('00000000-0000-0000-0000-00000000000c', -1, ARRAY['{\"type\":\"A\"}']::jsonb[])",
            "ES002",
        );
        assert_sqlstate(
            "PERFORM es.append_events('00000000-0000-0000-0000-00000000000b', NULL, ARRAY['{}']::jsonb[])",
            "ES003",
        );
        assert_sqlstate(
            "PERFORM es.append_events('00000000-0000-0000-0000-00000000000b', NULL, NULL)",
            "22004",
        );
        assert_sqlstate(
            "PERFORM es.append_events('00000000-0000-0000-0000-00000000000b', -2, ARRAY[]::jsonb[])",
            "22023",
        );
        assert_sqlstate(
            "PERFORM es.save_snapshot('00000000-0000-0000-0000-00000000000b', 2, '{}')",
            "ES005",
        );
        assert_sqlstate("UPDATE es.events SET event_type = 'X'", "ES006");
    }

    #[pg_test]
    fn read_all_holds_back_positions_in_flight() {
        // A pg_test runs inside one transaction: the events it appends are still in flight, so
        // the gap-safe read must not return them (nor anything after them).
        Spi::run("SELECT es.append_events('00000000-0000-0000-0000-00000000000d', NULL, ARRAY['{\"type\":\"A\"}','{\"type\":\"B\"}']::jsonb[])").unwrap();
        let visible = Spi::get_one::<i64>(
            "SELECT count(*) FROM es.read_all(0, 1000) WHERE stream_id = '00000000-0000-0000-0000-00000000000d'",
        )
        .unwrap();
        assert_eq!(visible, Some(0));
        let in_table = Spi::get_one::<i64>(
            "SELECT count(*) FROM es.events WHERE stream_id = '00000000-0000-0000-0000-00000000000d'",
        )
        .unwrap();
        assert_eq!(in_table, Some(2));
    }

    #[pg_test]
    fn account_replay_folds_and_runs_as_a_window() {
        Spi::run(
            "SELECT es.append_events('00000000-0000-0000-0000-0000000000e1', 0, ARRAY[
               '{\"type\":\"Opened\",\"account_holder\":\"Al\",\"initial_balance_cents\":10}',
               '{\"type\":\"Deposited\",\"amount_cents\":5,\"description\":\"d\"}',
               '{\"type\":\"Withdrawn\",\"amount_cents\":3,\"description\":\"w\"}']::jsonb[])",
        )
        .unwrap();
        let state = Spi::get_one::<String>(
            "SELECT (es.account_replay(data ORDER BY version))::text FROM es.events
             WHERE stream_id = '00000000-0000-0000-0000-0000000000e1'",
        )
        .unwrap();
        assert_eq!(
            state.as_deref(),
            Some(r#"{"status": "Active", "version": 3, "holder_name": "Al", "balance_cents": 12}"#)
        );
        let running = Spi::get_one::<String>(
            "SELECT string_agg(b, ',' ORDER BY version) FROM (
               SELECT version, es.account_replay(data) OVER (ORDER BY version)->>'balance_cents' AS b
               FROM es.events WHERE stream_id = '00000000-0000-0000-0000-0000000000e1') w",
        )
        .unwrap();
        assert_eq!(running.as_deref(), Some("10,15,12"));
        assert_sqlstate(
            "PERFORM es.account_replay(e) FROM (VALUES ('{\"type\":\"Teleported\"}'::jsonb)) v(e)",
            "ES003",
        );
    }

    #[pg_test]
    fn commands_keep_the_rules_and_account_state_agrees() {
        let id = Spi::get_one::<pgrx::Uuid>("SELECT es.open_account('Alice', 0)")
            .unwrap()
            .unwrap();
        let id = uuid::Uuid::from_bytes(*id.as_bytes());
        Spi::run(&format!("SELECT es.deposit('{id}', 500, 'salary')")).unwrap();
        let v = Spi::get_one::<i64>(&format!("SELECT es.withdraw('{id}', 200, 'rent')")).unwrap();
        assert_eq!(v, Some(3));
        assert_sqlstate(&format!("PERFORM es.withdraw('{id}', 301)"), "ES101");
        assert_sqlstate(&format!("PERFORM es.withdraw('{id}', 0)"), "ES103");
        assert_sqlstate(&format!("PERFORM es.deposit('{id}', 1, '', 2)"), "ES001");
        assert_sqlstate(
            &format!(
                "PERFORM es.append_events('{id}', NULL, ARRAY['{{\"type\":\"Withdrawn\",\"amount_cents\":301,\"description\":\"x\"}}']::jsonb[])"
            ),
            "ES101",
        );
        Spi::run(&format!("SELECT es.freeze_account('{id}', 'audit')")).unwrap();
        assert_sqlstate(&format!("PERFORM es.deposit('{id}', 1)"), "ES102");
        let same = Spi::get_one::<bool>(&format!(
            "SELECT es.account_state('{id}') = (SELECT es.account_replay(data ORDER BY version)
               FROM es.events WHERE stream_id = '{id}')"
        ))
        .unwrap();
        assert_eq!(same, Some(true));
        let balances = Spi::get_one::<String>(&format!(
            "SELECT string_agg(balance_cents::text, ',' ORDER BY version) FROM es.account_history('{id}')"
        ))
        .unwrap();
        assert_eq!(balances.as_deref(), Some("0,500,300,300"));
        Spi::run("SELECT es.append_events('00000000-0000-0000-0000-0000000000e2', 0, ARRAY['{\"type\":\"A\"}']::jsonb[])").unwrap();
        assert_sqlstate(
            "PERFORM es.deposit('00000000-0000-0000-0000-0000000000e2', 1)",
            "ES104",
        );
        assert_sqlstate(
            "PERFORM es.account_state('00000000-0000-0000-0000-0000000000e3')",
            "ES002",
        );
    }

    /// The jsonb reader decodes what PostgreSQL wrote, from 4-byte and from short headers.
    #[pg_test]
    fn jsonb_reader_agrees_with_postgres() {
        use crate::pg::jsonb::Jsonb;
        use event_store_core::JsonField;
        use event_store_core::NumberText;
        let cases: &[(&str, JsonField)] = &[
            ("0", JsonField::Integer(0)),
            ("-1", JsonField::Integer(-1)),
            ("9999", JsonField::Integer(9999)),
            ("10000", JsonField::Integer(10000)),
            ("100000000", JsonField::Integer(100_000_000)),
            ("123456789012", JsonField::Integer(123_456_789_012)),
            ("1e2", JsonField::Integer(100)),
            ("9223372036854775807", JsonField::Integer(i64::MAX)),
            ("-9223372036854775808", JsonField::Integer(i64::MIN)),
            (
                "9223372036854775808",
                JsonField::Number(NumberText::new("9223372036854775808")),
            ),
            ("1.5", JsonField::Number(NumberText::new("1.5"))),
            ("5.0", JsonField::Number(NumberText::new("5.0"))),
            ("0.0001", JsonField::Number(NumberText::new("0.0001"))),
            ("-2.5e-3", JsonField::Number(NumberText::new("-0.0025"))),
            ("\"x\"", JsonField::String("x")),
            ("true", JsonField::Bool(true)),
            ("false", JsonField::Bool(false)),
            ("null", JsonField::Null),
            ("{\"a\": 1}", JsonField::Object),
            ("[1, 2]", JsonField::Array),
        ];
        for (text, want) in cases {
            let json = format!(r#"{{"aa": 1, "b": "bee", "n": {text}, "zz": [true]}}"#);
            let c = std::ffi::CString::new(json.clone()).unwrap();
            // SAFETY: jsonb_in reads the NUL-terminated text and returns a new jsonb in the
            // test's memory context.
            let d = unsafe {
                pg_sys::DirectFunctionCall1Coll(
                    Some(jsonb_in_fmgr),
                    pg_sys::InvalidOid,
                    pg_sys::Datum::from(c.as_ptr() as *mut std::ffi::c_char),
                )
            };
            // SAFETY: `d` is the jsonb just made; the context outlives the loop body.
            let long = unsafe { Jsonb::from_datum(d) };
            assert_eq!(long.get(c"n"), *want, "{json}");
            assert_eq!(long.get(c"b"), JsonField::String("bee"), "{json}");
            assert_eq!(long.get(c"zz"), JsonField::Array, "{json}");
            assert_eq!(long.get(c"nope"), JsonField::Absent, "{json}");
            assert_eq!(long.shape(), JsonField::Object);
            // the same value behind a 1-byte header, at an odd address, as stored inline
            // SAFETY: `d` is a varlena (4-byte header).
            let total = unsafe { pgrx::varlena::varsize_any(d.cast_mut_ptr()) };
            if total - 4 < 127 {
                let mut buf = vec![0u8; total + 2];
                buf[1] = (((total - 4 + 1) as u8) << 1) | 1;
                // SAFETY: copies the value's `total - 4` data bytes into `buf` after the
                // 1-byte header at offset 1 (buf has total + 2 bytes).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        d.cast_mut_ptr::<u8>().add(4),
                        buf.as_mut_ptr().add(2),
                        total - 4,
                    )
                };
                let short_ptr = buf[1..].as_mut_ptr();
                // SAFETY: short_ptr points at a 1-byte-header varlena of the same jsonb in buf,
                // which lives (unmoved) while `short` is used.
                let short = unsafe { Jsonb::from_datum(pg_sys::Datum::from(short_ptr)) };
                assert_eq!(short.get(c"n"), *want, "short {json}");
                assert_eq!(short.get(c"b"), JsonField::String("bee"), "short {json}");
            }
        }
        Spi::run(
            "SELECT es.append_events('00000000-0000-0000-0000-0000000000e9', 0,
               ARRAY['{\"type\":\"M\",\"metadata\":{\"user\":\"u\",\"n\":[1,{\"x\":null}]}}']::jsonb[])",
        )
        .unwrap();
        let meta = Spi::get_one::<bool>(
            "SELECT metadata = '{\"user\":\"u\",\"n\":[1,{\"x\":null}]}'::jsonb
             FROM es.events WHERE stream_id = '00000000-0000-0000-0000-0000000000e9'",
        )
        .unwrap();
        assert_eq!(meta, Some(true));
    }

    // SAFETY: `jsonb_in`'s fmgr entry, PostgreSQL's own prototype, called only through
    // `DirectFunctionCall1Coll` (pgrx's guarded call) in these tests.
    unsafe extern "C-unwind" {
        #[link_name = "jsonb_in"]
        fn jsonb_in_fmgr(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    }

    /// A statement and the typed reader of pg/ that disagree on a column's type raise an
    /// internal error rather than misread the datum (ARCHITECTURE.md: store/ reads rows only
    /// through these checked readers).
    #[pg_test(error = "event_store: column 1 of a statement is not jsonb")]
    fn a_column_of_another_type_is_not_read_as_jsonb() {
        static S: crate::pg::spi::Stmt =
            crate::pg::spi::Stmt::new("pg_test bigint", c"SELECT 42::bigint", &[]);
        let c = crate::pg::spi::Connection::connect();
        let rows = c.query(&S, &[]);
        let _ = rows.jsonb(0, 1);
    }

    /// As above, for a row (composite) read of a column that holds no row.
    #[pg_test(error = "event_store: column 1 of a statement is not a row")]
    fn a_column_of_another_type_is_not_read_as_a_row() {
        static S: crate::pg::spi::Stmt =
            crate::pg::spi::Stmt::new("pg_test jsonb", c"SELECT '{}'::jsonb", &[]);
        let c = crate::pg::spi::Connection::connect();
        let rows = c.query(&S, &[]);
        let _ = rows.composite(0, 1);
    }

    /// As above, for the stream head a bump statement returns (its type and state columns).
    #[pg_test(error = "event_store: column 2 of a bump statement is not jsonb")]
    fn a_bump_row_of_another_shape_is_not_read_as_a_stream_head() {
        static S: crate::pg::spi::Stmt =
            crate::pg::spi::Stmt::new("pg_test bump", c"SELECT 'cart'::text, 7::bigint", &[]);
        let c = crate::pg::spi::Connection::connect();
        let rows = c.query(&S, &[]);
        let _ = crate::pg::heap::StreamHead::from_rows(&rows, 0, 0, 1, 2);
    }

    #[pg_test]
    fn snapshots_round_trip() {
        Spi::run("SELECT es.append_events('00000000-0000-0000-0000-00000000000e', 0, ARRAY['{\"type\":\"A\"}','{\"type\":\"B\"}']::jsonb[])").unwrap();
        Spi::run("SELECT es.save_snapshot('00000000-0000-0000-0000-00000000000e', 1, '{\"n\":1}')")
            .unwrap();
        Spi::run("SELECT es.save_snapshot('00000000-0000-0000-0000-00000000000e', 2, '{\"n\":2}')")
            .unwrap();
        let s = Spi::get_one::<String>(
            "SELECT version || ':' || (state->>'n') FROM es.load_snapshot('00000000-0000-0000-0000-00000000000e', 1)",
        )
        .unwrap();
        assert_eq!(s.as_deref(), Some("1:1"));
        let s = Spi::get_one::<String>(
            "SELECT version || ':' || (state->>'n') FROM es.load_snapshot('00000000-0000-0000-0000-00000000000e')",
        )
        .unwrap();
        assert_eq!(s.as_deref(), Some("2:2"));
    }
}

/// Required by `cargo pgrx test`: the test cluster's configuration.
#[cfg(test)]
pub mod pg_test {
    /// One-off setup before the tests run (none needed).
    pub fn setup(_options: Vec<&str>) {}

    /// The test cluster preloads the library, as production does.
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // Export off: the worker drains and counts, so the pg_tests see spans being recorded
        // without depending on a collector.
        vec![
            "shared_preload_libraries = 'event_store'",
            "es.otlp_endpoint = ''",
        ]
    }
}
