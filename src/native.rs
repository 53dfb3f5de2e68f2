//! Native writes for the append hot path (the stream-row version bump and the event inserts) and
//! the native ordered read of one stream that replay folds over, done with PostgreSQL's heap and
//! index access methods instead of SPI statements.
//!
//! Why: an append is "bump the stream's version, insert one row". Through SPI each of the two is
//! a full statement (plan-cache check, executor start-up, projection, executor end), which cost
//! more than the work itself and held single-event appends near 0.6 × a plain INSERT. Here the
//! same work is the index lookup, `heap_update`, `heap_insert` and the index inserts.
//!
//! What it keeps from the executor, and why it is safe:
//! - READ COMMITTED semantics of `UPDATE … WHERE stream_id = $1 [AND version = $2]`: a fresh
//!   snapshot, `heap_update` waits for a concurrent writer and, when that writer committed, the
//!   loop follows the update chain to the newest row version and checks it again (what
//!   EvalPlanQual does); REPEATABLE READ and SERIALIZABLE get the executor's serialization error.
//! - Every index of `es.events` gets its entry, with the same uniqueness checks as
//!   `ExecInsertIndexTuples`; unique violations are raised by the index AM as usual. A non-HOT
//!   update of the stream row inserts its index entry.
//! - TOAST, WAL, visibility map and statistics are handled inside `heap_insert`/`heap_update`.
//! - Anything the executor would add is detected first, before anything is written, and the
//!   caller then uses the SPI statements instead ([`Outcome::Fallback`]): triggers or rules for
//!   the operation, an index with expressions, a predicate, an exclusion or a deferrable
//!   constraint, or a table whose columns are not the ones this version created.

use pgrx::pg_sys::{self, Datum, Oid};
use std::ffi::CStr;
use std::ptr;
use uuid::Uuid;

/// Result of a native operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Done natively.
    Done(T),
    /// Nothing was written; use the SPI statement.
    Fallback,
}

/// What a version bump found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bump {
    /// The row was updated; the stream was at `old_version`.
    Updated {
        /// The version before the bump.
        old_version: i64,
    },
    /// No such stream.
    NotFound,
    /// The stream is not at the expected version.
    Mismatch {
        /// Its version.
        actual: i64,
    },
}

const STREAMS_COLUMNS: [&CStr; 6] = [
    c"stream_id",
    c"stream_type",
    c"version",
    c"created_at",
    c"updated_at",
    c"state",
];
const STREAM_TYPE: usize = 1;
const STREAM_VERSION: usize = 2;
const STREAM_UPDATED_AT: usize = 4;
const STREAM_STATE: usize = 5;

/// The stream row as an append finds it, before its bump: what the account rules judge.
#[derive(Debug, Clone, Copy)]
pub struct StreamHead {
    /// The version before the bump.
    pub old_version: i64,
    /// Whether the stream's type is `account`.
    pub account: bool,
    /// `es.streams.state` (jsonb), if set.
    pub state: Option<Datum>,
}

const EVENTS_COLUMNS: [&CStr; 10] = [
    c"global_position",
    c"stream_id",
    c"version",
    c"event_id",
    c"event_type",
    c"event_version",
    c"data",
    c"metadata",
    c"occurred_at",
    c"recorded_at",
];

const EVENT_VERSION: usize = 2;
const EVENT_TYPE: usize = 4;
const EVENT_DATA: usize = 6;
const EVENT_OCCURRED_AT: usize = 8;
const EVENT_RECORDED_AT: usize = 9;

/// One row of `es.events`, in column order; `None` is NULL.
pub type EventRow = [Option<Datum>; 10];

fn relation_oid(name: &CStr) -> Option<Oid> {
    unsafe {
        let ns = pg_sys::get_namespace_oid(c"es".as_ptr(), true);
        if ns == pg_sys::InvalidOid {
            return None;
        }
        let oid = pg_sys::get_relname_relid(name.as_ptr(), ns);
        (oid != pg_sys::InvalidOid).then_some(oid)
    }
}

