//! Every SQL statement the extension runs, in one place, and the thin SPI layer that runs them
//! ([`Connection`]).
//!
//! Each statement is prepared once per backend and kept (`SPI_keepplan`), so a call pays for
//! neither parsing nor planning; PostgreSQL's plan cache replans them by itself when the schema
//! changes. The layer is deliberately small and raw (no per-call argument vectors beyond the
//! ones PostgreSQL needs) because it sits on the append hot path.

use super::jsonb::Jsonb;
use pgrx::pg_sys::{self, BuiltinOid, Datum, Oid};
use std::ffi::CStr;
use std::marker::PhantomData;
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
    /// The highest stored global position (NULL when the log is empty), to check the position
    /// sequence against after a failover to a logical-replication subscriber, whose sequence
    /// PostgreSQL 15 does not replicate. One backward step of the position index.
    MaxPosition,
    /// How many logical-replication subscriptions the current database has.
    Subscriptions,
    /// Whether `es.events` is itself replicated in (a table of a logical-replication
    /// subscription): readers here cap at the replicated watermark, and the worker does not
    /// write one.
    EventsReplicatedIn,
    /// Whether `es.watermark` is replicated in too: without it a reader where `es.events` is
    /// replicated in cannot be gap-safe (and must say so rather than return nothing).
    WatermarkReplicatedIn,
    /// The subscription that replicates `es.events` in and its first publication, both quoted
    /// as identifiers: what the error of a missing `es.watermark` tells the DBA to change.
    EventsSubscription,
    /// The replicated watermark (`es.watermark`).
    Watermark,
    /// The primary's worker writes the watermark (only forward).
    WriteWatermark,
    /// The last position the sequence handed out (0 before the first).
    SequenceLast,
    /// The highest stored position at or below a bound.
    ReadableEnd,
    /// Whether the extension is installed in this database at a version with projections (the
    /// worker's first question; a store still at 0.1.0 has nothing for it to do).
    ExtensionPresent,
    /// Create a subscription (no row when the name is taken).
    SubscriptionInsert,
    /// Create a subscription's partitions at its start position.
    PartitionsInsert,
    /// Lock every partition row of a subscription (before a drop or a reset: a consumer's ack
    /// or nack in flight commits first, and the statements after this see what it wrote).
    SubscriptionLock,
    /// Drop a subscription (and its partitions, parked events and projection); returns how many
    /// subscriptions were dropped.
    SubscriptionDrop,
    /// The number of partitions of a subscription (no row: no such subscription).
    SubscriptionPartitions,
    /// Whether a subscription belongs to a projection.
    IsProjection,
    /// One partition with its subscription's settings, without locking.
    PartitionRead,
    /// The same, locking the partition row (ack, nack).
    PartitionLock,
    /// A partition's next events after its checkpoint, up to a bound, filtered.
    Poll,
    /// A partition's parked events that `es.replay_parked` put back, first.
    PollReplayed,
    /// Park the events in a range whose stream has a parked event before them.
    ParkBehind,
    /// Forget the put-back parked events at or below an acked position.
    DeleteReplayed,
    /// Move a partition's checkpoint (and forget a failing head it passes).
    SetCheckpoint,
    /// Record a failed attempt of a partition's head event.
    SetHead,
    /// The stream of an event.
    EventStream,
    /// Park one event (or park a put-back one again).
    ParkOne,
    /// Whether a parked event was put back (`es.replay_parked`) and is being retried.
    IsReplayed,
    /// Records the caller as a live consumer of a subscription until its lease ends, forgets the
    /// consumers whose time ran out, and counts the other live ones.
    LiveConsumers,
    /// Extend the caller's live leases; returns their partitions.
    RenewLeases,
    /// Take up to n free or expired partitions.
    TakePartitions,
    /// Give up the caller's n highest partitions (more than its share).
    ShedPartitions,
    /// The partitions the caller holds.
    HeldPartitions,
    /// Release every partition of a consumer.
    ReleasePartitions,
    /// Put a subscription's parked events back in front of its consumers.
    ReplayParked,
    /// What a projection handler is: kind, argument count, whether the argument is es.events,
    /// the quoted qualified name and the signature.
    HandlerInfo,
    /// Register a projection.
    ProjectionInsert,
    /// Pause or resume a projection.
    ProjectionPause,
    /// Put a projection's checkpoint back at its start and forget its parked events.
    ProjectionReset,
    /// The projections the worker runs.
    ProjectionList,
    /// One event as a row of `es.events` (a composite datum), read by the worker for a
    /// projection's handler (whose role need not be allowed to read the table).
    EventRow,
    /// The OID of `es.run_handler(text, es.events)` (NULL when it is missing), called through
    /// fmgr as a projection's role.
    RunHandlerOid,
    /// Whether a projection is still there and not paused (read after its partition row is
    /// locked: a pause that committed before the batch started stops it).
    ProjectionActive,
    /// Record that a projection handled a batch.
    ProjectionTouch,
    /// A projection's checkpoint.
    ProjectionCheckpoint,
    /// The OIDs of the registry's tables (es.aggregate_types, es.stream_type_rules,
    /// es.upcasters).
    RegistryTables,
    /// Every declared aggregate type.
    RegistryTypes,
    /// Every stream-type rule.
    RegistryRules,
    /// Every upcaster.
    RegistryUpcasters,
    /// The newest snapshot at or below a version computed by a given revision.
    LoadSnapshotRevision,
    /// Save (or replace) a snapshot with the revision that computed it.
    SaveSnapshotRevision,
    /// What a function is: (argument types, result type, returns a set, kind, its
    /// regprocedure text); no row when it does not exist.
    FunctionInfo,
    /// Declare an aggregate type (no row when the name is taken).
    AggregateInsert,
    /// Replace an aggregate type's definition with a new revision (no row: no such type).
    AggregateUpdate,
    /// Remove an aggregate type (no row: no such type).
    AggregateDelete,
    /// How many streams are of a type.
    StreamsOfType,
    /// Forget the kept states of a type's streams (a drop with detach).
    DetachStreams,
    /// Declare an upcaster (no row when it exists).
    UpcasterInsert,
    /// Remove an upcaster (no row: none).
    UpcasterDelete,
    /// Up to n streams of a type whose kept state is not of a revision, locked (skipping
    /// those locked by an append; a later batch takes them).
    StaleStreams,
    /// Remove a stream's snapshots of other revisions.
    DeleteStaleSnapshots,
    /// Mark a rebuild's start or end in es.aggregate_types.
    RebuildMark,
    /// A stream's version, type, state and the revision of its state (0.2.0 on).
    StreamStateInfo,
    /// Store a declared type's state with its revision (when the bump went through SPI, and
    /// after a rebuild).
    SetStateRevision,
    /// [`Stmt::LoadEvents`] through the archive: a stream's events in `es.events` and
    /// `es.events_archive` after a version (once anything was archived).
    LoadEventsArchived,
    /// [`Stmt::ReadAll`] through the archive.
    ReadAllArchived,
    /// [`Stmt::Poll`] through the archive.
    PollArchived,
    /// [`Stmt::PollReplayed`] through the archive.
    PollReplayedArchived,
    /// [`Stmt::ParkBehind`] through the archive.
    ParkBehindArchived,
    /// [`Stmt::EventStream`] through the archive.
    EventStreamArchived,
    /// [`Stmt::EventRow`] through the archive (after `EventRow` found nothing: the event was
    /// archived or removed since it was polled).
    EventRowArchived,
    /// Whether the database has the retention tables (an extension of 0.2.0 on).
    RetentionPresent,
    /// The highest archived position (NULL when none): a position is never handed out twice.
    MaxArchivedPosition,
    /// [`Stmt::VersionAsOf`] through the archive.
    VersionAsOfArchived,
    /// [`Stmt::ReadableEnd`] through the archive.
    ReadableEndArchived,
    /// The retention policies that are not paused, by stream type.
    RetentionPolicies,
    /// One batch of a retention policy (`es.retention_batch`): removed, next position.
    RetentionBatch,
    /// A new revision for every declared type (an upcaster changes what their folds read).
    ReviseAll,
    /// A stream's life: deleted, when, truncated before (schema 0.2.0 on only).
    StreamLifecycle,
    /// The stream row locked, with its life (for the acts on it).
    LockStreamLifecycle,
    /// Marks a stream deleted (soft or hard; a hard delete forgets the kept state).
    MarkDeleted,
    /// Marks a stream live again.
    MarkUndeleted,
    /// Records a truncation's cut.
    SetTruncated,
    /// Removes the events a stream's row records as removed (es.purge_stream).
    PurgeStream,
    /// Removes a stream's snapshots below a version.
    DeleteSnapshotsBelow,
    /// A snapshot at exactly a version, with its revision.
    SnapshotAt,
    /// The newest snapshot of a revision (NULL: an account's) at or below a version.
    NewestSnapshotOf,
    /// The global position of one event of a stream.
    EventPosition,
    /// One row of es.data_audit.
    AuditInsert,
    /// Whether a stream was created at or before a time.
    CreatedBy,
    /// Every event type's personal-data paths (joined by newlines).
    RegistryPersonalData,
    /// Define (or replace) an event type's personal-data paths.
    PersonalDataUpsert,
    /// A subject's key: (key_id, key).
    KeyOfSubject,
    /// Create a subject's key unless a concurrent append did: (key_id, key), no row then.
    KeyInsert,
    /// A key by its id (what a sealed value names).
    KeyById,
    /// Destroy a subject's key: its key_id, no row when it had none.
    KeyForget,
    /// Call the key provider: (action, key_id, key) -> key.
    KeyProviderCall,
    /// A key from the key provider, as the owner, for a member of es_personal_data.
    KeyProviderGet,
}

