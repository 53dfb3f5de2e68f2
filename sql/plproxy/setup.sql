-- sql/plproxy/setup.sql — the proxy side of sharding the event store by stream with PL/Proxy
-- (docs/reference.md §11 "Sharding by stream"; docs/sharding.md).
--
-- Why: every write of the store is keyed by one stream id, so a stream can live on exactly one
-- partition database and a proxy database can route each call there. This file creates, in the
-- PROXY database (which does not have the event_store extension), functions with the store's own
-- names and signatures in schema `es`, so a client runs the same SQL against the proxy as against
-- one node:
--   * routed by stream: append_events, load_events, stream_version, save_snapshot, load_snapshot,
--     delete_stream, undelete_stream, truncate_stream,
--     deposit, withdraw, freeze_account, close_account, account_state, account_history (a NULL
--     stream or account id fails on the proxy with the store's 22004, as on one node), and
--     open_account (the proxy makes the account id, a UUIDv7, and opens the account on the shard
--     that id hashes to with the seed's `Opened` event through es.append_events);
--   * per shard (a global position becomes (shard, position)): read_all, poll, ack, nack, claim,
--     release, wait, replay_parked, create_subscription, drop_subscription;
--   * on every shard at once: create_subscription, drop_subscription, the view es.subscriptions;
--   * local: stream_hash (the store's FNV-1a: its C function where the event_store library is
--     installed on this server, else reimplemented here; tested to be identical), shard_count,
--     shard_of, shards.
-- Errors keep the store's SQLSTATE, message, DETAIL and HINT: PL/Proxy prefixes a remote error's
-- message, DETAIL and HINT ("... REMOTE ERROR: ", "Remote detail: ", "Remote hint: "), and each
-- `es` function strips those again, so the DETAIL contract (docs/sql-reference.md, "Errors")
-- survives the hop: the routed functions returning one value through the event_store library's C
-- relay where the proxy's server has the library (the end of this file), the others, and all of
-- them elsewhere, with an EXCEPTION block and es_proxy.reraise. A shard that cannot be reached gives 08001 naming the shard (08006
-- when the connection broke during the call or the shard's session ended), for the streams of
-- that shard only. PL/Proxy runs each call in its own transaction on the shard (autocommit), with
-- an unnamed statement (parsed and planned there per call), and reconnects to a shard after a
-- remote error.
--
-- The cluster itself (CREATE SERVER es_shards FOREIGN DATA WRAPPER plproxy OPTIONS (p0 '…', …),
-- the user mapping) is made by scripts/shard.sh, which then runs this file; it is idempotent
-- (CREATE OR REPLACE), so running the script again updates the functions and the cluster.
-- Internal helpers and the raw PL/Proxy functions live in schema `es_proxy`.

CREATE EXTENSION IF NOT EXISTS plproxy;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'event_store') THEN
    RAISE EXCEPTION 'this database has the event_store extension: the proxy needs a database of its own'
      USING ERRCODE = '55000',
            HINT = 'Create an empty database for the proxy (CREATE DATABASE es_proxy) and run scripts/shard.sh there.';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_foreign_server WHERE srvname = 'es_shards') THEN
    RAISE EXCEPTION 'no PL/Proxy cluster es_shards in this database'
      USING ERRCODE = '55000', HINT = 'scripts/shard.sh creates it before it runs this file.';
  END IF;
END $$;

CREATE SCHEMA IF NOT EXISTS es;
COMMENT ON SCHEMA es IS
  'event_store through PL/Proxy: the store''s functions with its signatures, each routed to the shard (partition database) of its stream; see docs/sharding.md.';
CREATE SCHEMA IF NOT EXISTS es_proxy;
COMMENT ON SCHEMA es_proxy IS
  'Internals of the event_store proxy: the raw PL/Proxy functions (cluster es_shards) that the es functions call, and helpers.';

-- --- row types ---------------------------------------------------------------------------------
DO $$
BEGIN
  IF to_regtype('es.events') IS NULL THEN
    CREATE TYPE es.events AS (
      global_position bigint, stream_id uuid, version bigint, event_id uuid, event_type text,
      event_version integer, data jsonb, metadata jsonb, occurred_at timestamptz, recorded_at timestamptz);
  END IF;
  IF to_regtype('es.shard_events') IS NULL THEN
    CREATE TYPE es.shard_events AS (
      shard integer, global_position bigint, stream_id uuid, version bigint, event_id uuid,
      event_type text, event_version integer, data jsonb, metadata jsonb, occurred_at timestamptz,
      recorded_at timestamptz);
  END IF;
END $$;
COMMENT ON TYPE es.events IS
  'A row of a shard''s es.events table (the same columns), as es.load_events returns it through the proxy.';
COMMENT ON TYPE es.shard_events IS
  'An event of the global log of one shard: the shard number and the es.events columns; (shard, global_position) is its global position across the cluster.';

-- --- the shard key ---------------------------------------------------------------------------------
-- es_proxy.stream_hash_portable: the store's hash reimplemented in PL/pgSQL, for a proxy whose
-- server does not have the event_store library (a proxy needs no extension of the store).
CREATE OR REPLACE FUNCTION es_proxy.stream_hash_portable(stream_id uuid) RETURNS integer
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  b bytea := uuid_send(stream_id);   -- the uuid's 16 bytes in network order
  h bigint := 2166136261;            -- FNV-1a 32-bit offset basis
BEGIN
  FOR i IN 0..15 LOOP
    h := ((h # get_byte(b, i)) * 16777619) & 4294967295;   -- xor the byte, times the FNV prime, mod 2^32
  END LOOP;
  RETURN (h & 2147483647)::integer;  -- top bit cleared: a non-negative integer
END $$;
COMMENT ON FUNCTION es_proxy.stream_hash_portable(uuid) IS
  'The store''s stream hash (32-bit FNV-1a over the uuid bytes, top bit cleared) in PL/pgSQL: es.stream_hash where the proxy''s server has no event_store library.';

-- es.stream_hash runs on every routed call (PL/Proxy's RUN ON evaluates it through a saved plan,
-- es_proxy.route below). Where the event_store library is installed on the proxy's
-- server it is the store's own C function (the same code as on the partitions, nothing
-- reimplemented; ~30,000 instructions less per routed call than the PL/pgSQL loop, docs/sharding.md
-- "Cost"); the library is only loaded, the proxy still has no extension. Elsewhere it is
-- es_proxy.stream_hash_portable's body. (An inlined SQL expression of the 16 rounds costs more:
-- its expression tree is compiled again at every execution of PL/Proxy's plan.)
DO $do$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'event_store') THEN
    BEGIN
      CREATE OR REPLACE FUNCTION es.stream_hash(stream_id uuid) RETURNS integer
      LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS '$libdir/event_store', 'es_stream_hash';
      RETURN;
    EXCEPTION WHEN undefined_file OR undefined_function OR insufficient_privilege THEN
      NULL;   -- no loadable library with the function (another version?): the portable body
    END;
  END IF;
  EXECUTE format('CREATE OR REPLACE FUNCTION es.stream_hash(stream_id uuid) RETURNS integer
                  LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS %L',
                 (SELECT prosrc FROM pg_proc WHERE oid = 'es_proxy.stream_hash_portable(uuid)'::regprocedure));
END $do$;
COMMENT ON FUNCTION es.stream_hash(uuid) IS
  'The store''s stable stream hash (32-bit FNV-1a over the uuid bytes, top bit cleared), identical to es.stream_hash of the event_store extension; PL/Proxy routes a stream to shard stream_hash & (shard_count - 1).';

-- es_proxy.route: what the routed functions' RUN ON calls. PL/Proxy evaluates RUN ON through a
-- saved plan of "select * from <call>": a scalar function there is a function scan (executor
-- node, tuple store) at every routed call; this set-returning SQL function is inlined by the
-- planner into a plain Result computing es.stream_hash (~3,600 instructions less per call).
-- Not STRICT, so that it can be inlined; a NULL id still gives a NULL hash (es.stream_hash is).
CREATE OR REPLACE FUNCTION es_proxy.route(stream_id uuid) RETURNS SETOF integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT es.stream_hash(stream_id) $$;
COMMENT ON FUNCTION es_proxy.route(uuid) IS
  'es.stream_hash(stream_id) as one row: the RUN ON of the routed PL/Proxy functions (inlined into PL/Proxy''s plan, no function scan per call).';

CREATE OR REPLACE FUNCTION es.shard_count() RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE n integer;
BEGIN
  SELECT count(*) INTO n
  FROM pg_foreign_server s, unnest(s.srvoptions) AS o
  WHERE s.srvname = 'es_shards' AND o ~ '^p[0-9]+=';
  IF n = 0 THEN
    RAISE EXCEPTION 'no PL/Proxy cluster es_shards in this database' USING ERRCODE = '55000',
      HINT = 'Create it with scripts/shard.sh.';
  END IF;
  RETURN n;
END $$;
COMMENT ON FUNCTION es.shard_count() IS
  'The number of shards (partition databases) of cluster es_shards: a power of two, fixed for the life of the cluster.';

CREATE OR REPLACE FUNCTION es.shard_of(stream_id uuid) RETURNS integer
LANGUAGE sql STABLE STRICT AS $$ SELECT es.stream_hash(stream_id) & (es.shard_count() - 1) $$;
COMMENT ON FUNCTION es.shard_of(uuid) IS
  'The shard that holds a stream: es.stream_hash(stream_id) & (es.shard_count() - 1), as PL/Proxy''s RUN ON computes it.';

CREATE OR REPLACE FUNCTION es.shards() RETURNS TABLE(shard integer, connstr text)
LANGUAGE sql STABLE AS $$
  SELECT substring(o FROM '^p([0-9]+)=')::integer, substring(o FROM '^p[0-9]+=(.*)$')
  FROM pg_foreign_server s, unnest(s.srvoptions) AS o
  WHERE s.srvname = 'es_shards' AND o ~ '^p[0-9]+='
  ORDER BY 1
$$;
COMMENT ON FUNCTION es.shards() IS
  'The shards of cluster es_shards and their connection strings (options p0, p1, … of the foreign server; credentials live in the user mapping).';

CREATE OR REPLACE FUNCTION es_proxy.all_shards() RETURNS integer[]
LANGUAGE sql STABLE AS $$ SELECT array_agg(g ORDER BY g) FROM generate_series(0, es.shard_count() - 1) AS g $$;
COMMENT ON FUNCTION es_proxy.all_shards() IS
  'ARRAY[0, 1, …, shard_count - 1]: with PL/Proxy''s SPLIT + RUN ON it sends each shard its own number, so a call on every shard can say which shard each row comes from.';

CREATE OR REPLACE FUNCTION es_proxy.check_shard(shard integer) RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE n integer := es.shard_count();
BEGIN
  IF shard IS NULL THEN
    RAISE EXCEPTION 'shard must not be null' USING ERRCODE = '22004';
  END IF;
  IF shard < 0 OR shard >= n THEN
    RAISE EXCEPTION 'shard % is out of range: the cluster has % shards (0..%)', shard, n, n - 1
      USING ERRCODE = '22023';
  END IF;
  RETURN shard;
END $$;
COMMENT ON FUNCTION es_proxy.check_shard(integer) IS
  'Returns a shard number after checking it is one of the cluster''s (22023 otherwise): RUN ON would silently wrap a number out of range.';

CREATE OR REPLACE FUNCTION es_proxy.uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
  -- a random (v4) uuid whose first 48 bits become the Unix time in milliseconds, version nibble 7
  SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
           PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
           FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;
COMMENT ON FUNCTION es_proxy.uuid_v7() IS
  'A UUIDv7 (time-ordered, like the ids the store makes): the account ids and Opened event ids that es.open_account makes on the proxy.';

-- --- errors ---------------------------------------------------------------------------------------
-- es_proxy.reraise: raises again an error caught by an es function, without PL/Proxy's decorations.
-- The library's relay applies the same rules (event_store_core::proxy::undecorate): change both.
CREATE OR REPLACE FUNCTION es_proxy.reraise(state text, message text, detail text, hint text, shard integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  remote text[] := regexp_match(message, '^\S+\(\d+\): \[([^]]*)\] REMOTE ([^:]+): (.*)$');
  failure text[] := regexp_match(message, '^PL/Proxy function \S+\(\d+\): \[([^]]*)\] (PQ[A-Za-z]+|connect timeout to|query timeout)(: )?(.*)$');
BEGIN
  IF remote IS NOT NULL AND (remote[2] IN ('FATAL', 'PANIC') OR state LIKE '57P%') THEN
    -- the shard's session ended (terminated, shut down, crashed): passed on as is, 57P01 would
    -- tell the client that ITS connection to the proxy ended; PL/Proxy reconnects at the next call
    state := '08006';
    detail := btrim(message, E' \n');
    message := format('%s (database %s) lost its connection: %s',
                      coalesce('shard ' || shard, 'a shard'), remote[1], remote[3]);
    hint := 'PL/Proxy reconnects at the next call. Retry: an append with the same event ids is an idempotent retry.';
  ELSIF remote IS NOT NULL THEN
    -- the store's own error on the shard: its SQLSTATE came through, the texts get back their form
    message := remote[3];
    detail := regexp_replace(detail, '^Remote detail: ', '');
    hint := regexp_replace(hint, '^Remote hint: ', '');
  ELSIF failure IS NOT NULL THEN
    -- PL/Proxy could not reach the shard (libpq's message): 08001 when connecting failed, 08006
    -- when the connection broke during the call (the call may or may not have run there)
    state := CASE WHEN failure[2] IN ('PQconnectPoll', 'PQconnectStart', 'connect timeout to')
                  THEN '08001' ELSE '08006' END;
    detail := btrim(message, E' \n');
    message := format('%s (database %s) is unavailable: %s',
                      coalesce('shard ' || shard, 'a shard'), failure[1], btrim(failure[4], E' \n'));
    hint := CASE state WHEN '08001'
      THEN 'Only the streams of this shard are affected. Its connection string is option p'
           || coalesce(shard::text, 'N') || ' of server es_shards (SELECT * FROM es.shards()).'
      ELSE 'The outcome of this call on the shard is unknown: retry an append with the same event ids (an idempotent retry returns what the first call returned); PL/Proxy reconnects at the next call.'
    END;
  END IF;
  IF coalesce(detail, '') <> '' AND coalesce(hint, '') <> '' THEN
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail, HINT = hint;
  ELSIF coalesce(detail, '') <> '' THEN
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail;
  ELSIF coalesce(hint, '') <> '' THEN
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, HINT = hint;
  ELSE
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message;
  END IF;
END $$;
COMMENT ON FUNCTION es_proxy.reraise(text, text, text, text, integer) IS
  'Raises a caught error again: a shard''s error with its SQLSTATE, message, DETAIL and HINT as the store wrote them (PL/Proxy''s prefixes removed); PL/Proxy''s own connection failures as 08001/08006 naming the shard.';

-- es_proxy.require_id: the one-node error for a NULL stream or account id. PL/Proxy cannot route
-- a NULL (its hash is NULL: "XX000 … Hash function returned NULL"), so the routed es functions
-- check the id first and fail as the store does, with its SQLSTATE and message.
CREATE OR REPLACE FUNCTION es_proxy.require_id(name text, id uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF id IS NULL THEN
    RAISE EXCEPTION '% must not be null', name USING ERRCODE = '22004';
  END IF;
END $$;
COMMENT ON FUNCTION es_proxy.require_id(text, uuid) IS
  'Raises the store''s 22004 "<name> must not be null" for a NULL stream or account id, which PL/Proxy could not route (its hash is NULL).';

-- --- raw PL/Proxy functions (es_proxy): one remote call each -------------------------------------
-- A function returning one value names its target in a SELECT of its own (a plain function call
-- in the target list) rather than with TARGET, whose generated "select r::T from f(...) r" makes
-- the partition set up a function scan (a tuple store) around the call: ~20,000 instructions
-- less per routed call on the partition, which parses and plans PL/Proxy's statement every time.
CREATE OR REPLACE FUNCTION es_proxy.append_events(stream_id uuid, expected_version bigint, events jsonb[],
    stream_type text)
RETURNS bigint LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(stream_id);
  SELECT es.append_events(stream_id, expected_version, events, stream_type);
$$;
CREATE OR REPLACE FUNCTION es_proxy.load_events(stream_id uuid, from_version bigint, max_count bigint)
RETURNS SETOF es.events LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(stream_id); TARGET es.load_events;
$$;
CREATE OR REPLACE FUNCTION es_proxy.stream_version(stream_id uuid)
RETURNS bigint LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(stream_id);
  SELECT es.stream_version(stream_id);
$$;
CREATE OR REPLACE FUNCTION es_proxy.save_snapshot(stream_id uuid, version bigint, state jsonb)
RETURNS void LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(stream_id); TARGET es.save_snapshot;
$$;
CREATE OR REPLACE FUNCTION es_proxy.delete_stream(stream_id uuid, expected_version bigint, hard boolean)
RETURNS bigint LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(stream_id);
  SELECT es.delete_stream(stream_id, expected_version, hard);
$$;
CREATE OR REPLACE FUNCTION es_proxy.undelete_stream(stream_id uuid)
RETURNS bigint LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(stream_id);
  SELECT es.undelete_stream(stream_id);
$$;
CREATE OR REPLACE FUNCTION es_proxy.truncate_stream(stream_id uuid, before_version bigint)
RETURNS bigint LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(stream_id);
  SELECT es.truncate_stream(stream_id, before_version);
$$;
CREATE OR REPLACE FUNCTION es_proxy.load_snapshot(stream_id uuid, at_version bigint)
RETURNS TABLE(version bigint, state jsonb, taken_at timestamptz) LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(stream_id); TARGET es.load_snapshot;
$$;
-- The account's Opened event with the seed's whole shape (as es.open_account writes it), appended
-- on the shard the new id hashes to; occurred_at is the shard's transaction time, like the store's.
CREATE OR REPLACE FUNCTION es_proxy.open_account(account_id uuid, holder text, initial_balance_cents bigint, event_id uuid)
RETURNS bigint LANGUAGE plproxy AS $$
  CLUSTER 'es_shards';
  RUN ON es_proxy.route(account_id);
  SELECT es.append_events(account_id, 0, ARRAY[jsonb_build_object(
           'type', 'Opened', 'account_holder', holder, 'initial_balance_cents', initial_balance_cents,
           'event_id', event_id, 'aggregate_id', account_id, 'sequence_number', 1,
           'event_type', 'AccountOpened',
           'occurred_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'event_version', 1)]) AS "open_account";
$$;
CREATE OR REPLACE FUNCTION es_proxy.deposit(account_id uuid, amount_cents bigint, description text, expected_version bigint)
RETURNS bigint LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(account_id);
  SELECT es.deposit(account_id, amount_cents, description, expected_version);
$$;
CREATE OR REPLACE FUNCTION es_proxy.withdraw(account_id uuid, amount_cents bigint, description text, expected_version bigint)
RETURNS bigint LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(account_id);
  SELECT es.withdraw(account_id, amount_cents, description, expected_version);
$$;
CREATE OR REPLACE FUNCTION es_proxy.freeze_account(account_id uuid, reason text)
RETURNS bigint LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(account_id);
  SELECT es.freeze_account(account_id, reason);
$$;
CREATE OR REPLACE FUNCTION es_proxy.close_account(account_id uuid, reason text)
RETURNS bigint LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(account_id);
  SELECT es.close_account(account_id, reason);
$$;
CREATE OR REPLACE FUNCTION es_proxy.account_state(account_id uuid, as_of timestamptz, at_version bigint)
RETURNS jsonb LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(account_id);
  SELECT es.account_state(account_id, as_of, at_version);
$$;
CREATE OR REPLACE FUNCTION es_proxy.account_history(account_id uuid)
RETURNS TABLE(version bigint, event_type text, amount_cents bigint, balance_cents bigint, status text,
              description text, occurred_at timestamptz, recorded_at timestamptz)
LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON es_proxy.route(account_id); TARGET es.account_history;
$$;
-- per shard: RUN ON <shard number> (checked by the es function first)
CREATE OR REPLACE FUNCTION es_proxy.read_all(shard integer, after_position bigint, max_count bigint)
RETURNS SETOF es.shard_events LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON shard;
  SELECT shard AS "shard", e.* FROM es.read_all(after_position, max_count) AS e;
$$;
CREATE OR REPLACE FUNCTION es_proxy.poll(shard integer, name text, partition integer, max_count bigint, consumer text,
                                          wait_ms integer)
RETURNS SETOF es.shard_events LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON shard;
  SELECT shard AS "shard", e.* FROM es.poll(name, partition, max_count, consumer, wait_ms) AS e;
$$;
CREATE OR REPLACE FUNCTION es_proxy.ack(shard integer, name text, partition integer, "position" bigint, consumer text)
RETURNS bigint LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON shard; SELECT es.ack(name, partition, "position", consumer) AS "ack";
$$;
CREATE OR REPLACE FUNCTION es_proxy.nack(shard integer, name text, partition integer, "position" bigint, error text, consumer text)
RETURNS boolean LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON shard; SELECT es.nack(name, partition, "position", error, consumer) AS "nack";
$$;
CREATE OR REPLACE FUNCTION es_proxy.claim(shard integer, name text, consumer text, lease interval)
RETURNS TABLE(partition integer, lease_until timestamptz) LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON shard; SELECT c.partition, c.lease_until FROM es.claim(name, consumer, lease) AS c;
$$;
CREATE OR REPLACE FUNCTION es_proxy.release(shard integer, name text, consumer text)
RETURNS integer LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON shard; SELECT es.release(name, consumer) AS "release";
$$;
CREATE OR REPLACE FUNCTION es_proxy.replay_parked(shard integer, name text)
RETURNS integer LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON shard; SELECT es.replay_parked(name) AS "replay_parked";
$$;
CREATE OR REPLACE FUNCTION es_proxy.wait(shard integer, name text, partition integer, timeout_ms integer)
RETURNS boolean LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; RUN ON shard; SELECT es.wait(name, partition, timeout_ms) AS "wait";
$$;
-- on the shards of an array (SPLIT: each shard gets the elements that hash to it, i.e. its own
-- number, so every row can say where it comes from); the shards run the call in parallel
CREATE OR REPLACE FUNCTION es_proxy.create_subscription(shards integer[], name text, start_after bigint,
    event_types text[], stream_type text, partitions integer, max_attempts integer)
RETURNS SETOF integer LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; SPLIT shards; RUN ON shards;
  SELECT (shards)[1] AS "create_subscription"
  FROM es.create_subscription(name, start_after, event_types, stream_type, partitions, max_attempts) AS c;
$$;
CREATE OR REPLACE FUNCTION es_proxy.drop_subscription(shards integer[], name text)
RETURNS SETOF integer LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; SPLIT shards; RUN ON shards;
  SELECT (shards)[1] AS "drop_subscription" FROM es.drop_subscription(name) AS d;
$$;
-- A proxy set up before es.subscriptions had events_behind_is_estimate: the view and the two
-- functions under it are made again below (CREATE OR REPLACE cannot change a function's result).
DO $$
BEGIN
  IF to_regprocedure('es_proxy.subscriptions(integer[])') IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM pg_proc
                      WHERE oid = to_regprocedure('es_proxy.subscriptions(integer[])')
                        AND 'events_behind_is_estimate' = ANY (proargnames)) THEN
    DROP VIEW IF EXISTS es.subscriptions;
    DROP FUNCTION IF EXISTS es_proxy.all_subscriptions();
    DROP FUNCTION es_proxy.subscriptions(integer[]);
  END IF;
END $$;
CREATE OR REPLACE FUNCTION es_proxy.subscriptions(shards integer[])
RETURNS TABLE(shard integer, name text, partition integer, "checkpoint" bigint, events_behind bigint,
              seconds_behind double precision, events_behind_is_estimate boolean, owner text,
              lease_until timestamptz, head_attempts integer, parked bigint)
LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; SPLIT shards; RUN ON shards;
  SELECT (shards)[1] AS "shard", s.name, s.partition, s."checkpoint", s.events_behind, s.seconds_behind,
         s.events_behind_is_estimate, s.owner, s.lease_until, s.head_attempts, s.parked
  FROM es.subscriptions AS s;
$$;
-- who each shard is (SPLIT: each gets its own number): scripts/shard.sh compares it with what the
-- connection strings reached from where the script ran
CREATE OR REPLACE FUNCTION es_proxy.shard_identity(shards integer[])
RETURNS TABLE(shard integer, identity text, event_store_version text) LANGUAGE plproxy AS $$
  CLUSTER 'es_shards'; SPLIT shards; RUN ON shards;
  SELECT (shards)[1] AS "shard",
         (SELECT system_identifier FROM pg_control_system()) || '/' || current_database() AS "identity",
         (SELECT extversion FROM pg_extension WHERE extname = 'event_store') AS "event_store_version";
$$;
DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN SELECT p.oid FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
           WHERE p.pronamespace = 'es_proxy'::regnamespace AND l.lanname = 'plproxy' LOOP
    EXECUTE format('COMMENT ON FUNCTION %s IS %L', f,
      'Raw PL/Proxy call of the shard''s es function of the same name on cluster es_shards (errors keep PL/Proxy''s prefixes); called by the es function, which removes them.');
  END LOOP;
END $$;

-- --- es: the store's API, routed ---------------------------------------------------------------
-- Each function calls its es_proxy twin and, on error, raises it again without PL/Proxy's
-- decorations (the EXCEPTION block costs a subtransaction on the proxy, which writes nothing;
-- the functions returning one value become the library's C relay at the end of this file where
-- the library is installed, which needs none).
CREATE OR REPLACE FUNCTION es.append_events(stream_id uuid, expected_version bigint, events jsonb[],
    stream_type text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF stream_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'stream_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN es_proxy.append_events(stream_id, expected_version, events, stream_type);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(stream_id));
END $$;
COMMENT ON FUNCTION es.append_events(uuid, bigint, jsonb[], text) IS
  'es.append_events on the shard of stream_id (es.shard_of): the same contract as on one node (ES001 with its DETAIL, idempotent retries, the stream_type of a new stream, which every shard must have declared), in the shard''s own transaction.';

CREATE OR REPLACE FUNCTION es.load_events(stream_id uuid, from_version bigint DEFAULT 0, max_count bigint DEFAULT NULL)
RETURNS SETOF es.events LANGUAGE plpgsql STABLE AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF stream_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'stream_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN QUERY SELECT * FROM es_proxy.load_events(stream_id, from_version, max_count);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(stream_id));
END $$;
COMMENT ON FUNCTION es.load_events(uuid, bigint, bigint) IS
  'es.load_events on the shard of stream_id. The whole result crosses the proxy at once: page long streams with max_count.';

CREATE OR REPLACE FUNCTION es.stream_version(stream_id uuid)
RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF stream_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'stream_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN es_proxy.stream_version(stream_id);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(stream_id));
END $$;
COMMENT ON FUNCTION es.stream_version(uuid) IS 'es.stream_version on the shard of stream_id.';

CREATE OR REPLACE FUNCTION es.save_snapshot(stream_id uuid, version bigint, state jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF stream_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'stream_id must not be null' USING ERRCODE = '22004';
  END IF;
  PERFORM es_proxy.save_snapshot(stream_id, version, state);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(stream_id));
END $$;
COMMENT ON FUNCTION es.save_snapshot(uuid, bigint, jsonb) IS 'es.save_snapshot on the shard of stream_id.';

CREATE OR REPLACE FUNCTION es.delete_stream(stream_id uuid, expected_version bigint DEFAULT NULL,
                                            hard boolean DEFAULT false)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF stream_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'stream_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN es_proxy.delete_stream(stream_id, expected_version, hard);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(stream_id));
END $$;
COMMENT ON FUNCTION es.delete_stream(uuid, bigint, boolean) IS 'es.delete_stream on the shard of stream_id.';

CREATE OR REPLACE FUNCTION es.undelete_stream(stream_id uuid)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF stream_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'stream_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN es_proxy.undelete_stream(stream_id);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(stream_id));
END $$;
COMMENT ON FUNCTION es.undelete_stream(uuid) IS 'es.undelete_stream on the shard of stream_id.';

CREATE OR REPLACE FUNCTION es.truncate_stream(stream_id uuid, before_version bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF stream_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'stream_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN es_proxy.truncate_stream(stream_id, before_version);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(stream_id));
END $$;
COMMENT ON FUNCTION es.truncate_stream(uuid, bigint) IS 'es.truncate_stream on the shard of stream_id.';

CREATE OR REPLACE FUNCTION es.load_snapshot(stream_id uuid, at_version bigint DEFAULT NULL)
RETURNS TABLE(version bigint, state jsonb, taken_at timestamptz) LANGUAGE plpgsql STABLE AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF stream_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'stream_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN QUERY SELECT * FROM es_proxy.load_snapshot(stream_id, at_version);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(stream_id));
END $$;
COMMENT ON FUNCTION es.load_snapshot(uuid, bigint) IS 'es.load_snapshot on the shard of stream_id.';

CREATE OR REPLACE FUNCTION es.open_account(holder text, initial_balance_cents bigint DEFAULT 0)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
  account_id uuid := es_proxy.uuid_v7();
  s text; m text; d text; h text;
BEGIN
  -- the store's own argument checks, with its messages (the shard judges the rest)
  IF holder IS NULL THEN
    RAISE EXCEPTION 'holder must not be null' USING ERRCODE = '22004';
  END IF;
  IF initial_balance_cents IS NULL THEN
    RAISE EXCEPTION 'initial_balance_cents must not be null' USING ERRCODE = '22004';
  END IF;
  IF initial_balance_cents < 0 THEN
    RAISE EXCEPTION 'invalid amount: the initial balance % is negative', initial_balance_cents USING ERRCODE = 'ES103';
  END IF;
  BEGIN
    PERFORM es_proxy.open_account(account_id, holder, initial_balance_cents, es_proxy.uuid_v7());
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(account_id));
  END;
  RETURN account_id;
END $$;
COMMENT ON FUNCTION es.open_account(text, bigint) IS
  'Opens an account: the proxy makes its id (a UUIDv7, so it knows the shard before the call) and appends the seed''s Opened event, whole (event_id, aggregate_id, sequence_number 1, AccountOpened, occurred_at, event_version), on the shard of that id with es.append_events(id, 0, …); returns the id.';

CREATE OR REPLACE FUNCTION es.deposit(account_id uuid, amount_cents bigint, description text DEFAULT '', expected_version bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF account_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'account_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN es_proxy.deposit(account_id, amount_cents, description, expected_version);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(account_id));
END $$;
COMMENT ON FUNCTION es.deposit(uuid, bigint, text, bigint) IS 'es.deposit on the shard of account_id.';

CREATE OR REPLACE FUNCTION es.withdraw(account_id uuid, amount_cents bigint, description text DEFAULT '', expected_version bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF account_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'account_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN es_proxy.withdraw(account_id, amount_cents, description, expected_version);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(account_id));
END $$;
COMMENT ON FUNCTION es.withdraw(uuid, bigint, text, bigint) IS 'es.withdraw on the shard of account_id (ES101 with its DETAIL as on one node).';

CREATE OR REPLACE FUNCTION es.freeze_account(account_id uuid, reason text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF account_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'account_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN es_proxy.freeze_account(account_id, reason);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(account_id));
END $$;
COMMENT ON FUNCTION es.freeze_account(uuid, text) IS 'es.freeze_account on the shard of account_id.';

CREATE OR REPLACE FUNCTION es.close_account(account_id uuid, reason text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF account_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'account_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN es_proxy.close_account(account_id, reason);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(account_id));
END $$;
COMMENT ON FUNCTION es.close_account(uuid, text) IS 'es.close_account on the shard of account_id.';

CREATE OR REPLACE FUNCTION es.account_state(account_id uuid, as_of timestamptz DEFAULT NULL, at_version bigint DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF account_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'account_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN es_proxy.account_state(account_id, as_of, at_version);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(account_id));
END $$;
COMMENT ON FUNCTION es.account_state(uuid, timestamptz, bigint) IS 'es.account_state on the shard of account_id.';

CREATE OR REPLACE FUNCTION es.account_history(account_id uuid)
RETURNS TABLE(version bigint, event_type text, amount_cents bigint, balance_cents bigint, status text,
              description text, occurred_at timestamptz, recorded_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF account_id IS NULL THEN   -- es_proxy.require_id, inline (a PERFORM costs a call)
    RAISE EXCEPTION 'account_id must not be null' USING ERRCODE = '22004';
  END IF;
  RETURN QUERY SELECT * FROM es_proxy.account_history(account_id);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, es.shard_of(account_id));
END $$;
COMMENT ON FUNCTION es.account_history(uuid) IS 'es.account_history on the shard of account_id.';

-- --- es: the global log and subscriptions, per shard ---------------------------------------------
CREATE OR REPLACE FUNCTION es.read_all(shard integer, after_position bigint, max_count bigint)
RETURNS SETOF es.shard_events LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  RETURN QUERY SELECT * FROM es_proxy.read_all(es_proxy.check_shard(shard), after_position, max_count);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, shard);
END $$;
COMMENT ON FUNCTION es.read_all(integer, bigint, bigint) IS
  'The global log of one shard after a position of that shard, gap-safe (es.read_all on the shard); a global position is (shard, global_position): a reader keeps one position per shard. No default arguments, so a one-node call es.read_all(after, n) cannot be mistaken for it.';

CREATE OR REPLACE FUNCTION es.poll(shard integer, name text, partition integer DEFAULT 0, max_count bigint DEFAULT 100, consumer text DEFAULT NULL,
                                   wait_ms integer DEFAULT 0)
RETURNS SETOF es.shard_events LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  RETURN QUERY SELECT * FROM es_proxy.poll(es_proxy.check_shard(shard), name, partition, max_count, consumer, wait_ms);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, shard);
END $$;
COMMENT ON FUNCTION es.poll(integer, text, integer, bigint, text, integer) IS
  'es.poll of the subscription''s copy on one shard (each shard has its own checkpoints); wait_ms as on one node (the proxy''s connection to the shard waits with it).';

CREATE OR REPLACE FUNCTION es.ack(shard integer, name text, partition integer, "position" bigint, consumer text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  RETURN es_proxy.ack(es_proxy.check_shard(shard), name, partition, "position", consumer);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, shard);
END $$;
COMMENT ON FUNCTION es.ack(integer, text, integer, bigint, text) IS
  'es.ack on one shard. It commits on the shard at once, not with the caller''s transaction: through the proxy a consumer gets at-least-once (exactly once needs the read model in the shard''s database).';

CREATE OR REPLACE FUNCTION es.nack(shard integer, name text, partition integer, "position" bigint, error text, consumer text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  RETURN es_proxy.nack(es_proxy.check_shard(shard), name, partition, "position", error, consumer);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, shard);
END $$;
COMMENT ON FUNCTION es.nack(integer, text, integer, bigint, text, text) IS 'es.nack on one shard.';

CREATE OR REPLACE FUNCTION es.claim(shard integer, name text, consumer text, lease interval DEFAULT '30 seconds')
RETURNS TABLE(partition integer, lease_until timestamptz) LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  RETURN QUERY SELECT * FROM es_proxy.claim(es_proxy.check_shard(shard), name, consumer, lease);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, shard);
END $$;
COMMENT ON FUNCTION es.claim(integer, text, text, interval) IS 'es.claim on one shard: leases of that shard''s copy of the subscription.';

CREATE OR REPLACE FUNCTION es.release(shard integer, name text, consumer text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  RETURN es_proxy.release(es_proxy.check_shard(shard), name, consumer);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, shard);
END $$;
COMMENT ON FUNCTION es.release(integer, text, text) IS 'es.release on one shard.';

CREATE OR REPLACE FUNCTION es.replay_parked(shard integer, name text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  RETURN es_proxy.replay_parked(es_proxy.check_shard(shard), name);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, shard);
END $$;
COMMENT ON FUNCTION es.replay_parked(integer, text) IS 'es.replay_parked on one shard.';

CREATE OR REPLACE FUNCTION es.wait(shard integer, name text, partition integer DEFAULT 0, timeout_ms integer DEFAULT 10000)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  RETURN es_proxy.wait(es_proxy.check_shard(shard), name, partition, timeout_ms);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, shard);
END $$;
COMMENT ON FUNCTION es.wait(integer, text, integer, integer) IS 'es.wait on one shard (holds the proxy''s connection to that shard while it sleeps).';

CREATE OR REPLACE FUNCTION es.create_subscription(shard integer, name text, start_after bigint DEFAULT 0,
    event_types text[] DEFAULT NULL, stream_type text DEFAULT NULL, partitions integer DEFAULT 1, max_attempts integer DEFAULT 5)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  PERFORM es_proxy.create_subscription(ARRAY[es_proxy.check_shard(shard)], name, start_after, event_types,
                                       stream_type, partitions, max_attempts);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, shard);
END $$;
COMMENT ON FUNCTION es.create_subscription(integer, text, bigint, text[], text, integer, integer) IS
  'es.create_subscription on one shard (start_after is a position of that shard''s log).';

CREATE OR REPLACE FUNCTION es.create_subscription(name text, start_after bigint DEFAULT 0,
    event_types text[] DEFAULT NULL, stream_type text DEFAULT NULL, partitions integer DEFAULT 1, max_attempts integer DEFAULT 5)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  IF start_after IS NOT NULL AND start_after <> 0 THEN
    RAISE EXCEPTION 'start_after % is a position of one shard''s log', start_after USING ERRCODE = '22023',
      HINT = 'On every shard at once, start_after is 0 (the beginning) or NULL (now); use es.create_subscription(shard, name, start_after, …) per shard.';
  END IF;
  PERFORM es_proxy.create_subscription(es_proxy.all_shards(), name, start_after, event_types, stream_type,
                                       partitions, max_attempts);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, NULL);
END $$;
COMMENT ON FUNCTION es.create_subscription(text, bigint, text[], text, integer, integer) IS
  'es.create_subscription on every shard, in parallel; each shard commits its own: after an error some shards may have it (see es.subscriptions; es.create_subscription(shard, …) / es.drop_subscription(shard, name) fix one shard).';

CREATE OR REPLACE FUNCTION es.drop_subscription(shard integer, name text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  PERFORM es_proxy.drop_subscription(ARRAY[es_proxy.check_shard(shard)], name);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, shard);
END $$;
COMMENT ON FUNCTION es.drop_subscription(integer, text) IS 'es.drop_subscription on one shard.';

CREATE OR REPLACE FUNCTION es.drop_subscription(name text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  PERFORM es_proxy.drop_subscription(es_proxy.all_shards(), name);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, NULL);
END $$;
COMMENT ON FUNCTION es.drop_subscription(text) IS 'es.drop_subscription on every shard, in parallel (each shard commits its own).';

CREATE OR REPLACE FUNCTION es_proxy.all_subscriptions()
RETURNS TABLE(shard integer, name text, partition integer, "checkpoint" bigint, events_behind bigint,
              seconds_behind double precision, events_behind_is_estimate boolean, owner text,
              lease_until timestamptz, head_attempts integer, parked bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE s text; m text; d text; h text;
BEGIN
  RETURN QUERY SELECT * FROM es_proxy.subscriptions(es_proxy.all_shards());
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  PERFORM es_proxy.reraise(s, m, d, h, NULL);
END $$;
COMMENT ON FUNCTION es_proxy.all_subscriptions() IS
  'es.subscriptions of every shard with the shard number, errors as the es functions raise them.';

CREATE OR REPLACE VIEW es.subscriptions AS SELECT * FROM es_proxy.all_subscriptions();
COMMENT ON VIEW es.subscriptions IS
  'es.subscriptions of every shard (queried in parallel), with the shard number: checkpoints, lag (events_behind_is_estimate as on one node), leases and parked events of each shard''s copy of each subscription.';

-- Signatures that changed: a proxy set up before es.append_events had stream_type, or before
-- es.poll had wait_ms. The old functions go (beside the store's signatures above, a call with the
-- old arguments would be ambiguous) and their privileges pass to the ones that replace them.
DO $$
DECLARE
  f record;
  g record;
BEGIN
  FOR f IN SELECT * FROM (VALUES
      ('es.append_events(uuid, bigint, jsonb[])', 'es.append_events(uuid, bigint, jsonb[], text)'),
      ('es_proxy.append_events(uuid, bigint, jsonb[])', 'es_proxy.append_events(uuid, bigint, jsonb[], text)'),
      ('es.poll(integer, text, integer, bigint, text)', 'es.poll(integer, text, integer, bigint, text, integer)'),
      ('es_proxy.poll(integer, text, integer, bigint, text)', 'es_proxy.poll(integer, text, integer, bigint, text, integer)')
    ) AS v(old, new)
  LOOP
    CONTINUE WHEN to_regprocedure(f.old) IS NULL;
    IF (SELECT proacl FROM pg_proc WHERE oid = to_regprocedure(f.old)) IS NOT NULL THEN
      EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.new);
      FOR g IN SELECT a.grantee, a.is_grantable
                 FROM pg_proc p, aclexplode(p.proacl) a
                WHERE p.oid = to_regprocedure(f.old) AND a.privilege_type = 'EXECUTE'
                  AND a.grantee <> p.proowner
      LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', f.new,
          CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
          CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
      END LOOP;
    END IF;
    EXECUTE format('DROP FUNCTION %s', f.old);
  END LOOP;
END $$;

-- The routed functions returning one value, as the store's C relay where the event_store library
-- is installed on the proxy's server (docs/sharding.md "Cost"): `es_proxy_relay` calls the
-- es_proxy twin of the same name through fmgr and gives its error back without PL/Proxy's
-- decorations, as es_proxy.reraise does, but without the PL/pgSQL call and the EXCEPTION block's
-- subtransaction (~13,000 instructions per call). Same signatures, defaults, volatility, grants
-- and comments (CREATE OR REPLACE keeps the function); where the library is missing or has no
-- relay (another version), the PL/pgSQL functions above stay.
--
-- The relay also computes the shard (es.stream_hash & (shard count - 1), as PL/Proxy does) and
-- calls es_proxy.<f>_on_<shard>, the twin with a constant RUN ON <shard>: PL/Proxy then runs no
-- hash query through SPI (~9,500 instructions per call); the es_proxy twin still counts for
-- privileges, and is called where an _on_ function is missing. One such function per shard and
-- routed function, made here from the twin's body; those of shards the cluster no longer has
-- are dropped.
DO $do$
DECLARE
  f regprocedure;
  t regprocedure;
  n integer := es.shard_count();
  k integer;
BEGIN
  FOR t IN SELECT p.oid FROM pg_proc p
            WHERE p.pronamespace = 'es_proxy'::regnamespace AND p.proname ~ '_on_[0-9]+$'
              AND substring(p.proname FROM '_on_([0-9]+)$')::integer >= n LOOP
    EXECUTE format('DROP FUNCTION %s', t);
  END LOOP;
  IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'event_store') THEN
    RETURN;
  END IF;
  BEGIN
    FOR f IN SELECT unnest(ARRAY[
        'es.append_events(uuid, bigint, jsonb[], text)', 'es.stream_version(uuid)',
        'es.save_snapshot(uuid, bigint, jsonb)', 'es.delete_stream(uuid, bigint, boolean)',
        'es.undelete_stream(uuid)', 'es.truncate_stream(uuid, bigint)',
        'es.deposit(uuid, bigint, text, bigint)', 'es.withdraw(uuid, bigint, text, bigint)',
        'es.freeze_account(uuid, text)', 'es.close_account(uuid, text)',
        'es.account_state(uuid, timestamptz, bigint)']::regprocedure[])
    LOOP
      t := format('es_proxy.%I(%s)', p.proname, oidvectortypes(p.proargtypes))::regprocedure
           FROM pg_proc p WHERE p.oid = f;
      FOR k IN 0 .. n - 1 LOOP
        EXECUTE format('CREATE OR REPLACE FUNCTION es_proxy.%I(%s) RETURNS %s LANGUAGE plproxy AS %L',
          (SELECT proname FROM pg_proc WHERE oid = t) || '_on_' || k, pg_get_function_arguments(t),
          pg_get_function_result(t),
          regexp_replace((SELECT prosrc FROM pg_proc WHERE oid = t),
                         'RUN ON es_proxy\.route\(\w+\);', format('RUN ON %s;', k)));
        EXECUTE format('COMMENT ON FUNCTION es_proxy.%I(%s) IS %L',
          (SELECT proname FROM pg_proc WHERE oid = t) || '_on_' || k, pg_get_function_identity_arguments(t),
          format('%s on shard %s (RUN ON %s: no hash query): what the relay es.%s calls for the streams of that shard.',
                 t, k, k, (SELECT proname FROM pg_proc WHERE oid = t)));
      END LOOP;
      EXECUTE format('CREATE OR REPLACE FUNCTION %s.%I(%s) RETURNS %s LANGUAGE c %s AS %L, %L',
        'es', (SELECT proname FROM pg_proc WHERE oid = f), pg_get_function_arguments(f),
        pg_get_function_result(f),
        CASE (SELECT provolatile FROM pg_proc WHERE oid = f) WHEN 's' THEN 'STABLE' ELSE 'VOLATILE' END,
        '$libdir/event_store', 'es_proxy_relay');
    END LOOP;
  EXCEPTION WHEN undefined_file OR undefined_function OR insufficient_privilege THEN
    NULL;   -- no loadable library with the relay (another version?): the PL/pgSQL functions
  END;
END $do$;
