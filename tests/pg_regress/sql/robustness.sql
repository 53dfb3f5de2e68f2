-- Never crash the server: the native read, the native writes and the jsonb reader after what
-- databases do to their tables (rolled-back appends leave dead index entries, savepoints,
-- VACUUM, a column a DBA adds and drops, TOASTed states, an ERROR in the middle of a scan).
-- The suite runs with MALLOC_PERTURB_ and fails when a backend dies of a signal.
\pset null '(null)'
CREATE EXTENSION IF NOT EXISTS amcheck;

-- 1. A read after a rolled-back append: the rolled-back batch leaves dead entries in the
-- (stream_id, version) index, which the native scan kills as it passes them.
SELECT es.append_events('a9000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"A"}','{"type":"B"}']::jsonb[]) AS v;
BEGIN;
SELECT es.append_events('a9000000-0000-0000-0000-000000000001', NULL,
       (SELECT array_agg(jsonb_build_object('type', 'C', 'i', g)) FROM generate_series(1, 400) g)) AS v;
ROLLBACK;
SELECT count(*) AS events FROM es.load_events('a9000000-0000-0000-0000-000000000001');
SELECT count(*) AS events_again FROM es.load_events('a9000000-0000-0000-0000-000000000001');
SELECT version, event_type FROM es.load_events('a9000000-0000-0000-0000-000000000001', 0, 5) ORDER BY version;
-- the same for an account: replay (account_state at an old version) and the history share the scan
SELECT es.append_events('a9000000-0000-0000-0000-0000000000a1', 0,
       ARRAY['{"type":"Opened","account_holder":"R","initial_balance_cents":100}']::jsonb[]) AS v;
BEGIN;
SELECT es.append_events('a9000000-0000-0000-0000-0000000000a1', NULL,
       (SELECT array_agg(jsonb_build_object('type', 'Deposited', 'amount_cents', g, 'description', 'x')) FROM generate_series(1, 400) g)) AS v;
ROLLBACK;
SELECT es.deposit('a9000000-0000-0000-0000-0000000000a1', 5, 'kept') AS v;
SELECT es.account_state('a9000000-0000-0000-0000-0000000000a1', at_version => 1) AS at_1,
       es.account_state('a9000000-0000-0000-0000-0000000000a1') AS now;
SELECT version, event_type, balance_cents FROM es.account_history('a9000000-0000-0000-0000-0000000000a1') ORDER BY version;
-- the same after VACUUM removed the dead rows and their index entries
VACUUM es.events;
VACUUM es.streams;
SELECT count(*) AS after_vacuum FROM es.load_events('a9000000-0000-0000-0000-000000000001');
SELECT es.account_state('a9000000-0000-0000-0000-0000000000a1', at_version => 1) AS at_1_after_vacuum;

-- 2. Savepoints: a batch rolled back to a savepoint, then the stream goes on, gapless.
BEGIN;
SELECT es.append_events('a9000000-0000-0000-0000-000000000002', 0, ARRAY['{"type":"S1"}']::jsonb[]) AS v;
SAVEPOINT sp;
SELECT es.append_events('a9000000-0000-0000-0000-000000000002', 1,
       (SELECT array_agg(jsonb_build_object('type', 'Gone', 'i', g)) FROM generate_series(1, 300) g)) AS v;
SELECT count(*) AS inside FROM es.load_events('a9000000-0000-0000-0000-000000000002');
ROLLBACK TO SAVEPOINT sp;
SELECT count(*) AS after_rollback_to FROM es.load_events('a9000000-0000-0000-0000-000000000002');
SELECT es.append_events('a9000000-0000-0000-0000-000000000002', 1, ARRAY['{"type":"S2"}']::jsonb[]) AS v;
SAVEPOINT sp2;
SELECT error_of($$SELECT es.append_events('a9000000-0000-0000-0000-000000000002', 1, ARRAY['{"type":"Stale"}']::jsonb[])$$);
ROLLBACK TO SAVEPOINT sp2;
SELECT es.append_events('a9000000-0000-0000-0000-000000000002', 2, ARRAY['{"type":"S3"}']::jsonb[]) AS v;
COMMIT;
SELECT version, event_type FROM es.load_events('a9000000-0000-0000-0000-000000000002') ORDER BY version;
SELECT count(*) AS read_all_sees_them FROM es.read_all(0, 1000000) WHERE stream_id = 'a9000000-0000-0000-0000-000000000002';

