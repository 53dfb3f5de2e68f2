-- Runs first: the extension, and a helper that shows an error's SQLSTATE, message, DETAIL and
-- HINT as one value, so every error case of the SQL contract is golden (codes included).
CREATE EXTENSION event_store;
\ir ../error_of.sql
