-- event_store — hand-written schema of the extension, as a fresh install of the current version
-- creates it.
-- Every table, sequence, trigger and SQL-callable function of the extension is declared here, with a
-- COMMENT ON each. The C functions pin their search path themselves: every statement they run
-- uses pg_catalog alone (src/storage.rs), which a SET clause would do at a measurable cost. The functions are implemented in Rust (src/api/) and declared by hand so that
-- their SQL signatures, volatility and security are reviewed text, not generated.
-- `cargo pgrx install` generates the version's install script from this file, so it always
-- describes the current version; every change made here after a release also goes into that
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

-- SQL API -----------------------------------------------------------------------------------------

CREATE FUNCTION es.append_events(stream_id uuid, expected_version bigint, events jsonb[])
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'es_append_events';
COMMENT ON FUNCTION es.append_events(uuid, bigint, jsonb[]) IS
  'Appends events atomically and returns the stream''s new version. expected_version: N = the stream is at N, 0 = it does not exist, -1 = it exists, NULL = no check. Wrong version: ES001.';

CREATE FUNCTION es.load_events(stream_id uuid, from_version bigint DEFAULT 0, max_count bigint DEFAULT NULL)
RETURNS SETOF es.events
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'es_load_events';
COMMENT ON FUNCTION es.load_events(uuid, bigint, bigint) IS
  'Events of a stream with version > from_version, ascending, at most max_count (NULL = all).';

CREATE FUNCTION es.stream_version(stream_id uuid)
RETURNS bigint
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'es_stream_version';
COMMENT ON FUNCTION es.stream_version(uuid) IS 'Current version of a stream; 0 when it does not exist.';

CREATE FUNCTION es.read_all(after_position bigint DEFAULT 0, max_count integer DEFAULT 1000)
RETURNS SETOF es.events
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'es_read_all';
COMMENT ON FUNCTION es.read_all(bigint, integer) IS
  'The global log after after_position in global_position order. Gap-safe: it stops before the first position still in flight, so a reader paging with its last position never skips an event. Needs shared_preload_libraries = ''event_store''.';

CREATE FUNCTION es.save_snapshot(stream_id uuid, version bigint, state jsonb)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'es_save_snapshot';
COMMENT ON FUNCTION es.save_snapshot(uuid, bigint, jsonb) IS
  'Saves the state of a stream at a version (1..current version, else ES005); saving the same version again replaces it.';

CREATE FUNCTION es.load_snapshot(stream_id uuid, at_version bigint DEFAULT NULL)
RETURNS TABLE(version bigint, state jsonb, taken_at timestamptz)
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'es_load_snapshot';
COMMENT ON FUNCTION es.load_snapshot(uuid, bigint) IS
  'The newest snapshot at or below at_version (NULL = the newest of all); no row when there is none.';

-- Privileges and dumps ----------------------------------------------------------------------------

