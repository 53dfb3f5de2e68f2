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
//! - Every index of the table gets its entry, with the same uniqueness checks as
//!   `ExecInsertIndexTuples`; unique violations are raised by the index AM as usual. A non-HOT
//!   update of a stream row inserts an entry into every index of `es.streams`.
//! - TOAST, WAL, visibility map and statistics are handled inside `heap_insert`/`heap_update`.
//! - Anything the executor would add is detected first, before anything is written, and the
//!   caller then uses the SPI statements instead ([`Outcome::Fallback`]): triggers or rules for
//!   the operation, an index with expressions, a predicate, an exclusion or a deferrable
//!   constraint, a CHECK constraint, row-level security, an identity or generated column, a
//!   column added by a DBA (its default would apply), a NOT NULL on a column this code may leave
//!   NULL, or a table that is not a plain heap table with this version's columns and types.
//!   Columns a DBA added and dropped again are fine: their attributes stay in the descriptor,
//!   marked dropped, and every row written here holds NULL there, as the executor's would.
//!
//! Memory: what the index AM allocates for a scan (btree's killed-items array among it) lives
//! in a context that outlives the scan and is deleted only after `index_endscan`; the per-row
//! context that the scan resets between rows holds only what reading one row allocates. An
//! ERROR in the middle of a scan (a detoast failure, a visitor's error) leaves the scan to the
//! transaction's abort: the resource owner drops the buffer pins, relation references and the
//! registered snapshot, and both contexts are children of the caller's, which the abort frees.
//!
//! Guards: pgrx wraps every `pg_sys` call in a `sigsetjmp` guard of its own (about 100
//! instructions, and a copy of the trampoline per call site in the instruction cache). The
//! append's writes call PostgreSQL through the unguarded bindings of `raw` instead, in a few
//! regions, each run whole inside one `pg_guard_ffi_boundary` (the `*_in_guard` functions:
//! opening a table with its indexes, finding a stream's row, replacing it and closing its table,
//! drawing the global position (a closure the caller passes: this module does not know the
//! positions), inserting the rows and closing). Their frames own nothing with a destructor and
//! cannot panic, so an ERROR longjmps to the region's guard, which raises it as every guarded
//! call does, and nothing that would have run is skipped. The stream rules' judge (which may run the user's code) runs
//! between two regions, never inside one.
//!
//! The reads (`es.load_events`, `es.read_all`, a stream's life) do the same: opening the table
//! and index by OID with the current user is one region; a read's scan start (its context,
//! snapshot, keys) shares a region with its first batch of rows, and the batch that ends the
//! read shares one with the scan's end and the close; a stream's life is one region from the
//! open (when the relations and the user's privilege are remembered) to the close, its row
//! fetched from the key's heap entry as `index_fetch_heap` does, without a slot or a context of
//! its own. Relations remembered by name are opened by OID without `try_relation_open`'s
//! syscache probe while no invalidation arrived (`open_remembered_in_guard`). A read scans with as few index keys
//! as the hand-written query (`RowBound`): the gap-safe bound of `es.read_all` and the start of
//! `es.load_events` from a stream's beginning are checked on each fetched row, where a key
//! would cost `_bt_checkkeys` about 90 instructions a row. A granted SELECT is remembered per
//! backend and user until an invalidation that could change it (see
//! `select_allowed_remembered`).

use super::call::{ResultSet, TypedDatum};
use super::jsonb::Jsonb;
use super::spi::{Reading, Rows};
use event_store_core::lifecycle::Deletion;
use pgrx::pg_sys::{self, Datum, Oid};
use std::ffi::CStr;
use std::marker::PhantomData;
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
    /// The row was changed by this very transaction while the append judged it: a function
    /// the rules called (a declared type's `check` or `evolve`) appended to the same stream.
    ChangedDuringAppend,
}

/// A column this version of the store reads or writes: its name, its type, and whether the
/// native writes may leave it NULL.
#[derive(Clone, Copy)]
struct Column {
    name: &'static CStr,
    ty: Oid,
    nullable: bool,
}

const fn col(name: &'static CStr, ty: Oid, nullable: bool) -> Column {
    Column { name, ty, nullable }
}

/// `es.streams` as `sql/bootstrap.sql` creates it.
const STREAMS: [Column; 10] = [
    col(c"stream_id", pg_sys::UUIDOID, false),
    col(c"stream_type", pg_sys::TEXTOID, true),
    col(c"version", pg_sys::INT8OID, false),
    col(c"created_at", pg_sys::TIMESTAMPTZOID, false),
    col(c"updated_at", pg_sys::TIMESTAMPTZOID, false),
    col(c"state", pg_sys::JSONBOID, true),
    col(c"state_revision", pg_sys::INT8OID, true),
    col(c"deleted", pg_sys::TEXTOID, true),
    col(c"deleted_at", pg_sys::TIMESTAMPTZOID, true),
    col(c"truncated_before", pg_sys::INT8OID, true),
];
/// `es.streams` of 0.1.0 (before `state_revision`): a library newer than the schema still
/// appends natively until `ALTER EXTENSION event_store UPDATE`.
const STREAMS_0_1: [Column; 6] = [
    STREAMS[0], STREAMS[1], STREAMS[2], STREAMS[3], STREAMS[4], STREAMS[5],
];
const STREAM_ID: usize = 0;
const STREAM_TYPE: usize = 1;
const STREAM_VERSION: usize = 2;
const STREAM_CREATED_AT: usize = 3;
const STREAM_UPDATED_AT: usize = 4;
const STREAM_STATE: usize = 5;
const STREAM_STATE_REVISION: usize = 6;
const STREAM_DELETED: usize = 7;
const STREAM_TRUNCATED_BEFORE: usize = 9;

/// `es.events` as `sql/bootstrap.sql` creates it.
const EVENTS: [Column; 10] = [
    col(c"global_position", pg_sys::INT8OID, false),
    col(c"stream_id", pg_sys::UUIDOID, false),
    col(c"version", pg_sys::INT8OID, false),
    col(c"event_id", pg_sys::UUIDOID, false),
    col(c"event_type", pg_sys::TEXTOID, false),
    col(c"event_version", pg_sys::INT4OID, false),
    col(c"data", pg_sys::JSONBOID, false),
    col(c"metadata", pg_sys::JSONBOID, true),
    col(c"occurred_at", pg_sys::TIMESTAMPTZOID, false),
    col(c"recorded_at", pg_sys::TIMESTAMPTZOID, false),
];
const EVENT_GLOBAL_POSITION: usize = 0;
const EVENT_STREAM_ID: usize = 1;
const EVENT_VERSION: usize = 2;
const EVENT_TYPE: usize = 4;
const EVENT_DATA: usize = 6;
const EVENT_OCCURRED_AT: usize = 8;
const EVENT_RECORDED_AT: usize = 9;

/// `BTORDER_PROC` (access/nbtree.h): the btree support function that orders an opfamily's
/// values; the scan keys below assume the built-in comparison of their types.
const BTORDER_PROC: i16 = 1;

/// One row of `es.events`, in the order of [`EVENTS`]; `None` is NULL.
pub type EventRow = [Option<Datum>; 10];

/// The stream row as an append finds it, before its bump: what the account rules judge. It
/// borrows the row version it was read from.
#[derive(Debug, Clone, Copy)]
pub struct StreamHead<'a> {
    /// The version before the bump.
    pub old_version: i64,
    /// Whether the stream's type is `account`.
    pub account: bool,
    /// `es.streams.stream_type` (text), if set.
    stream_type: Option<Datum>,
    /// `es.streams.state` (jsonb), if set.
    state: Option<Datum>,
    /// `es.streams.state_revision`, if set.
    pub state_revision: Option<i64>,
    /// `es.streams.deleted` is set (`Some(true)`: a hard delete).
    pub deleted: Option<bool>,
    _row: PhantomData<&'a ()>,
}

/// The state an append keeps in the stream row with its bump, and the revision of the
/// definition that computed it (`None`: an account's, or a generic stream's).
#[derive(Debug, Clone, Copy)]
pub struct Kept {
    /// The state (a jsonb datum valid until the row is written).
    pub state: Datum,
    /// `es.streams.state_revision`.
    pub revision: Option<i64>,
}

impl<'a> StreamHead<'a> {
    /// A head read from a row whose `state` datum (if any) stays valid for `'a`.
    ///
    /// # Safety
    /// `state`, when given, must be a non-null jsonb datum that outlives `'a`.
    /// `stream_type` and `deleted`, when given, must be non-null text datums that outlive `'a`.
    pub unsafe fn new(
        old_version: i64,
        stream_type: Option<Datum>,
        state: Option<Datum>,
        state_revision: Option<i64>,
        deleted: Option<Datum>,
    ) -> StreamHead<'a> {
        StreamHead {
            // SAFETY: the caller's contract: a text datum valid for 'a.
            deleted: deleted.map(|d| unsafe { text_equals(d, "hard") }),
            old_version,
            account: stream_type.is_some_and(|t| {
                // SAFETY: the caller's contract: a text datum valid for 'a.
                unsafe { text_equals(t, event_store_core::ACCOUNT_STREAM_TYPE) }
            }),
            stream_type,
            state,
            state_revision,
            _row: PhantomData,
        }
    }

    /// The head of row `row` of a bump statement's `rows`, before the bump of `n` events made
    /// it `version`: its `stream_type` (text) and `state` (jsonb) at columns `type_col` and
    /// `state_col`, each checked to be of its type (a statement whose columns differ is an
    /// internal error, never a misread datum). Valid while the rows are.
    pub fn from_rows(
        rows: &'a Rows<'_>,
        row: usize,
        old_version: i64,
        type_col: i32,
        state_col: i32,
    ) -> StreamHead<'a> {
        let (stream_type, state) = (rows.datum(row, type_col), rows.datum(row, state_col));
        for (d, col, ty, name) in [
            (stream_type, type_col, pg_sys::TEXTOID, "text"),
            (state, state_col, pg_sys::JSONBOID, "jsonb"),
        ] {
            if d.is_some() && rows.column_type(col) != Some(ty) {
                pgrx::error!("event_store: column {col} of a bump statement is not {name}");
            }
        }
        // SAFETY: non-NULL datums of a text and a jsonb column (checked above), in the tuple
        // table the borrow of `rows` keeps for 'a; no `deleted` datum is passed.
        unsafe { StreamHead::new(old_version, stream_type, state, None, None) }
    }

    /// Whether `es.streams.stream_type` is set.
    pub fn has_type(&self) -> bool {
        self.stream_type.is_some()
    }

    /// `es.streams.stream_type`, if set.
    pub fn stream_type(&self) -> Option<String> {
        // SAFETY: `new`'s contract: a text datum valid for 'a; detoasting a packed value may
        // allocate in the current context, nothing else.
        self.stream_type.map(|d| unsafe {
            let t = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
            String::from_utf8_lossy(pgrx::varlena::varlena_to_byte_slice(t)).into_owned()
        })
    }

    /// `es.streams.state`, if set.
    pub fn state(&self) -> Option<Jsonb<'a>> {
        // SAFETY: `new`'s contract: the datum is a jsonb datum valid for 'a.
        self.state.map(|d| unsafe { Jsonb::from_datum(d) })
    }
}

/// Where each of this version's columns is in the table as it is now. A DBA may have added and
/// dropped a column: its attribute stays in the descriptor, marked dropped, and must be NULL.
struct Layout<const N: usize> {
    /// Attributes of the table, dropped ones included.
    natts: usize,
    /// 0-based attribute index of each column of the list, in list order.
    at: [usize; N],
}

impl<const N: usize> Layout<N> {
    /// The table's attribute number (1-based) of column `i` of the list.
    fn attno(&self, i: usize) -> i16 {
        self.at[i] as i16 + 1
    }

    /// A row of the table from this version's values (`None`: NULL) into `values`/`nulls`,
    /// `natts` entries each: dropped attributes NULL.
    fn fill(&self, row: &[Option<Datum>; N], values: &mut [Datum], nulls: &mut [bool]) {
        values.fill(Datum::from(0usize));
        nulls.fill(true);
        for (i, v) in row.iter().enumerate() {
            if let Some(d) = v {
                values[self.at[i]] = *d;
                nulls[self.at[i]] = false;
            }
        }
    }
}

/// The layout of `rel` when its live columns are exactly `columns`, in order, with their types;
/// for writes also when nothing the executor would enforce on them is declared (NOT NULL where
/// this code may write NULL, identity, generated). `None`: not the table this version knows.
///
/// # Safety
/// `rel` must be an open relation.
unsafe fn layout<const N: usize>(
    rel: pg_sys::Relation,
    columns: &[Column; N],
    for_write: bool,
) -> Option<Layout<N>> {
    // SAFETY: an open relation's descriptor has `natts` attributes.
    let attrs = unsafe { super::compat::tuple_attrs((*rel).rd_att) };
    let mut at = [0usize; N];
    let mut found = 0;
    for (i, a) in attrs.iter().enumerate() {
        if a.attisdropped {
            continue;
        }
        let c = columns.get(found)?;
        // SAFETY: attname is a NUL-terminated NameData.
        let name = unsafe { CStr::from_ptr(a.attname.data.as_ptr()) };
        if name != c.name || a.atttypid != c.ty {
            return None;
        }
        if for_write && ((c.nullable && a.attnotnull) || a.attidentity != 0 || a.attgenerated != 0)
        {
            return None;
        }
        at[found] = i;
        found += 1;
    }
    (found == N).then_some(Layout {
        natts: attrs.len(),
        at,
    })
}

/// A plain heap table (not a view, a partitioned or foreign table, nor another access method).
///
/// # Safety
/// `rel` must be an open relation.
unsafe fn plain_heap(rel: pg_sys::Relation) -> bool {
    // SAFETY: an open relation has its pg_class row.
    let class = unsafe { &*(*rel).rd_rel };
    class.relkind == pg_sys::RELKIND_RELATION as std::ffi::c_char
        && class.relam == pg_sys::HEAP_TABLE_AM_OID
}

/// Nothing the executor would check on a write to `rel` beyond what the caller checks: no rules,
/// no CHECK constraints, no row-level security for the current user.
///
/// # Safety
/// `rel` must be an open relation.
unsafe fn plain_writes(rel: pg_sys::Relation, rel_oid: Oid) -> bool {
    // SAFETY: an open relation has its pg_class row and descriptor.
    unsafe {
        let class = &*(*rel).rd_rel;
        let constr = (*(*rel).rd_att).constr;
        !class.relhasrules
            && (constr.is_null() || (*constr).num_check == 0)
            && !(class.relrowsecurity && rls_enabled(rel_oid))
    }
}

/// Row-level security applies to the current user on `rel_oid`.
fn rls_enabled(rel_oid: Oid) -> bool {
    // SAFETY: a plain catalog lookup; with noError it reports instead of raising.
    unsafe {
        pg_sys::check_enable_rls(rel_oid, pg_sys::InvalidOid, true)
            == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
    }
}

/// Whether `index` is a valid btree on exactly the columns `attnos` (ascending, no predicate)
/// ordered by the built-in comparison `cmp` of each column's type `types`: the shape the scan
/// keys of this module assume.
///
/// # Safety
/// `index` must be an open index relation.
unsafe fn btree_on(index: pg_sys::Relation, attnos: &[i16], types: &[Oid], cmp: &[u32]) -> bool {
    // SAFETY: an open index has its pg_class and pg_index rows, and `indnatts` opfamilies and
    // options.
    unsafe {
        let form = &*(*index).rd_index;
        let n = attnos.len();
        if (*(*index).rd_rel).relam != pg_sys::BTREE_AM_OID
            || form.indnatts as usize != n
            || form.indnkeyatts as usize != n
            || !form.indisvalid
            || !form.indisready
            || !pg_sys::RelationGetIndexPredicate(index).is_null()
        {
            return false;
        }
        let keys = form.indkey.values.as_slice(n);
        let families = std::slice::from_raw_parts((*index).rd_opfamily, n);
        let options = std::slice::from_raw_parts((*index).rd_indoption, n);
        (0..n).all(|i| {
            keys[i] == attnos[i]
                && options[i] == 0
                && pg_sys::get_opfamily_proc(families[i], types[i], types[i], BTORDER_PROC)
                    == Oid::from(cmp[i])
        })
    }
}

/// Whether `es.streams` has the columns of a stream's life (`deleted`, `truncated_before`):
/// not before `ALTER EXTENSION event_store UPDATE` from 0.1.0, when a library newer than the
/// schema runs. Two syscache lookups, so the read paths can ask on every call.
pub fn streams_have_lifecycle() -> bool {
    let Some(rel) = relation_oid(c"streams") else {
        return false;
    };
    // SAFETY: syscache lookups by relation OID and name; a missing column is InvalidAttrNumber.
    unsafe {
        pg_sys::get_attnum(rel, c"deleted".as_ptr()) != pg_sys::InvalidAttrNumber as i16
            && pg_sys::get_attnum(rel, c"truncated_before".as_ptr())
                != pg_sys::InvalidAttrNumber as i16
    }
}

/// Whether the current user may read `es.streams` (a role granted only `es.events` reads the
/// log as stored, without the streams' life).
pub fn streams_readable() -> bool {
    let Some(rel) = relation_oid(c"streams") else {
        return false;
    };
    select_granted(rel)
}

