-- Interim step before pg_upgrade, while event_store 0.2.0 keeps function references in
-- regprocedure columns (es.aggregate_types.evolve and "check", es.upcasters.upcast): pg_upgrade
-- refuses every cluster with a reg* column other than regclass, regrole and regtype in a user
-- table ("Checking data type usage ... reg* data types in user tables"), because it does not
-- keep function OIDs. This turns the three columns into their qualified text form
-- ('cart.evolve(jsonb,jsonb)'), which names survive; reg_columns_back.sql turns them back on the
-- new cluster, resolving the names to the new OIDs. The view es.aggregates reads the columns,
-- so it is taken out of the extension and dropped here, its definition kept in
-- public.es_pg_upgrade_saved, and recreated there. Run in every database with the extension,
-- writers stopped, right before stopping the old server (its worker cannot read the registry
-- in between). Transactional: all or nothing.
\set ON_ERROR_STOP 1
BEGIN;
SET LOCAL search_path = pg_catalog;
CREATE TABLE public.es_pg_upgrade_saved AS
SELECT pg_get_viewdef('es.aggregates'::regclass) AS viewdef,
       obj_description('es.aggregates'::regclass, 'pg_class') AS comment,
       (SELECT relacl::text FROM pg_class WHERE oid = 'es.aggregates'::regclass) AS acl;
ALTER EXTENSION event_store DROP VIEW es.aggregates;
DROP VIEW es.aggregates;
ALTER TABLE es.aggregate_types ALTER COLUMN evolve TYPE text USING evolve::text,
                               ALTER COLUMN "check" TYPE text USING "check"::text;
ALTER TABLE es.upcasters ALTER COLUMN upcast TYPE text USING upcast::text;
COMMIT;