-- 3. A column a DBA adds and drops: its attribute stays in es.events, marked dropped. Reads,
-- appends and commands go on; the rows they return have the table's row type.
ALTER TABLE es.events ADD COLUMN tenant text DEFAULT 'acme';
SELECT es.append_events('a9000000-0000-0000-0000-000000000001', 2, ARRAY['{"type":"WithTenant"}']::jsonb[]) AS v;
SELECT version, event_type, tenant FROM es.load_events('a9000000-0000-0000-0000-000000000001') ORDER BY version DESC LIMIT 2;
-- rows stored before the column was added (read with its default) and after it, in one read:
-- each read row is the table's row, whichever way the read put it
SELECT (SELECT array_agg(t ORDER BY version) FROM es.load_events('a9000000-0000-0000-0000-000000000001') t)
     = (SELECT array_agg(e ORDER BY version) FROM es.events e WHERE stream_id = 'a9000000-0000-0000-0000-000000000001') AS load_events_as_table;
SELECT (SELECT array_agg(t ORDER BY global_position) FROM es.read_all(0, 1000000) t)
     = (SELECT array_agg(e ORDER BY global_position) FROM es.events e) AS read_all_as_table;
ALTER TABLE es.events DROP COLUMN tenant;
SELECT count(*) AS after_drop FROM es.load_events('a9000000-0000-0000-0000-000000000001');
SELECT version, event_type FROM es.load_events('a9000000-0000-0000-0000-000000000001', 400) ORDER BY version;
SELECT count(*) > 0 AS read_all_after_drop FROM es.read_all(0, 1000000);
-- rows put as values (the dropped attribute NULL) stop at the gap-safe bound too: the
-- transaction's own row above it is not returned (the live events alone, read natively: the
-- archive retention.sql filled would send the read through SQL)
BEGIN;
SET LOCAL es.include_archived = off;
SELECT es.append_events('a9000000-0000-0000-0000-000000000f01', 0, ARRAY['{"type":"InFlight"}']::jsonb[]) AS v;
SELECT count(*) AS beyond_in_flight_after_drop FROM es.read_all((SELECT max(global_position) - 2 FROM es.events), 10);
COMMIT;
SELECT count(*) AS after_commit_after_drop FROM es.read_all((SELECT max(global_position) - 2 FROM es.events), 10);
SELECT es.append_events('a9000000-0000-0000-0000-000000000001', 3, ARRAY['{"type":"AfterDrop"}','{"type":"AfterDrop","metadata":{"m":1}}']::jsonb[]) AS v;
SELECT version, event_type, metadata FROM es.load_events('a9000000-0000-0000-0000-000000000001', 3) ORDER BY version;
SELECT es.deposit('a9000000-0000-0000-0000-0000000000a1', 7, 'after drop') AS v;
SELECT es.account_state('a9000000-0000-0000-0000-0000000000a1', at_version => 2) AS at_2,
       es.account_state('a9000000-0000-0000-0000-0000000000a1') AS now;
