//! The thin SPI layer the extension's statements run through ([`Connection`], [`Rows`]) and
//! what a statement is ([`Stmt`]). The statements themselves are declared where their meaning
//! is known: the store's next to its use cases (`crate::store`), the glue's own (the inserts of
//! an append, the registry's loads, the position checks) in their `pg` modules; this file knows
//! no table of the store.
//!
//! Each statement is prepared once per backend and kept (`SPI_keepplan`), so a call pays for
//! neither parsing nor planning; PostgreSQL's plan cache replans them by itself when the schema
//! changes. The layer is deliberately small and raw (no per-call argument vectors beyond the
//! ones PostgreSQL needs) because it sits on the append hot path.

use super::call::Composite;
use super::jsonb::Jsonb;
use pgrx::pg_sys::{self, BuiltinOid, Datum, Oid};
use std::ffi::CStr;
use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// A `&'static CStr` from a string literal built with `concat!`.
macro_rules! cstr {
    ($s:expr) => {
        match ::std::ffi::CStr::from_bytes_with_nul(concat!($s, "\0").as_bytes()) {
            Ok(c) => c,
            Err(_) => panic!("a statement contains a NUL"),
        }
    };
}
pub(crate) use cstr;

/// One statement the extension runs: its SQL text, its argument types and its plan, prepared
/// on first use and kept for the life of the backend. The statements themselves are declared
/// by the layers that know what they mean (the store's next to its use cases), as `static`s,
/// so a call finds its plan with one load and no lookup.
pub struct Stmt {
    /// The name errors show.
    name: &'static str,
    sql: &'static CStr,
    args: &'static [BuiltinOid],
    /// Planned once for every argument (`CURSOR_OPT_GENERIC_PLAN`).
    generic: bool,
    /// The kept plan; null until the first use in this backend. (Backends are single-threaded;
    /// an atomic is only the safe way to keep a mutable static.)
    plan: AtomicPtr<pg_sys::_SPI_plan>,
}

