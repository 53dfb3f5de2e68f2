-- event_store walkthrough: what the main job shows on a fresh cluster.
-- Every statement below is plain SQL any client can send; run it again and it starts over.
--
-- It runs in a database of its own, es_walkthrough_scratch, which it drops and creates anew, then
-- connects to (psql's \connect): nothing in the database it is started from is read, changed or
-- dropped. It drops only a database of that name that it made itself (marked by its comment),
-- and stops with an error if it finds one it did not make.
\set ON_ERROR_STOP 1
\pset footer off
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SELECT current_database() = 'es_walkthrough_scratch' AS started_in_scratch,
       EXISTS (SELECT 1 FROM pg_database WHERE datname = 'es_walkthrough_scratch') AS scratch_exists,
       coalesce((SELECT shobj_description(oid, 'pg_database') FROM pg_database
                  WHERE datname = 'es_walkthrough_scratch'), '') = 'event_store walkthrough scratch database'
         AS scratch_is_ours
\gset
\if :started_in_scratch
  DO $$ BEGIN RAISE EXCEPTION 'the walkthrough drops and recreates es_walkthrough_scratch: start it from another database'; END $$;
\endif
\if :scratch_exists
  \if :scratch_is_ours
    DROP DATABASE es_walkthrough_scratch WITH (FORCE);
  \else
    DO $$ BEGIN RAISE EXCEPTION 'a database es_walkthrough_scratch exists that the walkthrough did not make: it is left alone (drop or rename it to run the walkthrough)'; END $$;
  \endif
\endif
CREATE DATABASE es_walkthrough_scratch;
COMMENT ON DATABASE es_walkthrough_scratch IS 'event_store walkthrough scratch database';
\connect es_walkthrough_scratch
\set ON_ERROR_STOP 0
SET client_min_messages = warning;
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
\echo '-- (snapshots every 2 events for this story; the default is every 100)'
SET es.snapshot_interval = 2;
SELECT es.open_account('Alice', 0) AS account_id \gset
SELECT es.deposit(:'account_id', 500, 'salary') AS version;
SELECT es.withdraw(:'account_id', 200, 'rent') AS version;
SELECT clock_timestamp() AS before_bonus \gset
SELECT es.deposit(:'account_id', 700, 'bonus') AS version;
\echo '-- the seed''s own "withdraw 0" is refused (ES103), and so is an overdraft (ES101, with DETAIL)'
SELECT es.withdraw(:'account_id', 0, 'nothing');
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
SELECT es.withdraw(:'account_id', 5000, 'too much');
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
\echo '-- a command with a stale expected version is refused (ES001)'
SELECT es.deposit(:'account_id', 10, 'late', 2);
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
\echo '-- the same rules hold for any client writing events directly: an overdraft through append_events'
SELECT es.append_events(:'account_id', NULL, ARRAY['{"type":"Withdrawn","amount_cents":999999,"description":"direct"}']::jsonb[]);
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
\echo '-- frozen: no more deposits (ES102)'
SELECT es.freeze_account(:'account_id', 'audit') AS version;
SELECT es.deposit(:'account_id', 10, 'while frozen');
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
RESET es.snapshot_interval;
\echo
\echo '== 11. Audit and time travel with psql'
\echo '-- the balance as of a moment before the bonus, beside today''s'
SELECT es.account_state(:'account_id', as_of => :'before_bonus')->>'balance_cents' AS balance_before_bonus,
       es.account_state(:'account_id')->>'balance_cents' AS balance_today,
       es.account_state(:'account_id')->>'status' AS status_today;
\echo '-- the history, one row per event, with the running balance'
SELECT version, event_type, amount_cents, balance_cents, status, description
FROM es.account_history(:'account_id') ORDER BY version;
\echo '-- the snapshots written on the way (every 2 events here), and the one that served the state at version 3:'
\echo '-- es.account_state(at_version => 3) starts from it and replays only version 3'
SELECT version, state FROM es.snapshots WHERE stream_id = :'account_id' ORDER BY version;
SELECT version AS served_by_snapshot_at, es.account_state(:'account_id', at_version => 3) AS state_at_version_3
FROM es.load_snapshot(:'account_id', 3);
\echo '-- today''s state needs no replay at all: the store keeps it in the stream row'
SELECT version, state FROM es.streams WHERE stream_id = :'account_id';
\echo '-- and it is what a full replay of the events gives'
SELECT es.account_replay(data ORDER BY version) = es.account_state(:'account_id') AS replay_agrees
FROM es.events WHERE stream_id = :'account_id';
\echo
\echo '== 12. Events flow onward: a consumer with a checkpoint, and the balance projection catching up'
CREATE TABLE IF NOT EXISTS walkthrough_mail (global_position bigint PRIMARY KEY, account_id uuid, text text);
TRUNCATE walkthrough_mail;
\echo '-- a durable subscription to the account events of the whole log (start_after 0), one partition'
SELECT es.create_subscription('walkthrough_mailer', 0, ARRAY['Deposited', 'Withdrawn']);
\echo '-- the consumer reads a batch, writes its own table and acks in ONE transaction: each event is'
\echo '-- handled exactly once, and a crash before COMMIT leaves the checkpoint where it was'
BEGIN;
INSERT INTO walkthrough_mail
SELECT global_position, stream_id, event_type || ' of ' || (data->>'amount_cents') || ' cents'
  FROM es.poll('walkthrough_mailer', 0, 2);
SELECT es.ack('walkthrough_mailer', 0, (SELECT max(global_position) FROM walkthrough_mail)) AS checkpoint;
COMMIT;
SELECT name, partition, checkpoint, events_behind FROM es.subscriptions WHERE name = 'walkthrough_mailer';
\echo '-- the next batch starts after the checkpoint; es.wait would block until one is there'
SELECT es.wait('walkthrough_mailer', 0, 1000) AS more_to_read;
SELECT global_position, event_type, data->>'amount_cents' AS amount FROM es.poll('walkthrough_mailer', 0, 10);
\echo '-- the seed''s two projections, kept by the database''s background worker (no client needed)'
SELECT es.enable_account_projections();
SELECT es.open_account('Bob', 4200) AS bob \gset
SELECT es.deposit(:'bob', 800, 'gift') AS version;
\echo '-- read-your-writes: wait until the projection has caught up with the last append'
SELECT es.wait_for_projection('account_balances', (SELECT max(global_position) FROM es.events), 10000) AS caught_up;
SELECT holder_name, balance_cents, status, version FROM es.account_balances ORDER BY holder_name;
SELECT es.wait_for_projection('account_transactions', (SELECT max(global_position) FROM es.events), 10000) AS caught_up;
SELECT version, event_type, amount_cents, balance_cents, description
  FROM es.account_transactions WHERE account_id = :'bob' ORDER BY version;
SELECT name, state, checkpoint, events_behind, last_error FROM es.projections ORDER BY name;
\echo
\echo '== 13. Your own domain: the shopping cart of examples/cart.sql, declared in PL/pgSQL'
\set ON_ERROR_STOP 1
\ir cart.sql
\set ON_ERROR_STOP 0
SELECT stream_type, evolve, "check", snapshot_every FROM es.aggregates ORDER BY stream_type;
\echo '-- CartOpened makes a stream a cart (es.stream_type_rules); its rules run on every append'
SELECT es.append_events('7f3c2a10-0000-4000-8000-0000000000c1', 0, ARRAY[
  '{"type":"CartOpened","customer":"Alice"}',
  '{"type":"ItemAdded","sku":"tea","quantity":12,"unit_price_cents":450,"event_version":2}']::jsonb[]) AS version;
\echo '-- a rule refused with the domain''s own SQLSTATE (CT005: at most 20 items)'
SELECT es.append_events('7f3c2a10-0000-4000-8000-0000000000c1', NULL, ARRAY[
  '{"type":"ItemAdded","sku":"mug","quantity":9,"unit_price_cents":900,"event_version":2}']::jsonb[]);
\echo '   -> SQLSTATE' :LAST_ERROR_SQLSTATE
\echo '-- an old ItemAdded (version 1 said "qty") is stored as sent and read upcast'
SELECT es.append_events('7f3c2a10-0000-4000-8000-0000000000c1', NULL, ARRAY[
  '{"type":"ItemAdded","sku":"mug","qty":1,"unit_price_cents":900}']::jsonb[]) AS version;
SELECT version, event_version, data->>'quantity' AS quantity
  FROM es.load_events('7f3c2a10-0000-4000-8000-0000000000c1') ORDER BY version;
\echo '-- the state kept with the stream, time travel, and the same fold as an SQL aggregate'
SELECT es.state('7f3c2a10-0000-4000-8000-0000000000c1') ->> 'item_count' AS items_now,
       es.state('7f3c2a10-0000-4000-8000-0000000000c1', at_version => 2) ->> 'item_count' AS items_at_2;
SELECT version, event_type, state ->> 'total_cents' AS total_cents
  FROM es.history('7f3c2a10-0000-4000-8000-0000000000c1') ORDER BY version;
SELECT es.replay('cart', data ORDER BY version) ->> 'total_cents' AS replayed_total
  FROM es.events WHERE stream_id = '7f3c2a10-0000-4000-8000-0000000000c1';
