-- The undo of reg_columns_to_text.sql, run on the new cluster after pg_upgrade (before the
-- library is preloaded, or at least before any append: until it ran, the store cannot read its
-- registry of aggregate types and upcasters). The text form resolves to the functions' new
-- OIDs; es.aggregates comes back with its definition, comment and privileges, as a member of
-- the extension again. Also the rollback of reg_columns_to_text.sql on the old cluster.
\set ON_ERROR_STOP 1
BEGIN;
SET LOCAL search_path = pg_catalog;
ALTER TABLE es.aggregate_types ALTER COLUMN evolve TYPE regprocedure USING evolve::regprocedure,
                               ALTER COLUMN "check" TYPE regprocedure USING "check"::regprocedure;
ALTER TABLE es.upcasters ALTER COLUMN upcast TYPE regprocedure USING upcast::regprocedure;
DO $$
DECLARE
    saved record;
BEGIN
    SELECT * INTO STRICT saved FROM public.es_pg_upgrade_saved;
    EXECUTE 'CREATE VIEW es.aggregates AS ' || saved.viewdef;
    EXECUTE format('COMMENT ON VIEW es.aggregates IS %L', saved.comment);
    -- the privileges sql/flow.sql gives it; anything else saved is refused, not guessed
    REVOKE ALL ON es.aggregates FROM PUBLIC;
    GRANT SELECT ON es.aggregates TO pg_monitor;
    -- (the owner's own entry is left out: PostgreSQL 17 added MAINTAIN to it)
    IF (SELECT array_agg(x ORDER BY x) FROM pg_class c, unnest(c.relacl::text[]) x
         WHERE c.oid = 'es.aggregates'::regclass AND x NOT LIKE c.relowner::regrole::text || '=%')
       IS DISTINCT FROM
       (SELECT array_agg(x ORDER BY x) FROM unnest(saved.acl::text[]) x
         WHERE x NOT LIKE (SELECT relowner::regrole::text FROM pg_class WHERE oid = 'es.aggregates'::regclass) || '=%') THEN
        RAISE EXCEPTION 'es.aggregates had other privileges before the upgrade: %', saved.acl;
    END IF;
END $$;
ALTER EXTENSION event_store ADD VIEW es.aggregates;
DROP TABLE public.es_pg_upgrade_saved;
COMMIT;
