-- Retention and archiving (docs/reference.md §14), in a database of its own (the worker removes events, and
-- es.archive moves every old event: the other files' streams are left alone): the policies and
-- every error, the worker's batches and their audit, what a declared type keeps (its snapshot),
-- archiving with reads through the archive giving the same answers as before, and the
-- archive's append-only guard.
SET client_min_messages = warning;
DROP DATABASE IF EXISTS regress_lifearchive;
CREATE DATABASE regress_lifearchive;
\c regress_lifearchive
SET client_min_messages = warning;
CREATE EXTENSION event_store;
\ir ../error_of.sql
-- waits (at most 60 s) until no policy has an expired event left; says whether it got there
CREATE FUNCTION retention_done() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..600 LOOP
        IF NOT EXISTS (SELECT 1 FROM es.retention WHERE NOT paused AND events_expired > 0) THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN false;
END $$;
\pset null '(null)'

-- the errors: 22004 for NULL, 22023 for a value outside the domain
SELECT error_of($$SELECT es.set_retention(NULL, interval '1 day')$$);
SELECT error_of($$SELECT es.set_retention('x', interval '0 seconds')$$);
SELECT error_of($$SELECT es.set_retention('x', interval '-1 day')$$);
SELECT error_of($$SELECT es.set_retention('x', interval '100000 years')$$);
SELECT error_of($$SELECT es.set_retention('x', NULL, 0)$$);
SELECT error_of($$SELECT es.set_retention('x', NULL, -5)$$);
SELECT error_of($$SELECT es.pause_retention('nope')$$);
SELECT error_of($$SELECT es.resume_retention('nope')$$);
SELECT error_of($$SELECT es.set_retention_paused('x', NULL)$$);
SELECT error_of($$SELECT es.archive(NULL)$$);
SELECT error_of($$SELECT es.archive(now(), -1)$$);
-- removing a policy that does not exist is a no-op; nothing was audited
SELECT es.set_retention('x');
SELECT count(*) AS audited FROM es.data_audit;

-- the data: three generic streams of 5 events, an account of 12 (snapshots every 5), a declared
-- type with snapshots every 4, and a stream of an undeclared type
SET es.snapshot_interval = 5;
SELECT es.append_events(('a0000000-0000-0000-0000-00000000000' || n)::uuid, 0,
       ARRAY['{"type":"E1"}', '{"type":"E2"}', '{"type":"E3"}', '{"type":"E4"}', '{"type":"E5"}']::jsonb[]) AS v
  FROM generate_series(1, 3) n;
SELECT es.append_events('acc00000-0000-0000-0000-000000000001', 0, ARRAY[
  '{"type":"Opened","account_holder":"Ann","initial_balance_cents":100}']::jsonb[]);
SELECT es.append_events('acc00000-0000-0000-0000-000000000001', NULL,
       ARRAY['{"type":"Deposited","amount_cents":10,"description":"d"}']::jsonb[]) AS v
  FROM generate_series(1, 11);
CREATE FUNCTION regress_count(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_build_object('n', (state->>'n')::int + 1, 'last', event->>'type') $$;
SELECT es.define_aggregate('counter', 'regress_count(jsonb, jsonb)', '{"n":0}', NULL, 4);
SELECT es.append_events('c0000000-0000-0000-0000-000000000001', 0,
       ARRAY['{"type":"T1"}', '{"type":"T2"}', '{"type":"T3"}', '{"type":"T4"}', '{"type":"T5"}',
             '{"type":"T6"}', '{"type":"T7"}', '{"type":"T8"}', '{"type":"T9"}', '{"type":"T10"}']::jsonb[], 'counter') AS v;
SELECT es.append_events('d0000000-0000-0000-0000-000000000001', 0,
       ARRAY['{"type":"L1"}', '{"type":"L2"}', '{"type":"L3"}']::jsonb[], 'ledger') AS v;
SELECT stream_id, version FROM es.snapshots ORDER BY 1, 2;
SELECT es.account_state('acc00000-0000-0000-0000-000000000001') AS account_before \gset
SELECT es.state('c0000000-0000-0000-0000-000000000001') AS counter_before \gset

-- policies (in one transaction: the worker starts when it commits): a paused one removes
-- nothing; '' is the generic streams
BEGIN;
SELECT es.set_retention('', max_count => 2);
SELECT es.set_retention('account', max_count => 1);
SELECT es.set_retention('counter', max_count => 1);
SELECT es.set_retention('ledger', max_age => interval '1 hour');
SELECT es.pause_retention('');
SELECT stream_type, max_age, max_count, paused, events_expired FROM es.retention ORDER BY stream_type;
COMMIT;
SELECT retention_done();
SELECT es.pause_retention('account') + es.pause_retention('counter') AS paused;
SELECT stream_type, events_removed, batches, events_expired FROM es.retention ORDER BY stream_type;
-- the account keeps what its snapshot at 10 does not cover (events go only up to a snapshot that
-- has itself expired, so answers at or above the cut start from it); the counter keeps all: its
-- only snapshot (10, its whole batch) has not expired under max_count 1
SELECT stream_id, array_agg(version ORDER BY version) AS versions FROM es.events GROUP BY 1 ORDER BY 1;
SELECT es.account_state('acc00000-0000-0000-0000-000000000001') = :'account_before'::jsonb AS account_unchanged;
SELECT es.state('c0000000-0000-0000-0000-000000000001') = :'counter_before'::jsonb AS counter_unchanged;
-- appends go on after the removal: versions continue, positions are new
SELECT es.append_events('c0000000-0000-0000-0000-000000000001', 10, ARRAY['{"type":"T11"}']::jsonb[]) AS v;
SELECT es.state('c0000000-0000-0000-0000-000000000001');
SELECT es.deposit('acc00000-0000-0000-0000-000000000001', 5) AS v;
-- resume the generic policy: each generic stream keeps its newest 2
SELECT es.resume_retention('');
SELECT es.resume_retention('');
SELECT retention_done();
SELECT stream_id, array_agg(version ORDER BY version) AS versions
  FROM es.events WHERE stream_id::text LIKE 'a%' GROUP BY 1 ORDER BY 1;
-- every act is audited: who, what (positions and counts)
SELECT action, target, detail, performed_by = session_user AS by_session_user
  FROM es.data_audit ORDER BY id;
-- pause all, remove the policies
SELECT es.pause_retention();
SELECT es.set_retention('');
SELECT es.set_retention('account');
SELECT es.set_retention('counter');
SELECT es.set_retention('ledger');
SELECT count(*) AS policies FROM es.retention;

-- archiving: the answers of every read are the same before and after
SELECT es.open_account('Bob', 500) AS bob \gset
SELECT count(es.deposit(:'bob', 10 * n)) AS deposits FROM generate_series(1, 8) n;
SELECT es.create_subscription('before_archive', 0);
CREATE TEMP TABLE answers AS
SELECT 'state' AS what, es.account_state(:'bob')::text AS answer
UNION ALL SELECT 'state_at_3', es.account_state(:'bob', at_version => 3)::text
UNION ALL SELECT 'history', (SELECT json_agg(h ORDER BY h.version)::text FROM es.account_history(:'bob') h)
UNION ALL SELECT 'load_events', (SELECT json_agg(e ORDER BY e.version)::text FROM es.load_events(:'bob') e)
UNION ALL SELECT 'load_events_from_4', (SELECT json_agg(e ORDER BY e.version)::text FROM es.load_events(:'bob', 4, 2) e)
UNION ALL SELECT 'read_all', (SELECT json_agg(e ORDER BY e.global_position)::text FROM es.read_all(0, 1000) e)
UNION ALL SELECT 'replay', (SELECT es.account_replay(data ORDER BY version)::text FROM es.load_events(:'bob'))
UNION ALL SELECT 'counter', es.state('c0000000-0000-0000-0000-000000000001')::text
UNION ALL SELECT 'poll', (SELECT json_agg(e ORDER BY e.global_position)::text FROM es.poll('before_archive', 0, 1000) e);
SELECT es.archive(clock_timestamp(), 5) AS moved;
SELECT es.archive(clock_timestamp()) AS moved;
SELECT es.archive(clock_timestamp()) AS moved_again;
SELECT (SELECT count(*) FROM es.events) AS live, (SELECT count(*) FROM es.events_archive) AS archived;
SELECT es.create_subscription('after_archive', 0);
SELECT a.what, a.answer = b.answer AS same
  FROM answers a JOIN (
    SELECT 'state' AS what, es.account_state(:'bob')::text AS answer
    UNION ALL SELECT 'state_at_3', es.account_state(:'bob', at_version => 3)::text
    UNION ALL SELECT 'history', (SELECT json_agg(h ORDER BY h.version)::text FROM es.account_history(:'bob') h)
    UNION ALL SELECT 'load_events', (SELECT json_agg(e ORDER BY e.version)::text FROM es.load_events(:'bob') e)
    UNION ALL SELECT 'load_events_from_4', (SELECT json_agg(e ORDER BY e.version)::text FROM es.load_events(:'bob', 4, 2) e)
    UNION ALL SELECT 'read_all', (SELECT json_agg(e ORDER BY e.global_position)::text FROM es.read_all(0, 1000) e)
    UNION ALL SELECT 'replay', (SELECT es.account_replay(data ORDER BY version)::text FROM es.load_events(:'bob'))
    UNION ALL SELECT 'counter', es.state('c0000000-0000-0000-0000-000000000001')::text
    UNION ALL SELECT 'poll', (SELECT json_agg(e ORDER BY e.global_position)::text FROM es.poll('before_archive', 0, 1000) e)
  ) b USING (what) ORDER BY a.what;
-- a subscription made after the archiving reads the archived events too
SELECT count(*) = (SELECT count(*) FROM es.read_all(0, 1000)) AS after_archive_sees_all
  FROM es.poll('after_archive', 0, 1000);
-- commands after archiving: the state they start from is the same
SELECT es.withdraw(:'bob', 1) AS v;
SELECT es.account_state(:'bob') ->> 'balance_cents' AS balance;
-- es.include_archived = off reads the live events only
SET es.include_archived = off;
SELECT count(*) AS live_only FROM es.load_events(:'bob');
SELECT count(*) AS live_only FROM es.read_all(0, 1000);
RESET es.include_archived;
SELECT count(*) AS through FROM es.load_events(:'bob');
-- the archive is append-only too, for the owner as well
SELECT error_of($$UPDATE es.events_archive SET data = '{}'$$);
SELECT error_of($$DELETE FROM es.events_archive$$);
SELECT error_of($$TRUNCATE es.events_archive$$);
-- archiving is audited
SELECT action, detail - 'before' AS detail, target = (detail ->> 'before')::timestamptz::text AS target_is_bound
  FROM es.data_audit WHERE action = 'archive' ORDER BY id;
-- a retention policy reaches archived events too (and positions are never reused)
SELECT max(global_position) AS last_position FROM es.read_all(0, 1000) \gset
SELECT es.set_retention('account', max_count => 1);
SELECT retention_done();
SELECT es.set_retention('account');
SELECT count(*) AS archived_left FROM es.events_archive e JOIN es.streams s USING (stream_id) WHERE s.stream_type = 'account';
SELECT es.account_state(:'bob') ->> 'balance_cents' AS balance;
SELECT es.append_events(gen_random_uuid(), 0, ARRAY['{"type":"New"}']::jsonb[]) AS v;
SELECT max(global_position) > :last_position AS new_position_is_higher FROM es.events;
-- a DBA's column on es.events reaches the archive too (an event trigger), so reads through the
-- archive keep working; dropping it drops it there
ALTER TABLE es.events ADD COLUMN regress_note text DEFAULT 'live';
SELECT count(*) AS through_with_column, count(*) FILTER (WHERE regress_note IS NULL) AS archived_rows
  FROM es.read_all(0, 1000);
SELECT attname FROM pg_attribute WHERE attrelid = 'es.events_archive'::regclass AND attname = 'regress_note' AND NOT attisdropped;
ALTER TABLE es.events DROP COLUMN regress_note;
SELECT count(*) AS through_without_column FROM es.read_all(0, 1000);
SELECT count(*) AS archive_column_gone FROM pg_attribute
 WHERE attrelid = 'es.events_archive'::regclass AND attname = 'regress_note' AND NOT attisdropped;
-- the internal functions are not for PUBLIC
SELECT p.oid::regprocedure AS function, has_function_privilege('public', p.oid, 'EXECUTE') AS public_exec
  FROM pg_proc p
 WHERE p.pronamespace = 'es'::regnamespace
   AND p.proname IN ('remove_events', 'retention_batch', 'retention_expired', 'wake_retention', 'archive',
                     'set_retention', 'set_retention_paused', 'pause_retention', 'resume_retention')
 ORDER BY p.oid::regprocedure::text;

\c event_store_regress
SET client_min_messages = warning;
DROP DATABASE regress_lifearchive WITH (FORCE);
