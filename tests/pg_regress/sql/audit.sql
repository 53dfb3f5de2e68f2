-- Time travel and audit (docs/reference.md §5): es.account_state at a version, as of a time, from the newest
-- usable snapshot; es.account_history with the running balance.
\pset null '(null)'
SET es.snapshot_interval = 4;
SELECT es.append_events('d0000000-0000-0000-0000-000000000001', 0, ARRAY['{"type":"Opened","account_holder":"Alice","initial_balance_cents":0}']::jsonb[]) AS v;
SELECT es.deposit('d0000000-0000-0000-0000-000000000001', 500, 'salary') AS v;
SELECT es.withdraw('d0000000-0000-0000-0000-000000000001', 200, 'rent') AS v;
SELECT es.deposit('d0000000-0000-0000-0000-000000000001', 700, 'bonus') AS v;
SELECT es.freeze_account('d0000000-0000-0000-0000-000000000001', 'audit') AS v;
RESET es.snapshot_interval;
-- today, and at each version
SELECT es.account_state('d0000000-0000-0000-0000-000000000001') AS now;
SELECT v, es.account_state('d0000000-0000-0000-0000-000000000001', at_version => v) AS state
FROM generate_series(1, 5) v ORDER BY v;
-- as of a moment: the newest version recorded at or before it (each command above committed
-- on its own, so version 3's recorded_at is a moment between the deposits)
SELECT es.account_state('d0000000-0000-0000-0000-000000000001',
         as_of => (SELECT recorded_at FROM es.events WHERE stream_id = 'd0000000-0000-0000-0000-000000000001' AND version = 3)) AS as_of_version_3;
SELECT es.account_state('d0000000-0000-0000-0000-000000000001', as_of => '-infinity') AS before_it_existed;
SELECT es.account_state('d0000000-0000-0000-0000-000000000001', as_of => 'infinity', at_version => 2) AS older_of_both;
-- the history with the running balance
SELECT version, event_type, amount_cents, balance_cents, status, description,
       recorded_at = (SELECT recorded_at FROM es.events e WHERE e.stream_id = 'd0000000-0000-0000-0000-000000000001' AND e.version = h.version) AS recorded_at_matches
FROM es.account_history('d0000000-0000-0000-0000-000000000001') h ORDER BY version;
-- the same running balance as the window aggregate
SELECT bool_and(h.balance_cents = (w.state->>'balance_cents')::bigint) AS same_as_window
FROM es.account_history('d0000000-0000-0000-0000-000000000001') h
JOIN (SELECT version, es.account_replay(data) OVER (ORDER BY version) AS state
      FROM es.events WHERE stream_id = 'd0000000-0000-0000-0000-000000000001') w USING (version);
-- account_state takes the current state from the stream row (written with every append) and an
-- older one from the newest usable snapshot (at version 4) plus the tail. The snapshot doctored
-- to 9999 is believed for version 4, not for 3 nor for today's (the row's) state; once the row's
-- state is not usable (its version is not the row's), today's state comes from the snapshot plus
-- the tail too; a snapshot that is not a valid state for its version is skipped.
SELECT version, state FROM es.snapshots WHERE stream_id = 'd0000000-0000-0000-0000-000000000001' ORDER BY version;
SELECT version, state FROM es.streams WHERE stream_id = 'd0000000-0000-0000-0000-000000000001';
UPDATE es.snapshots SET state = jsonb_set(state, '{balance_cents}', '9999')
WHERE stream_id = 'd0000000-0000-0000-0000-000000000001' AND version = 4;
SELECT es.account_state('d0000000-0000-0000-0000-000000000001')->>'balance_cents' AS from_row,
       es.account_state('d0000000-0000-0000-0000-000000000001', at_version => 4)->>'balance_cents' AS from_snapshot,
       es.account_state('d0000000-0000-0000-0000-000000000001', at_version => 3)->>'balance_cents' AS before_snapshot;
UPDATE es.streams SET state = jsonb_set(state, '{version}', '4')
WHERE stream_id = 'd0000000-0000-0000-0000-000000000001';
SELECT es.account_state('d0000000-0000-0000-0000-000000000001')->>'balance_cents' AS row_unusable;
UPDATE es.snapshots SET state = jsonb_set(state, '{version}', '17')
WHERE stream_id = 'd0000000-0000-0000-0000-000000000001' AND version = 4;
SELECT es.account_state('d0000000-0000-0000-0000-000000000001')->>'balance_cents' AS unusable_snapshot_skipped;
-- errors
SELECT error_of($$SELECT es.account_state('d0000000-0000-0000-0000-000000000001', at_version => 0)$$);
SELECT error_of($$SELECT es.account_state('d0000000-0000-0000-0000-000000000001', at_version => 6)$$);
SELECT error_of($$SELECT es.account_state(NULL)$$);
SELECT error_of($$SELECT es.account_state('d0000000-0000-0000-0000-000000000009')$$);
SELECT es.append_events('d0000000-0000-0000-0000-000000000002', 0, ARRAY['{"type":"CartCreated"}']::jsonb[]) AS v;
SELECT error_of($$SELECT es.account_state('d0000000-0000-0000-0000-000000000002')$$);
SELECT error_of($$SELECT * FROM es.account_history('d0000000-0000-0000-0000-000000000002')$$);
SELECT error_of($$SELECT * FROM es.account_history('d0000000-0000-0000-0000-000000000009')$$);
SELECT error_of($$SELECT * FROM es.account_history(NULL)$$);
