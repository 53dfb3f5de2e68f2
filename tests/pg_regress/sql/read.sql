-- Reads: es.load_events ranges, es.stream_version, es.read_all paging.
\pset null '(null)'
SELECT es.append_events('40000000-0000-0000-0000-000000000001', 0, (
    SELECT array_agg(jsonb_build_object('type', 'Step', 'n', g) ORDER BY g) FROM generate_series(1, 5) g)) AS v;
SELECT version, data->>'n' AS n FROM es.load_events('40000000-0000-0000-0000-000000000001');
SELECT version FROM es.load_events('40000000-0000-0000-0000-000000000001', 3);
SELECT version FROM es.load_events('40000000-0000-0000-0000-000000000001', 1, 2);
SELECT version FROM es.load_events('40000000-0000-0000-0000-000000000001', 0, 0);
SELECT count(*) FROM es.load_events('40000000-0000-0000-0000-000000000009');
SELECT es.stream_version('40000000-0000-0000-0000-000000000001') AS existing,
       es.stream_version('40000000-0000-0000-0000-000000000009') AS missing;
-- load_events returns rows of es.events
SELECT pg_typeof(e) FROM es.load_events('40000000-0000-0000-0000-000000000001', 0, 1) e;
-- read_all pages through the global log with the last position it saw
SELECT count(*) = (SELECT count(*) FROM es.events) AS sees_all,
       bool_and(global_position > 0) AS positive
FROM es.read_all(0, 1000000);
CREATE TEMP TABLE pages AS
WITH RECURSIVE page(n, last, seen) AS (
    SELECT 0, 0::bigint, 0::bigint
  UNION ALL
    SELECT n + 1, r.last, seen + r.cnt
    FROM page, LATERAL (SELECT max(global_position) AS last, count(*) AS cnt FROM es.read_all(page.last, 7)) r
    WHERE r.cnt > 0
)
SELECT * FROM page;
SELECT max(seen) = (SELECT count(*) FROM es.events) AS paged_all,
       max(last) = (SELECT max(global_position) FROM es.events) AS reached_end
FROM pages;
-- a transaction's own uncommitted positions hold read_all back (it never returns past an
-- event that is still in flight)
BEGIN;
SELECT es.append_events('40000000-0000-0000-0000-000000000002', 0, ARRAY['{"type":"InFlight"}']::jsonb[]) AS v;
SELECT count(*) AS beyond_in_flight FROM es.read_all((SELECT max(global_position) - 1 FROM es.events), 10);
COMMIT;
SELECT count(*) AS after_commit FROM es.read_all((SELECT max(global_position) - 1 FROM es.events), 10);
