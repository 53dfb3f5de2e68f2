-- docs/accounts-and-aggregates.md "Aggregates for any domain" example, as written: the page shows
-- the lines between the snippet markers (tests/client/tests/doc_snippets.rs checks it), and
-- tests/pg_regress/sql/types.sql covers the rest of the contract.
-- snippet-start
CREATE SCHEMA issue;
\set id 'a1000000-0000-0000-0000-000000000001'
-- the fold (never refuses a stored event; returns a JSON object) and the rules (raise to refuse)
CREATE FUNCTION issue.evolve(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE event->>'type'
    WHEN 'Opened'    THEN jsonb_build_object('status', 'open', 'comments', 0)
    WHEN 'Commented' THEN state || jsonb_build_object('comments', (state->>'comments')::int + 1)
    WHEN 'Closed'    THEN state || '{"status": "closed"}'
    ELSE state END $$;
CREATE FUNCTION issue.check(state jsonb, event jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF event->>'type' <> 'Opened' AND state->>'status' <> 'open' THEN
    RAISE EXCEPTION 'issue is not open' USING ERRCODE = 'IS002',
          DETAIL = format('status: %s', state->>'status');
  END IF;
END $$;
SELECT es.define_aggregate('issue', 'issue.evolve(jsonb,jsonb)', '{"status": "new"}',
                           'issue.check(jsonb,jsonb)', snapshot_every => 100);

SELECT es.append_events(:'id', 0, ARRAY['{"type":"Opened"}']::jsonb[], 'issue');  -- names the type
SELECT es.append_events(:'id', NULL, ARRAY['{"type":"Closed"}']::jsonb[]);
SELECT es.append_events(:'id', NULL, ARRAY['{"type":"Commented"}']::jsonb[]);
-- ERROR:  issue is not open          (SQLSTATE IS002, DETAIL status: closed — the check's own)
SELECT es.state(:'id');                          -- {"status": "closed", "comments": 0}
SELECT es.state(:'id', at_version => 1);         -- time travel (also as_of => timestamptz)
SELECT version, event_type, state FROM es.history(:'id');
SELECT es.replay('issue', data ORDER BY version) FROM es.events WHERE stream_id = :'id';
-- snippet-end
