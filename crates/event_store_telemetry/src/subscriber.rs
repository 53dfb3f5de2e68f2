//! The store's spans as `tracing` spans (docs/reference.md §7): a `tracing` subscriber that turns the spans the
//! code declares with `#[instrument]` and `info_span!` (the seed's names and fields) into
//! fixed-size [`SpanRecord`]s, and hands each finished, sampled one to its [`Host`].
//!
//! Why a subscriber of our own rather than `tracing-opentelemetry` and the SDK: a backend must
//! not start threads or allocate per span on the append path, and the records must cross into
//! the export worker's process through shared memory. The subscriber keeps the open spans of the
//! process in a thread-local stack (a backend has one thread), so it costs a few hundred
//! nanoseconds a span; the OpenTelemetry `SpanData` is only built in the worker
//! ([`super::otlp`]). Everything the process provides (clock, ids, the client's trace context,
//! the sink) comes through [`Host`], so this module is tested without PostgreSQL.
//!
//! Rules the store relies on:
//! - a span's parent is its explicit parent, else the innermost entered span; a root span joins
//!   the client's trace context when there is one, else starts a trace sampled by ratio;
//! - a span named like the span it is opened in is the same span (an entry point whose body
//!   runs its own instrumented step, e.g. `es.append_events` and `append`), so it is recorded
//!   once, with the fields of both;
//! - every span of this crate is recorded under the name it was declared with, and every field
//!   it records becomes an attribute of that name (integers, uuids, text, booleans): the record
//!   carries both, so a span declared in a new `#[sql_function]` or `#[instrument]` is exported
//!   without any list to extend;
//! - an ERROR event inside a span (what `#[instrument(err)]` emits) marks it failed with its
//!   `error` field as the message and `db.response.status_code` as the SQLSTATE; a span closed
//!   while a panic unwinds (a PostgreSQL ERROR) is failed too.

use super::context::{TraceParent, sampled_by_ratio};
use super::record::{AttrValue, MAX_TEXT_BYTES, MESSAGE_BYTES, SpanRecord};
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Current, Id, Record};
use tracing_core::subscriber::{Interest, Subscriber};
use tracing_core::{Event, Level, LevelFilter, Metadata};

/// The `tracing` target prefix of the store's spans and events (module paths of this crate);
/// callsites of other crates are never enabled.
pub const TARGET: &str = "event_store";

/// What the subscriber needs from the process it runs in.
pub trait Host: Send + Sync + 'static {
    /// Whether spans are recorded now (in a backend: the library is preloaded and `es.tracing`
    /// is on). Asked for every span, so it must be cheap.
    fn enabled(&self) -> bool;
    /// Now, in nanoseconds since the Unix epoch.
    fn now_unix_ns(&self) -> u64;
    /// A new span id.
    fn span_id(&self) -> [u8; 8];
    /// A new trace id.
    fn trace_id(&self) -> [u8; 16];
    /// The client's trace context for a new root span, if it sent one.
    fn client_context(&self) -> Option<TraceParent>;
    /// The share of new root traces that are recorded.
    fn sample_ratio(&self) -> f64;
    /// Fills what every record of this process carries (pid, database).
    fn stamp(&self, record: &mut SpanRecord);
    /// Takes a finished, sampled span.
    fn finish(&self, record: &SpanRecord);
}

/// Where a span's children belong.
#[derive(Clone, Copy)]
struct Ctx {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

/// An open span.
struct Open {
    meta: &'static Metadata<'static>,
    ctx: Ctx,
    record: SpanRecord,
    /// Handles on this span (clones, and same-named spans folded into it).
    refs: u32,
}

impl Open {
    fn recorded(&self) -> bool {
        self.ctx.sampled
    }
}

/// The open spans of this thread and the ones entered, innermost last.
#[derive(Default)]
struct State {
    slots: Vec<Option<Open>>,
    free: Vec<usize>,
    entered: Vec<Id>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn slot_of(id: &Id) -> usize {
    (id.into_u64() - 1) as usize
}

impl State {
    fn get(&mut self, id: &Id) -> Option<&mut Open> {
        self.slots.get_mut(slot_of(id)).and_then(Option::as_mut)
    }

    fn insert(&mut self, open: Open) -> Id {
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(open);
                i
            }
            None => {
                self.slots.push(Some(open));
                self.slots.len() - 1
            }
        };
        Id::from_u64(i as u64 + 1)
    }