/// Whether `es.events_archive` has ever held a row (its heap has a block): until then the reads
/// of one stream take the native path over `es.events` alone, and after it they read both
/// tables in one statement. The archive only grows (retention's removals leave its blocks), so
/// an answer of false, given after the reader's snapshot was taken, means no archived row is
/// visible to that snapshot.
pub fn archive_in_use() -> bool {
    // The OID as remembered (no syscache look-ups by name on every read); opened by OID, so a
    // table dropped since reads as unknown, and an invalidation accepted while locking (the
    // name may now be another table's) makes it ask by name, as a read without the memo would.
    // Open, count and close under one guard; the count is used only when the generation did
    // not move while locking (the relation opened is then the name's).
    let generation = memo::generation();
    if let Some(oid) = memo::relation_oid(Remembered::EventsArchive) {
        // `blocks_in_guard` runs whole inside this one guard and owns only an OID and a raw
        // pointer (no destructor, no panic possible).
        let blocks =
            // SAFETY: the guarded region owns nothing with a destructor and cannot panic.
            unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| blocks_in_guard(oid, generation)) };
        if let Some(blocks) = blocks
            && memo::generation() == generation
        {
            return blocks > 0;
        }
    }
    let Some(oid) = relation_oid(c"events_archive") else {
        return false;
    };
    // SAFETY: opened and locked (AccessShareLock, as a reader) and closed here; the lock is kept
    // to the end of the transaction like the executor's.
    unsafe {
        let rel = pg_sys::table_open(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let blocks = pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM);
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        blocks > 0
    }
}

/// The number of blocks of relation `oid`'s main fork, opened by OID as
/// [`open_remembered_in_guard`] opens it (locked AccessShare, the lock kept to the end of the
/// transaction) and closed; `None` when it no longer exists.
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor; `oid`
/// names a table or nothing (a table of the store remembered by name in `generation`).
unsafe fn blocks_in_guard(oid: Oid, generation: u64) -> Option<pg_sys::BlockNumber> {
    // SAFETY: the caller's contract; opened and closed once here.
    unsafe {
        let rel = open_remembered_in_guard(oid, generation);
        if rel.is_null() {
            return None;
        }
        let blocks = raw::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM);
        raw::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        Some(blocks)
    }
}

/// The relations of the store whose OIDs the write path asks for on every append, each
/// remembered in a slot of its own (see [`memo`]): the slot is its index, so finding it costs
/// no search by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remembered {
    /// `es.streams`.
    Streams,
    /// `es.streams_pkey`.
    StreamsPkey,
    /// `es.events`.
    Events,
    /// `es.global_position_seq`.
    PositionSequence,
    /// `es.events_archive`.
    EventsArchive,
}

impl Remembered {
    /// How many there are (the memo's slots).
    const COUNT: usize = 5;

    /// The relation's name in schema `es`.
    const fn name(self) -> &'static CStr {
        match self {
            Remembered::Streams => c"streams",
            Remembered::StreamsPkey => c"streams_pkey",
            Remembered::Events => c"events",
            Remembered::PositionSequence => c"global_position_seq",
            Remembered::EventsArchive => c"events_archive",
        }
    }
}

/// Relation `oid`, remembered by name in [`memo::generation`] `generation`, opened and locked
/// AccessShare (the lock kept to the end of the transaction, like the executor's); NULL when it
/// no longer exists.
///
/// Why not `try_relation_open` alone: its check that the OID still exists is a syscache probe
/// (~290 instructions), and a read opens four or five relations. It is not needed while the
/// generation holds: the OID named the relation when it was remembered, and a drop of it is an
/// invalidation (of the relation and of its `pg_class` name) that moves the generation when this
/// backend accepts it, which is at the latest when the lock is taken here (`LockRelationOid`
/// accepts pending invalidations after acquiring a lock this transaction did not hold; one it
/// held already excludes a drop). So with the generation unchanged after the lock, the relation
/// exists and `relation_open` without a further lock finds it. When the generation moved,
/// `try_relation_open` asks the syscache as before (the lock taken here is kept, as the
/// executor keeps its locks; the caller sees the generation moved and looks the name up again).
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor;
/// [`memo::generation`] has been called in this backend (its callbacks are registered).
unsafe fn open_remembered_in_guard(oid: Oid, generation: u64) -> pg_sys::Relation {
    let lockmode = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    // SAFETY: the caller's contract; the relation is opened only once its lock is held.
    unsafe {
        raw::LockRelationOid(oid, lockmode);
        if memo::generation_now() == generation {
            raw::relation_open(oid, pg_sys::NoLock as pg_sys::LOCKMODE)
        } else {
            raw::try_relation_open(oid, pg_sys::NoLock as pg_sys::LOCKMODE)
        }
    }
}

/// `es.<rel>`'s OID (a table, index or sequence of the store), remembered per backend until
/// an invalidation could have changed it (see [`memo`]): for the write path, which asks on
/// every append.
pub fn remembered_relation_oid(rel: Remembered) -> Option<Oid> {
    memo::relation_oid(rel)
}

fn relation_oid(name: &CStr) -> Option<Oid> {
    // SAFETY: syscache lookups by name; missing objects give InvalidOid (missing_ok).
    unsafe {
        let ns = pg_sys::get_namespace_oid(c"es".as_ptr(), true);
        if ns == pg_sys::InvalidOid {
            return None;
        }
        let oid = pg_sys::get_relname_relid(name.as_ptr(), ns);
        (oid != pg_sys::InvalidOid).then_some(oid)
    }
}

/// What the native writes look up by name or check on a table's shape on every append,
/// remembered per backend: the OIDs of `es.streams`, `es.events` and `es.streams_pkey`, each
/// table's [`Layout`] and whether the primary key is the btree the bump keys on. Why: those
/// look-ups (three syscache searches by name, ten column names compared per table, the
/// opfamily's support function) cost about 6,000 instructions per one-event append, more
/// than the heap update of the stream row.
///
/// Every entry carries the generation it was made at and is used only while the generation is
/// unchanged; any relcache invalidation (a DDL on any table or index, `VACUUM`'s statistics,
/// an invalidation of everything) and any change of `pg_namespace` or of a `pg_class` name
/// bumps it. Invalidations are processed at transaction start and when a lock is taken, so
/// the OID remembered at the start of a call is the one the syscache would have given then,
/// and the layout is checked again after `table_open` took its lock whenever the generation
/// moved: the checks always see the descriptor the write uses.
mod memo {
    use super::{Layout, Oid, Remembered, pg_sys};
    use std::cell::{Cell, RefCell};

    /// One remembered layout: (generation, table, (columns' list address, its length), natts,
    /// attribute indexes padded to the longest list).
    type LayoutEntry = (u64, Oid, (usize, usize), usize, [usize; 10]);

    thread_local! {
        static GENERATION: Cell<u64> = const { Cell::new(1) };
        static REGISTERED: Cell<bool> = const { Cell::new(false) };
        /// (generation, OID) of each [`Remembered`] relation, at its index; generation 0 is
        /// never current (the first `generation()` makes it 2).
        static OIDS: [Cell<(u64, Oid)>; Remembered::COUNT] =
            const { [const { Cell::new((0, pg_sys::InvalidOid)) }; Remembered::COUNT] };
        static LAYOUTS: RefCell<Vec<LayoutEntry>> = const { RefCell::new(Vec::new()) };
        /// (generation, index OID) of a primary key checked to be the bump's btree.
        static PKEY_CHECKED: Cell<(u64, Oid)> = const { Cell::new((0, pg_sys::InvalidOid)) };
        /// (generation, user, table) of the reads' SELECT privileges found granted (two
        /// tables are read per `es.load_events`).
        static SELECT_GRANTED: Cell<[(u64, Oid, Oid); 2]> =
            const { Cell::new([(0, pg_sys::InvalidOid, pg_sys::InvalidOid); 2]) };
    }

    /// The relcache callback: must not touch the catalogs or raise, only note the change.
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn relcache_changed(_arg: pg_sys::Datum, _relid: Oid) {
        GENERATION.with(|g| g.set(g.get() + 1));
    }

    /// The syscache callback (`pg_namespace`, `pg_class` by name): only notes the change.
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn syscache_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
        GENERATION.with(|g| g.set(g.get() + 1));
    }

    /// The generation as it is now, without registering anything: for a guarded region that
    /// calls PostgreSQL unguarded (a `Cell` read, no call), after [`generation`] registered the
    /// callbacks.
    pub(super) fn generation_now() -> u64 {
        GENERATION.with(Cell::get)
    }

    /// The current generation; registers the callbacks on the backend's first use (nothing is
    /// remembered before they are registered, so no invalidation is missed).
    pub(super) fn generation() -> u64 {
        if !REGISTERED.with(Cell::get) {
            // SAFETY: registers callbacks with static functions, once per backend (the flag);
            // PostgreSQL keeps them for the life of the process.
            unsafe {
                pg_sys::CacheRegisterRelcacheCallback(
                    Some(relcache_changed),
                    pg_sys::Datum::from(0usize),
                );
                // The last three are what PostgreSQL's role-membership cache watches (acl.c):
                // the reads' remembered privileges depend on them.
                for cache in [
                    pg_sys::SysCacheIdentifier::NAMESPACEOID,
                    pg_sys::SysCacheIdentifier::NAMESPACENAME,
                    pg_sys::SysCacheIdentifier::RELNAMENSP,
                    pg_sys::SysCacheIdentifier::AUTHMEMROLEMEM,
                    pg_sys::SysCacheIdentifier::AUTHOID,
                    pg_sys::SysCacheIdentifier::DATABASEOID,
                ] {
                    pg_sys::CacheRegisterSyscacheCallback(
                        cache as i32,
                        Some(syscache_changed),
                        pg_sys::Datum::from(0usize),
                    );
                }
            }
            REGISTERED.with(|r| r.set(true));
            GENERATION.with(|g| g.set(g.get() + 1));
        }
        GENERATION.with(Cell::get)
    }

    /// `es.<rel>`'s OID, remembered while the generation holds: an entry is used only in
    /// the generation it was looked up in, and one looked up while an invalidation arrived
    /// (the look-up may accept invalidations) carries the generation from before, so it is
    /// stale at once.
    pub(super) fn relation_oid(rel: Remembered) -> Option<Oid> {
        let now = generation();
        let (known_at, oid) = OIDS.with(|o| o[rel as usize].get());
        if known_at == now {
            return Some(oid);
        }
        let oid = super::relation_oid(rel.name())?;
        OIDS.with(|o| o[rel as usize].set((now, oid)));
        Some(oid)
    }

    /// `rel`'s layout for `columns` as [`super::layout`] computes it (for writes), remembered
    /// while the generation holds. `rel` must be open and locked: the lock processed every
    /// invalidation that could change its descriptor.
    ///
    /// # Safety
    /// `rel` must be an open relation.
    pub(super) unsafe fn layout<const N: usize>(
        rel: pg_sys::Relation,
        columns: &'static [super::Column; N],
    ) -> Option<Layout<N>> {
        let now = generation();
        // SAFETY: an open relation has its pg_class row.
        let oid = unsafe { (*(*rel).rd_rel).oid };
        let list = (columns.as_ptr() as usize, N);
        let known = LAYOUTS.with(|l| {
            l.borrow()
                .iter()
                .find(|e| e.0 == now && e.1 == oid && e.2 == list)
                .map(|e| {
                    let mut at = [0usize; N];
                    at.copy_from_slice(&e.4[..N]);
                    Layout { natts: e.3, at }
                })
        });
        if known.is_some() {
            return known;
        }
        // SAFETY: the caller's contract.
        let layout = unsafe { super::layout(rel, columns, true) }?;
        let mut at = [0usize; 10];
        at[..N].copy_from_slice(&layout.at);
        LAYOUTS.with(|l| {
            let mut l = l.borrow_mut();
            l.retain(|e| e.0 == now && !(e.1 == oid && e.2 == list));
            l.push((now, oid, list, layout.natts, at));
        });
        Some(layout)
    }

    /// Whether `index` was checked to be the bump's btree in generation `now`.
    pub(super) fn pkey_checked(now: u64, index: Oid) -> bool {
        PKEY_CHECKED.with(Cell::get) == (now, index)
    }

    /// Notes that `index` was checked to be the bump's btree by a check that began in
    /// generation `now` (an invalidation during the check makes the note stale at once).
    pub(super) fn note_pkey_checked(now: u64, index: Oid) {
        PKEY_CHECKED.with(|c| c.set((now, index)));
    }

    /// Whether `user` was found to hold SELECT on `table` in generation `now`.
    pub(super) fn select_granted(now: u64, user: Oid, table: Oid) -> bool {
        SELECT_GRANTED.with(|c| c.get().contains(&(now, user, table)))
    }

    /// Notes that `user` holds SELECT on `table`, found by a check that began in generation
    /// `now` (an invalidation during the check makes the note stale at once); the older of
    /// the two notes gives way.
    pub(super) fn note_select_granted(now: u64, user: Oid, table: Oid) {
        SELECT_GRANTED.with(|c| {
            let [_, newer] = c.get();
            c.set([newer, (now, user, table)]);
        });
    }
}

