//! Aggregates for any domain (docs/accounts-and-aggregates.md "Aggregates for any domain"): the rules of every typed
//! stream on the append path ([`TypedRules`], the pipeline's [`StreamRules`] for
//! `es.append_events`, of which the account's rules are one case), the declared types'
//! management (`es.define_aggregate`, `es.alter_aggregate`, `es.drop_aggregate`,
//! `es.define_upcaster`, `es.drop_upcaster`), their reads (`es.state`, `es.history`, the steps of
//! `es.replay`) and `es.rebuild_states`' batches.
//!
//! A declared type's functions are the user's code: each call runs as the type's definer in a
//! security-restricted operation ([`crate::pg::udf::UserFn`]), and each run of them (one
//! append's checks and folds, one state, one history, one stream of a rebuild) goes through
//! [`crate::pg::udf::guarded`]: the settings it changes are rolled back, and when it fails the
//! call raises the error at once, so the transaction's abort undoes what it left behind; an
//! error it raises in `check` reaches the caller unchanged.

use super::account::AccountRules;
use super::account_json::AccountJson;
use super::pipeline::{Batch, StreamRules};
use super::sql::{SET_STATE_REVISION, VERSION_AS_OF, VERSION_AS_OF_ARCHIVED};
use super::stream::visit_events;
use crate::pg::backend::Memory;
use crate::pg::call::{
    CallMemory, ResultSet, TypedDatum, Value, i64_datum, text_datum, uuid_datum,
};
use crate::pg::heap::{Kept, StreamHead};
use crate::pg::jsonb::Jsonb;
use crate::pg::registry::{self, AggregateType};
use crate::pg::security;
use crate::pg::spi::{Connection, Reading, Stmt};
use crate::pg::udf::{self, Fold, OpenError, StepError, UserFn};
use crate::store::upcast::Upcasting;
use event_store_core::account::{AccountState, snapshot_due};
use event_store_core::lifecycle::is_reserved;
use event_store_core::{ACCOUNT_STREAM_TYPE, EventStoreError, JsonField};
use pgrx::pg_sys::BuiltinOid::{BOOLOID, INT4OID, INT8OID, JSONBOID, OIDOID, TEXTOID, UUIDOID};
use pgrx::pg_sys::{self, Datum, Oid};
use std::cell::RefCell;
use std::rc::Rc;
use uuid::Uuid;

thread_local! {
    /// The streams whose append or rebuild is running a declared type's functions right now
    /// (innermost last: a function may append to another stream).
    static JUDGING: RefCell<Vec<Uuid>> = const { RefCell::new(Vec::new()) };
}

/// Marks a stream as being judged by its type's functions while the value lives: an append
/// those functions make to the same stream is refused ([`TypedRules::check_head`]). It would
/// otherwise change the stream row under the append that called them (the row the append is
/// about to replace, or has just created and not yet filled in). Removed on every path out,
/// an ERROR included (it unwinds through here as a panic).
struct Judging(Uuid);

impl Judging {
    fn enter(stream: &Uuid) -> Judging {
        JUDGING.with_borrow_mut(|streams| streams.push(*stream));
        Judging(*stream)
    }

    fn active(stream: &Uuid) -> bool {
        JUDGING.with_borrow(|streams| streams.contains(stream))
    }
}

impl Drop for Judging {
    fn drop(&mut self) {
        JUDGING.with_borrow_mut(|streams| {
            if let Some(i) = streams.iter().rposition(|s| *s == self.0) {
                streams.remove(i);
            }
        });
    }
}

/// The rules of `es.append_events`: the stream's type is checked against the one the call
/// names, an account is judged by the account's rules, a stream of a declared type by its
/// `check` and `evolve`, event by event, and a generic stream not at all.
pub struct TypedRules<'b> {
    stream: Uuid,
    batch: &'b Batch<'b>,
    named: Option<&'b str>,
    account: AccountRules<'b>,
    /// The type and the state after the batch, once judged (for the snapshot).
    judged: Option<(Rc<AggregateType>, Datum)>,
}

