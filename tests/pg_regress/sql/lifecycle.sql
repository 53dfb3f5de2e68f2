-- The life of a stream (docs/reference.md §14): es.delete_stream (soft, hard), es.undelete_stream,
-- es.truncate_stream; the $ markers in the log; the account's ES105 rule and a declared type's
-- check judging the marker; reads of deleted and truncated streams; es.data_audit.
-- ES007's DETAIL carries the deletion time: lc_error masks it.
CREATE FUNCTION lc_error(sql text) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(error_of(sql), 'at: [^\n]*', 'at: <time>')
$$;
CREATE FUNCTION lc_events(s uuid) RETURNS TABLE(version bigint, event_type text, data jsonb)
LANGUAGE sql AS $$
    SELECT e.version, e.event_type, e.data - 'event_id' - 'aggregate_id' - 'occurred_at'
      FROM es.events e WHERE e.stream_id = s ORDER BY e.version
$$;

-- Types starting with $ are the store's own markers: a user's append of one is refused.
SELECT error_of($$SELECT es.append_events('7a000000-0000-0000-0000-000000000001', NULL,
    ARRAY['{"type": "A"}', '{"type": "$stream_deleted"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('7a000000-0000-0000-0000-000000000001', NULL,
    ARRAY['{"type": "$anything"}']::jsonb[])$$);
SELECT es.stream_version('7a000000-0000-0000-0000-000000000001') AS nothing_stored;

-- Soft delete of a generic stream: the marker takes the head; the events stay in the log.
SELECT es.append_events('7a000000-0000-0000-0000-000000000001', 0,
    ARRAY['{"type": "A", "n": 1}', '{"type": "A", "n": 2}', '{"type": "A", "n": 3}']::jsonb[]);
SELECT error_of($$SELECT es.delete_stream('7a000000-0000-0000-0000-000000000001', 2)$$);
SELECT error_of($$SELECT es.delete_stream('7a000000-0000-0000-0000-000000000001', -2)$$);
SELECT error_of($$SELECT es.delete_stream('7a000000-0000-0000-0000-000000000001', 0)$$);
SELECT error_of($$SELECT es.delete_stream('7a000000-0000-0000-0000-000000000001', NULL, NULL)$$);
SELECT error_of($$SELECT es.delete_stream(NULL)$$);
SELECT es.delete_stream('7a000000-0000-0000-0000-000000000001', 3) AS marker_version;
SELECT * FROM lc_events('7a000000-0000-0000-0000-000000000001');
SELECT deleted, deleted_at IS NOT NULL AS has_time, truncated_before
  FROM es.streams WHERE stream_id = '7a000000-0000-0000-0000-000000000001';
-- it reads as empty; its version is the marker's (what an expected_version checks against)
SELECT count(*) AS loaded FROM es.load_events('7a000000-0000-0000-0000-000000000001');
SELECT es.stream_version('7a000000-0000-0000-0000-000000000001') AS version;
-- appends are refused with ES007 in every mode, and so is a second soft delete
SELECT lc_error($$SELECT es.append_events('7a000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type": "A"}']::jsonb[])$$);
SELECT lc_error($$SELECT es.append_events('7a000000-0000-0000-0000-000000000001', 4, ARRAY['{"type": "A"}']::jsonb[])$$);
SELECT lc_error($$SELECT es.append_events('7a000000-0000-0000-0000-000000000001', 0, ARRAY['{"type": "A"}']::jsonb[])$$);
SELECT lc_error($$SELECT es.append_events('7a000000-0000-0000-0000-000000000001', -1, ARRAY['{"type": "A"}']::jsonb[])$$);
SELECT lc_error($$SELECT es.append_events('7a000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type": "A", "event_id": "7a0000e0-0000-0000-0000-000000000001"}']::jsonb[])$$);
SELECT lc_error($$SELECT es.delete_stream('7a000000-0000-0000-0000-000000000001')$$);
SELECT lc_error($$SELECT es.truncate_stream('7a000000-0000-0000-0000-000000000001', 2)$$);
-- an empty append still checks the version only (it writes nothing)
SELECT es.append_events('7a000000-0000-0000-0000-000000000001', 4, ARRAY[]::jsonb[]) AS empty_append;

-- Undelete: a $stream_undeleted marker; reads and appends work again, markers included.
SELECT es.undelete_stream('7a000000-0000-0000-0000-000000000001') AS marker_version;
SELECT error_of($$SELECT es.undelete_stream('7a000000-0000-0000-0000-000000000001')$$);
SELECT es.append_events('7a000000-0000-0000-0000-000000000001', 5, ARRAY['{"type": "A", "n": 4}']::jsonb[]);
SELECT version, event_type FROM es.load_events('7a000000-0000-0000-0000-000000000001') ORDER BY version;