SELECT version, balance_cents FROM es.account_history('a9000000-0000-0000-0000-0000000000a1') ORDER BY version;
SELECT es.account_replay(data ORDER BY version) AS replayed FROM es.events WHERE stream_id = 'a9000000-0000-0000-0000-0000000000a1';
-- and on es.streams
ALTER TABLE es.streams ADD COLUMN note text;
ALTER TABLE es.streams DROP COLUMN note;
SELECT es.withdraw('a9000000-0000-0000-0000-0000000000a1', 2, 'streams column dropped') AS v;
SELECT es.append_events('a9000000-0000-0000-0000-000000000003', NULL, ARRAY['{"type":"New"}']::jsonb[]) AS v;
SELECT version, state->>'balance_cents' AS balance FROM es.streams WHERE stream_id = 'a9000000-0000-0000-0000-0000000000a1';
-- a stream's life read from a row older than its column (the column added after the row was
-- written, as `ALTER EXTENSION ... UPDATE` from 0.1.0 adds it): the column's missing value,
-- here a default, is what the read sees (rolled back)
BEGIN;
ALTER TABLE es.streams DROP COLUMN truncated_before;
ALTER TABLE es.streams ADD COLUMN truncated_before bigint DEFAULT 2;
SELECT error_of($$SELECT count(*) FROM es.load_events('a9000000-0000-0000-0000-000000000001')$$) AS below_the_missing_cut;
SELECT count(*) AS from_the_missing_cut FROM es.load_events('a9000000-0000-0000-0000-000000000001', 1);
ROLLBACK;
SELECT count(*) AS whole_again FROM es.load_events('a9000000-0000-0000-0000-000000000001');
-- a column a DBA changes the type of is not the store's column any more: the SQL path serves
ALTER TABLE es.events ALTER COLUMN event_version TYPE bigint;
SELECT es.append_events('a9000000-0000-0000-0000-000000000003', 1, ARRAY['{"type":"Retyped","event_version":3}']::jsonb[]) AS v;
SELECT version, event_type, event_version FROM es.load_events('a9000000-0000-0000-0000-000000000003') ORDER BY version;
ALTER TABLE es.events ALTER COLUMN event_version TYPE integer;
-- a CHECK constraint a DBA adds is enforced on every write path
ALTER TABLE es.events ADD CONSTRAINT no_forbidden CHECK (event_type <> 'Forbidden');
SELECT split_part(error_of($$SELECT es.append_events('a9000000-0000-0000-0000-000000000003', NULL, ARRAY['{"type":"Forbidden"}']::jsonb[])$$), E'\n', 1) AS refused;
ALTER TABLE es.events DROP CONSTRAINT no_forbidden;
-- a secondary index on es.streams gets an entry for every row version the bump writes
CREATE INDEX streams_updated_idx ON es.streams (updated_at);
SELECT max(es.append_events('a9000000-0000-0000-0000-000000000004', NULL, ARRAY['{"type":"Loop"}']::jsonb[])) AS v
FROM generate_series(1, 50);
SELECT bt_index_check('es.streams_updated_idx', true) IS NOT NULL AS checked;
DROP INDEX es.streams_updated_idx;

-- 4. A state too large for the row: a holder's name (320,000 characters that do not compress)
-- that makes the Opened event and the account state TOASTed, stored out of line.
SELECT es.open_account((SELECT string_agg(md5(g::text), '') FROM generate_series(1, 10000) g), 1) AS big \gset
SELECT es.deposit(:'big', 2) AS v;
SELECT es.withdraw(:'big', 1) AS v;
SELECT length(es.account_state(:'big')->>'holder_name') AS holder_length,
       es.account_state(:'big')->>'balance_cents' AS balance,
       es.account_state(:'big', at_version => 2)->>'balance_cents' AS balance_at_2;

-- 5. An ERROR in the middle of a native scan (the tuple store spills past work_mem and hits
-- temp_file_limit): the resource owner releases the scan, the session goes on.
SELECT es.append_events('a9000000-0000-0000-0000-000000000005', 0,
       (SELECT array_agg(jsonb_build_object('type', 'Big', 'pad', repeat('p', 200), 'i', g)) FROM generate_series(1, 2000) g)) AS v;
SET work_mem = '64kB';
SET temp_file_limit = '64kB';
SELECT regexp_replace(error_of($$SELECT count(*) FROM es.load_events('a9000000-0000-0000-0000-000000000005')$$), '\d+kB', 'NkB') AS mid_scan_error;
DO $$
BEGIN
    PERFORM count(*) FROM es.load_events('a9000000-0000-0000-0000-000000000005');