/// No trigger fires on an INSERT into `rel`.
///
/// # Safety
/// `rel` must be an open relation.
unsafe fn no_insert_triggers(rel: pg_sys::Relation) -> bool {
    // SAFETY: an open relation's trigdesc is NULL or valid.
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

/// No trigger fires on an UPDATE of `rel`.
///
/// # Safety
/// `rel` must be an open relation.
unsafe fn no_update_triggers(rel: pg_sys::Relation) -> bool {
    // SAFETY: an open relation's trigdesc is NULL or valid.
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

/// Whether a text datum holds exactly `s`, without copying it.
///
/// # Safety
/// `d` must be a non-null text datum.
unsafe fn text_equals(d: Datum, s: &str) -> bool {
    // SAFETY: the caller's contract; detoasting a packed value may allocate in the current
    // context, nothing else.
    unsafe {
        let t = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
        pgrx::varlena::varlena_to_byte_slice(t) == s.as_bytes()
    }
}

/// One open index of a table and its `IndexInfo` (built in the memory context current at
/// [`Target::open`]).
#[derive(Clone, Copy)]
struct OpenIndex {
    index: pg_sys::Relation,
    info: *mut pg_sys::IndexInfo,
}

/// The open indexes of a table, for inserting the entries of new heap tuples as
/// `ExecInsertIndexTuples` would. The array is palloc'd (no Rust allocation: it is filled
/// inside the guard of [`Target::open`], where nothing may own a destructor) in the memory
/// context current at the open, like the `IndexInfo`s, which outlives the target: the target
/// is opened and closed within one call of the store, and nothing resets that context between.
struct Indexes {
    /// `len` open indexes (NULL when there are none).
    list: *mut OpenIndex,
    len: usize,
}

impl Indexes {
    /// The open indexes.
    fn as_slice(&self) -> &[OpenIndex] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `list` holds `len` initialized entries, palloc'd by `open_in_guard` and freed
        // only by `close_in_guard`, which consumes the target that owns `self`.
        unsafe { std::slice::from_raw_parts(self.list, self.len) }
    }

    /// Opens every index of `rel` like the executor's `ExecOpenIndices` (locked RowExclusive,
    /// kept to the end of the transaction); also whether every one is simple, i.e. none needs
    /// the executor: expressions, a predicate, an exclusion constraint, a deferred uniqueness
    /// check.
    ///
    /// # Safety
    /// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor
    /// (it calls PostgreSQL unguarded: an ERROR longjmps to that guard); `rel` must be an open
    /// relation, locked at least RowExclusiveLock.
    unsafe fn open_in_guard(rel: pg_sys::Relation) -> (Indexes, bool) {
        let lockmode = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let mut simple = true;
        // SAFETY: the caller's contract; the index list is a fresh copy (freed here), the
        // array is palloc'd for exactly its length and each entry written before `len` counts
        // it, so an ERROR mid-way leaves only opened indexes to the abort (which closes them).
        unsafe {
            let oids = raw::RelationGetIndexList(rel);
            if oids.is_null() || (*oids).length == 0 {
                return (
                    Indexes {
                        list: ptr::null_mut(),
                        len: 0,
                    },
                    true,
                );
            }
            let n = (*oids).length as usize;
            let list = raw::palloc(n * std::mem::size_of::<OpenIndex>()).cast::<OpenIndex>();
            for i in 0..n {
                let index = raw::index_open((*(*oids).elements.add(i)).oid_value, lockmode);
                let info = raw::BuildIndexInfo(index);
                simple &= (*info).ii_Expressions.is_null()
                    && (*info).ii_Predicate.is_null()
                    && (*info).ii_ExclusionOps.is_null()
                    && (*(*index).rd_index).indimmediate;
                list.add(i).write(OpenIndex { index, info });
            }
            raw::list_free(oids);
            (Indexes { list, len: n }, simple)
        }
    }

    /// Inserts the entries of the heap tuple stored in `slot` (with its `tts_tid` set) into
    /// every index ready for inserts. `unchanged`: for an update, the attribute numbers the
    /// update did not change (an index on only those gets the executor's bottom-up deletion
    /// hint).
    ///
    /// # Safety
    /// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor
    /// (it calls PostgreSQL unguarded); `rel` is the indexes' open table; `slot` holds a tuple
    /// of it that was just inserted.
    unsafe fn insert_in_guard(
        &self,
        rel: pg_sys::Relation,
        slot: *mut pg_sys::TupleTableSlot,
        unchanged: Option<&[i16]>,
    ) {
        let mut values = [Datum::from(0usize); pg_sys::INDEX_MAX_KEYS as usize];
        let mut nulls = [false; pg_sys::INDEX_MAX_KEYS as usize];
        for &OpenIndex { index, info } in self.as_slice() {
            // SAFETY: `index` and `info` were opened and built for `rel` in `open_in_guard`;
            // the index is simple (no expressions), so FormIndexDatum needs no executor state.
            unsafe {
                let form = &*(*index).rd_index;
                if !form.indisready {
                    continue;
                }
                raw::FormIndexDatum(
                    info,
                    slot,
                    ptr::null_mut(),
                    values.as_mut_ptr(),
                    nulls.as_mut_ptr(),
                );
                let check = if form.indisunique {
                    pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES
                } else {
                    pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO
                };
                let index_unchanged = unchanged.is_some_and(|same| {
                    form.indkey
                        .values
                        .as_slice(form.indnatts as usize)
                        .iter()
                        .all(|a| same.contains(a))
                });
                raw::index_insert(
                    index,
                    values.as_mut_ptr(),
                    nulls.as_mut_ptr(),
                    &mut (*slot).tts_tid,
                    rel,
                    check,
                    index_unchanged,
                    info,
                );
            }
        }
    }
}

/// A table opened for the native writes: locked RowExclusive (the lock is kept to the end of
/// the transaction, like the executor's), its layout checked, its indexes open.
struct Target<const N: usize> {
    rel: pg_sys::Relation,
    layout: Layout<N>,
    indexes: Indexes,
}

impl<const N: usize> Target<N> {
    /// Opens the store's relation `name` when nothing but the store's own work applies to a
    /// write of it (see the module's header): the columns `columns`, no rules, CHECK
    /// constraints or row-level security, no triggers for the operation (`no_triggers`), only
    /// simple indexes. `None` (nothing left open) otherwise.
    ///
    /// The table and its indexes are opened under one pgrx guard ([`open_in_guard`]), the
    /// checks run after it (they may allocate the backend's memos).
    fn open(
        name: Remembered,
        columns: &'static [Column; N],
        no_triggers: unsafe fn(pg_sys::Relation) -> bool,
    ) -> Option<Target<N>> {
        // A read-only transaction (every transaction of a hot standby, and `BEGIN READ ONLY` on
        // a primary) must fail as PostgreSQL's own writes do, with 25006: the executor checks
        // that, heap_update does not (on a standby it would fail later, with XX000, when it
        // asks for a transaction id).
        // SAFETY: reads a flag of this backend's transaction state, set at transaction start.
        if unsafe { pg_sys::XactReadOnly } {
            return None;
        }
        let rel_oid = memo::relation_oid(name)?;
        // An ERROR is raised by the guard as every guarded call's is; the abort closes what
        // was opened.
        let (rel, indexes, simple) =
            // SAFETY: `open_in_guard` runs whole inside this one guard, its frame and the
            // closure's owning only an OID, raw pointers and integers (an ERROR skips nothing).
            unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| open_in_guard(rel_oid)) };
        // SAFETY: `rel` is open and locked RowExclusive, which every check needs.
        let layout = unsafe {
            memo::layout(rel, columns).filter(|_| {
                simple && plain_heap(rel) && plain_writes(rel, rel_oid) && no_triggers(rel)
            })
        };
        match layout {
            Some(layout) => Some(Target {
                rel,
                layout,
                indexes,
            }),
            None => {
                // SAFETY: opened above and not handed out, closed once (as in `close`).
                unsafe { close_unchecked(rel, &indexes) };
                None
            }
        }
    }

    /// Closes the indexes and the table, keeping their locks. Not on an append's common path
    /// (its regions close the tables they wrote), so kept out of its code.
    #[cold]
    #[inline(never)]
    fn close(self) {
        // SAFETY: opened in `open`, closed once (`self` is consumed); `close_in_guard` owns
        // nothing with a destructor and runs whole inside this one guard.
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| close_in_guard(self.rel, &self.indexes)) };
    }
}

/// Closes a table opened by [`open_in_guard`] that the checks of [`Target::open`] turned down
/// (out of the common open's code).
///
/// # Safety
/// `rel` and `indexes` opened by [`open_in_guard`], not closed yet and not used after.
#[cold]
#[inline(never)]
unsafe fn close_unchecked(rel: pg_sys::Relation, indexes: &Indexes) {
    // SAFETY: the caller's contract; `close_in_guard` owns nothing with a destructor and runs
    // whole inside this one guard.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| close_in_guard(rel, indexes)) };
}

