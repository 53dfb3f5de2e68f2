-- The es.account_replay aggregate (docs/reference.md §5), over the transition and final functions that
-- src/api/replay.rs registers (their declarations come with their code; this file only needs them
-- to exist, which the extension_sql_file! `requires` ensures).

CREATE AGGREGATE es.account_replay(event jsonb) (
    SFUNC = es.account_replay_step,
    STYPE = internal,
    FINALFUNC = es.account_replay_final
);
COMMENT ON AGGREGATE es.account_replay(jsonb) IS
  'Folds account events into the account state: SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = $1. Also a window function (running balance). Unknown or malformed events: ES003.';

CREATE AGGREGATE es.account_replay(initial_state jsonb, event jsonb) (
    SFUNC = es.account_replay_from_step,
    STYPE = internal,
    FINALFUNC = es.account_replay_final
);
COMMENT ON AGGREGATE es.account_replay(jsonb, jsonb) IS
  'es.account_replay starting from a state JSON (e.g. a snapshot''s): SELECT es.account_replay(s.state, e.data ORDER BY e.version) ... WHERE e.version > s.version.';
