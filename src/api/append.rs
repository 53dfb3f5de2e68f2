//! `es.append_events(stream_id, expected_version, events jsonb[]) RETURNS bigint` (SPEC §2).
//!
//! One call, one round trip: validate every element, take the stream row (the only lock an
//! append needs, so appends to different streams never wait for each other), check the expected
//! version in the same statement that bumps it, draw global positions, insert. The events'
//! jsonb datums are stored as the caller sent them; the store only reads a few keys.
//!
//! An account stream (its first event is `Opened`) gets the account rules on this path too,
//! checked while the stream row is held, and its automatic snapshots (SPEC §4, §5).

use super::account;
use super::{Call, i64_datum, text_datum, uuid_datum};
use crate::core::account::{AccountState, Command};
use crate::core::append::{StoredId, check_batch_ids_unique, classify_retry};
use crate::core::event::{check_sequence_numbers, stream_type_for, validate_event};
use crate::core::trace::expected_version_value;
use crate::core::{
    ACCOUNT_STREAM_TYPE, EventMeta, EventStoreError, ExpectedVersion, RetryDecision,
};
use crate::jsonb::Jsonb;
use crate::native::{self, Bump, EventRow, Outcome, StreamHead};
use crate::shmem;
use crate::storage::{Arg, Rows, Spi, Stmt, position_sequence};
use pgrx::pg_sys::{self, BuiltinOid, Datum};
use pgrx::{PgSqlErrorCode, PgTryBuilder};
use uuid::Uuid;

crate::sql_function!(es_append_events, pg_finfo_es_append_events, append_events);

/// The decoded `events` argument; its elements borrow the array for `'a`.
pub(crate) struct Batch<'a> {
    /// The array datum as passed (stored as-is by the batch insert).
    array: Datum,
    /// Each element, detoasted.
    pub(crate) elements: Vec<Jsonb<'a>>,
    /// What the core read from each element.
    metas: Vec<EventMeta>,
}

fn append_events(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let stream = call.uuid(0, "stream_id")?;
    let expected = ExpectedVersion::from_sql(call.i64(1))?;
    let array = call.required(2, "events")?;
    // SAFETY: argument 2 is the jsonb[] of the declaration, valid for the call.
    let batch = unsafe { decode_batch(array, &stream)? };
    let spi = Spi::connect();
    let version = if batch.metas.is_empty() {
        let current = current_version(&spi, &stream);
        expected.check(&stream, current)?;
        current
    } else {
        append(&spi, &stream, expected, &batch, Rules::Enforce)?
    };
    Ok(i64_datum(version))
}

/// Reads and validates the `events` array.
///
/// # Safety
/// `array` must be a non-null `jsonb[]` datum that stays valid for `'a`, and the current
/// memory context must outlive `'a` (detoasted copies go there).
pub(crate) unsafe fn decode_batch<'a>(
    array: Datum,
    stream: &Uuid,
) -> Result<Batch<'a>, EventStoreError> {
    // SAFETY: the caller's contract; the array is detoasted into the current context and
    // deconstructed into arrays of `n` datums and flags (palloc'd there), copied out.
    let (datums, nulls) = unsafe {
        let arr = pg_sys::pg_detoast_datum(array.cast_mut_ptr()).cast::<pg_sys::ArrayType>();
        if (*arr).ndim > 1 {
            return Err(EventStoreError::InvalidArgument {
                name: "events",
                reason: format!(
                    "a one-dimensional array is expected, got {} dimensions",
                    (*arr).ndim
                ),
            });
        }
        let mut elems: *mut Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n = 0;
        pg_sys::deconstruct_array(
            arr,
            BuiltinOid::JSONBOID.value(),
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
            &mut elems,
            &mut nulls,
            &mut n,
        );
        let n = n as usize;
        if n == 0 {
            (Vec::new(), Vec::new())
        } else {
            (
                std::slice::from_raw_parts(elems, n).to_vec(),
                std::slice::from_raw_parts(nulls, n).to_vec(),
            )
        }
    };
    if let Some(i) = nulls.iter().position(|&isnull| isnull) {
        return Err(EventStoreError::NullElement { position: i + 1 });
    }
    // SAFETY: non-null elements of a jsonb[] (NULLs refused above), pointing into the detoasted
    // array, which lives in the current context for 'a.
    let elements: Vec<Jsonb<'a>> = datums
        .iter()
        .map(|&d| unsafe { Jsonb::from_datum(d) })
        .collect();
    let metas = elements
        .iter()
        .enumerate()
        .map(|(i, j)| validate_event(i + 1, &j.raw_event(), stream))
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<Option<Uuid>> = metas.iter().map(|m| m.event_id).collect();
    check_batch_ids_unique(&ids)?;
    Ok(Batch {
        array,
        elements,
        metas,
    })
}