impl<'b> TypedRules<'b> {
    /// The rules of one `es.append_events` call; `named` is its `stream_type` argument.
    pub fn new(stream: &Uuid, batch: &'b Batch<'b>, named: Option<&'b str>) -> TypedRules<'b> {
        TypedRules {
            stream: *stream,
            batch,
            named,
            account: AccountRules::for_batch(stream, batch),
            judged: None,
        }
    }
}

/// The type a stream created by `es.append_events` gets: the one it names, else the rule for
/// its first event's type, else none.
pub fn type_of_new_stream(
    conn: &Connection,
    named: Option<&str>,
    first_event_type: &str,
) -> Option<String> {
    match named {
        Some(t) => Some(t.to_owned()),
        None => registry::inferred_type(conn, first_event_type),
    }
}

impl StreamRules for TypedRules<'_> {
    fn check_head(
        &mut self,
        conn: &Connection,
        head: &StreamHead<'_>,
    ) -> Result<Option<Kept>, EventStoreError> {
        self.judged = None;
        // The common cases first, without reading the type's name: an account, a generic stream.
        if self.named.is_none() {
            if head.account {
                return self.account.check_head(conn, head);
            }
            if !head.has_type() {
                return Ok(None);
            }
        }
        // A typed stream's judge calls the type's functions through fmgr inside a GUC nest
        // level of its own (`udf::guarded`): the search path is pinned, and SPI connected, in
        // the connection's own level before it, as on every path that runs the user's code.
        conn.pin();
        let stored = head.stream_type();
        if Judging::active(&self.stream) {
            let stream_type = stored.unwrap_or_default();
            return Err(EventStoreError::AggregateFailed {
                reason: format!(
                    "stream {} is being appended to or rebuilt: the check and evolve functions \
                     of its type {stream_type} cannot append to it",
                    self.stream
                ),
                stream_type,
                raised: None,
            });
        }
        if let Some(named) = self.named
            && stored.as_deref() != Some(named)
        {
            return Err(EventStoreError::StreamTypeConflict {
                stream_id: self.stream.to_string(),
                stored: stored.unwrap_or_else(|| "none (a generic stream)".into()),
                named: named.to_owned(),
            });
        }
        if head.account {
            return self.account.check_head(conn, head);
        }
        let Some(stream_type) = stored else {
            return Ok(None);
        };
        let Some(def) = registry::aggregate_type(conn, &stream_type) else {
            return Ok(None);
        };
        if def.native {
            return Ok(None);
        }
        let state = judge(conn, &self.stream, &def, head, self.batch)?;
        let revision = def.revision;
        self.judged = Some((def, state));
        Ok(Some(Kept {
            state,
            revision: Some(revision),
        }))
    }

    fn appended(&mut self, conn: &Connection, old: i64, new: i64) {
        self.account.appended(conn, old, new);
        if let Some((def, state)) = self.judged.take() {
            let every = i64::from(def.snapshot_every.unwrap_or(0));
            if snapshot_due(old, new, every) {
                save_snapshot(conn, &self.stream, new, state, def.revision);
            }
        }
    }

    fn missing(&self, stream: &Uuid) -> EventStoreError {
        EventStoreError::StreamNotFound {
            stream_id: stream.to_string(),
        }
    }
}

/// Writes a snapshot computed by `revision`.
fn save_snapshot(conn: &Connection, stream: &Uuid, version: i64, state: Datum, revision: i64) {
    conn.execute(
        &SAVE_SNAPSHOT_REVISION,
        &[
            Some(uuid_datum(stream)),
            Some(i64_datum(version)),
            Some(state),
            Some(i64_datum(revision)),
        ],
    );
}

/// ES301 for a function that cannot be opened.
fn open_failed(def: &AggregateType, what: &str, oid: Oid, e: OpenError) -> EventStoreError {
    let reason = match e {
        OpenError::Missing => format!(
            "the {what} function of aggregate type {} no longer exists (it was dropped or renamed)",
            def.stream_type
        ),
        OpenError::NotAllowed => format!(
            "the definer of aggregate type {} may not execute its {what} function {}",
            def.stream_type,
            udf::function_name(oid)
        ),
    };
    EventStoreError::AggregateFailed {
        stream_type: def.stream_type.clone(),
        reason,
        raised: None,
    }
}

/// Opens a type's `evolve`.
fn open_evolve(def: &AggregateType) -> Result<UserFn, EventStoreError> {
    UserFn::open(def.evolve, 2, def.definer).map_err(|e| open_failed(def, "evolve", def.evolve, e))
}

/// ES301 for an evolve step that failed at `version`, or the error itself when it is one a
/// user must see as it is (a cancel, a statement timeout, running out of memory or stack).
fn step_failed(def: &AggregateType, evolve: Oid, version: i64, e: StepError) -> EventStoreError {
    let name = udf::function_name(evolve);
    let (what, raised) = match e {
        StepError::Raised(raised) => {
            if udf::passes_through(&raised.sqlstate) {
                return EventStoreError::Raised(raised);
            }
            (
                "raised an error".to_owned(),
                Some(format!("{}: {}", raised.sqlstate, raised.message)),
            )
        }
        StepError::Null => ("returned NULL".to_owned(), None),
        StepError::NotAnObject(kind) => (format!("returned {kind}, not a JSON object"), None),
    };
    EventStoreError::AggregateFailed {
        stream_type: def.stream_type.clone(),
        reason: format!(
            "evolve function {name} of aggregate type {} {what} at version {version}",
            def.stream_type
        ),
        raised,
    }
}

/// `event` as its upcasters make it (unchanged without upcasters), in the current memory
/// context.
fn upcast_event<'a>(
    up: &mut Option<Upcasting>,
    event: Jsonb<'a>,
) -> Result<Jsonb<'a>, EventStoreError> {
    match up {
        Some(u) => Ok(u.apply(event)?.map_or(event, |(j, _)| j)),
        None => Ok(event),
    }
}

