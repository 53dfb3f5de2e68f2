-- Subscriptions and projections (docs/reference.md §9, §10): the views over their tables, the call of a
-- projection's handler, and the seed's two projections. The functions these use are declared with
-- their code (src/api/subscription.rs, src/api/projection.rs); the extension_sql_file! `requires`
-- puts this file after them.

CREATE FUNCTION es.partition_lag(subscription text, partition integer,
                                  OUT events_behind bigint, OUT seconds_behind double precision,
                                  OUT events_behind_is_estimate boolean)
LANGUAGE sql STABLE
SET jit = off
AS $$
    -- A monitoring scrape reads this for every partition: it looks at no more than the 10,000
    -- events after the checkpoint (10,001: one more says the log goes on), whatever the lag.
    WITH p AS (
        SELECT p.checkpoint, p.partition, c.event_types, c.stream_type, c.partitions
          FROM es.subscription_partitions p
          JOIN es.subscription_config c ON c.name = p.subscription
         WHERE p.subscription = partition_lag.subscription AND p.partition = partition_lag.partition
    ), examined AS (
        SELECT e.recorded_at,
               (p.event_types IS NULL OR e.event_type = ANY (p.event_types))
               AND (p.stream_type IS NULL OR EXISTS (
                     SELECT 1 FROM es.streams s
                      WHERE s.stream_id = e.stream_id AND s.stream_type = p.stream_type))
               AND (p.partitions = 1 OR es.stream_hash(e.stream_id) % p.partitions = p.partition)
                 AS matches
          FROM p CROSS JOIN LATERAL (
                -- archived events count too: es.poll reads through the archive
                SELECT e.stream_id, e.event_type, e.recorded_at
                  FROM (SELECT v.global_position, v.stream_id, v.event_type, v.recorded_at FROM es.events v
                        UNION ALL
                        SELECT a.global_position, a.stream_id, a.event_type, a.recorded_at FROM es.events_archive a) e
                 WHERE e.global_position > p.checkpoint
                 ORDER BY e.global_position
                 LIMIT 10001) e
    ), counted AS (
        SELECT count(*) AS examined,
               count(*) FILTER (WHERE matches) AS matching,
               min(recorded_at) FILTER (WHERE matches) AS oldest
          FROM examined
    )
    -- Beyond the cap: the share of matching events among those examined, times the positions
    -- after the checkpoint (positions of rolled-back appends count too: an estimate).
    SELECT CASE WHEN c.examined <= 10000 THEN c.matching
                ELSE round(c.matching::numeric / c.examined
                           * (greatest((SELECT max(global_position) FROM es.events),
                                       (SELECT max(global_position) FROM es.events_archive))
                              - (SELECT checkpoint FROM p)))::bigint
           END,
           coalesce(extract(epoch FROM clock_timestamp() - c.oldest), 0)::double precision,
           c.examined > 10000
      FROM counted c
$$;
COMMENT ON FUNCTION es.partition_lag(text, integer) IS
  'The lag columns of es.subscriptions for one partition, at a bounded cost: it examines at most the 10,000 events after the checkpoint. events_behind is the exact number of matching events committed after the checkpoint when at most 10,000 events follow it; beyond that it is an estimate (events_behind_is_estimate true): the share of matching events among the 10,001 examined times the positions after the checkpoint. seconds_behind is the age of the oldest matching event examined. Without JIT: the planner cannot know how far behind a checkpoint is, and compiling the query would cost more than running it.';

CREATE VIEW es.subscriptions AS
SELECT p.subscription AS name,
       p.partition,
       p.checkpoint,
       l.events_behind,
       l.seconds_behind,
       l.events_behind_is_estimate,
       p.owner,
       p.lease_until,
       p.head_attempts,
       (SELECT count(*) FROM es.parked_events k
         WHERE k.subscription = p.subscription AND k.partition = p.partition AND NOT k.replay
       ) AS parked
  FROM es.subscription_partitions p
  CROSS JOIN LATERAL es.partition_lag(p.subscription, p.partition) l;
COMMENT ON VIEW es.subscriptions IS
  'One row per partition of each subscription: its checkpoint, how many matching events are committed after it (exact up to 10,000 events after the checkpoint, else an estimate: events_behind_is_estimate) and how old the oldest of them is, its lease, the attempts of its failing head event and its parked events.';

CREATE VIEW es.projections AS
SELECT j.name,
       CASE WHEN j.paused THEN 'paused'
            WHEN s.parked > 0 THEN 'failed'
            WHEN w.state IN ('waiting for a worker slot', 'no worker') THEN w.state
            ELSE 'running' END AS state,
       s.checkpoint,
       s.events_behind,
       s.seconds_behind,
       s.events_behind_is_estimate,
       coalesce(p.head_error,
                (SELECT k.error FROM es.parked_events k
                  WHERE k.subscription = j.name AND NOT k.replay
                  ORDER BY k.attempts > 0 DESC, k.parked_at DESC, k.global_position DESC
                  LIMIT 1)) AS last_error,
       j.handler,
       j.last_run_at,
       CASE WHEN NOT j.paused THEN w.reason END AS state_reason
  FROM es.projection_config j
  JOIN es.subscriptions s ON s.name = j.name AND s.partition = 0
  JOIN es.subscription_partitions p ON p.subscription = j.name AND p.partition = 0
  CROSS JOIN es.worker_status() w;