-- Hard delete: a tombstone. Only the marker remains; the id is never usable again.
SELECT es.delete_stream('7a000000-0000-0000-0000-000000000001', hard => true) AS marker_version;
SELECT * FROM lc_events('7a000000-0000-0000-0000-000000000001');
SELECT deleted, version FROM es.streams WHERE stream_id = '7a000000-0000-0000-0000-000000000001';
SELECT count(*) AS loaded FROM es.load_events('7a000000-0000-0000-0000-000000000001');
SELECT lc_error($$SELECT es.append_events('7a000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type": "A"}']::jsonb[])$$);
SELECT lc_error($$SELECT es.undelete_stream('7a000000-0000-0000-0000-000000000001')$$);
SELECT lc_error($$SELECT es.delete_stream('7a000000-0000-0000-0000-000000000001', hard => true)$$);
SELECT lc_error($$SELECT es.delete_stream('7a000000-0000-0000-0000-000000000001')$$);

-- Soft, then hard: the tombstone follows the soft delete (the soft marker goes too).
SELECT es.append_events('7a000000-0000-0000-0000-000000000002', 0,
    ARRAY['{"type": "B"}', '{"type": "B"}']::jsonb[]);
SELECT es.delete_stream('7a000000-0000-0000-0000-000000000002');
SELECT es.delete_stream('7a000000-0000-0000-0000-000000000002', 3, true);
SELECT * FROM lc_events('7a000000-0000-0000-0000-000000000002');

-- Missing streams: ES002.
SELECT error_of($$SELECT es.delete_stream('7a000000-0000-0000-0000-0000000000ff')$$);
SELECT error_of($$SELECT es.undelete_stream('7a000000-0000-0000-0000-0000000000ff')$$);
SELECT error_of($$SELECT es.truncate_stream('7a000000-0000-0000-0000-0000000000ff', 1)$$);

-- The account: deleted only when empty (ES105, a rule of the account type).
SELECT es.append_events('7a000000-0000-0000-0000-00000000a001', 0, ARRAY[
    '{"type": "Opened", "account_holder": "Ann", "initial_balance_cents": 100}',
    '{"type": "Deposited", "amount_cents": 50, "description": "gift"}']::jsonb[]);
SELECT error_of($$SELECT es.delete_stream('7a000000-0000-0000-0000-00000000a001')$$);
SELECT error_of($$SELECT es.delete_stream('7a000000-0000-0000-0000-00000000a001', hard => true)$$);
SELECT es.withdraw('7a000000-0000-0000-0000-00000000a001', 150, 'all of it');
SELECT es.save_snapshot('7a000000-0000-0000-0000-00000000a001', 3,
    es.account_state('7a000000-0000-0000-0000-00000000a001'));
SELECT es.delete_stream('7a000000-0000-0000-0000-00000000a001') AS marker_version;
-- a deleted account reads as gone: ES007 from the state functions, nothing from the loads
SELECT lc_error($$SELECT es.account_state('7a000000-0000-0000-0000-00000000a001')$$);
SELECT lc_error($$SELECT * FROM es.account_history('7a000000-0000-0000-0000-00000000a001')$$);
SELECT lc_error($$SELECT es.state('7a000000-0000-0000-0000-00000000a001')$$);
SELECT lc_error($$SELECT * FROM es.history('7a000000-0000-0000-0000-00000000a001')$$);
SELECT lc_error($$SELECT es.deposit('7a000000-0000-0000-0000-00000000a001', 10)$$);
SELECT lc_error($$SELECT es.close_account('7a000000-0000-0000-0000-00000000a001', 'gone')$$);
SELECT count(*) AS snapshots_loaded FROM es.load_snapshot('7a000000-0000-0000-0000-00000000a001');
SELECT count(*) AS loaded FROM es.load_events('7a000000-0000-0000-0000-00000000a001');
-- the fold of the log still works: a marker steps the version and changes nothing else
SELECT es.account_replay(data ORDER BY version) FROM es.events
 WHERE stream_id = '7a000000-0000-0000-0000-00000000a001';
SELECT es.undelete_stream('7a000000-0000-0000-0000-00000000a001') AS marker_version;
SELECT es.account_state('7a000000-0000-0000-0000-00000000a001');
SELECT es.deposit('7a000000-0000-0000-0000-00000000a001', 25, 'back');
SELECT version, event_type, amount_cents, balance_cents, status
  FROM es.account_history('7a000000-0000-0000-0000-00000000a001') ORDER BY version;
