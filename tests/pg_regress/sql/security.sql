-- Security (docs/reference.md §7b): append-only even for the owner, no direct writes for PUBLIC, pinned
-- search_path for every statement of the writing functions, dumpable tables, and the writer/auditor roles of docs/security.md.
SELECT es.append_events('60000000-0000-0000-0000-000000000001', 0, ARRAY['{"type":"Fact"}']::jsonb[]) AS v;
SELECT error_of($$UPDATE es.events SET data = '{}'$$);
SELECT error_of($$DELETE FROM es.events$$);
SELECT error_of($$TRUNCATE es.events$$);
SELECT count(*) AS still_there FROM es.events WHERE stream_id = '60000000-0000-0000-0000-000000000001';
-- no privileges for PUBLIC on the tables; writing functions not executable by PUBLIC
SELECT c.relname,
       has_table_privilege('public', c.oid, 'SELECT') AS pub_select,
       has_table_privilege('public', c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE') AS pub_write
FROM pg_class c WHERE c.relnamespace = 'es'::regnamespace AND c.relkind = 'r' ORDER BY 1;
SELECT has_sequence_privilege('public', 'es.global_position_seq', 'USAGE,UPDATE') AS pub_nextval;
SELECT p.oid::regprocedure AS function, has_function_privilege('public', p.oid, 'EXECUTE') AS public_exec,
       p.prosecdef AS security_definer, p.proconfig AS settings
FROM pg_proc p WHERE p.pronamespace = 'es'::regnamespace ORDER BY p.oid::regprocedure::text;
-- the tables are part of pg_dump output even though the extension owns them
SELECT c::regclass AS dumped FROM pg_extension, unnest(extconfig) AS c WHERE extname = 'event_store' ORDER BY c::regclass::text;
-- every object is documented
SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'es'::regnamespace AND c.relkind IN ('r', 'S')
  AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'es'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL;
-- the roles of docs/security.md: a writer appends through the functions only; an auditor reads
CREATE ROLE regress_es_writer;
CREATE ROLE regress_es_auditor;
GRANT USAGE ON SCHEMA es TO regress_es_writer, regress_es_auditor;
GRANT EXECUTE ON FUNCTION es.append_events(uuid, bigint, jsonb[], text), es.save_snapshot(uuid, bigint, jsonb) TO regress_es_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA es TO regress_es_auditor;
SET ROLE regress_es_writer;
SELECT es.append_events('60000000-0000-0000-0000-000000000001', 1, ARRAY['{"type":"ByWriter"}']::jsonb[]) AS v;
SELECT error_of($$INSERT INTO es.events (global_position, stream_id, version, event_id, event_type, data) VALUES (-1, gen_random_uuid(), 1, gen_random_uuid(), 'Forged', '{}')$$);
SELECT error_of($$UPDATE es.streams SET version = 0$$);
RESET ROLE;
SET ROLE regress_es_auditor;
SELECT version, event_type FROM es.load_events('60000000-0000-0000-0000-000000000001');
SELECT error_of($$SELECT es.append_events('60000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"ByAuditor"}']::jsonb[])$$);
SELECT error_of($$DELETE FROM es.snapshots$$);
RESET ROLE;
-- the native reads (load_events, account_state, account_history) respect privileges and
-- row-level security like a plain SELECT: a role without SELECT is refused, a policy filters
CREATE ROLE regress_es_nobody;
GRANT USAGE ON SCHEMA es TO regress_es_nobody;
SET ROLE regress_es_nobody;
SELECT error_of($$SELECT * FROM es.load_events('60000000-0000-0000-0000-000000000001')$$);
SELECT error_of($$SELECT * FROM es.account_history('60000000-0000-0000-0000-000000000001')$$);
RESET ROLE;
ALTER TABLE es.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY regress_only_first ON es.events FOR SELECT TO regress_es_auditor USING (version = 1);
SET ROLE regress_es_auditor;
SELECT version, event_type FROM es.load_events('60000000-0000-0000-0000-000000000001');
RESET ROLE;
DROP POLICY regress_only_first ON es.events;
ALTER TABLE es.events DISABLE ROW LEVEL SECURITY;
REVOKE USAGE ON SCHEMA es FROM regress_es_nobody;
DROP ROLE regress_es_nobody;
-- a native read remembers a granted SELECT per backend only until an invalidation: a REVOKE,
-- a change of role membership and a rolled-back GRANT/REVOKE are seen by the very next read
CREATE ROLE regress_es_readers;
CREATE ROLE regress_es_member;
GRANT USAGE ON SCHEMA es TO regress_es_readers, regress_es_member;
GRANT SELECT ON es.events, es.streams TO regress_es_readers;
GRANT regress_es_readers TO regress_es_member;
SET ROLE regress_es_member;
SELECT version, event_type FROM es.load_events('60000000-0000-0000-0000-000000000001');
RESET ROLE;
REVOKE regress_es_readers FROM regress_es_member;
SET ROLE regress_es_member;
SELECT error_of($$SELECT * FROM es.load_events('60000000-0000-0000-0000-000000000001')$$);
RESET ROLE;
GRANT regress_es_readers TO regress_es_member;
SET ROLE regress_es_member;
SELECT count(*) AS events FROM es.load_events('60000000-0000-0000-0000-000000000001');
RESET ROLE;
REVOKE SELECT ON es.events FROM regress_es_readers;
SET ROLE regress_es_member;
SELECT error_of($$SELECT * FROM es.load_events('60000000-0000-0000-0000-000000000001')$$);
RESET ROLE;
BEGIN;
GRANT SELECT ON es.events TO regress_es_readers;
SET LOCAL ROLE regress_es_member;
SELECT count(*) AS events FROM es.load_events('60000000-0000-0000-0000-000000000001');
RESET ROLE;
SAVEPOINT before_revoke;
REVOKE SELECT ON es.events FROM regress_es_readers;
SET LOCAL ROLE regress_es_member;
SELECT error_of($$SELECT * FROM es.load_events('60000000-0000-0000-0000-000000000001')$$);
ROLLBACK TO SAVEPOINT before_revoke;
SET LOCAL ROLE regress_es_member;
SELECT count(*) AS events FROM es.load_events('60000000-0000-0000-0000-000000000001');
COMMIT;
REVOKE ALL ON es.events, es.streams FROM regress_es_readers;
REVOKE ALL ON SCHEMA es FROM regress_es_readers, regress_es_member;
DROP ROLE regress_es_member;
DROP ROLE regress_es_readers;
-- the caller's search_path cannot redirect a writing function: an unqualified function its
-- batch insert calls (transaction_timestamp) is shadowed here, and must not be picked up
CREATE SCHEMA regress_evil;
CREATE FUNCTION regress_evil.transaction_timestamp() RETURNS timestamptz
    LANGUAGE sql AS $$ SELECT '1999-01-01 00:00:00+00'::timestamptz $$;
