-- The events array as es.append_events reads it: elements of every size one after another
-- (each aligned to 4 bytes in the array), a lower bound other than 1, a large array from a
-- table (compressed, detoasted before it is read). Every element is stored exactly as sent, in
-- order.
-- All in one rolled-back transaction, the positions' sequence set back after it: the tests
-- after this one count the log's events and print positions.
SELECT last_value AS seq_last, is_called AS seq_called FROM es.global_position_seq \gset
BEGIN;
CREATE TEMP TABLE sent AS
SELECT ARRAY(SELECT jsonb_build_object('type', 'Sized', 'pad', repeat('x', n))
             FROM generate_series(0, 9) AS n) AS events;
SELECT es.append_events('3a000000-0000-0000-0000-000000000001', 0, events) AS v FROM sent;
SELECT e.version, e.event_type, length(e.data ->> 'pad') AS pad, e.data = s.events[e.version] AS same
FROM es.events e, sent s
WHERE e.stream_id = '3a000000-0000-0000-0000-000000000001'
ORDER BY e.version;
-- a lower bound other than 1
SELECT es.append_events('3a000000-0000-0000-0000-000000000002', 0,
    '[5:6]={"{\"type\": \"A\"}","{\"type\": \"B\", \"k\": 1}"}'::jsonb[]) AS v;
SELECT version, event_type, data FROM es.events
WHERE stream_id = '3a000000-0000-0000-0000-000000000002'
ORDER BY version;
-- a large array stored in a table: compressed, so it is detoasted first
CREATE TEMP TABLE big (events jsonb[]);
INSERT INTO big
SELECT ARRAY(SELECT jsonb_build_object('type', 'Big', 'n', n, 'pad', repeat('y', 200))
             FROM generate_series(1, 200) AS n);
SELECT pg_column_compression(events) IS NOT NULL AS compressed FROM big;
SELECT es.append_events('3a000000-0000-0000-0000-000000000003', 0, events) AS v FROM big;
SELECT count(*) AS events, bool_and(e.data = b.events[e.version]) AS same,
       min(e.version) AS first, max(e.version) AS last
FROM es.events e, big b
WHERE e.stream_id = '3a000000-0000-0000-0000-000000000003';
ROLLBACK;
SELECT setval('es.global_position_seq', :seq_last, :'seq_called'::boolean) IS NOT NULL AS set_back;