SELECT version, state->>'balance_cents' AS balance FROM es.history('7a000000-0000-0000-0000-00000000a001') ORDER BY version;
SELECT es.account_state('7a000000-0000-0000-0000-00000000a001', at_version => 4);

-- The seed's projections learn of it from the log (handlers called here in log order).
SELECT es.project_account_balances(e) FROM es.events e
 WHERE e.stream_id = '7a000000-0000-0000-0000-00000000a001' AND e.version <= 4 ORDER BY e.version;
SELECT count(*) AS balance_rows FROM es.account_balances WHERE account_id = '7a000000-0000-0000-0000-00000000a001';
SELECT es.project_account_balances(e) FROM es.events e
 WHERE e.stream_id = '7a000000-0000-0000-0000-00000000a001' AND e.version > 4 ORDER BY e.version;
SELECT holder_name, balance_cents, status, version FROM es.account_balances
 WHERE account_id = '7a000000-0000-0000-0000-00000000a001';
SELECT es.project_account_transactions(e) FROM es.events e
 WHERE e.stream_id = '7a000000-0000-0000-0000-00000000a001' ORDER BY e.version;
SELECT version, event_type, amount_cents, balance_cents FROM es.account_transactions
 WHERE account_id = '7a000000-0000-0000-0000-00000000a001' ORDER BY version;
SELECT es.withdraw('7a000000-0000-0000-0000-00000000a001', 25, 'close out');
SELECT es.delete_stream('7a000000-0000-0000-0000-00000000a001', hard => true) AS marker_version;
SELECT es.project_account_transactions(e), es.project_account_balances(e) FROM es.events e
 WHERE e.stream_id = '7a000000-0000-0000-0000-00000000a001' ORDER BY e.version;
SELECT (SELECT count(*) FROM es.account_transactions WHERE account_id = '7a000000-0000-0000-0000-00000000a001') AS transaction_rows,
       (SELECT count(*) FROM es.account_balances WHERE account_id = '7a000000-0000-0000-0000-00000000a001') AS balance_rows,
       (SELECT count(*) FROM es.snapshots WHERE stream_id = '7a000000-0000-0000-0000-00000000a001') AS snapshots,
       (SELECT state FROM es.streams WHERE stream_id = '7a000000-0000-0000-0000-00000000a001') AS kept_state;
SELECT * FROM lc_events('7a000000-0000-0000-0000-00000000a001');
SELECT (regexp_match(pg_get_functiondef('es.enable_account_projections()'::regprocedure),
                     'ARRAY\[''Opened''[^]]*\]'))[1] AS projected_event_types;
