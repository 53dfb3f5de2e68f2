-- The account commands (docs/reference.md §5): the seed's story, every rule with its SQLSTATE, automatic
-- snapshots on the interval (also when a batch jumps over a multiple), snapshot + tail.
\pset null '(null)'
CREATE TEMP TABLE acct AS SELECT es.open_account('Alice', 0) AS id;
SELECT (SELECT stream_type FROM es.streams WHERE stream_id = id) AS stream_type,
       es.stream_version(id) AS version FROM acct;
SELECT es.deposit(id, 500, 'salary') AS v FROM acct;
SELECT es.withdraw(id, 200, 'rent') AS v FROM acct;
SELECT es.deposit(id, 700, 'bonus') AS v FROM acct;
-- the seed's own "withdraw 0" is refused, and so is an overdraft
SELECT replace(error_of(format($$SELECT es.withdraw(%L, 0, 'nothing')$$, id)), id::text, '<account>') AS error FROM acct;
SELECT replace(error_of(format($$SELECT es.withdraw(%L, 5000, 'too much')$$, id)), id::text, '<account>') AS error FROM acct;
SELECT replace(error_of(format($$SELECT es.deposit(%L, -1)$$, id)), id::text, '<account>') AS error FROM acct;
-- a stale explicit expected version
SELECT replace(error_of(format($$SELECT es.deposit(%L, 10, 'late', 2)$$, id)), id::text, '<account>') AS error FROM acct;
SELECT es.deposit(id, 10, 'on time', 4) AS v FROM acct;
SELECT data->>'type' AS type, data->>'amount_cents' AS amount, data->>'description' AS description
FROM es.events, acct WHERE stream_id = id ORDER BY version;
SELECT es.account_replay(data ORDER BY version) AS state FROM es.events, acct WHERE stream_id = id;
-- the events the commands write carry the seed's whole shape (docs/reference.md §5), with the values the
-- store keeps in its columns, so the seed's client decodes them (AccountEvent + EventMetadata)
SELECT version, data->>'type' AS type, data->>'event_type' AS event_type,
       (data->>'event_id')::uuid = event_id AS event_id_ok,
       (data->>'aggregate_id')::uuid = stream_id AS aggregate_id_ok,
       (data->'sequence_number')::bigint = version AS sequence_number_ok,
       (data->>'occurred_at')::timestamptz = occurred_at AS occurred_at_ok,
       data->>'occurred_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$' AS rfc3339_utc,
       data->'event_version' AS event_version,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(data) k) AS keys
FROM es.events, acct WHERE stream_id = id ORDER BY version;
-- frozen: no deposits or withdrawals; closing works, closing twice does not
SELECT es.freeze_account(id, 'audit') AS v FROM acct;
SELECT replace(error_of(format($$SELECT es.deposit(%L, 1)$$, id)), id::text, '<account>') AS error FROM acct;
SELECT replace(error_of(format($$SELECT es.freeze_account(%L, 'again')$$, id)), id::text, '<account>') AS error FROM acct;
SELECT es.close_account(id, 'moved away') AS v FROM acct;
SELECT replace(error_of(format($$SELECT es.close_account(%L, 'again')$$, id)), id::text, '<account>') AS error FROM acct;
SELECT version, data->>'type' AS type, data->>'event_type' AS event_type, data->>'reason' AS reason,
       (data->'sequence_number')::bigint = version AS sequence_number_ok
FROM es.events, acct WHERE stream_id = id AND version > 5 ORDER BY version;
-- other refusals: no such stream, not an account, negative opening balance, NULLs
SELECT error_of($$SELECT es.deposit('b0000000-0000-0000-0000-000000000009', 1)$$);
SELECT es.append_events('b0000000-0000-0000-0000-000000000001', 0, ARRAY['{"type":"CartCreated"}']::jsonb[]) AS v;
SELECT error_of($$SELECT es.deposit('b0000000-0000-0000-0000-000000000001', 1)$$);
SELECT error_of($$SELECT es.open_account('Bob', -1)$$);
SELECT error_of($$SELECT es.open_account(NULL)$$);
SELECT error_of($$SELECT es.withdraw(NULL, 1)$$);
SELECT replace(error_of(format($$SELECT es.withdraw(%L, NULL)$$, id)), id::text, '<account>') AS error FROM acct;
-- automatic snapshots: every multiple of es.snapshot_interval reached, in the same transaction
SET es.snapshot_interval = 3;
CREATE TEMP TABLE acct2 AS SELECT es.open_account('Carol', 100) AS id;
SELECT es.deposit(id, 1) FROM acct2, generate_series(1, 7);
SELECT s.version, s.state FROM es.snapshots s, acct2 WHERE s.stream_id = acct2.id ORDER BY s.version;
-- commands start from the state kept in the stream row (written with every append); when it is
-- not usable (edited, or NULL), from the newest snapshot plus the tail (the seed drops the
-- snapshot's state; this keeps it). Proof: with the row's state cleared and the snapshot at
-- version 6 doctored to 5000 cents, the command believes 5000 + 1 + 1 and allows a withdrawal a
-- full replay (107) would refuse.
SELECT s.version, s.state FROM es.streams s, acct2 WHERE s.stream_id = acct2.id;
UPDATE es.snapshots SET state = jsonb_set(state, '{balance_cents}', '5000')
FROM acct2 WHERE stream_id = acct2.id AND version = 6;
UPDATE es.streams SET state = NULL FROM acct2 WHERE stream_id = acct2.id;
SELECT es.withdraw(id, 5002, 'all of it, says the snapshot') AS v FROM acct2;
SELECT replace(error_of(format($$SELECT es.withdraw(%L, 1)$$, id)), id::text, '<account>') AS error FROM acct2;
RESET es.snapshot_interval;
SELECT error_of($$SET es.no_such_setting = 1$$);
SELECT error_of($$SET es.snapshot_interval = -1$$);
