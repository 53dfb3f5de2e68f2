//! The append pipeline (docs/reference.md §2): validate every element, take the stream row (the only lock an
//! append needs, so appends to different streams never wait for each other), check the expected
//! version on the row version the bump replaces, draw global positions, insert. The events'
//! jsonb datums are stored as the caller sent them (the store only reads a few keys); an account
//! command's event is completed with the seed's metadata once its version is known.
//!
//! What a kind of stream adds (the account rules) comes in through [`StreamRules`]: the pipeline
//! knows nothing about accounts, and the account module builds on the pipeline, not the reverse.

use super::personal;
use super::sql::{SET_STATE_REVISION, STREAM_VERSION};
use crate::pg::call::{
    CallMemory, JsonbArray, NotElements, event_datums, i64_datum, text_datum, transaction_start,
    uuid_datum,
};
use crate::pg::heap::{self, Bump, EventRow, Kept, Outcome, StreamHead};
use crate::pg::insert::{self, Conflict};
use crate::pg::jsonb::Jsonb;
use crate::pg::jsonb::write::{jsonb_from_text, jsonb_object};
use crate::pg::positions;
use crate::pg::spi::{Arg, Connection, Reading, Rows, Stmt};
use crate::store::life;
use event_store_core::event::{check_sequence_numbers, validate_event};
use event_store_core::expected::{StoredId, check_batch_ids_unique, classify_retry};
use event_store_core::lifecycle::check_not_reserved;
use event_store_core::personal::{
    Path, TOKEN_PREFIX, is_token, seals_only_strings, string_json, subject_of,
};
use event_store_core::shape::{Pairs, Scalar, StoredAs, seed_event, seed_event_type};
use event_store_core::{EventMeta, EventStoreError, ExpectedVersion, RetryDecision};
use pgrx::pg_sys::BuiltinOid::{INT8OID, JSONBOID, TEXTOID, UUIDARRAYOID, UUIDOID};
use pgrx::pg_sys::{BuiltinOid, Datum};
use uuid::Uuid;

/// A decoded `events` array: its elements and what the core read from each; borrows the array
/// for `'a`.
pub struct Batch<'a> {
    /// The array as passed (stored as-is by the SQL insert of a batch); `None` for a command's
    /// event, which is never in a batch of more than one.
    array: Option<JsonbArray<'a>>,
    /// Each element, detoasted (none for a command's event built without jsonb: [`Batch::command`]).
    pub elements: Vec<Jsonb<'a>>,
    /// What the core read from each element.
    pub metas: Vec<EventMeta>,
    /// An account command's one event: its payload (`type` first) and the seed's type name. It
    /// is stored completed with the seed's metadata (`event_id`, `aggregate_id`,
    /// `sequence_number`, … of docs/reference.md §5) once the version is known; `None` for
    /// `es.append_events`, whose events are stored as sent.
    command: Option<(Pairs, &'static str)>,
    /// The store's own marker (`$stream_deleted`, `$stream_undeleted`): its reserved type is
    /// allowed, and it may be appended to a deleted stream (a soft-deleted one escalated to a
    /// tombstone, or undeleted).
    marker: bool,
}