/// Judges a batch appended to a stream of a declared type: from the state the row's version
/// holds, each event is checked (the check's error refuses the append unchanged) and folded;
/// the state after the batch, in the current memory context.
fn judge(
    conn: &Connection,
    stream: &Uuid,
    def: &AggregateType,
    head: &StreamHead<'_>,
    batch: &Batch<'_>,
) -> Result<Datum, EventStoreError> {
    let _judging = Judging::enter(stream);
    udf::guarded(|| {
        let evolve = open_evolve(def)?;
        let mut check = match def.check {
            Some(oid) => Some(
                UserFn::open(oid, 2, def.definer).map_err(|e| open_failed(def, "check", oid, e))?,
            ),
            None => None,
        };
        let kept = head
            .state()
            .filter(|_| head.state_revision == Some(def.revision) && head.old_version > 0);
        let mut fold = match kept {
            Some(state) => Fold::new(evolve, state.datum()),
            None if head.old_version == 0 => Fold::new(evolve, def.initial_state_datum()),
            None => {
                let start = state_at(conn, stream, def, head.old_version, Reading::Latest)?;
                Fold::new(evolve, start)
            }
        };
        let evolve_oid = fold.function();
        let mut up = Upcasting::load(conn);
        for (i, element) in batch.elements.iter().enumerate() {
            let version = head.old_version + i as i64 + 1;
            // The store's markers ($stream_deleted, $stream_undeleted) are shown to check,
            // which may refuse them, and never folded: evolve sees only the domain's events.
            let marker = is_reserved(&batch.metas[i].event_type);
            // an event appended at an older version is checked and folded as it is read
            let event = if marker {
                element.datum()
            } else {
                fold.in_step(|_| upcast_event(&mut up, *element).map(|e| e.datum()))?
            };
            if let Some(check) = check.as_mut() {
                fold.in_step(|state| check.call(&[state, event]))
                    .map_err(EventStoreError::Raised)?;
            }
            if !marker {
                fold.step(event)
                    .map_err(|e| step_failed(def, evolve_oid, version, e))?;
            }
        }
        Ok(fold.finish())
    })
}

/// A declared type's state at `version` of `stream`: the newest snapshot of the type's current
/// revision at or below it, plus the tail folded with `evolve` (in the current memory
/// context). Runs the user's code: call it inside [`udf::guarded`].
fn state_at(
    conn: &Connection,
    stream: &Uuid,
    def: &AggregateType,
    version: i64,
    reading: Reading,
) -> Result<Datum, EventStoreError> {
    fold_at(conn, stream, def, version, reading).map(Fold::finish)
}

/// The fold of a stream's state up to `version`, not yet finished (see [`state_at`]).
fn fold_at(
    conn: &Connection,
    stream: &Uuid,
    def: &AggregateType,
    version: i64,
    reading: Reading,
) -> Result<Fold, EventStoreError> {
    let evolve = open_evolve(def)?;
    let snap = conn.query_as(
        reading,
        &LOAD_SNAPSHOT_REVISION,
        &[
            Some(uuid_datum(stream)),
            Some(i64_datum(version)),
            Some(i64_datum(def.revision)),
        ],
    );
    let snapshot_state = if snap.is_empty() {
        None
    } else {
        snap.jsonb(0, 2)
    };
    let (from, mut fold) = match (snap.first_i64(), snapshot_state) {
        (Some(at), Some(state)) => (at, Fold::new(evolve, state.datum())),
        _ => (0, Fold::new(evolve, def.initial_state_datum())),
    };
    let evolve_oid = fold.function();
    let mut up = Upcasting::load(conn);
    visit_events(conn, stream, from, version, reading, &mut |row| {
        if row.is_marker() {
            return Ok(());
        }
        let event = fold.in_step(|_| upcast_event(&mut up, row.data()).map(|e| e.datum()))?;
        fold.step(event)
            .map_err(|e| step_failed(def, evolve_oid, row.version, e))
    })?;
    Ok(fold)
}

/// What `es.state` and `es.history` find for a stream: its row and its type's definition.
struct Typed<'c> {
    /// Events below this version were removed by a truncation.
    truncated_before: Option<i64>,
    version: i64,
    state: Option<Jsonb<'c>>,
    state_revision: Option<i64>,
    def: Rc<AggregateType>,
}

/// The stream and its declared type (ES002 / ES303).
fn typed_stream<'c>(conn: &'c Connection, stream: &Uuid) -> Result<Typed<'c>, EventStoreError> {
    let info = registry::stream_info(conn, stream).ok_or(EventStoreError::StreamNotFound {
        stream_id: stream.to_string(),
    })?;
    let no_type = |t: &str| EventStoreError::NoAggregateType {
        what: format!("stream {stream} ({t})"),
    };
    let Some(stream_type) = info.stream_type else {
        return Err(no_type("a generic stream"));
    };
    let def = registry::aggregate_type(conn, &stream_type)
        .ok_or_else(|| no_type(&format!("type {stream_type}")))?;
    // A deleted stream reads as gone, with its own error (ES007).
    let life = super::life::of(conn, stream, Reading::Statement);
    life.check_live(stream)?;
    Ok(Typed {
        truncated_before: life.truncated_before,
        version: info.version,
        state: info.state,
        state_revision: info.state_revision,
        def,
    })
}

/// What `es.state` returns.
pub enum State<'a> {
    /// An account's state (rendered by the caller).
    Account(AccountState),
    /// A declared type's state, a jsonb value in the call's memory.
    Declared(Jsonb<'a>),
    /// The stream did not exist yet at `as_of`.
    NotYet,
}

