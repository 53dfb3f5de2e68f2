-- es.save_snapshot / es.load_snapshot: several per stream, the newest at or below a version.
SELECT es.append_events('50000000-0000-0000-0000-000000000001', 0, (
    SELECT array_agg(jsonb_build_object('type', 'Tick') ORDER BY g) FROM generate_series(1, 10) g)) AS v;
SELECT count(*) AS none FROM es.load_snapshot('50000000-0000-0000-0000-000000000001');
SELECT es.save_snapshot('50000000-0000-0000-0000-000000000001', 3, '{"ticks": 3}');
SELECT es.save_snapshot('50000000-0000-0000-0000-000000000001', 7, '{"ticks": 7}');
SELECT es.save_snapshot('50000000-0000-0000-0000-000000000001', 10, '{"ticks": 10}');
SELECT version, state FROM es.load_snapshot('50000000-0000-0000-0000-000000000001');
SELECT version, state FROM es.load_snapshot('50000000-0000-0000-0000-000000000001', 9);
SELECT version, state FROM es.load_snapshot('50000000-0000-0000-0000-000000000001', 7);
SELECT version, state FROM es.load_snapshot('50000000-0000-0000-0000-000000000001', 2);
-- saving a version again replaces its state
SELECT es.save_snapshot('50000000-0000-0000-0000-000000000001', 7, '{"ticks": 7, "fixed": true}');
SELECT version, state FROM es.load_snapshot('50000000-0000-0000-0000-000000000001', 8);
SELECT stream_id, version, state FROM es.snapshots WHERE stream_id = '50000000-0000-0000-0000-000000000001' ORDER BY version;
