-- Aggregates for any domain: a type declared in SQL (a ticket domain with PL/pgSQL check and a
-- SQL evolve), held to its rules on es.append_events, its state kept in the stream row, its
-- snapshots, es.state / es.history / es.replay, es.alter_aggregate with es.rebuild_states,
-- explicit stream types (ES302), es.stream_type_rules, the account as the built-in instance,
-- and user functions that fail in every way (ES301, never a crash).
\pset null '(null)'
CREATE SCHEMA ticket;
CREATE FUNCTION ticket.evolve(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT CASE event->>'type'
    WHEN 'Opened' THEN jsonb_build_object('status', 'open', 'title', event->'title', 'comments', 0)
    WHEN 'Commented' THEN state || jsonb_build_object('comments', (state->>'comments')::int + 1)
    WHEN 'Closed' THEN state || '{"status": "closed"}'
    ELSE state END $$;
CREATE FUNCTION ticket.check(state jsonb, event jsonb) RETURNS void LANGUAGE plpgsql
AS $$
BEGIN
    IF event->>'type' = 'Opened' AND state->>'status' <> 'new' THEN
        RAISE EXCEPTION 'ticket is already open' USING ERRCODE = 'TK001';
    ELSIF event->>'type' <> 'Opened' AND state->>'status' <> 'open' THEN
        RAISE EXCEPTION 'ticket is not open: it is %', state->>'status'
            USING ERRCODE = 'TK002', DETAIL = format('status: %s', state->>'status'),
                  HINT = 'Reopen it first.';
    ELSIF event->>'type' = 'Commented' AND (state->>'comments')::int >= 3 THEN
        RAISE EXCEPTION 'ticket has too many comments' USING ERRCODE = 'TK003';
    END IF;
END $$;
-- a function of the wrong signature, an initial state that is no object (ES301)
SELECT error_of($$SELECT es.define_aggregate('ticket', 'ticket.check(jsonb,jsonb)')$$);
SELECT error_of($$SELECT es.define_aggregate('ticket', 'ticket.evolve(jsonb,jsonb)', '[]')$$);
SELECT error_of($$SELECT es.define_aggregate('ticket', 'ticket.evolve(jsonb,jsonb)', '{}', 'ticket.evolve(jsonb,jsonb)')$$);
SELECT es.define_aggregate('ticket', 'ticket.evolve(jsonb,jsonb)', '{"status": "new"}', 'ticket.check(jsonb,jsonb)', 2);
SELECT error_of($$SELECT es.define_aggregate('ticket', 'ticket.evolve(jsonb,jsonb)')$$);
SELECT stream_type, evolve, "check", initial_state, snapshot_every, native, streams, stale_streams
  FROM es.aggregates WHERE stream_type IN ('account', 'ticket') ORDER BY stream_type;
-- the first append names the type; the rules run event by event, from the state before
SELECT es.append_events('e7000000-0000-0000-0000-000000000001', 0, ARRAY[
  '{"type":"Opened","title":"printer on fire"}', '{"type":"Commented"}']::jsonb[], 'ticket') AS v;
SELECT stream_type, version, state, state_revision IS NOT NULL AS has_revision
  FROM es.streams WHERE stream_id = 'e7000000-0000-0000-0000-000000000001';
-- the check's own error reaches the caller unchanged, and nothing of the batch is stored
SELECT error_of($$SELECT es.append_events('e7000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Opened","title":"again"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('e7000000-0000-0000-0000-000000000001', NULL, ARRAY[
  '{"type":"Commented"}', '{"type":"Commented"}', '{"type":"Commented"}']::jsonb[])$$);
SELECT es.stream_version('e7000000-0000-0000-0000-000000000001') AS still_2;
SELECT es.append_events('e7000000-0000-0000-0000-000000000001', 2, ARRAY['{"type":"Closed"}']::jsonb[]) AS v;
SELECT error_of($$SELECT es.append_events('e7000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Commented"}']::jsonb[])$$);
-- naming another type later is refused (ES302), also for a generic stream
SELECT error_of($$SELECT es.append_events('e7000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Commented"}']::jsonb[], 'account')$$);
SELECT es.append_events('e7000000-0000-0000-0000-000000000002', 0, ARRAY['{"type":"Anything"}']::jsonb[]) AS generic;
SELECT error_of($$SELECT es.append_events('e7000000-0000-0000-0000-000000000002', NULL, ARRAY['{"type":"Opened"}']::jsonb[], 'ticket')$$);
-- state, time travel, history, replay (also as a window function)
SELECT es.state('e7000000-0000-0000-0000-000000000001') AS now,
       es.state('e7000000-0000-0000-0000-000000000001', at_version => 1) AS at_1;
SELECT es.state('e7000000-0000-0000-0000-000000000001', as_of => '2000-01-01') AS before_it_existed;
SELECT version, event_type, state FROM es.history('e7000000-0000-0000-0000-000000000001') ORDER BY version;
SELECT es.replay('ticket', data ORDER BY version) FROM es.events WHERE stream_id = 'e7000000-0000-0000-0000-000000000001';
SELECT version, es.replay('ticket', data) OVER (ORDER BY version) FROM es.events
 WHERE stream_id = 'e7000000-0000-0000-0000-000000000001' ORDER BY version;