/// Opens table `rel_oid` locked RowExclusive and, when it is a plain heap table, its indexes
/// ([`Indexes::open_in_guard`]); whether those are all simple.
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor.
unsafe fn open_in_guard(rel_oid: Oid) -> (pg_sys::Relation, Indexes, bool) {
    // SAFETY: the caller's contract; the relation is closed by `close_in_guard` (or the abort).
    unsafe {
        let rel = raw::table_open(rel_oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        if !plain_heap(rel) {
            let none = Indexes {
                list: ptr::null_mut(),
                len: 0,
            };
            return (rel, none, false);
        }
        let (indexes, simple) = Indexes::open_in_guard(rel);
        (rel, indexes, simple)
    }
}

/// Closes `indexes` and then `rel`, keeping their locks to the end of the transaction, and
/// frees the indexes' array.
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor; `rel`
/// and `indexes` opened by [`open_in_guard`] and not closed yet.
unsafe fn close_in_guard(rel: pg_sys::Relation, indexes: &Indexes) {
    // SAFETY: the caller's contract: each was opened once and is closed once here.
    unsafe {
        for &OpenIndex { index, .. } in indexes.as_slice() {
            raw::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
        if !indexes.list.is_null() {
            raw::pfree(indexes.list.cast());
        }
        raw::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
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
    judge: &mut dyn FnMut(&StreamHead<'_>) -> Result<Option<Kept>, E>,
) -> Outcome<Result<Bump, E>> {
    let Some(pkey_oid) = memo::relation_oid(Remembered::StreamsPkey) else {
        return Outcome::Fallback;
    };
    if let Some(target) = Target::open(Remembered::Streams, &STREAMS, no_update_triggers) {
        return bump_in(target, pkey_oid, stream, expected, n, judge);
    }
    match Target::open(Remembered::Streams, &STREAMS_0_1, no_update_triggers) {
        Some(target) => bump_in(target, pkey_oid, stream, expected, n, judge),
        None => Outcome::Fallback,
    }
}

/// [`bump_stream`] in an open `es.streams` of either layout.
fn bump_in<const N: usize, E>(
    target: Target<N>,
    pkey_oid: Oid,
    stream: &Uuid,
    expected: Option<i64>,
    n: i64,
    judge: &mut dyn FnMut(&StreamHead<'_>) -> Result<Option<Kept>, E>,
) -> Outcome<Result<Bump, E>> {
    // The primary key must be the btree on stream_id the lookup keys on.
    let now = memo::generation();
    let pkey = target
        .indexes
        .as_slice()
        .iter()
        .find_map(|&OpenIndex { index, .. }| {
            // SAFETY: an index opened by Indexes::open.
            let ok = unsafe {
                (*(*index).rd_rel).oid == pkey_oid
                    && (memo::pkey_checked(now, pkey_oid)
                        || btree_on(
                            index,
                            &[target.layout.attno(STREAM_ID)],
                            &[pg_sys::UUIDOID],
                            &[pg_sys::F_UUID_CMP],
                        ))
            };
            if ok {
                memo::note_pkey_checked(now, pkey_oid);
            }
            ok.then_some(index)
        });
    let Some(pkey) = pkey else {
        target.close();
        return Outcome::Fallback;
    };
    // SAFETY: the target is es.streams, open, locked and checked, and `pkey` its open primary
    // key.
    let result = unsafe { bump_row(&target, pkey, stream, expected, n, judge) };
    // An update closed the table in its own guarded region: close it on every other outcome.
    if !matches!(result, Ok(Bump::Updated { .. })) {
        target.close();
    }
    Outcome::Done(result)
}

/// The body of [`bump_stream`] once the relation and its indexes are open and checked.
///
/// PostgreSQL is called in two guarded regions per try, not once per call: finding the head
/// ([`find_head_in_guard`]) and writing the new row version ([`update_in_guard`]). `judge`
/// (which may run the user's code) runs between them, outside any unguarded region; the rare
/// paths (a concurrent update's row, the serialization failure) use the guarded calls. A
/// successful update closes the table and its indexes in its own region (one guard fewer per
/// append): `Ok(Bump::Updated)` means `target` is closed, and the caller must not close it
/// again; on every other outcome it is still open.
///
/// # Safety
/// `target` is `es.streams` opened by [`Target::open`], and `pkey` its open primary key, a
/// btree on stream_id.
unsafe fn bump_row<const N: usize, E>(
    target: &Target<N>,
    pkey: pg_sys::Relation,
    stream: &Uuid,
    expected: Option<i64>,
    n: i64,
    judge: &mut dyn FnMut(&StreamHead<'_>) -> Result<Option<Kept>, E>,
) -> Result<Bump, E> {
    let (rel, layout, indexes) = (target.rel, &target.layout, &target.indexes);
    // SAFETY: the caller's contract; every pointer used below comes from PostgreSQL for this
    // relation, and every tuple kept across a call is a palloc'd copy.
    unsafe {
        let desc = (*rel).rd_att;
        let natts = layout.natts;
        // Made here, outside the guards, and never resized inside them: the regions write them
        // through raw pointers only. On this frame's stack for the usual table (no heap
        // allocation per append).
        let mut row_buffer = RowBuffer::new(natts);
        let (values, nulls) = row_buffer.slices();
        let (values_at, nulls_at) = (values.as_mut_ptr(), nulls.as_mut_ptr());
        // SAFETY: `find_head_in_guard` runs whole inside this one guard; its frames and the
        // closure's own only raw pointers and integers (the vectors above are owned by this
        // frame, which the guard's panic unwinds normally), so an ERROR longjmping to the guard
        // skips nothing that would have run.
        let (cid, mut current, started) = pg_sys::ffi::pg_guard_ffi_boundary(|| {
            find_head_in_guard(rel, pkey, stream, desc, values_at, nulls_at)
        });
        let mut row: [Option<Datum>; N] = [None; N];
        // Only the layout of 0.2.0 on has the columns.
        let revision_column = (N > STREAM_STATE_REVISION).then_some(STREAM_STATE_REVISION);
        let deleted_column = (N > STREAM_DELETED).then_some(STREAM_DELETED);
        let unchanged = [
            layout.attno(STREAM_ID),
            layout.attno(STREAM_TYPE),
            layout.attno(STREAM_CREATED_AT),
        ];
        loop {
            if current.is_null() {
                return Ok(Bump::NotFound);
            }
            // `values`/`nulls` hold `current` deformed.
            for (i, v) in row.iter_mut().enumerate() {
                let at = layout.at[i];
                *v = (!nulls[at]).then_some(values[at]);
            }
            let version = row[STREAM_VERSION].map_or(0, |d| d.value() as i64);
            if let Some(e) = expected
                && version != e
            {
                return Ok(Bump::Mismatch { actual: version });
            }
            let Some(new_version) = version.checked_add(n) else {
                // A version past i64::MAX cannot be stored; the SQL path reports it.
                return Ok(Bump::Mismatch { actual: version });
            };
            // `current` stays allocated until the loop moves on, so the head may borrow it.
            let head = StreamHead::new(
                version,
                row[STREAM_TYPE],
                row[STREAM_STATE],
                revision_column
                    .and_then(|c| row[c])
                    .map(|d| d.value() as i64),
                deleted_column.and_then(|c| row[c]),
            );
            if let Some(kept) = judge(&head)? {
                row[STREAM_STATE] = Some(kept.state);
                if let Some(c) = revision_column {
                    row[c] = kept.revision.map(Datum::from);
                }
            }
            row[STREAM_VERSION] = Some(Datum::from(new_version));
            row[STREAM_UPDATED_AT] = Some(Datum::from(started));
            layout.fill(&row, values, nulls);
            let otid = (*current).t_self;
            let (values_at, nulls_at) = (values.as_mut_ptr(), nulls.as_mut_ptr());
            // The table is closed in the same region once the update went through: nothing
            // below uses it on that path (the caller does not close it again).
            // SAFETY: `update_in_guard` and `close_in_guard` run whole inside this one guard and
            // own nothing with a destructor (raw pointers, integers, stack arrays; `indexes` and
            // `unchanged` are borrowed from this frame), so an ERROR longjmping to the guard
            // skips nothing; the table is closed once, only on `TM_Ok`, which returns below.
            let (tm, tmfd) = pg_sys::ffi::pg_guard_ffi_boundary(|| {
                let (tm, tmfd) = update_in_guard(
                    rel, desc, indexes, &unchanged, otid, values_at, nulls_at, cid,
                );
                if tm == pg_sys::TM_Result::TM_Ok {
                    close_in_guard(rel, indexes);
                }
                (tm, tmfd)
            });
            match tm {
                pg_sys::TM_Result::TM_Ok => {
                    return Ok(Bump::Updated {
                        old_version: version,
                    });
                }
                pg_sys::TM_Result::TM_Updated => {
                    current = follow_update(rel, desc, tmfd.ctid, values, nulls);
                }
                pg_sys::TM_Result::TM_Deleted => return Ok(Bump::NotFound),
                pg_sys::TM_Result::TM_SelfModified | pg_sys::TM_Result::TM_Invisible => {
                    return Ok(Bump::ChangedDuringAppend);
                }
                other => unexpected_update_result(other),
            }
        }
    }
}

/// After a concurrent append committed an update of the stream row first (`heap_update`'s
/// `TM_Updated`): under READ COMMITTED, its row version at `ctid`, copied and deformed into
/// `values`/`nulls` (NULL: none); under REPEATABLE READ and SERIALIZABLE the executor's
/// serialization failure. Out of the bump's common code: its guarded calls' trampolines would
/// spread it.
///
/// # Safety
/// `rel` is `es.streams`, open and locked, `desc` its descriptor; `values`/`nulls` hold
/// `desc`'s `natts` entries each.
#[cold]
#[inline(never)]
unsafe fn follow_update(
    rel: pg_sys::Relation,
    desc: pg_sys::TupleDesc,
    ctid: pg_sys::ItemPointerData,
    values: &mut [Datum],
    nulls: &mut [bool],
) -> pg_sys::HeapTuple {
    // `XactIsoLevel` is this backend's setting; the caller's contract for the rest:
    // `fetch_any` reads a row version of the open `rel`, and a non-NULL copy is a tuple of
    // `desc`, deformed into arrays of its `natts` entries (guarded calls).
    // SAFETY: guarded calls on the caller's open `rel`; the arrays hold `natts` entries.
    unsafe {
        if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 {
            serialization_failure();
        }
        // A concurrent append committed first: continue from its row version.
        let current = fetch_any(rel, ctid);
        if !current.is_null() {
            pg_sys::heap_deform_tuple(current, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        }
        current
    }
}

/// The executor's error for an update that a concurrent one got to first under REPEATABLE READ
/// or SERIALIZABLE (kept out of the bump's hot code).
#[cold]
#[inline(never)]
fn serialization_failure() -> ! {
    pgrx::ereport!(
        ERROR,
        pgrx::PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
        "could not serialize access due to concurrent update"
    );
}

/// `heap_update` returned what it never returns for a waited-for update of a live row.
#[cold]
#[inline(never)]
fn unexpected_update_result(tm: pg_sys::TM_Result::Type) -> ! {
    pgrx::error!("event_store: unexpected result {tm} updating es.streams")
}

/// The first step of a bump: makes this statement's earlier appends visible, takes the command
/// id and a fresh snapshot, fetches the stream's row version ([`fetch_head_in_guard`]) and
/// deforms it into `values`/`nulls` (`natts` of each); returns the command id, the copied row
/// version (NULL: none) and the transaction's start time (the row's `updated_at`).
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor (it
/// calls PostgreSQL unguarded: an ERROR longjmps to that guard, and the abort releases the
/// registered snapshot, the scan and the buffer as for the executor's scan); `rel`, `pkey` as
/// [`fetch_head_in_guard`]; `desc` is `rel`'s descriptor; `values` and `nulls` point at
/// `desc`'s `natts` entries each.
unsafe fn find_head_in_guard(
    rel: pg_sys::Relation,
    pkey: pg_sys::Relation,
    stream: &Uuid,
    desc: pg_sys::TupleDesc,
    values: *mut Datum,
    nulls: *mut bool,
) -> (pg_sys::CommandId, pg_sys::HeapTuple, pg_sys::TimestampTz) {
    // SAFETY: the caller's contract.
    unsafe {
        // Our own earlier appends of this statement must be visible to the lookup.
        raw::CommandCounterIncrement();
        let cid = raw::GetCurrentCommandId(true);
        let snapshot = raw::RegisterSnapshot(raw::GetTransactionSnapshot());
        let current = fetch_head_in_guard(rel, pkey, stream, snapshot);
        raw::UnregisterSnapshot(snapshot);
        if !current.is_null() {
            raw::heap_deform_tuple(current, desc, values, nulls);
        }
        (cid, current, raw::GetCurrentTransactionStartTimestamp())
    }
}

/// The second step of a bump: forms the new row version from `values`/`nulls`, replaces the
/// row version at `otid` with it (`heap_update`, waiting for a concurrent writer), and when
/// the update is not HOT inserts its entries into every index (`unchanged`: the attributes a
/// bump never changes). Returns `heap_update`'s result and failure data.
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor;
/// `rel` is `es.streams` open with `indexes`, `desc` its descriptor, `values`/`nulls` a full
/// row of it, `otid` a row version of it.
#[allow(clippy::too_many_arguments)]
unsafe fn update_in_guard(
    rel: pg_sys::Relation,
    desc: pg_sys::TupleDesc,
    indexes: &Indexes,
    unchanged: &[i16; 3],
    mut otid: pg_sys::ItemPointerData,
    values: *mut Datum,
    nulls: *mut bool,
    cid: pg_sys::CommandId,
) -> (pg_sys::TM_Result::Type, pg_sys::TM_FailureData) {
    // SAFETY: the caller's contract; the new tuple is palloc'd in the current context, the
    // slot (only for a non-HOT update) is dropped here without freeing it.
    unsafe {
        let new = raw::heap_form_tuple(desc, values, nulls);
        let mut tmfd = std::mem::zeroed::<pg_sys::TM_FailureData>();
        let mut tuple_lock = 0;
        let tm = super::compat::heap_update_in_guard(
            rel,
            &mut otid,
            new,
            cid,
            true,
            &mut tmfd,
            &mut tuple_lock,
        );
        if tm == pg_sys::TM_Result::TM_Ok
            && u32::from((*(*new).t_data).t_infomask2) & pg_sys::HEAP_ONLY_TUPLE == 0
        {
            // Not on the HOT chain: every index needs an entry for the new version.
            let slot = raw::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsHeapTuple);
            raw::ExecStoreHeapTuple(new, slot, false);
            indexes.insert_in_guard(rel, slot, Some(&unchanged[..]));
            raw::ExecDropSingleTupleTableSlot(slot);
        }
        (tm, tmfd)
    }
}

/// The row version of `stream` in `es.streams` that `snapshot` sees, copied (NULL if none): an
/// index scan of the primary key, as `UPDATE … WHERE stream_id = $1` runs it, except that the
/// heap page is pruned only when it is nearly full.
///
/// Why: an index scan's heap fetch (`heapam_index_fetch_tuple`) tries to prune the page on every
/// fetch, and PostgreSQL prunes whenever the page's free space is below the fillfactor's reserve,
/// which is always true of an `es.streams` page: every append paid a prune (~9,700 instructions
/// and a WAL record) that removed the one dead version the previous append left. Pruned only when
/// the next row versions might not fit, one prune removes the dead versions of many appends, and
/// the update still finds room on the page (a HOT update: no index entries).
///
/// Visibility is the index scan's: the same btree probe under the same registered snapshot,
/// and the same `heap_hot_search_buffer` over the HOT chain the index entry leads to (it follows
/// a redirect at the chain's root, stops at an unused or out-of-range line pointer, so an entry
/// whose slot a concurrent VACUUM freed gives "not found" for that entry, and the scan goes on).
/// Entries whose whole chain is dead are marked dead in the index, as the executor's scan does.
/// Buffer lock and pins: the page's content lock is held only across `heap_hot_search_buffer`
/// and the free-space read; an ERROR raised there (a serialization failure under SERIALIZABLE)
/// or in any other call here leaves the lock, the pin and the scan to the (sub)transaction's
/// abort, which releases every LWLock and the resource owner's buffer pins, as for the
/// executor's scan. The tuple is copied (TOAST pointers and all) while the pin keeps it in place
/// and before the prune, which may move tuples on the page.
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor (it
/// calls PostgreSQL unguarded); `rel` is `es.streams`, open and locked, `pkey` its open primary key (a btree on stream_id
/// alone), `snapshot` a registered MVCC snapshot.
unsafe fn fetch_head_in_guard(
    rel: pg_sys::Relation,
    pkey: pg_sys::Relation,
    stream: &Uuid,
    snapshot: pg_sys::Snapshot,
) -> pg_sys::HeapTuple {
    // SAFETY: the caller's contract. The scan is ended and the buffer released before return;
    // every tuple pointer into the page is used only while the buffer is pinned (and locked
    // where the function asks for it).
    unsafe {
        let scan = stream_key_scan_in_guard(rel, pkey, stream, snapshot);
        let mut buffer = pg_sys::InvalidBuffer as pg_sys::Buffer;
        let mut found: pg_sys::HeapTuple = ptr::null_mut();
        loop {
            let entry = raw::index_getnext_tid(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if entry.is_null() {
                break;
            }
            let root = *entry;
            let mut tid = root;
            let block = pgrx::itemptr::item_pointer_get_block_number_no_check(tid);
            if buffer == pg_sys::InvalidBuffer as pg_sys::Buffer
                || raw::BufferGetBlockNumber(buffer) != block
            {
                buffer = raw::ReleaseAndReadBuffer(buffer, rel, block);
            }
            let mut tuple = std::mem::zeroed::<pg_sys::HeapTupleData>();
            let mut all_dead = false;
            let visible = hot_search_locked_in_guard(
                rel,
                buffer,
                &mut tid,
                snapshot,
                &mut tuple,
                &mut all_dead,
            );
            let page = pg_sys::BufferGetPage(buffer);
            let prune = visible
                && (raw::PageGetHeapFreeSpace(page) < prune_below(tuple.t_len)
                    || dead_before(page, root.ip_posid, tid.ip_posid) >= PRUNE_CHAIN);
            raw::LockBuffer(buffer, pg_sys::BUFFER_LOCK_UNLOCK as i32);
            if visible {
                found = raw::heap_copytuple(&mut tuple);
                if prune {
                    raw::heap_page_prune_opt(rel, buffer);
                }
                break;
            }
            note_dead_chain(scan, all_dead);
        }
        end_stream_key_scan_in_guard(scan, buffer);
        found
    }
}

/// A scan of `es.streams`' primary key `pkey` for `stream` in `snapshot`, begun and keyed
/// (`index_rescan` copies the key into the scan); the caller ends it. The key points at the
/// caller's 16 bytes, which outlive the scan (uuid is passed by reference, alignment 1; the
/// btree only reads it): no palloc'd copy.
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor; `rel`
/// open and locked, `pkey` its open btree on stream_id alone, `snapshot` registered until the
/// scan ends, `stream` alive until then.
unsafe fn stream_key_scan_in_guard(
    rel: pg_sys::Relation,
    pkey: pg_sys::Relation,
    stream: &Uuid,
    snapshot: pg_sys::Snapshot,
) -> pg_sys::IndexScanDesc {
    // SAFETY: the caller's contract; the key on the stack is copied by `index_rescan`.
    unsafe {
        let mut key = std::mem::zeroed::<pg_sys::ScanKeyData>();
        raw::ScanKeyInit(
            &mut key,
            1,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            Oid::from(pg_sys::F_UUID_EQ),
            Datum::from(stream.as_bytes().as_ptr().cast_mut()),
        );
        let scan = super::compat::index_beginscan_in_guard(rel, pkey, snapshot, 1, 0);
        raw::index_rescan(scan, &mut key, 1, ptr::null_mut(), 0);
        scan
    }
}

/// Takes `buffer`'s content lock (shared; the caller releases it) and searches the HOT chain
/// at `tid` for the row version `snapshot` sees, as the executor's heap fetch does
/// (`heap_hot_search_buffer`: it follows the chain from its root, moves `tid` to the version
/// found and fills `tuple`; `all_dead` when the whole chain is dead to every snapshot).
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor;
/// `buffer` pinned, holding `tid`'s block of `rel`; `snapshot` an MVCC snapshot valid for the
/// call.
unsafe fn hot_search_locked_in_guard(
    rel: pg_sys::Relation,
    buffer: pg_sys::Buffer,
    tid: &mut pg_sys::ItemPointerData,
    snapshot: pg_sys::Snapshot,
    tuple: &mut pg_sys::HeapTupleData,
    all_dead: &mut bool,
) -> bool {
    // SAFETY: the caller's contract; the search runs under the page's share lock.
    unsafe {
        raw::LockBuffer(buffer, pg_sys::BUFFER_LOCK_SHARE as i32);
        raw::heap_hot_search_buffer(tid, rel, buffer, snapshot, tuple, all_dead, true)
    }
}

/// As the executor's index scan after a heap fetch found nothing visible: a chain dead to every
/// snapshot (`all_dead`) lets the index AM mark its entry dead, so later probes skip it (not on
/// a hot standby).
///
/// # Safety
/// `scan` is an index scan in progress whose last entry's chain was just searched.
unsafe fn note_dead_chain(scan: pg_sys::IndexScanDesc, all_dead: bool) {
    // SAFETY: the caller's contract; the scan descriptor is valid until it ends.
    unsafe {
        if !(*scan).xactStartedInRecovery {
            (*scan).kill_prior_tuple = all_dead;
        }
    }
}

/// Ends a [`stream_key_scan_in_guard`] scan, releasing the heap buffer its fetches pinned
/// (`InvalidBuffer`: none).
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor; once
/// per scan; no tuple pointer into the buffer is used after it.
unsafe fn end_stream_key_scan_in_guard(scan: pg_sys::IndexScanDesc, buffer: pg_sys::Buffer) {
    // SAFETY: the caller's contract; the pin is this scan's own.
    unsafe {
        if buffer != pg_sys::InvalidBuffer as pg_sys::Buffer {
            raw::ReleaseBuffer(buffer);
        }
        raw::index_endscan(scan);
    }
}

/// The number of row versions before the visible one on a HOT chain at which [`fetch_head_in_guard`]
/// prunes the page whatever its free space: every fetch checks each version of the chain for
/// visibility (~280 instructions each), a prune costs about 9,000 whatever it removes, so a
/// stream appended to over and over (its chain growing by one version per append) is cheapest
/// pruned every 8 or so appends (walks of 4 versions on average, a prune per 9 appends).
const PRUNE_CHAIN: usize = 8;

/// How many row versions precede the one at offset `found` on the HOT chain that starts at
/// offset `root` of `page` (redirects not counted); the chain as `heap_hot_search_buffer` just
/// walked it. Only the pruning decision depends on it, so a chain it cannot follow (an offset
/// out of range, a line pointer neither normal nor a redirect) just ends the count.
///
/// The page is read through its header's fields, as PostgreSQL's page macros do (on 18 they are
/// functions pgrx reaches only through a guarded call each).
///
/// # Safety
/// `page` is a heap page whose buffer this backend holds pinned and content-locked.
unsafe fn dead_before(
    page: pg_sys::Page,
    root: pg_sys::OffsetNumber,
    found: pg_sys::OffsetNumber,
) -> usize {
    // SAFETY: the caller's contract: the header and the line pointer array up to pd_lower are
    // on the page; every offset is checked against the line pointer count before its line
    // pointer is read, and a normal line pointer's tuple header lies on the page.
    unsafe {
        let header = page as *const pg_sys::PageHeaderData;
        let linp = std::mem::offset_of!(pg_sys::PageHeaderData, pd_linp);
        let max = usize::from((*header).pd_lower).saturating_sub(linp)
            / std::mem::size_of::<pg_sys::ItemIdData>();
        let mut at = usize::from(root);
        let mut dead = 0;
        // A chain has at most one version per line pointer: the bound ends any cycle.
        for _ in 0..=max {
            if at == usize::from(found) || at == 0 || at > max {
                break;
            }
            let lp = &*(*header).pd_linp.as_ptr().add(at - 1);
            match lp.lp_flags() {
                pg_sys::LP_REDIRECT => at = lp.lp_off() as usize,
                pg_sys::LP_NORMAL => {
                    let tuple = (page as *const u8).add(lp.lp_off() as usize)
                        as *const pg_sys::HeapTupleHeaderData;
                    if u32::from((*tuple).t_infomask2) & pg_sys::HEAP_HOT_UPDATED == 0 {
                        break;
                    }
                    dead += 1;
                    at = usize::from((*tuple).t_ctid.ip_posid);
                }
                _ => break,
            }
        }
        dead
    }
}

/// The free space on a stream row's page below which [`fetch_head_in_guard`] prunes the page: room for a
/// few more versions of the row (a page out of room turns the bump into a non-HOT update, which
/// needs an entry in every index), at least a tenth of a page (PostgreSQL's own floor). A prune
/// finds nothing to do unless the page holds versions dead to every snapshot (its own check).
fn prune_below(row_len: u32) -> usize {
    let row = (row_len as usize).next_multiple_of(8) + std::mem::size_of::<pg_sys::ItemIdData>();
    (4 * row).max(pg_sys::BLCKSZ as usize / 10)
}

/// The row version at `tid`, whatever its visibility (it was just written by a transaction
/// `heap_update` waited for); NULL if there is none.
///
/// # Safety
/// `rel` must be an open heap relation.
unsafe fn fetch_any(rel: pg_sys::Relation, tid: pg_sys::ItemPointerData) -> pg_sys::HeapTuple {
    // SAFETY: heap_fetch pins the buffer when it returns true (with SnapshotAny it does for any
    // normal line pointer) and releases it otherwise; the tuple is copied before the pin is
    // dropped.
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

/// `es.events` opened and checked for a native insert of an append's rows, before their global
/// positions are drawn: everything that can be done without the positions is done before the
/// draw, so the positions are in flight (and gap-safe readers wait for them, docs/reference.md
/// §3) only for the heap and index inserts and the commit. It also takes the table's lock before
/// the draw: a writer that waits for that lock holds no position meanwhile.
pub struct EventsTarget(Target<10>);

/// Opens `es.events` for a native insert of `rows`; `None` (nothing left open) when the
/// executor must store them. The rows' `global_position` may still be a placeholder:
/// [`set_positions`] fills it before [`EventsTarget::insert`].
pub fn open_events(rows: &[EventRow]) -> Option<EventsTarget> {
    // Only the columns the store may leave NULL can be NULL (a NOT NULL a DBA put on one of
    // them sends every write to the executor, see `layout`); a row with NULL elsewhere goes to
    // the executor, which reports it.
    let complete = rows.iter().all(|r| {
        r.iter()
            .zip(&EVENTS)
            .all(|(v, c)| v.is_some() || c.nullable)
    });
    if !complete {
        return None;
    }
    Target::open(Remembered::Events, &EVENTS, no_insert_triggers).map(EventsTarget)
}

/// Gives `rows` the consecutive global positions from `first`, in order.
pub fn set_positions(rows: &mut [EventRow], first: i64) {
    for (i, row) in rows.iter_mut().enumerate() {
        row[EVENT_GLOBAL_POSITION] = Some(Datum::from(first + i as i64));
    }
}

impl EventsTarget {
    /// Inserts `rows` into `es.events` with their index entries, in order, at the consecutive
    /// global positions from the one `draw` returns, and closes the table; returns that first
    /// position. The rows are laid out first (their `global_position` a placeholder), then,
    /// under one pgrx guard, `draw` runs, the positions are written into the laid-out rows, the
    /// rows are stored ([`insert_rows_in_guard`]) and the table closed: the positions are in
    /// flight only for the inserts and the commit, and the draw costs no guard of its own.
    ///
    /// # Safety
    /// `draw` runs inside that guard: it owns nothing with a destructor and cannot panic (it
    /// may call PostgreSQL unguarded: an ERROR longjmps to the guard, which raises it).
    pub unsafe fn insert(self, rows: &[EventRow], draw: impl FnOnce() -> i64) -> i64 {
        let target = self.0;
        let natts = target.layout.natts;
        let position_at = target.layout.at[EVENT_GLOBAL_POSITION];
        // Made here, outside the guard, and only read through raw pointers inside it; on this
        // frame's stack for a few rows of the usual table (no heap allocation per append).
        let mut row_buffer = RowBuffer::new(rows.len() * natts);
        let (values, nulls) = row_buffer.slices();
        for (row, (v, n)) in rows
            .iter()
            .zip(values.chunks_mut(natts).zip(nulls.chunks_mut(natts)))
        {
            target.layout.fill(row, v, n);
        }
        let (values_at, nulls_at) = (values.as_mut_ptr(), nulls.as_mut_ptr());
        let count = rows.len();
        // The vectors are owned by this frame, which the guard's panic unwinds normally.
        // SAFETY: the relation and its indexes are open and checked, closed here once (`target`
        // is consumed); `draw` (the caller's contract), the positions' writes into the `count`
        // rows laid out above and `insert_rows_in_guard` run whole inside this one guard and own
        // nothing with a destructor, so an ERROR longjmping to the guard skips nothing.
        unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                let first = draw();
                for i in 0..count {
                    *values_at.add(i * natts + position_at) = Datum::from(first + i as i64);
                }
                insert_rows_in_guard(&target, values_at, nulls_at, count);
                close_in_guard(target.rel, &target.indexes);
                first
            })
        }
    }

    /// Closes the table without inserting (the draw failed), keeping its lock.
    pub fn close(self) {
        self.0.close();
    }
}

/// Stores `count` rows laid out in `values`/`nulls` (`natts` entries each) into the open
/// `es.events`: `heap_insert` and the entries of every index, each tuple formed in the current
/// memory context and freed by the slot when it is cleared.
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor (it
/// calls PostgreSQL unguarded); `target` open and checked; `values`/`nulls` hold `count` full
/// rows of its table.
unsafe fn insert_rows_in_guard<const N: usize>(
    target: &Target<N>,
    values: *mut Datum,
    nulls: *mut bool,
    count: usize,
) {
    let (rel, natts) = (target.rel, target.layout.natts);
    // SAFETY: the caller's contract.
    unsafe {
        let desc = (*rel).rd_att;
        let cid = raw::GetCurrentCommandId(true);
        let slot = raw::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsHeapTuple);
        for i in 0..count {
            let tuple = raw::heap_form_tuple(desc, values.add(i * natts), nulls.add(i * natts));
            raw::heap_insert(rel, tuple, cid, 0, ptr::null_mut());
            raw::ExecStoreHeapTuple(tuple, slot, true);
            target.indexes.insert_in_guard(rel, slot, None);
            raw::ExecClearTuple(slot);
        }
        raw::ExecDropSingleTupleTableSlot(slot);
    }
}

/// The values and null flags of rows being written, `len` of each: in arrays on the owner's
/// stack up to [`RowBuffer::INLINE`] entries (a row of `es.streams` or of `es.events`, even
/// with a few dropped columns), on the heap beyond. Why: the append writes one row of each per
/// call, and two heap allocations per row cost more than filling them. (The inline variant is
/// large on purpose: a buffer lives in one frame for one write, never in a collection.)
#[allow(clippy::large_enum_variant)]
enum RowBuffer {
    /// At most `INLINE` entries, the first `len` in use.
    Inline {
        len: usize,
        values: [Datum; RowBuffer::INLINE],
        nulls: [bool; RowBuffer::INLINE],
    },
    /// More entries than fit inline.
    Heap {
        values: Vec<Datum>,
        nulls: Vec<bool>,
    },
}

impl RowBuffer {
    /// The entries kept on the stack.
    const INLINE: usize = 32;

    /// `len` values (0) and null flags (true).
    fn new(len: usize) -> RowBuffer {
        if len <= Self::INLINE {
            RowBuffer::Inline {
                len,
                values: [Datum::from(0usize); Self::INLINE],
                nulls: [true; Self::INLINE],
            }
        } else {
            RowBuffer::Heap {
                values: vec![Datum::from(0usize); len],
                nulls: vec![true; len],
            }
        }
    }

    /// The values and the null flags, `len` of each.
    fn slices(&mut self) -> (&mut [Datum], &mut [bool]) {
        match self {
            RowBuffer::Inline { len, values, nulls } => (&mut values[..*len], &mut nulls[..*len]),
            RowBuffer::Heap { values, nulls } => (values, nulls),
        }
    }
}

/// One stored event as [`scan_stream`] hands it to its visitor, borrowing the current row:
/// valid until the visitor returns.
pub struct StreamRow<'r> {
    /// `version`.
    pub version: i64,
    /// `event_type` (text), `data` (jsonb, possibly toasted), `occurred_at`, `recorded_at`.
    event_type: Datum,
    data: Datum,
    occurred_at: Datum,
    recorded_at: Datum,
    /// Every attribute of the table row (dropped ones NULL), when it was read natively, and
    /// the relation's descriptor.
    table: Option<(&'r [Datum], &'r [bool], pg_sys::TupleDesc)>,
}

impl<'r> StreamRow<'r> {
    /// Row `row` of `rows` as a stream's event, from its columns `event_type` (text), `data`
    /// (jsonb), `occurred_at` and `recorded_at` (timestamptz), each checked to be of its type (a
    /// statement whose columns differ is an internal error); `None` when one of them is NULL.
    /// Valid while the rows are.
    pub fn from_rows(
        rows: &'r Rows<'_>,
        row: usize,
        version: i64,
        [event_type, data, occurred_at, recorded_at]: [i32; 4],
    ) -> Option<StreamRow<'r>> {
        let (Some(t), Some(d), Some(o), Some(r)) = (
            rows.datum(row, event_type),
            rows.datum(row, data),
            rows.datum(row, occurred_at),
            rows.datum(row, recorded_at),
        ) else {
            return None;
        };
        for (col, expected) in [
            (event_type, pg_sys::TEXTOID),
            (data, pg_sys::JSONBOID),
            (occurred_at, pg_sys::TIMESTAMPTZOID),
            (recorded_at, pg_sys::TIMESTAMPTZOID),
        ] {
            if rows.column_type(col) != Some(expected) {
                pgrx::error!("event_store: column {col} of a statement is not {expected:?}");
            }
        }
        // SAFETY: non-null text, jsonb and timestamptz datums (checked above) in the rows' tuple
        // table, which the borrow `'r` keeps.
        Some(unsafe { StreamRow::from_columns(version, t, d, o, r) })
    }

    /// A row read through SPI (the columns of `es.events`, valid for `'r`).
    ///
    /// # Safety
    /// `event_type` and `data` must be non-null text and jsonb datums that outlive `'r`;
    /// `occurred_at` and `recorded_at` timestamptz datums.
    unsafe fn from_columns(
        version: i64,
        event_type: Datum,
        data: Datum,
        occurred_at: Datum,
        recorded_at: Datum,
    ) -> StreamRow<'r> {
        StreamRow {
            version,
            event_type,
            data,
            occurred_at,
            recorded_at,
            table: None,
        }
    }

    /// `data`, the event object.
    pub fn data(&self) -> Jsonb<'r> {
        // SAFETY: both constructors guarantee a jsonb datum valid for 'r.
        unsafe { Jsonb::from_datum(self.data) }
    }

    /// `event_type`, a text value valid while the row is, for a result's row.
    pub fn event_type(&self) -> TypedDatum<'r> {
        // SAFETY: both constructors guarantee a non-NULL text datum valid for 'r.
        unsafe { TypedDatum::new(self.event_type, pg_sys::TEXTOID) }
    }

    /// Whether the event is one of the store's markers (its type starts with `$`): read
    /// without copying the type.
    pub fn is_marker(&self) -> bool {
        // SAFETY: both constructors guarantee a text datum valid for 'r; detoasting a packed
        // value may allocate in the current context, nothing else.
        unsafe {
            let t = pg_sys::pg_detoast_datum_packed(self.event_type.cast_mut_ptr());
            pgrx::varlena::varlena_to_byte_slice(t).first() == Some(&b'$')
        }
    }

    /// `occurred_at` (timestamptz: microseconds since 2000-01-01 UTC).
    pub fn occurred_at(&self) -> i64 {
        self.occurred_at.value() as i64
    }

    /// `recorded_at` (timestamptz: microseconds since 2000-01-01 UTC).
    pub fn recorded_at(&self) -> i64 {
        self.recorded_at.value() as i64
    }

    /// Every attribute of the table row (values, NULL flags) in `es.events` order, dropped
    /// attributes NULL, when it was read natively: what `RETURNS SETOF es.events` returns.
    pub fn table_row(&self) -> Option<(&'r [Datum], &'r [bool])> {
        self.table.map(|(values, nulls, _)| (values, nulls))
    }

    /// Stores the whole table row (read natively) in `out`, a result whose row type is the
    /// table's, attribute for attribute; `false` (nothing stored) for a row read by a statement
    /// or a result of another shape.
    pub fn put_into(&self, out: &mut ResultSet) -> bool {
        let Some((values, nulls, desc)) = self.table else {
            return false;
        };
        // SAFETY: the values and NULL flags are the scanned relation's tuple deformed with its
        // descriptor `desc`, which the scan keeps open (and the datums valid) while the row is
        // visited; `put_row_of` compares `desc` with the result's attributes.
        unsafe { out.put_row_of(desc, values, nulls) }
    }
}

/// A table and one of its btree indexes opened for a native read, locked AccessShare (the
/// locks kept to the end of the transaction, like the executor's), their shape checked.
struct ReadTarget<const N: usize> {
    rel: pg_sys::Relation,
    index: pg_sys::Relation,
    layout: Layout<N>,
}

/// A read target whose names, shape and index were checked (see [`ReadTarget::open`]): the
/// names' OIDs and the layout, kept per backend until the next relcache invalidation (any
/// `ALTER`, `DROP`, rename, index change, of any relation) or change of a schema or a
/// relation's name ([`memo::generation`]), so a read asks the catalogs nothing but the
/// privileges that depend on the current user.
struct Checked {
    table: &'static CStr,
    index: &'static CStr,
    rel_oid: Oid,
    index_oid: Oid,
    natts: usize,
    at: [usize; 10],
    /// The [`memo::generation`] it was checked in.
    generation: u64,
}

thread_local! {
    /// The checked read targets of this backend, each valid while [`memo::generation`] is the
    /// one it was checked in (the append's remembered look-ups and these share one set of
    /// invalidation callbacks).
    static CHECKED: std::cell::RefCell<Vec<Checked>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A checked read target as the backend remembers it ([`Checked`]), valid in the
/// [`memo::generation`] it was looked up in.
#[derive(Clone, Copy)]
struct RememberedTarget {
    rel_oid: Oid,
    index_oid: Oid,
    layout: (usize, [usize; 10]),
    generation: u64,
}

impl RememberedTarget {
    /// The backend's checked target `table`/`index` when it was checked in the current
    /// generation.
    fn of(table: &'static CStr, index: &'static CStr) -> Option<RememberedTarget> {
        let generation = memo::generation();
        CHECKED.with(|c| {
            c.borrow()
                .iter()
                .find(|t| {
                    t.generation == generation && ptr::eq(t.table, table) && ptr::eq(t.index, index)
                })
                .map(|t| RememberedTarget {
                    rel_oid: t.rel_oid,
                    index_oid: t.index_oid,
                    layout: (t.natts, t.at),
                    generation,
                })
        })
    }

    /// Opens the remembered table and index ([`open_pair_in_guard`]) when nothing needs asking
    /// the catalogs: the generation held while locking, both still exist, the current user's
    /// SELECT on the table is remembered in this generation and the table has no row-level
    /// security enabled. Otherwise closes what it opened (keeping the locks) and returns `None`:
    /// the caller asks [`ReadTarget::open_checked`], which checks what is missing.
    ///
    /// Why: a read's first region can then open its relations too (a region costs ~180
    /// instructions). Only plain reads of memory here (the memo's cells, the relcache entry).
    ///
    /// # Safety
    /// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor.
    unsafe fn open_in_guard(self) -> Option<ReadTarget<10>> {
        // SAFETY: the caller's contract; a relation opened here is open (its relcache entry
        // valid) until it is closed here or by the caller.
        unsafe {
            let (rel, index, user) =
                open_pair_in_guard(self.rel_oid, self.index_oid, self.generation);
            let usable = memo::generation_now() == self.generation
                && !rel.is_null()
                && !index.is_null()
                && memo::select_granted(self.generation, user, self.rel_oid)
                && !(*(*rel).rd_rel).relrowsecurity;
            if !usable {
                close_pair_in_guard(rel, index);
                return None;
            }
            let (natts, at) = self.layout;
            Some(ReadTarget {
                rel,
                index,
                layout: Layout { natts, at },
            })
        }
    }
}

impl ReadTarget<10> {
    /// [`ReadTarget::open`], from the backend's checked targets when it holds this one: then
    /// only the privileges are asked and the relations opened by OID (`try_relation_open`: one
    /// dropped since reads as no longer checked). Invalidations accepted while locking make it
    /// check again from the names.
    fn open_checked(
        table: &'static CStr,
        index: &'static CStr,
        columns: &[Column; 10],
        keys: &[(usize, u32)],
    ) -> Option<ReadTarget<10>> {
        if let Some(remembered) = RememberedTarget::of(table, index) {
            let RememberedTarget {
                rel_oid,
                index_oid,
                layout: (natts, at),
                generation,
            } = remembered;
            // `open_pair_in_guard` runs whole inside this one guard and owns only OIDs
            // and raw pointers (no destructor, no panic possible); what it opened is closed
            // below or by `close`.
            // SAFETY: one guard whose frames own only OIDs and raw pointers.
            let (rel, idx, user) = unsafe {
                pg_sys::ffi::pg_guard_ffi_boundary(|| {
                    open_pair_in_guard(rel_oid, index_oid, generation)
                })
            };
            let still = memo::generation() == generation;
            if still && !rel.is_null() && !idx.is_null() {
                // SAFETY: `rel` was opened and locked above, `user` is the current user.
                if !unsafe { select_allowed_remembered(rel, rel_oid, user, generation) } {
                    // SAFETY: both opened above, closed once, inside this one guard.
                    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| close_pair_in_guard(rel, idx)) };
                    return None;
                }
                return Some(ReadTarget {
                    rel,
                    index: idx,
                    layout: Layout { natts, at },
                });
            }
            // SAFETY: whichever was opened above, closed once, inside this one guard.
            unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| close_pair_in_guard(rel, idx)) };
        }
        let generation = memo::generation();
        let target = ReadTarget::open(table, index, columns, keys)?;
        if memo::generation() == generation {
            let (rel_oid, index_oid) = {
                // SAFETY: `ReadTarget::open` returned both relations open and locked, so their
                // relcache entries (and `rd_rel`) stay valid until the target closes them.
                unsafe { ((*(*target.rel).rd_rel).oid, (*(*target.index).rd_rel).oid) }
            };
            CHECKED.with(|c| {
                let mut c = c.borrow_mut();
                c.retain(|t| !(ptr::eq(t.table, table) && ptr::eq(t.index, index)));
                c.push(Checked {
                    table,
                    index,
                    rel_oid,
                    index_oid,
                    natts: target.layout.natts,
                    at: target.layout.at,
                    generation,
                })
            });
        }
        Some(target)
    }
}