impl<'a> Batch<'a> {
    /// Reads and validates every element for an append to `stream` (ES003 naming the element,
    /// 22004 for a NULL one, 22023 for a multi-dimensional array, ES004 for an id given twice).
    pub fn decode(array: JsonbArray<'a>, stream: &Uuid) -> Result<Batch<'a>, EventStoreError> {
        let batch = Batch::decode_any(array, stream)?;
        for (i, m) in batch.metas.iter().enumerate() {
            check_not_reserved(i + 1, &m.event_type)?;
        }
        Ok(batch)
    }

    /// [`Batch::decode`] without the check of reserved types.
    fn decode_any(array: JsonbArray<'a>, stream: &Uuid) -> Result<Batch<'a>, EventStoreError> {
        let elements = array.elements().map_err(not_elements)?;
        let metas = elements
            .iter()
            .enumerate()
            .map(|(i, j)| validate_event(i + 1, &j.raw_event(), stream))
            .collect::<Result<Vec<_>, _>>()?;
        // Only a batch giving two ids or more can repeat one: the common batch allocates
        // nothing for the check.
        if metas
            .iter()
            .filter(|m| m.event_id.is_some())
            .nth(1)
            .is_some()
        {
            check_ids_unique(&metas)?;
        }
        Ok(Batch {
            array: Some(array),
            elements,
            metas,
            command: None,
            marker: false,
        })
    }

    /// The store's marker event `json` (its `type` is reserved), stored as built.
    pub fn marker(
        memory: CallMemory<'a>,
        json: &str,
        stream: &Uuid,
    ) -> Result<Batch<'a>, EventStoreError> {
        let element = jsonb_from_text(json);
        let mut batch = Batch::decode_any(JsonbArray::of(memory, &[element]), stream)?;
        batch.marker = true;
        Ok(batch)
    }

    /// The one event of an account command whose rules judge the command, not the element
    /// (deposit, withdraw, freeze, close): `payload` is the event's `type` and fields; no jsonb
    /// is built until the insert, which stores it in the seed's whole shape
    /// ([`event_store_core::shape::seed_event`]). Why: the commands are an account's hot path.
    pub fn command(payload: Pairs) -> Batch<'a> {
        let event_type = match payload.first() {
            Some(("type", Scalar::Text(t))) => t.clone(),
            _ => String::new(),
        };
        let seed_type = seed_event_type(&event_type).unwrap_or_default();
        Batch {
            array: None,
            elements: Vec::new(),
            metas: vec![EventMeta {
                event_type,
                event_id: None,
                occurred_at: None,
                event_version: 1,
                has_metadata: false,
                sequence_number: None,
            }],
            command: Some((payload, seed_type)),
            marker: false,
        }
    }

    /// [`Batch::command`] for a command whose rules read the element (`es.open_account`, judged
    /// like an appended `Opened`): validated like an appended element, stored in the seed's shape.
    pub fn checked_command(
        memory: CallMemory<'a>,
        payload: Pairs,
        stream: &Uuid,
    ) -> Result<Batch<'a>, EventStoreError> {
        let element = jsonb_object(&payload);
        let mut batch = Batch::decode(JsonbArray::of(memory, &[element]), stream)?;
        let seed_type = seed_event_type(&batch.metas[0].event_type).unwrap_or_default();
        batch.command = Some((payload, seed_type));
        Ok(batch)
    }

    /// Seals the values at the personal-data paths of the batch's event types with their
    /// subjects' keys (docs/lifecycle.md "Forgetting a subject"), before anything judges or stores the
    /// batch: the account's rules, a type's `check` and `evolve`, the kept state, snapshots and
    /// the rows all see the sealed form only, so no copy of the cleartext is ever written (the
    /// cleartext was validated by `decode`). A batch of types without paths costs one lookup in
    /// the registry's cache. `memory` is the call's, where the sealed elements are built (needed
    /// when the batch has elements).
    pub fn seal_personal_data(
        &mut self,
        memory: Option<CallMemory<'a>>,
        stream: &Uuid,
    ) -> Result<(), EventStoreError> {
        let Some(registry) = personal::paths() else {
            return Ok(());
        };
        if !self
            .metas
            .iter()
            .any(|m| registry.contains_key(&m.event_type))
        {
            return Ok(());
        }
        self.seal(&registry, memory, stream)
    }

    /// [`Batch::seal_personal_data`] once some event of the batch has paths to seal: out of
    /// the common append's code, which only looks the types up.
    #[cold]
    #[inline(never)]
    fn seal(
        &mut self,
        registry: &crate::pg::registry::PersonalPaths,
        memory: Option<CallMemory<'a>>,
        stream: &Uuid,
    ) -> Result<(), EventStoreError> {
        let stream_text = stream.to_string();
        // The keys are found or made in a connection of their own, closed before the sealed
        // elements are built, so they are built in the call's memory.
        let mut edits: Vec<(usize, Vec<(Path, String)>)> = Vec::new();
        {
            let conn = Connection::connect();
            let mut sealer = personal::Sealer::new(&conn);
            if let Some((payload, _)) = self.command.as_mut()
                && let Some(paths) = registry.get(&self.metas[0].event_type)
            {
                for (key, value) in payload.iter_mut() {
                    if let Scalar::Text(t) = value
                        && !is_token(t)
                        && paths.iter().any(|p| p.len() == 1 && p[0] == *key)
                    {
                        *t = sealer.seal(&stream_text, &string_json(t))?;
                    }
                }
            }
            for (i, element) in self.elements.iter().enumerate() {
                let Some(paths) = registry.get(&self.metas[i].event_type) else {
                    continue;
                };
                let named = match element.get_in(c"metadata", c"data_subject") {
                    event_store_core::JsonField::String(s) => Some(s.to_owned()),
                    _ => None,
                };
                let subject = subject_of(named.as_deref(), &stream_text);
                let only_strings = seals_only_strings(&self.metas[i].event_type);
                let mut sealed = Vec::new();
                for path in paths.iter() {
                    let Some(text) = element.text_at_path(path) else {
                        continue;
                    };
                    if text == "null"
                        || text.starts_with(&format!("\"{TOKEN_PREFIX}"))
                        || (only_strings && !text.starts_with('"'))
                    {
                        continue;
                    }
                    sealed.push((path.clone(), sealer.seal(&subject, &text)?));
                }
                if !sealed.is_empty() {
                    edits.push((i, sealed));
                }
            }
        }
        if edits.is_empty() {
            return Ok(());
        }
        // Only a batch with elements has edits, and it comes with the call's memory (a
        // command's batch has none).
        let Some(call_memory) = memory else {
            pgrx::error!("event_store: a batch with elements sealed without the call's memory");
        };
        for (i, sealed) in edits {
            let sealed: Vec<(Path, String)> = sealed
                .into_iter()
                .map(|(path, token)| (path, string_json(&token)))
                .collect();
            self.elements[i] = self.elements[i].with_replaced(call_memory, &sealed);
        }
        if self.array.is_some() {
            let datums: Vec<Datum> = self.elements.iter().map(Jsonb::datum).collect();
            self.array = Some(JsonbArray::of(call_memory, &datums));
        }
        Ok(())
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// No events.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }
}

