-- The append hot path writes single events with the heap and index access methods. It must do
-- what the executor would: maintain every index (checked by amcheck with heapallindexed), and
-- step aside for what only the executor does (a user's INSERT trigger, an expression index).
CREATE EXTENSION IF NOT EXISTS amcheck;
SELECT es.append_events('80000000-0000-0000-0000-000000000001', 0, ARRAY['{"type":"Seed","sku":"S-0"}']::jsonb[]) AS v;
-- a plain index added by a user is maintained by the native insert
CREATE INDEX events_type_idx ON es.events (event_type);
SELECT es.append_events('80000000-0000-0000-0000-000000000001', 1, ARRAY['{"type":"Indexed","sku":"S-1"}']::jsonb[]) AS v;
SET enable_seqscan = off;
SELECT version FROM es.events WHERE event_type = 'Indexed';
RESET enable_seqscan;
-- an expression index: the executor evaluates it, so the append takes the SQL path
CREATE INDEX events_sku_idx ON es.events ((data->>'sku'));
SELECT es.append_events('80000000-0000-0000-0000-000000000001', 2, ARRAY['{"type":"Expr","sku":"S-2"}']::jsonb[]) AS v;
SET enable_seqscan = off;
SELECT version FROM es.events WHERE data->>'sku' = 'S-2';
RESET enable_seqscan;
DROP INDEX es.events_sku_idx;
-- a user's INSERT trigger still fires (it runs inside the writing function, whose search path
-- is pg_catalog: trigger functions qualify their names)
CREATE TABLE audit_log (stream_id uuid, version bigint, event_type text);
CREATE FUNCTION log_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.audit_log VALUES (NEW.stream_id, NEW.version, NEW.event_type);
    RETURN NEW;
END $$;
CREATE TRIGGER events_audit AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION log_event();
SELECT es.append_events('80000000-0000-0000-0000-000000000001', 3, ARRAY['{"type":"Audited"}']::jsonb[]) AS v;
SELECT es.append_events('80000000-0000-0000-0000-000000000001', 4, ARRAY['{"type":"AuditedBatch","event_version":2}', '{"type":"AuditedBatch","occurred_at":"2025-10-11T08:30:00Z"}']::jsonb[]) AS v;
SELECT * FROM audit_log ORDER BY version;
SELECT version, event_version, occurred_at = recorded_at AS occurred_now FROM es.events
WHERE stream_id = '80000000-0000-0000-0000-000000000001' AND version >= 4 ORDER BY version;
DROP TRIGGER events_audit ON es.events;
-- so does a user's UPDATE trigger on es.streams (the version bump takes the SQL path)
CREATE TABLE bumps (stream_id uuid, old_version bigint, new_version bigint);
CREATE FUNCTION log_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.bumps VALUES (NEW.stream_id, OLD.version, NEW.version);
    RETURN NEW;
END $$;
CREATE TRIGGER streams_bumps AFTER UPDATE ON es.streams FOR EACH ROW EXECUTE FUNCTION log_bump();
SELECT es.append_events('80000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"Bumped"}']::jsonb[]) AS v;
SELECT es.append_events('80000000-0000-0000-0000-000000000001', 7, ARRAY['{"type":"Bumped"}']::jsonb[]) AS v;
SELECT * FROM bumps ORDER BY new_version;
-- account streams on the SQL path: the rules judge the returned row, the state is stored after
SELECT es.append_events('80000000-0000-0000-0000-0000000000a1', 0, ARRAY['{"type":"Opened","account_holder":"T","initial_balance_cents":10}']::jsonb[]) AS v;
SELECT es.deposit('80000000-0000-0000-0000-0000000000a1', 5, 'via SQL') AS v;
SELECT error_of($$SELECT es.withdraw('80000000-0000-0000-0000-0000000000a1', 16)$$);
SELECT es.append_events('80000000-0000-0000-0000-0000000000a1', 2, ARRAY['{"type":"Withdrawn","amount_cents":15,"description":"all"}']::jsonb[]) AS v;
SELECT error_of($$SELECT es.append_events('80000000-0000-0000-0000-0000000000a1', NULL, ARRAY['{"type":"Withdrawn","amount_cents":1,"description":"more"}']::jsonb[])$$);
SELECT version, state FROM es.streams WHERE stream_id = '80000000-0000-0000-0000-0000000000a1';
SELECT count(*) AS account_bumps_seen_by_the_trigger FROM bumps WHERE stream_id = '80000000-0000-0000-0000-0000000000a1';
DROP TRIGGER streams_bumps ON es.streams;
-- many single-event appends in one statement and in one transaction see each other's bumps
SELECT max(es.append_events('80000000-0000-0000-0000-000000000002', NULL, ARRAY['{"type":"Loop"}']::jsonb[])) AS v
FROM generate_series(1, 500);
BEGIN;
SELECT es.append_events('80000000-0000-0000-0000-000000000002', 500, ARRAY['{"type":"InTx"}']::jsonb[]) AS v;
SELECT es.append_events('80000000-0000-0000-0000-000000000002', 501, ARRAY['{"type":"InTx"}']::jsonb[]) AS v;
SELECT error_of($$SELECT es.append_events('80000000-0000-0000-0000-000000000002', 501, ARRAY['{"type":"Stale"}']::jsonb[])$$);
COMMIT;
SELECT count(*) AS events, max(version) AS version, (SELECT version FROM es.streams WHERE stream_id = '80000000-0000-0000-0000-000000000002') AS stream_row
FROM es.events WHERE stream_id = '80000000-0000-0000-0000-000000000002';
-- a duplicate event id on the native path is ES004, and nothing of the failed block stays
SELECT es.append_events('80000000-0000-0000-0000-000000000003', 0, ARRAY['{"type":"A","event_id":"01890000-0000-7000-8000-0000000000f1"}']::jsonb[]) AS v;
SELECT error_of($$SELECT es.append_events('80000000-0000-0000-0000-000000000004', 0, ARRAY['{"type":"A"}', '{"type":"B"}']::jsonb[]) FROM (SELECT 1) s;
                  SELECT es.append_events('80000000-0000-0000-0000-000000000003', 1, ARRAY['{"type":"B","event_id":"01890000-0000-7000-8000-0000000000f1"}']::jsonb[])$$);
SELECT es.stream_version('80000000-0000-0000-0000-000000000003') AS v3,
       es.stream_version('80000000-0000-0000-0000-000000000004') AS v4;
-- every index of the store and every heap page verify
SELECT x.indexrelid::regclass AS index, bt_index_check(x.indexrelid, true) IS NOT NULL AS checked
FROM pg_index x WHERE x.indrelid IN ('es.events'::regclass, 'es.streams'::regclass)
ORDER BY x.indexrelid::regclass::text;
SELECT count(*) AS heap_problems FROM verify_heapam('es.events');
SELECT count(*) AS heap_problems FROM verify_heapam('es.streams');
DROP INDEX es.events_type_idx;