/// Opens table `rel_oid` and then index `index_oid` by OID, remembered in generation
/// `generation`, locked AccessShare ([`open_remembered_in_guard`]; NULL for one that no longer
/// exists; the index is not tried when the table is gone), and the current user.
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor;
/// [`memo::generation`] has been called in this backend.
unsafe fn open_pair_in_guard(
    rel_oid: Oid,
    index_oid: Oid,
    generation: u64,
) -> (pg_sys::Relation, pg_sys::Relation, Oid) {
    // SAFETY: the caller's contract; what is opened is closed by the caller (or the abort).
    unsafe {
        let rel = open_remembered_in_guard(rel_oid, generation);
        let index = if rel.is_null() {
            ptr::null_mut()
        } else {
            open_remembered_in_guard(index_oid, generation)
        };
        (rel, index, raw::GetUserId())
    }
}

/// [`select_allowed`] of a relation open and locked, with the privilege answer remembered per backend for (`user`, the
/// table) while the [`memo::generation`] the table was opened in holds: a `GRANT`/`REVOKE` on
/// the table is a relcache invalidation of it, a change of role membership, of a role (its
/// superuser or inherit flags) or of the database's owner (`pg_database_owner`) an invalidation
/// of the syscaches PostgreSQL's own membership cache watches (`AUTHMEMROLEMEM`, `AUTHOID`,
/// `DATABASEOID`), and each moves the generation; a different current user (`SET ROLE`, a
/// security-definer function) is another key. Only a granted answer is remembered. Row-level
/// security is looked up only when the relation has it enabled (`relrowsecurity`, which
/// `check_enable_rls` reads first and without which it never applies; the relcache entry is
/// current once the lock is taken), and then on every read (it depends on settings no
/// invalidation reports).
///
/// # Safety
/// `rel` must be open (its OID `rel_oid`), opened in generation `generation` (checked still
/// current by the caller after the lock), `user` the current user.
unsafe fn select_allowed_remembered(
    rel: pg_sys::Relation,
    rel_oid: Oid,
    user: Oid,
    generation: u64,
) -> bool {
    let granted = memo::select_granted(generation, user, rel_oid) || {
        let granted = select_granted(rel_oid);
        if granted {
            memo::note_select_granted(generation, user, rel_oid);
        }
        granted
    };
    // SAFETY: the caller's contract: an open relation, whose relcache entry has its pg_class
    // row.
    granted && !(unsafe { (*(*rel).rd_rel).relrowsecurity } && rls_enabled(rel_oid))
}

/// Whether the current user may select from `rel_oid` without row-level security (what the
/// executor would add to a scan of it).
fn select_allowed(rel_oid: Oid) -> bool {
    select_granted(rel_oid) && !rls_enabled(rel_oid)
}