/// The error for an `events` array of more than one dimension or with a NULL element (out of
/// the decoder's common code, as every error path of the append is).
#[cold]
#[inline(never)]
fn not_elements(why: NotElements) -> EventStoreError {
    match why {
        NotElements::Dimensions(ndim) => EventStoreError::InvalidArgument {
            name: "events",
            reason: format!("a one-dimensional array is expected, got {ndim} dimensions"),
        },
        NotElements::Null(position) => EventStoreError::NullElement { position },
    }
}

/// ES004 when a batch gives one event id twice (only a batch giving two ids or more gets here).
#[cold]
#[inline(never)]
fn check_ids_unique(metas: &[EventMeta]) -> Result<(), EventStoreError> {
    let ids: Vec<Option<Uuid>> = metas.iter().map(|m| m.event_id).collect();
    check_batch_ids_unique(&ids)
}

/// What a kind of stream adds to an append (the account rules are one). The pipeline calls it
/// with the stream row as the bump finds it, natively before the row is replaced and again when
/// a concurrent append replaced it first, so its decision always follows the version the append
/// extends.
pub trait StreamRules {
    /// Judges the stream row before the bump: the state to store with the bump (`None`: keep
    /// the row's), or why the append is refused.
    fn check_head(
        &mut self,
        conn: &Connection,
        head: &StreamHead<'_>,
    ) -> Result<Option<Kept>, EventStoreError>;

    /// After the events are inserted: the stream went from `old` to `new`.
    fn appended(&mut self, conn: &Connection, old: i64, new: i64);

    /// The error for a stream that must exist and does not.
    fn missing(&self, stream: &Uuid) -> EventStoreError;
}

/// The stream's current version (0 when it does not exist), as of the latest commits.
pub fn current_version(conn: &Connection, stream: &Uuid) -> i64 {
    conn.execute(&STREAM_VERSION, &[Some(uuid_datum(stream))])
        .first_i64()
        .unwrap_or(0)
}