fn current_version(spi: &Spi, stream: &Uuid) -> i64 {
    let rows = spi.read_latest(Stmt::StreamVersion, &[Some(uuid_datum(stream))]);
    rows.first_i64().unwrap_or(0)
}

/// How an append is judged by the account rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rules {
    /// `es.append_events`: an append to an account stream is checked event by event; other
    /// streams are not judged.
    Enforce,
    /// An account command: the stream must be an account (ES104) and the command is decided
    /// against its state, with the command's own errors.
    Command(Command),
}

/// Appends a non-empty batch: bump, (account rules), positions, insert, (automatic snapshot).
/// Traced as the seed's `event_store.append_events` (within `es.append_events` it is the entry
/// point's own span).
#[tracing::instrument(
    name = "event_store.append_events",
    skip_all,
    fields(
        aggregate_id = %stream,
        expected_version = expected_version_value(expected),
        events_count = batch.metas.len(),
        db.system = "postgresql",
        db.operation = "INSERT",
        event_sourcing.operation = "append"
    ),
    err
)]
pub(crate) fn append(
    spi: &Spi,
    stream: &Uuid,
    expected: ExpectedVersion,
    batch: &Batch<'_>,
    rules: Rules,
) -> Result<i64, EventStoreError> {
    let n = batch.metas.len() as i64;
    let ids: Vec<Option<Uuid>> = batch.metas.iter().map(|m| m.event_id).collect();
    let has_ids = ids.iter().any(Option::is_some);
    let sid = Some(uuid_datum(stream));
    let new_type = stream_type_for(&batch.metas[0].event_type);
    let stream_type: Arg = new_type.map(text_datum);

    // The account rules judge the stream row as the bump finds it (natively: before the row is
    // replaced, and again if a concurrent append replaced it first), so their decision always
    // follows the version this append extends. The state after the batch is stored in the row.
    let mut judged: Option<(AccountState, String)> = None;
    let mut judge = |head: &StreamHead<'_>| -> Result<Option<Datum>, EventStoreError> {
        judged = None;
        if !head.account {
            return match rules {
                Rules::Enforce => Ok(None),
                Rules::Command(_) => Err(EventStoreError::NotAnAccount {
                    stream_id: stream.to_string(),
                }),
            };
        }
        let start = account::state_at_head(spi, stream, head)?;
        let (state, holder) = match rules {
            Rules::Enforce => account::check_batch(start, stream, batch)?,
            Rules::Command(command) => account::check_command(start, stream, command)?,
        };
        let datum = account::state_datum(&holder, &state);
        judged = Some((state, holder));
        Ok(Some(datum))
    };
    let judge: &mut Judge = &mut judge;
    let bumped = match expected {
        ExpectedVersion::Any | ExpectedVersion::StreamExists => {
            if has_ids {
                // Look for a retry while holding the stream, so a concurrent twin cannot slip in.
                let rows = spi.write(Stmt::LockStream, &[sid]);
                let current = rows.first_i64().unwrap_or(0);
                expected.check(stream, current)?;
                if let Some(returned) = retry_or_duplicate(spi, stream, expected, &ids)? {
                    return Ok(returned);
                }
            }
            // The stream exists on every append but its first, so bump first (natively when
            // possible) and create the stream only when there is none.
            let bumped = match bump_native(stream, None, n, judge) {
                Some(result) => result?,
                None => {
                    let rows = spi.write(Stmt::BumpExisting, &[sid, Some(i64_datum(n))]);
                    judge_rows(spi, sid, n, &rows, judge)?
                }
            };
            match bumped {
                Some(v) => Some(v),
                None if expected == ExpectedVersion::Any => {
                    let rows = spi.write(Stmt::UpsertAny, &[sid, stream_type, Some(i64_datum(n))]);
                    judge_rows(spi, sid, n, &rows, judge)?
                }
                None => {
                    return Err(match rules {
                        Rules::Enforce => EventStoreError::StreamNotFound {
                            stream_id: stream.to_string(),
                        },
                        Rules::Command(_) => EventStoreError::AccountNotFound {
                            account_id: stream.to_string(),
                        },
                    });
                }
            }
        }
        ExpectedVersion::Exact(v) => match bump_native(stream, Some(v), n, judge) {
            Some(result) => result?,
            None => {
                let rows = spi.write(
                    Stmt::BumpExact,
                    &[sid, Some(i64_datum(v)), Some(i64_datum(n))],
                );
                judge_rows(spi, sid, n, &rows, judge)?
            }
        },
        ExpectedVersion::NoStream => {
            let rows = spi.write(Stmt::CreateNew, &[sid, stream_type, Some(i64_datum(n))]);
            judge_rows(spi, sid, n, &rows, judge)?
        }
    };
    let Some(new_version) = bumped else {
        // Exact / NoStream lost: either this call was already appended, or it is a conflict.
        if has_ids && let Some(returned) = retry_or_duplicate(spi, stream, expected, &ids)? {
            return Ok(returned);
        }
        return Err(expected.conflict(stream, current_version(spi, stream)));
    };
    let first_version = new_version - n + 1;
    check_sequence_numbers(&batch.metas, first_version)?;
    let first_position = draw_positions(spi, n)?;
    insert(spi, stream, first_position, first_version, batch)?;
    if let Some((state, holder)) = judged {
        account::snapshot_if_due(spi, stream, first_version - 1, new_version, &holder, &state);
    }
    Ok(new_version)
}