impl Stmt {
    /// A statement: `sql` with one parameter per entry of `args`, in order.
    pub const fn new(name: &'static str, sql: &'static CStr, args: &'static [BuiltinOid]) -> Stmt {
        Stmt {
            name,
            sql,
            args,
            generic: false,
            plan: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The same statement, planned once for every argument instead of per call.
    /// `event_id = ANY ($1)`: planned for an array of unknown length, the generic plan looks
    /// dearer than a custom one for the one-id array an append sends, so the plan cache would
    /// plan every call again (measured: ~90k instructions per append with an id). The index
    /// probe is the right plan for every length an append can send.
    pub const fn generic_plan(self) -> Stmt {
        Stmt {
            generic: true,
            ..self
        }
    }

    fn plan(&self) -> pg_sys::SPIPlanPtr {
        let kept = self.plan.load(Ordering::Relaxed);
        if !kept.is_null() {
            return kept;
        }
        // SAFETY: SPI is connected (plans are made inside a connection); the statement text and
        // its argument types are static and agree (declared together in `Stmt::new`);
        // SPI_keepplan moves the plan to a context that lives as long as the backend, so the
        // pointer kept here stays valid.
        unsafe {
            let mut types: Vec<Oid> = self.args.iter().map(|t| t.value()).collect();
            let options = if self.generic {
                pg_sys::CURSOR_OPT_GENERIC_PLAN as i32
            } else {
                0
            };
            let p = pg_sys::SPI_prepare_cursor(
                self.sql.as_ptr(),
                types.len() as i32,
                types.as_mut_ptr(),
                options,
            );
            if p.is_null() {
                let code = pg_sys::SPI_result;
                pgrx::error!("event_store: could not prepare {self:?}: SPI error {code}");
            }
            pg_sys::SPI_keepplan(p);
            self.plan.store(p, Ordering::Relaxed);
            p
        }
    }
}

impl std::fmt::Debug for Stmt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// An SPI connection; statements run through it. While it is open the search path is pinned
/// to `pg_catalog` alone (an override search path), so no statement of the extension can be
/// redirected by the caller's `search_path`: this is what pins the writing functions, at a
/// fraction of the cost of a `SET search_path` clause on the function. Dropping it pops the
/// path and finishes SPI. When it is dropped because an ERROR unwinds through it, or after an
/// ERROR was caught to be reported as the store's own ([`leave_to_abort`]), it does neither:
/// the (sub)transaction's abort that follows every ERROR cleans up both (`AtEOSubXact_SPI`,
/// `AtEOSubXact_Namespace`), and calling into PostgreSQL in the middle of an error could raise
/// a second one while the first unwinds.
///
/// A connection made with [`Connection::lazy`] connects (and pins) only when its first
/// statement runs, or when [`Connection::pin`] asks for it: the native append runs no
/// statement, so it pays for neither (an SPI level is two memory contexts, the pin an override
/// path). The pin is in place for every statement that runs, as for an eager connection.
pub struct Connection {
    /// What [`super::compat::pin_search_path`] returned; [`NOT_CONNECTED`] until connected.
    pin: std::sync::atomic::AtomicI32,
    /// The memory context current when the connection was made: SPI is connected from it
    /// (so `SPI_finish` returns to it), wherever the first statement runs.
    home: AtomicPtr<pg_sys::MemoryContextData>,
}

/// [`Connection::pin`]'s value before SPI is connected (a pin is 0 on PostgreSQL 15, a GUC
/// nest level, at least 1, on 18).
const NOT_CONNECTED: i32 = -1;

thread_local! {
    /// An ERROR was caught (without a subtransaction) and the call is on its way out with the
    /// store's own error: the abort, not Drop, cleans SPI up.
    static LEFT_TO_ABORT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    /// How many connections are open (nested: a user's function called by the store may call
    /// the store again). The mark above names the depth of the one left to the abort, so a
    /// caught error below it never stops an outer connection from finishing normally.
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the open SPI connection as left to the abort: call when an ERROR has been caught
/// without a subtransaction and the call will end with an error of its own.
pub fn leave_to_abort() {
    LEFT_TO_ABORT.with(|f| f.set(Some(DEPTH.with(std::cell::Cell::get))));
}

/// A snapshot registered with the current resource owner, unregistered when dropped.
pub struct RegisteredSnapshot(pg_sys::Snapshot);

impl RegisteredSnapshot {
    /// A snapshot of the latest commits.
    pub fn latest() -> RegisteredSnapshot {
        // SAFETY: GetLatestSnapshot returns a static snapshot; RegisterSnapshot copies it into
        // the transaction's memory and tracks it with the resource owner.
        RegisteredSnapshot(unsafe { pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot()) })
    }

    /// The snapshot, for a native read in it (registered while `self` lives).
    pub(in crate::pg) fn raw(&self) -> pg_sys::Snapshot {
        self.0
    }
}

impl Drop for RegisteredSnapshot {
    fn drop(&mut self) {
        // An ERROR unwinding through here is followed by the abort, which releases the
        // snapshot with its resource owner.
        if !std::thread::panicking() {
            // SAFETY: registered once in `latest`, unregistered once here.
            unsafe { pg_sys::UnregisterSnapshot(self.0) };
        }
    }
}

/// Which committed state a read sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// The statement's snapshot, like any query (STABLE functions: time travel, audit).
    Statement,
    /// The latest commits (a command that holds the stream row reads what it follows).
    Latest,
}

/// One argument of a statement: `None` is SQL NULL.
pub type Arg = Option<Datum>;

impl Connection {
    /// `SPI_connect`, and the pinned search path.
    pub fn connect() -> Connection {
        let conn = Connection::lazy();
        conn.pin();
        conn
    }

    /// A connection that connects SPI and pins the search path when its first statement runs
    /// (or at [`Connection::pin`]). For a use case whose common path runs no statement (the
    /// native append). Its user must call [`Connection::pin`] before running code that
    /// resolves names without a statement of the connection (a user's function called
    /// through fmgr), and before entering a subtransaction or a GUC nest level inside which a
    /// statement may run: SPI's level and the pin belong to the (sub)transaction and nest
    /// level they are made in, and must be made in the connection's own.
    pub fn lazy() -> Connection {
        DEPTH.with(|d| d.set(d.get() + 1));
        Connection {
            pin: std::sync::atomic::AtomicI32::new(NOT_CONNECTED),
            // SAFETY: a read of the backend's current memory context, always set; the context
            // outlives this connection (it is the caller's, and the connection is dropped
            // before the caller returns).
            home: AtomicPtr::new(unsafe { pg_sys::CurrentMemoryContext }),
        }
    }