EXCEPTION WHEN configuration_limit_exceeded THEN
    RAISE NOTICE 'caught in a subtransaction';
END $$;
RESET temp_file_limit;
RESET work_mem;
SELECT count(*) AS whole_stream FROM es.load_events('a9000000-0000-0000-0000-000000000005');

-- 6. Arithmetic at the edges: versions and balances move with checked arithmetic.
SELECT error_of($$SELECT es.account_replay('{"holder_name":"h","balance_cents":0,"status":"Active","version":9223372036854775807}'::jsonb,
                                           '{"type":"Deposited","amount_cents":1,"description":"x"}'::jsonb)$$);
SELECT error_of($$SELECT es.account_replay('{"holder_name":"h","balance_cents":0,"status":"Active","version":-3}'::jsonb,
                                           '{"type":"Deposited","amount_cents":1,"description":"x"}'::jsonb)$$);
SELECT error_of($$SELECT es.account_replay('{"holder_name":"h","balance_cents":-5,"status":"Active","version":3}'::jsonb,
                                           '{"type":"Deposited","amount_cents":1,"description":"x"}'::jsonb)$$);
SELECT error_of($$SELECT es.account_replay('{"holder_name":"h","balance_cents":9223372036854775807,"status":"Active","version":3}'::jsonb,
                                           '{"type":"Deposited","amount_cents":1,"description":"x"}'::jsonb)$$);
SELECT es.open_account('Rich', 9223372036854775807) AS rich \gset
SELECT regexp_replace(error_of(format($$SELECT es.deposit(%L, 1)$$, :'rich')), '[0-9a-f-]{36}', '<id>') AS deposit_overflow;
SELECT regexp_replace(error_of(format($$SELECT es.append_events(%L, NULL, ARRAY['{"type":"Deposited","amount_cents":1,"description":"x"}']::jsonb[])$$, :'rich')), '[0-9a-f-]{36}', '<id>') AS append_overflow;
SELECT es.withdraw(:'rich', 9223372036854775807) AS v;
SELECT es.account_state(:'rich')->>'balance_cents' AS emptied;
-- the aggregate's support functions take an internal state, which SQL cannot pass them
SELECT error_of($$SELECT es.account_replay_step(NULL, '{"type":"Opened"}'::jsonb)$$);
SELECT error_of($$SELECT es.account_replay_final(NULL)$$);

-- The store is physically sound after all of it.
SELECT x.indexrelid::regclass AS index, bt_index_check(x.indexrelid, true) IS NOT NULL AS checked
FROM pg_index x WHERE x.indrelid IN ('es.events'::regclass, 'es.streams'::regclass, 'es.snapshots'::regclass)
ORDER BY x.indexrelid::regclass::text;
SELECT count(*) AS heap_problems FROM verify_heapam('es.events');
SELECT count(*) AS heap_problems FROM verify_heapam('es.streams');
SELECT count(*) AS heap_problems FROM verify_heapam('es.snapshots');

