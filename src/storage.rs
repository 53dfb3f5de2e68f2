//! Every SQL statement the extension runs, in one place, and the thin SPI layer that runs them.
//!
//! Each statement is prepared once per backend and kept (`SPI_keepplan`), so a call pays for
//! neither parsing nor planning; PostgreSQL's plan cache replans them by itself when the schema
//! changes. The layer is deliberately small and raw (no per-call argument vectors beyond the
//! ones PostgreSQL needs) because it sits on the append hot path.

use pgrx::pg_sys::{self, BuiltinOid, Datum, Oid};
use std::ffi::CStr;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The statements. The SQL text and argument types are in [`Stmt::def`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stmt {
    /// NULL expected version: create the stream or add `n` to its version; returns (version,
    /// stream_type, state).
    UpsertAny,
    /// -1: add `n` to an existing stream's version.
    BumpExisting,
    /// N > 0: add `n` only if the stream is at exactly N.
    BumpExact,
    /// 0: create the stream only if it does not exist.
    CreateNew,
    /// Lock the stream row (idempotency checks need the stream still while they look).
    LockStream,
    /// Current version of a stream.
    StreamVersion,
    /// Insert one event.
    InsertOne,
    /// Insert a batch of events from parallel arrays.
    InsertBatch,
    /// Where the given event ids are stored.
    FindEventIds,
    /// A stream's events after a version.
    LoadEvents,
    /// The global log between two positions.
    ReadAll,
    /// Save (or replace) a snapshot.
    SaveSnapshot,
    /// The newest snapshot at or below a version.
    LoadSnapshot,
    /// A stream's version, type and state, without locking it.
    StreamInfo,
    /// Store an account stream's state (when the version bump went through SPI).
    SetState,
    /// The newest version of a stream at or below a version, recorded at or before a time.
    VersionAsOf,
}

const STMT_COUNT: usize = 16;

struct Def {
    sql: &'static CStr,
    args: &'static [BuiltinOid],
}

use BuiltinOid::{
    INT4OID, INT8OID, JSONBARRAYOID, JSONBOID, TEXTARRAYOID, TEXTOID, TIMESTAMPTZARRAYOID,
    TIMESTAMPTZOID, UUIDARRAYOID, UUIDOID,
};

impl Stmt {
    fn index(self) -> usize {
        self as usize
    }

    fn def(self) -> Def {
        let (sql, args): (&'static CStr, &'static [BuiltinOid]) = match self {
            Stmt::UpsertAny => (
                c"INSERT INTO es.streams AS s (stream_id, stream_type, version) VALUES ($1, $2, $3)
                  ON CONFLICT (stream_id) DO UPDATE
                  SET version = s.version + excluded.version, updated_at = transaction_timestamp()
                  RETURNING s.version, s.stream_type, s.state",
                &[UUIDOID, TEXTOID, INT8OID],
            ),
            Stmt::BumpExisting => (
                c"UPDATE es.streams SET version = version + $2, updated_at = transaction_timestamp()
                  WHERE stream_id = $1 RETURNING version, stream_type, state",
                &[UUIDOID, INT8OID],
            ),
            Stmt::BumpExact => (
                c"UPDATE es.streams SET version = version + $3, updated_at = transaction_timestamp()
                  WHERE stream_id = $1 AND version = $2 RETURNING version, stream_type, state",
                &[UUIDOID, INT8OID, INT8OID],
            ),
            Stmt::CreateNew => (
                c"INSERT INTO es.streams (stream_id, stream_type, version) VALUES ($1, $2, $3)
                  ON CONFLICT (stream_id) DO NOTHING RETURNING version, stream_type, state",
                &[UUIDOID, TEXTOID, INT8OID],
            ),
            Stmt::LockStream => (
                c"SELECT version, stream_type FROM es.streams WHERE stream_id = $1 FOR UPDATE",
                &[UUIDOID],
            ),
            Stmt::StreamVersion => {
                (c"SELECT version FROM es.streams WHERE stream_id = $1", &[UUIDOID])
            }
            Stmt::InsertOne => (
                c"INSERT INTO es.events (global_position, stream_id, version, event_id, event_type,
                                         event_version, data, metadata, occurred_at)
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, transaction_timestamp()))",
                &[INT8OID, UUIDOID, INT8OID, UUIDOID, TEXTOID, INT4OID, JSONBOID, JSONBOID, TIMESTAMPTZOID],
            ),
            Stmt::InsertBatch => (
                c"INSERT INTO es.events (global_position, stream_id, version, event_id, event_type,
                                         event_version, data, metadata, occurred_at)
                  SELECT $1 + e.i - 1, $2, $3 + e.i - 1, e.id, e.t, e.ev, e.d, e.m,
                         coalesce(e.o, transaction_timestamp())
                  FROM unnest($4, $5, $6::int4[], $7, $8, $9) WITH ORDINALITY AS e(id, t, ev, d, m, o, i)",
                &[
                    INT8OID, UUIDOID, INT8OID, UUIDARRAYOID, TEXTARRAYOID, BuiltinOid::INT4ARRAYOID,
                    JSONBARRAYOID, JSONBARRAYOID, TIMESTAMPTZARRAYOID,
                ],
            ),
            Stmt::FindEventIds => (
                c"SELECT event_id, stream_id, version FROM es.events WHERE event_id = ANY ($1)",
                &[UUIDARRAYOID],
            ),
            Stmt::LoadEvents => (
                c"SELECT * FROM es.events WHERE stream_id = $1 AND version > $2
                  ORDER BY version LIMIT $3",
                &[UUIDOID, INT8OID, INT8OID],
            ),
            Stmt::ReadAll => (
                c"SELECT * FROM es.events WHERE global_position > $1 AND global_position < $2
                  ORDER BY global_position LIMIT $3",
                &[INT8OID, INT8OID, INT4OID],
            ),
            Stmt::SaveSnapshot => (
                c"INSERT INTO es.snapshots (stream_id, version, state) VALUES ($1, $2, $3)
                  ON CONFLICT (stream_id, version) DO UPDATE
                  SET state = excluded.state, taken_at = transaction_timestamp()",
                &[UUIDOID, INT8OID, JSONBOID],
            ),
            Stmt::LoadSnapshot => (
                c"SELECT version, state, taken_at FROM es.snapshots
                  WHERE stream_id = $1 AND version <= coalesce($2, 9223372036854775807)
                  ORDER BY version DESC LIMIT 1",
                &[UUIDOID, INT8OID],
            ),
            Stmt::StreamInfo => (
                c"SELECT version, stream_type, state FROM es.streams WHERE stream_id = $1",
                &[UUIDOID],
            ),
            Stmt::SetState => (
                c"UPDATE es.streams SET state = $2 WHERE stream_id = $1",
                &[UUIDOID, JSONBOID],
            ),
            Stmt::VersionAsOf => (
                c"SELECT version FROM es.events
                  WHERE stream_id = $1 AND version <= $2 AND recorded_at <= $3
                  ORDER BY version DESC LIMIT 1",
                &[UUIDOID, INT8OID, TIMESTAMPTZOID],
            ),
        };
        Def { sql, args }
    }
}