    /// Connects SPI and pins the search path now, if not done yet.
    #[inline]
    pub fn pin(&self) {
        if self.pin.load(Ordering::Relaxed) == NOT_CONNECTED {
            self.connect_now();
        }
    }

    #[cold]
    #[inline(never)]
    fn connect_now(&self) {
        // Pushed from the connection's home context, so SPI_finish returns to that one (a
        // context current now may be gone by then). SPI_connect leaves the level's own context
        // current, as every statement run through SPI does when it ends.
        // SAFETY: SPI_connect pushes a new SPI level, popped by Drop or by the abort; the home
        // context outlives the connection and the SPI level, so nothing is freed early.
        unsafe {
            pg_sys::CurrentMemoryContext = self.home.load(Ordering::Relaxed);
            pg_sys::SPI_connect();
        }
        self.pin
            .store(super::compat::pin_search_path(), Ordering::Relaxed);
    }

    /// Runs `f` with the caller's own search path instead of the pinned one: a projection's
    /// handler is the user's code and resolves its names as its author wrote them.
    pub fn unpinned<R>(&self, f: impl FnOnce() -> R) -> R {
        self.pin();
        // Undoes the pin `connect` made (nothing pinned above it within this connection's use)
        // and pins again after `f`. An ERROR inside `f` unwinds to the abort, which resets the
        // whole override stack (or the GUC nest levels, on PostgreSQL 18).
        super::compat::unpin_search_path(self.pin.load(Ordering::Relaxed));
        let r = f();
        self.pin
            .store(super::compat::pin_search_path(), Ordering::Relaxed);
        r
    }

    fn run(&self, stmt: &Stmt, args: &[Arg], read_only: bool, limit: i64) -> Rows<'_> {
        self.pin();
        let (mut values, nulls) = split(args);
        let p = stmt.plan();
        // SAFETY: `p` is a kept plan of `stmt` whose argument count and types are those of
        // `args` (declared with the statement); the arrays have one entry per argument.
        let rc = unsafe {
            pg_sys::SPI_execute_plan(p, values.as_mut_ptr(), nulls.as_ptr(), read_only, limit)
        };
        Rows::from_spi(stmt, rc)
    }

    /// Runs a statement that may write, in a fresh snapshot (SPI takes one for a statement
    /// that is not read-only): every write, and every read that must see the latest commits
    /// (a VOLATILE function holding the stream row).
    pub fn execute(&self, stmt: &Stmt, args: &[Arg]) -> Rows<'_> {
        self.run(stmt, args, false, 0)
    }

    /// Runs a query in the caller's snapshot (for STABLE functions).
    pub fn query(&self, stmt: &Stmt, args: &[Arg]) -> Rows<'_> {
        self.run(stmt, args, true, 0)
    }

    /// Runs a query in the snapshot `reading` asks for.
    pub fn query_as(&self, reading: Reading, stmt: &Stmt, args: &[Arg]) -> Rows<'_> {
        match reading {
            Reading::Statement => self.query(stmt, args),
            Reading::Latest => self.execute(stmt, args),
        }
    }

    /// Runs a query in `snapshot` (the gap-safe read of `es.read_all` takes its own).
    pub fn query_in(&self, stmt: &Stmt, args: &[Arg], snapshot: &RegisteredSnapshot) -> Rows<'_> {
        self.pin();
        let (mut values, nulls) = split(args);
        let p = stmt.plan();
        // SAFETY: as in `run`; the snapshot is registered until it drops, which is after this
        // statement.
        let rc = unsafe {
            pg_sys::SPI_execute_snapshot(
                p,
                values.as_mut_ptr(),
                nulls.as_ptr(),
                snapshot.0,
                ptr::null_mut(),
                true,
                false,
                0,
            )
        };
        Rows::from_spi(stmt, rc)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let depth = DEPTH.with(|d| {
            let mine = d.get();
            d.set(mine.saturating_sub(1));
            mine
        });
        let left = LEFT_TO_ABORT.with(|f| {
            let left = f.get().is_some_and(|d| d >= depth);
            if left {
                f.set(None);
            }
            left
        });
        let pin = self.pin.load(Ordering::Relaxed);
        if std::thread::panicking() || left || pin == NOT_CONNECTED {
            return;
        }
        // Undoes what `connect` did, in reverse order; nothing pinned a path or pushed an SPI
        // level above them that is still there (both are balanced within one call of the
        // extension).
        super::compat::unpin_search_path(pin);
        // SAFETY: pops the SPI level `connect` pushed (see above).
        unsafe { pg_sys::SPI_finish() };
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