/// `es.state`: the state at `at_version` (default: the current one), or at the newest version
/// recorded at or before `as_of`, whichever is older; from the kept state when that is the
/// one asked for, else the newest usable snapshot plus the tail.
pub fn state<'a>(
    memory: CallMemory<'a>,
    stream: &Uuid,
    at_version: Option<i64>,
    as_of: Option<Datum>,
) -> Result<State<'a>, EventStoreError> {
    // The state is returned in the call's memory (`memory`), which outlives the SPI
    // connection below (SPI_connect switches to a context of its own, freed at SPI_finish).
    let conn = Connection::connect();
    let typed = typed_stream(&conn, stream)?;
    if typed.def.native {
        std::mem::drop(conn);
        return Ok(
            match super::audit::account_state(stream, as_of, at_version)? {
                Some(s) => State::Account(s),
                None => State::NotYet,
            },
        );
    }
    let Some(target) = target_version(&conn, stream, typed.version, at_version, as_of)? else {
        return Ok(State::NotYet);
    };
    let def = &typed.def;
    if target == typed.version
        && typed.state_revision == Some(def.revision)
        && let Some(state) = typed.state
    {
        // copied out of the SPI result before the connection ends
        return Ok(State::Declared(state.copy_to_call(memory)));
    }
    let state = udf::guarded(|| {
        fold_at(&conn, stream, def, target, Reading::Statement)
            .map(|fold| fold.finish_to_call(memory))
    })?;
    Ok(State::Declared(state))
}

/// The version a time-travel read looks at (`None`: the stream did not exist yet at `as_of`).
fn target_version(
    conn: &Connection,
    stream: &Uuid,
    current: i64,
    at_version: Option<i64>,
    as_of: Option<Datum>,
) -> Result<Option<i64>, EventStoreError> {
    let mut target = current;
    if let Some(v) = at_version {
        if v < 1 {
            return Err(EventStoreError::InvalidArgument {
                name: "at_version",
                reason: format!("{v} is below 1 (versions start at 1; NULL means the current one)"),
            });
        }
        if v > current {
            return Err(EventStoreError::InvalidArgument {
                name: "at_version",
                reason: format!("{v} is beyond the stream's current version {current}"),
            });
        }
        target = v;
    }
    if let Some(t) = as_of {
        let rows = conn.query(
            if super::read::through_archive() {
                &VERSION_AS_OF_ARCHIVED
            } else {
                &VERSION_AS_OF
            },
            &[Some(uuid_datum(stream)), Some(i64_datum(target)), Some(t)],
        );
        let found = rows.first_i64();
        if found.is_none() {
            // before its first stored event: not created yet, unless a truncation removed the
            // events of that time
            super::life::check_found_as_of(conn, stream, t, Reading::Statement)?;
        }
        return Ok(found);
    }
    Ok(Some(target))
}

/// `es.history`: one row per event (version, event_type, data, state after it, recorded_at).
pub fn history(stream: &Uuid, out: &mut ResultSet) -> Result<(), EventStoreError> {
    // data and state may hold sealed values
    super::personal::reveal_columns(out, &[2, 3], &[]);
    let conn = Connection::connect();
    let typed = typed_stream(&conn, stream)?;
    let def = typed.def.clone();
    // A truncated stream's history starts after the snapshot the truncation kept.
    let from = typed.truncated_before.map_or(0, |t| t - 1);
    if def.native {
        let mut state = if from > 0 {
            super::account::load_state(&conn, stream, from, Reading::Statement)?
        } else {
            AccountState::default()
        };
        return visit_events(
            &conn,
            stream,
            from,
            typed.version,
            Reading::Statement,
            &mut |row| {
                let data = row.data();
                state.apply(&data.account_event().decode()?)?;
                put_history_row(
                    out,
                    row.version,
                    row.event_type(),
                    Value::Jsonb(data),
                    Value::Object(&state.pairs()),
                    row.recorded_at(),
                );
                Ok(())
            },
        );
    }
    udf::guarded(|| {
        let start = if from > 0 {
            state_at(&conn, stream, &def, from, Reading::Statement)?
        } else {
            def.initial_state_datum()
        };
        let mut fold = Fold::new(open_evolve(&def)?, start);
        let evolve_oid = fold.function();
        let mut up = Upcasting::load(&conn);
        visit_events(
            &conn,
            stream,
            from,
            typed.version,
            Reading::Statement,
            &mut |row| {
                let marker = row.is_marker();
                let data = if marker {
                    row.data()
                } else {
                    fold.in_step(|_| upcast_event(&mut up, row.data()))?
                };
                // shown as folded; copied out of the step's context, which the step resets
                let shown = data.copy_into(Memory::current());
                if !marker {
                    fold.step(data.datum())
                        .map_err(|e| step_failed(&def, evolve_oid, row.version, e))?;
                }
                put_history_row(
                    out,
                    row.version,
                    row.event_type(),
                    Value::Jsonb(shown),
                    Value::Jsonb(fold.state_jsonb()),
                    row.recorded_at(),
                );
                Ok(())
            },
        )
    })
}

