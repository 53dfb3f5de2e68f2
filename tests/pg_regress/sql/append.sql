-- es.append_events: the four expected-version modes, batches, the seed's JSON, retries.
\pset null '(null)'
-- a new stream (expected 0), then an existing one (expected N), then no check (NULL) and -1
SELECT es.append_events('10000000-0000-0000-0000-000000000001', 0,
    ARRAY['{"type":"ItemAdded","sku":"A-1"}', '{"type":"ItemAdded","sku":"B-2"}']::jsonb[]) AS v;
SELECT es.append_events('10000000-0000-0000-0000-000000000001', 2,
    ARRAY['{"type":"ItemRemoved","sku":"A-1"}']::jsonb[]) AS v;
SELECT es.append_events('10000000-0000-0000-0000-000000000001', NULL,
    ARRAY['{"type":"CartCheckedOut"}']::jsonb[]) AS v;
SELECT es.append_events('10000000-0000-0000-0000-000000000001', -1,
    ARRAY['{"type":"CartClosed"}']::jsonb[]) AS v;
-- NULL on a stream that does not exist creates it
SELECT es.append_events('10000000-0000-0000-0000-000000000002', NULL,
    ARRAY['{"type":"ItemAdded"}']::jsonb[]) AS v;
SELECT stream_id, version, event_type, event_version, data, metadata
FROM es.events WHERE stream_id IN ('10000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000002')
ORDER BY global_position;
SELECT stream_id, stream_type, version FROM es.streams ORDER BY stream_id;
-- generated event ids are UUIDv7; occurred_at defaults to the transaction time
SELECT count(*) AS events, bool_and(substr(event_id::text, 15, 1) = '7') AS all_v7,
       bool_and(occurred_at = recorded_at) AS occurred_is_recorded
FROM es.events WHERE stream_id = '10000000-0000-0000-0000-000000000001';
-- the seed's serde JSON, accepted unchanged (aggregate_id and sequence_number must match)
SELECT es.append_events('20000000-0000-0000-0000-000000000001', 0, ARRAY[
  '{"type":"Opened","event_id":"01890000-0000-7000-8000-000000000001","aggregate_id":"20000000-0000-0000-0000-000000000001","sequence_number":1,"event_type":"AccountOpened","occurred_at":"2025-10-11T08:30:00.123456Z","event_version":1,"account_holder":"Alice","initial_balance_cents":0}',
  '{"type":"Deposited","event_id":"01890000-0000-7000-8000-000000000002","aggregate_id":"20000000-0000-0000-0000-000000000001","sequence_number":2,"event_type":"MoneyDeposited","occurred_at":"2025-10-11T09:00:00Z","event_version":1,"amount_cents":50000,"description":"salary"}'
]::jsonb[]) AS v;
SELECT version, event_id, event_type, occurred_at AT TIME ZONE 'UTC' AS occurred_utc, data->>'event_type' AS seed_event_type
FROM es.events WHERE stream_id = '20000000-0000-0000-0000-000000000001' ORDER BY version;
SELECT stream_type FROM es.streams WHERE stream_id = '20000000-0000-0000-0000-000000000001';
-- metadata and event_version are read into their columns
SELECT es.append_events('10000000-0000-0000-0000-000000000003', 0, ARRAY[
  '{"type":"Tagged","event_version":3,"metadata":{"correlation_id":"c-1","user":"bob"}}']::jsonb[]) AS v;
SELECT event_version, metadata FROM es.events WHERE stream_id = '10000000-0000-0000-0000-000000000003';
-- idempotent retry: the same ids in the same place return what the first call returned
SELECT es.append_events('10000000-0000-0000-0000-000000000004', 0, ARRAY[
  '{"type":"A","event_id":"01890000-0000-7000-8000-0000000000a1"}',
  '{"type":"B","event_id":"01890000-0000-7000-8000-0000000000a2"}']::jsonb[]) AS first_call;
SELECT es.append_events('10000000-0000-0000-0000-000000000004', 0, ARRAY[
  '{"type":"A","event_id":"01890000-0000-7000-8000-0000000000a1"}',
  '{"type":"B","event_id":"01890000-0000-7000-8000-0000000000a2"}']::jsonb[]) AS retry_expected_0;
SELECT es.append_events('10000000-0000-0000-0000-000000000004', NULL, ARRAY[
  '{"type":"A","event_id":"01890000-0000-7000-8000-0000000000a1"}',
  '{"type":"B","event_id":"01890000-0000-7000-8000-0000000000a2"}']::jsonb[]) AS retry_no_check;
SELECT es.append_events('10000000-0000-0000-0000-000000000004', 2, ARRAY[
  '{"type":"C","event_id":"01890000-0000-7000-8000-0000000000a3"}']::jsonb[]) AS v;
SELECT es.append_events('10000000-0000-0000-0000-000000000004', 2, ARRAY[
  '{"type":"C","event_id":"01890000-0000-7000-8000-0000000000a3"}']::jsonb[]) AS retry_expected_2;
SELECT count(*) AS stored, max(version) AS version FROM es.events
WHERE stream_id = '10000000-0000-0000-0000-000000000004';
-- an empty array checks the expected version, writes nothing and returns the current version
SELECT es.append_events('10000000-0000-0000-0000-000000000004', 3, ARRAY[]::jsonb[]) AS v;
SELECT es.append_events('10000000-0000-0000-0000-000000000099', NULL, '{}') AS v;
SELECT es.append_events('10000000-0000-0000-0000-000000000099', 0, '{}') AS v;
SELECT count(*) AS streams_created FROM es.streams WHERE stream_id = '10000000-0000-0000-0000-000000000099';
-- global positions follow insert order across streams (the order of the calls above)
SELECT string_agg(left(stream_id::text, 1) || right(stream_id::text, 1) || '/' || version, ' ' ORDER BY global_position) AS insert_order
FROM es.events;