/// The table still has exactly the columns this version wrote to it, in order.
unsafe fn has_columns(rel: pg_sys::Relation, names: &[&CStr]) -> bool {
    unsafe {
        let desc = (*rel).rd_att;
        if (*desc).natts as usize != names.len() {
            return false;
        }
        let attrs = (*desc).attrs.as_slice(names.len());
        attrs
            .iter()
            .zip(names)
            .all(|(a, name)| !a.attisdropped && CStr::from_ptr(a.attname.data.as_ptr()) == *name)
    }
}

unsafe fn no_rules(rel: pg_sys::Relation) -> bool {
    unsafe { !(*(*rel).rd_rel).relhasrules }
}

unsafe fn no_insert_triggers(rel: pg_sys::Relation) -> bool {
    unsafe {
        let t = (*rel).trigdesc;
        t.is_null()
            || !((*t).trig_insert_before_row
                || (*t).trig_insert_after_row
                || (*t).trig_insert_instead_row
                || (*t).trig_insert_before_statement
                || (*t).trig_insert_after_statement
                || (*t).trig_insert_new_table)
    }
}

unsafe fn no_update_triggers(rel: pg_sys::Relation) -> bool {
    unsafe {
        let t = (*rel).trigdesc;
        t.is_null()
            || !((*t).trig_update_before_row
                || (*t).trig_update_after_row
                || (*t).trig_update_instead_row
                || (*t).trig_update_before_statement
                || (*t).trig_update_after_statement
                || (*t).trig_update_old_table
                || (*t).trig_update_new_table)
    }
}

/// An index the native insert can maintain the way the executor would.
unsafe fn simple_index(index: pg_sys::Relation, info: *mut pg_sys::IndexInfo) -> bool {
    unsafe {
        (*info).ii_Expressions.is_null()
            && (*info).ii_Predicate.is_null()
            && (*info).ii_ExclusionOps.is_null()
            && (*(*index).rd_index).indimmediate
    }
}

/// Whether a text datum holds exactly `s`, without copying it.
unsafe fn text_equals(d: Datum, s: &str) -> bool {
    unsafe {
        let t = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
        pgrx::varlena::varlena_to_byte_slice(t) == s.as_bytes()
    }
}