const STMT_COUNT: usize = Stmt::KeyProviderGet as usize + 1;

struct Def {
    sql: &'static CStr,
    args: &'static [BuiltinOid],
}

use BuiltinOid::{
    BOOLOID, BYTEAOID, INT4OID, INT8OID, INTERVALOID, JSONBARRAYOID, JSONBOID, OIDOID,
    TEXTARRAYOID, TEXTOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZOID, UUIDARRAYOID, UUIDOID,
};

/// The filter of a subscription's events: $5 event types, $6 stream type, $7 partitions, $2
/// partition (shared by the statements that read a partition's events, so they agree).
macro_rules! partition_filter {
    () => {
        "(($5)::text[] IS NULL OR e.event_type = ANY ($5))
          AND (($6)::text IS NULL OR EXISTS (SELECT 1 FROM es.streams s
                                              WHERE s.stream_id = e.stream_id AND s.stream_type = $6))
          AND ($7 = 1 OR es.stream_hash(e.stream_id) % $7 = $2)"
    };
}

/// The whole log, live and archived, as one relation (`es.events_archive` has the columns of
/// `es.events`, in the same order; a DBA who adds a column to one must add it to the other, and
/// these statements run only once something was archived): PostgreSQL flattens it into an append of the two tables, so
/// a qualifier on position or stream reaches both indexes, and one statement reads both in one
/// snapshot (an event moved by `es.archive` is seen in exactly one of them).
macro_rules! all_events {
    () => {
        "(SELECT * FROM es.events UNION ALL SELECT * FROM es.events_archive)"
    };
}

/// [`Stmt::Poll`] from `$source` (`es.events`, or [`all_events`] through the archive).
macro_rules! poll {
    ($source:expr) => {
        concat!(
            "SELECT e.* FROM ",
            $source,
            " e
              WHERE e.global_position > $3 AND e.global_position <= $4 AND ",
            partition_filter!(),
            " AND (NOT $8 OR NOT EXISTS (SELECT 1 FROM es.parked_events k
                                          WHERE k.subscription = $1
                                            AND k.stream_id = e.stream_id))
              ORDER BY e.global_position LIMIT $9"
        )
    };
}