/// Whether the current user holds SELECT on the relation `rel_oid` (privileges only).
fn select_granted(rel_oid: Oid) -> bool {
    // SAFETY: a catalog privilege check for the current user (an OID without a pg_class row
    // raises an ordinary ERROR).
    unsafe {
        pg_sys::pg_class_aclcheck(
            rel_oid,
            pg_sys::GetUserId(),
            pg_sys::ACL_SELECT as pg_sys::AclMode,
        ) == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// Closes an index and its table (either may be NULL: not opened), keeping their locks.
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor; each
/// non-NULL relation open, closed once.
unsafe fn close_pair_in_guard(rel: pg_sys::Relation, index: pg_sys::Relation) {
    // SAFETY: the caller's contract.
    unsafe {
        if !index.is_null() {
            raw::relation_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
        if !rel.is_null() {
            raw::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}

impl<const N: usize> ReadTarget<N> {
    /// Opens `es.<table>` and its index `es.<index>` when the executor would do nothing more
    /// than walk that index: the current user may select from the table, no row-level security
    /// applies to it, it is a plain heap table with exactly `columns`, and the index is a valid
    /// btree of it on the columns `keys` (each a position in `columns` and the built-in
    /// comparison of its type). `None` (nothing left open) otherwise: read through SQL.
    fn open(
        table: &CStr,
        index: &CStr,
        columns: &[Column; N],
        keys: &[(usize, u32)],
    ) -> Option<ReadTarget<N>> {
        let (rel_oid, index_oid) = (relation_oid(table)?, relation_oid(index)?);
        if !select_allowed(rel_oid) {
            return None;
        }
        let lockmode = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        // SAFETY: opened and locked here; closed below or by `close`.
        let (rel, index) = unsafe {
            (
                pg_sys::table_open(rel_oid, lockmode),
                pg_sys::index_open(index_oid, lockmode),
            )
        };
        // SAFETY: both relations are open and locked.
        let checked = unsafe {
            layout(rel, columns, false).filter(|l| {
                let attnos: Vec<i16> = keys.iter().map(|&(c, _)| l.attno(c)).collect();
                let types: Vec<Oid> = keys.iter().map(|&(c, _)| columns[c].ty).collect();
                let cmp: Vec<u32> = keys.iter().map(|&(_, f)| f).collect();
                plain_heap(rel)
                    && (*(*index).rd_index).indrelid == rel_oid
                    && btree_on(index, &attnos, &types, &cmp)
            })
        };
        match checked {
            Some(layout) => Some(ReadTarget { rel, index, layout }),
            None => {
                // SAFETY: both opened above, closed once.
                unsafe {
                    pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
                    pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
                }
                None
            }
        }
    }

    /// Closes the index and the table, keeping their locks, under one guard.
    fn close(self) {
        let (rel, index) = (self.rel, self.index);
        // SAFETY: opened in `open`, closed once (`self` is consumed); `close_pair_in_guard`
        // runs whole inside this one guard and owns only raw pointers.
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| close_pair_in_guard(rel, index)) };
    }

    /// The table's descriptor (valid while the table is open).
    fn desc(&self) -> pg_sys::TupleDesc {
        // SAFETY: an open relation has its descriptor.
        unsafe { (*self.rel).rd_att }
    }
}

/// One bound of a native index scan: the index column (1-based), the btree strategy, the
/// comparison function and the value.
type Bound = (i16, u32, u32, Datum);

/// The snapshot a native scan reads in, resolved inside the scan's guarded start
/// ([`OpenScan::begin_in_guard`]), so choosing it costs no guard of its own.
#[derive(Clone, Copy)]
enum ScanSnapshot {
    /// What a [`Reading`] asks for: the statement's snapshot, or the latest commits (also when
    /// no statement snapshot is set).
    Of(Reading),
    /// A snapshot the caller holds registered for at least the scan.
    Given(pg_sys::Snapshot),
}

/// The snapshot `choice` names (not registered: the scan registers it at once).
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor; a
/// `Given` snapshot is valid.
unsafe fn snapshot_in_guard(choice: ScanSnapshot) -> pg_sys::Snapshot {
    // SAFETY: the caller's contract; these read the backend's snapshot state, and
    // GetLatestSnapshot's static snapshot is registered (copied) by the caller before anything
    // else can take another.
    unsafe {
        match choice {
            ScanSnapshot::Given(snapshot) => snapshot,
            ScanSnapshot::Of(reading)
                if reading == Reading::Latest || !raw::ActiveSnapshotSet() =>
            {
                raw::GetLatestSnapshot()
            }
            ScanSnapshot::Of(_) => raw::GetActiveSnapshot(),
        }
    }
}

/// Walks `target`'s index within `bounds`, forward, in `snapshot` (registered for the scan),
/// handing each visible row's slot to `visit` until it returns `Ok(false)` or an error.
///
/// Two contexts, both children of the caller's: one holds everything the scan allocates (the
/// index AM's state, btree's killed-items array) and is deleted only after `index_endscan`;
/// the other, made at the second row, is current while `visit` runs from then on and holds
/// what one row allocates (a detoasted event, the visitor's values): it is reset between rows
/// once it holds more than 64 kB, never while the scan is current in it. The first row is
/// visited in the scan's context (one row's allocations, freed with the scan). The slot's
/// values point into the pinned buffer or into the visit's context, valid until the next row.
///
/// # Safety
/// `target` is open; each bound's column, strategy and function fit its index (a btree
/// `ReadTarget::open` checked), each by-reference value valid until the scan ends; a given
/// `snapshot` is valid.
unsafe fn scan_index<const N: usize, E>(
    target: &ReadTarget<N>,
    bounds: &[Bound],
    snapshot: ScanSnapshot,
    visit: &mut dyn FnMut(*mut pg_sys::TupleTableSlot) -> Result<bool, E>,
) -> Result<(), E> {
    // SAFETY: the caller's contract (open, checked relations) and the context rule above.
    unsafe {
        let mut open = OpenScan::begin(target, bounds, snapshot);
        let mut result = Ok(());
        let mut first = true;
        while pg_sys::index_getnext_slot(
            open.scan,
            pg_sys::ScanDirection::ForwardScanDirection,
            open.slot,
        ) {
            // The first row is visited in the scan's context, so a one-row scan costs one
            // context, not two.
            if first {
                first = false;
            } else {
                open.enter_row();
            }
            let visited = visit(open.slot);
            open.leave_row();
            match visited {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        open.end();
        result
    }
}

/// An index scan of a read target as [`scan_index`] and [`fill_batched`] run it: the scan's
/// context, the registered snapshot, the scan and its slot, and the per-row context once made.
/// Plain pointers without `Drop`: [`OpenScan::end`] releases them on the way out; after an
/// ERROR the transaction's abort does (the resource owner the scan, the buffer pins and the
/// snapshot; the contexts go with their parent, the caller's context).
struct OpenScan {
    caller: pg_sys::MemoryContext,
    scan_cxt: pg_sys::MemoryContext,
    per_row: pg_sys::MemoryContext,
    snapshot: pg_sys::Snapshot,
    scan: pg_sys::IndexScanDesc,
    slot: *mut pg_sys::TupleTableSlot,
}

impl OpenScan {
    /// Begins the scan of `target`'s index within `bounds` in `snapshot`, with the scan's
    /// context current.
    ///
    /// # Safety
    /// As [`scan_index`].
    unsafe fn begin<const N: usize>(
        target: &ReadTarget<N>,
        bounds: &[Bound],
        snapshot: ScanSnapshot,
    ) -> OpenScan {
        let (rel, index) = (target.rel, target.index);
        // After an ERROR the abort frees what was begun (see the module's header).
        // The caller's contract; `begin_in_guard` runs whole inside this one guard, its
        // frame and the closure's owning only raw pointers, a borrowed slice and integers (no
        // destructor, no panic), so an ERROR longjmping to the guard skips nothing.
        // SAFETY: one guard whose frames own only raw pointers, a borrowed slice and integers.
        unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                OpenScan::begin_in_guard(rel, index, bounds, snapshot)
            })
        }
    }

    /// [`OpenScan::begin`]'s body: the scan's context, the snapshot (chosen and registered),
    /// the keys, the scan and its slot, through the unguarded bindings of `raw`.
    ///
    /// # Safety
    /// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor;
    /// otherwise as [`scan_index`] for the open relations `rel` and `index`.
    unsafe fn begin_in_guard(
        rel: pg_sys::Relation,
        index: pg_sys::Relation,
        bounds: &[Bound],
        snapshot: ScanSnapshot,
    ) -> OpenScan {
        // SAFETY: the caller's contract: open, checked relations whose index takes these
        // bounds; everything the scan allocates lives in its own context.
        unsafe {
            let caller = pg_sys::CurrentMemoryContext;
            let scan_cxt = raw::AllocSetContextCreateInternal(
                caller,
                c"event_store scan".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as pg_sys::Size,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as pg_sys::Size,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as pg_sys::Size,
            );
            pg_sys::MemoryContextSwitchTo(scan_cxt);
            let snapshot = raw::RegisterSnapshot(snapshot_in_guard(snapshot));
            let mut keys = [std::mem::zeroed::<pg_sys::ScanKeyData>(); 3];
            let n = bounds.len().min(keys.len());
            for (key, &(att, strategy, proc_, value)) in keys.iter_mut().zip(bounds) {
                raw::ScanKeyInit(
                    key,
                    att,
                    strategy as pg_sys::StrategyNumber,
                    Oid::from(proc_),
                    value,
                );
            }
            let scan = super::compat::index_beginscan_in_guard(rel, index, snapshot, n as i32, 0);
            raw::index_rescan(scan, keys.as_mut_ptr(), n as i32, ptr::null_mut(), 0);
            let slot = raw::table_slot_create(rel, ptr::null_mut());
            OpenScan {
                caller,
                scan_cxt,
                per_row: ptr::null_mut(),
                snapshot,
                scan,
                slot,
            }
        }
    }

    /// Makes the per-row context current (made the first time), reset first once it holds
    /// more than 64 kB.
    ///
    /// # Safety
    /// Between [`OpenScan::begin`] and [`OpenScan::end`], with the scan's context current.
    unsafe fn enter_row(&mut self) {
        // SAFETY: the caller's contract; the per-row context is a child of the caller's and
        // nothing of the scan lives in it, so resetting it frees only earlier rows' values.
        unsafe {
            if self.per_row.is_null() {
                self.per_row = pg_sys::AllocSetContextCreateInternal(
                    self.caller,
                    c"event_store scan row".as_ptr(),
                    pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                    pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                    pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
                );
            }
            pg_sys::MemoryContextSwitchTo(self.per_row);
            // Reading an inline event allocates nothing; reset only when something (a
            // detoasted event, a visitor's value) did, to spare a call per row.
            if (*self.per_row).mem_allocated > 64 * 1024 {
                pg_sys::MemoryContextReset(self.per_row);
            }
        }
    }

    /// Makes the scan's context current again (before the next fetch).
    ///
    /// # Safety
    /// Between [`OpenScan::begin`] and [`OpenScan::end`].
    unsafe fn leave_row(&self) {
        // SAFETY: the scan's context lives until `end`.
        unsafe { pg_sys::MemoryContextSwitchTo(self.scan_cxt) };
    }

    /// Ends the scan, unregisters its snapshot, makes the caller's context current again and
    /// deletes the scan's contexts (after `index_endscan`, which frees into them).
    ///
    /// # Safety
    /// Once, after [`OpenScan::begin`].
    unsafe fn end(self) {
        // SAFETY: the caller's contract; `end_in_guard` runs whole inside this one guard and
        // owns only raw pointers (no destructor, no panic possible).
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| self.end_in_guard()) }
    }

    /// [`OpenScan::end`]'s body, through the unguarded bindings of `raw`.
    ///
    /// # Safety
    /// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor;
    /// once, after [`OpenScan::begin`].
    unsafe fn end_in_guard(self) {
        // SAFETY: the caller's contract: every pointer is this scan's, still valid.
        unsafe {
            raw::ExecDropSingleTupleTableSlot(self.slot);
            raw::index_endscan(self.scan);
            raw::UnregisterSnapshot(self.snapshot);
            pg_sys::MemoryContextSwitchTo(self.caller);
            if !self.per_row.is_null() {
                raw::MemoryContextDelete(self.per_row);
            }
            raw::MemoryContextDelete(self.scan_cxt);
        }
    }
}

/// Deforms the row in `slot` into `values`/`nulls` as a row of the table: the attributes of
/// `layout` copied, every other (dropped) attribute NULL.
///
/// # Safety
/// `slot` holds a row of the relation `layout` was checked on.
unsafe fn deform<const N: usize>(
    slot: *mut pg_sys::TupleTableSlot,
    layout: &Layout<N>,
    values: &mut [Datum],
    nulls: &mut [bool],
) {
    // SAFETY: the caller's contract; the slot's arrays have the relation's `natts` entries.
    unsafe {
        pg_sys::slot_getsomeattrs_int(slot, layout.natts as i32);
        let v = std::slice::from_raw_parts((*slot).tts_values, layout.natts);
        let n = std::slice::from_raw_parts((*slot).tts_isnull, layout.natts);
        nulls.fill(true);
        for &at in &layout.at {
            values[at] = v[at];
            nulls[at] = n[at];
        }
    }
}

/// The `(stream_id, version)` primary key of `es.events`, opened for a native read.
fn events_by_stream() -> Option<ReadTarget<10>> {
    ReadTarget::open_checked(
        c"events",
        c"events_pkey",
        &EVENTS,
        &[
            (EVENT_STREAM_ID, pg_sys::F_UUID_CMP),
            (EVENT_VERSION, pg_sys::F_BTINT8CMP),
        ],
    )
}