/// Draws `n` global positions. Before the first draw of this backend (and before every draw
/// while the database has a logical-replication subscription) the sequence is checked against
/// the stored positions and moved past them: it is behind after a failover to a subscriber, and
/// a position must never be handed out twice.
fn draw_positions(spi: &Spi, n: i64) -> Result<i64, EventStoreError> {
    let sequence = position_sequence();
    let subscribed = || {
        spi.read_latest(Stmt::Subscriptions, &[])
            .first_i64()
            .is_some_and(|n| n > 0)
    };
    let stored_max = if shmem::sequence_checked(subscribed) {
        None
    } else {
        let max = spi.read_latest(Stmt::MaxPosition, &[]).first_i64();
        shmem::mark_sequence_checked();
        max
    };
    shmem::draw_positions(sequence, n, stored_max)
}

/// The account rules' look at a stream row: the state to store with the bump, or why not.
type Judge<'a> = dyn FnMut(&StreamHead<'_>) -> Result<Option<Datum>, EventStoreError> + 'a;

/// The native bump: `Some(new version)` / `Some(None)` when the stream is missing or elsewhere,
/// `None` when the SPI statement must do it.
fn bump_native(
    stream: &Uuid,
    expected: Option<i64>,
    n: i64,
    judge: &mut Judge,
) -> Option<Result<Option<i64>, EventStoreError>> {
    match native::bump_stream(stream, expected, n, judge) {
        Outcome::Done(Ok(Bump::Updated { old_version })) => Some(Ok(Some(old_version + n))),
        Outcome::Done(Ok(_)) => Some(Ok(None)),
        Outcome::Done(Err(e)) => Some(Err(e)),
        Outcome::Fallback => None,
    }
}