REVOKE ALL ON TABLE es.events, es.streams, es.snapshots FROM PUBLIC;
REVOKE ALL ON SEQUENCE es.global_position_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION es.append_events(uuid, bigint, jsonb[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION es.save_snapshot(uuid, bigint, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION es.refuse_history_change() FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('es.events', '');
SELECT pg_catalog.pg_extension_config_dump('es.streams', '');
SELECT pg_catalog.pg_extension_config_dump('es.snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('es.global_position_seq', '');

-- The account aggregate (SPEC §5) -----------------------------------------------------------------

CREATE FUNCTION es.account_replay_step(internal, jsonb) RETURNS internal
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'es_account_replay_step';
COMMENT ON FUNCTION es.account_replay_step(internal, jsonb) IS
  'Transition function of es.account_replay(jsonb): applies one account event to the state.';

CREATE FUNCTION es.account_replay_from_step(internal, jsonb, jsonb) RETURNS internal
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'es_account_replay_from_step';
COMMENT ON FUNCTION es.account_replay_from_step(internal, jsonb, jsonb) IS
  'Transition function of es.account_replay(jsonb, jsonb): starts from the initial state on the first row.';

CREATE FUNCTION es.account_replay_final(internal) RETURNS jsonb
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'es_account_replay_final';
COMMENT ON FUNCTION es.account_replay_final(internal) IS
  'Final function of es.account_replay: the state JSON {holder_name, balance_cents, status, version}.';

CREATE AGGREGATE es.account_replay(event jsonb) (
    SFUNC = es.account_replay_step,
    STYPE = internal,
    FINALFUNC = es.account_replay_final
);
COMMENT ON AGGREGATE es.account_replay(jsonb) IS
  'Folds account events into the account state: SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = $1. Also a window function (running balance). Unknown or malformed events: ES003.';

CREATE AGGREGATE es.account_replay(initial_state jsonb, event jsonb) (
    SFUNC = es.account_replay_from_step,
    STYPE = internal,
    FINALFUNC = es.account_replay_final
);
COMMENT ON AGGREGATE es.account_replay(jsonb, jsonb) IS
  'es.account_replay starting from a state JSON (e.g. a snapshot''s): SELECT es.account_replay(s.state, e.data ORDER BY e.version) ... WHERE e.version > s.version.';

-- Account commands (SPEC §5) ----------------------------------------------------------------------

CREATE FUNCTION es.open_account(holder text, initial_balance_cents bigint DEFAULT 0)
RETURNS uuid
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'es_open_account';
COMMENT ON FUNCTION es.open_account(text, bigint) IS
  'Opens an account: a new account stream whose first event is Opened. Negative initial balance: ES103. Returns the account id.';

CREATE FUNCTION es.deposit(account_id uuid, amount_cents bigint, description text DEFAULT '', expected_version bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'es_deposit';
COMMENT ON FUNCTION es.deposit(uuid, bigint, text, bigint) IS
  'Appends Deposited after checking the rules (amount > 0: ES103; Active: ES102). Returns the new version.';

CREATE FUNCTION es.withdraw(account_id uuid, amount_cents bigint, description text DEFAULT '', expected_version bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'es_withdraw';
COMMENT ON FUNCTION es.withdraw(uuid, bigint, text, bigint) IS
  'Appends Withdrawn after checking the rules (amount > 0: ES103; Active: ES102; never more than the balance: ES101). Concurrent withdrawals serialize on the account. Returns the new version.';

CREATE FUNCTION es.freeze_account(account_id uuid, reason text)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'es_freeze_account';
COMMENT ON FUNCTION es.freeze_account(uuid, text) IS
  'Appends Frozen to an Active account (else ES102). Returns the new version.';

CREATE FUNCTION es.close_account(account_id uuid, reason text)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'es_close_account';
COMMENT ON FUNCTION es.close_account(uuid, text) IS
  'Appends Closed to an account that is not closed yet (else ES102). Returns the new version.';

REVOKE ALL ON FUNCTION es.open_account(text, bigint), es.deposit(uuid, bigint, text, bigint),
    es.withdraw(uuid, bigint, text, bigint), es.freeze_account(uuid, text),
    es.close_account(uuid, text) FROM PUBLIC;

-- Time travel and audit (SPEC §5) -----------------------------------------------------------------

CREATE FUNCTION es.account_state(account_id uuid, as_of timestamptz DEFAULT NULL, at_version bigint DEFAULT NULL)
RETURNS jsonb
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'es_account_state';
COMMENT ON FUNCTION es.account_state(uuid, timestamptz, bigint) IS
  'The account state {holder_name, balance_cents, status, version} at at_version (default: current), or at the newest version recorded (recorded_at) at or before as_of, whichever is older; NULL when the account did not exist yet at as_of. Starts from the newest usable snapshot. ES002 / ES104 for a missing / non-account stream.';

CREATE FUNCTION es.account_history(account_id uuid)
RETURNS TABLE(version bigint, event_type text, amount_cents bigint, balance_cents bigint,
              status text, description text, occurred_at timestamptz, recorded_at timestamptz)
LANGUAGE c STABLE PARALLEL SAFE ROWS 100
AS 'MODULE_PATHNAME', 'es_account_history';
COMMENT ON FUNCTION es.account_history(uuid) IS
  'One row per event of an account, in version order: the signed amount (opening balance, +deposit, -withdrawal), the running balance and status after it, the description/reason (holder for Opened), and its timestamps.';
