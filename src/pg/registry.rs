//! The declared aggregate types (`es.aggregate_types`), the stream-type rules
//! (`es.stream_type_rules`), the upcasters (`es.upcasters`) and the personal-data paths
//! (`es.personal_data`), read once per backend and kept until one of those tables changes.
//!
//! Why a cache: every append to a typed stream needs its type's definition, and every read that
//! hands events out needs to know whether any upcaster exists; a query per call would cost
//! more than the rest of a one-event append (an append without personal-data paths pays one
//! lookup in an empty map for them). How it stays true: a statement trigger on each of
//! the four tables ([`changed`]) queues a relcache invalidation of the table, which PostgreSQL
//! delivers to every backend of the database when the change commits (and to this backend at
//! its next command, or at its rollback); the callback ([`install`]) only bumps a generation,
//! and the next lookup reloads all four tables in a snapshot of the latest commits.

use super::call::uuid_datum;
use super::jsonb::Jsonb;
use super::spi::{Connection, RegisteredSnapshot, Stmt};
use pgrx::pg_sys::BuiltinOid::UUIDOID;
use pgrx::pg_sys::{self, Datum, Oid};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// One declared aggregate type.
#[derive(Debug, Clone)]
pub struct AggregateType {
    /// Its name.
    pub stream_type: String,
    /// `evolve(state jsonb, event jsonb) RETURNS jsonb`.
    pub evolve: Oid,
    /// `check(state jsonb, event jsonb) RETURNS void`, if any.
    pub check: Option<Oid>,
    /// The initial state, as the bytes of its jsonb varlena (copied into PostgreSQL memory by
    /// whoever folds: nothing points into the cache, which a reload frees).
    pub initial_state: Vec<u8>,
    /// Snapshot interval (`None`: the account's, `es.snapshot_interval`).
    pub snapshot_every: Option<i32>,
    /// The built-in account.
    pub native: bool,
    /// The definition's revision.
    pub revision: i64,
    /// The role its functions run as.
    pub definer: Oid,
}

impl AggregateType {
    /// The initial state as a jsonb datum in the current memory context.
    pub fn initial_state_datum(&self) -> Datum {
        // SAFETY: the bytes are a whole jsonb varlena (4-byte header) copied from the table;
        // palloc'd memory of that size receives them.
        unsafe {
            let p = pg_sys::palloc(self.initial_state.len()).cast::<u8>();
            std::ptr::copy_nonoverlapping(self.initial_state.as_ptr(), p, self.initial_state.len());
            Datum::from(p)
        }
    }
}

/// One upcaster.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    /// `upcast(event jsonb) RETURNS jsonb`.
    pub upcast: Oid,
    /// The role that declared it.
    pub definer: Oid,
}

/// Every upcaster: per event type, per `from_version`.
pub type Upcasters = HashMap<String, HashMap<i32, Upcaster>>;

/// The personal-data paths of each event type that has any (`es.define_personal_data`).
pub type PersonalPaths = HashMap<String, Vec<event_store_core::personal::Path>>;

/// What the four tables held at the last load.
#[derive(Default)]
struct Loaded {
    types: HashMap<String, Rc<AggregateType>>,
    rules: HashMap<String, String>,
    /// Per event type, per `from_version`.
    upcasters: Rc<Upcasters>,
    /// Per event type with at least one path.
    personal: Rc<PersonalPaths>,
    /// Whether es.personal_data has any row (a type whose paths were emptied still had sealed
    /// values stored, which reads must go on revealing or erasing).
    any_personal: bool,
}

thread_local! {
    /// Bumped by the relcache callback.
    static GENERATION: Cell<u64> = const { Cell::new(1) };
    /// The generation `CACHE` was loaded at, and the load.
    static CACHE: RefCell<(u64, Rc<Loaded>)> = RefCell::new((0, Rc::new(Loaded::default())));
    /// The OIDs of the four tables (known after the first load; until then every relcache
    /// invalidation counts).
    static TABLES: Cell<[Oid; 4]> = const { Cell::new([pg_sys::InvalidOid; 4]) };
}

