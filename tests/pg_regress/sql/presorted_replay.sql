-- es.presorted_replay: a replay ordered by version over one stream's (stream_id, version) index
-- is not sorted again by the executor (PostgreSQL 15: the store's planner hook; 16 and later:
-- the planner itself), and gives the same state as with the sort. Every other shape keeps its
-- ordering. On 15 EXPLAIN VERBOSE shows the aggregate without its ORDER BY where the hook
-- dropped it; on 18 the Aggref keeps it and the plan shows no Sort (presorted_replay_1.out).
-- In a database of its own, so the streams it makes are not in the other files' reads.
CREATE DATABASE es_presorted_replay;
\c es_presorted_replay
SET client_min_messages = warning;
CREATE EXTENSION event_store;
\ir ../error_of.sql
RESET client_min_messages;
\pset null '(null)'
-- A stream whose rows are not in version order on disk: after its Opened, the space a
-- truncated stream left at the start of the table takes its later events.
SELECT es.append_events('9a000000-0000-0000-0000-0000000000f1', 0,
  array_agg(jsonb_build_object('type', 'Filler', 'pad', repeat('x', 400)) ORDER BY g)) AS filler
FROM generate_series(1, 300) g;
SELECT es.append_events('9a000000-0000-0000-0000-0000000000a1', 0,
  ARRAY['{"type":"Opened","account_holder":"Ada","initial_balance_cents":100}']::jsonb[]) AS opened;
SELECT es.truncate_stream('9a000000-0000-0000-0000-0000000000f1', 300) AS removed;
VACUUM es.events;
-- a new session: its first insert looks for free space from the start of the table
\c es_presorted_replay
\pset null '(null)'
SELECT es.append_events('9a000000-0000-0000-0000-0000000000a1', 1,
  array_agg(CASE WHEN g % 3 = 0 THEN '{"type":"Withdrawn","amount_cents":7,"description":"out"}'::jsonb
                 ELSE '{"type":"Deposited","amount_cents":5,"description":"in"}'::jsonb END ORDER BY g)) AS v