/// After a bump through SPI: judges the returned row (version, stream_type, state) and stores
/// the state with one more statement. Returns the new version (`None`: no row was bumped).
fn judge_rows(
    spi: &Spi,
    sid: Arg,
    n: i64,
    rows: &Rows<'_>,
    judge: &mut Judge,
) -> Result<Option<i64>, EventStoreError> {
    let Some(version) = rows.first_i64() else {
        return Ok(None);
    };
    // SAFETY: column 3 of the bump statements is `state jsonb`, valid while `rows` is.
    let head = unsafe {
        StreamHead::new(
            version - n,
            rows.text(0, 2).as_deref() == Some(ACCOUNT_STREAM_TYPE),
            rows.datum(0, 3),
        )
    };
    if let Some(state) = judge(&head)? {
        spi.write(Stmt::SetState, &[sid, Some(state)]);
    }
    Ok(Some(version))
}

/// Looks the batch's ids up: `Some(version)` when the whole call is already stored (return it),
/// `None` when none is, ES004 for any other reuse.
fn retry_or_duplicate(
    spi: &Spi,
    stream: &Uuid,
    expected: ExpectedVersion,
    ids: &[Option<Uuid>],
) -> Result<Option<i64>, EventStoreError> {
    let given: Vec<Datum> = ids.iter().flatten().map(uuid_datum).collect();
    let rows = spi.read_latest(Stmt::FindEventIds, &[Some(uuid_array(&given))]);
    let stored: Vec<StoredId> = (0..rows.len())
        .filter_map(|r| {
            let (event_id, stream_id) = (rows.datum(r, 1)?, rows.datum(r, 2)?);
            // SAFETY: FindEventIds returns (event_id uuid, stream_id uuid, version bigint).
            Some(unsafe {
                StoredId {
                    event_id: super::uuid_from_datum(event_id),
                    stream_id: super::uuid_from_datum(stream_id),
                    version: rows.i64(r, 3).unwrap_or(0),
                }
            })
        })
        .collect();
    match classify_retry(stream, expected, ids, &stored) {
        RetryDecision::Append => Ok(None),
        RetryDecision::AlreadyAppended { returned } => Ok(Some(returned)),
        RetryDecision::Duplicate(err) => Err(err),
    }
}

fn insert(
    spi: &Spi,
    stream: &Uuid,
    first_position: i64,
    first_version: i64,
    batch: &Batch<'_>,
) -> Result<(), EventStoreError> {
    let metas = &batch.metas;
    let event_ids: Vec<Uuid> = metas
        .iter()
        .map(|m| m.event_id.unwrap_or_else(Uuid::now_v7))
        .collect();
    let metadata: Vec<Arg> = batch
        .elements
        .iter()
        .zip(metas)
        .map(|(j, m)| {
            if m.has_metadata {
                j.get_container(c"metadata")
            } else {
                None
            }
        })
        .collect();
    let sid = Some(uuid_datum(stream));
    let now = transaction_start();
    let rows: Vec<EventRow> = metas
        .iter()
        .enumerate()
        .map(|(i, m)| {
            [
                Some(i64_datum(first_position + i as i64)),
                sid,
                Some(i64_datum(first_version + i as i64)),
                Some(uuid_datum(&event_ids[i])),
                Some(text_datum(&m.event_type)),
                Some(Datum::from(m.event_version)),
                Some(batch.elements[i].datum()),
                metadata[i],
                Some(m.occurred_at.map_or(now, Datum::from)),
                Some(now),
            ]
        })
        .collect();
    // A unique violation here is an event id stored by a transaction that committed after our
    // checks (or one the client reused across streams): ES004; or a position the sequence
    // handed out although it is stored: 55000, never a raw 23505.
    PgTryBuilder::new(|| {
        if native::insert_events(&rows) == Outcome::Fallback {
            insert_with_sql(spi, &rows, batch);
        }
        Ok(())
    })
    .catch_when(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, |caught| {
        // The call now ends with an ERROR of the store's own (or the same one, rethrown):
        // the abort cleans up the half-done insert and the SPI connection.
        crate::storage::leave_to_abort();
        let detail = match &caught {
            pgrx::pg_sys::panic::CaughtError::PostgresError(report) => {
                report.detail().unwrap_or_default().to_owned()
            }
            _ => String::new(),
        };
        let value = detail
            .split_once("=(")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(v, _)| v.to_owned())
            .unwrap_or_default();
        if detail.contains("(event_id)") {
            Err(EventStoreError::DuplicateEventId {
                event_id: value,
                stored_at: None,
            })
        } else if detail.contains("(global_position)") {
            // The sequence is behind the log (set back, or a promoted logical subscriber that
            // was checked before its subscription went away): check it again next time.
            shmem::forget_sequence_check();
            Err(EventStoreError::PositionTaken { position: value })
        } else {
            caught.rethrow()
        }
    })
    .execute()
}