-- nor a declared type's check, run by an append that runs no statement of its own before
-- it (the native bump of an existing stream): it sees the pinned path, as the store's SQL does
CREATE SCHEMA regress_pinned;
CREATE FUNCTION regress_pinned.evolve(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT state $$;
CREATE FUNCTION regress_pinned."check"(state jsonb, event jsonb) RETURNS void LANGUAGE plpgsql
AS $$
BEGIN
    IF transaction_timestamp() < '2000-01-01' THEN
        RAISE EXCEPTION 'the check resolved a name through the caller''s search_path';
    END IF;
END $$;
SELECT es.define_aggregate('regress_pinned', 'regress_pinned.evolve(jsonb,jsonb)', '{}',
  'regress_pinned.check(jsonb,jsonb)');
SELECT es.append_events('60000000-0000-0000-0000-000000000002', 0, ARRAY['{"type":"Pinned"}']::jsonb[], 'regress_pinned') AS v;
SET search_path = regress_evil, pg_catalog;
SELECT es.append_events('60000000-0000-0000-0000-000000000001', 2, ARRAY['{"type":"PathSafe"}', '{"type":"PathSafe"}']::jsonb[]) AS v;
SELECT es.append_events('60000000-0000-0000-0000-000000000002', 1, ARRAY['{"type":"Pinned"}']::jsonb[]) AS pinned_v;
RESET search_path;
SELECT es.drop_aggregate('regress_pinned', detach => true);
DROP SCHEMA regress_pinned CASCADE;
SELECT version, event_type, recorded_at > '2000-01-01' AS real_time, occurred_at > '2000-01-01' AS real_occurred
FROM es.events WHERE stream_id = '60000000-0000-0000-0000-000000000001' AND version >= 3 ORDER BY version;
SELECT updated_at > '2000-01-01' AS real_updated FROM es.streams WHERE stream_id = '60000000-0000-0000-0000-000000000001';
DROP SCHEMA regress_evil CASCADE;
REVOKE ALL ON FUNCTION es.append_events(uuid, bigint, jsonb[], text), es.save_snapshot(uuid, bigint, jsonb) FROM regress_es_writer;
REVOKE ALL ON ALL TABLES IN SCHEMA es FROM regress_es_auditor;
REVOKE ALL ON SCHEMA es FROM regress_es_writer, regress_es_auditor;
DROP ROLE regress_es_writer;
DROP ROLE regress_es_auditor;