/// Registers the relcache callback, and a syscache callback on `pg_proc`; called once per
/// backend, when the library is loaded.
///
/// The registry names its functions by text and resolves them at load, so a function created,
/// dropped or renamed anywhere must make the next use load again: otherwise a session that
/// loaded before a rename would go on calling the old OID while new sessions fail (ES301).
/// Function DDL is rare; a reload is three small queries.
pub fn install() {
    // SAFETY: registers callbacks with static functions; PostgreSQL keeps at most a fixed
    // number per backend and this is called once per process (`_PG_init`).
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_changed), Datum::from(0usize));
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::PROCOID as i32,
            Some(proc_changed),
            Datum::from(0usize),
        );
    }
}

/// The `pg_proc` syscache callback: must not touch the catalogs or raise, only note the change.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn proc_changed(_arg: Datum, _cache_id: i32, _hash: u32) {
    GENERATION.with(|g| g.set(g.get() + 1));
}

/// The relcache callback: must not touch the catalogs or raise, only note the change.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn relcache_changed(_arg: Datum, relid: Oid) {
    let tables = TABLES.with(Cell::get);
    if relid == pg_sys::InvalidOid || tables[0] == pg_sys::InvalidOid || tables.contains(&relid) {
        GENERATION.with(|g| g.set(g.get() + 1));
    }
}

/// The trigger body of `es.registry_changed()`: queues the invalidation of the table whose
/// statement fired it; false when `call` is not a trigger's.
pub fn changed(call: &super::call::Call<'_>) -> bool {
    let fcinfo = call.fcinfo();
    // SAFETY: a Call's fcinfo is the live call's; its context is TriggerData only when the
    // tag says so (checked), and a trigger's relation is open for the statement.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
            return false;
        }
        let data = context.cast::<pg_sys::TriggerData>();
        pg_sys::CacheInvalidateRelcache((*data).tg_relation);
        true
    }
}

/// The current load (reloading when a table changed since).
fn loaded(conn: &Connection) -> Rc<Loaded> {
    let generation = GENERATION.with(Cell::get);
    if let Some(hit) = CACHE.with(|c| {
        let c = c.borrow();
        (c.0 == generation).then(|| c.1.clone())
    }) {
        return hit;
    }
    let load = Rc::new(load(conn));
    CACHE.with(|c| *c.borrow_mut() = (generation, load.clone()));
    load
}

fn load(conn: &Connection) -> Loaded {
    let snapshot = RegisteredSnapshot::latest();
    let mut loaded = Loaded::default();
    let oids = conn.query_in(&REGISTRY_TABLES, &[], &snapshot);
    let oid = |c| Oid::from(oids.datum(0, c).map_or(0, |d| d.value() as u32));
    let tables = [oid(1), oid(2), oid(3), oid(4)];
    if tables.contains(&pg_sys::InvalidOid) {
        // The schema of 0.1.0 (this library runs it until ALTER EXTENSION UPDATE): no declared
        // types, and its one rule, built in then.
        loaded.rules.insert(
            "Opened".to_owned(),
            event_store_core::ACCOUNT_STREAM_TYPE.to_owned(),
        );
        return loaded;
    }
    TABLES.with(|t| t.set(tables));
    let rows = conn.query_in(&REGISTRY_TYPES, &[], &snapshot);
    for r in 0..rows.len() {
        let oid_at = |c| Oid::from(rows.datum(r, c).map_or(0, |d| d.value() as u32));
        let Some(stream_type) = rows.text(r, 1) else {
            continue;
        };
        // column 4 of REGISTRY_TYPES is `initial_state jsonb` (NOT NULL): copied out as its
        // detoasted varlena bytes
        let initial_state = rows
            .jsonb(r, 4)
            .map(|j| varlena_bytes(j.datum()))
            .unwrap_or_default();
        // NULL: no check; 0: a check named that no longer resolves (UserFn::open refuses it,
        // so the type's appends fail rather than go unjudged)
        let check = rows.datum(r, 3).map(|d| Oid::from(d.value() as u32));
        loaded.types.insert(
            stream_type.clone(),
            Rc::new(AggregateType {
                stream_type,
                evolve: oid_at(2),
                check,
                initial_state,
                snapshot_every: rows.i32(r, 5),
                native: rows.bool(r, 6).unwrap_or(false),
                revision: rows.i64(r, 7).unwrap_or(0),
                definer: oid_at(8),
            }),
        );
    }
    let rows = conn.query_in(&REGISTRY_RULES, &[], &snapshot);
    for r in 0..rows.len() {
        if let (Some(first), Some(stream_type)) = (rows.text(r, 1), rows.text(r, 2)) {
            loaded.rules.insert(first, stream_type);
        }
    }
    let rows = conn.query_in(&REGISTRY_UPCASTERS, &[], &snapshot);
    let mut upcasters = Upcasters::new();
    for r in 0..rows.len() {
        let oid_at = |c| Oid::from(rows.datum(r, c).map_or(0, |d| d.value() as u32));
        if let (Some(event_type), Some(from)) = (rows.text(r, 1), rows.i32(r, 2)) {
            upcasters.entry(event_type).or_default().insert(
                from,
                Upcaster {
                    upcast: oid_at(3),
                    definer: oid_at(4),
                },
            );
        }
    }
    loaded.upcasters = Rc::new(upcasters);
    let rows = conn.query_in(&REGISTRY_PERSONAL_DATA, &[], &snapshot);
    let mut personal = PersonalPaths::new();
    for r in 0..rows.len() {
        loaded.any_personal = true;
        let (Some(event_type), Some(paths)) = (rows.text(r, 1), rows.text(r, 2)) else {
            continue;
        };
        // The paths as one text joined by newlines (keys cannot hold one: es.define_personal_data
        // checked them), so the registry needs no array decoding.
        let paths: Vec<_> = paths
            .split('\n')
            .filter(|p| !p.is_empty())
            .map(|p| p.split('.').map(str::to_owned).collect())
            .collect();
        if !paths.is_empty() {
            personal.insert(event_type, paths);
        }
    }
    loaded.personal = Rc::new(personal);
    loaded
}