/// The bounds of `from < version <= to` in `stream`, on [`events_by_stream`]'s index. The
/// stream's key points at the caller's 16 bytes (uuid is passed by reference, alignment 1; the
/// btree only reads it), so the scan must end before `stream` goes: no palloc'd copy.
fn stream_bounds(stream: &Uuid, from: i64, to: i64) -> [Bound; 3] {
    [
        (
            1,
            pg_sys::BTEqualStrategyNumber,
            pg_sys::F_UUID_EQ,
            Datum::from(stream.as_bytes().as_ptr().cast_mut()),
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
    ]
}

/// Visits the events of `stream` with `from < version <= to`, in version order, through the
/// `(stream_id, version)` index, in the snapshot `reading` asks for (commands read the latest
/// commits after taking the stream row; queries read in the statement's snapshot). Replay is the executor's slowest client
/// (a sort, then one fmgr call per row); here a row costs an index step and the visitor. What a
/// visit allocates in PostgreSQL memory is freed row by row, so a million events are folded in
/// constant memory (at most 64 kB plus one row's allocations are kept between rows).
///
/// Falls back (reads nothing) when the executor would do more than this: the caller may not
/// select from `es.events`, or row-level security applies to it, or the table or its primary
/// key is not the one this version created.
pub fn scan_stream<E>(
    stream: &Uuid,
    from: i64,
    to: i64,
    reading: Reading,
    visit: &mut dyn FnMut(&StreamRow<'_>) -> Result<(), E>,
) -> Outcome<Result<(), E>> {
    let Some(target) = events_by_stream() else {
        return Outcome::Fallback;
    };
    let desc = target.desc();
    let layout = &target.layout;
    let mut table_values = vec![Datum::from(0usize); layout.natts];
    let mut table_nulls = vec![true; layout.natts];
    // SAFETY: the target is es.events and its (stream_id, version) btree, open and checked;
    // the bounds are of those columns; each slot holds a row of es.events, deformed before its
    // values are read, and the row borrows them only while it is visited.
    let result = unsafe {
        scan_index(
            &target,
            &stream_bounds(stream, from, to),
            ScanSnapshot::Of(reading),
            &mut |slot| {
                deform(slot, layout, &mut table_values, &mut table_nulls);
                let column = |i: usize| table_values[layout.at[i]];
                let row = StreamRow {
                    version: column(EVENT_VERSION).value() as i64,
                    event_type: column(EVENT_TYPE),
                    data: column(EVENT_DATA),
                    occurred_at: column(EVENT_OCCURRED_AT),
                    recorded_at: column(EVENT_RECORDED_AT),
                    table: Some((&table_values, &table_nulls, desc)),
                };
                visit(&row).map(|()| true)
            },
        )
    };
    target.close();
    Outcome::Done(result)
}

/// `es.load_events` natively: the events of `stream` with `version > from`, at most `max`, in
/// version order and in the statement's snapshot, put into `out` (whose row type must be the
/// table's). Falls back (puts nothing) where [`scan_stream`] does or when `out` has another
/// row type.
pub fn load_stream_into(stream: &Uuid, from: i64, max: i64, out: &mut ResultSet) -> Outcome<()> {
    let Some(target) = events_by_stream() else {
        return Outcome::Fallback;
    };
    // As few keys as the hand-written query (a key btree checks on every entry costs about
    // 90 instructions a row): none for `version <= i64::MAX`, which every version is; and from
    // the start of the stream (`from` below 1) `version > from` is checked on the row instead
    // ([`RowBound::Floor`]), which then skips nothing a stored stream holds. From further on
    // the key starts the scan at `from`.
    let [stream_key, after_key, _] = stream_bounds(stream, from, i64::MAX);
    let floor = (from < 1)
        .then(|| RowBound::for_events(&target.layout, RowBound::Floor(from)))
        .flatten();
    let keys = [stream_key, after_key];
    let bounds = match floor {
        Some(_) => &keys[..1],
        None => &keys[..],
    };
    // SAFETY: the target is es.events and its (stream_id, version) btree, open and checked;
    // the bounds are of those columns, the floor given by `for_events`.
    unsafe {
        fill(
            target,
            bounds,
            floor,
            ScanSnapshot::Of(Reading::Statement),
            max,
            out,
        )
    }
}

/// `es.read_all` natively: the events with `after < global_position <= last`, at most `max`,
/// in position order, in `snapshot` (the gap-safe horizon's), put into `out` (whose row type
/// must be the table's) through the `global_position` index. Falls back (puts nothing) when
/// the executor would do more (privileges, row-level security, a table or index changed by a
/// DBA) or `out` has another row type.
///
/// The scan has one key, `> after`, as the hand-written query's has; the bound `<= last` is
/// checked on each fetched row instead ([`RowBound::Ceiling`]): a second key would be checked
/// on every index entry by `_bt_checkkeys`, about 90 instructions a row. Stopping at the first
/// visible row above `last` is exact: the unique btree hands the rows out in ascending
/// position (a visible row's position is its entry's key: rows are never updated, and a HOT
/// chain keeps its indexed columns), so every visible row at or below `last` came before it.
/// What is fetched in addition is at most the first visible row above the bound and the
/// invisible ones before it (in flight or dead, each skipped by the visibility check). Where
/// `global_position` is not the table's first attribute (a table a DBA made otherwise) both
/// keys are kept.
pub fn read_log_into(
    after: i64,
    last: i64,
    max: i64,
    snapshot: &super::spi::RegisteredSnapshot,
    out: &mut ResultSet,
) -> Outcome<()> {
    let Some(target) = ReadTarget::open_checked(
        c"events",
        c"events_global_position_key",
        &EVENTS,
        &[(EVENT_GLOBAL_POSITION, pg_sys::F_BTINT8CMP)],
    ) else {
        return Outcome::Fallback;
    };
    let above = (
        1,
        pg_sys::BTGreaterStrategyNumber,
        pg_sys::F_INT8GT,
        Datum::from(after),
    );
    let at_most = (
        1,
        pg_sys::BTLessEqualStrategyNumber,
        pg_sys::F_INT8LE,
        Datum::from(last),
    );
    let ceiling = RowBound::for_events(&target.layout, RowBound::Ceiling(last));
    let bounds: &[Bound] = match ceiling {
        Some(_) => &[above],
        None => &[above, at_most],
    };
    // The target is es.events and its global_position btree, open and checked; the
    // bounds are of that column, the ceiling given by `for_events` on that index (ascending
    // positions); the snapshot is registered while `snapshot` lives.
    // SAFETY: es.events and its position index, open and checked; the snapshot registered.
    unsafe {
        fill(
            target,
            bounds,
            ceiling,
            ScanSnapshot::Given(snapshot.raw()),
            max,
            out,
        )
    }
}

/// A bound of a scan checked on each fetched row rather than as an index key (a key btree
/// checks on every entry costs about 90 instructions a row): a bigint attribute of the stored
/// row read in place, at its fixed offset. Given only where the attributes before it are
/// fixed-width and NOT NULL columns of this version (the table's first attributes, none
/// dropped, as [`Layout`] found them), so the offset holds for every row; a row where one of
/// them is NULL anyway (or missing) is never admitted.
#[derive(Clone, Copy)]
enum RowBound {
    /// `global_position <= last` on a scan of the position index, ascending: the scan ends at
    /// the first row above it (every row at or below it came before).
    Ceiling(i64),
    /// `version > from` on a scan of one stream in the `(stream_id, version)` index: a row at
    /// or below it is skipped (such rows come first, and a stored version is never below 1).
    Floor(i64),
}

/// What a [`RowBound`] says of a fetched row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Within the bound: put it.
    Admit,
    /// Below a floor: leave it out and go on.
    Skip,
    /// Above a ceiling: leave it out and end the scan.
    Stop,
}

impl RowBound {
    /// `global_position`: attribute 0, at offset 0 of the data.
    const POSITION: (usize, usize) = (0, 0);
    /// `version`: attribute 2, after `global_position` (bigint, 8 bytes) and `stream_id` (uuid,
    /// 16 bytes, alignment 1), at offset 24 (bigint's alignment of 8 holds there).
    const VERSION: (usize, usize) = (2, 24);

    /// The bound for `es.events` whose layout is `layout`, when it applies: the columns up to
    /// the bound's are the table's first attributes (no dropped one among them).
    fn for_events(layout: &Layout<10>, bound: RowBound) -> Option<RowBound> {
        let (attribute, _) = bound.attribute();
        (0..=attribute).all(|i| layout.at[i] == i).then_some(bound)
    }

    /// The attribute index and data offset of the bound's column.
    fn attribute(self) -> (usize, usize) {
        match self {
            RowBound::Ceiling(_) => Self::POSITION,
            RowBound::Floor(_) => Self::VERSION,
        }
    }

    /// The verdict on the stored row `tuple`.
    ///
    /// # Safety
    /// `tuple` is a valid heap tuple of the relation the bound was given for (by
    /// [`RowBound::for_events`]).
    unsafe fn verdict(self, tuple: pg_sys::HeapTuple) -> Verdict {
        let (attribute, offset) = self.attribute();
        // The caller's contract: the attributes up to the bound's are fixed-width and
        // come first, so when the tuple holds them (its attribute count) and none is NULL (the
        // null bitmap, when there is one) the bigint is at `offset` of the data, which starts
        // at `t_hoff` (MAXALIGNed) within the tuple's length.
        // SAFETY: reads inside the tuple only when it holds the attributes, none NULL.
        let value = unsafe {
            let header = (*tuple).t_data;
            let natts = ((*header).t_infomask2 as u32 & pg_sys::HEAP_NATTS_MASK) as usize;
            let has_nulls = (*header).t_infomask as u32 & pg_sys::HEAP_HASNULL != 0;
            let bits = (*header).t_bits.as_ptr();
            let present = natts > attribute
                && (!has_nulls || (0..=attribute).all(|i| *bits.add(i / 8) & (1 << (i % 8)) != 0));
            present.then(|| {
                header
                    .cast::<u8>()
                    .add((*header).t_hoff as usize + offset)
                    .cast::<i64>()
                    .read_unaligned()
            })
        };
        match (self, value) {
            (RowBound::Ceiling(last), Some(p)) if p <= last => Verdict::Admit,
            (RowBound::Ceiling(_), _) => Verdict::Stop,
            (RowBound::Floor(from), Some(v)) if v > from => Verdict::Admit,
            (RowBound::Floor(_), _) => Verdict::Skip,
        }
    }
}

/// Puts the rows of `target`'s index within `bounds`, at most `max`, into `out`: each stored
/// tuple copied as it is when it is a row of the result as stored ([`ResultSet::put_tuple_of`]),
/// else deformed (dropped attributes NULL) and put as values, through the result's rewrite.
/// Closes `target` (in the scan's last guarded region where it can).
///
/// # Safety
/// As [`scan_index`].
unsafe fn fill<const N: usize>(
    target: ReadTarget<N>,
    bounds: &[Bound],
    row_bound: Option<RowBound>,
    snapshot: ScanSnapshot,
    max: i64,
    out: &mut ResultSet,
) -> Outcome<()> {
    let desc = target.desc();
    // SAFETY: the open table's descriptor.
    if !unsafe { out.matches(desc) } {
        target.close();
        return Outcome::Fallback;
    }
    if max <= 0 {
        target.close();
        return Outcome::Done(());
    }
    // SAFETY: the open table's descriptor; the store is given only its tuples (below).
    if let Some(stored) = unsafe { out.stored_tuples_target(desc) } {
        // SAFETY: the caller's contract; the store takes tuples of `desc`'s relation with the
        // attribute count `stored` names, every other row goes through `out` as values.
        unsafe { fill_batched(target, bounds, row_bound, snapshot, max, stored, out) };
        return Outcome::Done(());
    }
    let layout = &target.layout;
    let mut values = vec![Datum::from(0usize); layout.natts];
    let mut nulls = vec![true; layout.natts];
    let mut left = max;
    // SAFETY: the caller's contract; each slot holds a row of the table, whose heap tuple is
    // read in the pinned buffer without a copy (a buffer slot's tuple: nothing to free) and
    // copied by the store.
    let done: Result<(), std::convert::Infallible> = unsafe {
        scan_index(&target, bounds, snapshot, &mut |slot| {
            let tuple = buffer_tuple(slot);
            match row_bound.map_or(Verdict::Admit, |b| b.verdict(tuple)) {
                Verdict::Admit => {}
                Verdict::Skip => return Ok(true),
                Verdict::Stop => return Ok(false),
            }
            if !out.put_tuple_of(desc, tuple) {
                deform(slot, layout, &mut values, &mut nulls);
                out.put_row_of(desc, &values, &nulls);
            }
            left -= 1;
            Ok(left > 0)
        })
    };
    target.close();
    let Ok(()) = done;
    Outcome::Done(())
}

// SAFETY: each declaration is the prototype of PostgreSQL's own function, linked by its C
// name; called only inside one `pg_guard_ffi_boundary` (see each binding).
unsafe extern "C-unwind" {
    /// PostgreSQL's `index_getnext_slot`, bound without pgrx's per-call guard: called only
    /// inside [`put_stored_rows`], which runs whole under one guard.
    #[link_name = "index_getnext_slot"]
    fn index_getnext_slot_in_batch(
        scan: pg_sys::IndexScanDesc,
        direction: pg_sys::ScanDirection::Type,
        slot: *mut pg_sys::TupleTableSlot,
    ) -> bool;
    /// PostgreSQL's `tuplestore_puttuple`, bound without pgrx's per-call guard (as above).
    #[link_name = "tuplestore_puttuple"]
    fn tuplestore_puttuple_in_batch(state: *mut pg_sys::Tuplestorestate, tuple: pg_sys::HeapTuple);
}

/// Why [`put_stored_rows`] returned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BatchEnd {
    /// The index has no further visible row within the bounds, or the next is above the
    /// scan's [`RowBound::Ceiling`] (not put).
    End,
    /// It put as many rows as it was asked for.
    Full,
    /// The slot holds a row that is not stored as it is (not in a buffer slot, or holding
    /// fewer attributes than the relation: older than an added column); not put.
    Other,
}

/// The inner loop of [`fill_batched`]: fetches rows and copies each stored tuple into `store`
/// until `left` rows are put, the index ends, or a row must go the other way; returns how many
/// it put and why it stopped. Meant to run under one pgrx guard for the whole batch (two
/// PostgreSQL calls per row, unguarded: ~200 instructions per row fewer than two guarded
/// calls): an ERROR raised in them (a cancel, out of memory, a failed write of the store's
/// temporary file) jumps straight to that guard, across this frame only, which owns nothing
/// (raw pointers and integers, no destructor, no panic), so nothing is skipped that would
/// have run; the guard then raises it as the call's error, as every guarded call does.
///
/// # Safety
/// `scan` is an index scan of the relation whose tuples have `natts` attributes when whole,
/// with its keys set; `slot` a slot of that relation (`table_slot_create`); `store` a tuple
/// store whose rows are that relation's rows, with none of its attributes dropped; a
/// `row_bound` given for that relation and index as [`RowBound::for_events`] allows.
unsafe fn put_stored_rows(
    scan: pg_sys::IndexScanDesc,
    slot: *mut pg_sys::TupleTableSlot,
    store: *mut pg_sys::Tuplestorestate,
    natts: usize,
    row_bound: Option<RowBound>,
    left: i64,
) -> (i64, BatchEnd) {
    let mut put = 0i64;
    // SAFETY: the caller's contract; a buffer heap slot's `tuple` is the stored row in the
    // pinned buffer once a fetch stored one (read in place, copied by the store).
    unsafe {
        while put < left {
            if !index_getnext_slot_in_batch(scan, pg_sys::ScanDirection::ForwardScanDirection, slot)
            {
                return (put, BatchEnd::End);
            }
            if !ptr::eq((*slot).tts_ops, &raw const pg_sys::TTSOpsBufferHeapTuple) {
                return (put, BatchEnd::Other);
            }
            let tuple = (*slot.cast::<pg_sys::HeapTupleTableSlot>()).tuple;
            if tuple.is_null()
                || ((*(*tuple).t_data).t_infomask2 as u32 & pg_sys::HEAP_NATTS_MASK) as usize
                    != natts
            {
                return (put, BatchEnd::Other);
            }
            match row_bound.map_or(Verdict::Admit, |b| b.verdict(tuple)) {
                Verdict::Admit => {}
                Verdict::Skip => continue,
                Verdict::Stop => return (put, BatchEnd::End),
            }
            tuplestore_puttuple_in_batch(store, tuple);
            put += 1;
        }
    }
    (put, BatchEnd::Full)
}

/// [`fill`] when the result takes the relation's stored tuples as they are
/// ([`ResultSet::stored_tuples_target`]): the rows are fetched and put in batches, each under
/// one guard ([`put_stored_rows`]); a row that is not stored as it is (older than an added
/// column) goes through `out` deformed, as `fill` puts it. Contexts, snapshot and scan as in
/// [`scan_index`]. The scan's start and its first batch share one guarded region, and the
/// scan's end and the target's close share the region of the batch that ends the read (for a
/// read whose rows are all stored as they are, one region in all: each region costs a
/// `sigsetjmp` and pgrx's bookkeeping, ~150 instructions).
///
/// # Safety
/// As [`scan_index`]; `store` and `natts` from `out.stored_tuples_target` of the target's
/// descriptor.
unsafe fn fill_batched<const N: usize>(
    target: ReadTarget<N>,
    bounds: &[Bound],
    row_bound: Option<RowBound>,
    snapshot: ScanSnapshot,
    max: i64,
    (store, natts): (*mut pg_sys::Tuplestorestate, usize),
    out: &mut ResultSet,
) {
    let desc = target.desc();
    let layout = &target.layout;
    let (rel, index) = (target.rel, target.index);
    // Only a row that is not stored as it is needs them.
    let mut row: Option<(Vec<Datum>, Vec<bool>)> = None;
    // One batch, after the scan's start when `open` is None: the scan's end and the close
    // follow in the same region when the batch ends the read (then `None` comes back). The
    // frames inside own only raw pointers, integers and an `OpenScan` (plain pointers, no
    // destructor), so an ERROR longjmping to the guard skips nothing.
    let batch = |open: Option<OpenScan>, left: i64| {
        // SAFETY: the caller's contract (open, checked relations; bounds of the index); the
        // scan's context is current while rows are fetched; the scan ends before the close.
        unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                let open =
                    open.unwrap_or_else(|| OpenScan::begin_in_guard(rel, index, bounds, snapshot));
                let (put, end) =
                    put_stored_rows(open.scan, open.slot, store, natts, row_bound, left);
                let still = match end {
                    BatchEnd::Other => Some(open),
                    BatchEnd::End | BatchEnd::Full => {
                        open.end_in_guard();
                        close_pair_in_guard(rel, index);
                        None
                    }
                };
                (still, put)
            })
        }
    };
    let (mut open, put) = batch(None, max);
    let mut left = max - put;
    // A row that must go the other way is in the slot: put it deformed, go on with batches.
    while let Some(mut scan) = open {
        // SAFETY: between the scan's start and end; the slot holds the row the batch stopped
        // at, a row of the table (`deform` reads it with the checked layout).
        let ended = unsafe {
            scan.enter_row();
            let tuple = buffer_tuple(scan.slot);
            let verdict = row_bound.map_or(Verdict::Admit, |b| b.verdict(tuple));
            if verdict == Verdict::Admit && !out.put_tuple_of(desc, tuple) {
                let (values, nulls) = row.get_or_insert_with(|| {
                    (
                        vec![Datum::from(0usize); layout.natts],
                        vec![true; layout.natts],
                    )
                });
                deform(scan.slot, layout, values, nulls);
                out.put_row_of(desc, values, nulls);
            }
            scan.leave_row();
            if verdict == Verdict::Admit {
                left -= 1;
            }
            verdict == Verdict::Stop || left <= 0
        };
        if ended {
            // SAFETY: the scan begun above, ended once; the target closed once, after it.
            unsafe { scan.end() };
            target.close();
            return;
        }
        let (still, put) = batch(Some(scan), left);
        open = still;
        left -= put;
    }
}

/// The heap tuple a table slot holds, read in place: a buffer heap slot's own tuple (what
/// `ExecFetchSlotHeapTuple` returns without materializing, without its call), else that call.
///
/// # Safety
/// `slot` holds a row (a slot `table_slot_create` made, after a successful fetch).
unsafe fn buffer_tuple(slot: *mut pg_sys::TupleTableSlot) -> pg_sys::HeapTuple {
    // SAFETY: the caller's contract; a slot whose ops are TTSOpsBufferHeapTuple is a
    // BufferHeapTupleTableSlot, whose `tuple` points at the stored row (in the pinned buffer)
    // once a fetch stored one.
    unsafe {
        if ptr::eq((*slot).tts_ops, &raw const pg_sys::TTSOpsBufferHeapTuple) {
            let tuple = (*slot.cast::<pg_sys::HeapTupleTableSlot>()).tuple;
            if !tuple.is_null() {
                return tuple;
            }
        }
        pg_sys::ExecFetchSlotHeapTuple(slot, false, ptr::null_mut())
    }
}

/// The names of the life look-up's read target (statics: a checked target is remembered by
/// the names' addresses).
static STREAMS_TABLE: &CStr = c"streams";
static STREAMS_PKEY: &CStr = c"streams_pkey";

/// What a stream's `es.streams` row says of its life (docs/reference.md §14).
pub struct RowLife {
    /// `deleted` (`soft`, `hard`), if set to one of them.
    pub deleted: Option<Deletion>,
    /// `truncated_before`, if set.
    pub truncated_before: Option<i64>,
}