    fn current(&self) -> Option<Id> {
        self.entered.last().cloned()
    }
}

/// Whether a span is entered on this thread (a step of a traced call, not an untraced one).
pub fn inside_a_span() -> bool {
    STATE.with(|s| !s.borrow().entered.is_empty())
}

/// The subscriber: install it as the process's global default.
pub struct Spans<H: Host> {
    host: H,
}

impl<H: Host> Spans<H> {
    /// A subscriber recording through `host`.
    pub fn new(host: H) -> Self {
        Spans { host }
    }

    fn open(&self, state: &mut State, attrs: &Attributes<'_>) -> Id {
        let meta = attrs.metadata();
        let name = meta.name();
        let parent = if let Some(p) = attrs.parent() {
            Some(p.clone())
        } else if attrs.is_contextual() {
            state.current()
        } else {
            None
        };
        let parent = parent.and_then(|p| state.get(&p).map(|o| (p, o.meta.name(), o.ctx)));
        if let Some((pid, pname, _)) = &parent
            && *pname == name
        {
            let open = state.get(pid).expect("looked up above");
            open.refs += 1;
            if open.recorded() {
                attrs.record(&mut Fields(&mut open.record));
            }
            return pid.clone();
        }
        let parent_ctx = parent.map(|(_, _, ctx)| ctx);
        let (trace_id, parent_id, sampled, remote) = match parent_ctx {
            Some(c) => (c.trace_id, c.span_id, c.sampled, false),
            None => match self.host.client_context() {
                Some(tp) => (tp.trace_id, tp.parent_id, tp.sampled, true),
                None => {
                    let trace_id = self.host.trace_id();
                    let sampled = sampled_by_ratio(&trace_id, self.host.sample_ratio());
                    (trace_id, [0; 8], sampled, false)
                }
            },
        };
        let span_id = self.host.span_id();
        let mut record = SpanRecord::new(name, trace_id, span_id, parent_id);
        if sampled {
            record.set_parent_remote(remote);
            self.host.stamp(&mut record);
            attrs.record(&mut Fields(&mut record));
            record.start_unix_ns = self.host.now_unix_ns();
        }
        state.insert(Open {
            meta,
            ctx: Ctx {
                trace_id,
                span_id,
                sampled,
            },
            record,
            refs: 1,
        })
    }
}

impl<H: Host> Subscriber for Spans<H> {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.target().starts_with(TARGET) {
            // whether it records depends on settings that change at run time
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::INFO)
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.target().starts_with(TARGET) && self.host.enabled()
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        STATE.with(|s| self.open(&mut s.borrow_mut(), attrs))
    }

    fn record(&self, id: &Id, values: &Record<'_>) {
        STATE.with(|s| {
            if let Some(open) = s.borrow_mut().get(id)
                && open.recorded()
            {
                values.record(&mut Fields(&mut open.record));
            }
        });
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() != Level::ERROR {
            return;
        }
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let target = match event.parent() {
                Some(p) => Some(p.clone()),
                None if event.is_contextual() => s.current(),
                None => None,
            };
            if let Some(open) = target.and_then(|id| s.get(&id))
                && open.recorded()
            {
                event.record(&mut Failure(&mut open.record));
            }
        });
    }

    fn enter(&self, id: &Id) {
        STATE.with(|s| s.borrow_mut().entered.push(id.clone()));
    }

    fn exit(&self, id: &Id) {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(i) = s.entered.iter().rposition(|e| e == id) {
                s.entered.remove(i);
            }
        });
    }

    fn clone_span(&self, id: &Id) -> Id {
        STATE.with(|s| {
            if let Some(open) = s.borrow_mut().get(id) {
                open.refs += 1;
            }
        });
        id.clone()
    }

    fn try_close(&self, id: Id) -> bool {
        let finished = STATE.with(|s| {
            let mut s = s.borrow_mut();
            let open = s.get(&id)?;
            open.refs -= 1;
            if open.refs > 0 {
                return None;
            }
            let open = s.slots[slot_of(&id)].take().expect("looked up above");
            s.free.push(slot_of(&id));
            open.recorded().then_some(open.record)
        });
        let Some(mut record) = finished else {
            return false;
        };
        if std::thread::panicking() && record.failure().is_none() {
            record.set_error("XX000", "the call failed");
        }
        record.end_unix_ns = self.host.now_unix_ns().max(record.start_unix_ns);
        self.host.finish(&record);
        true
    }

    fn current_span(&self) -> Current {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            match s.current() {
                Some(id) => match s.get(&id) {
                    Some(open) => Current::new(id, open.meta),
                    None => Current::none(),
                },
                None => Current::none(),
            }
        })
    }
}