FROM generate_series(1, 2000) g;
ANALYZE es.events;
SELECT array_agg(version ORDER BY ctid) <> array_agg(version ORDER BY version) AS out_of_order_on_disk
FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
-- in disk order the fold would fail (the first row is not the Opened): the order matters
SET enable_indexscan = off; SET enable_bitmapscan = off;
SELECT error_of($$SELECT es.account_replay(data) FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1'$$) LIKE 'ES003%' AS unordered_fails;
RESET enable_indexscan; RESET enable_bitmapscan;

-- 1. Over the index: the ordering is dropped (15), the state is the sorted fold's.
SET enable_seqscan = off; SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF, VERBOSE)
SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
SELECT es.account_replay(data ORDER BY version) AS with_hook
FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
SET es.presorted_replay = off;
EXPLAIN (COSTS OFF, VERBOSE)
SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
SELECT es.account_replay(data ORDER BY version) AS without_hook
FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
RESET es.presorted_replay;
-- the two-argument form, a version range, and the state read through ->>
EXPLAIN (COSTS OFF, VERBOSE)
SELECT es.account_replay('{"holder_name":"Ada","balance_cents":100,"status":"Active","version":1}', data ORDER BY version)->>'balance_cents'
FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1' AND version > 1 AND version <= 1500;
SELECT es.account_replay('{"holder_name":"Ada","balance_cents":100,"status":"Active","version":1}', data ORDER BY version)->>'balance_cents' AS from_state,
       (SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1' AND version <= 1500)->>'balance_cents' AS full
FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1' AND version > 1 AND version <= 1500;
RESET enable_seqscan; RESET enable_bitmapscan;

-- 2. A stream that is most of the table, sorting past work_mem: the planner's first choice
-- is a scan of the table; the hook (15) plans the index and keeps it when it costs less than
-- the scan and the sort.
SET work_mem = '64kB';
SET es.presorted_replay = off;
EXPLAIN (COSTS OFF, VERBOSE)
SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
RESET es.presorted_replay;
EXPLAIN (COSTS OFF, VERBOSE)
SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
SELECT es.account_replay(data ORDER BY version) = (SELECT es.account_state('9a000000-0000-0000-0000-0000000000a1')) AS same_as_account_state
FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
RESET work_mem;

-- 3. Shapes that keep their ordering.
-- a sequential scan (the disk order is not the version order)
SET enable_indexscan = off; SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF, VERBOSE)
SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
SELECT es.account_replay(data ORDER BY version)->>'balance_cents' AS seq_scan
FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
-- a bitmap scan (also in disk order)
SET enable_seqscan = off; SET enable_bitmapscan = on;
EXPLAIN (COSTS OFF, VERBOSE)
SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
SELECT es.account_replay(data ORDER BY version)->>'balance_cents' AS bitmap_scan
FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
RESET enable_indexscan; RESET enable_bitmapscan; RESET enable_seqscan;
SET enable_seqscan = off; SET enable_bitmapscan = off;
-- descending order
EXPLAIN (COSTS OFF, VERBOSE)
SELECT es.account_replay(data ORDER BY version DESC) FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
SELECT error_of($$SELECT es.account_replay(data ORDER BY version DESC) FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1'$$) LIKE 'ES003%' AS descending_fails;
-- grouped
EXPLAIN (COSTS OFF, VERBOSE)
SELECT stream_id, es.account_replay(data ORDER BY version) FROM es.events
WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1' GROUP BY stream_id;
-- a second ordered aggregate of another function in the same query
EXPLAIN (COSTS OFF, VERBOSE)
SELECT es.account_replay(data ORDER BY version), array_agg(version ORDER BY version) FROM es.events
WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1' AND version <= 3;
SELECT es.account_replay(data ORDER BY version)->>'balance_cents' AS balance, array_agg(version ORDER BY version) AS versions
FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1' AND version <= 3;
-- ordered by another column, and several streams (= ANY)
EXPLAIN (COSTS OFF, VERBOSE)
SELECT es.account_replay(data ORDER BY global_position) FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1';
EXPLAIN (COSTS OFF, VERBOSE)
SELECT es.account_replay(data ORDER BY version) FROM es.events
WHERE stream_id = ANY (ARRAY['9a000000-0000-0000-0000-0000000000a1', '9a000000-0000-0000-0000-0000000000a2']::uuid[]);
-- as a window function
EXPLAIN (COSTS OFF, VERBOSE)
SELECT version, es.account_replay(data) OVER (ORDER BY version) FROM es.events
WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1' AND version <= 3;
SELECT version, (es.account_replay(data) OVER (ORDER BY version))->>'balance_cents' AS balance FROM es.events
WHERE stream_id = '9a000000-0000-0000-0000-0000000000a1' AND version <= 3 ORDER BY version;
RESET enable_seqscan; RESET enable_bitmapscan;

-- 3b. es.replay of a declared type: its ordering goes the same way, with the same state.
CREATE FUNCTION public.seq_evolve(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_build_object('n', (state->>'n')::int + 1, 'trail', (state->>'trail') || (event->>'i')) $$;
SELECT es.define_aggregate('seq', 'public.seq_evolve(jsonb,jsonb)', '{"n": 0, "trail": ""}');
SELECT es.append_events('9a000000-0000-0000-0000-0000000000b1', 0,
  array_agg(jsonb_build_object('type', 'Step', 'i', g % 10) ORDER BY g), 'seq') AS v FROM generate_series(1, 30) g;
SET enable_seqscan = off; SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF, VERBOSE)
SELECT es.replay('seq', data ORDER BY version) FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000b1';
SELECT es.replay('seq', data ORDER BY version) AS with_hook FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000b1';
SET es.presorted_replay = off;
SELECT es.replay('seq', data ORDER BY version) AS without_hook FROM es.events WHERE stream_id = '9a000000-0000-0000-0000-0000000000b1';
RESET es.presorted_replay;
RESET enable_seqscan; RESET enable_bitmapscan;

-- 4. Fuzz: random queries of these shapes (stream, version range, direction, arity, scans
-- allowed, work_mem) give the same result, or the same error, with the hook on and off.
SELECT setseed(0.23);
DO $fuzz$
DECLARE
  streams text[] := ARRAY['9a000000-0000-0000-0000-0000000000a1', '90000000-0000-0000-0000-000000000001',
                          '9a000000-0000-0000-0000-0000000000f1', '9a000000-0000-0000-0000-0000000000ff',
                          '9a000000-0000-0000-0000-0000000000b1'];
  shapes text[] := ARRAY[
    'SELECT es.account_replay(data ORDER BY version)::text FROM es.events WHERE stream_id = %L%s',
    'SELECT (es.account_replay(data ORDER BY version %s)->>''balance_cents'') FROM es.events WHERE stream_id = %L%s',
    'SELECT es.account_replay(''{"holder_name":"Ada","balance_cents":100,"status":"Active","version":1}'', data ORDER BY version)::text FROM es.events WHERE stream_id = %L AND version > 1%s',
    'SELECT es.account_replay(data ORDER BY version)::text || count(*) FROM es.events WHERE stream_id = %L%s',
    'SELECT string_agg(s::text, '','' ORDER BY g) FROM (SELECT stream_id g, es.account_replay(data ORDER BY version) s FROM es.events WHERE stream_id = %L%s GROUP BY stream_id) x',
    'SELECT es.account_replay(data ORDER BY version)::text || array_agg(version ORDER BY version DESC)::text FROM es.events WHERE stream_id = %L%s',
    'SELECT es.replay(''seq'', data ORDER BY version)::text FROM es.events WHERE stream_id = %L%s',
    'SELECT string_agg(b, '','' ORDER BY version) FROM (SELECT version, (es.account_replay(data) OVER (ORDER BY version))->>''balance_cents'' b FROM es.events WHERE stream_id = %L%s) w'];
  q text; s text; bound text; on_result text; off_result text; runs int := 0; i int; shape int;
BEGIN
  FOR i IN 1..120 LOOP
    s := streams[1 + floor(random() * array_length(streams, 1))::int];
    bound := CASE floor(random() * 4)::int
      WHEN 0 THEN ''
      WHEN 1 THEN format(' AND version <= %s', 1 + floor(random() * 2100)::int)
      WHEN 2 THEN format(' AND version BETWEEN 1 AND %s', 1 + floor(random() * 2100)::int)
      ELSE format(' AND version < %s AND event_type <> %L', 1 + floor(random() * 2100)::int, 'Frozen') END;
    shape := 1 + floor(random() * array_length(shapes, 1))::int;
    q := CASE shape
      WHEN 2 THEN format(shapes[2], CASE WHEN random() < 0.5 THEN 'ASC' ELSE 'DESC' END, s, bound)
      ELSE format(shapes[shape], s, bound) END;
    PERFORM set_config('enable_seqscan', (random() < 0.5)::text, true);
    PERFORM set_config('enable_bitmapscan', (random() < 0.5)::text, true);
    PERFORM set_config('enable_indexscan', (random() < 0.8)::text, true);
    PERFORM set_config('work_mem', CASE WHEN random() < 0.5 THEN '64kB' ELSE '4MB' END, true);
    PERFORM set_config('es.presorted_replay', 'on', true);
    BEGIN EXECUTE q INTO on_result; EXCEPTION WHEN OTHERS THEN on_result := 'error ' || SQLSTATE; END;
    PERFORM set_config('es.presorted_replay', 'off', true);
    BEGIN EXECUTE q INTO off_result; EXCEPTION WHEN OTHERS THEN off_result := 'error ' || SQLSTATE; END;
    IF on_result IS DISTINCT FROM off_result THEN
      RAISE EXCEPTION 'fuzz: % gives % with the hook, % without', q, on_result, off_result;
    END IF;
    runs := runs + 1;
  END LOOP;
  RAISE NOTICE 'fuzz: % queries agree', runs;
END
$fuzz$;
\c postgres
DROP DATABASE es_presorted_replay WITH (FORCE);