SELECT es.replay('ticket', '{"status":"open","comments":7}', data ORDER BY version) FROM es.events
 WHERE stream_id = 'e7000000-0000-0000-0000-000000000001' AND version > 1;
-- snapshots every 2 versions, of the type's revision
SELECT version, state, revision IS NOT NULL AS has_revision FROM es.snapshots
 WHERE stream_id = 'e7000000-0000-0000-0000-000000000001' ORDER BY version;
-- a generic stream has no state; an undeclared type replays nothing (ES303)
SELECT error_of($$SELECT es.state('e7000000-0000-0000-0000-000000000002')$$);
SELECT error_of($$SELECT es.history('e7000000-0000-0000-0000-000000000002')$$);
SELECT error_of($$SELECT es.replay('nothing', data) FROM es.events$$);
SELECT error_of($$SELECT es.state('e7000000-0000-0000-0000-00000000ffff')$$);
-- a new definition: kept states and snapshots are stale until rebuilt; reads replay meanwhile
CREATE FUNCTION ticket.evolve2(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT ticket.evolve(state, event) || jsonb_build_object('events', coalesce((state->>'events')::int, 0) + 1) $$;
SELECT es.alter_aggregate('ticket', 'ticket.evolve2(jsonb,jsonb)', '{"status": "new"}', 'ticket.check(jsonb,jsonb)', 2);
SELECT stream_type, streams, stale_streams FROM es.aggregates WHERE stream_type = 'ticket';
SELECT es.state('e7000000-0000-0000-0000-000000000001') AS replayed_with_evolve2;
CALL es.rebuild_states('ticket');
SELECT stream_type, streams, stale_streams, rebuild_finished_at IS NOT NULL AS rebuilt
  FROM es.aggregates WHERE stream_type = 'ticket';
SELECT version, state FROM es.snapshots
 WHERE stream_id = 'e7000000-0000-0000-0000-000000000001' ORDER BY version;
SELECT state FROM es.streams WHERE stream_id = 'e7000000-0000-0000-0000-000000000001';
-- functions are kept by name (pg_upgrade keeps names, not function OIDs): a renamed check fails
-- the type's appends (ES301), never means "no rules"; under its old name again, it judges again
ALTER FUNCTION ticket.check(jsonb, jsonb) RENAME TO check_renamed;
SELECT evolve, "check" FROM es.aggregates WHERE stream_type = 'ticket';
SELECT error_of($$SELECT es.append_events('e7000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Commented"}']::jsonb[])$$);
ALTER FUNCTION ticket.check_renamed(jsonb, jsonb) RENAME TO "check";
SELECT error_of($$SELECT es.append_events('e7000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Opened"}']::jsonb[])$$);
-- user functions that fail: NULL, a non-object, an error (ES301 naming function and version)
CREATE FUNCTION ticket.bad(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql
AS $$
BEGIN
    CASE event->>'type'
        WHEN 'Null' THEN RETURN NULL;
        WHEN 'Array' THEN RETURN '[1, 2]';
        WHEN 'Scalar' THEN RETURN '7';
        WHEN 'Raise' THEN RAISE EXCEPTION 'evolve cannot fold %', event->>'type' USING ERRCODE = 'XY001';
        WHEN 'Divide' THEN RETURN jsonb_build_object('x', 1 / 0);
        ELSE RETURN state;
    END CASE;
END $$;
SELECT es.define_aggregate('bad', 'ticket.bad(jsonb,jsonb)');
SELECT error_of(format($$SELECT es.append_events('e7000000-0000-0000-0000-00000000000%s', NULL, ARRAY['{"type":"%s"}']::jsonb[], 'bad')$$, n, t))
  FROM (VALUES (3, 'Null'), (3, 'Array'), (3, 'Scalar'), (3, 'Raise'), (3, 'Divide')) AS x(n, t);
SELECT es.append_events('e7000000-0000-0000-0000-000000000003', 0, ARRAY['{"type":"Fine"}']::jsonb[], 'bad') AS v;
-- a function dropped while streams use it
DROP FUNCTION ticket.bad(jsonb, jsonb);
SELECT error_of($$SELECT es.append_events('e7000000-0000-0000-0000-000000000003', NULL, ARRAY['{"type":"Fine"}']::jsonb[])$$);
SELECT error_of($$SELECT es.replay('bad', data) FROM es.events WHERE stream_id = 'e7000000-0000-0000-0000-000000000003'$$);
-- dropping a type that has streams is refused unless they are detached
SELECT error_of($$SELECT es.drop_aggregate('bad')$$);
SELECT es.drop_aggregate('bad', detach => true);
SELECT es.append_events('e7000000-0000-0000-0000-000000000003', NULL, ARRAY['{"type":"Fine"}']::jsonb[]) AS generic_now;
SELECT error_of($$SELECT es.drop_aggregate('bad')$$);
SELECT error_of($$SELECT es.drop_aggregate('account')$$);
SELECT error_of($$SELECT es.alter_aggregate('account', 'ticket.evolve(jsonb,jsonb)')$$);
-- the account is the built-in instance: es.state, es.history and es.replay agree with its own
SELECT es.append_events('e7000000-0000-0000-0000-000000000004', 0, ARRAY[
  '{"type":"Opened","account_holder":"Dora","initial_balance_cents":100}',
  '{"type":"Deposited","amount_cents":50,"description":"gift"}']::jsonb[]) AS v;
SELECT es.state('e7000000-0000-0000-0000-000000000004') = es.account_state('e7000000-0000-0000-0000-000000000004') AS same_state;
SELECT version, state FROM es.history('e7000000-0000-0000-0000-000000000004') ORDER BY version;
SELECT es.replay('account', data ORDER BY version) = es.account_replay(data ORDER BY version) AS same_replay
  FROM es.events WHERE stream_id = 'e7000000-0000-0000-0000-000000000004';
-- the default rule makes an Opened stream an account; without it, no stream becomes one by accident
DELETE FROM es.stream_type_rules WHERE first_event_type = 'Opened';
SELECT es.append_events('e7000000-0000-0000-0000-000000000005', 0, ARRAY['{"type":"Opened","door":"north"}']::jsonb[]) AS v;
SELECT stream_type FROM es.streams WHERE stream_id = 'e7000000-0000-0000-0000-000000000005';
INSERT INTO es.stream_type_rules VALUES ('Opened', 'account');
SELECT * FROM es.stream_type_rules ORDER BY 1;
-- upcasting: events stored at an older event_version are handed out and folded as the chain of
-- upcasters makes them; the stored rows never change
CREATE FUNCTION ticket.commented_v1(event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT (event - 'text') || jsonb_build_object('body', event->'text', 'event_version', 2) $$;
CREATE FUNCTION ticket.commented_v2(event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT event || '{"event_version": 3, "visibility": "public"}' $$;
SELECT es.append_events('e7000000-0000-0000-0000-000000000006', 0, ARRAY[
  '{"type":"Opened","title":"old ticket"}', '{"type":"Commented","text":"first"}']::jsonb[], 'ticket') AS v;
SELECT error_of($$SELECT es.define_upcaster('Commented', 0, 'ticket.commented_v1(jsonb)')$$);
SELECT error_of($$SELECT es.define_upcaster('Commented', 1, 'ticket.evolve(jsonb,jsonb)')$$);
SELECT es.define_upcaster('Commented', 1, 'ticket.commented_v1(jsonb)');
SELECT es.define_upcaster('Commented', 2, 'ticket.commented_v2(jsonb)');
SELECT error_of($$SELECT es.define_upcaster('Commented', 2, 'ticket.commented_v2(jsonb)')$$);
-- declaring an upcaster makes the kept states stale, as es.alter_aggregate does
SELECT stream_type, stale_streams FROM es.aggregates WHERE stream_type = 'ticket';
SELECT es.append_events('e7000000-0000-0000-0000-000000000006', NULL, ARRAY[
  '{"type":"Commented","body":"second","event_version":2}']::jsonb[]) AS v;
SELECT version, event_version, data FROM es.load_events('e7000000-0000-0000-0000-000000000006') ORDER BY version;
SELECT version, event_version, data FROM es.events WHERE stream_id = 'e7000000-0000-0000-0000-000000000006' ORDER BY version;
SELECT min(global_position) - 1 AS before_ticket FROM es.events WHERE stream_id = 'e7000000-0000-0000-0000-000000000006' \gset
SELECT event_version, data FROM es.read_all(:before_ticket, 3) ORDER BY global_position;
SELECT version, data, state FROM es.history('e7000000-0000-0000-0000-000000000006') ORDER BY version;
SELECT es.state('e7000000-0000-0000-0000-000000000006');
SELECT es.replay('ticket', data ORDER BY version) FROM es.events WHERE stream_id = 'e7000000-0000-0000-0000-000000000006';
-- a broken upcaster is an error naming it (ES301), not a crash; dropping it restores the chain's start
CREATE OR REPLACE FUNCTION ticket.commented_v2(event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$ SELECT '[]'::jsonb $$;
SELECT error_of($$SELECT * FROM es.load_events('e7000000-0000-0000-0000-000000000006')$$);
SELECT es.drop_upcaster('Commented', 2);
SELECT error_of($$SELECT es.drop_upcaster('Commented', 2)$$);
SELECT version, event_version, data FROM es.load_events('e7000000-0000-0000-0000-000000000006') ORDER BY version;
SELECT es.drop_upcaster('Commented', 1);
SELECT version, event_version, data FROM es.load_events('e7000000-0000-0000-0000-000000000006') ORDER BY version;
-- an empty type name, and the store's own functions as another type's, are refused
SELECT error_of($$SELECT es.append_events('e7000000-0000-0000-0000-000000000009', 0, ARRAY['{"type":"X"}']::jsonb[], '')$$);
SELECT error_of($$SELECT es.define_aggregate('copycat', 'es.account_evolve(jsonb,jsonb)')$$);
