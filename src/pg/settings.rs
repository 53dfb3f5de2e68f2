//! The store's `es.*` settings (snapshots, the watermark, the workers, retention, archived reads,
//! key providers); tracing's own are in `trace/settings.rs`. Defined in `_PG_init` in every
//! process that loads the library; the `es` prefix is reserved so a mistyped `es.*` setting is an
//! error, not a silent no-op.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `es.snapshot_interval`: an append to an account stream that reaches or crosses a multiple of
/// this many events writes a snapshot at the new version, in the same transaction (docs/reference.md §4).
/// 100 is the seed's interval; 0 turns automatic snapshots off.
pub static SNAPSHOT_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(100);

/// `es.watermark_interval`: how often (milliseconds) the primary's worker writes the watermark
/// that readers on replicas cap at (docs/reference.md §11); the lag it adds to a replica's readers is at
/// most this plus the replication delay. 0 stops writing it (replicas then read nothing new).
pub static WATERMARK_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(10);

/// `es.projection_naptime`: the longest a projection worker sleeps between looks at its
/// projections (milliseconds) when no commit wakes it.
pub static PROJECTION_NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// `es.max_workers`: the most database workers (projections, the replicas' watermark) the
/// store runs at once, across the cluster. Each takes a slot of `max_worker_processes`, the pool
/// parallel query and logical replication draw from too, so the store must not take them all: a
/// database beyond the bound waits (`es.projections` says so), and while one waits, the worker
/// that has run longest yields its slot after its round, so every database's projections
/// progress. Databases with no projections and no replicas to serve take no slot.
pub static MAX_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(4);

/// `es.retention_batch_size`: the most events one batch of a retention policy removes (one
/// transaction of the database worker; an append waits for at most one batch).
pub static RETENTION_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// `es.retention_naptime`: the pause between two batches of a retention policy (milliseconds).
pub static RETENTION_NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// `es.include_archived`: whether the read functions read through `es.events_archive` (on, the
/// default) or the live events of `es.events` only.
pub static INCLUDE_ARCHIVED: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `es.key_provider`: the schema-qualified name of a function `(action text, key_id bigint, key
/// bytea) RETURNS bytea` that keeps the subjects' keys instead of `es.subject_keys` (docs/lifecycle.md
/// "Keys in another database"); empty: the keys are in `es.subject_keys`. Superuser only: the
/// store calls it as the extension's owner.
pub static KEY_PROVIDER: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);

/// The key provider's name, `None` when the setting is empty.
pub fn key_provider() -> Option<String> {
    KEY_PROVIDER
        .get()
        .map(|c| c.to_string_lossy().trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Registers the settings.
pub fn init() {
    GucRegistry::define_string_guc(
        c"es.key_provider",
        c"Function that keeps the data subjects' keys instead of es.subject_keys (empty = the table).",
        c"A schema-qualified function (action text, key_id bigint, key bytea) RETURNS bytea: action put stores a new key, get returns one (NULL: none), forget destroys one. It may keep the keys in another database (dblink, postgres_fdw), so this database's backups hold no key.",
        &KEY_PROVIDER,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"es.snapshot_interval",
        c"Events between automatic snapshots of an account stream (0 = off).",
        c"An append to an account stream that reaches or crosses a multiple of this interval writes a snapshot at the new version, in the same transaction.",
        &SNAPSHOT_INTERVAL,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"es.watermark_interval",
        c"Milliseconds between writes of the watermark replicas read at (0 = off).",
        c"The primary's worker writes es.watermark at this interval while events are appended; readers on a hot standby or a logical subscriber cap es.read_all, es.poll and es.wait at it, so they stay gap-safe. It bounds the extra lag of those readers.",
        &WATERMARK_INTERVAL,
        0,
        60_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"es.projection_naptime",
        c"Longest sleep of a projection worker between looks at its projections (ms).",
        c"A commit that appends wakes the worker at once; this bounds the wait when nothing wakes it (e.g. after es.resume_projection in another database session).",
        &PROJECTION_NAPTIME,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"es.max_workers",
        c"Most database workers (projections, replicas' watermark) the store runs at once.",
        c"Each database worker takes a slot of max_worker_processes, which parallel query and logical replication also draw from. A database beyond this bound waits for a slot (es.projections shows it); while one waits, the longest-running worker yields its slot after its round.",
        &MAX_WORKERS,
        1,
        1024,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"es.retention_batch_size",
        c"Most events one batch of a retention policy removes.",
        c"Each batch is one transaction of the database's background worker; appends never wait for more than one batch.",
        &RETENTION_BATCH_SIZE,
        1,
        1_000_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"es.retention_naptime",
        c"Pause between two batches of a retention policy (ms).",
        c"With es.retention_batch_size it sets the pace at which the worker removes expired events.",
        &RETENTION_NAPTIME,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"es.include_archived",
        c"Whether the read functions read through es.events_archive.",
        c"On (the default), es.load_events, es.read_all, es.poll, projections, states, replays and time travel read the archived events with the live ones; off, the live events of es.events only.",
        &INCLUDE_ARCHIVED,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: called from _PG_init after the es.* settings are defined; the prefix is a static
    // string.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"es".as_ptr()) };
}