/// Prepared plans, kept for the life of the backend. (Backends are single-threaded; atomics
/// are only the safe way to keep mutable statics.)
static PLANS: [AtomicPtr<pg_sys::_SPI_plan>; STMT_COUNT] =
    [const { AtomicPtr::new(ptr::null_mut()) }; STMT_COUNT];

fn plan(stmt: Stmt) -> pg_sys::SPIPlanPtr {
    let slot = &PLANS[stmt.index()];
    let kept = slot.load(Ordering::Relaxed);
    if !kept.is_null() {
        return kept;
    }
    unsafe {
        let def = stmt.def();
        let mut types: Vec<Oid> = def.args.iter().map(|t| t.value()).collect();
        let p = pg_sys::SPI_prepare(def.sql.as_ptr(), types.len() as i32, types.as_mut_ptr());
        if p.is_null() {
            let code = pg_sys::SPI_result;
            pgrx::error!("event_store: could not prepare {stmt:?}: SPI error {code}");
        }
        pg_sys::SPI_keepplan(p);
        slot.store(p, Ordering::Relaxed);
        p
    }
}

/// An open SPI connection; statements run through it. While it is open the search path is
/// pinned to `pg_catalog` alone (an override search path), so no statement of the extension can
/// be redirected by the caller's `search_path`: this is what pins the writing functions, at a
/// fraction of the cost of a `SET search_path` clause on the function. Dropping it pops the
/// path and finishes SPI; on an error, the transaction's abort cleans both up.
pub struct Spi(());

/// One argument of a statement: `None` is SQL NULL.
pub type Arg = Option<Datum>;

impl Spi {
    /// `SPI_connect`, and the pinned search path.
    pub fn connect() -> Spi {
        unsafe {
            pg_sys::SPI_connect();
            let mut pinned = pg_sys::OverrideSearchPath {
                schemas: ptr::null_mut(),
                addCatalog: true,
                addTemp: false,
                generation: 0,
            };
            pg_sys::PushOverrideSearchPath(&mut pinned);
        }
        Spi(())
    }

    /// Ends the connection (the same as dropping it).
    pub fn finish(self) {}

    fn run(&self, stmt: Stmt, args: &[Arg], read_only: bool, limit: i64) -> Rows {
        let _span = crate::trace::statement(stmt, args);
        let (mut values, nulls) = split(args);
        let p = plan(stmt);
        let rc = unsafe {
            pg_sys::SPI_execute_plan(p, values.as_mut_ptr(), nulls.as_ptr(), read_only, limit)
        };
        Rows::from_spi(stmt, rc)
    }