COMMENT ON VIEW es.projections IS
  'One row per projection: running, paused, failed (an event is parked: see es.parked_events), waiting for a worker slot or no worker (state_reason says why: es.max_workers, max_worker_processes, or the library is not preloaded), its checkpoint, its lag in events (an estimate when events_behind_is_estimate: see es.subscriptions) and seconds, and the last error of its handler.';

CREATE TRIGGER projections_changed AFTER INSERT ON es.projection_config
    FOR EACH STATEMENT EXECUTE FUNCTION es.projections_changed();
COMMENT ON TRIGGER projections_changed ON es.projection_config IS
  'Asks for the database''s worker when projections arrive other than through es.create_projection (pg_restore), at commit.';

REVOKE ALL ON es.subscriptions, es.projections FROM PUBLIC;
REVOKE ALL ON FUNCTION es.partition_lag(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION es.partition_lag(text, integer) TO pg_monitor;
GRANT SELECT ON es.subscriptions, es.projections TO pg_monitor;

CREATE FUNCTION es.run_handler(handler text, event es.events) RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    -- No role switching here: the worker calls this function already switched to the
    -- projection's creator, inside a security-restricted operation (src/pg/security.rs); the
    -- executor checks the creator's EXECUTE privilege on the handler.
    EXECUTE 'SELECT ' || handler || '($1)' USING event;
    RETURN NULL;
EXCEPTION
    -- OTHERS leaves out ASSERT failures (and cancels, which must stop the worker's statement)
    WHEN assert_failure THEN
        RETURN SQLERRM;
    WHEN OTHERS THEN
        RETURN SQLERRM;
END
$$;
COMMENT ON FUNCTION es.run_handler(text, es.events) IS
  'Called by the projection worker (through fmgr, without a permission check on this function), already running as the role that created the projection inside a security-restricted operation: runs the projection''s handler (its quoted, schema-qualified name, as stored in es.projection_config) for one event in a subtransaction, with the session''s search_path; returns NULL, or the error message when the handler raised (its writes are then rolled back, and the event is retried and parked).';
REVOKE ALL ON FUNCTION es.run_handler(text, es.events) FROM PUBLIC;

CREATE FUNCTION es.project_account_balances(e es.events) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prev jsonb;
    s jsonb;
BEGIN
    IF e.event_type = '$stream_deleted' THEN
        -- a deleted account (soft or hard) has no balance row; $stream_undeleted brings it back
        DELETE FROM es.account_balances b WHERE b.account_id = e.stream_id;
        RETURN;
    END IF;
    SELECT jsonb_build_object('holder_name', b.holder_name, 'balance_cents', b.balance_cents,
                              'status', b.status, 'version', b.version)
      INTO prev
      FROM es.account_balances b
     WHERE b.account_id = e.stream_id;
    IF prev IS NOT NULL AND (prev->>'version')::bigint >= e.version THEN
        RETURN;  -- projected already (es.reset_projection replays from the start)
    ELSIF prev IS NOT NULL AND (prev->>'version')::bigint = e.version - 1 THEN
        SELECT es.account_replay(prev, e.data) INTO s;      -- one step of the store's fold
    ELSIF e.version = 1 THEN
        SELECT es.account_replay(e.data) INTO s;
    ELSE
        BEGIN
            s := es.account_state(e.stream_id, at_version => e.version);
        EXCEPTION WHEN SQLSTATE 'ES007' THEN
            RETURN;  -- deleted again since: its own $stream_deleted follows in the log
        END;
    END IF;
    INSERT INTO es.account_balances AS b
           (account_id, holder_name, balance_cents, status, version, updated_at)
    VALUES (e.stream_id, s->>'holder_name', (s->>'balance_cents')::bigint, s->>'status',
            e.version, e.recorded_at)
    ON CONFLICT (account_id) DO UPDATE
       SET holder_name = excluded.holder_name, balance_cents = excluded.balance_cents,
           status = excluded.status, version = excluded.version, updated_at = excluded.updated_at
     WHERE b.version < excluded.version;
END
$$;
COMMENT ON FUNCTION es.project_account_balances(es.events) IS
  'Handler of the projection account_balances: folds one account event into es.account_balances with es.account_replay (the store''s own fold). Idempotent: an event at or below the row''s version is skipped. $stream_deleted removes the account''s row; $stream_undeleted brings it back.';

CREATE FUNCTION es.project_account_transactions(e es.events) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prev bigint;
    amount bigint;
    balance bigint;
BEGIN
    IF e.event_type = '$stream_deleted' AND (e.data->>'hard')::boolean THEN
        -- a tombstone: the account's events are gone, and so are its rows
        DELETE FROM es.account_transactions t WHERE t.account_id = e.stream_id;
        RETURN;
    END IF;
    amount := CASE e.event_type
                WHEN 'Opened' THEN (e.data->>'initial_balance_cents')::bigint
                WHEN 'Deposited' THEN (e.data->>'amount_cents')::bigint
                WHEN 'Withdrawn' THEN -(e.data->>'amount_cents')::bigint
              END;
    IF e.version = 1 THEN
        prev := 0;
    ELSE
        SELECT t.balance_cents INTO prev FROM es.account_transactions t
         WHERE t.account_id = e.stream_id AND t.version = e.version - 1;
    END IF;
    IF prev IS NULL THEN
        BEGIN
            balance := (es.account_state(e.stream_id, at_version => e.version)->>'balance_cents')::bigint;
        EXCEPTION WHEN SQLSTATE 'ES007' THEN
            RETURN;  -- deleted since: its $stream_deleted follows in the log
        END;
    ELSE
        balance := prev + coalesce(amount, 0);
    END IF;
    INSERT INTO es.account_transactions
           (account_id, version, event_type, amount_cents, balance_cents, description, occurred_at)
    VALUES (e.stream_id, e.version, e.event_type, amount, balance,
            CASE e.event_type WHEN 'Opened' THEN e.data->>'account_holder'
                 WHEN 'Deposited' THEN e.data->>'description'
                 WHEN 'Withdrawn' THEN e.data->>'description'
                 ELSE e.data->>'reason' END,
            e.occurred_at)
    ON CONFLICT (account_id, version) DO NOTHING;
END
$$;
COMMENT ON FUNCTION es.project_account_transactions(es.events) IS
  'Handler of the projection account_transactions: one row of es.account_transactions per account event, with the signed amount and the balance after it (a soft $stream_deleted / $stream_undeleted marker is a row without an amount). Idempotent (a row that exists is kept). A hard delete''s marker removes the account''s rows.';

CREATE FUNCTION es.enable_account_projections() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    projection text;
BEGIN
    FOREACH projection IN ARRAY ARRAY['account_balances', 'account_transactions'] LOOP
        IF NOT EXISTS (SELECT 1 FROM es.projection_config j WHERE j.name = projection) THEN
            PERFORM es.create_projection(projection,
                                         ('es.project_' || projection || '(es.events)')::regprocedure,
                                         ARRAY['Opened', 'Deposited', 'Withdrawn', 'Frozen', 'Closed',
                                               '$stream_deleted', '$stream_undeleted'],
                                         500);
            UPDATE es.subscription_config c SET stream_type = 'account' WHERE c.name = projection;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION es.enable_account_projections() IS
  'Creates the seed''s two projections, account_balances and account_transactions (account streams only), kept by the background worker; does nothing for one that exists.';

REVOKE ALL ON FUNCTION es.project_account_balances(es.events), es.project_account_transactions(es.events),
    es.enable_account_projections() FROM PUBLIC;

-- Aggregates for any domain (0.2.0) ----------------------------------------------------------------

-- The account is the built-in declared type: its evolve and check are the store's own code.
INSERT INTO es.aggregate_types (stream_type, evolve, "check", initial_state, snapshot_every,
                                native, revision, definer)
VALUES ('account', 'es.account_evolve(jsonb,jsonb)', 'es.account_check(jsonb,jsonb)', '{}', NULL,
        true, nextval('es.aggregate_revision_seq'), current_user::regrole);
-- The seed's client appends accounts without naming a type.
INSERT INTO es.stream_type_rules (first_event_type, stream_type) VALUES ('Opened', 'account');

CREATE FUNCTION es.stream_type_rules_replace() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- pg_restore inserts the dumped rules after CREATE EXTENSION inserted the default one: the
    -- dumped row wins, so a DBA's change of the default survives a dump and restore.
    DELETE FROM es.stream_type_rules WHERE first_event_type = NEW.first_event_type;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION es.stream_type_rules_replace() IS
  'Trigger function: an inserted rule replaces the rule for the same first event type (pg_restore restores a changed default row).';
REVOKE ALL ON FUNCTION es.stream_type_rules_replace() FROM PUBLIC;
CREATE TRIGGER stream_type_rules_replace BEFORE INSERT ON es.stream_type_rules
    FOR EACH ROW EXECUTE FUNCTION es.stream_type_rules_replace();
COMMENT ON TRIGGER stream_type_rules_replace ON es.stream_type_rules IS
  'An inserted rule replaces the one for the same first event type.';

CREATE TRIGGER aggregate_types_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON es.aggregate_types
    FOR EACH STATEMENT EXECUTE FUNCTION es.registry_changed();
COMMENT ON TRIGGER aggregate_types_changed ON es.aggregate_types IS
  'Every backend of the database reads the declared types again after the change commits.';
CREATE TRIGGER stream_type_rules_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON es.stream_type_rules
    FOR EACH STATEMENT EXECUTE FUNCTION es.registry_changed();
COMMENT ON TRIGGER stream_type_rules_changed ON es.stream_type_rules IS
  'Every backend of the database reads the stream-type rules again after the change commits.';
CREATE TRIGGER upcasters_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON es.upcasters
    FOR EACH STATEMENT EXECUTE FUNCTION es.registry_changed();
COMMENT ON TRIGGER upcasters_changed ON es.upcasters IS
  'Every backend of the database reads the upcasters again after the change commits.';
CREATE TRIGGER personal_data_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON es.personal_data
    FOR EACH STATEMENT EXECUTE FUNCTION es.registry_changed();
COMMENT ON TRIGGER personal_data_changed ON es.personal_data IS
  'Every backend of the database reads the personal-data paths again after the change commits.';

CREATE VIEW es.aggregates AS
SELECT t.stream_type, t.evolve, t."check", t.initial_state,
       coalesce(t.snapshot_every, current_setting('es.snapshot_interval', true)::integer) AS snapshot_every,
       t.native, t.revision, t.definer, t.defined_at,
       s.streams,
       s.stale_streams,
       t.rebuild_started_at, t.rebuild_finished_at
  FROM es.aggregate_types t
  CROSS JOIN LATERAL (
        SELECT count(*) AS streams,
               count(*) FILTER (WHERE CASE WHEN t.native
                                           THEN st.state IS NULL OR (st.state ->> 'version')::bigint IS DISTINCT FROM st.version
                                           ELSE st.state_revision IS DISTINCT FROM t.revision END
                                  AND st.deleted IS DISTINCT FROM 'hard') AS stale_streams
          FROM es.streams st WHERE st.stream_type = t.stream_type) s;
COMMENT ON VIEW es.aggregates IS
  'The declared aggregate types with their streams: stale_streams is how many of them keep no state of the current revision (after es.alter_aggregate: what CALL es.rebuild_states still has to recompute; reads and appends replay those from the log meanwhile); rebuild_started_at / rebuild_finished_at show a rebuild''s progress.';
REVOKE ALL ON es.aggregates FROM PUBLIC;
GRANT SELECT ON es.aggregates TO pg_monitor;

CREATE AGGREGATE es.replay(stream_type text, event jsonb) (
    SFUNC = es.replay_step,
    STYPE = internal,
    FINALFUNC = es.replay_final
);
COMMENT ON AGGREGATE es.replay(text, jsonb) IS
  'Folds events with a declared aggregate type''s evolve from its initial state: SELECT es.replay(''cart'', data ORDER BY version) FROM es.events WHERE stream_id = $1. Also a window function. es.replay(''account'', ...) equals es.account_replay. ES303 for an undeclared type; ES301 for an evolve that fails.';

CREATE AGGREGATE es.replay(stream_type text, initial_state jsonb, event jsonb) (
    SFUNC = es.replay_from_step,
    STYPE = internal,
    FINALFUNC = es.replay_final
);
COMMENT ON AGGREGATE es.replay(text, jsonb, jsonb) IS
  'es.replay starting from a state (e.g. a snapshot''s): SELECT es.replay(''cart'', s.state, e.data ORDER BY e.version) ... WHERE e.version > s.version.';

CREATE PROCEDURE es.rebuild_states(stream_type text, batch_size integer DEFAULT 1000)
LANGUAGE plpgsql
AS $$
DECLARE
    n bigint;
BEGIN
    -- One transaction per batch: a stream is held only while its state is recomputed, so
    -- appends go on (online); progress is visible in es.aggregates after each batch. (No SET
    -- clause: a procedure with one cannot commit; every name here is qualified.)
    LOOP
        n := es.rebuild_batch(stream_type, batch_size);
        COMMIT;
        EXIT WHEN n = 0;
    END LOOP;
END
$$;
COMMENT ON PROCEDURE es.rebuild_states(text, integer) IS
  'Recomputes the kept states and snapshots of a declared type''s streams from the log after es.alter_aggregate, online: batch_size streams per transaction, each committed, until none is stale (es.aggregates.stale_streams). Call it with CALL, outside a transaction block.';
REVOKE ALL ON PROCEDURE es.rebuild_states(text, integer) FROM PUBLIC;

-- Retention and archiving (docs/reference.md §14) ----------------------------------------------------------------
-- Plain SQL: what they do is a few set-based statements, and the background worker's batch
-- (es.retention_batch) is one call. The only native piece is es.wake_retention (src/api/retention.rs),
-- which asks the launcher for the database's worker.

CREATE FUNCTION es.remove_events(positions bigint[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET session_replication_role = replica
AS $$
DECLARE
    live bigint;
    archived bigint;
BEGIN
    -- The append-only triggers are ordinary triggers: they do not fire while
    -- session_replication_role is replica, which this function's own SET clause makes so for
    -- its body only (reverted on return and on error). Positions are never handed out again
    -- (es.global_position_seq), so a hole stays a hole.
    -- The archive first: es.archive locks it before it takes rows of es.events, so taking the
    -- two in the same order never deadlocks with it (and an event es.archive moves meanwhile is
    -- found in the archive once its move commits).
    DELETE FROM es.events_archive WHERE global_position = ANY (positions);
    GET DIAGNOSTICS archived = ROW_COUNT;
    DELETE FROM es.events WHERE global_position = ANY (positions);
    GET DIAGNOSTICS live = ROW_COUNT;
    RETURN live + archived;
END
$$;
COMMENT ON FUNCTION es.remove_events(bigint[]) IS
  'Internal: removes the events at the given global positions from es.events and es.events_archive, past their append-only triggers, and returns how many it removed. Called only by the store''s own functions (the retention batch), which audit the act; EXECUTE is not granted to anyone.';
REVOKE ALL ON FUNCTION es.remove_events(bigint[]) FROM PUBLIC;

CREATE FUNCTION es.set_retention(stream_type text, max_age interval DEFAULT NULL, max_count bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    policy text := set_retention.stream_type;
BEGIN
    IF policy IS NULL THEN
        RAISE EXCEPTION 'stream_type must not be null'
            USING ERRCODE = '22004',
                  HINT = 'Name a stream type, or '''' (the empty string) for the generic streams, whose type is NULL.';
    END IF;
    IF max_age IS NOT NULL AND max_age <= interval '0' THEN
        RAISE EXCEPTION 'invalid max_age: % is not positive', max_age
            USING ERRCODE = '22023', HINT = 'Give a positive interval, or NULL for no age limit.';
    END IF;
    IF max_age IS NOT NULL THEN
        -- the worker compares recorded_at with now() - max_age: it must be a time (it stays one,
        -- as now() only grows)
        BEGIN
            PERFORM pg_catalog.transaction_timestamp() - max_age;
        EXCEPTION WHEN datetime_field_overflow THEN
            RAISE EXCEPTION 'invalid max_age: % reaches before the earliest time PostgreSQL represents', max_age
                USING ERRCODE = '22023', HINT = 'Give a shorter interval, or NULL for no age limit.';
        END;
    END IF;
    IF max_count IS NOT NULL AND max_count < 1 THEN
        RAISE EXCEPTION 'invalid max_count: % is less than 1', max_count
            USING ERRCODE = '22023', HINT = 'Give the number of newest events each stream keeps (at least 1), or NULL for no count limit.';
    END IF;
    IF max_age IS NULL AND max_count IS NULL THEN
        DELETE FROM es.retention_policies r WHERE r.stream_type = policy;
        IF FOUND THEN
            INSERT INTO es.data_audit (action, target, detail)
            VALUES ('set_retention', policy, jsonb_build_object('stream_type', nullif(policy, ''), 'removed_policy', true));
        END IF;
        RETURN;
    END IF;
    INSERT INTO es.retention_policies AS r (stream_type, max_age, max_count)
    VALUES (policy, max_age, max_count)
    ON CONFLICT ON CONSTRAINT retention_policies_pkey DO UPDATE
       SET max_age = excluded.max_age, max_count = excluded.max_count,
           set_by = excluded.set_by, set_at = excluded.set_at;
    INSERT INTO es.data_audit (action, target, detail)
    VALUES ('set_retention', policy,
            jsonb_build_object('stream_type', nullif(policy, ''), 'max_age', max_age::text, 'max_count', max_count));
    IF NOT es.wake_retention() THEN
        RAISE WARNING 'retention policies are applied by the background worker, which needs the event_store library preloaded'
            USING HINT = 'Add event_store to shared_preload_libraries and restart the server.';
    END IF;
END
$$;
COMMENT ON FUNCTION es.set_retention(text, interval, bigint) IS
  'Sets the retention policy of a stream type ('''' for the generic streams): the background worker removes events recorded longer ago than max_age, and events beyond the newest max_count of their stream, in batches of es.retention_batch_size every es.retention_naptime. Both NULL removes the policy. For a declared aggregate type (the account included) only events at or below the stream''s newest usable snapshot are removed, so states and replays keep working. Audited in es.data_audit (set_retention; each batch: retention).';
REVOKE ALL ON FUNCTION es.set_retention(text, interval, bigint) FROM PUBLIC;

CREATE FUNCTION es.set_retention_paused(stream_type text, paused boolean) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    policy text := set_retention_paused.stream_type;
    changed bigint;
BEGIN
    IF paused IS NULL THEN
        RAISE EXCEPTION 'paused must not be null' USING ERRCODE = '22004';
    END IF;
    IF policy IS NOT NULL AND NOT EXISTS (SELECT 1 FROM es.retention_policies r WHERE r.stream_type = policy) THEN
        RAISE EXCEPTION 'invalid stream_type: no retention policy for stream type "%"', policy
            USING ERRCODE = '22023', HINT = 'es.set_retention sets one; es.retention lists them.';
    END IF;
    UPDATE es.retention_policies r SET paused = set_retention_paused.paused
     WHERE (policy IS NULL OR r.stream_type = policy) AND r.paused IS DISTINCT FROM set_retention_paused.paused;
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed > 0 THEN
        INSERT INTO es.data_audit (action, target, detail)
        VALUES (CASE WHEN paused THEN 'pause_retention' ELSE 'resume_retention' END, coalesce(policy, '*'),
                jsonb_build_object('stream_type', nullif(policy, ''), 'all', policy IS NULL, 'policies', changed));
        IF NOT paused THEN
            PERFORM es.wake_retention();
        END IF;
    END IF;
    RETURN changed;
END
$$;
COMMENT ON FUNCTION es.set_retention_paused(text, boolean) IS
  'Pauses (paused true) or resumes the retention policy of a stream type, or every policy when stream_type is NULL; returns how many policies changed. A batch under way finishes (it is one transaction); no new one starts while paused. Audited (pause_retention / resume_retention).';
REVOKE ALL ON FUNCTION es.set_retention_paused(text, boolean) FROM PUBLIC;

CREATE FUNCTION es.pause_retention(stream_type text DEFAULT NULL) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT es.set_retention_paused(stream_type, true) $$;
COMMENT ON FUNCTION es.pause_retention(text) IS
  'es.set_retention_paused(stream_type, true): pauses one policy, or all (NULL).';
REVOKE ALL ON FUNCTION es.pause_retention(text) FROM PUBLIC;

CREATE FUNCTION es.resume_retention(stream_type text DEFAULT NULL) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT es.set_retention_paused(stream_type, false) $$;
COMMENT ON FUNCTION es.resume_retention(text) IS
  'es.set_retention_paused(stream_type, false): resumes one policy, or all (NULL).';
REVOKE ALL ON FUNCTION es.resume_retention(text) FROM PUBLIC;

CREATE FUNCTION es.retention_expired(stream_type text, after_position bigint DEFAULT 0,
                                     scan_limit bigint DEFAULT NULL, max_count bigint DEFAULT NULL)
RETURNS TABLE (global_position bigint, stream_id uuid, scanned_to bigint, scanned bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    policy text := retention_expired.stream_type;
    p es.retention_policies;
    t es.aggregate_types;
BEGIN
    SELECT * INTO p FROM es.retention_policies r WHERE r.stream_type = policy;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF policy <> '' THEN
        SELECT * INTO t FROM es.aggregate_types a WHERE a.stream_type = policy;
    END IF;
    -- The events after after_position (at most scan_limit of them, live and archived, in position
    -- order), and among them the expired ones. A declared type's event goes only once a usable
    -- snapshot covers it: the state, a replay and a command start from that snapshot.
    RETURN QUERY
    WITH scan AS MATERIALIZED (
        SELECT e.global_position, e.stream_id, e.version, e.recorded_at
          FROM (SELECT v.global_position, v.stream_id, v.version, v.recorded_at FROM es.events v
                UNION ALL
                SELECT a.global_position, a.stream_id, a.version, a.recorded_at FROM es.events_archive a) e
         WHERE e.global_position > after_position
         ORDER BY e.global_position
         LIMIT scan_limit
    ), bounds AS (
        SELECT pg_catalog.max(s.global_position) AS scanned_to, pg_catalog.count(*) AS scanned FROM scan s
    )
    SELECT x.global_position, x.stream_id, b.scanned_to, b.scanned
      FROM bounds b
      LEFT JOIN LATERAL (
        SELECT w.global_position, w.stream_id
          FROM scan w
          JOIN es.streams s ON s.stream_id = w.stream_id
         WHERE CASE WHEN policy = '' THEN s.stream_type IS NULL ELSE s.stream_type = policy END
           AND ((p.max_age IS NOT NULL AND w.recorded_at < pg_catalog.transaction_timestamp() - p.max_age)
                OR (p.max_count IS NOT NULL AND w.version <= s.version - p.max_count))
           -- a declared type's events go only up to a usable snapshot that is itself expired:
           -- the cut then lands right after a snapshot, where every answer at or above it starts
           -- (es.streams.truncated_before, as es.truncate_stream records it)
           AND (t.stream_type IS NULL
                OR EXISTS (SELECT 1 FROM es.snapshots n
                            WHERE n.stream_id = w.stream_id
                              AND (t.native OR n.revision = t.revision)
                              AND n.version >= w.version
                              AND ((p.max_count IS NOT NULL AND n.version <= s.version - p.max_count)
                                   OR (p.max_age IS NOT NULL
                                       AND NOT EXISTS (SELECT 1 FROM es.events v
                                                        WHERE v.stream_id = n.stream_id AND v.version = n.version
                                                          AND v.recorded_at >= pg_catalog.transaction_timestamp() - p.max_age)
                                       AND NOT EXISTS (SELECT 1 FROM es.events_archive v
                                                        WHERE v.stream_id = n.stream_id AND v.version = n.version
                                                          AND v.recorded_at >= pg_catalog.transaction_timestamp() - p.max_age)))))
         ORDER BY w.global_position
         LIMIT retention_expired.max_count) x ON true;
END
$$;
COMMENT ON FUNCTION es.retention_expired(text, bigint, bigint, bigint) IS
  'Internal: the events a retention policy would remove now, after after_position among the next scan_limit events of the log (live and archived; NULL: all), at most max_count of them; each row also carries how far the scan went and how many events it looked at (one row with NULL position when none is expired). Used by the worker''s batch and by es.retention.';
REVOKE ALL ON FUNCTION es.retention_expired(text, bigint, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION es.retention_expired(text, bigint, bigint, bigint) TO pg_monitor;

CREATE FUNCTION es.retention_batch(stream_type text, batch_size integer, after_position bigint,
                                   OUT removed bigint, OUT next_position bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    policy text := retention_batch.stream_type;
    p es.retention_policies;
    scan_limit bigint := greatest(batch_size, 1)::bigint * 10;
    picked bigint[];
    streams bigint;
    scanned_to bigint;
    scanned bigint;
BEGIN
    removed := 0;
    next_position := 0;
    SELECT * INTO p FROM es.retention_policies r WHERE r.stream_type = policy AND NOT r.paused;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- A bounded look (ten batches' worth of the log) per transaction, so a batch costs the same
    -- on a log of any length; the worker carries next_position to its next batch (0: the pass
    -- reached the end of the log and the next one starts again from the beginning).
    SELECT pg_catalog.array_agg(x.global_position ORDER BY x.global_position) FILTER (WHERE x.global_position IS NOT NULL),
           pg_catalog.count(DISTINCT x.stream_id), pg_catalog.max(x.scanned_to), pg_catalog.max(x.scanned)
      INTO picked, streams, scanned_to, scanned
      FROM es.retention_expired(policy, after_position, scan_limit, greatest(batch_size, 1)) x;
    IF picked IS NOT NULL AND policy <> '' THEN
        -- A declared type's stream records the cut (es.streams.truncated_before), so no answer
        -- below it is computed from a log that no longer holds its start (ES008 instead, as after
        -- es.truncate_stream). Rows an append holds are skipped (SKIP LOCKED): their events wait
        -- for a later batch, and the worker never waits for nor deadlocks with an appender.
        SELECT pg_catalog.array_agg(x.global_position ORDER BY x.global_position)
          INTO picked
          FROM (SELECT e.global_position, e.stream_id FROM es.events e WHERE e.global_position = ANY (picked)
                UNION ALL
                SELECT a.global_position, a.stream_id FROM es.events_archive a WHERE a.global_position = ANY (picked)) x
         WHERE x.stream_id IN (SELECT s.stream_id FROM es.streams s
                                WHERE s.stream_id IN (SELECT e.stream_id FROM es.events e WHERE e.global_position = ANY (picked)
                                                      UNION
                                                      SELECT a.stream_id FROM es.events_archive a WHERE a.global_position = ANY (picked))
                                ORDER BY s.stream_id
                                  FOR UPDATE SKIP LOCKED);
        UPDATE es.streams s
           SET truncated_before = GREATEST(coalesce(s.truncated_before, 1), c.below)
          FROM (SELECT x.stream_id, pg_catalog.max(x.version) + 1 AS below
                  FROM (SELECT e.stream_id, e.version FROM es.events e WHERE e.global_position = ANY (picked)
                        UNION ALL
                        SELECT a.stream_id, a.version FROM es.events_archive a WHERE a.global_position = ANY (picked)) x
                 GROUP BY x.stream_id) c
         WHERE s.stream_id = c.stream_id;
    END IF;
    IF picked IS NOT NULL THEN
        removed := es.remove_events(picked);
    END IF;
    IF removed > 0 THEN
        INSERT INTO es.data_audit (action, target, detail)
        VALUES ('retention', policy,
                jsonb_build_object('stream_type', nullif(policy, ''), 'events_removed', removed, 'streams', streams,
                                   'first_position', picked[1], 'last_position', picked[pg_catalog.cardinality(picked)],
                                   'max_age', p.max_age::text, 'max_count', p.max_count));
    END IF;
    IF pg_catalog.cardinality(picked) >= greatest(batch_size, 1) THEN
        next_position := picked[pg_catalog.cardinality(picked)];
    ELSIF coalesce(scanned, 0) >= scan_limit THEN
        next_position := scanned_to;
    END IF;
    UPDATE es.retention_policies r
       SET events_removed = r.events_removed + removed,
           batches = r.batches + (removed > 0)::integer,
           last_batch_at = CASE WHEN removed > 0 THEN pg_catalog.clock_timestamp() ELSE r.last_batch_at END,
           last_pass_at = CASE WHEN next_position = 0 THEN pg_catalog.clock_timestamp() ELSE r.last_pass_at END
     WHERE r.stream_type = policy;
END
$$;
COMMENT ON FUNCTION es.retention_batch(text, integer, bigint) IS
  'Internal: one batch of a retention policy, run by the database''s background worker in a transaction of its own: removes at most batch_size expired events found after after_position (through es.remove_events), records the batch in es.data_audit (action retention) and in es.retention_policies, and returns how many it removed and where the next batch starts (0: the pass is complete).';
REVOKE ALL ON FUNCTION es.retention_batch(text, integer, bigint) FROM PUBLIC;

CREATE VIEW es.retention AS
SELECT r.stream_type, r.max_age, r.max_count, r.paused,
       r.events_removed, r.batches, r.last_batch_at, r.last_pass_at,
       (SELECT pg_catalog.count(x.global_position) FROM es.retention_expired(r.stream_type) x) AS events_expired,
       r.set_by, r.set_at
  FROM es.retention_policies r;
COMMENT ON VIEW es.retention IS
  'The retention policies and their progress: events removed so far, batches, the last batch and the last complete pass, and events_expired, how many events the policy would remove now (exact; it reads the whole log, so on a big store select it with care).';
REVOKE ALL ON es.retention FROM PUBLIC;
GRANT SELECT ON es.retention TO pg_monitor;

CREATE FUNCTION es.archive(before timestamptz, max_events bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET session_replication_role = replica
AS $$
DECLARE
    picked bigint[];
    streams uuid[];
    moved bigint;
BEGIN
    IF before IS NULL THEN
        RAISE EXCEPTION 'before must not be null' USING ERRCODE = '22004';
    END IF;
    IF max_events IS NOT NULL AND max_events < 0 THEN
        RAISE EXCEPTION 'invalid max_events: % is negative', max_events
            USING ERRCODE = '22023', HINT = 'NULL moves every event recorded before the bound.';
    END IF;
    -- One archiver at a time (readers and appenders do not take this lock).
    LOCK TABLE es.events_archive IN SHARE ROW EXCLUSIVE MODE;
    SELECT pg_catalog.array_agg(e.global_position ORDER BY e.global_position)
      INTO picked
      FROM (SELECT v.global_position FROM es.events v
             WHERE v.recorded_at < before
             ORDER BY v.global_position
             LIMIT max_events) e;
    IF picked IS NULL THEN
        RETURN 0;
    END IF;
    SELECT pg_catalog.array_agg(DISTINCT v.stream_id) INTO streams
      FROM es.events v WHERE v.global_position = ANY (picked);
    -- The first move into an empty archive: until it commits, readers of one stream read
    -- es.events alone (natively), and a command that read a stream that way must not judge an
    -- append by a tail that lost events meanwhile. Touching the rows of the streams whose events
    -- move (in stream order) makes such a command find its row changed and read again, through
    -- the archive. Later moves need none of it: every reader then reads both tables in one
    -- statement. (Appends to those streams wait for this first chunk at most.)
    IF pg_catalog.pg_relation_size('es.events_archive') = 0 THEN
        PERFORM 1 FROM es.streams s WHERE s.stream_id = ANY (streams) ORDER BY s.stream_id FOR NO KEY UPDATE;
        UPDATE es.streams s SET updated_at = s.updated_at WHERE s.stream_id = ANY (streams);
    END IF;
    WITH gone AS (
        DELETE FROM es.events v WHERE v.global_position = ANY (picked) RETURNING v.*
    )
    INSERT INTO es.events_archive SELECT * FROM gone;
    GET DIAGNOSTICS moved = ROW_COUNT;
    INSERT INTO es.data_audit (action, target, detail)
    VALUES ('archive', before::text,
            jsonb_build_object('before', before, 'max_events', max_events, 'events_moved', moved,
                               'streams', pg_catalog.cardinality(streams),
                               'first_position', picked[1], 'last_position', picked[pg_catalog.cardinality(picked)]));
    RETURN moved;
END
$$;
COMMENT ON FUNCTION es.archive(timestamptz, bigint) IS
  'Moves the events recorded before the bound (all streams, in global_position order, at most max_events; NULL: all) from es.events to es.events_archive in one transaction, and returns how many it moved. Positions, versions and ids are kept, and every read function reads through the archive. To archive in chunks, call it repeatedly until it returns 0 (each call commits on its own). Audited in es.data_audit (action archive).';
REVOKE ALL ON FUNCTION es.archive(timestamptz, bigint) FROM PUBLIC;

-- Keys in another database (docs/lifecycle.md "Forgetting a subject"): es.key_provider names a function
-- (action text, key_id bigint, key bytea) RETURNS bytea that keeps the keys; the store calls it
-- through these two, so the name is resolved (and quoted) in one place.
CREATE FUNCTION es.key_provider_call(action text, key_id bigint, key bytea) RETURNS bytea
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    provider text := nullif(btrim(current_setting('es.key_provider', true)), '');
    f regprocedure;
    result bytea;
BEGIN
    IF provider IS NULL THEN
        RAISE EXCEPTION 'es.key_provider is not set'
            USING ERRCODE = '55000',
                  HINT = 'Set es.key_provider to the function that keeps the keys (ALTER DATABASE ... SET es.key_provider = ''schema.function'').';
    END IF;
    f := to_regprocedure(provider || '(text, bigint, bytea)');
    IF f IS NULL THEN
        RAISE EXCEPTION 'es.key_provider names no function %(text, bigint, bytea)', provider
            USING ERRCODE = '42883',
                  HINT = 'The key provider is a schema-qualified function (action text, key_id bigint, key bytea) RETURNS bytea.';
    END IF;
    EXECUTE format('SELECT %s($1, $2, $3)', f::oid::regproc) INTO result USING action, key_id, key;
    RETURN result;
END
$$;
COMMENT ON FUNCTION es.key_provider_call(text, bigint, bytea) IS
  'Internal: calls the key provider es.key_provider names (put a new key, get one, forget one). Called by the appends that make keys and by es.forget, as the extension''s owner.';
REVOKE ALL ON FUNCTION es.key_provider_call(text, bigint, bytea) FROM PUBLIC;

CREATE FUNCTION es.key_provider_get(key_id bigint) RETURNS bytea
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT es.key_provider_call('get', key_id, NULL) $$;
COMMENT ON FUNCTION es.key_provider_get(bigint) IS
  'Internal: the key the key provider keeps under key_id (NULL: none), fetched as the extension''s owner. Reads call it for a caller who holds es_personal_data, the only role allowed to execute it (as members may read es.subject_keys).';
REVOKE ALL ON FUNCTION es.key_provider_get(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION es.key_provider_get(bigint) TO es_personal_data;