-- A declared type's check sees the marker and may refuse it with its own SQLSTATE; evolve
-- never sees it (the state is unchanged by a deletion).
CREATE FUNCTION lc_ticket_evolve(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('events', coalesce((state->>'events')::int, 0) + 1,
                              'open', event->>'type' <> 'Closed',
                              'last', event->>'type')
$$;
CREATE FUNCTION lc_ticket_check(state jsonb, event jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF event->>'type' = '$stream_deleted' AND (state->>'open')::boolean THEN
        RAISE EXCEPTION 'ticket is still open' USING ERRCODE = 'TK001',
            DETAIL = format('events: %s', state->>'events'), HINT = 'Close it first.';
    END IF;
    IF left(event->>'type', 1) = '$' THEN
        RAISE NOTICE 'check saw %', event->>'type';
    END IF;
END $$;
SELECT es.define_aggregate('lc_ticket', 'lc_ticket_evolve(jsonb, jsonb)', '{}',
                           'lc_ticket_check(jsonb, jsonb)', snapshot_every => 2);
SET client_min_messages = notice;
SELECT es.append_events('7a000000-0000-0000-0000-00000000c001', 0,
    ARRAY['{"type": "Opened"}', '{"type": "Noted"}']::jsonb[], 'lc_ticket');
SELECT error_of($$SELECT es.delete_stream('7a000000-0000-0000-0000-00000000c001')$$);
SELECT es.append_events('7a000000-0000-0000-0000-00000000c001', 2, ARRAY['{"type": "Closed"}']::jsonb[]);
SELECT es.delete_stream('7a000000-0000-0000-0000-00000000c001') AS marker_version;
SELECT lc_error($$SELECT es.state('7a000000-0000-0000-0000-00000000c001')$$);
SELECT es.undelete_stream('7a000000-0000-0000-0000-00000000c001') AS marker_version;
RESET client_min_messages;
SELECT es.state('7a000000-0000-0000-0000-00000000c001');
SELECT state FROM es.streams WHERE stream_id = '7a000000-0000-0000-0000-00000000c001';
SELECT version, event_type, state FROM es.history('7a000000-0000-0000-0000-00000000c001') ORDER BY version;
SELECT es.replay('lc_ticket', data ORDER BY version) FROM es.events
 WHERE stream_id = '7a000000-0000-0000-0000-00000000c001';
SELECT es.state('7a000000-0000-0000-0000-00000000c001', at_version => 4);

-- Truncation of a generic stream: no state to keep, no snapshot needed.
SELECT es.append_events('7a000000-0000-0000-0000-000000000003', 0, (
    SELECT array_agg(jsonb_build_object('type', 'T', 'n', g) ORDER BY g) FROM generate_series(1, 10) g));
SELECT error_of($$SELECT es.truncate_stream('7a000000-0000-0000-0000-000000000003', 0)$$);
SELECT error_of($$SELECT es.truncate_stream('7a000000-0000-0000-0000-000000000003', 11)$$);
SELECT error_of($$SELECT es.truncate_stream('7a000000-0000-0000-0000-000000000003', NULL)$$);
SELECT es.truncate_stream('7a000000-0000-0000-0000-000000000003', 1) AS removed;
SELECT es.truncate_stream('7a000000-0000-0000-0000-000000000003', 5) AS removed;
SELECT es.truncate_stream('7a000000-0000-0000-0000-000000000003', 3) AS removed_again;
SELECT min(version), max(version), count(*) FROM es.events WHERE stream_id = '7a000000-0000-0000-0000-000000000003';
SELECT truncated_before FROM es.streams WHERE stream_id = '7a000000-0000-0000-0000-000000000003';
-- reads that need a removed event say so; from the cut on they are unchanged
SELECT error_of($$SELECT * FROM es.load_events('7a000000-0000-0000-0000-000000000003')$$);
SELECT error_of($$SELECT * FROM es.load_events('7a000000-0000-0000-0000-000000000003', 3)$$);
SELECT version FROM es.load_events('7a000000-0000-0000-0000-000000000003', 4, 3) ORDER BY version;
SELECT es.append_events('7a000000-0000-0000-0000-000000000003', 10, ARRAY['{"type": "T", "n": 11}']::jsonb[]);
-- the removal function removes only what a stream's row records as removed
SELECT removed FROM es.purge_stream('7a000000-0000-0000-0000-000000000003');
SELECT removed FROM es.purge_stream('7a000000-0000-0000-0000-000000000002');
-- and the append-only trigger still refuses everyone else
SELECT error_of($$DELETE FROM es.events WHERE stream_id = '7a000000-0000-0000-0000-000000000003'$$);
SELECT current_setting('session_replication_role') AS after_the_purge;

-- Truncation of an account: a snapshot must hold the state at before_version - 1 (ES005).
SELECT es.append_events('7a000000-0000-0000-0000-00000000a002', 0, ARRAY[
    '{"type": "Opened", "account_holder": "Bo", "initial_balance_cents": 0}',
    '{"type": "Deposited", "amount_cents": 10, "description": "a"}',
    '{"type": "Deposited", "amount_cents": 20, "description": "b"}',
    '{"type": "Deposited", "amount_cents": 30, "description": "c"}',
    '{"type": "Withdrawn", "amount_cents": 5, "description": "d"}',
    '{"type": "Deposited", "amount_cents": 40, "description": "e"}']::jsonb[]);
SELECT es.account_state('7a000000-0000-0000-0000-00000000a002') AS before_truncation;
SELECT error_of($$SELECT es.truncate_stream('7a000000-0000-0000-0000-00000000a002', 4)$$);
SELECT es.save_snapshot('7a000000-0000-0000-0000-00000000a002', 2,
    es.account_state('7a000000-0000-0000-0000-00000000a002', at_version => 2));
SELECT error_of($$SELECT es.truncate_stream('7a000000-0000-0000-0000-00000000a002', 4)$$);
SELECT es.save_snapshot('7a000000-0000-0000-0000-00000000a002', 3,
    es.account_state('7a000000-0000-0000-0000-00000000a002', at_version => 3));
SELECT es.truncate_stream('7a000000-0000-0000-0000-00000000a002', 4) AS removed;
SELECT version FROM es.snapshots WHERE stream_id = '7a000000-0000-0000-0000-00000000a002' ORDER BY version;
SELECT es.account_state('7a000000-0000-0000-0000-00000000a002') AS after_truncation;
SELECT v, es.account_state('7a000000-0000-0000-0000-00000000a002', at_version => v) FROM generate_series(3, 6) v;
SELECT error_of($$SELECT es.account_state('7a000000-0000-0000-0000-00000000a002', at_version => 2)$$);
SELECT error_of($$SELECT es.state('7a000000-0000-0000-0000-00000000a002', at_version => 1)$$);
SELECT version, event_type, amount_cents, balance_cents
  FROM es.account_history('7a000000-0000-0000-0000-00000000a002') ORDER BY version;
SELECT version, state->>'balance_cents' AS balance FROM es.history('7a000000-0000-0000-0000-00000000a002') ORDER BY version;
SELECT es.deposit('7a000000-0000-0000-0000-00000000a002', 1, 'after');
SELECT es.account_state('7a000000-0000-0000-0000-00000000a002') AS after_deposit;

-- Truncation of a declared type: its own snapshots (of its current revision) cover the cut.
SELECT es.append_events('7a000000-0000-0000-0000-00000000c002', 0,
    ARRAY['{"type": "Opened"}', '{"type": "Noted"}', '{"type": "Noted"}', '{"type": "Noted"}']::jsonb[],
    'lc_ticket');
SELECT es.append_events('7a000000-0000-0000-0000-00000000c002', 4, ARRAY['{"type": "Noted"}']::jsonb[]);
SELECT version, revision IS NOT NULL AS has_revision FROM es.snapshots
 WHERE stream_id = '7a000000-0000-0000-0000-00000000c002' ORDER BY version;
SELECT error_of($$SELECT es.truncate_stream('7a000000-0000-0000-0000-00000000c002', 4)$$);
SELECT es.state('7a000000-0000-0000-0000-00000000c002') AS before_truncation;
SELECT es.truncate_stream('7a000000-0000-0000-0000-00000000c002', 5) AS removed;
SELECT es.append_events('7a000000-0000-0000-0000-00000000c002', 5, ARRAY['{"type": "Noted"}']::jsonb[]);
SELECT es.state('7a000000-0000-0000-0000-00000000c002');
SELECT es.state('7a000000-0000-0000-0000-00000000c002', at_version => 4);
SELECT error_of($$SELECT es.state('7a000000-0000-0000-0000-00000000c002', at_version => 3)$$);
SELECT version, state FROM es.history('7a000000-0000-0000-0000-00000000c002') ORDER BY version;
-- time travel by time: before the stream existed it did not exist; at a time whose events were
-- removed, ES008 (the first four events and the stream's creation share a transaction)
SELECT es.state('7a000000-0000-0000-0000-00000000c002', as_of => '2000-01-01') AS before_it_existed;
SELECT error_of(format('SELECT es.state(%L, as_of => %L)', '7a000000-0000-0000-0000-00000000c002',
    (SELECT created_at FROM es.streams WHERE stream_id = '7a000000-0000-0000-0000-00000000c002')));
SELECT error_of(format('SELECT es.account_state(%L, as_of => %L)', '7a000000-0000-0000-0000-00000000a002',
    (SELECT created_at FROM es.streams WHERE stream_id = '7a000000-0000-0000-0000-00000000a002') - interval '1 microsecond'));
SELECT es.replay('lc_ticket', (SELECT state FROM es.snapshots WHERE stream_id = '7a000000-0000-0000-0000-00000000c002' AND version = 4),
                 data ORDER BY version)
  FROM es.events WHERE stream_id = '7a000000-0000-0000-0000-00000000c002';

-- Every act is audited: who, when, what (positions shown as whether they match the log).
SELECT id > 0 AS has_id, action, target, detail - 'marker_position' - 'first_position_removed'
       - 'last_position_removed' AS detail,
       performed_by = session_user AS by_me, xact_id IS NOT NULL AS in_a_transaction
  FROM es.data_audit ORDER BY id;
SELECT count(*) AS markers_at_their_position FROM es.data_audit a JOIN es.events e
    ON e.global_position = (a.detail->>'marker_position')::bigint
   AND e.stream_id = a.target::uuid AND e.version = (a.detail->>'marker_version')::bigint;
SELECT count(*) AS removal_ranges FROM es.data_audit a
 WHERE (a.detail->>'events_removed')::bigint > 0
   AND (a.detail->>'first_position_removed')::bigint <= (a.detail->>'last_position_removed')::bigint;
