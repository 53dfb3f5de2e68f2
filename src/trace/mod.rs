//! Tracing in backends (docs/reference.md §7): every SQL entry point records a span, a command's span parents
//! the spans it causes, and finished spans go into the shared ring ([`ring_segment`]) that the
//! export worker (`workers/export.rs`) drains. The tracing settings are [`settings`]; the
//! export worker's blocking HTTP client is [`http`]. The span model itself (records, context,
//! the ring, the subscriber) is the pgrx-free crate `event_store_telemetry`.
//!
//! Spans are declared with `tracing`, as in the seed: an entry point's span with its
//! registration (`#[sql_function(span = …)]`, run by [`entry`]), the steps' spans with
//! `#[instrument]` where they run (the append pipeline, an account's replay, the stream read,
//! the snapshot lookups and saves in `crate::store`). The process's `tracing` subscriber is
//! `event_store_telemetry::subscriber::Spans` with [`PgHost`]: no OpenTelemetry SDK, no threads,
//! nothing allocated per span; a finished span is a fixed-size record copied once into shared
//! memory, and the SDK's `SpanData` is built only in the worker. Ids come from a per-process
//! generator seeded with `pg_strong_random`, the parent from the client's trace context (a
//! sqlcommenter comment in the query text, else `es.traceparent`), the sampling decision from
//! `es.trace_sample_ratio`.

pub mod http;
pub mod ring_segment;
pub mod settings;

use crate::pg::call::Call;
use event_store_core::EventStoreError;
use event_store_telemetry::context::{
    IdGen, TraceParent, now_unix_ns, parse_traceparent, sqlcommenter_traceparent,
};
use event_store_telemetry::record::SpanRecord;
use event_store_telemetry::subscriber::{Host, Spans};
use pgrx::pg_sys::{self, Datum};
use std::cell::RefCell;
use std::sync::atomic::Ordering;

/// What a backend keeps for tracing: the id generator (seeded per process) and the database
/// name.
struct Backend {
    ids: Option<(u32, IdGen)>,
    db_name: Option<String>,
}

thread_local! {
    static BACKEND: RefCell<Backend> = const {
        RefCell::new(Backend { ids: None, db_name: None })
    };
}

impl Backend {
    /// The id generator, seeded on first use in this process (never in the postmaster, so a
    /// fork cannot hand two backends the same sequence).
    fn ids(&mut self) -> &mut IdGen {
        let pid = my_pid();
        if self.ids.as_ref().is_none_or(|(p, _)| *p != pid) {
            let mut seed = [0u8; 8];
            // SAFETY: fills exactly `seed.len()` bytes of the local buffer.
            let strong = unsafe { pg_sys::pg_strong_random(seed.as_mut_ptr().cast(), seed.len()) };
            let mut s = u64::from_ne_bytes(seed);
            if !strong {
                s ^= now_unix_ns() ^ (u64::from(pid) << 32);
            }
            self.ids = Some((pid, IdGen::new(s)));
        }
        &mut self.ids.as_mut().expect("seeded above").1
    }

    fn db_name(&mut self) -> &str {
        // SAFETY: get_database_name returns NULL or a palloc'd NUL-terminated name, copied into
        // Rust memory at once.
        self.db_name.get_or_insert_with(|| unsafe {
            let p = pg_sys::get_database_name(pg_sys::MyDatabaseId);
            if p.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        })
    }
}

/// This backend's pid (PostgreSQL's global: `getpid()` would be a system call per span).
fn my_pid() -> u32 {
    // SAFETY: a global PostgreSQL sets at process start.
    unsafe { pg_sys::MyProcPid as u32 }
}

/// Whether this backend records spans: the library is preloaded (the ring exists) and
/// `es.tracing` is on.
pub fn enabled() -> bool {
    ring_segment::get().is_some() && settings::TRACING.get()
}

/// The PostgreSQL side of the span model: settings, ids, the client's context, the ring.
pub struct PgHost;

impl Host for PgHost {
    fn enabled(&self) -> bool {
        enabled()
    }

    fn now_unix_ns(&self) -> u64 {
        now_unix_ns()
    }

    fn span_id(&self) -> [u8; 8] {
        BACKEND.with(|b| b.borrow_mut().ids().span_id())
    }

