//! event_store: a complete event store inside PostgreSQL.
//!
//! Layout (two layers, one direction): [`core`] holds every decision as pure Rust and never
//! touches PostgreSQL; [`api`] is the SQL surface (C entry points declared in
//! `sql/bootstrap.sql`); [`storage`] holds every SQL statement the extension runs; [`shmem`]
//! tracks positions in flight for the gap-safe global read; [`error`] is the one place that
//! raises user errors; [`jsonb`] reads event keys from binary jsonb; [`native`] does the
//! append hot path with the heap and index access methods; [`trace`] records OpenTelemetry spans
//! into shared memory and runs the OTLP export worker.

pub mod api;
pub mod core;
pub mod error;
pub mod gucs;
pub mod jsonb;
pub mod native;
pub mod shmem;
pub mod storage;
pub mod trace;

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!(
    "../sql/tracing.sql",
    name = "tracing",
    requires = ["bootstrap"]
);

/// Library initialization. Under `shared_preload_libraries` (in the postmaster, before any
/// fork) it installs the shared-memory hooks for positions in flight and the span ring, and
/// registers the OTLP export worker (nothing that runs is created here); loaded on demand in a
/// backend it installs nothing, and everything but `es.read_all` works.
#[pg_guard]
#[allow(non_snake_case)]
pub extern "C-unwind" fn _PG_init() {
    trace::gucs::init();
    gucs::init();
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        shmem::install_hooks();
        trace::ring::install_hooks();
        trace::worker::register();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

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