fn put_history_row(
    out: &mut ResultSet,
    version: i64,
    event_type: TypedDatum<'_>,
    data: Value<'_>,
    state: Value<'_>,
    recorded_at: i64,
) {
    // the declared columns: bigint, text, jsonb, jsonb, timestamptz
    out.put_values(&[
        Value::Int8(version),
        Value::Column(event_type),
        data,
        state,
        Value::TimestampTz(recorded_at),
    ]);
}

/// The running fold of the `es.replay` aggregate for one group.
pub enum Replay {
    /// The account's native fold.
    Account(AccountState),
    /// A declared type's fold, in the aggregate's memory context.
    Declared {
        /// The definition it folds with.
        def: Rc<AggregateType>,
        /// The fold.
        fold: Fold,
        /// Rows folded so far (the version named in an error).
        rows: i64,
        /// The upcasters, if any.
        up: Option<Upcasting>,
    },
}

impl Replay {
    /// The fold of `stream_type` for a new group, from `initial` (default: the type's initial
    /// state); allocates in the current memory context (the aggregate's).
    pub fn start(stream_type: &str, initial: Option<Jsonb<'_>>) -> Result<Replay, EventStoreError> {
        let def = {
            let conn = Connection::connect();
            registry::aggregate_type(&conn, stream_type)
        }
        .ok_or_else(|| EventStoreError::NoAggregateType {
            what: format!("stream type {stream_type}"),
        })?;
        if def.native {
            return Ok(Replay::Account(super::replay::start_from(initial)?));
        }
        if let Some(initial) = &initial
            && !matches!(initial.shape(), JsonField::Object)
        {
            return Err(EventStoreError::InvalidArgument {
                name: "initial_state",
                reason: format!("{} is not a JSON object", udf::shape_name(&initial.shape())),
            });
        }
        let evolve = open_evolve(&def)?;
        let start = initial.map_or_else(|| def.initial_state_datum(), |j| j.datum());
        let up = Upcasting::load_unconnected();
        Ok(Replay::Declared {
            fold: Fold::new(evolve, start),
            def,
            rows: 0,
            up,
        })
    }

    /// Folds one event (`None`: a NULL event).
    pub fn step(&mut self, event: Option<Jsonb<'_>>) -> Result<(), EventStoreError> {
        match self {
            Replay::Account(state) => super::replay::step(state, event),
            Replay::Declared {
                def,
                fold,
                rows,
                up,
            } => {
                *rows += 1;
                let Some(event) = event else {
                    return Err(EventStoreError::AggregateFailed {
                        stream_type: def.stream_type.clone(),
                        reason: format!(
                            "es.replay of type {} got a NULL event at row {rows}",
                            def.stream_type
                        ),
                        raised: None,
                    });
                };
                let evolve = fold.function();
                let at = *rows;
                if let JsonField::String(t) = event.get(c"type")
                    && is_reserved(t)
                {
                    // the store's markers are not folded (as on the append path)
                    return Ok(());
                }
                udf::guarded(|| {
                    let event = fold.in_step(|_| upcast_event(up, event).map(|e| e.datum()))?;
                    fold.step(event)
                        .map_err(|e| step_failed(def, evolve, at, e))
                })
            }
        }
    }

    /// The state so far, as jsonb in the current memory context.
    pub fn state(&self) -> Datum {
        match self {
            Replay::Account(state) => super::account::state_datum(state),
            Replay::Declared { fold, .. } => fold.state_copy(),
        }
    }
}

/// The arguments of `es.define_aggregate` / `es.alter_aggregate`.
pub struct Definition<'a> {
    /// The type's name.
    pub stream_type: String,
    /// `evolve`.
    pub evolve: Oid,
    /// The initial state (a jsonb argument of the call).
    pub initial_state: Jsonb<'a>,
    /// `check`, if any.
    pub check: Option<Oid>,
    /// The snapshot interval.
    pub snapshot_every: i32,
}

/// Checks that `oid` takes `args` jsonb arguments and returns `returns` (not a set, a plain
/// function), and that `role` may execute it.
fn check_signature(
    conn: &Connection,
    what: &str,
    role_of: &str,
    oid: Oid,
    args: usize,
    returns: &str,
    role: Oid,
) -> Result<(), String> {
    let rows = conn.query(&FUNCTION_INFO, &[Some(Datum::from(oid))]);
    if rows.is_empty() {
        return Err(format!(
            "{role_of}: there is no function with OID {}",
            oid.to_u32()
        ));
    }
    let name = rows.text(0, 5).unwrap_or_default();
    if name.starts_with("es.") {
        return Err(format!(
            "{what} {name} is the store's own function: a declared type brings its own"
        ));
    }
    let expected_args = vec![pg_sys::JSONBOID.to_u32().to_string(); args].join(",");
    let ok = rows.text(0, 1).as_deref() == Some(expected_args.as_str())
        && rows.text(0, 2).as_deref() == Some(returns)
        && rows.bool(0, 3) == Some(false)
        && rows.text(0, 4).as_deref() == Some("f");
    if !ok {
        let jsonbs = vec!["jsonb"; args].join(", ");
        return Err(format!(
            "{what} {name} must be a function ({jsonbs}) RETURNS {returns}"
        ));
    }
    if UserFn::open(oid, args, role).is_err() {
        return Err(format!("the current role may not execute {what} {name}"));
    }
    Ok(())
}