-- 7. Positions at the edges, in a database of their own (the sequence is changed by hand).
CREATE DATABASE es_regress_positions TEMPLATE template0;
\c es_regress_positions
CREATE EXTENSION event_store;
CREATE FUNCTION error_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hnt text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || coalesce(E'\nHINT: ' || nullif(hnt, ''), '');
END $$;
SELECT es.append_events('a9000000-0000-0000-0000-000000000001', 0, ARRAY['{"type":"A"}','{"type":"B"}','{"type":"C"}']::jsonb[]) AS v;
-- a unique index a DBA adds to es.events: its violation, raised by the native insert after the
-- position's draw, comes back unchanged (23505 naming the index), never taken for a conflict
-- of the store's own event id or position
CREATE UNIQUE INDEX events_one_type_per_stream ON es.events (stream_id, event_type);
SELECT error_of($$SELECT es.append_events('a9000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"A"}']::jsonb[])$$) AS refused;
DROP INDEX es.events_one_type_per_stream;
-- a logical-replication subscriber that becomes the primary has the rows but not the sequence
-- (PostgreSQL 15 does not replicate sequences): simulated by setting it back
SELECT setval('es.global_position_seq', 1, false) IS NOT NULL AS set_back;
\c es_regress_positions
SELECT es.append_events('a9000000-0000-0000-0000-000000000002', 0, ARRAY['{"type":"AfterFailover"}']::jsonb[]) AS v;
SELECT global_position, event_type FROM es.read_all(0, 10) ORDER BY global_position;
-- set back under a running session, which checked the sequence already: a clear error, and
-- the next call works
SELECT setval('es.global_position_seq', 2) IS NOT NULL AS set_back;
SELECT error_of($$SELECT es.append_events('a9000000-0000-0000-0000-000000000003', 0, ARRAY['{"type":"X"}']::jsonb[])$$);
SELECT es.append_events('a9000000-0000-0000-0000-000000000003', 0, ARRAY['{"type":"Retried"}']::jsonb[]) AS v;
SELECT global_position, event_type FROM es.read_all(4, 10) ORDER BY global_position;
-- the last position a bigint holds is stored and read like any other; past it, a clear error
SELECT setval('es.global_position_seq', 9223372036854775806) IS NOT NULL AS near_the_end;
SELECT es.append_events('a9000000-0000-0000-0000-000000000004', 0, ARRAY['{"type":"Last"}']::jsonb[]) AS v;
SELECT global_position, event_type FROM es.read_all(9223372036854775806, 10);
SELECT count(*) AS all_events FROM es.read_all(0, 100);
SELECT error_of($$SELECT es.append_events('a9000000-0000-0000-0000-000000000004', 1, ARRAY['{"type":"PastTheEnd"}']::jsonb[])$$);
-- a database whose encoding is not UTF-8: a type that is not UTF-8 is named as such
CREATE DATABASE es_regress_ascii TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C';
\c es_regress_ascii
CREATE EXTENSION event_store;
CREATE FUNCTION error_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hnt text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || coalesce(E'\nHINT: ' || nullif(hnt, ''), '');
END $$;
SELECT error_of(format($$SELECT es.append_events('a9000000-0000-0000-0000-000000000001', 0, ARRAY[%L]::jsonb[])$$,
                       '{"type":"' || convert_from('\xe9'::bytea, 'SQL_ASCII') || '"}'));
SELECT error_of(format($$SELECT es.append_events('a9000000-0000-0000-0000-000000000001', 0, ARRAY[%L]::jsonb[])$$,
                       '{"type":"A","event_id":"' || convert_from('\xe9'::bytea, 'SQL_ASCII') || '"}'));
SELECT es.append_events('a9000000-0000-0000-0000-000000000001', 0, ARRAY['{"type":"Ascii"}']::jsonb[]) AS v;
-- An ERROR in the middle of a batched native read (no column ever dropped, so the reads put the
-- stored tuples in batches under one guard): the tuple store spills past work_mem and hits
-- temp_file_limit inside a batch; the statement fails with 53400 (caught by error_of's
-- subtransaction), and the session reads on.
CREATE DATABASE es_regress_batch;
\c es_regress_batch
CREATE EXTENSION event_store;
CREATE FUNCTION error_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT es.append_events('a9000000-0000-0000-0000-000000000006', 0,
       (SELECT array_agg(jsonb_build_object('type', 'Big', 'pad', repeat('p', 200), 'i', g)) FROM generate_series(1, 2000) g)) AS v;
SET work_mem = '64kB';
SET temp_file_limit = '64kB';
SELECT error_of($$SELECT count(*) FROM es.load_events('a9000000-0000-0000-0000-000000000006')$$) AS load_events_mid_batch,
       error_of($$SELECT count(*) FROM es.read_all(0, 5000)$$) AS read_all_mid_batch;