/// The result of a statement: the rows of its `SPI_tuptable`, which SPI keeps until the
/// connection is finished (or the rows are freed), so they borrow the connection.
pub struct Rows<'s> {
    table: *mut pg_sys::SPITupleTable,
    count: usize,
    _spi: PhantomData<&'s Connection>,
}

impl<'s> Rows<'s> {
    fn from_spi(stmt: &Stmt, rc: i32) -> Rows<'s> {
        if rc < 0 {
            pgrx::error!("event_store: {stmt:?} failed: SPI error {rc}");
        }
        // SAFETY: after a successful execution SPI_processed and SPI_tuptable describe its
        // result (a NULL table for a statement without RETURNING).
        unsafe {
            Rows {
                table: pg_sys::SPI_tuptable,
                count: pg_sys::SPI_processed as usize,
                _spi: PhantomData,
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

    /// Column `col` (1-based) of row `row` (0-based), `None` when NULL. A by-reference datum
    /// points into the rows and is valid while they are.
    pub fn datum(&self, row: usize, col: i32) -> Option<Datum> {
        assert!(row < self.count && !self.table.is_null());
        // SAFETY: `row` is within the table (checked); SPI_getbinval checks `col` against the
        // descriptor (SPI_ERROR_NOATTRIBUTE gives NULL).
        unsafe {
            let t = &*self.table;
            let tuple = *t.vals.add(row);
            let mut isnull = false;
            let d = pg_sys::SPI_getbinval(tuple, t.tupdesc, col, &mut isnull);
            (!isnull).then_some(d)
        }
    }

    /// Column `col` of row `row` as jsonb, valid while the rows are. A column of another type
    /// is an internal error (the statement and its reader disagree), never a misread datum.
    pub fn jsonb(&self, row: usize, col: i32) -> Option<Jsonb<'_>> {
        let d = self.datum(row, col)?;
        // SAFETY: `datum` returned a value, so the table is not NULL and `col` is one of its
        // descriptor's columns; SPI_gettypeid only reads the descriptor.
        let ty = unsafe { pg_sys::SPI_gettypeid((*self.table).tupdesc, col) };
        if ty != pg_sys::JSONBOID {
            pgrx::error!("event_store: column {col} of a statement is not jsonb");
        }
        // SAFETY: the column is jsonb (checked above); the datum lives in the tuple table,
        // which the borrow of `self` keeps.
        Some(unsafe { Jsonb::from_datum(d) })
    }

    /// Column `col` of row `row` as a composite value (a row), valid while the rows are. A
    /// column of another type is an internal error, never a misread datum.
    pub fn composite(&self, row: usize, col: i32) -> Option<Composite<'_>> {
        let d = self.datum(row, col)?;
        // SAFETY: `datum` returned a value, so the table is not NULL and `col` is one of its
        // descriptor's columns; SPI_gettypeid only reads the descriptor.
        let ty = unsafe { pg_sys::SPI_gettypeid((*self.table).tupdesc, col) };
        // SAFETY: type_is_rowtype only reads the type cache, for any type oid.
        let rowtype = unsafe { pg_sys::type_is_rowtype(ty) };
        if !rowtype {
            pgrx::error!("event_store: column {col} of a statement is not a row");
        }
        // SAFETY: a non-NULL value of a row type (checked above), in the tuple table the
        // borrow of `self` keeps.
        Some(unsafe { Composite::new(d) })
    }

    /// Column `col` of row `row` as bytea, copied into Rust memory. A column of another type is
    /// an internal error (the statement and its reader disagree), never a misread datum.
    pub fn bytea(&self, row: usize, col: i32) -> Option<Vec<u8>> {
        let d = self.datum(row, col)?;
        // SAFETY: `datum` returned a value, so the table is not NULL and `col` is one of its
        // descriptor's columns; SPI_gettypeid only reads the descriptor.
        let ty = unsafe { pg_sys::SPI_gettypeid((*self.table).tupdesc, col) };
        if ty != pg_sys::BYTEAOID {
            pgrx::error!("event_store: column {col} of a statement is not bytea");
        }
        // SAFETY: a bytea datum (checked above), in the tuple table the borrow of `self` keeps.
        Some(unsafe { super::call::bytea_bytes(d) })
    }