/// The owner of the store's tables (the owner of the function being called), who writes them.
fn store_owner(entry: Oid) -> Oid {
    security::function_owner(entry).unwrap_or_else(security::current_user)
}

/// Validates a definition and returns the role it will run as (the current user).
fn validate(conn: &Connection, d: &Definition<'_>) -> Result<Oid, EventStoreError> {
    let invalid = |reason: String| EventStoreError::InvalidDefinition {
        what: format!("aggregate type {}", d.stream_type),
        reason,
    };
    if d.stream_type.is_empty() {
        return Err(EventStoreError::InvalidArgument {
            name: "stream_type",
            reason: "it is empty".into(),
        });
    }
    if d.snapshot_every < 0 {
        return Err(EventStoreError::InvalidArgument {
            name: "snapshot_every",
            reason: format!("{} is negative (0 means no snapshots)", d.snapshot_every),
        });
    }
    let shape = d.initial_state.shape();
    if !matches!(shape, JsonField::Object) {
        return Err(invalid(format!(
            "initial_state is {}, not a JSON object",
            udf::shape_name(&shape)
        )));
    }
    let definer = security::current_user();
    check_signature(conn, "evolve", "evolve", d.evolve, 2, "jsonb", definer).map_err(invalid)?;
    if let Some(check) = d.check {
        check_signature(conn, "check", "check", check, 2, "void", definer).map_err(invalid)?;
    }
    Ok(definer)
}

fn definition_args(d: &Definition<'_>, definer: Oid) -> [Option<Datum>; 6] {
    [
        Some(text_datum(&d.stream_type)),
        Some(Datum::from(d.evolve)),
        d.check.map(Datum::from),
        Some(d.initial_state.datum()),
        Some(Datum::from(d.snapshot_every)),
        Some(Datum::from(definer)),
    ]
}

/// `es.define_aggregate`.
pub fn define(d: &Definition<'_>, entry: Oid) -> Result<(), EventStoreError> {
    let conn = Connection::connect();
    let definer = validate(&conn, d)?;
    let rows = security::definer_as(store_owner(entry), || {
        conn.execute(&AGGREGATE_INSERT, &definition_args(d, definer))
            .first_i64()
    });
    if rows.is_none() {
        return Err(EventStoreError::AlreadyDefined {
            what: format!("aggregate type {}", d.stream_type),
        });
    }
    Ok(())
}

/// `es.alter_aggregate`.
pub fn alter(d: &Definition<'_>, entry: Oid) -> Result<(), EventStoreError> {
    if d.stream_type == ACCOUNT_STREAM_TYPE {
        return Err(EventStoreError::BuiltInAggregate {
            stream_type: d.stream_type.clone(),
            action: "altered",
        });
    }
    let conn = Connection::connect();
    let definer = validate(&conn, d)?;
    let rows = security::definer_as(store_owner(entry), || {
        conn.execute(&AGGREGATE_UPDATE, &definition_args(d, definer))
            .first_i64()
    });
    if rows.is_none() {
        return Err(EventStoreError::NoAggregateType {
            what: format!("stream type {}", d.stream_type),
        });
    }
    Ok(())
}

/// `es.drop_aggregate`.
pub fn drop(stream_type: &str, detach: bool, entry: Oid) -> Result<(), EventStoreError> {
    if stream_type == ACCOUNT_STREAM_TYPE {
        return Err(EventStoreError::BuiltInAggregate {
            stream_type: stream_type.to_owned(),
            action: "dropped",
        });
    }
    let conn = Connection::connect();
    let t = Some(text_datum(stream_type));
    security::definer_as(store_owner(entry), || {
        let streams = conn
            .execute(&STREAMS_OF_TYPE, &[t])
            .first_i64()
            .unwrap_or(0);
        if streams > 0 && !detach {
            return Err(EventStoreError::AggregateInUse {
                stream_type: stream_type.to_owned(),
                streams,
            });
        }
        if conn.execute(&AGGREGATE_DELETE, &[t]).is_empty() {
            return Err(EventStoreError::NoAggregateType {
                what: format!("stream type {stream_type}"),
            });
        }
        if detach {
            conn.execute(&DETACH_STREAMS, &[t]);
        }
        Ok(())
    })
}

/// `es.define_upcaster`.
pub fn define_upcaster(
    event_type: &str,
    from_version: i32,
    upcast: Oid,
    entry: Oid,
) -> Result<(), EventStoreError> {
    if from_version < 1 {
        return Err(EventStoreError::InvalidArgument {
            name: "from_version",
            reason: format!("{from_version} is below 1 (event versions start at 1)"),
        });
    }
    let conn = Connection::connect();
    let definer = security::current_user();
    check_signature(&conn, "upcast", "upcast", upcast, 1, "jsonb", definer).map_err(|reason| {
        EventStoreError::InvalidDefinition {
            what: format!("upcaster of {event_type} version {from_version}"),
            reason,
        }
    })?;
    let inserted = security::definer_as(store_owner(entry), || {
        conn.execute(
            &UPCASTER_INSERT,
            &[
                Some(text_datum(event_type)),
                Some(Datum::from(from_version)),
                Some(Datum::from(upcast)),
                Some(Datum::from(definer)),
            ],
        )
        .first_i64()
    });
    if inserted.is_none() {
        return Err(EventStoreError::AlreadyDefined {
            what: format!("upcaster of {event_type} version {from_version}"),
        });
    }
    // What the folds read changed: every declared type's kept states and snapshots are stale
    // (recomputed from the log until es.rebuild_states), as after es.alter_aggregate.
    security::definer_as(store_owner(entry), || conn.execute(&REVISE_ALL, &[]));
    Ok(())
}