RESET temp_file_limit;
SELECT count(*) AS whole_stream, sum((data->>'i')::int) AS sum_i FROM es.load_events('a9000000-0000-0000-0000-000000000006');
SELECT count(*) AS whole_log, min(global_position) AS first, max(global_position) AS last FROM es.read_all(0, 5000);
RESET work_mem;
-- Results live in the backend's result pool, lent to the per-query context of the query that
-- reads them and reset when that context goes (docs/reference.md §3): a cursor fetched after
-- the function returned, while other reads run (they keep their rows in their own query's
-- memory); two reads in one query; a read repeated by rescans; a scrollable cursor read
-- backwards from a result spilled past work_mem; a cursor held past its commit; a cursor
-- dropped by a rolled-back savepoint. Between queries the pool keeps only its first block.
SELECT count(*) AS warm_up FROM es.read_all(0, 10);
SELECT total_bytes AS pool_bytes_between_queries FROM pg_backend_memory_contexts
WHERE name = 'event_store result pool';
BEGIN;
DECLARE c1 CURSOR FOR SELECT global_position, (data->>'i')::int AS i FROM es.read_all(0, 5000);
FETCH 2 FROM c1;
-- (the cursor's 2,000 rows are in the pool; from PostgreSQL 17 on, in the tuple store's own
-- context, a child of the pool)
SELECT sum(total_bytes) > 800 * 1024 AS pool_holds_the_open_cursor FROM pg_backend_memory_contexts
WHERE name IN ('event_store result pool', 'tuplestore tuples');
SELECT count(*) AS read_beside_the_cursor, sum((data->>'i')::int) AS sum_i FROM es.read_all(100, 50);
SELECT a.global_position, b.global_position AS next_page
FROM es.read_all(0, 3) a JOIN es.read_all(1, 3) b ON b.global_position = a.global_position + 1
ORDER BY 1;
SELECT g, (SELECT count(*) FROM es.read_all(g * 100, 10)) AS per_row_read FROM generate_series(1, 3) g;
FETCH 2 FROM c1;
MOVE FORWARD 1990 IN c1;
FETCH 2 FROM c1;
CLOSE c1;
SELECT total_bytes AS pool_bytes_after_close FROM pg_backend_memory_contexts
WHERE name = 'event_store result pool';
SELECT g, count(*) AS events, min(e.version) AS first_version
FROM generate_series(1, 3) g, LATERAL es.load_events('a9000000-0000-0000-0000-000000000006', g * 10, 5) e
GROUP BY g ORDER BY g;
SET LOCAL work_mem = '64kB';
DECLARE c2 SCROLL CURSOR FOR SELECT global_position, (data->>'i')::int AS i FROM es.read_all(0, 5000);
FETCH LAST FROM c2;
FETCH BACKWARD 2 FROM c2;
FETCH ABSOLUTE 1000 FROM c2;
CLOSE c2;
COMMIT;
BEGIN;
DECLARE c3 CURSOR WITH HOLD FOR SELECT global_position FROM es.read_all(1500, 1000);
COMMIT;
SELECT count(*) AS read_after_the_held_commit FROM es.read_all(0, 100);
FETCH 2 FROM c3;
MOVE FORWARD 495 IN c3;
FETCH 5 FROM c3;
CLOSE c3;
BEGIN;
SAVEPOINT s;
DECLARE c4 CURSOR FOR SELECT global_position FROM es.read_all(0, 5000);
FETCH 1 FROM c4;
ROLLBACK TO s;
SELECT count(*) AS read_after_the_rollback, sum(global_position) AS sum_positions FROM es.read_all(0, 5000);
COMMIT;
SELECT total_bytes AS pool_bytes_at_the_end FROM pg_backend_memory_contexts
WHERE name = 'event_store result pool';
\c event_store_regress
DROP DATABASE es_regress_positions;
DROP DATABASE es_regress_ascii;
DROP DATABASE es_regress_batch;
