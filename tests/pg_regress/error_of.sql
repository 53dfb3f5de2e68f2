-- error_of(sql): runs a statement and shows its error's SQLSTATE, message, DETAIL and HINT as
-- one value ('no error' when it succeeds), so every error case of the SQL contract is golden,
-- codes included. Included (\ir ../error_of.sql) by each golden file that makes a database of
-- its own; not a golden file itself (run.sh runs sql/*.sql).
CREATE FUNCTION error_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text; hnt text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg
        || coalesce(E'\nDETAIL: ' || nullif(det, ''), '')
        || coalesce(E'\nHINT: ' || nullif(hnt, ''), '');
END $$;