/// A small text buffer on the stack for `Debug`/`Display` field values; longer text is cut.
struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    fn of(value: &dyn fmt::Debug) -> Self {
        let mut t = Text {
            buf: [0; N],
            len: 0,
        };
        let _ = write!(t, "{value:?}");
        t
    }

    fn as_str(&self) -> &str {
        // `write_str` only ever cuts at a character boundary
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes a span's fields into its record, each under its own name.
struct Fields<'a>(&'a mut SpanRecord);

/// Fields whose text is a uuid (`%stream` in an `#[instrument]`): recorded as a uuid, like the
/// entry points' `u128`s, so a span's id attribute has one form whichever way it was recorded.
fn is_id(key: &str) -> bool {
    key.ends_with("_id")
}

impl Visit for Fields<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.set_attr(field.name(), AttrValue::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_i64(field, i64::try_from(value).unwrap_or(i64::MAX));
    }

    /// A uuid as a number (`Uuid::as_u128`): no text round trip.
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.0
            .set_attr(field.name(), AttrValue::Uuid(value.to_be_bytes()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.set_attr(field.name(), AttrValue::Bool(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.set_attr(field.name(), AttrValue::F64(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let key = field.name();
        match uuid::Uuid::try_parse(value) {
            Ok(id) if is_id(key) => self.0.set_attr(key, AttrValue::Uuid(*id.as_bytes())),
            _ => self.0.set_attr(key, AttrValue::Str(value)),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let key = field.name();
        // An id does not change within a span: a step folded into its entry point's span
        // (`es.append_events` and `append`) would only format and parse it again.
        if is_id(key) && matches!(self.0.attr(key), Some(AttrValue::Uuid(_))) {
            return;
        }
        self.record_str(field, Text::<{ MAX_TEXT_BYTES }>::of(value).as_str());
    }
}

/// Writes an ERROR event's `error` and `db.response.status_code` fields into its span's record.
/// An error text that starts with a SQLSTATE and `": "` (how `EventStoreError` displays, so what
/// `#[instrument(err)]` records) gives both.
struct Failure<'a>(&'a mut SpanRecord);

impl Failure<'_> {
    fn error(&mut self, text: &str) {
        let b = text.as_bytes();
        let coded = b.len() > 7
            && b[5..7] == *b": "
            && b[..5]
                .iter()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
        if coded {
            if self.0.sqlstate().is_none() {
                self.0.set_sqlstate(&text[..5]);
            }
            self.0.set_failed(&text[7..]);
        } else {
            self.0.set_failed(text);
        }
    }
}

impl Visit for Failure<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "error" | "message" => self.error(value),
            "db.response.status_code" => self.0.set_sqlstate(value),
            _ => {}
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "error" | "message" => self.error(Text::<{ MESSAGE_BYTES + 8 }>::of(value).as_str()),
            "db.response.status_code" => self.0.set_sqlstate(Text::<8>::of(value).as_str()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::IdGen;
    use std::sync::{Arc, Mutex};
    use tracing::{error, info_span, instrument};

    /// A host with a fixed clock and ids, collecting the finished records.
    #[derive(Clone)]
    struct TestHost {
        on: bool,
        ratio: f64,
        context: Option<TraceParent>,
        ids: Arc<Mutex<IdGen>>,
        clock: Arc<Mutex<u64>>,
        out: Arc<Mutex<Vec<SpanRecord>>>,
    }

    impl TestHost {
        fn new() -> Self {
            TestHost {
                on: true,
                ratio: 1.0,
                context: None,
                ids: Arc::new(Mutex::new(IdGen::new(7))),
                clock: Arc::new(Mutex::new(1_000)),
                out: Arc::new(Mutex::new(Vec::new())),
            }
        }

        fn run(&self, f: impl FnOnce()) -> Vec<SpanRecord> {
            tracing::subscriber::with_default(Spans::new(self.clone()), f);
            std::mem::take(&mut *self.out.lock().unwrap())
        }
    }

    impl Host for TestHost {
        fn enabled(&self) -> bool {
            self.on
        }
        fn now_unix_ns(&self) -> u64 {
            let mut c = self.clock.lock().unwrap();
            *c += 10;
            *c
        }
        fn span_id(&self) -> [u8; 8] {
            self.ids.lock().unwrap().span_id()
        }
        fn trace_id(&self) -> [u8; 16] {
            self.ids.lock().unwrap().trace_id()
        }
        fn client_context(&self) -> Option<TraceParent> {
            self.context
        }
        fn sample_ratio(&self) -> f64 {
            self.ratio
        }
        fn stamp(&self, record: &mut SpanRecord) {
            record.pid = 42;
            record.set_db_name("bank");
        }
        fn finish(&self, record: &SpanRecord) {
            self.out.lock().unwrap().push(*record);
        }
    }

    const ACCOUNT: uuid::Uuid = uuid::Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0001);

    #[instrument(
        name = "event_store.append_events",
        skip_all,
        fields(
            aggregate_id = %stream,
            expected_version = expected,
            events_count = count,
            db.system = "postgresql",
            db.operation = "INSERT",
            event_sourcing.operation = "append"
        ),
        err
    )]
    fn append(stream: uuid::Uuid, expected: Option<i64>, count: usize) -> Result<i64, String> {
        if count == 0 {
            return Err("ES101: insufficient funds: available 0, requested 5".to_owned());
        }
        Ok(count as i64)
    }

    fn deposit(amount: i64) -> Result<i64, String> {
        let span = info_span!(
            target: "event_store::api",
            "command.deposit",
            account_id = %ACCOUNT,
            aggregate_id = %ACCOUNT,
            amount_cents = amount,
            event_sourcing.operation = "command",
            retried = false,
        );
        let _g = span.enter();
        let r = append(ACCOUNT, None, if amount > 0 { 1 } else { 0 });
        if let Err(e) = &r {
            error!(target: "event_store::api", error = %e, db.response.status_code = "ES101");
        }
        r
    }

    #[test]
    fn a_command_parents_its_append_with_the_seeds_fields() {
        let host = TestHost::new();
        let recs = host.run(|| {
            deposit(250).unwrap();
        });
        assert_eq!(recs.len(), 2, "the child ends first");
        let (append, cmd) = (&recs[0], &recs[1]);
        assert_eq!(cmd.name(), "command.deposit");
        assert_eq!(append.name(), "event_store.append_events");
        assert_eq!(append.trace_id, cmd.trace_id);
        assert_eq!(append.parent_id, cmd.span_id);
        assert_eq!(cmd.parent_id, [0; 8], "a root");
        assert!(!cmd.parent_remote());
        let id = AttrValue::Uuid(*ACCOUNT.as_bytes());
        assert_eq!(
            cmd.attrs().collect::<Vec<_>>(),
            vec![
                ("account_id", id),
                ("aggregate_id", id),
                ("amount_cents", AttrValue::Int(250)),
                ("event_sourcing.operation", AttrValue::Str("command")),
                ("retried", AttrValue::Bool(false)),
            ],
            "every field, under its own name"
        );
        assert_eq!(
            append.attrs().collect::<Vec<_>>(),
            vec![
                ("aggregate_id", id),
                ("events_count", AttrValue::Int(1)),
                ("db.system", AttrValue::Str("postgresql")),
                ("db.operation", AttrValue::Str("INSERT")),
                ("event_sourcing.operation", AttrValue::Str("append")),
            ],
            "a None expected version is no attribute"
        );
        assert!(cmd.start_unix_ns < append.start_unix_ns);
        assert!(append.end_unix_ns < cmd.end_unix_ns);
        assert_eq!((cmd.pid, cmd.db_name()), (42, "bank"));
        assert_eq!(cmd.failure(), None);
    }

    #[test]
    fn errors_mark_the_spans_failed() {
        let host = TestHost::new();
        let recs = host.run(|| {
            deposit(0).unwrap_err();
        });
        let (append, cmd) = (&recs[0], &recs[1]);
        assert_eq!(
            append.failure(),
            Some("insufficient funds: available 0, requested 5"),
            "#[instrument(err)]"
        );
        let recs = host.run(|| {
            let _s = info_span!(target: "event_store::api", "account.history").entered();
            error!(target: "event_store::api", error = "no: code here");
        });
        assert_eq!(recs[0].failure(), Some("no: code here"), "kept whole");
        assert_eq!(recs[0].sqlstate(), None);
        assert_eq!(append.sqlstate(), Some("ES101"), "from the error's text");
        assert_eq!(cmd.failure(), append.failure());
        assert_eq!(cmd.sqlstate(), Some("ES101"));
    }

    #[test]
    fn a_span_named_like_its_parent_is_the_same_span() {
        let host = TestHost::new();
        let recs = host.run(|| {
            let entry = info_span!(
                target: "event_store::api",
                "event_store.append_events",
                aggregate_id = tracing::field::Empty,
                expected_version = 3i64,
            );
            let _g = entry.enter();
            entry.record("aggregate_id", tracing::field::display(ACCOUNT));
            append(ACCOUNT, Some(3), 2).unwrap();
        });
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(
            r.attr("aggregate_id"),
            Some(AttrValue::Uuid(*ACCOUNT.as_bytes()))
        );
        assert_eq!(r.attr("expected_version"), Some(AttrValue::Int(3)));
        assert_eq!(r.attr("events_count"), Some(AttrValue::Int(2)));
        assert_eq!(
            r.attr("event_sourcing.operation"),
            Some(AttrValue::Str("append"))
        );
    }

    #[test]
    fn the_clients_context_and_sampling_decide_the_root() {
        let mut host = TestHost::new();
        let tp = TraceParent {
            trace_id: [5; 16],
            parent_id: [6; 8],
            sampled: true,
        };
        host.context = Some(tp);
        let recs = host.run(|| {
            deposit(1).unwrap();
        });
        let cmd = &recs[1];
        assert_eq!((cmd.trace_id, cmd.parent_id), ([5; 16], [6; 8]));
        assert!(cmd.parent_remote());
        assert!(!recs[0].parent_remote(), "only the root's parent is remote");

        host.context = Some(TraceParent {
            sampled: false,
            ..tp
        });
        assert!(
            host.run(|| drop(deposit(1))).is_empty(),
            "unsampled context"
        );
        host.context = None;
        host.ratio = 0.0;
        assert!(host.run(|| drop(deposit(1))).is_empty(), "ratio 0");
        host.ratio = 1.0;
        host.on = false;
        assert!(host.run(|| drop(deposit(1))).is_empty(), "tracing off");
    }

    #[test]
    fn a_span_closed_by_a_panic_is_failed() {
        let host = TestHost::new();
        let recs = host.run(|| {
            let r = std::panic::catch_unwind(|| {
                let span = info_span!(target: "event_store::api", "account.state");
                let _g = span.enter();
                panic!("relation does not exist");
            });
            assert!(r.is_err());
            // the stack is clean again: the next span is a root
            let _s = info_span!(target: "event_store::api", "account.history").entered();
        });
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].failure(), Some("the call failed"));
        assert_eq!(recs[0].sqlstate(), Some("XX000"));
        assert_eq!(recs[1].parent_id, [0; 8]);
    }

    #[test]
    fn every_span_of_the_crate_is_recorded_under_its_declared_name() {
        let host = TestHost::new();
        let recs = host.run(|| {
            let _a = info_span!(target: "other_crate", "command.deposit").entered();
            let _b = info_span!(
                target: "event_store::api",
                "subscription.poll",
                subscription = "billing",
                partition = 3i64,
                db.operation = "SELECT",
            )
            .entered();
            let _c = info_span!(target: "event_store::store", "a.new.step").entered();
        });
        assert_eq!(recs.len(), 2, "other crates' spans are never enabled");
        assert_eq!(recs[0].name(), "a.new.step");
        assert_eq!(recs[1].name(), "subscription.poll");
        assert_eq!(recs[0].parent_id, recs[1].span_id);
        assert_eq!(
            recs[1].parent_id, [0; 8],
            "the other crate's span is no parent"
        );
        assert_eq!(
            recs[1].attrs().collect::<Vec<_>>(),
            vec![
                ("subscription", AttrValue::Str("billing")),
                ("partition", AttrValue::Int(3)),
                ("db.operation", AttrValue::Str("SELECT")),
            ]
        );
    }

    #[test]
    fn text_buffers_cut_at_a_character_boundary() {
        let t = Text::<5>::of(&format_args!("ééé"));
        assert_eq!(t.as_str(), "éé");
    }
}
