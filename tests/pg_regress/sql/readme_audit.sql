-- docs/accounts-and-aggregates.md "Audit and time travel with psql", as written: a fresh psql
-- session in a database with the extension. psql keeps the account id and a moment in variables
-- (\gset).
SET es.snapshot_interval = 2;   -- snapshots every 2 versions, so a short story has some
SELECT es.open_account('Alice', 0) AS account_id \gset
SELECT es.deposit(:'account_id', 500, 'salary') AS version;
SELECT es.withdraw(:'account_id', 200, 'rent') AS version;
SELECT clock_timestamp() AS before_bonus \gset
SELECT es.deposit(:'account_id', 700, 'bonus') AS version;
SELECT es.freeze_account(:'account_id', 'audit') AS version;

-- The balance before the bonus beside today's.
SELECT es.account_state(:'account_id', as_of => :'before_bonus')->>'balance_cents' AS balance_before_bonus,
       es.account_state(:'account_id')->>'balance_cents' AS balance_today,
       es.account_state(:'account_id')->>'status' AS status_today;

-- The history with running balances.
SELECT version, event_type, amount_cents, balance_cents, status, description
FROM es.account_history(:'account_id') ORDER BY version;

-- The state at version 3, and the snapshot that served it.
SELECT version AS served_by_snapshot_at, es.account_state(:'account_id', at_version => 3) AS state_at_version_3
FROM es.load_snapshot(:'account_id', 3);

-- The same folds in plain SQL with the es.account_replay aggregate: the state, the running
-- balance (as a window function), a snapshot plus the tail after it.
SELECT es.account_replay(data ORDER BY version) AS state
FROM es.events WHERE stream_id = :'account_id';
SELECT version, es.account_replay(data) OVER (ORDER BY version) ->> 'balance_cents' AS balance
FROM es.events WHERE stream_id = :'account_id' ORDER BY version;
SELECT s.version AS snapshot_version, es.account_replay(s.state, e.data ORDER BY e.version) AS state
FROM es.load_snapshot(:'account_id') s
JOIN es.events e ON e.stream_id = :'account_id' AND e.version > s.version
GROUP BY s.version;

-- Any other question is SQL over es.events: this account's withdrawals above 1 EUR this month.
SELECT version, (data->>'amount_cents')::bigint AS amount_cents
FROM es.events
WHERE stream_id = :'account_id' AND event_type = 'Withdrawn'
  AND (data->>'amount_cents')::bigint > 100 AND recorded_at >= date_trunc('month', now())
ORDER BY version;