/// `es.drop_upcaster`.
pub fn drop_upcaster(
    event_type: &str,
    from_version: i32,
    entry: Oid,
) -> Result<(), EventStoreError> {
    let conn = Connection::connect();
    let deleted = security::definer_as(store_owner(entry), || {
        conn.execute(
            &UPCASTER_DELETE,
            &[
                Some(text_datum(event_type)),
                Some(Datum::from(from_version)),
            ],
        )
        .first_i64()
    });
    if deleted.is_none() {
        return Err(EventStoreError::NoSuchSubscription {
            kind: "upcaster",
            name: format!("{event_type} version {from_version}"),
        });
    }
    security::definer_as(store_owner(entry), || conn.execute(&REVISE_ALL, &[]));
    Ok(())
}

/// One batch of `es.rebuild_states`: up to `batch` streams of the type whose kept state is not
/// of its current revision get it recomputed from the log, with their snapshots (those of other
/// revisions removed, new ones at every multiple of the interval); returns how many. Streams an
/// append holds are skipped (that append keeps a state of the current revision itself).
pub fn rebuild_batch(stream_type: &str, batch: i64) -> Result<i64, EventStoreError> {
    if batch < 1 {
        return Err(EventStoreError::InvalidArgument {
            name: "batch_size",
            reason: format!("{batch} is below 1"),
        });
    }
    let conn = Connection::connect();
    let def = registry::aggregate_type(&conn, stream_type).ok_or_else(|| {
        EventStoreError::NoAggregateType {
            what: format!("stream type {stream_type}"),
        }
    })?;
    if def.native {
        return Ok(0);
    }
    let t = Some(text_datum(stream_type));
    let revision = Some(i64_datum(def.revision));
    let rows = conn.execute(&STALE_STREAMS, &[t, revision, Some(i64_datum(batch))]);
    let streams: Vec<(Uuid, i64)> = (0..rows.len())
        .filter_map(|r| Some((rows.uuid(r, 1)?, rows.i64(r, 2)?)))
        .collect();
    conn.execute(&REBUILD_MARK, &[t, Some(Datum::from(!streams.is_empty()))]);
    for (stream, version) in &streams {
        rebuild_stream(&conn, &def, stream, *version)?;
    }
    Ok(streams.len() as i64)
}

/// Recomputes one (locked) stream's kept state and snapshots.
fn rebuild_stream(
    conn: &Connection,
    def: &AggregateType,
    stream: &Uuid,
    version: i64,
) -> Result<(), EventStoreError> {
    let sid = Some(uuid_datum(stream));
    let revision = Some(i64_datum(def.revision));
    conn.execute(&DELETE_STALE_SNAPSHOTS, &[sid, revision]);
    let every = i64::from(def.snapshot_every.unwrap_or(0));
    let _judging = Judging::enter(stream);
    let state = udf::guarded(|| {
        let mut fold = Fold::new(open_evolve(def)?, def.initial_state_datum());
        let evolve_oid = fold.function();
        let mut up = Upcasting::load(conn);
        visit_events(conn, stream, 0, version, Reading::Latest, &mut |row| {
            let event = fold.in_step(|_| upcast_event(&mut up, row.data()).map(|e| e.datum()))?;
            fold.step(event)
                .map_err(|e| step_failed(def, evolve_oid, row.version, e))?;
            if every > 0 && row.version % every == 0 {
                save_snapshot(conn, stream, row.version, fold.state(), def.revision);
            }
            Ok(())
        })?;
        Ok::<_, EventStoreError>(fold.finish())
    })?;
    conn.execute(&SET_STATE_REVISION, &[sid, Some(state), revision]);
    Ok(())
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// The newest snapshot at or below a version computed by a given revision.
pub static LOAD_SNAPSHOT_REVISION: Stmt = Stmt::new(
    "LoadSnapshotRevision",
    c"SELECT version, state, taken_at FROM es.snapshots
                  WHERE stream_id = $1 AND version <= coalesce($2, 9223372036854775807)
                    AND revision = $3
                  ORDER BY version DESC LIMIT 1",
    &[UUIDOID, INT8OID, INT8OID],
);

/// Save (or replace) a snapshot with the revision that computed it.
pub static SAVE_SNAPSHOT_REVISION: Stmt = Stmt::new(
    "SaveSnapshotRevision",
    c"INSERT INTO es.snapshots (stream_id, version, state, revision) VALUES ($1, $2, $3, $4)
                  ON CONFLICT (stream_id, version) DO UPDATE
                  SET state = excluded.state, taken_at = transaction_timestamp(),
                      revision = excluded.revision",
    &[UUIDOID, INT8OID, JSONBOID, INT8OID],
);

/// What a function is: (argument types, result type, returns a set, kind, its
/// regprocedure text); no row when it does not exist.
pub static FUNCTION_INFO: Stmt = Stmt::new(
    "FunctionInfo",
    c"SELECT array_to_string(p.proargtypes::oid[], ','), p.prorettype::regtype::text, p.proretset,
                         p.prokind::text, p.oid::regprocedure::text
                    FROM pg_catalog.pg_proc p WHERE p.oid = $1",
    &[OIDOID],
);

/// Declare an aggregate type (no row when the name is taken).
pub static AGGREGATE_INSERT: Stmt = Stmt::new(
    "AggregateInsert",
    c"INSERT INTO es.aggregate_types (stream_type, evolve, \"check\", initial_state,
                                                 snapshot_every, revision, definer)
                  VALUES ($1, $2::regprocedure::text, $3::regprocedure::text, $4, $5,
                          nextval('es.aggregate_revision_seq'), $6)
                  ON CONFLICT (stream_type) DO NOTHING RETURNING revision",
    &[TEXTOID, OIDOID, OIDOID, JSONBOID, INT4OID, OIDOID],
);

