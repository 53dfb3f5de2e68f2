-- The account rules on es.append_events (docs/reference.md §5 "on every write path"): a stream whose first
-- event is Opened is an account stream, and every append to it is checked like a command:
-- event schema (ES003), amounts (ES103), status (ES102), balance (ES101). Automatic snapshots
-- are written on this path too, also when a batch jumps over a multiple of the interval.
\pset null '(null)'
-- the seed's own Account::open JSON (serde, flattened EventMetadata) makes an account stream
SELECT es.append_events('c0000000-0000-0000-0000-000000000001', 0, ARRAY[
  '{"type":"Opened","event_id":"c1000000-0000-0000-0000-000000000001","aggregate_id":"c0000000-0000-0000-0000-000000000001","sequence_number":1,"event_type":"Opened","occurred_at":"2024-01-15T10:30:00Z","event_version":1,"account_holder":"Alice","initial_balance_cents":0}'
]::jsonb[]) AS v;
SELECT stream_type, version FROM es.streams WHERE stream_id = 'c0000000-0000-0000-0000-000000000001';
-- valid facts go in, several per call
SELECT es.append_events('c0000000-0000-0000-0000-000000000001', 1, ARRAY[
  '{"type":"Deposited","amount_cents":500,"description":"salary"}',
  '{"type":"Withdrawn","amount_cents":200,"description":"rent"}']::jsonb[]) AS v;
-- an overdraft is refused, also when an earlier element of the same batch made it possible
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Withdrawn","amount_cents":301,"description":"too much"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY[
  '{"type":"Withdrawn","amount_cents":300,"description":"all"}',
  '{"type":"Withdrawn","amount_cents":1,"description":"one more"}']::jsonb[])$$);
-- amounts: zero, negative (ES103)
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Withdrawn","amount_cents":0,"description":"nothing"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Deposited","amount_cents":-5,"description":"minus"}']::jsonb[])$$);
-- malformed facts (ES003): unknown type, fractional / text / missing amount, missing or
-- non-string description and reason, a second Opened
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Teleported"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Deposited","amount_cents":2.5,"description":"half"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Deposited","amount_cents":"5","description":"text"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Deposited","description":"no amount"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Deposited","amount_cents":5}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Deposited","amount_cents":5,"description":"ok"}', '{"type":"Frozen","reason":7}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Opened","account_holder":"Mallory","initial_balance_cents":1000000}']::jsonb[])$$);
-- a new stream that opens with a negative balance, or opens twice in one batch
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000002', 0, ARRAY['{"type":"Opened","account_holder":"Bob","initial_balance_cents":-1}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000002', 0, ARRAY['{"type":"Opened","account_holder":"Bob","initial_balance_cents":0}', '{"type":"Opened","account_holder":"Bob","initial_balance_cents":9}']::jsonb[])$$);
SELECT count(*) AS nothing_stored FROM es.streams WHERE stream_id = 'c0000000-0000-0000-0000-000000000002';
-- status: frozen accounts take no money; closed ones cannot close again
SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Frozen","reason":"audit"}']::jsonb[]) AS v;
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Deposited","amount_cents":5,"description":"late"}']::jsonb[])$$);
SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Closed","reason":"moved"}']::jsonb[]) AS v;
SELECT error_of($$SELECT es.append_events('c0000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Closed","reason":"again"}']::jsonb[])$$);
-- nothing refused was stored: the history is exactly the accepted facts
SELECT version, event_type, data->>'amount_cents' AS amount FROM es.events
WHERE stream_id = 'c0000000-0000-0000-0000-000000000001' ORDER BY version;
-- generic streams are not judged: any type, any payload
SELECT es.append_events('c0000000-0000-0000-0000-000000000003', 0, ARRAY['{"type":"Withdrawn","amount_cents":-99}', '{"type":"Opened"}']::jsonb[]) AS v;
-- automatic snapshots on the append path: reached (3), jumped over (6 by a batch 5..7)
SET es.snapshot_interval = 3;
SELECT es.append_events('c0000000-0000-0000-0000-000000000004', 0, ARRAY['{"type":"Opened","account_holder":"Carol","initial_balance_cents":100}', '{"type":"Deposited","amount_cents":1,"description":"a"}']::jsonb[]) AS v;
SELECT es.append_events('c0000000-0000-0000-0000-000000000004', NULL, ARRAY['{"type":"Deposited","amount_cents":1,"description":"b"}', '{"type":"Deposited","amount_cents":1,"description":"c"}']::jsonb[]) AS v;
SELECT es.append_events('c0000000-0000-0000-0000-000000000004', NULL, ARRAY['{"type":"Withdrawn","amount_cents":4,"description":"d"}', '{"type":"Deposited","amount_cents":10,"description":"e"}', '{"type":"Frozen","reason":"f"}']::jsonb[]) AS v;
SELECT version, state FROM es.snapshots WHERE stream_id = 'c0000000-0000-0000-0000-000000000004' ORDER BY version;
-- a snapshot is part of the append's transaction: rolled back with it
BEGIN;
SET LOCAL es.snapshot_interval = 4;
SELECT es.append_events('c0000000-0000-0000-0000-000000000004', NULL, ARRAY['{"type":"Closed","reason":"g"}']::jsonb[]) AS v;
SELECT version, state->>'status' AS status FROM es.snapshots WHERE stream_id = 'c0000000-0000-0000-0000-000000000004' AND version = 8;
ROLLBACK;
SELECT count(*) AS after_rollback FROM es.snapshots WHERE stream_id = 'c0000000-0000-0000-0000-000000000004' AND version = 8;
SET es.snapshot_interval = 0;
SELECT es.append_events('c0000000-0000-0000-0000-000000000004', NULL, ARRAY['{"type":"Closed","reason":"g"}']::jsonb[]) AS v;
SELECT count(*) AS snapshots_with_interval_off FROM es.snapshots WHERE stream_id = 'c0000000-0000-0000-0000-000000000004' AND version > 7;
RESET es.snapshot_interval;
-- a snapshot saved by hand for an account must be its true state at that version (commands and
-- time travel start from snapshots); other streams' snapshots are saved as given
SELECT es.save_snapshot('c0000000-0000-0000-0000-000000000001', 3, '{"holder_name": "Alice", "balance_cents": 300, "status": "Active", "version": 3}');
SELECT error_of($$SELECT es.save_snapshot('c0000000-0000-0000-0000-000000000001', 3, '{"holder_name": "Alice", "balance_cents": 1000000, "status": "Active", "version": 3}')$$);
SELECT error_of($$SELECT es.save_snapshot('c0000000-0000-0000-0000-000000000001', 2, '{"anything": true}')$$);
SELECT version, state FROM es.snapshots WHERE stream_id = 'c0000000-0000-0000-0000-000000000001' ORDER BY version;