/// Appends a non-empty batch: bump (with `rules`), positions, insert, `rules.appended`. A
/// stream the append creates gets the type `stream_type` gives, asked only then.
/// Traced as the seed's `event_store.append_events` (within `es.append_events` it is the entry
/// point's own span).
#[tracing::instrument(
    name = "event_store.append_events",
    skip_all,
    fields(
        aggregate_id = %stream,
        expected_version = expected.as_sql(),
        events_count = batch.len(),
        db.system = "postgresql",
        db.operation = "INSERT",
        event_sourcing.operation = "append"
    ),
    err
)]
pub fn append(
    conn: &Connection,
    stream: &Uuid,
    expected: ExpectedVersion,
    batch: &Batch<'_>,
    rules: &mut dyn StreamRules,
    stream_type: &dyn Fn() -> Option<String>,
) -> Result<i64, EventStoreError> {
    let n = batch.len() as i64;
    let has_ids = batch.metas.iter().any(|m| m.event_id.is_some());
    // Read only when some event gives its id (an empty Vec allocates nothing).
    let ids: Vec<Option<Uuid>> = match has_ids {
        true => batch.metas.iter().map(|m| m.event_id).collect(),
        false => Vec::new(),
    };
    // The statements' stream id, made where one runs: the native append makes it with its
    // first row's datums instead ([`insert`]).
    let sid = || Some(uuid_datum(stream));
    // The new stream's type, decided only where a statement creates the stream.
    let new_type = || -> Arg { stream_type().as_deref().map(text_datum) };
    let bumped = match expected {
        ExpectedVersion::Any | ExpectedVersion::StreamExists => {
            if has_ids && let Some(returned) = retry_before_bump(conn, stream, expected, &ids)? {
                return Ok(returned);
            }
            // The stream exists on every append but its first, so bump first (natively when
            // possible) and create the stream only when there is none.
            let bumped = match bump_native(conn, stream, None, n, batch.marker, rules) {
                Some(result) => result?,
                None => bump_with_sql(
                    conn,
                    &BUMP_EXISTING,
                    &[sid(), Some(i64_datum(n))],
                    stream,
                    n,
                    batch.marker,
                    rules,
                )?,
            };
            match bumped {
                Some(v) => Some(v),
                None if expected == ExpectedVersion::Any => bump_with_sql(
                    conn,
                    &UPSERT_ANY,
                    &[sid(), new_type(), Some(i64_datum(n))],
                    stream,
                    n,
                    batch.marker,
                    rules,
                )?,
                None => return Err(rules.missing(stream)),
            }
        }
        ExpectedVersion::Exact(v) => {
            match bump_native(conn, stream, Some(v), n, batch.marker, rules) {
                Some(result) => result?,
                None => bump_with_sql(
                    conn,
                    &BUMP_EXACT,
                    &[sid(), Some(i64_datum(v)), Some(i64_datum(n))],
                    stream,
                    n,
                    batch.marker,
                    rules,
                )?,
            }
        }
        ExpectedVersion::NoStream => bump_with_sql(
            conn,
            &CREATE_NEW,
            &[sid(), new_type(), Some(i64_datum(n))],
            stream,
            n,
            batch.marker,
            rules,
        )?,
    };
    let Some(new_version) = bumped else {
        return not_bumped(conn, stream, expected, &ids);
    };
    if has_ids
        && matches!(
            expected,
            ExpectedVersion::Exact(_) | ExpectedVersion::NoStream
        )
    {
        // The bump won, so this is no retry; an id stored elsewhere would only meet the unique
        // index, which cannot say where: look first, so ES004 names the stream and version.
        // (`Any` / `StreamExists` looked before the bump.)
        retry_or_duplicate(conn, stream, expected, &ids)?;
    }
    let first_version = new_version - n + 1;
    check_sequence_numbers(&batch.metas, first_version)?;
    // the positions are drawn inside, as late as they can be (docs/reference.md §3)
    let first_position = insert(conn, stream, first_version, batch)?;
    crate::pg::wake::appended(
        stream.as_bytes(),
        first_position + (n - 1),
        batch.metas.iter().map(|m| m.event_type.as_str()),
    );
    rules.appended(conn, first_version - 1, new_version);
    Ok(new_version)
}