/// The bytes of a (detoasted, 4-byte header) varlena.
fn varlena_bytes(d: Datum) -> Vec<u8> {
    // SAFETY: `d` is a detoasted varlena (Jsonb::from_datum detoasts anything not inline; an
    // inline short-header value is copied through pg_detoast_datum_packed's full form below).
    unsafe {
        let full = pg_sys::pg_detoast_datum_copy(d.cast_mut_ptr());
        let len = pgrx::varsize_any(full.cast());
        let bytes = std::slice::from_raw_parts(full.cast::<u8>(), len).to_vec();
        pg_sys::pfree(full.cast());
        bytes
    }
}

/// The declared type of this name (`account` included), if any.
pub fn aggregate_type(conn: &Connection, stream_type: &str) -> Option<Rc<AggregateType>> {
    loaded(conn).types.get(stream_type).cloned()
}

/// The type a new stream whose first event is `first_event_type` gets, by the rules.
pub fn inferred_type(conn: &Connection, first_event_type: &str) -> Option<String> {
    loaded(conn).rules.get(first_event_type).cloned()
}

/// True when the cache is current and holds no upcaster (no SPI connection needed to know).
pub fn known_no_upcaster() -> bool {
    let generation = GENERATION.with(Cell::get);
    CACHE.with(|c| {
        let c = c.borrow();
        c.0 == generation && c.1.upcasters.is_empty()
    })
}

/// Whether any upcaster is declared (when none is, the read paths do nothing more).
pub fn any_upcaster(conn: &Connection) -> bool {
    !loaded(conn).upcasters.is_empty()
}

/// Every upcaster, shared with the cache (a read or fold takes them without copying).
pub fn all_upcasters(conn: &Connection) -> Rc<Upcasters> {
    loaded(conn).upcasters.clone()
}

/// The personal-data paths of every event type that has some (an empty map on a store without
/// personal data: the append's whole cost of the feature).
pub fn personal_paths(conn: &Connection) -> Rc<PersonalPaths> {
    loaded(conn).personal.clone()
}

/// Whether personal data was ever defined here (then reads look for sealed values).
pub fn any_personal_data(conn: &Connection) -> bool {
    loaded(conn).any_personal
}

/// The personal-data paths when the cache is current (no SPI connection needed; a shared
/// reference, no copy), `None` when it must be loaded again.
pub fn cached_personal_paths() -> Option<Rc<PersonalPaths>> {
    let generation = GENERATION.with(Cell::get);
    CACHE.with(|c| {
        let c = c.borrow();
        (c.0 == generation).then(|| c.1.personal.clone())
    })
}

