-- Limits: a 10 MB event and a 100,000-event batch are stored whole, in one call.
SELECT es.append_events('70000000-0000-0000-0000-000000000001', 0,
    ARRAY[jsonb_build_object('type', 'Blob', 'payload', repeat('x', 10 * 1024 * 1024))]) AS v;
SELECT version, length(data->>'payload') AS payload_chars FROM es.events
WHERE stream_id = '70000000-0000-0000-0000-000000000001';
SELECT es.append_events('70000000-0000-0000-0000-000000000002', 0, (
    SELECT array_agg(jsonb_build_object('type', 'Bulk', 'i', g) ORDER BY g) FROM generate_series(1, 100000) g)) AS v;
SELECT count(*) AS events, min(version) AS first, max(version) AS last,
       max(global_position) - min(global_position) + 1 AS position_span,
       bool_and((data->>'i')::bigint = version) AS in_order
FROM es.events WHERE stream_id = '70000000-0000-0000-0000-000000000002';
