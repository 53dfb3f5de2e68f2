-- event_store — hand-written schema of the extension, as a fresh install of the current version
-- creates it: the tables, the sequence, the append-only trigger, their privileges and dumps, with
-- a COMMENT ON each. The SQL functions are declared with their code, once each
-- (`#[sql_function]` in src/api/), and the aggregate over them in sql/aggregates.sql.
-- `cargo pgrx install` generates the version's install script from these, so they always
-- describe the current version; every change made after a release also goes into that
-- release's upgrade script (sql/event_store--A--B.sql), and tests/client/tests/upgrade.rs checks
-- that an updated install equals a fresh one. Released install scripts (sql/event_store--A.sql)
-- are never edited.

\echo Use "CREATE EXTENSION event_store" to load this file. \quit

-- Storage -----------------------------------------------------------------------------------------
-- The tables carry no CHECK constraints: only the extension's functions can write them, and they
-- validate every value first (versions from 1, event_version >= 1, snapshot versions in range).
-- PostgreSQL re-parses CHECK expressions for every statement, a measurable cost per append.

CREATE SEQUENCE es.global_position_seq AS bigint NO CYCLE;
COMMENT ON SEQUENCE es.global_position_seq IS
  'Source of es.events.global_position. Drawn only by es.append_events, which also registers the positions in flight so es.read_all can stay gap-safe.';

CREATE TABLE es.streams (
    stream_id   uuid        NOT NULL,
    stream_type text,
    version     bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT transaction_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT transaction_timestamp(),
    state       jsonb,
    state_revision bigint,
    deleted     text,
    deleted_at  timestamptz,
    truncated_before bigint,
    CONSTRAINT streams_pkey PRIMARY KEY (stream_id)
) WITH (fillfactor = 30);
COMMENT ON TABLE es.streams IS
  'One row per stream: its current version. The row is the lock that serializes appends to one stream; appends to different streams never touch the same row. Pages keep 70% free (fillfactor 30): every append rewrites its stream''s row as a HOT update on the same page, and a page shared by fewer streams is pruned less often and contended less by concurrent appends (under 8 appending clients 6.9% more appends per second than fillfactor 90, at 3 times the table''s size).';
COMMENT ON COLUMN es.streams.stream_id IS 'The aggregate id.';
COMMENT ON COLUMN es.streams.stream_type IS 'The stream''s type, set by its first append (its stream_type argument, else es.stream_type_rules for its first event: Opened makes an account) and never changed; NULL for a generic stream. A type declared in es.aggregate_types holds the stream to its rules.';
COMMENT ON COLUMN es.streams.version IS 'Version of the newest event of the stream (0 before the first).';
COMMENT ON COLUMN es.streams.created_at IS 'Transaction time of the first append.';
COMMENT ON COLUMN es.streams.updated_at IS 'Transaction time of the newest append.';
COMMENT ON COLUMN es.streams.state IS
  'The state at version of a stream of a declared aggregate type (the account included), written with every append in the same row update, so a command or es.state reads it instead of replaying. An account''s is ignored unless its "version" equals the row''s; another type''s unless state_revision is the type''s current revision. NULL for generic streams.';
COMMENT ON COLUMN es.streams.state_revision IS
  'The revision of the aggregate type (es.aggregate_types.revision) whose functions computed state; NULL for accounts and generic streams. A state of an older revision (after es.alter_aggregate) is recomputed from the log until es.rebuild_states rewrites it.';
COMMENT ON COLUMN es.streams.deleted IS
  'NULL for a live stream; soft: deleted by es.delete_stream (reads as empty, appends refused with ES007, until es.undelete_stream); hard: a tombstone (its events before the $stream_deleted marker are removed; the id can never be used again).';
COMMENT ON COLUMN es.streams.deleted_at IS 'Transaction time of the deletion; NULL for a live stream.';
COMMENT ON COLUMN es.streams.truncated_before IS
  'Set by es.truncate_stream: events with a lower version were removed (a snapshot holds the state at truncated_before - 1); reads that need them raise ES008. NULL: never truncated.';

CREATE TABLE es.events (
    global_position bigint      NOT NULL,
    stream_id       uuid        NOT NULL,
    version         bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    event_version   integer     NOT NULL DEFAULT 1,
    data            jsonb       NOT NULL,
    metadata        jsonb,
    occurred_at     timestamptz NOT NULL DEFAULT transaction_timestamp(),
    recorded_at     timestamptz NOT NULL DEFAULT transaction_timestamp(),
    CONSTRAINT events_pkey PRIMARY KEY (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_global_position_key UNIQUE (global_position)
);
COMMENT ON TABLE es.events IS
  'The append-only event log: one row per event. Written only by es.append_events; UPDATE, DELETE and TRUNCATE are refused, even for the owner.';
COMMENT ON COLUMN es.events.global_position IS 'Unique; increases in insert order across all streams. es.read_all pages by it.';
COMMENT ON COLUMN es.events.stream_id IS 'The aggregate id.';
COMMENT ON COLUMN es.events.version IS '1-based, gapless within a stream (the seed''s sequence_number).';
COMMENT ON COLUMN es.events.event_id IS 'Unique across the store; given by the client or generated (UUIDv7).';
COMMENT ON COLUMN es.events.event_type IS 'The event object''s "type".';
COMMENT ON COLUMN es.events.event_version IS 'Schema version of the payload (the object''s "event_version", default 1).';
COMMENT ON COLUMN es.events.data IS 'The event object exactly as appended.';
COMMENT ON COLUMN es.events.metadata IS 'The object''s "metadata" object, if any (correlation/causation ids, user, traceparent...).';
COMMENT ON COLUMN es.events.occurred_at IS 'The object''s "occurred_at", else the transaction time.';
COMMENT ON COLUMN es.events.recorded_at IS 'Transaction time of the append, always set by the store.';

CREATE TABLE es.snapshots (
    stream_id uuid        NOT NULL,
    version   bigint      NOT NULL,
    state     jsonb       NOT NULL,
    taken_at  timestamptz NOT NULL DEFAULT transaction_timestamp(),
    revision  bigint,
    CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id, version)
);
COMMENT ON TABLE es.snapshots IS
  'Saved states of streams; several per stream, so time travel can start from an old one.';