/// True when the cache is current and no personal data is defined (no SPI connection needed).
pub fn known_no_personal_data() -> bool {
    let generation = GENERATION.with(Cell::get);
    CACHE.with(|c| {
        let c = c.borrow();
        c.0 == generation && !c.1.any_personal
    })
}

/// A stream's row, without locking it: (version, type, state datum, state revision).
pub struct StreamInfo<'c> {
    /// Its version.
    pub version: i64,
    /// Its type.
    pub stream_type: Option<String>,
    /// Its kept state, in the SPI result, valid while the connection is (copy it to keep it).
    pub state: Option<Jsonb<'c>>,
    /// The revision the kept state was computed by.
    pub state_revision: Option<i64>,
}

/// Reads a stream's row in the statement's snapshot (`None`: no such stream).
pub fn stream_info<'c>(conn: &'c Connection, stream: &uuid::Uuid) -> Option<StreamInfo<'c>> {
    let rows = conn.query(&STREAM_STATE_INFO, &[Some(uuid_datum(stream))]);
    if rows.is_empty() {
        return None;
    }
    Some(StreamInfo {
        version: rows.first_i64().unwrap_or(0),
        stream_type: rows.text(0, 2),
        state: rows.jsonb(0, 3).map(|j| {
            // SAFETY: a jsonb column (`rows.jsonb` checks its type) of a tuple table SPI keeps
            // until the connection finishes (these rows are never freed), so for 'c.
            unsafe { Jsonb::from_datum(j.datum()) }
        }),
        state_revision: rows.i64(0, 4),
    })
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// The OIDs of the registry's tables (es.aggregate_types, es.stream_type_rules,
/// es.upcasters).
pub static REGISTRY_TABLES: Stmt = Stmt::new(
    "RegistryTables",
    c"SELECT to_regclass('es.aggregate_types')::oid, to_regclass('es.stream_type_rules')::oid,
                         to_regclass('es.upcasters')::oid, to_regclass('es.personal_data')::oid",
    &[],
);

/// Every declared aggregate type.
// The registry keeps functions by name (regprocedure's text form), because pg_upgrade
// keeps names but not function OIDs (and refuses reg* columns other than regclass,
// regrole, regtype). Written and resolved under the pinned search path (pg_catalog
// only), every name outside pg_catalog is schema-qualified both ways. A name that no
// longer resolves loads as OID 0, which UserFn::open reports as missing (ES301).
pub static REGISTRY_TYPES: Stmt = Stmt::new(
    "RegistryTypes",
    c"SELECT stream_type, coalesce(pg_catalog.to_regprocedure(evolve)::oid, 0),
                         CASE WHEN \"check\" IS NOT NULL
                              THEN coalesce(pg_catalog.to_regprocedure(\"check\")::oid, 0) END,
                         initial_state, snapshot_every, native, revision, definer::oid
                    FROM es.aggregate_types",
    &[],
);

/// Every stream-type rule.
pub static REGISTRY_RULES: Stmt = Stmt::new(
    "RegistryRules",
    c"SELECT first_event_type, stream_type FROM es.stream_type_rules",
    &[],
);

/// Every upcaster.
pub static REGISTRY_UPCASTERS: Stmt = Stmt::new(
    "RegistryUpcasters",
    c"SELECT event_type, from_version, coalesce(pg_catalog.to_regprocedure(upcast)::oid, 0),
                         definer::oid
                    FROM es.upcasters",
    &[],
);

/// A stream's version, type, state and the revision of its state (0.2.0 on).
pub static STREAM_STATE_INFO: Stmt = Stmt::new(
    "StreamStateInfo",
    c"SELECT version, stream_type, state, state_revision FROM es.streams WHERE stream_id = $1",
    &[UUIDOID],
);

/// Every event type's personal-data paths (joined by newlines).
pub static REGISTRY_PERSONAL_DATA: Stmt = Stmt::new(
    "RegistryPersonalData",
    c"SELECT event_type, pg_catalog.array_to_string(paths, E'\\n') FROM es.personal_data",
    &[],
);