    /// The type of column `col` (1-based) of the rows; `None` without rows.
    pub fn column_type(&self, col: i32) -> Option<Oid> {
        if self.table.is_null() {
            return None;
        }
        // SAFETY: the table is not NULL (checked), so its descriptor is valid while the rows
        // are; SPI_gettypeid checks `col` against it (InvalidOid for a column it lacks).
        Some(unsafe { pg_sys::SPI_gettypeid((*self.table).tupdesc, col) })
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
        // SAFETY: callers read text columns only (declared with the statement); text_to_cstring makes a copy,
        // copied again into Rust memory and freed.
        self.datum(row, col).map(|d| unsafe {
            let c = pg_sys::text_to_cstring(d.cast_mut_ptr());
            let s = std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned();
            pg_sys::pfree(c.cast());
            s
        })
    }

    /// Frees the rows now (a paged read keeps one page in memory, not all of them).
    pub fn free(self) {
        if !self.table.is_null() {
            // SAFETY: the table of this statement, freed once (`self` is consumed).
            unsafe { pg_sys::SPI_freetuptable(self.table) };
        }
    }

    /// Column `col` of row `row` as a bigint.
    pub fn i64(&self, row: usize, col: i32) -> Option<i64> {
        self.datum(row, col).map(|d| d.value() as i64)
    }

    /// Column `col` of row `row` as an integer.
    pub fn i32(&self, row: usize, col: i32) -> Option<i32> {
        self.datum(row, col).map(|d| d.value() as i32)
    }

    /// Column `col` of row `row` as a boolean.
    pub fn bool(&self, row: usize, col: i32) -> Option<bool> {
        self.datum(row, col).map(|d| d.value() & 0xff != 0)
    }

    /// Column `col` of row `row` as a uuid.
    pub fn uuid(&self, row: usize, col: i32) -> Option<uuid::Uuid> {
        // SAFETY: callers read uuid columns only (declared with the statement); a uuid datum points to its 16
        // bytes, inside the tuple table the borrow of `self` keeps.
        self.datum(row, col).map(|d| unsafe {
            let bytes = &*d.cast_mut_ptr::<[u8; 16]>();
            uuid::Uuid::from_bytes(*bytes)
        })
    }

    /// Copies every row into a materialized set-returning function's result. The statement's
    /// columns are the result's live attributes, in order: a result whose row type is a table
    /// (`SETOF es.events`) also has the attributes of columns dropped from it, which get NULL.
    pub fn copy_into(&self, out: &mut super::call::ResultSet) {
        if self.count == 0 {
            return;
        }
        // SAFETY: the tuple table holds `count` tuples of its descriptor; each is deformed into
        // arrays of the statement's width, then spread over the result's live attributes.
        unsafe {
            let t = &*self.table;
            let width = (*t.tupdesc).natts as usize;
            let desc = out.desc();
            let attrs = super::compat::tuple_attrs(desc);
            let live: Vec<usize> = attrs
                .iter()
                .enumerate()
                .filter(|(_, a)| !a.attisdropped)
                .map(|(i, _)| i)
                .collect();
            let columns = super::compat::tuple_attrs(t.tupdesc);
            if live.len() != width
                || live
                    .iter()
                    .zip(columns)
                    .any(|(&at, c)| attrs[at].atttypid != c.atttypid)
            {
                pgrx::error!(
                    "event_store: a query of {width} columns does not match the function's result type ({} columns); was es.events altered during the statement?",
                    live.len()
                );
            }
            let mut values = vec![Datum::from(0usize); width];
            let mut nulls = vec![false; width];
            let mut row_values = vec![Datum::from(0usize); out.natts()];
            let mut row_nulls = vec![true; out.natts()];
            for row in 0..self.count {
                let tuple = *t.vals.add(row);
                pg_sys::heap_deform_tuple(
                    tuple,
                    t.tupdesc,
                    values.as_mut_ptr(),
                    nulls.as_mut_ptr(),
                );
                for (k, &at) in live.iter().enumerate() {
                    row_values[at] = values[k];
                    row_nulls[at] = nulls[k];
                }
                out.put(&row_values, &row_nulls);
            }
        }
    }
}