    /// Runs a statement that writes.
    pub fn write(&self, stmt: Stmt, args: &[Arg]) -> Rows {
        self.run(stmt, args, false, 0)
    }

    /// Runs a query in the caller's snapshot (for STABLE functions).
    pub fn read(&self, stmt: Stmt, args: &[Arg]) -> Rows {
        self.run(stmt, args, true, 0)
    }

    /// Runs a query in a fresh snapshot (for VOLATILE functions that must see the latest commits).
    pub fn read_latest(&self, stmt: Stmt, args: &[Arg]) -> Rows {
        self.run(stmt, args, false, 0)
    }

    /// Runs a query in the given snapshot.
    pub(crate) fn read_in(&self, stmt: Stmt, args: &[Arg], snapshot: pg_sys::Snapshot) -> Rows {
        let (mut values, nulls) = split(args);
        let p = plan(stmt);
        let rc = unsafe {
            pg_sys::SPI_execute_snapshot(
                p,
                values.as_mut_ptr(),
                nulls.as_ptr(),
                snapshot,
                ptr::null_mut(),
                true,
                false,
                0,
            )
        };
        Rows::from_spi(stmt, rc)
    }
}

impl Drop for Spi {
    fn drop(&mut self) {
        unsafe {
            pg_sys::PopOverrideSearchPath();
            pg_sys::SPI_finish();
        }
    }
}

fn split(args: &[Arg]) -> (Vec<Datum>, Vec<std::ffi::c_char>) {
    args.iter()
        .map(|a| match a {
            Some(d) => (*d, b' ' as std::ffi::c_char),
            None => (Datum::from(0usize), b'n' as std::ffi::c_char),
        })
        .unzip()
}

/// The result of a statement: rows of `SPI_tuptable` (valid until the next statement).
pub struct Rows {
    table: *mut pg_sys::SPITupleTable,
    count: usize,
}

impl Rows {
    fn from_spi(stmt: Stmt, rc: i32) -> Rows {
        if rc < 0 {
            pgrx::error!("event_store: {stmt:?} failed: SPI error {rc}");
        }
        unsafe {
            let count = pg_sys::SPI_processed as usize;
            Rows {
                table: pg_sys::SPI_tuptable,
                count,
            }
        }
    }

    /// Rows affected or returned.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Column `col` (1-based) of row `row` (0-based), `None` when NULL.
    pub fn datum(&self, row: usize, col: i32) -> Option<Datum> {
        assert!(row < self.count && !self.table.is_null());
        unsafe {
            let t = &*self.table;
            let tuple = *t.vals.add(row);
            let mut isnull = false;
            let d = pg_sys::SPI_getbinval(tuple, t.tupdesc, col, &mut isnull);
            (!isnull).then_some(d)
        }
    }

    /// Column 1 of the first row as a bigint; `None` when there is no row or it is NULL.
    pub fn first_i64(&self) -> Option<i64> {
        if self.is_empty() {
            None
        } else {
            self.i64(0, 1)
        }
    }

    /// Column `col` of row `row` as text.
    pub fn text(&self, row: usize, col: i32) -> Option<String> {
        self.datum(row, col).map(|d| unsafe {
            let c = pg_sys::text_to_cstring(d.cast_mut_ptr());
            std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned()
        })
    }

    /// Frees the rows now (a paged read keeps one page in memory, not all of them).
    pub fn free(self) {
        if !self.table.is_null() {
            unsafe { pg_sys::SPI_freetuptable(self.table) };
        }
    }

    /// Column `col` of row `row` as a bigint.
    pub fn i64(&self, row: usize, col: i32) -> Option<i64> {
        self.datum(row, col).map(|d| d.value() as i64)
    }

    /// Copies every row into a materialized set-returning function's tuple store. The query's
    /// columns must be those of `desc`.
    pub(crate) fn copy_into(&self, store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) {
        if self.count == 0 {
            return;
        }
        unsafe {
            let t = &*self.table;
            let natts = (*desc).natts as usize;
            let mut values = vec![Datum::from(0usize); natts];
            let mut nulls = vec![false; natts];
            for row in 0..self.count {
                let tuple = *t.vals.add(row);
                pg_sys::heap_deform_tuple(
                    tuple,
                    t.tupdesc,
                    values.as_mut_ptr(),
                    nulls.as_mut_ptr(),
                );
                pg_sys::tuplestore_putvalues(store, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            }
        }
    }
}

/// OID of `es.global_position_seq`, looked up per call (two syscache probes) so a dropped and
/// recreated extension is never served a stale OID.
pub fn position_sequence() -> Oid {
    unsafe {
        let ns = pg_sys::get_namespace_oid(c"es".as_ptr(), false);
        let seq = pg_sys::get_relname_relid(c"global_position_seq".as_ptr(), ns);
        if seq == pg_sys::InvalidOid {
            pgrx::error!("event_store: es.global_position_seq is missing; reinstall the extension");
        }
        seq
    }
}
