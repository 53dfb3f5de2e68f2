-- Every error of es.append_events and the snapshot functions, with its SQLSTATE: each one
-- leaves the store unchanged.
SELECT es.append_events('30000000-0000-0000-0000-000000000001', 0,
    ARRAY['{"type":"Created"}', '{"type":"Renamed"}']::jsonb[]) AS v;
SELECT es.append_events('30000000-0000-0000-0000-000000000002', 0,
    ARRAY['{"type":"X","event_id":"01890000-0000-7000-8000-0000000000e1"}']::jsonb[]) AS v;
CREATE TEMP TABLE before AS SELECT count(*) AS events FROM es.events;
-- ES001 wrong expected version, for every mode that checks
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', 0, ARRAY['{"type":"X"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', 1, ARRAY['{"type":"X"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', 5, ARRAY['{"type":"X"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000009', 3, ARRAY['{"type":"X"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', 1, ARRAY[]::jsonb[])$$);
-- ES002 stream not found
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000009', -1, ARRAY['{"type":"X"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000009', -1, ARRAY[]::jsonb[])$$);
-- argument errors: 22004 NULL, 22023 invalid
SELECT error_of($$SELECT es.append_events(NULL, NULL, ARRAY['{"type":"X"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, NULL)$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X"}', NULL]::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', -2, ARRAY['{"type":"X"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY[['{"type":"X"}'], ['{"type":"Y"}']]::jsonb[])$$);
-- ES003 invalid events: which element, and why
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X"}', '[1, 2]']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['"just a string"']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"kind":"X"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":""}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":42}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":["X"]}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","event_id":"not-a-uuid"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","event_id":12}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","occurred_at":"last tuesday"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","occurred_at":"2025-10-11T08:30:00"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","occurred_at":1760171400}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","event_version":0}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","event_version":2.5}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","event_version":"2"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","event_version":99999999999}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","metadata":"user=bob"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","metadata":[1]}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","aggregate_id":"30000000-0000-0000-0000-000000000002"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","sequence_number":2}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', 2, ARRAY['{"type":"X","sequence_number":3}', '{"type":"Y","sequence_number":5}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","sequence_number":"3"}']::jsonb[])$$);
-- ES004 duplicate event id (stored in stream ...0002 above): reused in another stream, with
-- more events, or twice in one batch
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","event_id":"01890000-0000-7000-8000-0000000000e1"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', 2, ARRAY['{"type":"X","event_id":"01890000-0000-7000-8000-0000000000e1"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000002', NULL, ARRAY['{"type":"X","event_id":"01890000-0000-7000-8000-0000000000e1"}', '{"type":"Y"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X","event_id":"01890000-0000-7000-8000-0000000000e7"}', '{"type":"Y","event_id":"01890000-0000-7000-8000-0000000000e7"}']::jsonb[])$$);
-- ES004's DETAIL says where in every case: a new stream (expected 0), an explicit version that
-- wins the stream, and the same stream at an earlier version (no retry: not right after it)
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-0000000000f1', 0, ARRAY['{"type":"X","event_id":"01890000-0000-7000-8000-0000000000e1"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', es.stream_version('30000000-0000-0000-0000-000000000001'), ARRAY['{"type":"X","event_id":"01890000-0000-7000-8000-0000000000e1"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000002', 1, ARRAY['{"type":"X","event_id":"01890000-0000-7000-8000-0000000000e1"}']::jsonb[])$$);
-- ES005 snapshots outside 1..current version
SELECT error_of($$SELECT es.save_snapshot('30000000-0000-0000-0000-000000000001', 0, '{}')$$);
SELECT error_of($$SELECT es.save_snapshot('30000000-0000-0000-0000-000000000001', 3, '{}')$$);
SELECT error_of($$SELECT es.save_snapshot('30000000-0000-0000-0000-000000000009', 1, '{}')$$);
SELECT error_of($$SELECT es.save_snapshot('30000000-0000-0000-0000-000000000001', 1, NULL)$$);
SELECT error_of($$SELECT es.save_snapshot('30000000-0000-0000-0000-000000000001', NULL, '{}')$$);
-- read argument errors
SELECT error_of($$SELECT * FROM es.load_events(NULL)$$);
SELECT error_of($$SELECT * FROM es.load_events('30000000-0000-0000-0000-000000000001', 0, -1)$$);
SELECT error_of($$SELECT * FROM es.read_all(NULL)$$);
-- every count is a bigint, as es.load_events' is: a driver binding two 64-bit integers finds it
SELECT pg_get_function_identity_arguments('es.read_all'::regproc) AS read_all,
       pg_get_function_identity_arguments('es.poll'::regproc) AS poll;
SELECT error_of($$SELECT * FROM es.read_all(0, -1::bigint)$$);
SELECT count(*) AS more_than_an_int FROM es.read_all(0::bigint, 9223372036854775807::bigint);
SELECT error_of($$SELECT * FROM es.read_all(0, -5)$$);
SELECT error_of($$SELECT * FROM es.load_snapshot(NULL)$$);
-- nothing above changed the store; the stream still takes appends at its version
SELECT (SELECT count(*) FROM es.events) - events AS new_events FROM before;
SELECT es.stream_version('30000000-0000-0000-0000-000000000001') AS version;
SELECT es.append_events('30000000-0000-0000-0000-000000000001', 2, ARRAY['{"type":"Closed"}']::jsonb[]) AS v;
-- a failed append inside a transaction aborts it: nothing of it stays
BEGIN;
SELECT es.append_events('30000000-0000-0000-0000-000000000003', 0, ARRAY['{"type":"A"}']::jsonb[]) AS v;
SELECT es.append_events('30000000-0000-0000-0000-000000000003', 0, ARRAY['{"type":"B"}']::jsonb[]) AS v;
ROLLBACK;
SELECT es.stream_version('30000000-0000-0000-0000-000000000003') AS version;
-- ES001 is catchable by its code in PL/pgSQL
DO $$
BEGIN
    PERFORM es.append_events('30000000-0000-0000-0000-000000000001', 1, ARRAY['{"type":"Late"}']::jsonb[]);
EXCEPTION WHEN SQLSTATE 'ES001' THEN
    RAISE WARNING 'caught ES001 as expected';
END $$;
-- 25006 in a read-only transaction (as on a hot standby): every write path, the native ones too
BEGIN READ ONLY;
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"X"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('30000000-0000-0000-0000-0000000000f9', 0, ARRAY['{"type":"X"}']::jsonb[])$$);
SELECT error_of($$SELECT es.open_account('Ro', 0)$$);
SELECT error_of($$SELECT es.save_snapshot('30000000-0000-0000-0000-000000000001', 1, '{}')$$);
ROLLBACK;