    fn trace_id(&self) -> [u8; 16] {
        BACKEND.with(|b| b.borrow_mut().ids().trace_id())
    }

    fn client_context(&self) -> Option<TraceParent> {
        client_context()
    }

    fn sample_ratio(&self) -> f64 {
        settings::SAMPLE_RATIO.get()
    }

    fn stamp(&self, record: &mut SpanRecord) {
        record.pid = my_pid() as i32;
        BACKEND.with(|b| record.set_db_name(b.borrow_mut().db_name()));
    }

    fn finish(&self, record: &SpanRecord) {
        if let Some(ring) = ring_segment::get()
            && ring.push(record)
            && ring.len() * 2 >= ring.capacity()
        {
            // Half full: wake the worker now rather than at its next interval, so a burst is
            // exported instead of dropped. Setting a set latch costs one read.
            let latch = ring.stats().worker_latch.load(Ordering::Acquire);
            if latch != 0 {
                // SAFETY: the worker stored its MyLatch, which is its PGPROC's latch in shared
                // memory, mapped at the same address in every process; the PGPROC array lives
                // as long as the cluster, so even a latch the worker no longer owns is valid
                // memory (SetLatch then wakes nobody).
                unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
            }
        }
    }
}

/// Makes [`PgHost`]'s subscriber the process's `tracing` dispatcher. Called from `_PG_init`:
/// it stores a pointer and creates nothing that runs, so the postmaster's backends inherit it
/// safely; without the preload the subscriber records nothing ([`enabled`] is false).
pub fn install() {
    // Err only when a dispatcher is already set (the library loaded twice): keep that one.
    let _ = tracing::subscriber::set_global_default(Spans::new(PgHost));
}

/// The client's trace context for a new root span: a sqlcommenter `traceparent` in the query
/// text wins (it is specific to this statement), else `es.traceparent`. A malformed value is a
/// WARNING and no context (a new root trace), never an error in the caller's statement.
fn client_context() -> Option<TraceParent> {
    // SAFETY: debug_query_string is NULL or the NUL-terminated text of the statement being
    // executed, valid while it runs.
    let from_comment = unsafe {
        let q = pg_sys::debug_query_string;
        if q.is_null() {
            None
        } else {
            sqlcommenter_traceparent(std::ffi::CStr::from_ptr(q).to_bytes())
                .map(|v| (v, "the query's sqlcommenter comment"))
        }
    };
    let (value, source) = from_comment.or_else(|| {
        settings::TRACEPARENT
            .get()
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|v| !v.trim().is_empty())
            .map(|v| (v, "es.traceparent"))
    })?;
    match parse_traceparent(&value) {
        Ok(tp) => Some(tp),
        Err(why) => {
            pgrx::warning!(
                "ignoring the malformed traceparent {value:?} from {source}: {why}; the call starts a new trace"
            );
            None
        }
    }
}

