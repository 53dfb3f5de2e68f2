-- Subscriptions and projections (docs/reference.md §9, §10): every function, its results and its errors.
-- Positions depend on the tests before this one, so they are shown relative to :base (the end of
-- the log when this file starts) and the readable end in messages as END.
SELECT coalesce(max(global_position), 0) AS base FROM es.events \gset
-- the stable partition hash (fixed values: the same on every node and version)
SELECT es.stream_hash('00000000-0000-0000-0000-000000000000') AS zero,
       es.stream_hash('ffffffff-ffff-ffff-ffff-ffffffffffff') AS ones,
       es.stream_hash('feed0000-0000-0000-0000-000000000001') % 2 AS p1,
       es.stream_hash('feed0000-0000-0000-0000-000000000002') % 2 AS p2;
SELECT es.create_subscription('orders', start_after => NULL, partitions => 2, max_attempts => 2);
SELECT es.create_subscription('only_b', start_after => NULL, event_types => ARRAY['B']);
SELECT name, start_after - :base AS start, event_types, stream_type, partitions, max_attempts
  FROM es.subscription_config ORDER BY name;
SELECT es.append_events('feed0000-0000-0000-0000-000000000001', 0,
    ARRAY['{"type":"A"}', '{"type":"B"}', '{"type":"C"}']::jsonb[]);
SELECT es.append_events('feed0000-0000-0000-0000-000000000002', 0,
    ARRAY['{"type":"A"}', '{"type":"B"}']::jsonb[]);
-- poll: the partition's events in position order, filtered; it does not move the checkpoint
SELECT global_position - :base AS pos, stream_id, version, event_type FROM es.poll('orders', 0) ORDER BY 1;
SELECT global_position - :base AS pos, stream_id, version, event_type FROM es.poll('orders', 1) ORDER BY 1;
SELECT global_position - :base AS pos, event_type FROM es.poll('only_b', 0, 10) ORDER BY 1;
SELECT global_position - :base AS pos FROM es.poll('orders', 0, 1);
SELECT name, partition, checkpoint - :base AS checkpoint, events_behind, owner, head_attempts, parked
  FROM es.subscriptions ORDER BY name, partition;
-- ack moves the checkpoint forward only; it returns the checkpoint
SELECT es.ack('orders', 1, :base + 3) - :base AS checkpoint;
SELECT es.ack('orders', 1, :base + 1) - :base AS checkpoint;
SELECT global_position - :base AS pos FROM es.poll('orders', 1) ORDER BY 1;
-- an ack in a rolled-back transaction leaves the checkpoint where it was (exactly once)
BEGIN;
SELECT es.ack('orders', 1, :base + 5) - :base AS checkpoint;
ROLLBACK;
SELECT checkpoint - :base AS checkpoint FROM es.subscriptions WHERE name = 'orders' AND partition = 1;
-- leases: a fair share each, fencing with ES201, release
SELECT es.create_subscription('shared', partitions => 4);
SELECT array_agg(partition ORDER BY partition) FROM es.claim('shared', 'c1', '1 hour');
SELECT array_agg(partition ORDER BY partition) FROM es.claim('shared', 'c2', '1 hour');
SELECT array_agg(partition ORDER BY partition) FROM es.claim('shared', 'c1', '1 hour');
SELECT array_agg(partition ORDER BY partition) FROM es.claim('shared', 'c2', '1 hour');
SELECT regexp_replace(error_of($$SELECT * FROM es.poll('shared', 0, 10, 'c2')$$), 'lease until: [^,]*', 'lease until: T');
SELECT regexp_replace(error_of($$SELECT es.ack('shared', 0, 1)$$), 'lease until: [^,]*', 'lease until: T');
SELECT count(*) FROM es.poll('shared', 0, 10, 'c1');
SELECT regexp_replace(error_of($$SELECT * FROM es.poll('shared', 0, 10, 'c2', wait_ms => 60000)$$), 'lease until: [^,]*', 'lease until: T');
SELECT es.release('shared', 'c1');
SELECT array_agg(partition ORDER BY partition) FROM es.claim('shared', 'c2', '1 hour');
SELECT partition, owner FROM es.subscriptions WHERE name = 'shared' ORDER BY partition;
-- nack counts attempts, then parks; the stream's later events are held back, then parked behind
SELECT es.nack('orders', 0, :base + 4, 'first failure');
SELECT name, partition, head_attempts FROM es.subscriptions WHERE name = 'orders' AND partition = 0;
SELECT es.nack('orders', 0, :base + 4, 'second failure');
SELECT global_position - :base AS pos, stream_id FROM es.poll('orders', 0) ORDER BY 1;
SELECT es.append_events('feed0000-0000-0000-0000-000000000004', 0, ARRAY['{"type":"A"}']::jsonb[]);
SELECT global_position - :base AS pos, stream_id FROM es.poll('orders', 0) ORDER BY 1;
SELECT es.ack('orders', 0, :base + 6) - :base AS checkpoint;
SELECT global_position - :base AS pos, stream_id, attempts,
       regexp_replace(error, 'position [0-9]+', 'position P') AS error, replay
  FROM es.parked_events WHERE subscription = 'orders' ORDER BY 1;