/// Replace an aggregate type's definition with a new revision (no row: no such type).
pub static AGGREGATE_UPDATE: Stmt = Stmt::new(
    "AggregateUpdate",
    c"UPDATE es.aggregate_types
                     SET evolve = $2::regprocedure::text, \"check\" = $3::regprocedure::text,
                         initial_state = $4, snapshot_every = $5,
                         revision = nextval('es.aggregate_revision_seq'), definer = $6,
                         defined_at = transaction_timestamp(),
                         rebuild_started_at = NULL, rebuild_finished_at = NULL
                   WHERE stream_type = $1 AND NOT native RETURNING revision",
    &[TEXTOID, OIDOID, OIDOID, JSONBOID, INT4OID, OIDOID],
);

/// Remove an aggregate type (no row: no such type).
pub static AGGREGATE_DELETE: Stmt = Stmt::new(
    "AggregateDelete",
    c"DELETE FROM es.aggregate_types WHERE stream_type = $1 AND NOT native
                  RETURNING revision",
    &[TEXTOID],
);

/// How many streams are of a type.
pub static STREAMS_OF_TYPE: Stmt = Stmt::new(
    "StreamsOfType",
    c"SELECT count(*) FROM es.streams WHERE stream_type = $1",
    &[TEXTOID],
);

/// Forget the kept states of a type's streams (a drop with detach).
pub static DETACH_STREAMS: Stmt = Stmt::new(
    "DetachStreams",
    c"UPDATE es.streams SET state = NULL, state_revision = NULL
                  WHERE stream_type = $1 AND state IS NOT NULL",
    &[TEXTOID],
);

/// Declare an upcaster (no row when it exists).
pub static UPCASTER_INSERT: Stmt = Stmt::new(
    "UpcasterInsert",
    c"INSERT INTO es.upcasters (event_type, from_version, upcast, definer)
                  VALUES ($1, $2, $3::regprocedure::text, $4) ON CONFLICT DO NOTHING
                  RETURNING from_version",
    &[TEXTOID, INT4OID, OIDOID, OIDOID],
);

/// Remove an upcaster (no row: none).
pub static UPCASTER_DELETE: Stmt = Stmt::new(
    "UpcasterDelete",
    c"DELETE FROM es.upcasters WHERE event_type = $1 AND from_version = $2
                  RETURNING from_version",
    &[TEXTOID, INT4OID],
);

/// Up to n streams of a type whose kept state is not of a revision, locked (skipping
/// those locked by an append; a later batch takes them).
pub static STALE_STREAMS: Stmt = Stmt::new(
    "StaleStreams",
    c"SELECT stream_id, version FROM es.streams
                  WHERE stream_type = $1 AND state_revision IS DISTINCT FROM $2
                    AND deleted IS DISTINCT FROM 'hard'
                  ORDER BY stream_id LIMIT $3 FOR UPDATE SKIP LOCKED",
    &[TEXTOID, INT8OID, INT8OID],
);

/// Remove a stream's snapshots of other revisions.
pub static DELETE_STALE_SNAPSHOTS: Stmt = Stmt::new(
    "DeleteStaleSnapshots",
    c"DELETE FROM es.snapshots WHERE stream_id = $1 AND revision IS DISTINCT FROM $2",
    &[UUIDOID, INT8OID],
);

/// Mark a rebuild's start or end in es.aggregate_types.
pub static REBUILD_MARK: Stmt = Stmt::new(
    "RebuildMark",
    c"UPDATE es.aggregate_types
                     SET rebuild_started_at = CASE WHEN $2 THEN clock_timestamp() ELSE rebuild_started_at END,
                         rebuild_finished_at = CASE WHEN $2 THEN NULL ELSE clock_timestamp() END
                   WHERE stream_type = $1",
                &[TEXTOID, BOOLOID],
);

/// A new revision for every declared type (an upcaster changes what their folds read).
pub static REVISE_ALL: Stmt = Stmt::new(
    "ReviseAll",
    c"UPDATE es.aggregate_types
                     SET revision = nextval('es.aggregate_revision_seq'),
                         rebuild_started_at = NULL, rebuild_finished_at = NULL
                   WHERE NOT native",
    &[],
);