/// The same rows through the executor, when the table has something only the executor does
/// (see [`native`]): one statement for one event, one `unnest` statement for a batch.
fn insert_with_sql(spi: &Spi, rows: &[EventRow], batch: &Batch<'_>) {
    if let [row] = rows {
        spi.write(Stmt::InsertOne, &row[..9]);
        return;
    }
    let column = |c: usize| -> Vec<Arg> { rows.iter().map(|r| r[c]).collect() };
    spi.write(
        Stmt::InsertBatch,
        &[
            rows[0][0],
            rows[0][1],
            rows[0][2],
            Some(array_of(
                &column(3),
                BuiltinOid::UUIDOID,
                16,
                false,
                pg_sys::TYPALIGN_CHAR,
            )),
            Some(array_of(
                &column(4),
                BuiltinOid::TEXTOID,
                -1,
                false,
                pg_sys::TYPALIGN_INT,
            )),
            Some(array_of(
                &column(5),
                BuiltinOid::INT4OID,
                4,
                true,
                pg_sys::TYPALIGN_INT,
            )),
            Some(batch.array),
            Some(array_of(
                &column(7),
                BuiltinOid::JSONBOID,
                -1,
                false,
                pg_sys::TYPALIGN_INT,
            )),
            Some(array_of(
                &column(8),
                BuiltinOid::TIMESTAMPTZOID,
                8,
                true,
                pg_sys::TYPALIGN_DOUBLE,
            )),
        ],
    );
}

fn uuid_array(datums: &[Datum]) -> Datum {
    let args: Vec<Arg> = datums.iter().map(|d| Some(*d)).collect();
    array_of(&args, BuiltinOid::UUIDOID, 16, false, pg_sys::TYPALIGN_CHAR)
}

/// A one-dimensional array datum of `elements` (NULLs allowed) in the current memory context.
pub(crate) fn array_of(
    elements: &[Arg],
    ty: BuiltinOid,
    len: i16,
    byval: bool,
    align: u8,
) -> Datum {
    let mut values: Vec<Datum> = elements
        .iter()
        .map(|e| e.unwrap_or(Datum::from(0usize)))
        .collect();
    let mut nulls: Vec<bool> = elements.iter().map(Option::is_none).collect();
    let mut dims = [elements.len() as i32];
    let mut lbs = [1];
    // SAFETY: one value and one flag per element, one dimension of `len(elements)` from 1;
    // `ty`, `len`, `byval` and `align` describe the element type (the callers pass a built-in
    // type's own); construct_md_array copies the values into a new array.
    unsafe {
        Datum::from(pg_sys::construct_md_array(
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
            1,
            dims.as_mut_ptr(),
            lbs.as_mut_ptr(),
            ty.value(),
            len.into(),
            byval,
            align as std::ffi::c_char,
        ))
    }
}

fn transaction_start() -> Datum {
    // SAFETY: reads the start time of the transaction in progress.
    Datum::from(unsafe { pg_sys::GetCurrentTransactionStartTimestamp() })
}
