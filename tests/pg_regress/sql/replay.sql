-- es.account_replay: the account aggregate over stored events, as an aggregate, as a window
-- function (running balance), and from a snapshot's state; every replay error is ES003.
\pset null '(null)'
SELECT es.append_events('90000000-0000-0000-0000-000000000001', 0, ARRAY[
  '{"type":"Opened","account_holder":"Alice","initial_balance_cents":0}',
  '{"type":"Deposited","amount_cents":500,"description":"salary"}',
  '{"type":"Withdrawn","amount_cents":200,"description":"rent"}',
  '{"type":"Deposited","amount_cents":700,"description":"bonus"}',
  '{"type":"Frozen","reason":"audit"}'
]::jsonb[]) AS v;
SELECT es.account_replay(data ORDER BY version) AS state
FROM es.events WHERE stream_id = '90000000-0000-0000-0000-000000000001';
-- time travel by version: the first three events
SELECT es.account_replay(data ORDER BY version) AS state_at_3
FROM es.events WHERE stream_id = '90000000-0000-0000-0000-000000000001' AND version <= 3;
-- as a window function: the running balance
SELECT version, event_type,
       (es.account_replay(data) OVER (ORDER BY version))->>'balance_cents' AS balance,
       (es.account_replay(data) OVER (ORDER BY version))->>'status' AS status
FROM es.events WHERE stream_id = '90000000-0000-0000-0000-000000000001' ORDER BY version;
-- from a snapshot's state: the tail after version 3 gives the same state as a full replay
SELECT es.account_replay('{"holder_name":"Alice","balance_cents":300,"status":"Active","version":3}', data ORDER BY version) AS from_snapshot
FROM es.events WHERE stream_id = '90000000-0000-0000-0000-000000000001' AND version > 3;
-- no events: NULL
SELECT es.account_replay(data) AS nothing FROM es.events WHERE false;
-- the seed's serde JSON replays unchanged
SELECT es.account_replay(data ORDER BY version) AS seed_state
FROM es.events WHERE stream_id = '20000000-0000-0000-0000-000000000001';
-- errors: unknown type, malformed fields, an account that does not start with Opened
SELECT error_of($$SELECT es.account_replay(e ORDER BY n) FROM (VALUES (1, '{"type":"Opened","account_holder":"A","initial_balance_cents":0}'::jsonb), (2, '{"type":"Teleported"}')) v(n, e)$$);
SELECT error_of($$SELECT es.account_replay(e) FROM (VALUES ('{"type":"Deposited","amount_cents":5}'::jsonb)) v(e)$$);
SELECT error_of($$SELECT es.account_replay(e ORDER BY n) FROM (VALUES (1, '{"type":"Opened","account_holder":"A","initial_balance_cents":0}'::jsonb), (2, '{"type":"Deposited","amount_cents":"5"}')) v(n, e)$$);
SELECT error_of($$SELECT es.account_replay(e ORDER BY n) FROM (VALUES (1, '{"type":"Opened","account_holder":"A","initial_balance_cents":0}'::jsonb), (2, '{"type":"Withdrawn","amount_cents":2.5}')) v(n, e)$$);
SELECT error_of($$SELECT es.account_replay(e ORDER BY n) FROM (VALUES (1, '{"type":"Opened","account_holder":"A","initial_balance_cents":0}'::jsonb), (2, '{"type":"Deposited"}')) v(n, e)$$);
SELECT error_of($$SELECT es.account_replay(e) FROM (VALUES ('{"type":"Opened","initial_balance_cents":0}'::jsonb)) v(e)$$);
SELECT error_of($$SELECT es.account_replay(e ORDER BY n) FROM (VALUES (1, '{"type":"Opened","account_holder":"A","initial_balance_cents":0}'::jsonb), (2, '{"type":"Opened","account_holder":"B","initial_balance_cents":0}')) v(n, e)$$);
SELECT error_of($$SELECT es.account_replay(e) FROM (VALUES ('[1]'::jsonb)) v(e)$$);
SELECT error_of($$SELECT es.account_replay(e) FROM (VALUES (NULL::jsonb)) v(e)$$);
SELECT error_of($$SELECT es.account_replay(e) FROM (VALUES ('{"type":7}'::jsonb)) v(e)$$);
SELECT error_of($$SELECT es.account_replay('{"balance_cents":1}', e) FROM (VALUES ('{"type":"Frozen"}'::jsonb)) v(e)$$);
SELECT error_of($$SELECT es.account_replay('[]', e) FROM (VALUES ('{"type":"Frozen"}'::jsonb)) v(e)$$);
-- a longer history: the replayed balance equals the arithmetic sum of the events
SELECT es.append_events('90000000-0000-0000-0000-000000000002', 0,
    ARRAY['{"type":"Opened","account_holder":"Bob","initial_balance_cents":1000}']::jsonb[]) AS v;
SELECT es.append_events('90000000-0000-0000-0000-000000000002', 1, (
    SELECT array_agg(CASE WHEN g % 3 = 0 THEN jsonb_build_object('type', 'Withdrawn', 'amount_cents', g, 'description', 'w')
                          ELSE jsonb_build_object('type', 'Deposited', 'amount_cents', 2 * g, 'description', 'd') END ORDER BY g)
    FROM generate_series(1, 3000) g)) AS v;
SELECT (es.account_replay(data ORDER BY version)->>'balance_cents')::bigint
     = sum(CASE data->>'type' WHEN 'Opened' THEN (data->>'initial_balance_cents')::bigint
                              WHEN 'Deposited' THEN (data->>'amount_cents')::bigint
                              WHEN 'Withdrawn' THEN -(data->>'amount_cents')::bigint ELSE 0 END) AS replay_equals_sum,
       es.account_replay(data ORDER BY version)->>'version' AS version
FROM es.events WHERE stream_id = '90000000-0000-0000-0000-000000000002';
