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
    CONSTRAINT streams_pkey PRIMARY KEY (stream_id)
) WITH (fillfactor = 90);
COMMENT ON TABLE es.streams IS
  'One row per stream: its current version. The row is the lock that serializes appends to one stream; appends to different streams never touch the same row. Pages keep 10% free (fillfactor 90) so the per-append version update stays a HOT update; more would make PostgreSQL prune the page on nearly every read.';
COMMENT ON COLUMN es.streams.stream_id IS 'The aggregate id.';
COMMENT ON COLUMN es.streams.stream_type IS 'account for a stream whose first event is Opened, else NULL (a generic stream).';
COMMENT ON COLUMN es.streams.version IS 'Version of the newest event of the stream (0 before the first).';
COMMENT ON COLUMN es.streams.created_at IS 'Transaction time of the first append.';
COMMENT ON COLUMN es.streams.updated_at IS 'Transaction time of the newest append.';
COMMENT ON COLUMN es.streams.state IS
  'Account streams: the account state at version, written with every append in the same row update, so a command or es.account_state reads it instead of replaying; ignored unless its "version" equals the row''s. NULL for other streams.';

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
    CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id, version)
);
COMMENT ON TABLE es.snapshots IS
  'Saved states of streams; several per stream, so time travel can start from an old one.';
COMMENT ON COLUMN es.snapshots.stream_id IS 'The aggregate id.';
COMMENT ON COLUMN es.snapshots.version IS 'Version of the stream the state reflects (1..stream version when saved).';
COMMENT ON COLUMN es.snapshots.state IS 'The state after applying events 1..version.';
COMMENT ON COLUMN es.snapshots.taken_at IS 'Transaction time of the save.';

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

-- Privileges and dumps ----------------------------------------------------------------------------

REVOKE ALL ON TABLE es.events, es.streams, es.snapshots FROM PUBLIC;
REVOKE ALL ON SEQUENCE es.global_position_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION es.refuse_history_change() FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('es.events', '');
SELECT pg_catalog.pg_extension_config_dump('es.streams', '');
SELECT pg_catalog.pg_extension_config_dump('es.snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('es.global_position_seq', '');