/// With event ids and an `Any`/`StreamExists` expectation: takes the stream row and looks for a
/// retry while holding it, so a concurrent twin cannot slip in; `Some(version)` when the whole
/// call is already stored (out of the common append's code, as every path with ids is).
#[cold]
#[inline(never)]
fn retry_before_bump(
    conn: &Connection,
    stream: &Uuid,
    expected: ExpectedVersion,
    ids: &[Option<Uuid>],
) -> Result<Option<i64>, EventStoreError> {
    let current = conn
        .execute(&LOCK_STREAM, &[Some(uuid_datum(stream))])
        .first_i64()
        .unwrap_or(0);
    expected.check(stream, current)?;
    retry_or_duplicate(conn, stream, expected, ids)
}

/// The bump through SQL (`stmt`, one of the bump statements, with `args`) and the rules'
/// judgement of the row it returns ([`check_bumped_row`]): the new version, `None` when no row
/// was bumped. Out of the native append's code: it runs where the native bump cannot (and on a
/// stream's first append).
#[cold]
#[inline(never)]
fn bump_with_sql(
    conn: &Connection,
    stmt: &Stmt,
    args: &[Arg],
    stream: &Uuid,
    n: i64,
    marker: bool,
    rules: &mut dyn StreamRules,
) -> Result<Option<i64>, EventStoreError> {
    let rows = conn.execute(stmt, args);
    check_bumped_row(conn, stream, n, &rows, marker, rules)
}

/// An `Exact`/`NoStream` append whose bump lost: the version this very call already appended
/// (a retry with its ids), else the stream's deletion or the version conflict.
#[cold]
#[inline(never)]
fn not_bumped(
    conn: &Connection,
    stream: &Uuid,
    expected: ExpectedVersion,
    ids: &[Option<Uuid>],
) -> Result<i64, EventStoreError> {
    if !ids.is_empty()
        && let Some(returned) = retry_or_duplicate(conn, stream, expected, ids)?
    {
        return Ok(returned);
    }
    // A deleted stream says so rather than which version it is at.
    if let Some(deleted) = life::of(conn, stream, Reading::Latest).deleted_error(stream) {
        return Err(deleted);
    }
    Err(expected.conflict(stream, current_version(conn, stream)))
}

/// The native bump: `Some(Ok(Some(new version)))`, `Some(Ok(None))` when the stream is missing
/// or elsewhere, `None` when the SQL statement must do it.
fn bump_native(
    conn: &Connection,
    stream: &Uuid,
    expected: Option<i64>,
    n: i64,
    marker: bool,
    rules: &mut dyn StreamRules,
) -> Option<Result<Option<i64>, EventStoreError>> {
    let mut check = |head: &StreamHead<'_>| {
        // A deleted stream takes no appends but the store's markers; judged on the row the
        // bump replaces, so an append that waited for a deletion's lock sees it.
        if let Some(hard) = head.deleted
            && !marker
        {
            return Err(life::deleted_error(conn, stream, hard));
        }
        rules.check_head(conn, head)
    };
    match heap::bump_stream(stream, expected, n, &mut check) {
        Outcome::Done(Ok(Bump::Updated { old_version })) => Some(Ok(Some(old_version + n))),
        Outcome::Done(Ok(Bump::ChangedDuringAppend)) => Some(Err(changed_during_append(stream))),
        Outcome::Done(Ok(_)) => Some(Ok(None)),
        Outcome::Done(Err(e)) => Some(Err(e)),
        Outcome::Fallback => None,
    }
}

/// The error for a stream row that a function the append called (a check or evolve) changed
/// while the append judged it.
#[cold]
#[inline(never)]
fn changed_during_append(stream: &Uuid) -> EventStoreError {
    EventStoreError::AggregateFailed {
        stream_type: String::new(),
        reason: format!(
            "stream {stream} was changed during its own append by a function the append called (a check or evolve that updates es.streams)"
        ),
        raised: None,
    }
}