SELECT name, partition, checkpoint - :base AS checkpoint, parked FROM es.subscriptions
 WHERE name = 'orders' ORDER BY partition;
-- replay_parked puts them back first, in order; acking them finishes them
SELECT es.replay_parked('orders');
SELECT global_position - :base AS pos, event_type FROM es.poll('orders', 0);
SELECT es.ack('orders', 0, :base + 5) - :base AS checkpoint;
SELECT count(*) AS parked_left FROM es.parked_events WHERE subscription = 'orders';
-- wait: true at once when an event is readable, false at the timeout when none is
SELECT es.wait('orders', 1, 10) AS ready_after_10ms;
SELECT es.append_events('feed0000-0000-0000-0000-000000000003', 0, ARRAY['{"type":"A"}']::jsonb[]);
SELECT es.wait('orders', 1, 0) AS ready_now;
-- a waiting poll (wait_ms): what is readable comes back at once, as from es.poll; with nothing
-- readable it comes back empty after wait_ms; statement_timeout ends it like any statement
SELECT global_position - :base AS pos, event_type FROM es.poll('orders', 1, 10, wait_ms => 60000) ORDER BY 1;
SELECT es.create_subscription('idle', start_after => NULL, event_types => ARRAY['Never']);
SELECT count(*) AS nothing_after_10ms FROM es.poll('idle', 0, 10, wait_ms => 10);
SET statement_timeout = '50ms';
SELECT count(*) FROM es.poll('idle', 0, 10, wait_ms => 60000);
RESET statement_timeout;
-- in a REPEATABLE READ transaction it reads the latest commits, like es.read_all (docs/reference.md §3)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) AS nothing_yet FROM es.poll('idle', 0, 10, wait_ms => 10);
COMMIT;
SELECT es.drop_subscription('idle');
-- errors
SELECT coalesce(max(global_position), 0) AS endpos FROM es.events \gset
SELECT error_of($$SELECT es.create_subscription('orders')$$);
SELECT error_of($$SELECT es.create_subscription('', 0)$$);
SELECT error_of($$SELECT es.create_subscription('x', -1)$$);
SELECT error_of($$SELECT es.create_subscription('x', partitions => 0)$$);
SELECT error_of($$SELECT es.create_subscription('x', partitions => 1025)$$);
SELECT error_of($$SELECT es.create_subscription('x', max_attempts => 0)$$);
SELECT error_of($$SELECT es.create_subscription('x', event_types => ARRAY[]::text[])$$);
SELECT error_of($$SELECT es.create_subscription('x', event_types => ARRAY['A', NULL])$$);
SELECT error_of($$SELECT es.create_subscription(NULL)$$);
SELECT error_of($$SELECT es.drop_subscription('nope')$$);
SELECT error_of($$SELECT * FROM es.poll('nope')$$);
SELECT error_of($$SELECT * FROM es.poll('orders', 2)$$);
SELECT error_of($$SELECT * FROM es.poll('orders', -1)$$);
SELECT error_of($$SELECT * FROM es.poll('orders', 0, 0)$$);
SELECT error_of($$SELECT * FROM es.poll('orders', 0, 10, wait_ms => -1)$$);
SELECT error_of($$SELECT * FROM es.poll('orders', 0, 10, wait_ms => NULL)$$);
SELECT error_of($$SELECT * FROM es.poll('nope', wait_ms => 10)$$);
SELECT replace(replace(error_of(format('SELECT es.ack(%L, 0, %s)', 'orders', :endpos + 1)),
               (:endpos + 1)::text, 'END+1'), (:endpos)::text, 'END');