/// The life of `stream` from its `es.streams` row in the snapshot `reading` asks for, read
/// through the primary key (`Done(None)`: no row). Falls back where the executor would do more
/// (privileges, row-level security, a table of another shape: a 0.1.0 schema has no life
/// columns).
///
/// One guarded region when the target is remembered and the current user's SELECT too
/// ([`RememberedTarget::open_in_guard`]): the open, the look-up and the close
/// ([`life_in_guard`]); else two: the open with the privilege check, then the rest.
pub fn stream_life(stream: &Uuid, reading: Reading) -> Outcome<Option<RowLife>> {
    let columns = |at: &[usize; 10]| (at[STREAM_DELETED], at[STREAM_TRUNCATED_BEFORE]);
    // Remembered and allowed: the open, the look-up and the close in one region.
    if let Some(remembered) = RememberedTarget::of(STREAMS_TABLE, STREAMS_PKEY) {
        let columns = columns(&remembered.layout.1);
        // `open_in_guard` and `life_in_guard` run whole inside this one guard, their frames
        // and the closure's owning only raw pointers, a borrowed key, integers and plain
        // values (no destructor); the target opened is closed by `life_in_guard`.
        // SAFETY: one guard whose frames own nothing with a destructor.
        let found = unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                remembered
                    .open_in_guard()
                    .map(|ReadTarget { rel, index, .. }| {
                        life_in_guard(rel, index, stream, reading, columns)
                    })
            })
        };
        if let Some(found) = found {
            return Outcome::Done(found);
        }
    }
    let Some(target) = ReadTarget::open_checked(
        STREAMS_TABLE,
        STREAMS_PKEY,
        &STREAMS,
        &[(STREAM_ID, pg_sys::F_UUID_CMP)],
    ) else {
        return Outcome::Fallback;
    };
    let ReadTarget { rel, index, layout } = target;
    let columns = columns(&layout.at);
    // The target's relations (es.streams and its stream_id btree, open and checked) are closed
    // there; the target is taken apart above, never closed twice.
    // SAFETY: `life_in_guard` runs whole inside this one guard, its frame and the closure's
    // owning only raw pointers, a borrowed key, integers and a plain `RowLife` (no destructor).
    let found = unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| life_in_guard(rel, index, stream, reading, columns))
    };
    Outcome::Done(found)
}

/// [`stream_life`]'s look-up: probes the primary key for `stream` (the key points at the
/// caller's 16 bytes, as the bump's does), fetches the visible row version the index entry
/// leads to, reads only `deleted` and `truncated_before` (the attribute indexes `columns`) from
/// it in place, ends the scan and closes both relations.
///
/// Why not a slot and a context of its own (as [`OpenScan`]): for one row they cost more than
/// the row's read (a context made and deleted, a slot made, stored into and dropped). The
/// fetch is the executor's (`index_fetch_heap` with `heapam_index_fetch_tuple`) step for step,
/// so visibility and side effects are the same: the same btree probe under the same registered
/// snapshot; the heap page pruned opportunistically (`heap_page_prune_opt`) when the scan moves
/// to another block; `heap_hot_search_buffer` under the page's share lock follows the HOT chain
/// the entry leads to (a redirect at its root, an unused or out-of-range line pointer ends it:
/// an entry whose slot a concurrent VACUUM freed gives "not found" and the scan goes on; the
/// serializable predicate lock and conflict check are its own); the index entry of a chain dead
/// to every snapshot is marked dead (`kill_prior_tuple`, not on a hot standby); a found row
/// counts as the index's heap fetch in the statistics. The row is read while the buffer's pin
/// keeps it in place (a prune needs a cleanup lock, which no other backend gets while the pin
/// is held), after the content lock is released, as a slot's reader does; a value that needs
/// detoasting is copied into the current context (the caller's: a call's short-lived memory),
/// which is also where the index AM's scan state lives until `index_endscan` frees it.
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor; `rel`
/// is es.streams and `index` its stream_id btree, open and checked, closed here; `columns` the
/// layout's attribute indexes of `deleted` (text) and `truncated_before` (bigint).
unsafe fn life_in_guard(
    rel: pg_sys::Relation,
    index: pg_sys::Relation,
    stream: &Uuid,
    reading: Reading,
    (deleted_at, truncated_at): (usize, usize),
) -> Option<RowLife> {
    // The caller's contract. Every tuple pointer into the page is used only while the buffer is
    // pinned; the scan ends and the buffer is released before the relations close.
    // SAFETY: tuple read under the pin; scan ended and buffer released before the close.
    unsafe {
        let snapshot = raw::RegisterSnapshot(snapshot_in_guard(ScanSnapshot::Of(reading)));
        let scan = stream_key_scan_in_guard(rel, index, stream, snapshot);
        let mut buffer = pg_sys::InvalidBuffer as pg_sys::Buffer;
        let mut found = None;
        loop {
            let entry = raw::index_getnext_tid(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if entry.is_null() {
                break;
            }
            let mut tid = *entry;
            let previous = buffer;
            buffer = raw::ReleaseAndReadBuffer(
                buffer,
                rel,
                pgrx::itemptr::item_pointer_get_block_number_no_check(tid),
            );
            if buffer != previous {
                raw::heap_page_prune_opt(rel, buffer);
            }
            let mut tuple = std::mem::zeroed::<pg_sys::HeapTupleData>();
            let mut all_dead = false;
            let visible = hot_search_locked_in_guard(
                rel,
                buffer,
                &mut tid,
                snapshot,
                &mut tuple,
                &mut all_dead,
            );
            raw::LockBuffer(buffer, pg_sys::BUFFER_LOCK_UNLOCK as i32);
            if visible {
                super::compat::count_heap_fetch(index);
                let desc = (*rel).rd_att;
                let deleted = attribute_in_guard(&mut tuple, desc, deleted_at).and_then(|d| {
                    let t = raw::pg_detoast_datum_packed(d.cast_mut_ptr());
                    std::str::from_utf8(pgrx::varlena::varlena_to_byte_slice(t))
                        .ok()
                        .and_then(Deletion::parse)
                });
                found = Some(RowLife {
                    deleted,
                    truncated_before: attribute_in_guard(&mut tuple, desc, truncated_at)
                        .map(|d| d.value() as i64),
                });
                break;
            }
            note_dead_chain(scan, all_dead);
        }
        end_stream_key_scan_in_guard(scan, buffer);
        raw::UnregisterSnapshot(snapshot);
        close_pair_in_guard(rel, index);
        found
    }
}

/// Attribute `at` (0-based) of the heap tuple `tuple` of a relation whose descriptor is `desc`,
/// `None` for NULL: what PostgreSQL's `heap_getattr` returns for a user attribute (an attribute
/// the row is older than, added later, reads as its missing value), by-reference values
/// pointing into the tuple.
///
/// # Safety
/// Inside a `pg_guard_ffi_boundary` (it calls PostgreSQL unguarded); `tuple` a valid heap
/// tuple of that relation, kept in place while the value is used; `at` below `desc`'s `natts`.
unsafe fn attribute_in_guard(
    tuple: &mut pg_sys::HeapTupleData,
    desc: pg_sys::TupleDesc,
    at: usize,
) -> Option<Datum> {
    // SAFETY: the caller's contract; the null bitmap has a bit for each of the tuple's
    // attributes when HEAP_HASNULL is set, and `nocachegetattr` is given only a non-NULL one.
    unsafe {
        let header = tuple.t_data;
        let natts = ((*header).t_infomask2 as u32 & pg_sys::HEAP_NATTS_MASK) as usize;
        let attnum = at as std::ffi::c_int + 1;
        if at >= natts {
            let mut isnull = true;
            let value = raw::getmissingattr(desc, attnum, &mut isnull);
            return (!isnull).then_some(value);
        }
        let has_nulls = (*header).t_infomask as u32 & pg_sys::HEAP_HASNULL != 0;
        if has_nulls && *(*header).t_bits.as_ptr().add(at / 8) & (1 << (at % 8)) == 0 {
            return None;
        }
        Some(raw::nocachegetattr(tuple, attnum, desc))
    }
}

/// PostgreSQL's functions of the append path's writes, bound without pgrx's per-call guard
/// (each guarded call costs about 100 instructions and its own copy of the trampoline): called
/// only from the `*_in_guard` functions of this module, each of which runs whole inside one
/// `pg_guard_ffi_boundary` whose frames up to it own nothing with a destructor, so an ERROR
/// raised by any of them longjmps to that guard, which raises it as every guarded call does.
/// The signatures are PostgreSQL's, the same on 15 and 18 (18 only made `heap_form_tuple`'s
/// arrays and `PageGetHeapFreeSpace`'s page `const`: the same pointers); the calls whose
/// signature differs are `pg/compat.rs`' `*_in_guard` functions.
mod raw {
    use pgrx::pg_sys::{self, Datum, Oid};
    use std::ffi::{c_int, c_void};

    // SAFETY: each declaration is the prototype of PostgreSQL's own function (the one pgrx binds
    // with its per-call guard), linked by its C name (`ExecClearTuple`: pgrx's shim of the
    // inline function); called only inside one `pg_guard_ffi_boundary` (the module's header).
    unsafe extern "C-unwind" {
        pub(super) fn table_open(relid: Oid, lockmode: pg_sys::LOCKMODE) -> pg_sys::Relation;
        pub(super) fn table_close(rel: pg_sys::Relation, lockmode: pg_sys::LOCKMODE);
        pub(super) fn index_open(relid: Oid, lockmode: pg_sys::LOCKMODE) -> pg_sys::Relation;
        pub(super) fn index_close(rel: pg_sys::Relation, lockmode: pg_sys::LOCKMODE);
        pub(super) fn RelationGetIndexList(rel: pg_sys::Relation) -> *mut pg_sys::List;
        pub(super) fn BuildIndexInfo(index: pg_sys::Relation) -> *mut pg_sys::IndexInfo;
        pub(super) fn list_free(list: *mut pg_sys::List);
        pub(super) fn palloc(size: pg_sys::Size) -> *mut c_void;
        pub(super) fn pfree(pointer: *mut c_void);
        pub(super) fn FormIndexDatum(
            info: *mut pg_sys::IndexInfo,
            slot: *mut pg_sys::TupleTableSlot,
            estate: *mut pg_sys::EState,
            values: *mut Datum,
            isnull: *mut bool,
        );
        #[allow(clippy::too_many_arguments)]
        pub(super) fn index_insert(
            index: pg_sys::Relation,
            values: *mut Datum,
            isnull: *mut bool,
            heap_tid: pg_sys::ItemPointer,
            heap: pg_sys::Relation,
            check: pg_sys::IndexUniqueCheck::Type,
            unchanged: bool,
            info: *mut pg_sys::IndexInfo,
        ) -> bool;
        pub(super) fn CommandCounterIncrement();
        pub(super) fn GetCurrentCommandId(used: bool) -> pg_sys::CommandId;
        pub(super) fn GetTransactionSnapshot() -> pg_sys::Snapshot;
        pub(super) fn RegisterSnapshot(snapshot: pg_sys::Snapshot) -> pg_sys::Snapshot;
        pub(super) fn UnregisterSnapshot(snapshot: pg_sys::Snapshot);
        pub(super) fn GetCurrentTransactionStartTimestamp() -> pg_sys::TimestampTz;
        pub(super) fn ScanKeyInit(
            entry: pg_sys::ScanKey,
            attno: pg_sys::AttrNumber,
            strategy: pg_sys::StrategyNumber,
            procedure: pg_sys::RegProcedure,
            argument: Datum,
        );
        pub(super) fn index_rescan(
            scan: pg_sys::IndexScanDesc,
            keys: pg_sys::ScanKey,
            nkeys: c_int,
            orderbys: pg_sys::ScanKey,
            norderbys: c_int,
        );
        pub(super) fn index_getnext_tid(
            scan: pg_sys::IndexScanDesc,
            direction: pg_sys::ScanDirection::Type,
        ) -> pg_sys::ItemPointer;
        pub(super) fn index_endscan(scan: pg_sys::IndexScanDesc);
        pub(super) fn BufferGetBlockNumber(buffer: pg_sys::Buffer) -> pg_sys::BlockNumber;
        pub(super) fn ReleaseAndReadBuffer(
            buffer: pg_sys::Buffer,
            rel: pg_sys::Relation,
            block: pg_sys::BlockNumber,
        ) -> pg_sys::Buffer;
        pub(super) fn LockBuffer(buffer: pg_sys::Buffer, mode: c_int);
        pub(super) fn ReleaseBuffer(buffer: pg_sys::Buffer);
        pub(super) fn heap_hot_search_buffer(
            tid: pg_sys::ItemPointer,
            rel: pg_sys::Relation,
            buffer: pg_sys::Buffer,
            snapshot: pg_sys::Snapshot,
            tuple: pg_sys::HeapTuple,
            all_dead: *mut bool,
            first_call: bool,
        ) -> bool;
        pub(super) fn PageGetHeapFreeSpace(page: pg_sys::Page) -> pg_sys::Size;
        pub(super) fn heap_page_prune_opt(rel: pg_sys::Relation, buffer: pg_sys::Buffer);
        pub(super) fn heap_copytuple(tuple: pg_sys::HeapTuple) -> pg_sys::HeapTuple;
        pub(super) fn heap_deform_tuple(
            tuple: pg_sys::HeapTuple,
            desc: pg_sys::TupleDesc,
            values: *mut Datum,
            isnull: *mut bool,
        );
        pub(super) fn heap_form_tuple(
            desc: pg_sys::TupleDesc,
            values: *mut Datum,
            isnull: *mut bool,
        ) -> pg_sys::HeapTuple;
        pub(super) fn heap_insert(
            rel: pg_sys::Relation,
            tuple: pg_sys::HeapTuple,
            cid: pg_sys::CommandId,
            options: c_int,
            bistate: pg_sys::BulkInsertState,
        );
        pub(super) fn MakeSingleTupleTableSlot(
            desc: pg_sys::TupleDesc,
            ops: *const pg_sys::TupleTableSlotOps,
        ) -> *mut pg_sys::TupleTableSlot;
        pub(super) fn ExecStoreHeapTuple(
            tuple: pg_sys::HeapTuple,
            slot: *mut pg_sys::TupleTableSlot,
            should_free: bool,
        ) -> *mut pg_sys::TupleTableSlot;
        /// `ExecClearTuple` is a static inline function in PostgreSQL: pgrx's C shim (linked
        /// into this library) is its callable copy.
        #[link_name = "ExecClearTuple__pgrx_cshim"]
        pub(super) fn ExecClearTuple(
            slot: *mut pg_sys::TupleTableSlot,
        ) -> *mut pg_sys::TupleTableSlot;
        pub(super) fn ExecDropSingleTupleTableSlot(slot: *mut pg_sys::TupleTableSlot);
    }

    // The reads' functions (`es.load_events`, `es.read_all`, a stream's life): opening by OID
    // with the privilege check, the scan's start and end, closing. Same rule as above: called
    // only inside one `pg_guard_ffi_boundary`.
    // SAFETY: PostgreSQL's own prototypes (the same on 15 and 18), linked by their C names.
    unsafe extern "C-unwind" {
        pub(super) fn try_relation_open(relid: Oid, lockmode: pg_sys::LOCKMODE)
        -> pg_sys::Relation;
        pub(super) fn relation_open(relid: Oid, lockmode: pg_sys::LOCKMODE) -> pg_sys::Relation;
        pub(super) fn relation_close(rel: pg_sys::Relation, lockmode: pg_sys::LOCKMODE);
        pub(super) fn LockRelationOid(relid: Oid, lockmode: pg_sys::LOCKMODE);
        pub(super) fn GetUserId() -> Oid;
        pub(super) fn RelationGetNumberOfBlocksInFork(
            rel: pg_sys::Relation,
            fork: pg_sys::ForkNumber::Type,
        ) -> pg_sys::BlockNumber;
        pub(super) fn ActiveSnapshotSet() -> bool;
        pub(super) fn GetActiveSnapshot() -> pg_sys::Snapshot;
        pub(super) fn GetLatestSnapshot() -> pg_sys::Snapshot;
        pub(super) fn AllocSetContextCreateInternal(
            parent: pg_sys::MemoryContext,
            name: *const std::ffi::c_char,
            min_context_size: pg_sys::Size,
            init_block_size: pg_sys::Size,
            max_block_size: pg_sys::Size,
        ) -> pg_sys::MemoryContext;
        pub(super) fn MemoryContextDelete(context: pg_sys::MemoryContext);
        pub(super) fn table_slot_create(
            rel: pg_sys::Relation,
            reglist: *mut *mut pg_sys::List,
        ) -> *mut pg_sys::TupleTableSlot;
        pub(super) fn pg_detoast_datum_packed(datum: *mut pg_sys::varlena) -> *mut pg_sys::varlena;
        pub(super) fn nocachegetattr(
            tuple: pg_sys::HeapTuple,
            attnum: c_int,
            desc: pg_sys::TupleDesc,
        ) -> Datum;
        pub(super) fn getmissingattr(
            desc: pg_sys::TupleDesc,
            attnum: c_int,
            isnull: *mut bool,
        ) -> Datum;
    }
}