/// After a bump through SQL: the rules judge the returned row (version, stream_type, state) and
/// the state they decide is stored with one more statement. Returns the new version (`None`:
/// no row was bumped).
fn check_bumped_row(
    conn: &Connection,
    stream: &Uuid,
    n: i64,
    rows: &Rows<'_>,
    marker: bool,
    rules: &mut dyn StreamRules,
) -> Result<Option<i64>, EventStoreError> {
    let sid = Some(uuid_datum(stream));
    let Some(version) = rows.first_i64() else {
        return Ok(None);
    };
    // The bump statements do not name the columns of a stream's life (a 0.1.0 schema lacks
    // them): the row this transaction just updated says whether the stream is deleted. A row
    // the statement created (it was at version 0) is not: no look-up on a stream's first append.
    if !marker
        && version > n
        && let Some(deleted) = life::of(conn, stream, Reading::Latest).deleted_error(stream)
    {
        return Err(deleted);
    }
    // (The bump statements do not return `state_revision`, which a schema of 0.1.0 lacks: a
    // declared type's kept state is then taken as stale and recomputed, which is only slower;
    // nor `deleted`: a deleted stream was refused just above.)
    // columns 2 and 3 of the bump statements: `stream_type text` and `state jsonb`
    let head = StreamHead::from_rows(rows, 0, version - n, 2, 3);
    if let Some(kept) = rules.check_head(conn, &head)? {
        match kept.revision {
            None => conn.execute(&SET_STATE, &[sid, Some(kept.state)]),
            Some(r) => conn.execute(
                &SET_STATE_REVISION,
                &[sid, Some(kept.state), Some(i64_datum(r))],
            ),
        };
    }
    Ok(Some(version))
}

/// Looks the batch's ids up: `Some(version)` when the whole call is already stored (return it),
/// `None` when none is, ES004 for any other reuse.
#[cold]
#[inline(never)]
fn retry_or_duplicate(
    conn: &Connection,
    stream: &Uuid,
    expected: ExpectedVersion,
    ids: &[Option<Uuid>],
) -> Result<Option<i64>, EventStoreError> {
    let given: Vec<Arg> = ids
        .iter()
        .flatten()
        .map(|id| Some(uuid_datum(id)))
        .collect();
    let array = crate::pg::call::array_of(
        &given,
        BuiltinOid::UUIDOID,
        16,
        false,
        pgrx::pg_sys::TYPALIGN_CHAR,
    );
    let rows = conn.execute(&FIND_EVENT_IDS, &[Some(array)]);
    let stored: Vec<StoredId> = (0..rows.len())
        .filter_map(|r| {
            // FIND_EVENT_IDS returns (event_id uuid, stream_id uuid, version bigint)
            Some(StoredId {
                event_id: rows.uuid(r, 1)?,
                stream_id: rows.uuid(r, 2)?,
                version: rows.i64(r, 3).unwrap_or(0),
            })
        })
        .collect();
    match classify_retry(stream, expected, ids, &stored) {
        RetryDecision::Append => Ok(None),
        RetryDecision::AlreadyAppended { returned } => Ok(Some(returned)),
        RetryDecision::Duplicate(err) => Err(err),
    }
}