/// Adds `n` to the version of `stream`, if it is at `expected` (when given), like
/// `UPDATE es.streams SET version = version + n, updated_at = now() WHERE stream_id = $1
/// [AND version = $2]` under READ COMMITTED.
///
/// `judge` sees the row version about to be replaced and returns the `state` to store with the
/// bump (`None`: keep it); its error stops the bump. It runs again when a concurrent append
/// moved the row first, so what it decided always follows the row it replaced.
pub fn bump_stream<E>(
    stream: &Uuid,
    expected: Option<i64>,
    n: i64,
    judge: &mut dyn FnMut(&StreamHead) -> Result<Option<Datum>, E>,
) -> Outcome<Result<Bump, E>> {
    let (Some(rel_oid), Some(index_oid)) =
        (relation_oid(c"streams"), relation_oid(c"streams_pkey"))
    else {
        return Outcome::Fallback;
    };
    unsafe {
        let lockmode = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(rel_oid, lockmode);
        if !(has_columns(rel, &STREAMS_COLUMNS) && no_rules(rel) && no_update_triggers(rel)) {
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            return Outcome::Fallback;
        }
        pg_sys::CommandCounterIncrement();
        let cid = pg_sys::GetCurrentCommandId(true);
        let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot());
        let key_datum = crate::api::uuid_datum(stream);
        let mut key = std::mem::zeroed::<pg_sys::ScanKeyData>();
        pg_sys::ScanKeyInit(
            &mut key,
            1,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::Oid::from(pg_sys::F_UUID_EQ),
            key_datum,
        );
        let scan = pg_sys::systable_beginscan(rel, index_oid, true, snapshot, 1, &mut key);
        let found = pg_sys::systable_getnext(scan);
        let mut current = if found.is_null() {
            ptr::null_mut()
        } else {
            pg_sys::heap_copytuple(found)
        };
        pg_sys::systable_endscan(scan);
        pg_sys::UnregisterSnapshot(snapshot);

        let desc = (*rel).rd_att;
        let natts = STREAMS_COLUMNS.len();
        let result = loop {
            if current.is_null() {
                break Ok(Bump::NotFound);
            }
            let mut values = vec![Datum::from(0usize); natts];
            let mut nulls = vec![false; natts];
            pg_sys::heap_deform_tuple(current, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            let version = values[STREAM_VERSION].value() as i64;
            if let Some(e) = expected
                && version != e
            {
                break Ok(Bump::Mismatch { actual: version });
            }
            let head = StreamHead {
                old_version: version,
                account: !nulls[STREAM_TYPE]
                    && text_equals(values[STREAM_TYPE], crate::core::ACCOUNT_STREAM_TYPE),
                state: (!nulls[STREAM_STATE]).then_some(values[STREAM_STATE]),
            };
            match judge(&head) {
                Ok(Some(state)) => {
                    values[STREAM_STATE] = state;
                    nulls[STREAM_STATE] = false;
                }
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            values[STREAM_VERSION] = Datum::from(version + n);
            values[STREAM_UPDATED_AT] = Datum::from(pg_sys::GetCurrentTransactionStartTimestamp());
            let new = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            let mut otid = (*current).t_self;
            let mut tmfd = std::mem::zeroed::<pg_sys::TM_FailureData>();
            let mut tuple_lock = 0;
            let tm = pg_sys::heap_update(
                rel,
                &mut otid,
                new,
                cid,
                ptr::null_mut(),
                true,
                &mut tmfd,
                &mut tuple_lock,
            );
            match tm {
                pg_sys::TM_Result::TM_Ok => {
                    let heap_only =
                        u32::from((*(*new).t_data).t_infomask2) & pg_sys::HEAP_ONLY_TUPLE != 0;
                    if !heap_only {
                        insert_index_entry(
                            rel,
                            index_oid,
                            &mut values,
                            &mut nulls,
                            &mut (*new).t_self,
                        );
                    }
                    break Ok(Bump::Updated {
                        old_version: version,
                    });
                }
                pg_sys::TM_Result::TM_Updated => {
                    if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 {
                        pgrx::ereport!(
                            ERROR,
                            pgrx::PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
                            "could not serialize access due to concurrent update"
                        );
                    }
                    // A concurrent append committed first: continue from its row version.
                    current = fetch_any(rel, tmfd.ctid);
                }
                pg_sys::TM_Result::TM_Deleted => break Ok(Bump::NotFound),
                other => pgrx::error!("event_store: unexpected result {other} updating es.streams"),
            }
        };
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        Outcome::Done(result)
    }
}

/// The row version at `tid`, whatever its visibility (it was just written by a transaction
/// `heap_update` waited for); NULL if there is none.
unsafe fn fetch_any(rel: pg_sys::Relation, tid: pg_sys::ItemPointerData) -> pg_sys::HeapTuple {
    unsafe {
        let mut tuple = std::mem::zeroed::<pg_sys::HeapTupleData>();
        tuple.t_self = tid;
        let mut buffer: pg_sys::Buffer = 0;
        if pg_sys::heap_fetch(
            rel,
            &raw mut pg_sys::SnapshotAnyData,
            &mut tuple,
            &mut buffer,
            false,
        ) {
            let copy = pg_sys::heap_copytuple(&mut tuple);
            pg_sys::ReleaseBuffer(buffer);
            copy
        } else {
            ptr::null_mut()
        }
    }
}

/// The primary-key entry for a stream row version that `heap_update` could not keep on the
/// same HOT chain.
unsafe fn insert_index_entry(
    rel: pg_sys::Relation,
    index_oid: Oid,
    values: &mut [Datum],
    nulls: &mut [bool],
    tid: &mut pg_sys::ItemPointerData,
) {
    unsafe {
        let index = pg_sys::index_open(index_oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let info = pg_sys::BuildIndexInfo(index);
        let mut key = [values[0]];
        let mut key_null = [nulls[0]];
        pg_sys::index_insert(
            index,
            key.as_mut_ptr(),
            key_null.as_mut_ptr(),
            tid,
            rel,
            pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES,
            true,
            info,
        );
        pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
    }
}

/// Inserts rows into `es.events` with their index entries, in order.
pub fn insert_events(rows: &[EventRow]) -> Outcome<()> {
    let Some(rel_oid) = relation_oid(c"events") else {
        return Outcome::Fallback;
    };
    unsafe {
        let lockmode = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(rel_oid, lockmode);
        if !(has_columns(rel, &EVENTS_COLUMNS) && no_rules(rel) && no_insert_triggers(rel)) {
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            return Outcome::Fallback;
        }
        let index_list = pg_sys::RelationGetIndexList(rel);
        let mut indexes = Vec::new();
        let mut simple = true;
        if !index_list.is_null() {
            let cells = (*index_list).elements;
            for i in 0..(*index_list).length as usize {
                let oid = (*cells.add(i)).oid_value;
                let index = pg_sys::index_open(oid, lockmode);
                let info = pg_sys::BuildIndexInfo(index);
                simple &= simple_index(index, info);
                indexes.push((index, info));
            }
            pg_sys::list_free(index_list);
        }
        if !simple {
            for (index, _) in indexes {
                pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
            }
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            return Outcome::Fallback;
        }
        let desc = (*rel).rd_att;
        let cid = pg_sys::GetCurrentCommandId(true);
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsHeapTuple);
        let mut key_values = [Datum::from(0usize); pg_sys::INDEX_MAX_KEYS as usize];
        let mut key_nulls = [false; pg_sys::INDEX_MAX_KEYS as usize];
        let mut values = vec![Datum::from(0usize); EVENTS_COLUMNS.len()];
        let mut nulls = vec![false; EVENTS_COLUMNS.len()];
        for row in rows {
            for (i, v) in row.iter().enumerate() {
                values[i] = v.unwrap_or(Datum::from(0usize));
                nulls[i] = v.is_none();
            }
            let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            pg_sys::heap_insert(rel, tuple, cid, 0, ptr::null_mut());
            pg_sys::ExecStoreHeapTuple(tuple, slot, true);
            for &(index, info) in &indexes {
                let form = &*(*index).rd_index;
                if !form.indisready {
                    continue;
                }
                pg_sys::FormIndexDatum(
                    info,
                    slot,
                    ptr::null_mut(),
                    key_values.as_mut_ptr(),
                    key_nulls.as_mut_ptr(),
                );
                let check = if form.indisunique {
                    pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES
                } else {
                    pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO
                };
                pg_sys::index_insert(
                    index,
                    key_values.as_mut_ptr(),
                    key_nulls.as_mut_ptr(),
                    &mut (*tuple).t_self,
                    rel,
                    check,
                    false,
                    info,
                );
            }
            pg_sys::ExecClearTuple(slot);
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        for (index, _) in indexes {
            pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        Outcome::Done(())
    }
}

/// One stored event as [`scan_stream`] hands it over. The datums point into the current row
/// and are valid until the visitor returns.
pub struct StreamRow {
    /// `version`.
    pub version: i64,
    /// `event_type` (text).
    pub event_type: Datum,
    /// `data` (jsonb, possibly toasted).
    pub data: Datum,
    /// `occurred_at` (timestamptz).
    pub occurred_at: Datum,
    /// `recorded_at` (timestamptz).
    pub recorded_at: Datum,
    /// Every column of the row, in table order, when read natively (else null).
    pub values: *const Datum,
    /// Their NULL flags, likewise.
    pub nulls: *const bool,
}

impl StreamRow {
    /// Every column of the row (values, NULL flags) in `es.events` order, when it was read
    /// natively.
    pub fn columns(&self) -> Option<(&[Datum], &[bool])> {
        if self.values.is_null() || self.nulls.is_null() {
            return None;
        }
        let n = EVENTS_COLUMNS.len();
        // SAFETY: set by scan_stream to the slot's arrays of the table's (checked) columns,
        // valid while the visitor runs.
        unsafe {
            Some((
                std::slice::from_raw_parts(self.values, n),
                std::slice::from_raw_parts(self.nulls, n),
            ))
        }
    }
}

/// Visits the events of `stream` with `from < version <= to`, in version order, through the
/// `(stream_id, version)` index: in a fresh snapshot when `latest` (commands, which read after
/// taking the stream row), else in the statement's. Replay is the executor's slowest client
/// (a sort, then one fmgr call per row); here a row costs an index step and the visitor. What a
/// visit allocates in PostgreSQL memory is freed row by row, so a million events are folded in
/// constant memory (at most 64 kB plus one row's allocations are kept between rows).
///
/// Falls back (reads nothing) when the executor would do more than this: the caller may not
/// select from `es.events`, or row-level security applies to it, or the table is not the one
/// this version created.
pub fn scan_stream<E>(
    stream: &Uuid,
    from: i64,
    to: i64,
    latest: bool,
    visit: &mut dyn FnMut(&StreamRow) -> Result<(), E>,
) -> Outcome<Result<(), E>> {
    let (Some(rel_oid), Some(index_oid)) = (relation_oid(c"events"), relation_oid(c"events_pkey"))
    else {
        return Outcome::Fallback;
    };
    unsafe {
        let user = pg_sys::GetUserId();
        if pg_sys::pg_class_aclcheck(rel_oid, user, pg_sys::ACL_SELECT as pg_sys::AclMode)
            != pg_sys::AclResult::ACLCHECK_OK
            || pg_sys::check_enable_rls(rel_oid, pg_sys::InvalidOid, true)
                == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
        {
            return Outcome::Fallback;
        }
        let lockmode = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(rel_oid, lockmode);
        if !has_columns(rel, &EVENTS_COLUMNS) {
            pg_sys::table_close(rel, lockmode);
            return Outcome::Fallback;
        }
        let index = pg_sys::index_open(index_oid, lockmode);
        let snapshot = pg_sys::RegisterSnapshot(if latest {
            pg_sys::GetLatestSnapshot()
        } else {
            pg_sys::GetActiveSnapshot()
        });
        let mut keys = [std::mem::zeroed::<pg_sys::ScanKeyData>(); 3];
        let bounds = [
            (
                1,
                pg_sys::BTEqualStrategyNumber,
                pg_sys::F_UUID_EQ,
                crate::api::uuid_datum(stream),
            ),
            (
                2,
                pg_sys::BTGreaterStrategyNumber,
                pg_sys::F_INT8GT,
                Datum::from(from),
            ),
            (
                2,
                pg_sys::BTLessEqualStrategyNumber,
                pg_sys::F_INT8LE,
                Datum::from(to),
            ),
        ];
        for (key, (att, strategy, proc_, value)) in keys.iter_mut().zip(bounds) {
            pg_sys::ScanKeyInit(
                key,
                att,
                strategy as pg_sys::StrategyNumber,
                pg_sys::Oid::from(proc_),
                value,
            );
        }
        let scan = pg_sys::index_beginscan(rel, index, snapshot, 3, 0);
        pg_sys::index_rescan(scan, keys.as_mut_ptr(), 3, ptr::null_mut(), 0);
        let slot = pg_sys::table_slot_create(rel, ptr::null_mut());
        let per_row = pg_sys::AllocSetContextCreateInternal(
            pg_sys::CurrentMemoryContext,
            c"event_store stream scan".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        let caller = pg_sys::MemoryContextSwitchTo(per_row);
        let mut result = Ok(());
        while pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot) {
            // Reading an inline event allocates nothing; reset only when something (a detoasted
            // event, a visitor's value) did, to spare a call per row.
            if (*per_row).mem_allocated > 64 * 1024 {
                pg_sys::MemoryContextReset(per_row);
            }
            pg_sys::slot_getsomeattrs_int(slot, EVENTS_COLUMNS.len() as i32);
            let values = std::slice::from_raw_parts((*slot).tts_values, EVENTS_COLUMNS.len());
            let row = StreamRow {
                version: values[EVENT_VERSION].value() as i64,
                event_type: values[EVENT_TYPE],
                data: values[EVENT_DATA],
                occurred_at: values[EVENT_OCCURRED_AT],
                recorded_at: values[EVENT_RECORDED_AT],
                values: (*slot).tts_values,
                nulls: (*slot).tts_isnull,
            };
            if let Err(e) = visit(&row) {
                result = Err(e);
                break;
            }
        }
        pg_sys::MemoryContextSwitchTo(caller);
        pg_sys::MemoryContextDelete(per_row);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::index_endscan(scan);
        pg_sys::UnregisterSnapshot(snapshot);
        // Like the executor, keep the locks to the end of the transaction.
        pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        Outcome::Done(result)
    }
}
