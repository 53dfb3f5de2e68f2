-- event_store 0.1.0 -> 0.2.0 (unreleased): every schema change of 0.2.0, in the order it was made.
-- sql/bootstrap.sql (and the other files the crate includes) describe the current version for a
-- fresh install; this file brings an installed 0.1.0 to the same schema. tests/client/tests/upgrade.rs
-- proves the two equal (catalogs of schema es) and that data and behaviour survive the update.

\echo Use "ALTER EXTENSION event_store UPDATE TO '0.2.0'" to load this file. \quit

-- (no schema change yet: 0.2.0 so far changes only the library)