/// [`Stmt::PollReplayed`] from `$source` (`es.events`, or [`all_events`] through the archive).
macro_rules! poll_replayed {
    ($source:expr) => {
        concat!(
            "SELECT e.* FROM es.parked_events k
                    JOIN ",
            $source,
            " e ON e.global_position = k.global_position
                   WHERE k.subscription = $1 AND k.partition = $2 AND k.replay
                   ORDER BY k.global_position LIMIT $3"
        )
    };
}

/// [`Stmt::ParkBehind`] from `$source` (`es.events`, or [`all_events`] through the archive).
macro_rules! park_behind {
    ($source:expr) => {
        concat!(
            "INSERT INTO es.parked_events
                            (subscription, partition, global_position, stream_id, attempts, error)
                     SELECT $1, $2, e.global_position, e.stream_id, 0,
                            'parked behind position ' || k.first || ' of its stream'
                       FROM ",
                    $source,
                    " e
                       JOIN LATERAL (SELECT pg_catalog.min(k.global_position) AS first
                                       FROM es.parked_events k
                                      WHERE k.subscription = $1 AND k.stream_id = e.stream_id
                                        AND k.global_position < e.global_position) k
                         ON k.first IS NOT NULL
                      WHERE e.global_position > $3 AND e.global_position <= $4 AND ",
                    partition_filter!(),
                    " ON CONFLICT (subscription, global_position) DO NOTHING"
        )
    };
}

/// The columns of [`Stmt::PartitionRead`] / [`Stmt::PartitionLock`].
macro_rules! partition_read {
    ($lock:literal) => {
        concat!(
            "SELECT c.partitions, c.max_attempts, c.event_types, c.stream_type, p.checkpoint,
                    p.owner, coalesce(p.lease_until > pg_catalog.clock_timestamp(), false),
                    p.lease_until::text, p.head_position, p.head_attempts,
                    EXISTS (SELECT 1 FROM es.parked_events k WHERE k.subscription = c.name),
                    c.start_after
               FROM es.subscription_config c
               JOIN es.subscription_partitions p ON p.subscription = c.name AND p.partition = $2
              WHERE c.name = $1",
            $lock
        )
    };
}