COMMENT ON COLUMN es.snapshots.stream_id IS 'The aggregate id.';
COMMENT ON COLUMN es.snapshots.version IS 'Version of the stream the state reflects (1..stream version when saved).';
COMMENT ON COLUMN es.snapshots.state IS 'The state after applying events 1..version.';
COMMENT ON COLUMN es.snapshots.taken_at IS 'Transaction time of the save.';
COMMENT ON COLUMN es.snapshots.revision IS
  'For a stream of a declared aggregate type other than the account: the type''s revision whose functions computed the state; a snapshot of another revision is not used (es.rebuild_states replaces it). NULL for accounts and generic streams.';

-- Append-only enforcement -------------------------------------------------------------------------

CREATE FUNCTION es.refuse_history_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'es.events is append-only: % is not allowed', lower(TG_OP)
        USING ERRCODE = 'ES006',
              DETAIL = 'Events are facts: they are never changed or removed.',
              HINT = 'Append a compensating event with es.append_events instead.';
END
$$;
COMMENT ON FUNCTION es.refuse_history_change() IS
  'Trigger function that refuses UPDATE, DELETE and TRUNCATE of es.events (SQLSTATE ES006).';

CREATE TRIGGER events_refuse_update_delete BEFORE UPDATE OR DELETE ON es.events
    FOR EACH ROW EXECUTE FUNCTION es.refuse_history_change();
COMMENT ON TRIGGER events_refuse_update_delete ON es.events IS 'Keeps history append-only, even for the table owner.';
CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON es.events
    FOR EACH STATEMENT EXECUTE FUNCTION es.refuse_history_change();
COMMENT ON TRIGGER events_refuse_truncate ON es.events IS 'Keeps history append-only, even for the table owner.';

