//! Tracing in backends (SPEC §7): every SQL entry point records a span, a command's span parents
//! the spans it causes, and finished spans go into the shared ring ([`ring`]) that the export
//! worker ([`worker`]) drains.
//!
//! Spans are declared with `tracing`, as in the seed: the entry points' spans here (their names
//! and constant fields in [`open_span`], the argument fields from the call), the steps'
//! spans with `#[instrument]` where they run (`api::append::append`, `api::account::load_state`,
//! `api::account::visit_events`) and the statement spans of [`statement`]. The process's
//! `tracing` subscriber is `core::spans::Spans` with [`PgHost`]: no OpenTelemetry SDK, no
//! threads, nothing allocated per span; a finished span is a fixed-size record copied once
//! into shared memory, and the SDK's `SpanData` is built only in the worker. Ids come from a
//! per-process generator seeded with `pg_strong_random`, the parent from the client's trace
//! context (a sqlcommenter comment in the query text, else `es.traceparent`), the sampling
//! decision from `es.trace_sample_ratio`.

pub mod gucs;
pub mod http;
pub mod ring;
pub mod stats;
pub mod worker;

use crate::api::Call;
use crate::core::EventStoreError;
use crate::core::spans::{Host, Spans};
use crate::core::trace::{
    IdGen, NumAttr, SpanName, SpanRecord, TraceParent, parse_traceparent, sqlcommenter_traceparent,
};
use crate::storage::{Arg, Stmt};
use pgrx::pg_sys::{self, Datum};
use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::Empty;
use tracing::info_span;

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

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Whether this backend records spans: the library is preloaded (the ring exists) and
/// `es.tracing` is on.
pub fn enabled() -> bool {
    ring::get().is_some() && gucs::TRACING.get()
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
        gucs::SAMPLE_RATIO.get()
    }

    fn stamp(&self, record: &mut SpanRecord) {
        record.pid = my_pid() as i32;
        BACKEND.with(|b| record.set_db_name(b.borrow_mut().db_name()));
    }

    fn finish(&self, record: &SpanRecord) {
        if let Some(ring) = ring::get()
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
        gucs::TRACEPARENT
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

/// The span of a statement run on behalf of a call (`crate::storage`): snapshot lookups and
/// saves and event loads, as the seed's stores trace them; every other statement is part of
/// its caller's span. Only inside a span (a statement of an untraced call records nothing).
pub fn statement(stmt: Stmt, args: &[Arg]) -> Option<tracing::span::EnteredSpan> {
    let (name, key) = match stmt {
        Stmt::LoadSnapshot => (SpanName::SnapshotLoad, NumAttr::AtVersion),
        Stmt::LoadEvents => (SpanName::LoadEvents, NumAttr::FromVersion),
        Stmt::SaveSnapshot => (SpanName::SnapshotSave, NumAttr::Version),
        _ => return None,
    };
    if !crate::core::spans::inside_a_span() {
        return None;
    }
    let span = open_span(name);
    // SAFETY: the statements traced here all take the stream id, a uuid, as their first
    // argument (crate::storage).
    record_uuid(&span, unsafe {
        crate::api::uuid_from_datum(args.first().copied().flatten()?)
    });
    if let Some(v) = args.get(1).copied().flatten() {
        span.record(key.key(), v.value() as i64);
    }
    Some(span.entered())
}

/// Where an entry point's attributes come from.
#[derive(Clone, Copy)]
pub enum ArgAttr {
    /// A uuid argument: `aggregate_id`.
    Aggregate,
    /// A bigint argument.
    Int8(NumAttr),
    /// An array argument: its element count.
    ArrayLen(NumAttr),
}

/// An entry point's span: its name and the arguments it records.
pub type EntrySpan = (SpanName, &'static [(usize, ArgAttr)]);

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The span of each traced C entry point and the arguments it records. A `const fn`, so
/// `crate::sql_function!` resolves it at compile time: an untraced entry point (the
/// `es.account_replay` aggregate's per-row functions) pays nothing.
pub const fn entry_span(symbol: &str) -> Option<EntrySpan> {
    use ArgAttr::*;
    use NumAttr::*;
    const TABLE: &[(&str, EntrySpan)] = &[
        (
            "es_append_events",
            (
                SpanName::AppendEvents,
                &[
                    (0, Aggregate),
                    (1, Int8(ExpectedVersion)),
                    (2, ArrayLen(EventsCount)),
                ],
            ),
        ),
        (
            "es_load_events",
            (
                SpanName::LoadEvents,
                &[(0, Aggregate), (1, Int8(FromVersion))],
            ),
        ),
        (
            "es_stream_version",
            (SpanName::StreamVersion, &[(0, Aggregate)]),
        ),
        (
            "es_read_all",
            (SpanName::ReadAll, &[(0, Int8(AfterPosition))]),
        ),
        (
            "es_save_snapshot",
            (
                SpanName::SnapshotSave,
                &[(0, Aggregate), (1, Int8(Version))],
            ),
        ),
        (
            "es_load_snapshot",
            (
                SpanName::SnapshotLoad,
                &[(0, Aggregate), (1, Int8(AtVersion))],
            ),
        ),
        (
            "es_open_account",
            (SpanName::OpenAccount, &[(1, Int8(InitialBalanceCents))]),
        ),
        (
            "es_deposit",
            (
                SpanName::Deposit,
                &[
                    (0, Aggregate),
                    (1, Int8(AmountCents)),
                    (3, Int8(ExpectedVersion)),
                ],
            ),
        ),
        (
            "es_withdraw",
            (
                SpanName::Withdraw,
                &[
                    (0, Aggregate),
                    (1, Int8(AmountCents)),
                    (3, Int8(ExpectedVersion)),
                ],
            ),
        ),
        (
            "es_freeze_account",
            (SpanName::FreezeAccount, &[(0, Aggregate)]),
        ),
        (
            "es_close_account",
            (SpanName::CloseAccount, &[(0, Aggregate)]),
        ),
        (
            "es_account_state",
            (
                SpanName::AccountState,
                &[(0, Aggregate), (2, Int8(AtVersion))],
            ),
        ),
        (
            "es_account_history",
            (SpanName::AccountHistory, &[(0, Aggregate)]),
        ),
    ];
    let mut i = 0;
    while i < TABLE.len() {
        if same(TABLE[i].0, symbol) {
            return Some(TABLE[i].1);
        }
        i += 1;
    }
    None
}

/// Opens the span `name` of an entry point or a statement: its name and constant fields as the
/// seed declares them, the argument fields empty (filled from the call by [`entry`] and
/// [`statement`]). One `info_span!` per name, because `tracing` fixes a span's name and fields
/// where it is declared.
fn open_span(name: SpanName) -> tracing::Span {
    match name {
        SpanName::AppendEvents => info_span!(
            "event_store.append_events",
            aggregate_id = Empty,
            expected_version = Empty,
            events_count = Empty,
            db.system = "postgresql",
            db.operation = "INSERT",
            event_sourcing.operation = "append"
        ),
        SpanName::LoadEvents => info_span!(
            "event_store.load_events",
            aggregate_id = Empty,
            from_version = Empty,
            events_count = Empty,
            db.system = "postgresql",
            db.operation = "SELECT",
            event_sourcing.operation = "replay"
        ),
        SpanName::StreamVersion => info_span!(
            "event_store.stream_version",
            aggregate_id = Empty,
            db.system = "postgresql",
            db.operation = "SELECT"
        ),
        SpanName::ReadAll => info_span!(
            "event_store.read_all",
            after_position = Empty,
            db.system = "postgresql",
            db.operation = "SELECT"
        ),
        SpanName::SnapshotSave => info_span!(
            "snapshot_store.save",
            aggregate_id = Empty,
            version = Empty,
            db.system = "postgresql",
            db.operation = "INSERT",
            event_sourcing.optimization = "snapshot"
        ),
        SpanName::SnapshotLoad => info_span!(
            "snapshot_store.load",
            aggregate_id = Empty,
            at_version = Empty,
            db.system = "postgresql",
            db.operation = "SELECT",
            event_sourcing.optimization = "snapshot"
        ),
        SpanName::AccountReplay => info_span!(
            "account.replay",
            aggregate_id = Empty,
            version = Empty,
            event_sourcing.operation = "replay"
        ),
        SpanName::OpenAccount => info_span!(
            "command.open_account",
            account_id = Empty,
            aggregate_id = Empty,
            initial_balance_cents = Empty,
            event_sourcing.operation = "command"
        ),
        SpanName::Deposit => info_span!(
            "command.deposit",
            account_id = Empty,
            aggregate_id = Empty,
            amount_cents = Empty,
            expected_version = Empty,
            event_sourcing.operation = "command"
        ),
        SpanName::Withdraw => info_span!(
            "command.withdraw",
            account_id = Empty,
            aggregate_id = Empty,
            amount_cents = Empty,
            expected_version = Empty,
            event_sourcing.operation = "command"
        ),
        SpanName::FreezeAccount => info_span!(
            "command.freeze_account",
            account_id = Empty,
            aggregate_id = Empty,
            event_sourcing.operation = "command"
        ),
        SpanName::CloseAccount => info_span!(
            "command.close_account",
            account_id = Empty,
            aggregate_id = Empty,
            event_sourcing.operation = "command"
        ),
        SpanName::AccountState => info_span!(
            "account.state",
            aggregate_id = Empty,
            at_version = Empty,
            event_sourcing.operation = "replay"
        ),
        SpanName::AccountHistory => info_span!(
            "account.history",
            aggregate_id = Empty,
            event_sourcing.operation = "replay"
        ),
    }
}

/// Records a uuid as the span's `aggregate_id` and, where declared (commands), `account_id`.
fn record_uuid(span: &tracing::Span, id: uuid::Uuid) {
    let id = id.as_u128();
    span.record("aggregate_id", id);
    span.record("account_id", id);
}

fn fill_from_args(span: &tracing::Span, call: &Call<'_>, attrs: &[(usize, ArgAttr)]) {
    for &(n, attr) in attrs {
        match attr {
            ArgAttr::Aggregate => {
                if let Ok(id) = call.uuid(n, "") {
                    record_uuid(span, id);
                }
            }
            ArgAttr::Int8(k) => {
                if let Some(v) = call.i64(n) {
                    span.record(k.key(), v);
                }
            }
            ArgAttr::ArrayLen(k) => {
                if let Some(len) = call.array_len(n) {
                    span.record(k.key(), len);
                }
            }
        }
    }
}

/// Runs the body of a SQL entry point inside its span (`traced`, from [`entry_span`]) (see `crate::sql_function!`):
/// the span ends with status OK, or ERROR with the user error's SQLSTATE and message, or with the
/// message of a PostgreSQL error that unwinds through it (which is then re-raised unchanged).
#[inline(always)]
pub fn entry(
    traced: Option<EntrySpan>,
    call: &mut Call<'_>,
    body: fn(&mut Call<'_>) -> Result<Datum, EventStoreError>,
) -> Result<Datum, EventStoreError> {
    let Some((name, attrs)) = traced else {
        return body(call);
    };
    let span = open_span(name);
    if span.is_disabled() {
        return body(call);
    }
    fill_from_args(&span, call, attrs);
    let outcome = {
        let _entered = span.enter();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(call)))
    };
    match &outcome {
        Ok(Ok(datum)) => {
            if name == SpanName::OpenAccount {
                // SAFETY: es.open_account returns a uuid (sql/bootstrap.sql), a datum the
                // body just built in the function's context.
                record_uuid(&span, unsafe { crate::api::uuid_from_datum(*datum) });
            }
        }
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
    use super::*;

    #[test]
    fn entry_points_map_to_the_seeds_span_names() {
        let name = |sym: &str| entry_span(sym).map(|(n, _)| n.as_str());
        assert_eq!(name("es_deposit"), Some("command.deposit"));
        assert_eq!(name("es_append_events"), Some("event_store.append_events"));
        assert_eq!(name("es_load_snapshot"), Some("snapshot_store.load"));
        assert_eq!(name("es_account_state"), Some("account.state"));
        // per-row aggregate functions and the stats function record nothing
        assert_eq!(name("es_account_replay_step"), None);
        assert_eq!(name("es_tracing_stats"), None);
        assert_eq!(name("es_deposi"), None);
    }

    #[test]
    fn sqlstates_unpack() {
        for code in ["ES101", "22004", "XX000", "23505"] {
            assert_eq!(
                super::unpack_sqlstate(crate::error::make_sqlstate(code)),
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