/// A `&'static CStr` from a string literal built with `concat!`.
macro_rules! cstr {
    ($s:expr) => {
        match CStr::from_bytes_with_nul(concat!($s, "\0").as_bytes()) {
            Ok(c) => c,
            Err(_) => panic!("a statement contains a NUL"),
        }
    };
}

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
                c"SELECT * FROM es.events WHERE global_position > $1 AND global_position <= $2
                  ORDER BY global_position LIMIT $3",
                &[INT8OID, INT8OID, INT8OID],
            ),
            Stmt::LoadEventsArchived => (
                cstr!(concat!(
                    "SELECT * FROM ",
                    all_events!(),
                    " e WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3"
                )),
                &[UUIDOID, INT8OID, INT8OID],
            ),
            Stmt::ReadAllArchived => (
                cstr!(concat!(
                    "SELECT * FROM ",
                    all_events!(),
                    " e WHERE global_position > $1 AND global_position <= $2
                      ORDER BY global_position LIMIT $3"
                )),
                &[INT8OID, INT8OID, INT8OID],
            ),
            Stmt::RetentionPresent => (
                c"SELECT count(*) FROM pg_catalog.pg_class
                   WHERE oid = pg_catalog.to_regclass('es.retention_policies')",
                &[],
            ),
            Stmt::RetentionPolicies => (
                c"SELECT stream_type FROM es.retention_policies WHERE NOT paused ORDER BY stream_type",
                &[],
            ),
            Stmt::RetentionBatch => (
                c"SELECT removed, next_position FROM es.retention_batch($1, $2, $3)",
                &[TEXTOID, INT4OID, INT8OID],
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
            Stmt::VersionAsOfArchived => (
                cstr!(concat!(
                    "SELECT version FROM ",
                    all_events!(),
                    " e WHERE stream_id = $1 AND version <= $2 AND recorded_at <= $3
                      ORDER BY version DESC LIMIT 1"
                )),
                &[UUIDOID, INT8OID, TIMESTAMPTZOID],
            ),
            Stmt::MaxPosition => (c"SELECT max(global_position) FROM es.events", &[]),
            Stmt::MaxArchivedPosition => (
                c"SELECT max(global_position) FROM es.events_archive",
                &[],
            ),
            Stmt::Subscriptions => (
                c"SELECT count(*) FROM pg_catalog.pg_subscription
                  WHERE subdbid = (SELECT oid FROM pg_catalog.pg_database
                                   WHERE datname = pg_catalog.current_database())",
                &[],
            ),
            Stmt::EventsReplicatedIn => (
                c"SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel r
                                  WHERE r.srrelid = 'es.events'::pg_catalog.regclass)",
                &[],
            ),
            Stmt::WatermarkReplicatedIn => (
                c"SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel r
                                  WHERE r.srrelid = 'es.watermark'::pg_catalog.regclass)",
                &[],
            ),
            Stmt::EventsSubscription => (
                c"SELECT pg_catalog.quote_ident(s.subname::text),
                         pg_catalog.quote_ident(s.subpublications[1])
                    FROM pg_catalog.pg_subscription_rel r
                    JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid
                   WHERE r.srrelid = 'es.events'::pg_catalog.regclass
                   ORDER BY s.subname LIMIT 1",
                &[],
            ),
            Stmt::Watermark => (c"SELECT position FROM es.watermark WHERE id = 1", &[]),
            Stmt::WriteWatermark => (
                c"INSERT INTO es.watermark AS w (id, position, written_at)
                  VALUES (1, $1, pg_catalog.clock_timestamp())
                  ON CONFLICT (id) DO UPDATE
                  SET position = excluded.position, written_at = excluded.written_at
                  WHERE w.position < excluded.position",
                &[INT8OID],
            ),
            Stmt::SequenceLast => (
                c"SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
                    FROM es.global_position_seq",
                &[],
            ),
            Stmt::ReadableEnd => (
                c"SELECT pg_catalog.max(global_position) FROM es.events WHERE global_position <= $1",
                &[INT8OID],
            ),
            Stmt::ReadableEndArchived => (
                c"SELECT greatest(
                    (SELECT pg_catalog.max(global_position) FROM es.events WHERE global_position <= $1),
                    (SELECT pg_catalog.max(global_position) FROM es.events_archive WHERE global_position <= $1))",
                &[INT8OID],
            ),
            Stmt::ExtensionPresent => (
                c"SELECT count(*) FROM pg_catalog.pg_extension
                   WHERE extname = 'event_store'
                     AND pg_catalog.to_regclass('es.projection_config') IS NOT NULL",
                &[],
            ),
            Stmt::SubscriptionInsert => (
                c"INSERT INTO es.subscription_config
                         (name, start_after, event_types, stream_type, partitions, max_attempts)
                  VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING 1",
                &[TEXTOID, INT8OID, TEXTARRAYOID, TEXTOID, INT4OID, INT4OID],
            ),
            Stmt::PartitionsInsert => (
                c"INSERT INTO es.subscription_partitions (subscription, partition, checkpoint)
                  SELECT $1, g, $2 FROM pg_catalog.generate_series(0, $3 - 1) g",
                &[TEXTOID, INT8OID, INT4OID],
            ),
            Stmt::SubscriptionLock => (
                c"SELECT count(*) FROM (SELECT 1 FROM es.subscription_partitions
                                         WHERE subscription = $1 FOR UPDATE) p",
                &[TEXTOID],
            ),
            Stmt::SubscriptionDrop => (
                c"WITH p AS (DELETE FROM es.subscription_partitions WHERE subscription = $1),
                       k AS (DELETE FROM es.parked_events WHERE subscription = $1),
                       u AS (DELETE FROM es.subscription_consumers WHERE subscription = $1),
                       j AS (DELETE FROM es.projection_config WHERE name = $1),
                       c AS (DELETE FROM es.subscription_config WHERE name = $1 RETURNING 1)
                  SELECT count(*) FROM c",
                &[TEXTOID],
            ),
            Stmt::SubscriptionPartitions => (
                c"SELECT partitions FROM es.subscription_config WHERE name = $1",
                &[TEXTOID],
            ),
            Stmt::IsProjection => (
                c"SELECT count(*) FROM es.projection_config WHERE name = $1",
                &[TEXTOID],
            ),
            Stmt::PartitionRead => (cstr!(partition_read!("")), &[TEXTOID, INT4OID]),
            Stmt::PartitionLock => (
                cstr!(partition_read!(" FOR NO KEY UPDATE OF p")),
                &[TEXTOID, INT4OID],
            ),
            Stmt::Poll => (
                cstr!(poll!("es.events")),
                &[TEXTOID, INT4OID, INT8OID, INT8OID, TEXTARRAYOID, TEXTOID, INT4OID, BOOLOID, INT4OID],
            ),
            Stmt::PollArchived => (
                cstr!(poll!(all_events!())),
                &[TEXTOID, INT4OID, INT8OID, INT8OID, TEXTARRAYOID, TEXTOID, INT4OID, BOOLOID, INT4OID],
            ),
            Stmt::PollReplayed => (
                cstr!(poll_replayed!("es.events")),
                &[TEXTOID, INT4OID, INT4OID],
            ),
            Stmt::PollReplayedArchived => (
                cstr!(poll_replayed!(all_events!())),
                &[TEXTOID, INT4OID, INT4OID],
            ),
            Stmt::ParkBehind => (
                cstr!(park_behind!("es.events")),
                &[TEXTOID, INT4OID, INT8OID, INT8OID, TEXTARRAYOID, TEXTOID, INT4OID],
            ),
            Stmt::ParkBehindArchived => (
                cstr!(park_behind!(all_events!())),
                &[TEXTOID, INT4OID, INT8OID, INT8OID, TEXTARRAYOID, TEXTOID, INT4OID],
            ),
            Stmt::DeleteReplayed => (
                c"DELETE FROM es.parked_events
                   WHERE subscription = $1 AND partition = $2 AND replay AND global_position <= $3",
                &[TEXTOID, INT4OID, INT8OID],
            ),
            Stmt::SetCheckpoint => (
                c"UPDATE es.subscription_partitions
                     SET checkpoint = greatest(checkpoint, $3),
                         head_position = CASE WHEN head_position <= $3 THEN NULL ELSE head_position END,
                         head_attempts = CASE WHEN head_position <= $3 THEN 0 ELSE head_attempts END,
                         head_error = CASE WHEN head_position <= $3 THEN NULL ELSE head_error END,
                         updated_at = pg_catalog.transaction_timestamp()
                   WHERE subscription = $1 AND partition = $2",
                &[TEXTOID, INT4OID, INT8OID],
            ),
            Stmt::SetHead => (
                c"UPDATE es.subscription_partitions
                     SET head_position = $3, head_attempts = $4, head_error = $5,
                         updated_at = pg_catalog.transaction_timestamp()
                   WHERE subscription = $1 AND partition = $2",
                &[TEXTOID, INT4OID, INT8OID, INT4OID, TEXTOID],
            ),
            Stmt::EventStream => (
                c"SELECT stream_id FROM es.events WHERE global_position = $1",
                &[INT8OID],
            ),
            Stmt::EventStreamArchived => (
                cstr!(concat!(
                    "SELECT stream_id FROM ",
                    all_events!(),
                    " e WHERE global_position = $1"
                )),
                &[INT8OID],
            ),
            Stmt::ParkOne => (
                c"INSERT INTO es.parked_events
                         (subscription, partition, global_position, stream_id, attempts, error)
                  VALUES ($1, $2, $3, $4, $5, $6)
                  ON CONFLICT (subscription, global_position) DO UPDATE
                  SET attempts = excluded.attempts, error = excluded.error, replay = false,
                      parked_at = excluded.parked_at",
                &[TEXTOID, INT4OID, INT8OID, UUIDOID, INT4OID, TEXTOID],
            ),
            Stmt::IsReplayed => (
                c"SELECT count(*) FROM es.parked_events
                   WHERE subscription = $1 AND partition = $2 AND global_position = $3 AND replay",
                &[TEXTOID, INT4OID, INT8OID],
            ),
            Stmt::LiveConsumers => (
                c"WITH seen AS (
                      INSERT INTO es.subscription_consumers AS c (subscription, consumer, seen_until)
                      VALUES ($1, $2, pg_catalog.clock_timestamp() + $3)
                      ON CONFLICT (subscription, consumer) DO UPDATE SET seen_until = excluded.seen_until),
                       gone AS (
                      DELETE FROM es.subscription_consumers
                       WHERE subscription = $1 AND consumer <> $2
                         AND seen_until < pg_catalog.clock_timestamp())
                  SELECT count(*) FROM es.subscription_consumers
                   WHERE subscription = $1 AND consumer <> $2
                     AND seen_until >= pg_catalog.clock_timestamp()",
                &[TEXTOID, TEXTOID, INTERVALOID],
            ),
            Stmt::RenewLeases => (
                c"UPDATE es.subscription_partitions
                     SET lease_until = pg_catalog.clock_timestamp() + $3,
                         updated_at = pg_catalog.transaction_timestamp()
                   WHERE subscription = $1 AND owner = $2
                     AND lease_until > pg_catalog.clock_timestamp()",
                &[TEXTOID, TEXTOID, INTERVALOID],
            ),
            Stmt::TakePartitions => (
                c"UPDATE es.subscription_partitions p
                     SET owner = $2, lease_until = pg_catalog.clock_timestamp() + $3,
                         updated_at = pg_catalog.transaction_timestamp()
                   WHERE p.subscription = $1
                     AND (p.owner IS NULL OR p.lease_until IS NULL
                          OR p.lease_until <= pg_catalog.clock_timestamp())
                     AND p.partition IN (
                         SELECT q.partition FROM es.subscription_partitions q
                          WHERE q.subscription = $1
                            AND (q.owner IS NULL OR q.lease_until IS NULL
                                 OR q.lease_until <= pg_catalog.clock_timestamp())
                          ORDER BY q.partition LIMIT $4 FOR UPDATE SKIP LOCKED)",
                &[TEXTOID, TEXTOID, INTERVALOID, INT4OID],
            ),
            Stmt::ShedPartitions => (
                c"UPDATE es.subscription_partitions p
                     SET owner = NULL, lease_until = NULL,
                         updated_at = pg_catalog.transaction_timestamp()
                   WHERE p.subscription = $1 AND p.owner = $2
                     AND p.partition IN (
                         SELECT q.partition FROM es.subscription_partitions q
                          WHERE q.subscription = $1 AND q.owner = $2
                          ORDER BY q.partition DESC LIMIT $3)",
                &[TEXTOID, TEXTOID, INT4OID],
            ),
            Stmt::HeldPartitions => (
                c"SELECT partition, lease_until FROM es.subscription_partitions
                   WHERE subscription = $1 AND owner = $2
                     AND lease_until > pg_catalog.clock_timestamp()
                   ORDER BY partition",
                &[TEXTOID, TEXTOID],
            ),
            Stmt::ReleasePartitions => (
                c"WITH u AS (DELETE FROM es.subscription_consumers
                              WHERE subscription = $1 AND consumer = $2)
                  UPDATE es.subscription_partitions
                     SET owner = NULL, lease_until = NULL,
                         updated_at = pg_catalog.transaction_timestamp()
                   WHERE subscription = $1 AND owner = $2",
                &[TEXTOID, TEXTOID],
            ),
            Stmt::ReplayParked => (
                c"UPDATE es.parked_events SET replay = true WHERE subscription = $1 AND NOT replay",
                &[TEXTOID],
            ),
            Stmt::HandlerInfo => (
                c"SELECT p.prokind::text, p.pronargs::int4,
                         p.pronargs >= 1 AND p.proargtypes[0] = 'es.events'::pg_catalog.regtype,
                         pg_catalog.format('%I.%I', n.nspname, p.proname),
                         p.oid::pg_catalog.regprocedure::text
                    FROM pg_catalog.pg_proc p
                    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                   WHERE p.oid = $1",
                &[OIDOID],
            ),
            Stmt::ProjectionInsert => (
                c"INSERT INTO es.projection_config (name, handler, batch, run_as)
                  VALUES ($1, $2, $3, $4::pg_catalog.regrole)",
                &[TEXTOID, TEXTOID, INT4OID, OIDOID],
            ),
            Stmt::ProjectionPause => (
                c"UPDATE es.projection_config SET paused = $2 WHERE name = $1",
                &[TEXTOID, BOOLOID],
            ),
            Stmt::ProjectionReset => (
                c"WITH k AS (DELETE FROM es.parked_events WHERE subscription = $1)
                  UPDATE es.subscription_partitions p
                     SET checkpoint = c.start_after, head_position = NULL, head_attempts = 0,
                         head_error = NULL, owner = NULL, lease_until = NULL,
                         updated_at = pg_catalog.transaction_timestamp()
                    FROM es.subscription_config c
                   WHERE c.name = $1 AND p.subscription = $1",
                &[TEXTOID],
            ),
            Stmt::ProjectionList => (
                c"SELECT j.name, j.handler, j.batch, j.run_as::pg_catalog.oid, j.run_as::pg_catalog.text
                    FROM es.projection_config j
                   WHERE NOT j.paused ORDER BY j.name",
                &[],
            ),
            Stmt::EventRow => (
                c"SELECT e FROM es.events e WHERE e.global_position = $1",
                &[INT8OID],
            ),
            // ROW(a.*)::es.events: the handler takes an es.events row; the archive's has the
            // same columns in the same order
            Stmt::EventRowArchived => (
                c"SELECT e FROM es.events e WHERE e.global_position = $1
                  UNION ALL
                  SELECT ROW(a.*)::es.events FROM es.events_archive a WHERE a.global_position = $1",
                &[INT8OID],
            ),
            // to_regprocedure is STABLE, so the kept plan looks the function up on every run
            // (a recreated extension gets its new OID)
            Stmt::RunHandlerOid => (
                c"SELECT pg_catalog.to_regprocedure('es.run_handler(text, es.events)')::pg_catalog.oid",
                &[],
            ),
            Stmt::ProjectionActive => (
                c"SELECT count(*) FROM es.projection_config WHERE name = $1 AND NOT paused",
                &[TEXTOID],
            ),
            Stmt::ProjectionTouch => (
                c"UPDATE es.projection_config SET last_run_at = pg_catalog.clock_timestamp()
                   WHERE name = $1",
                &[TEXTOID],
            ),
            Stmt::ProjectionCheckpoint => (
                c"SELECT p.checkpoint FROM es.subscription_partitions p
                    JOIN es.projection_config j ON j.name = p.subscription
                   WHERE p.subscription = $1 AND p.partition = 0",
                &[TEXTOID],
            ),
            Stmt::RegistryTables => (
                c"SELECT to_regclass('es.aggregate_types')::oid, to_regclass('es.stream_type_rules')::oid,
                         to_regclass('es.upcasters')::oid, to_regclass('es.personal_data')::oid",
                &[],
            ),
            Stmt::RegistryPersonalData => (
                c"SELECT event_type, pg_catalog.array_to_string(paths, E'\\n') FROM es.personal_data",
                &[],
            ),
            Stmt::PersonalDataUpsert => (
                c"INSERT INTO es.personal_data (event_type, paths) VALUES ($1, $2)
                  ON CONFLICT (event_type) DO UPDATE
                  SET paths = excluded.paths, defined_by = session_user,
                      defined_at = transaction_timestamp()
                  RETURNING (SELECT p.paths FROM es.personal_data p WHERE p.event_type = $1)",
                &[TEXTOID, TEXTARRAYOID],
            ),
            Stmt::KeyOfSubject => (
                c"SELECT key_id, key FROM es.subject_keys WHERE subject = $1",
                &[TEXTOID],
            ),
            Stmt::KeyInsert => (
                c"INSERT INTO es.subject_keys (subject, key_id, key)
                  VALUES ($1, nextval('es.subject_key_seq'), $2)
                  ON CONFLICT (subject) DO NOTHING RETURNING key_id, key",
                &[TEXTOID, BYTEAOID],
            ),
            Stmt::KeyById => (
                c"SELECT key FROM es.subject_keys WHERE key_id = $1",
                &[INT8OID],
            ),
            Stmt::KeyForget => (
                c"DELETE FROM es.subject_keys WHERE subject = $1 RETURNING key_id, key IS NULL",
                &[TEXTOID],
            ),
            Stmt::KeyProviderCall => (
                c"SELECT es.key_provider_call($1, $2, $3)",
                &[TEXTOID, INT8OID, BYTEAOID],
            ),
            Stmt::KeyProviderGet => (c"SELECT es.key_provider_get($1)", &[INT8OID]),
            Stmt::AuditInsert => (
                c"INSERT INTO es.data_audit (action, target, detail) VALUES ($1, $2, $3)",
                &[TEXTOID, TEXTOID, JSONBOID],
            ),
            Stmt::StreamStateInfo => (
                c"SELECT version, stream_type, state, state_revision FROM es.streams WHERE stream_id = $1",
                &[UUIDOID],
            ),
            Stmt::ReviseAll => (
                c"UPDATE es.aggregate_types
                     SET revision = nextval('es.aggregate_revision_seq'),
                         rebuild_started_at = NULL, rebuild_finished_at = NULL
                   WHERE NOT native",
                &[],
            ),
            Stmt::StreamLifecycle => (
                c"SELECT deleted, deleted_at::text, truncated_before FROM es.streams WHERE stream_id = $1",
                &[UUIDOID],
            ),
            Stmt::LockStreamLifecycle => (
                c"SELECT version, stream_type, deleted, deleted_at::text, truncated_before
                    FROM es.streams WHERE stream_id = $1 FOR UPDATE",
                &[UUIDOID],
            ),
            Stmt::MarkDeleted => (
                c"UPDATE es.streams
                     SET deleted = $2, deleted_at = transaction_timestamp(),
                         state = CASE WHEN $2 = 'hard' THEN NULL ELSE state END,
                         state_revision = CASE WHEN $2 = 'hard' THEN NULL ELSE state_revision END
                   WHERE stream_id = $1",
                &[UUIDOID, TEXTOID],
            ),
            Stmt::MarkUndeleted => (
                c"UPDATE es.streams SET deleted = NULL, deleted_at = NULL WHERE stream_id = $1",
                &[UUIDOID],
            ),
            Stmt::SetTruncated => (
                c"UPDATE es.streams SET truncated_before = $2 WHERE stream_id = $1",
                &[UUIDOID, INT8OID],
            ),
            Stmt::PurgeStream => (
                c"SELECT removed, first_position, last_position FROM es.purge_stream($1)",
                &[UUIDOID],
            ),
            Stmt::DeleteSnapshotsBelow => (
                c"DELETE FROM es.snapshots WHERE stream_id = $1 AND version < $2",
                &[UUIDOID, INT8OID],
            ),
            Stmt::SnapshotAt => (
                c"SELECT state, revision FROM es.snapshots WHERE stream_id = $1 AND version = $2",
                &[UUIDOID, INT8OID],
            ),
            Stmt::NewestSnapshotOf => (
                c"SELECT max(version) FROM es.snapshots
                  WHERE stream_id = $1 AND version <= $2 AND revision IS NOT DISTINCT FROM $3",
                &[UUIDOID, INT8OID, INT8OID],
            ),
            Stmt::EventPosition => (
                c"SELECT global_position FROM es.events WHERE stream_id = $1 AND version = $2",
                &[UUIDOID, INT8OID],
            ),
            Stmt::CreatedBy => (
                c"SELECT created_at <= $2 FROM es.streams WHERE stream_id = $1",
                &[UUIDOID, TIMESTAMPTZOID],
            ),
            Stmt::SetStateRevision => (
                c"UPDATE es.streams SET state = $2, state_revision = $3 WHERE stream_id = $1",
                &[UUIDOID, JSONBOID, INT8OID],
            ),
            // The registry keeps functions by name (regprocedure's text form), because pg_upgrade
            // keeps names but not function OIDs (and refuses reg* columns other than regclass,
            // regrole, regtype). Written and resolved under the pinned search path (pg_catalog
            // only), every name outside pg_catalog is schema-qualified both ways. A name that no
            // longer resolves loads as OID 0, which UserFn::open reports as missing (ES301).
            Stmt::RegistryTypes => (
                c"SELECT stream_type, coalesce(pg_catalog.to_regprocedure(evolve)::oid, 0),
                         CASE WHEN \"check\" IS NOT NULL
                              THEN coalesce(pg_catalog.to_regprocedure(\"check\")::oid, 0) END,
                         initial_state, snapshot_every, native, revision, definer::oid
                    FROM es.aggregate_types",
                &[],
            ),
            Stmt::RegistryRules => (
                c"SELECT first_event_type, stream_type FROM es.stream_type_rules",
                &[],
            ),
            Stmt::RegistryUpcasters => (
                c"SELECT event_type, from_version, coalesce(pg_catalog.to_regprocedure(upcast)::oid, 0),
                         definer::oid
                    FROM es.upcasters",
                &[],
            ),
            Stmt::LoadSnapshotRevision => (
                c"SELECT version, state, taken_at FROM es.snapshots
                  WHERE stream_id = $1 AND version <= coalesce($2, 9223372036854775807)
                    AND revision = $3
                  ORDER BY version DESC LIMIT 1",
                &[UUIDOID, INT8OID, INT8OID],
            ),
            Stmt::SaveSnapshotRevision => (
                c"INSERT INTO es.snapshots (stream_id, version, state, revision) VALUES ($1, $2, $3, $4)
                  ON CONFLICT (stream_id, version) DO UPDATE
                  SET state = excluded.state, taken_at = transaction_timestamp(),
                      revision = excluded.revision",
                &[UUIDOID, INT8OID, JSONBOID, INT8OID],
            ),
            Stmt::FunctionInfo => (
                c"SELECT array_to_string(p.proargtypes::oid[], ','), p.prorettype::regtype::text, p.proretset,
                         p.prokind::text, p.oid::regprocedure::text
                    FROM pg_catalog.pg_proc p WHERE p.oid = $1",
                &[OIDOID],
            ),
            Stmt::AggregateInsert => (
                c"INSERT INTO es.aggregate_types (stream_type, evolve, \"check\", initial_state,
                                                 snapshot_every, revision, definer)
                  VALUES ($1, $2::regprocedure::text, $3::regprocedure::text, $4, $5,
                          nextval('es.aggregate_revision_seq'), $6)
                  ON CONFLICT (stream_type) DO NOTHING RETURNING revision",
                &[TEXTOID, OIDOID, OIDOID, JSONBOID, INT4OID, OIDOID],
            ),
            Stmt::AggregateUpdate => (
                c"UPDATE es.aggregate_types
                     SET evolve = $2::regprocedure::text, \"check\" = $3::regprocedure::text,
                         initial_state = $4, snapshot_every = $5,
                         revision = nextval('es.aggregate_revision_seq'), definer = $6,
                         defined_at = transaction_timestamp(),
                         rebuild_started_at = NULL, rebuild_finished_at = NULL
                   WHERE stream_type = $1 AND NOT native RETURNING revision",
                &[TEXTOID, OIDOID, OIDOID, JSONBOID, INT4OID, OIDOID],
            ),
            Stmt::AggregateDelete => (
                c"DELETE FROM es.aggregate_types WHERE stream_type = $1 AND NOT native
                  RETURNING revision",
                &[TEXTOID],
            ),
            Stmt::StreamsOfType => (
                c"SELECT count(*) FROM es.streams WHERE stream_type = $1",
                &[TEXTOID],
            ),
            Stmt::DetachStreams => (
                c"UPDATE es.streams SET state = NULL, state_revision = NULL
                  WHERE stream_type = $1 AND state IS NOT NULL",
                &[TEXTOID],
            ),
            Stmt::UpcasterInsert => (
                c"INSERT INTO es.upcasters (event_type, from_version, upcast, definer)
                  VALUES ($1, $2, $3::regprocedure::text, $4) ON CONFLICT DO NOTHING
                  RETURNING from_version",
                &[TEXTOID, INT4OID, OIDOID, OIDOID],
            ),
            Stmt::UpcasterDelete => (
                c"DELETE FROM es.upcasters WHERE event_type = $1 AND from_version = $2
                  RETURNING from_version",
                &[TEXTOID, INT4OID],
            ),
            Stmt::StaleStreams => (
                c"SELECT stream_id, version FROM es.streams
                  WHERE stream_type = $1 AND state_revision IS DISTINCT FROM $2
                    AND deleted IS DISTINCT FROM 'hard'
                  ORDER BY stream_id LIMIT $3 FOR UPDATE SKIP LOCKED",
                &[TEXTOID, INT8OID, INT8OID],
            ),
            Stmt::DeleteStaleSnapshots => (
                c"DELETE FROM es.snapshots WHERE stream_id = $1 AND revision IS DISTINCT FROM $2",
                &[UUIDOID, INT8OID],
            ),
            Stmt::RebuildMark => (
                c"UPDATE es.aggregate_types
                     SET rebuild_started_at = CASE WHEN $2 THEN clock_timestamp() ELSE rebuild_started_at END,
                         rebuild_finished_at = CASE WHEN $2 THEN NULL ELSE clock_timestamp() END
                   WHERE stream_type = $1",
                &[TEXTOID, BOOLOID],
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
    // SAFETY: SPI is connected (plans are made inside a connection); the statement text and its
    // argument types are static and agree (Stmt::def); SPI_keepplan moves the plan to a
    // context that lives as long as the backend, so the pointer kept here stays valid.
    unsafe {
        let def = stmt.def();
        let mut types: Vec<Oid> = def.args.iter().map(|t| t.value()).collect();
        // `event_id = ANY ($1)`: planned for an array of unknown length, the generic plan looks
        // dearer than a custom one for the one-id array an append sends, so the plan cache
        // would plan every call again (measured: ~90k instructions per append with an id). The
        // index probe is the right plan for every length an append can send.
        let options = match stmt {
            Stmt::FindEventIds => pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
            _ => 0,
        };
        let p = pg_sys::SPI_prepare_cursor(
            def.sql.as_ptr(),
            types.len() as i32,
            types.as_mut_ptr(),
            options,
        );
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
/// path and finishes SPI. When it is dropped because an ERROR unwinds through it, or after an
/// ERROR was caught to be reported as the store's own ([`leave_to_abort`]), it does neither:
/// the (sub)transaction's abort that follows every ERROR cleans up both (`AtEOSubXact_SPI`,
/// `AtEOSubXact_Namespace`), and calling into PostgreSQL in the middle of an error could raise
/// a second one while the first unwinds.
pub struct Connection(std::sync::atomic::AtomicI32);

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
        DEPTH.with(|d| d.set(d.get() + 1));
        // SAFETY: SPI_connect pushes a new SPI level (popped by Drop or by the abort).
        unsafe { pg_sys::SPI_connect() };
        Connection(std::sync::atomic::AtomicI32::new(
            super::compat::pin_search_path(),
        ))
    }

    /// Runs `f` with the caller's own search path instead of the pinned one: a projection's
    /// handler is the user's code and resolves its names as its author wrote them.
    pub fn unpinned<R>(&self, f: impl FnOnce() -> R) -> R {
        // Undoes the pin `connect` made (nothing pinned above it within this connection's use)
        // and pins again after `f`. An ERROR inside `f` unwinds to the abort, which resets the
        // whole override stack (or the GUC nest levels, on PostgreSQL 18).
        super::compat::unpin_search_path(self.0.load(Ordering::Relaxed));
        let r = f();
        self.0
            .store(super::compat::pin_search_path(), Ordering::Relaxed);
        r
    }

    fn run(&self, stmt: Stmt, args: &[Arg], read_only: bool, limit: i64) -> Rows<'_> {
        let (mut values, nulls) = split(args);
        let p = plan(stmt);
        // SAFETY: `p` is a kept plan of `stmt` whose argument count and types are those of
        // `args` (Stmt::def); the arrays have one entry per argument.
        let rc = unsafe {
            pg_sys::SPI_execute_plan(p, values.as_mut_ptr(), nulls.as_ptr(), read_only, limit)
        };
        Rows::from_spi(stmt, rc)
    }

    /// Runs a statement that may write, in a fresh snapshot (SPI takes one for a statement
    /// that is not read-only): every write, and every read that must see the latest commits
    /// (a VOLATILE function holding the stream row).
    pub fn execute(&self, stmt: Stmt, args: &[Arg]) -> Rows<'_> {
        self.run(stmt, args, false, 0)
    }

    /// Runs a query in the caller's snapshot (for STABLE functions).
    pub fn query(&self, stmt: Stmt, args: &[Arg]) -> Rows<'_> {
        self.run(stmt, args, true, 0)
    }

    /// Runs a query in the snapshot `reading` asks for.
    pub fn query_as(&self, reading: Reading, stmt: Stmt, args: &[Arg]) -> Rows<'_> {
        match reading {
            Reading::Statement => self.query(stmt, args),
            Reading::Latest => self.execute(stmt, args),
        }
    }

    /// Runs a query in `snapshot` (the gap-safe read of `es.read_all` takes its own).
    pub fn query_in(&self, stmt: Stmt, args: &[Arg], snapshot: &RegisteredSnapshot) -> Rows<'_> {
        let (mut values, nulls) = split(args);
        let p = plan(stmt);
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
        if std::thread::panicking() || left {
            return;
        }
        // Undoes what `connect` did, in reverse order; nothing pinned a path or pushed an SPI
        // level above them that is still there (both are balanced within one call of the
        // extension).
        super::compat::unpin_search_path(self.0.load(Ordering::Relaxed));
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
    fn from_spi(stmt: Stmt, rc: i32) -> Rows<'s> {
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

    /// Column `col` of row `row` as jsonb, valid while the rows are.
    ///
    /// # Safety
    /// Column `col` of the statement must be a jsonb column.
    pub unsafe fn jsonb(&self, row: usize, col: i32) -> Option<Jsonb<'_>> {
        // SAFETY: the caller's contract for the type; the datum lives in the tuple table,
        // which the borrow of `self` keeps.
        self.datum(row, col)
            .map(|d| unsafe { Jsonb::from_datum(d) })
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
        // SAFETY: callers read text columns only (Stmt::def); text_to_cstring makes a copy,
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
        // SAFETY: callers read uuid columns only (Stmt::def); a uuid datum points to its 16
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

/// OID of `es.global_position_seq`, looked up per call (two syscache probes) so a dropped and
/// recreated extension is never served a stale OID.
pub fn position_sequence() -> Oid {
    // SAFETY: syscache lookups by name (an ERROR when the schema is missing).
    unsafe {
        let ns = pg_sys::get_namespace_oid(c"es".as_ptr(), false);
        let seq = pg_sys::get_relname_relid(c"global_position_seq".as_ptr(), ns);
        if seq == pg_sys::InvalidOid {
            pgrx::error!("event_store: es.global_position_seq is missing; reinstall the extension");
        }
        seq
    }
}