SELECT error_of($$SELECT es.ack('nope', 0, 1)$$);
SELECT regexp_replace(error_of(format('SELECT es.nack(%L, 0, %s, %L)', 'orders', :base + 1, 'x')), '[0-9]{6,}', 'P', 'g');
SELECT regexp_replace(error_of(format('SELECT es.nack(%L, 1, %s, %L)', 'orders', :base + 4, 'x')), '[0-9]{6,}', 'P', 'g');
SELECT error_of($$SELECT es.claim('nope', 'c')$$);
SELECT error_of($$SELECT es.claim('shared', '')$$);
SELECT error_of($$SELECT es.claim('shared', 'c', '0 seconds')$$);
SELECT error_of($$SELECT es.release('nope', 'c')$$);
SELECT error_of($$SELECT es.replay_parked('nope')$$);
SELECT error_of($$SELECT es.wait('nope')$$);
SELECT error_of($$SELECT es.wait('orders', 0, -1)$$);
-- projections: a handler fed by the background worker, exactly once; failures parked
CREATE TABLE seen (stream_id uuid, version bigint, event_type text, PRIMARY KEY (stream_id, version));
CREATE FUNCTION remember(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.data->>'fail' = 'yes' THEN
        RAISE EXCEPTION 'cannot project % %', e.stream_id, e.version;
    END IF;
    INSERT INTO seen VALUES (e.stream_id, e.version, e.event_type);
END $$;
CREATE FUNCTION not_a_handler(n integer) RETURNS void LANGUAGE sql AS '';
SELECT error_of($$SELECT es.create_projection('p', 'not_a_handler(integer)')$$);
SELECT error_of($$SELECT es.create_projection('p', 'remember(es.events)', batch => 0)$$);
SELECT es.create_projection('remember', 'remember(es.events)', event_types => ARRAY['A', 'B']);
SELECT error_of($$SELECT es.create_projection('remember', 'remember(es.events)')$$);
-- a projection whose name a plain subscription holds: the error names the subscription
SELECT error_of($$SELECT es.create_projection('orders', 'remember(es.events)')$$);
SELECT error_of($$SELECT es.drop_subscription('remember')$$);
SELECT es.wait_for_projection('remember', :endpos, 10000);
SELECT count(*) = (SELECT count(*) FROM es.events WHERE event_type IN ('A', 'B')) AS all_seen FROM seen;
SELECT es.append_events('feed0000-0000-0000-0000-000000000008', 0,
    ARRAY['{"type":"A","fail":"yes"}', '{"type":"B"}']::jsonb[]);
SELECT es.append_events('feed0000-0000-0000-0000-000000000009', 0, ARRAY['{"type":"A"}']::jsonb[]);
SELECT es.wait_for_projection('remember', (SELECT max(global_position) FROM es.events), 20000);
SELECT stream_id, version, event_type FROM seen
 WHERE stream_id IN ('feed0000-0000-0000-0000-000000000008', 'feed0000-0000-0000-0000-000000000009') ORDER BY 1, 2;
SELECT name, state, events_behind, last_error FROM es.projections ORDER BY name;
SELECT stream_id, attempts, regexp_replace(error, 'position [0-9]+', 'position P') AS error
  FROM es.parked_events WHERE subscription = 'remember' ORDER BY global_position;
SELECT es.pause_projection('remember');
SELECT name, state FROM es.projections;
SELECT es.resume_projection('remember');
SELECT es.reset_projection('remember');
SELECT name, state, checkpoint FROM es.projections;
SELECT es.wait_for_projection('remember', (SELECT max(global_position) FROM es.events), 20000);
-- an ASSERT in a handler (which PL/pgSQL's WHEN OTHERS does not catch) is retried and parked too
CREATE FUNCTION asserting(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    ASSERT e.data->>'fail' IS NULL, 'asserting handler refuses ' || e.stream_id;
END $$;
SELECT es.create_projection('asserting', 'asserting(es.events)', event_types => ARRAY['A']);
SELECT es.append_events('feed0000-0000-0000-0000-00000000000a', 0, ARRAY['{"type":"A","fail":"yes"}']::jsonb[]);
SELECT es.wait_for_projection('asserting', (SELECT max(global_position) FROM es.events), 20000);
SELECT stream_id, attempts, error FROM es.parked_events WHERE subscription = 'asserting' ORDER BY global_position;
SELECT es.drop_projection('asserting');
-- a handler runs as the role that created its projection, inside a security-restricted
-- operation: it cannot take the worker's (superuser) rights back; each escape fails, is retried
-- and parked; the settings it changes do not outlive it (tests/client/tests/projection_security.rs)
CREATE ROLE regress_es_creator;
GRANT USAGE ON SCHEMA es TO regress_es_creator;
GRANT EXECUTE ON FUNCTION es.create_projection(text, regprocedure, text[], integer) TO regress_es_creator;
CREATE TABLE escaped (version bigint, who text, work_mem text);
GRANT INSERT ON escaped TO regress_es_creator;
CREATE FUNCTION escaping(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    CASE e.data->>'escape'
      WHEN 'reset role' THEN RESET ROLE;
      WHEN 'set role' THEN EXECUTE format('SET ROLE %I', session_user);
      WHEN 'set_config' THEN PERFORM set_config('role', 'none', false);
      WHEN 'session authorization' THEN SET SESSION AUTHORIZATION DEFAULT;
      ELSE NULL;
    END CASE;
    INSERT INTO escaped VALUES (e.version, current_user, current_setting('work_mem'));
    SET work_mem = '77MB';
END $$;
SET ROLE regress_es_creator;
SELECT es.create_projection('escaping', 'escaping(es.events)', event_types => ARRAY['Escape']);
RESET ROLE;
SELECT name, run_as FROM es.projection_config WHERE name = 'escaping';
SELECT es.append_events(('feed0000-0000-0000-0000-0000000000' || n)::uuid, 0,
                        ARRAY[jsonb_build_object('type', 'Escape', 'escape', x)])
  FROM unnest(ARRAY['reset role', 'set role', 'set_config', 'session authorization', 'none'],
              ARRAY['b1', 'b2', 'b3', 'b4', 'b5']) AS t(x, n);
SELECT es.append_events('feed0000-0000-0000-0000-0000000000b5', 1, ARRAY['{"type":"Escape"}']::jsonb[]);
-- four events, each retried five times before it is parked
SELECT es.wait_for_projection('escaping', (SELECT max(global_position) FROM es.events), 90000);
SELECT e.data->>'escape' AS escape, k.attempts, k.error
  FROM es.parked_events k JOIN es.events e ON e.global_position = k.global_position
 WHERE k.subscription = 'escaping' ORDER BY e.stream_id;
SELECT * FROM escaped ORDER BY version;   -- as the creator; the SET of the first is gone at the second
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_es_creator';
-- a projection whose creator was dropped: each event fails naming the role, and is parked
CREATE ROLE regress_es_gone;
GRANT USAGE ON SCHEMA es TO regress_es_gone;
GRANT EXECUTE ON FUNCTION es.create_projection(text, regprocedure, text[], integer) TO regress_es_gone;
SET ROLE regress_es_gone;
SELECT es.create_projection('orphaned', 'escaping(es.events)', event_types => ARRAY['Orphan']);
RESET ROLE;
DROP OWNED BY regress_es_gone;
DROP ROLE regress_es_gone;
SELECT es.append_events('feed0000-0000-0000-0000-0000000000b6', 0, ARRAY['{"type":"Orphan"}']::jsonb[]);
SELECT es.wait_for_projection('orphaned', (SELECT max(global_position) FROM es.events), 60000);
SELECT k.attempts, regexp_replace(k.error, 'role [0-9]+', 'role OID') AS error
  FROM es.parked_events k WHERE k.subscription = 'orphaned';
SELECT es.drop_projection('escaping');
SELECT es.drop_projection('orphaned');
DROP TABLE escaped;
DROP FUNCTION escaping(es.events);
REVOKE ALL ON FUNCTION es.create_projection(text, regprocedure, text[], integer) FROM regress_es_creator;
REVOKE ALL ON SCHEMA es FROM regress_es_creator;
DROP ROLE regress_es_creator;
SELECT error_of($$SELECT es.pause_projection('nope')$$);
SELECT error_of($$SELECT es.reset_projection('nope')$$);
SELECT error_of($$SELECT es.wait_for_projection('nope', 1, 10)$$);
SELECT es.drop_projection('remember');
SELECT error_of($$SELECT es.drop_projection('remember')$$);
-- the seed's projections equal es.account_state / es.account_history once caught up
SELECT es.enable_account_projections();
SELECT es.enable_account_projections();
SELECT es.open_account('Projected Holder', 1000) AS acct \gset
SELECT es.deposit(:'acct', 250, 'salary');
SELECT es.withdraw(:'acct', 100, 'rent');
SELECT es.freeze_account(:'acct', 'audit');
SELECT es.wait_for_projection('account_balances', (SELECT max(global_position) FROM es.events), 60000),
       es.wait_for_projection('account_transactions', (SELECT max(global_position) FROM es.events), 60000);
SELECT holder_name, balance_cents, status, version FROM es.account_balances WHERE account_id = :'acct';
SELECT (SELECT to_jsonb(b) - 'account_id' - 'updated_at' FROM es.account_balances b WHERE account_id = :'acct')
     = es.account_state(:'acct') AS balances_equal_state;
SELECT version, event_type, amount_cents, balance_cents, description FROM es.account_transactions
 WHERE account_id = :'acct' ORDER BY version;
SELECT NOT EXISTS (
    SELECT version, event_type, amount_cents, balance_cents, description, occurred_at
      FROM es.account_history(:'acct')
    EXCEPT
    SELECT version, event_type, amount_cents, balance_cents, description, occurred_at
      FROM es.account_transactions WHERE account_id = :'acct') AS transactions_equal_history;
SELECT name, state FROM es.projections ORDER BY name;
SELECT es.drop_projection('account_balances');
SELECT es.drop_projection('account_transactions');
SELECT es.drop_subscription('orders');
SELECT es.drop_subscription('only_b');
SELECT es.drop_subscription('shared');
SELECT count(*) FROM es.subscriptions;
-- es.subscriptions at a bounded cost: a monitoring scrape examines at most the 10,000 events after
-- a partition's checkpoint. A partition further behind says its events_behind is an estimate (the
-- matching share of the events examined times the positions after the checkpoint); one a few
-- events behind is exact. The rows of es.events read by the scrape are counted by the statistics
-- of this transaction (pg_stat_xact_user_tables), not timed.
SELECT es.create_subscription('far_behind', start_after => NULL);
SELECT es.create_subscription('far_behind_b', start_after => NULL, event_types => ARRAY['LagB']);
SELECT sum(v) AS appended FROM (
  SELECT es.append_events(('1a900000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 0,
           ARRAY(SELECT (CASE WHEN j % 10 = 0 THEN '{"type":"LagB"}' ELSE '{"type":"LagA"}' END)::jsonb
                   FROM generate_series(1, 1000) j)) AS v
    FROM generate_series(1, 52) i) a;
SELECT es.create_subscription('near', start_after => NULL);
SELECT es.append_events('1a900000-0000-4000-8000-00000000ffff', 0,
    ARRAY['{"type":"LagA"}', '{"type":"LagB"}', '{"type":"LagA"}']::jsonb[]);
BEGIN;
SELECT name, events_behind, events_behind_is_estimate, seconds_behind >= 0 AS has_age
  FROM es.subscriptions WHERE name IN ('far_behind', 'far_behind_b', 'near') ORDER BY name;
SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) <= 3 * 10002 AS events_examined_bounded
  FROM pg_stat_xact_user_tables WHERE relid = 'es.events'::regclass;
COMMIT;
-- what the scrape would have to count exactly, for comparison
SELECT count(*) AS all_behind, count(*) FILTER (WHERE event_type = 'LagB') AS b_behind
  FROM es.events WHERE global_position > (SELECT checkpoint FROM es.subscription_partitions
                                           WHERE subscription = 'far_behind');
SELECT es.drop_subscription('far_behind');
SELECT es.drop_subscription('far_behind_b');
SELECT es.drop_subscription('near');