/// Runs the body of a SQL entry point inside its span (see `#[sql_function]`, which declares
/// the span once per function): `open` makes the span with its name and constant fields,
/// `record_args` fills it from the call's arguments (only when the span is recorded), and
/// `record_result` from the returned datum. The span ends with status OK, or ERROR with the
/// user error's SQLSTATE and message, or with the message of a PostgreSQL error that unwinds
/// through it (which is then re-raised unchanged).
#[inline(always)]
pub fn entry(
    call: &mut Call<'_>,
    body: fn(&mut Call<'_>) -> Result<Datum, EventStoreError>,
    open: impl FnOnce() -> tracing::Span,
    record_args: impl FnOnce(&tracing::Span, &Call<'_>),
    record_result: impl FnOnce(&tracing::Span, Datum),
) -> Result<Datum, EventStoreError> {
    let span = open();
    if span.is_disabled() {
        return body(call);
    }
    record_args(&span, call);
    let outcome = {
        let _entered = span.enter();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(call)))
    };
    match &outcome {
        Ok(Ok(datum)) => record_result(&span, *datum),
        Ok(Err(err)) => {
            tracing::error!(parent: &span, error = %err.message(), db.response.status_code = err.sqlstate());
        }
        Err(payload) => {
            let (code, message) = describe_panic(payload.as_ref());
            tracing::error!(parent: &span, error = %message, db.response.status_code = %code);
        }
    }
    drop(span);
    match outcome {
        Ok(result) => result,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// SQLSTATE and message of an error that unwinds through an entry point.
fn describe_panic(payload: &(dyn std::any::Any + Send)) -> (String, String) {
    use pgrx::pg_sys::panic::{CaughtError, ErrorReportWithLevel};
    let from_report = |r: &ErrorReportWithLevel| {
        (
            unpack_sqlstate(r.sql_error_code() as i32),
            r.message().to_owned(),
        )
    };
    if let Some(caught) = payload.downcast_ref::<CaughtError>() {
        return match caught {
            CaughtError::PostgresError(r)
            | CaughtError::ErrorReport(r)
            | CaughtError::RustPanic { ereport: r, .. } => from_report(r),
        };
    }
    if let Some(r) = payload.downcast_ref::<ErrorReportWithLevel>() {
        return from_report(r);
    }
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "the call failed".to_owned());
    ("XX000".to_owned(), message)
}

/// The five characters of a SQLSTATE packed by `MAKE_SQLSTATE`.
fn unpack_sqlstate(code: i32) -> String {
    (0..5)
        .map(|i| (((code >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}

#[cfg(test)]
mod unit {
    #[test]
    fn sqlstates_unpack() {
        for code in ["ES101", "22004", "XX000", "23505"] {
            assert_eq!(
                super::unpack_sqlstate(crate::pg::error::make_sqlstate(code)),
                code
            );
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn recorded() -> i64 {
        Spi::get_one::<i64>("SELECT spans_recorded FROM es.tracing_stats()")
            .unwrap()
            .unwrap()
    }

    const APPEND: &str =
        "SELECT es.append_events(gen_random_uuid(), NULL, ARRAY['{\"type\":\"A\"}']::jsonb[])";

    #[pg_test]
    fn an_append_records_one_span() {
        let before = recorded();
        Spi::run(APPEND).unwrap();
        assert_eq!(recorded(), before + 1);
        let row = Spi::get_one::<bool>("SELECT available FROM es.tracing_stats()").unwrap();
        assert_eq!(row, Some(true));
    }

    #[pg_test]
    fn a_deposit_records_its_command_and_child_spans() {
        let id = Spi::get_one::<String>("SELECT es.open_account('ann', 100)::text")
            .unwrap()
            .unwrap();
        let before = recorded();
        Spi::run(&format!("SELECT es.deposit('{id}', 50)")).unwrap();
        // command.deposit and its event_store.append_events (the state is in the stream row)
        assert_eq!(recorded(), before + 2);
        let before = recorded();
        Spi::run(&format!("SELECT es.account_state('{id}', NULL, 1)")).unwrap();
        // account.state, account.replay, snapshot_store.load, event_store.load_events
        assert_eq!(recorded(), before + 4);
    }

    #[pg_test]
    fn tracing_off_and_unsampled_contexts_record_nothing() {
        let before = recorded();
        Spi::run("SET LOCAL es.tracing = off").unwrap();
        Spi::run(APPEND).unwrap();
        Spi::run("SET LOCAL es.tracing = on").unwrap();
        Spi::run("SET LOCAL es.trace_sample_ratio = 0").unwrap();
        Spi::run(APPEND).unwrap();
        Spi::run("SET LOCAL es.trace_sample_ratio = 1").unwrap();
        Spi::run(
            "SET LOCAL es.traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00'",
        )
        .unwrap();
        Spi::run(APPEND).unwrap();
        assert_eq!(recorded(), before);
    }

    #[pg_test]
    fn a_malformed_traceparent_is_not_an_error() {
        Spi::run("SET LOCAL es.traceparent = 'not-a-traceparent'").unwrap();
        let before = recorded();
        Spi::run(APPEND).unwrap();
        assert_eq!(recorded(), before + 1, "a new root trace is recorded");
    }

    #[pg_test]
    fn a_failed_call_is_still_recorded() {
        let before = recorded();
        crate::tests::assert_sqlstate(
            "PERFORM es.append_events(gen_random_uuid(), -1, ARRAY['{\"type\":\"A\"}']::jsonb[])",
            "ES002",
        );
        assert_eq!(recorded(), before + 1);
    }
}