-- Subscriptions, projections, replicas (0.2.0) -----------------------------------------------------
-- (and the schema's own comment, new in 0.2.0)
COMMENT ON SCHEMA es IS
  'event_store: an event store inside PostgreSQL. Append with es.append_events (optimistic concurrency), read with es.load_events and the gap-safe es.read_all, snapshots, the bank-account example (es.open_account, es.deposit, es.account_state, es.account_history), aggregates for any domain (es.define_aggregate, es.state), subscriptions (es.poll, es.ack, es.wait), projections and the life of the data (es.delete_stream, es.forget, es.set_retention). Tables are written only by these functions. Documented in the docs folder of the distribution: sql-reference.md (every function), reference.md section 6 (every error code), configuration.md (every setting).';

-- Written only by the extension's functions and its background worker. No foreign keys between
-- them: es.drop_subscription removes a subscription's rows itself, and pg_dump restores the data
-- of configuration tables in an order foreign keys would not always accept.

CREATE TABLE es.subscription_config (
    name         text        NOT NULL,
    start_after  bigint      NOT NULL,
    event_types  text[],
    stream_type  text,
    partitions   integer     NOT NULL,
    max_attempts integer     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT transaction_timestamp(),
    CONSTRAINT subscription_config_pkey PRIMARY KEY (name)
);
COMMENT ON TABLE es.subscription_config IS
  'One row per durable subscription (es.create_subscription): what it reads. Its checkpoints are in es.subscription_partitions; es.subscriptions shows both.';
COMMENT ON COLUMN es.subscription_config.name IS 'Unique name of the subscription (a projection''s subscription has the projection''s name).';
COMMENT ON COLUMN es.subscription_config.start_after IS 'The position the checkpoints started at (es.reset_projection goes back to it).';
COMMENT ON COLUMN es.subscription_config.event_types IS 'Only events of these types; NULL = all.';
COMMENT ON COLUMN es.subscription_config.stream_type IS 'Only events of streams of this type (es.streams.stream_type); NULL = all.';
COMMENT ON COLUMN es.subscription_config.partitions IS 'Number of partitions: an event belongs to partition es.stream_hash(stream_id) % partitions.';
COMMENT ON COLUMN es.subscription_config.max_attempts IS 'Failed attempts (es.nack) after which an event is parked.';
COMMENT ON COLUMN es.subscription_config.created_at IS 'Transaction time of es.create_subscription.';

CREATE TABLE es.subscription_partitions (
    subscription  text        NOT NULL,
    partition     integer     NOT NULL,
    checkpoint    bigint      NOT NULL,
    owner         text,
    lease_until   timestamptz,
    head_position bigint,
    head_attempts integer     NOT NULL DEFAULT 0,
    head_error    text,
    updated_at    timestamptz NOT NULL DEFAULT transaction_timestamp(),
    CONSTRAINT subscription_partitions_pkey PRIMARY KEY (subscription, partition)
) WITH (fillfactor = 50);
COMMENT ON TABLE es.subscription_partitions IS
  'One row per partition of a subscription: its checkpoint, its lease and the failures of its head event. Updated by es.ack, es.nack, es.claim in the caller''s transaction. Pages keep half their space free so the frequent checkpoint updates stay HOT.';
COMMENT ON COLUMN es.subscription_partitions.subscription IS 'The subscription (es.subscription_config.name).';
COMMENT ON COLUMN es.subscription_partitions.partition IS '0 .. partitions - 1.';
COMMENT ON COLUMN es.subscription_partitions.checkpoint IS 'Every event of the partition at or below this global position is handled (acked or parked).';
COMMENT ON COLUMN es.subscription_partitions.owner IS 'The consumer that claimed the partition last (es.claim); NULL = free.';
COMMENT ON COLUMN es.subscription_partitions.lease_until IS 'The owner''s lease runs until then; after it, any consumer may claim the partition.';
COMMENT ON COLUMN es.subscription_partitions.head_position IS 'The event that failed last (es.nack), while it is retried.';
COMMENT ON COLUMN es.subscription_partitions.head_attempts IS 'Failed attempts of head_position so far.';
COMMENT ON COLUMN es.subscription_partitions.head_error IS 'The error of the last failed attempt.';
COMMENT ON COLUMN es.subscription_partitions.updated_at IS 'Transaction time of the last change.';

CREATE TABLE es.subscription_consumers (
    subscription text        NOT NULL,
    consumer     text        NOT NULL,
    seen_until   timestamptz NOT NULL,
    CONSTRAINT subscription_consumers_pkey PRIMARY KEY (subscription, consumer)
);
COMMENT ON TABLE es.subscription_consumers IS
  'The consumers competing for a subscription''s partitions (es.claim): each claim counts its consumer as live until its lease would end, and every live consumer''s fair share is partitions / live consumers, rounded up.';
COMMENT ON COLUMN es.subscription_consumers.subscription IS 'The subscription.';
COMMENT ON COLUMN es.subscription_consumers.consumer IS 'The consumer''s name, as given to es.claim.';
COMMENT ON COLUMN es.subscription_consumers.seen_until IS 'The end of the lease of its last claim: after it, it no longer counts.';

CREATE TABLE es.parked_events (
    subscription    text        NOT NULL,
    partition       integer     NOT NULL,
    global_position bigint      NOT NULL,
    stream_id       uuid        NOT NULL,
    attempts        integer     NOT NULL,
    error           text,
    replay          boolean     NOT NULL DEFAULT false,
    parked_at       timestamptz NOT NULL DEFAULT transaction_timestamp(),
    CONSTRAINT parked_events_pkey PRIMARY KEY (subscription, global_position)
);
CREATE INDEX parked_events_stream_idx ON es.parked_events (subscription, stream_id);
COMMENT ON TABLE es.parked_events IS
  'Events a subscription gave up on after max_attempts (es.nack), and the later events of the same stream parked behind them so per-stream order holds. es.replay_parked puts them back in front of the consumer.';
COMMENT ON COLUMN es.parked_events.subscription IS 'The subscription.';
COMMENT ON COLUMN es.parked_events.partition IS 'The partition the event belongs to.';
COMMENT ON COLUMN es.parked_events.global_position IS 'The parked event (es.events.global_position).';
COMMENT ON COLUMN es.parked_events.stream_id IS 'Its stream: later events of this stream wait behind it.';
COMMENT ON COLUMN es.parked_events.attempts IS 'Failed attempts (0 for an event parked behind another).';
COMMENT ON COLUMN es.parked_events.error IS 'The last error.';
COMMENT ON COLUMN es.parked_events.replay IS 'Put back by es.replay_parked: es.poll returns it before new events.';
COMMENT ON COLUMN es.parked_events.parked_at IS 'Transaction time of the parking.';
COMMENT ON INDEX es.parked_events_stream_idx IS 'Finds the parked events of a stream (events behind them are held back).';

CREATE TABLE es.projection_config (
    name        text        NOT NULL,
    handler     text        NOT NULL,
    batch       integer     NOT NULL,
    paused      boolean     NOT NULL DEFAULT false,
    run_as      regrole     NOT NULL,
    last_run_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT transaction_timestamp(),
    CONSTRAINT projection_config_pkey PRIMARY KEY (name)
);
COMMENT ON TABLE es.projection_config IS
  'One row per projection (es.create_projection): the handler the background worker calls for each event of the subscription of the same name, in the same transaction as the ack.';
COMMENT ON COLUMN es.projection_config.name IS 'The projection, and its subscription.';
COMMENT ON COLUMN es.projection_config.handler IS 'The handler function(es.events), quoted and schema-qualified ("schema"."function").';
COMMENT ON COLUMN es.projection_config.batch IS 'Events per transaction of the worker.';
COMMENT ON COLUMN es.projection_config.paused IS 'es.pause_projection / es.resume_projection.';
COMMENT ON COLUMN es.projection_config.run_as IS 'The role that called es.create_projection (its OID: it follows a rename, and pg_dump writes it by name): the worker runs the handler as this role, inside a security-restricted operation. A projection whose role was dropped fails each event with an error and parks it.';
COMMENT ON COLUMN es.projection_config.last_run_at IS 'When the worker last handled a batch.';
COMMENT ON COLUMN es.projection_config.created_at IS 'Transaction time of es.create_projection.';

CREATE TABLE es.watermark (
    id         smallint    NOT NULL,
    position   bigint      NOT NULL,
    written_at timestamptz NOT NULL,
    CONSTRAINT watermark_pkey PRIMARY KEY (id)
);
COMMENT ON TABLE es.watermark IS
  'One row (id 1), written by the primary''s background worker every es.watermark_interval: every event at or below position has committed or never will. Replicas (a hot standby, a logical subscriber of es.events) cannot see the primary''s positions in flight; their readers cap es.read_all, es.poll and es.wait at this row, which reaches them through WAL. Empty until the first event; never written where es.events is itself replicated in.';
COMMENT ON COLUMN es.watermark.id IS 'Always 1.';
COMMENT ON COLUMN es.watermark.position IS 'The highest global position below which nothing is in flight on the primary.';
COMMENT ON COLUMN es.watermark.written_at IS 'When the primary wrote it (the lag of a replica''s readers is at most now() - written_at plus the interval).';

CREATE TABLE es.account_balances (
    account_id    uuid        NOT NULL,
    holder_name   text        NOT NULL,
    balance_cents bigint      NOT NULL,
    status        text        NOT NULL,
    version       bigint      NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT account_balances_pkey PRIMARY KEY (account_id)
);
COMMENT ON TABLE es.account_balances IS
  'The seed''s balance projection: one row per account, kept by the projection account_balances (es.enable_account_projections); equals es.account_state once caught up.';
COMMENT ON COLUMN es.account_balances.account_id IS 'The account (its stream id).';
COMMENT ON COLUMN es.account_balances.holder_name IS 'The holder.';
COMMENT ON COLUMN es.account_balances.balance_cents IS 'Balance after the newest projected event.';
COMMENT ON COLUMN es.account_balances.status IS 'Active, Frozen or Closed.';
COMMENT ON COLUMN es.account_balances.version IS 'The newest projected version of the account.';
COMMENT ON COLUMN es.account_balances.updated_at IS 'recorded_at of that event.';

CREATE TABLE es.account_transactions (
    account_id    uuid        NOT NULL,
    version       bigint      NOT NULL,
    event_type    text        NOT NULL,
    amount_cents  bigint,
    balance_cents bigint      NOT NULL,
    description   text,
    occurred_at   timestamptz NOT NULL,
    CONSTRAINT account_transactions_pkey PRIMARY KEY (account_id, version)
);
COMMENT ON TABLE es.account_transactions IS
  'The seed''s transaction-history projection: one row per account event, kept by the projection account_transactions (es.enable_account_projections); equals es.account_history once caught up.';
COMMENT ON COLUMN es.account_transactions.account_id IS 'The account.';
COMMENT ON COLUMN es.account_transactions.version IS 'The event''s version.';
COMMENT ON COLUMN es.account_transactions.event_type IS 'Opened, Deposited, Withdrawn, Frozen or Closed.';
COMMENT ON COLUMN es.account_transactions.amount_cents IS 'Signed amount: opening balance, +deposit, -withdrawal; NULL for Frozen and Closed.';
COMMENT ON COLUMN es.account_transactions.balance_cents IS 'Balance after the event.';
COMMENT ON COLUMN es.account_transactions.description IS 'The description, the reason, or the holder for Opened.';
COMMENT ON COLUMN es.account_transactions.occurred_at IS 'When the event happened.';

-- Aggregates for any domain (0.2.0) ----------------------------------------------------------------

CREATE SEQUENCE es.aggregate_revision_seq AS bigint NO CYCLE;
COMMENT ON SEQUENCE es.aggregate_revision_seq IS
  'Source of es.aggregate_types.revision: every es.define_aggregate and es.alter_aggregate takes a new one, never reused, so a kept state or snapshot names the definition that computed it.';

CREATE TABLE es.aggregate_types (
    stream_type         text         NOT NULL,
    evolve              text         NOT NULL,
    "check"             text,
    initial_state       jsonb        NOT NULL,
    snapshot_every      integer,
    native              boolean      NOT NULL DEFAULT false,
    revision            bigint       NOT NULL,
    definer             regrole      NOT NULL,
    defined_at          timestamptz  NOT NULL DEFAULT transaction_timestamp(),
    rebuild_started_at  timestamptz,
    rebuild_finished_at timestamptz,
    CONSTRAINT aggregate_types_pkey PRIMARY KEY (stream_type)
);
COMMENT ON TABLE es.aggregate_types IS
  'The declared aggregate types (es.define_aggregate): for a stream of one of these types every append is checked event by event with check and folded with evolve, the state after it kept in es.streams.state, a snapshot taken every snapshot_every versions. The account is the built-in row (native). Written only by the es.*_aggregate functions; read through the view es.aggregates.';
COMMENT ON COLUMN es.aggregate_types.stream_type IS 'The type''s name, as es.streams.stream_type holds it.';
COMMENT ON COLUMN es.aggregate_types.evolve IS 'evolve(state jsonb, event jsonb) RETURNS jsonb: the fold; it never refuses a stored event and returns a JSON object. Kept by name (schema-qualified, with its argument types, as regprocedure prints it) and looked up when the registry is read, because pg_upgrade keeps names but not function OIDs: a dropped or renamed function fails the type''s appends and reads (ES301) until es.alter_aggregate names it again.';
COMMENT ON COLUMN es.aggregate_types."check" IS 'check(state jsonb, event jsonb) RETURNS void: the rules; it raises to refuse an appended event (its error reaches the caller unchanged). NULL: no rules beyond evolve. Kept by name, like evolve: a named check that no longer exists fails every append (ES301), never means no rules.';
COMMENT ON COLUMN es.aggregate_types.initial_state IS 'The state before the first event.';
COMMENT ON COLUMN es.aggregate_types.snapshot_every IS 'A snapshot is written when an append reaches or crosses a multiple of it (0: never); NULL for the account, which follows es.snapshot_interval.';
COMMENT ON COLUMN es.aggregate_types.native IS 'The built-in account, whose evolve and check are the store''s own code.';
COMMENT ON COLUMN es.aggregate_types.revision IS 'Changes with every es.alter_aggregate (from es.aggregate_revision_seq): kept states and snapshots of another revision are not used.';
COMMENT ON COLUMN es.aggregate_types.definer IS 'The role that declared (or last altered) the type: evolve and check run as this role, inside a security-restricted operation.';
COMMENT ON COLUMN es.aggregate_types.defined_at IS 'Transaction time of the declaration or the last es.alter_aggregate.';
COMMENT ON COLUMN es.aggregate_types.rebuild_started_at IS 'When the last CALL es.rebuild_states of this type started.';
COMMENT ON COLUMN es.aggregate_types.rebuild_finished_at IS 'When it finished (NULL while it runs, or if it was interrupted).';

CREATE TABLE es.stream_type_rules (
    first_event_type text NOT NULL,
    stream_type      text NOT NULL,
    CONSTRAINT stream_type_rules_pkey PRIMARY KEY (first_event_type)
);
COMMENT ON TABLE es.stream_type_rules IS
  'The type a new stream gets from its first event when its first append names none. One row at install: Opened -> account (the seed''s client appends accounts without naming a type). A DBA may change or delete it (then no stream becomes an account by accident); a stream whose first event has no row is generic.';
COMMENT ON COLUMN es.stream_type_rules.first_event_type IS 'The "type" of a new stream''s first event.';
COMMENT ON COLUMN es.stream_type_rules.stream_type IS 'The type the stream gets.';

CREATE TABLE es.upcasters (
    event_type   text         NOT NULL,
    from_version integer      NOT NULL,
    upcast       text         NOT NULL,
    definer      regrole      NOT NULL,
    defined_at   timestamptz  NOT NULL DEFAULT transaction_timestamp(),
    CONSTRAINT upcasters_pkey PRIMARY KEY (event_type, from_version)
);
COMMENT ON TABLE es.upcasters IS
  'Upcasters (es.define_upcaster): an event of event_type stored with event_version = from_version is handed out and folded as upcast(event) returns it, at from_version + 1; chains compose. Stored rows never change.';
COMMENT ON COLUMN es.upcasters.event_type IS 'The event type it applies to.';
COMMENT ON COLUMN es.upcasters.from_version IS 'The event_version it reads; it produces from_version + 1.';
COMMENT ON COLUMN es.upcasters.upcast IS 'upcast(event jsonb) RETURNS jsonb. Kept by name (schema-qualified, with its argument types), looked up when the registry is read (pg_upgrade keeps names, not function OIDs); a dropped or renamed one fails the reads it applies to (ES301).';
COMMENT ON COLUMN es.upcasters.definer IS 'The role that declared it: on reads outside a fold it runs as this role.';
COMMENT ON COLUMN es.upcasters.defined_at IS 'Transaction time of the declaration.';

-- The life of the data (0.2.0): the audit of every deletion, erasure, truncation, retention and
-- archiving act. Appended to by the functions that act, in the acting transaction, so an act and
-- its record commit or vanish together.

CREATE SEQUENCE es.data_audit_seq AS bigint NO CYCLE;
COMMENT ON SEQUENCE es.data_audit_seq IS 'Source of es.data_audit.id.';

CREATE TABLE es.data_audit (
    id           bigint      NOT NULL DEFAULT nextval('es.data_audit_seq'),
    action       text        NOT NULL,
    target       text        NOT NULL,
    detail       jsonb,
    performed_by name        NOT NULL DEFAULT session_user,
    performed_at timestamptz NOT NULL DEFAULT transaction_timestamp(),
    xact_id      xid8        NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT data_audit_pkey PRIMARY KEY (id)
);
COMMENT ON TABLE es.data_audit IS
  'One row per act that removes, hides or makes unreadable stored events or their data (stream deletion and undeletion, truncation, erasure of a subject''s personal data, retention settings and batches, archiving): who, when, what. Written by those functions in the acting transaction; never changed by the store.';
COMMENT ON COLUMN es.data_audit.id IS 'Increases in the order the acts were recorded.';
COMMENT ON COLUMN es.data_audit.action IS 'What was done: the name of the function that did it (delete_stream, undelete_stream, truncate_stream, forget, set_retention, retention, archive, ...).';
COMMENT ON COLUMN es.data_audit.target IS 'What it was done to: a stream id, a subject, a stream type, or a time bound.';
COMMENT ON COLUMN es.data_audit.detail IS 'The act''s arguments and counts (versions, events removed, positions), as a JSON object.';
COMMENT ON COLUMN es.data_audit.performed_by IS 'The session user that called the function (for the background worker: the role it runs as).';
COMMENT ON COLUMN es.data_audit.performed_at IS 'Transaction time of the act.';
COMMENT ON COLUMN es.data_audit.xact_id IS 'The transaction that did it.';

-- Retention and archiving (0.2.0) -----------------------------------------------------------------

CREATE TABLE es.retention_policies (
    stream_type    text        NOT NULL,
    max_age        interval,
    max_count      bigint,
    paused         boolean     NOT NULL DEFAULT false,
    set_by         name        NOT NULL DEFAULT session_user,
    set_at         timestamptz NOT NULL DEFAULT transaction_timestamp(),
    events_removed bigint      NOT NULL DEFAULT 0,
    batches        bigint      NOT NULL DEFAULT 0,
    last_batch_at  timestamptz,
    last_pass_at   timestamptz,
    CONSTRAINT retention_policies_pkey PRIMARY KEY (stream_type)
);
COMMENT ON TABLE es.retention_policies IS
  'One row per retention policy (es.set_retention): the database''s background worker removes the events of the streams of that type that are older than max_age or beyond the newest max_count of their stream, in small batches (es.retention_batch_size events per transaction, es.retention_naptime between batches). Read through the view es.retention.';
COMMENT ON COLUMN es.retention_policies.stream_type IS 'The stream type it applies to, as es.streams.stream_type holds it; '''' (the empty string) for the generic streams, whose type is NULL.';
COMMENT ON COLUMN es.retention_policies.max_age IS 'Events recorded (recorded_at) longer ago than this are removed; NULL: no age limit.';
COMMENT ON COLUMN es.retention_policies.max_count IS 'Each stream keeps its newest max_count events (by version); older ones are removed; NULL: no count limit.';
COMMENT ON COLUMN es.retention_policies.paused IS 'es.pause_retention / es.resume_retention: a paused policy removes nothing.';
COMMENT ON COLUMN es.retention_policies.set_by IS 'The session user that last called es.set_retention for it.';
COMMENT ON COLUMN es.retention_policies.set_at IS 'Transaction time of that call.';
COMMENT ON COLUMN es.retention_policies.events_removed IS 'Events the worker removed under this policy so far.';
COMMENT ON COLUMN es.retention_policies.batches IS 'Batches (transactions) that removed events under this policy so far.';
COMMENT ON COLUMN es.retention_policies.last_batch_at IS 'When the worker last removed events under this policy.';
COMMENT ON COLUMN es.retention_policies.last_pass_at IS 'When the worker last finished a pass over the whole log for this policy.';

CREATE TABLE es.events_archive (LIKE es.events INCLUDING DEFAULTS);
ALTER TABLE es.events_archive ADD CONSTRAINT events_archive_pkey PRIMARY KEY (stream_id, version);
ALTER TABLE es.events_archive ADD CONSTRAINT events_archive_global_position_key UNIQUE (global_position);
CREATE INDEX events_archive_event_id_idx ON es.events_archive (event_id);
COMMENT ON TABLE es.events_archive IS
  'Events moved out of es.events by es.archive, unchanged (same columns, positions and versions). The read functions read through it (es.load_events, es.read_all, es.poll, projections, states, replays and time travel) unless es.include_archived is off. It may live on another tablespace: ALTER TABLE es.events_archive SET TABLESPACE t, and each of its indexes with ALTER INDEX ... SET TABLESPACE t. Written only by es.archive; UPDATE, DELETE and TRUNCATE are refused, even for the owner (retention removes archived events through the store''s own function).';
COMMENT ON COLUMN es.events_archive.global_position IS 'The event''s position in the log, as it had in es.events.';
COMMENT ON COLUMN es.events_archive.stream_id IS 'The aggregate id.';
COMMENT ON COLUMN es.events_archive.version IS 'The event''s version in its stream.';
COMMENT ON COLUMN es.events_archive.event_id IS 'The event''s id. Not unique here: ids are unique among the live events of es.events (an archived or removed event''s id no longer blocks an append).';
COMMENT ON COLUMN es.events_archive.event_type IS 'The event object''s "type".';
COMMENT ON COLUMN es.events_archive.event_version IS 'Schema version of the payload.';
COMMENT ON COLUMN es.events_archive.data IS 'The event object exactly as appended.';
COMMENT ON COLUMN es.events_archive.metadata IS 'The object''s "metadata" object, if any.';
COMMENT ON COLUMN es.events_archive.occurred_at IS 'The object''s "occurred_at", else the transaction time of its append.';
COMMENT ON COLUMN es.events_archive.recorded_at IS 'Transaction time of the append (not of the archiving).';
COMMENT ON INDEX es.events_archive_pkey IS 'A stream''s archived events in version order (reads through the archive).';
COMMENT ON INDEX es.events_archive_global_position_key IS 'The archived log in position order (es.read_all and es.poll read through it); positions are unique across both tables.';
COMMENT ON INDEX es.events_archive_event_id_idx IS 'Finds an archived event by its id.';

CREATE FUNCTION es.refuse_archive_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'es.events_archive is append-only: % is not allowed', lower(TG_OP)
        USING ERRCODE = 'ES006',
              DETAIL = 'Archived events are facts: they are never changed, and removed only by a retention policy.',
              HINT = 'Append a compensating event with es.append_events instead.';
END
$$;
COMMENT ON FUNCTION es.refuse_archive_change() IS
  'Trigger function that refuses UPDATE, DELETE and TRUNCATE of es.events_archive (SQLSTATE ES006).';

CREATE TRIGGER events_archive_refuse_update_delete BEFORE UPDATE OR DELETE ON es.events_archive
    FOR EACH ROW EXECUTE FUNCTION es.refuse_archive_change();
COMMENT ON TRIGGER events_archive_refuse_update_delete ON es.events_archive IS 'Keeps the archive append-only, even for the table owner.';
CREATE TRIGGER events_archive_refuse_truncate BEFORE TRUNCATE ON es.events_archive
    FOR EACH STATEMENT EXECUTE FUNCTION es.refuse_archive_change();
COMMENT ON TRIGGER events_archive_refuse_truncate ON es.events_archive IS 'Keeps the archive append-only, even for the table owner.';

-- Every read of the whole log is `SELECT * FROM es.events UNION ALL SELECT * FROM
-- es.events_archive`, which needs both tables to have the same columns in the same order. A DBA
-- may add or drop a column of es.events (the store's native paths step aside for such a table,
-- docs/operations.md "How an append works"); this event trigger makes the same change to the archive in the same
-- transaction, so reads through it keep working (archived rows read NULL in an added column).
CREATE FUNCTION es.keep_archive_shape() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
BEGIN
    IF pg_catalog.to_regclass('es.events_archive') IS NULL
       OR NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger_ddl_commands() d
                       WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                         AND d.objid = 'es.events'::pg_catalog.regclass) THEN
        RETURN;
    END IF;
    FOR c IN SELECT b.attname FROM pg_catalog.pg_attribute b
              WHERE b.attrelid = 'es.events_archive'::pg_catalog.regclass AND b.attnum > 0 AND NOT b.attisdropped
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                 WHERE a.attrelid = 'es.events'::pg_catalog.regclass AND a.attname = b.attname
                                   AND NOT a.attisdropped)
              ORDER BY b.attnum
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE es.events_archive DROP COLUMN %I', c.attname);
    END LOOP;
    FOR c IN SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS typ FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = 'es.events'::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute b
                                 WHERE b.attrelid = 'es.events_archive'::pg_catalog.regclass AND b.attname = a.attname
                                   AND NOT b.attisdropped)
              ORDER BY a.attnum
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE es.events_archive ADD COLUMN %I %s', c.attname, c.typ);
    END LOOP;
END
$$;
COMMENT ON FUNCTION es.keep_archive_shape() IS
  'Event trigger function: after an ALTER TABLE of es.events, adds to es.events_archive the columns es.events gained and drops those it lost, so the two keep the same columns in the same order (reads through the archive union them).';
CREATE EVENT TRIGGER es_keep_archive_shape ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION es.keep_archive_shape();
COMMENT ON EVENT TRIGGER es_keep_archive_shape IS
  'event_store: keeps es.events_archive''s columns the same as es.events'' after an ALTER TABLE of es.events.';
-- The only way events leave es.events: the removal the store's acts (es.delete_stream with
-- hard, es.truncate_stream) make after recording it in the stream's row. It removes only what
-- that row says is removed (before the tombstone's marker, or below truncated_before), so even a
-- call from outside the store removes nothing an audited act did not decide. Its own SET clause
-- keeps the append-only trigger from firing inside it (and reverts when it returns, even on
-- error); the trigger stays for everyone else.
CREATE FUNCTION es.purge_stream(stream_id uuid,
                                OUT removed bigint, OUT first_position bigint, OUT last_position bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET session_replication_role = replica
SET search_path = pg_catalog, pg_temp
AS $$
    WITH s AS (
        SELECT s.stream_id,
               CASE WHEN s.deleted = 'hard' THEN s.version ELSE coalesce(s.truncated_before, 1) END AS below
          FROM es.streams s
         WHERE s.stream_id = purge_stream.stream_id
    ), d AS (
        DELETE FROM es.events e USING s
         WHERE e.stream_id = s.stream_id AND e.version < s.below
        RETURNING e.global_position
    ), a AS (
        -- the same events moved to the archive by es.archive go too: a removal leaves no copy
        DELETE FROM es.events_archive e USING s
         WHERE e.stream_id = s.stream_id AND e.version < s.below
        RETURNING e.global_position
    ), gone AS (
        SELECT global_position FROM d UNION ALL SELECT global_position FROM a
    ), parked AS (
        -- a parked event that is gone cannot be replayed, nor hold its stream's later events
        DELETE FROM es.parked_events k USING gone
         WHERE k.stream_id = purge_stream.stream_id AND k.global_position = gone.global_position
    )
    SELECT count(*), min(gone.global_position), max(gone.global_position) FROM gone
$$;
COMMENT ON FUNCTION es.purge_stream(uuid) IS
  'Internal: removes the events of a stream that its es.streams row records as removed (a hard delete: all before the $stream_deleted marker; a truncation: those below truncated_before), from es.events and from es.events_archive, bypassing the append-only triggers; removes the subscriptions'' parked entries of those events too; returns how many events and their first and last global positions. Called by es.delete_stream and es.truncate_stream after they record the act; EXECUTE is revoked from PUBLIC.';

-- Personal data (0.2.0): crypto-shredding. The paths of each event type that hold personal data,
-- and one key per data subject; es.forget destroys a subject's key.

CREATE TABLE es.personal_data (
    event_type text        NOT NULL,
    paths      text[]      NOT NULL,
    defined_by name        NOT NULL DEFAULT session_user,
    defined_at timestamptz NOT NULL DEFAULT transaction_timestamp(),
    CONSTRAINT personal_data_pkey PRIMARY KEY (event_type)
);
COMMENT ON TABLE es.personal_data IS
  'The personal-data paths of event types (es.define_personal_data): at append the values there are sealed with their subject''s key (es.subject_keys) before anything stores them. Written only by es.define_personal_data.';
COMMENT ON COLUMN es.personal_data.event_type IS 'The event type (the event object''s "type").';
COMMENT ON COLUMN es.personal_data.paths IS 'Dot-separated object keys from the event''s top (customer.email); empty: none any more.';
COMMENT ON COLUMN es.personal_data.defined_by IS 'The session user that defined them.';
COMMENT ON COLUMN es.personal_data.defined_at IS 'Transaction time of the definition.';

CREATE SEQUENCE es.subject_key_seq AS bigint NO CYCLE;
COMMENT ON SEQUENCE es.subject_key_seq IS
  'Source of es.subject_keys.key_id: never reused, so a value sealed with a destroyed key never opens with a new one.';

CREATE TABLE es.subject_keys (
    subject    text        NOT NULL,
    key_id     bigint      NOT NULL,
    key        bytea,
    created_at timestamptz NOT NULL DEFAULT transaction_timestamp(),
    CONSTRAINT subject_keys_pkey PRIMARY KEY (subject),
    CONSTRAINT subject_keys_key_id_key UNIQUE (key_id)
);
COMMENT ON TABLE es.subject_keys IS
  'One AES-256 key per data subject, made by the first append that seals a value for it and destroyed by es.forget. It shares this database''s WAL, replicas and backups until they age out (docs/lifecycle.md "Forgetting a subject"). Members of es_personal_data may read it: that is what revealing needs.';
COMMENT ON COLUMN es.subject_keys.subject IS 'The data subject: a stream id as text, or the data_subject an event''s metadata named.';
COMMENT ON COLUMN es.subject_keys.key_id IS 'What a sealed value names (es:enc:v1:<key_id>:...); never the subject, which may be personal itself.';
COMMENT ON COLUMN es.subject_keys.key IS 'The 32 key bytes, from pg_strong_random; NULL when the key provider named by es.key_provider keeps them (in another database).';
COMMENT ON COLUMN es.subject_keys.created_at IS 'Transaction time of the append that made it.';

-- The role whose members read personal values in clear. Roles belong to the cluster, not to a
-- database or the extension: made once, by the first CREATE EXTENSION (or update) of the cluster,
-- left in place by DROP EXTENSION, and not in pg_dump's output (pg_dumpall --globals has it).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'es_personal_data') THEN
        BEGIN
            CREATE ROLE es_personal_data NOLOGIN;
            COMMENT ON ROLE es_personal_data IS
              'event_store: members (and superusers) read the personal values es.define_personal_data marked in clear, while their subject''s key exists; others read null and an "_erased" marker.';
        EXCEPTION WHEN unique_violation OR duplicate_object THEN
            -- A CREATE EXTENSION in another database of the cluster made it at the same moment:
            -- roles are the cluster's, and no lock the two could share spans databases.
            NULL;
        END;
    END IF;
END
$$;

-- Privileges and dumps ----------------------------------------------------------------------------

REVOKE ALL ON TABLE es.events, es.streams, es.snapshots FROM PUBLIC;
REVOKE ALL ON TABLE es.subscription_config, es.subscription_partitions, es.subscription_consumers, es.parked_events,
    es.projection_config, es.watermark, es.account_balances, es.account_transactions FROM PUBLIC;
REVOKE ALL ON TABLE es.aggregate_types, es.stream_type_rules, es.upcasters FROM PUBLIC;
REVOKE ALL ON TABLE es.data_audit FROM PUBLIC;
REVOKE ALL ON TABLE es.retention_policies, es.events_archive FROM PUBLIC;
REVOKE ALL ON FUNCTION es.refuse_archive_change() FROM PUBLIC;
REVOKE ALL ON FUNCTION es.keep_archive_shape() FROM PUBLIC;
REVOKE ALL ON SEQUENCE es.data_audit_seq FROM PUBLIC;
REVOKE ALL ON TABLE es.personal_data, es.subject_keys FROM PUBLIC;
REVOKE ALL ON SEQUENCE es.subject_key_seq FROM PUBLIC;
GRANT SELECT (key_id, key) ON TABLE es.subject_keys TO es_personal_data;
REVOKE ALL ON SEQUENCE es.global_position_seq FROM PUBLIC;
REVOKE ALL ON SEQUENCE es.aggregate_revision_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION es.refuse_history_change() FROM PUBLIC;
REVOKE ALL ON FUNCTION es.purge_stream(uuid) FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('es.events', '');
SELECT pg_catalog.pg_extension_config_dump('es.streams', '');
SELECT pg_catalog.pg_extension_config_dump('es.snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('es.global_position_seq', '');
SELECT pg_catalog.pg_extension_config_dump('es.subscription_config', '');
SELECT pg_catalog.pg_extension_config_dump('es.subscription_partitions', '');
SELECT pg_catalog.pg_extension_config_dump('es.subscription_consumers', '');
SELECT pg_catalog.pg_extension_config_dump('es.parked_events', '');
SELECT pg_catalog.pg_extension_config_dump('es.projection_config', '');
SELECT pg_catalog.pg_extension_config_dump('es.watermark', '');
SELECT pg_catalog.pg_extension_config_dump('es.account_balances', '');
SELECT pg_catalog.pg_extension_config_dump('es.account_transactions', '');
SELECT pg_catalog.pg_extension_config_dump('es.aggregate_types', 'WHERE NOT native');
SELECT pg_catalog.pg_extension_config_dump('es.aggregate_revision_seq', '');
SELECT pg_catalog.pg_extension_config_dump('es.stream_type_rules', '');
SELECT pg_catalog.pg_extension_config_dump('es.upcasters', '');
SELECT pg_catalog.pg_extension_config_dump('es.data_audit', '');
SELECT pg_catalog.pg_extension_config_dump('es.data_audit_seq', '');
SELECT pg_catalog.pg_extension_config_dump('es.retention_policies', '');
SELECT pg_catalog.pg_extension_config_dump('es.events_archive', '');
SELECT pg_catalog.pg_extension_config_dump('es.personal_data', '');
SELECT pg_catalog.pg_extension_config_dump('es.subject_keys', '');
SELECT pg_catalog.pg_extension_config_dump('es.subject_key_seq', '');
