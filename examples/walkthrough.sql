-- event_store walkthrough: what the main job shows on a fresh cluster.
-- Every statement below is plain SQL any client can send; run it again and it starts over.
\set ON_ERROR_STOP 0
\pset footer off
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS event_store CASCADE;
CREATE EXTENSION event_store;
\echo
\echo '== 1. Append to a new stream (expected_version 0 = must not exist): returns the new version'
SELECT es.append_events('7f3c2a10-0000-4000-8000-000000000001', 0, ARRAY[
    '{"type":"CartCreated","customer":"alice"}',
    '{"type":"ItemAdded","sku":"BOOK-42","qty":1}'
]::jsonb[]) AS new_version;
\echo
\echo '== 2. Append to the existing stream at version 2 (optimistic concurrency)'
SELECT es.append_events('7f3c2a10-0000-4000-8000-000000000001', 2, ARRAY[
    '{"type":"ItemAdded","sku":"PEN-7","qty":3,"metadata":{"correlation_id":"req-1001","user":"alice"}}'
]::jsonb[]) AS new_version;
\echo
\echo '== 3. A writer that still believes the stream is at version 2 is refused (ES001)'
SELECT es.append_events('7f3c2a10-0000-4000-8000-000000000001', 2, ARRAY[
    '{"type":"ItemRemoved","sku":"BOOK-42"}'
]::jsonb[]);
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
\echo
\echo '== 4. Idempotent retry: the same events with the same ids return the first result and write nothing'
SELECT es.append_events('7f3c2a10-0000-4000-8000-000000000001', 3, ARRAY[
    '{"type":"CartCheckedOut","event_id":"01890000-0000-7000-8000-00000000c0de","total_cents":2599}'
]::jsonb[]) AS first_call;
SELECT es.append_events('7f3c2a10-0000-4000-8000-000000000001', 3, ARRAY[
    '{"type":"CartCheckedOut","event_id":"01890000-0000-7000-8000-00000000c0de","total_cents":2599}'
]::jsonb[]) AS retry_returns;
SELECT es.stream_version('7f3c2a10-0000-4000-8000-000000000001') AS stream_version;
\echo
\echo '== 5. load_events: the stream, in order (from_version 0)'
SELECT version, event_type, data, metadata FROM es.load_events('7f3c2a10-0000-4000-8000-000000000001');
\echo
\echo '== 6. A second stream, then read_all: the global log, gap-safe, paged by position'
SELECT es.append_events('7f3c2a10-0000-4000-8000-000000000002', NULL, ARRAY['{"type":"CartCreated","customer":"bob"}']::jsonb[]) AS new_version;
SELECT global_position, stream_id, version, event_type FROM es.read_all(0, 10);
SELECT global_position, event_type FROM es.read_all(3, 2) AS page_after_position_3;
\echo
\echo '== 7. Snapshots: save the state at version 3, load the newest at or below a version'
SELECT es.save_snapshot('7f3c2a10-0000-4000-8000-000000000001', 3, '{"items":{"BOOK-42":1,"PEN-7":3}}');
SELECT version, state FROM es.load_snapshot('7f3c2a10-0000-4000-8000-000000000001');
SELECT es.save_snapshot('7f3c2a10-0000-4000-8000-000000000001', 99, '{}');
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
\echo
\echo '== 8. History is append-only: UPDATE, DELETE and TRUNCATE are refused, even for the owner (ES006)'
UPDATE es.events SET data = '{"type":"Forged"}' WHERE version = 1;
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
DELETE FROM es.events;
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
SELECT count(*) AS events_still_stored FROM es.events;
\echo
\echo '== 9. Bad input gets a clear error and changes nothing'
SELECT es.append_events('7f3c2a10-0000-4000-8000-000000000001', NULL, ARRAY['{"sku":"no type"}']::jsonb[]);
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
SELECT es.append_events('7f3c2a10-0000-4000-8000-000000000001', -5, ARRAY['{"type":"X"}']::jsonb[]);
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
\echo
\echo '== 10. The bank account of the seed, inside the database: open, deposit 500, withdraw 200, deposit 700'
SELECT es.open_account('Alice', 0) AS account_id \gset
SELECT es.deposit(:'account_id', 500, 'salary') AS version;
SELECT es.withdraw(:'account_id', 200, 'rent') AS version;
SELECT es.deposit(:'account_id', 700, 'bonus') AS version;
\echo '-- the seed''s own "withdraw 0" is refused (ES103), and so is an overdraft (ES101, with DETAIL)'
SELECT es.withdraw(:'account_id', 0, 'nothing');
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
SELECT es.withdraw(:'account_id', 5000, 'too much');
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
\echo '-- a command with a stale expected version is refused (ES001)'
SELECT es.deposit(:'account_id', 10, 'late', 2);
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
SELECT es.freeze_account(:'account_id', 'audit') AS version;
SELECT es.deposit(:'account_id', 10, 'while frozen');
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
\echo '-- the state is a replay of the events, with the running balance as a window function'
SELECT es.account_replay(data ORDER BY version) AS state FROM es.events WHERE stream_id = :'account_id';
SELECT version, data->>'type' AS event, data->>'amount_cents' AS amount,
       (es.account_replay(data) OVER (ORDER BY version))->>'balance_cents' AS balance
FROM es.events WHERE stream_id = :'account_id' ORDER BY version;