/// Builds the rows, draws their global positions and stores them; returns the first position.
/// The draw comes after every step that does not need the positions (the rows, the table's
/// opening and checks), directly before the heap insert: the shorter a writer holds positions
/// before its commit, the less a gap-safe reader waits for it (docs/reference.md §3). A unique
/// violation is ES004 (an event id stored by a transaction that committed after the checks, or
/// one reused across streams) or 55000 (a position the sequence handed out although it is
/// stored), never a raw 23505.
fn insert(
    conn: &Connection,
    stream: &Uuid,
    first_version: i64,
    batch: &Batch<'_>,
) -> Result<i64, EventStoreError> {
    let now = transaction_start();
    // `stream` as a datum, made with the first row's datums and shared by every row.
    let mut sid: Arg = None;
    let mut row = |i: usize, m: &EventMeta| -> EventRow {
        let event_id = m.event_id.unwrap_or_else(Uuid::now_v7);
        let (stream_datum, id_datum, type_datum) =
            event_datums(sid.is_none().then_some(stream), &event_id, &m.event_type);
        sid = sid.or(stream_datum);
        let element = batch.elements.get(i);
        let data = match &batch.command {
            Some((payload, seed_type)) => Some(jsonb_object(&seed_event(
                payload.clone(),
                seed_type,
                &StoredAs {
                    event_id,
                    aggregate_id: *stream,
                    sequence_number: first_version + i as i64,
                    occurred_at: now.value() as i64,
                },
            ))),
            None => element.map(Jsonb::datum),
        };
        [
            // a placeholder for the global position: insert::insert_events draws it and writes it
            // into the stored rows
            Some(i64_datum(0)),
            sid,
            Some(i64_datum(first_version + i as i64)),
            Some(id_datum),
            Some(type_datum),
            Some(Datum::from(m.event_version)),
            data,
            m.has_metadata
                .then(|| element.and_then(|e| e.get_container(c"metadata")))
                .flatten(),
            Some(m.occurred_at.map_or(now, Datum::from)),
            Some(now),
        ]
    };
    // The one row of a one-event append stays on the stack (no heap allocation per append).
    let mut one: [EventRow; 1];
    let mut many: Vec<EventRow>;
    let rows: &mut [EventRow] = match &batch.metas[..] {
        [m] => {
            one = [row(0, m)];
            &mut one
        }
        metas => {
            many = metas.iter().enumerate().map(|(i, m)| row(i, m)).collect();
            &mut many
        }
    };
    let n = rows.len() as i64;
    insert::insert_events(
        conn,
        rows,
        batch.array.map_or(Datum::from(0usize), |a| a.datum()),
        || positions::prepare_draw(conn, n),
    )
    .map_err(|conflict| match conflict {
        // Only an id committed by another transaction after the look-up above gets here.
        Conflict::EventId(event_id) => EventStoreError::DuplicateEventId {
            event_id,
            stored_at: "by a concurrent append that committed first".into(),
        },
        Conflict::Position(position) => {
            // The sequence is behind the log (set back, or a promoted logical subscriber that
            // was checked before its subscription went away): check it again next time.
            positions::forget_sequence_check();
            EventStoreError::PositionTaken { position }
        }
    })?
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// NULL expected version: create the stream or add `n` to its version; returns (version,
/// stream_type, state).
pub static UPSERT_ANY: Stmt = Stmt::new(
    "UpsertAny",
    c"INSERT INTO es.streams AS s (stream_id, stream_type, version) VALUES ($1, $2, $3)
                  ON CONFLICT (stream_id) DO UPDATE
                  SET version = s.version + excluded.version, updated_at = transaction_timestamp()
                  RETURNING s.version, s.stream_type, s.state",
    &[UUIDOID, TEXTOID, INT8OID],
);

/// -1: add `n` to an existing stream's version.
pub static BUMP_EXISTING: Stmt = Stmt::new(
    "BumpExisting",
    c"UPDATE es.streams SET version = version + $2, updated_at = transaction_timestamp()
                  WHERE stream_id = $1 RETURNING version, stream_type, state",
    &[UUIDOID, INT8OID],
);

/// N > 0: add `n` only if the stream is at exactly N.
pub static BUMP_EXACT: Stmt = Stmt::new(
    "BumpExact",
    c"UPDATE es.streams SET version = version + $3, updated_at = transaction_timestamp()
                  WHERE stream_id = $1 AND version = $2 RETURNING version, stream_type, state",
    &[UUIDOID, INT8OID, INT8OID],
);

/// 0: create the stream only if it does not exist.
pub static CREATE_NEW: Stmt = Stmt::new(
    "CreateNew",
    c"INSERT INTO es.streams (stream_id, stream_type, version) VALUES ($1, $2, $3)
                  ON CONFLICT (stream_id) DO NOTHING RETURNING version, stream_type, state",
    &[UUIDOID, TEXTOID, INT8OID],
);

/// Lock the stream row (idempotency checks need the stream still while they look).
pub static LOCK_STREAM: Stmt = Stmt::new(
    "LockStream",
    c"SELECT version, stream_type FROM es.streams WHERE stream_id = $1 FOR UPDATE",
    &[UUIDOID],
);

/// Where the given event ids are stored.
pub static FIND_EVENT_IDS: Stmt = Stmt::new(
    "FindEventIds",
    c"SELECT event_id, stream_id, version FROM es.events WHERE event_id = ANY ($1)",
    &[UUIDARRAYOID],
)
.generic_plan();

/// Store an account stream's state (when the version bump went through SPI).
pub static SET_STATE: Stmt = Stmt::new(
    "SetState",
    c"UPDATE es.streams SET state = $2 WHERE stream_id = $1",
    &[UUIDOID, JSONBOID],
);
