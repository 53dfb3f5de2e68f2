-- Fills the PostgreSQL 15 store that tests/upgrade/pg_upgrade.sh upgrades to PostgreSQL 18:
-- every kind of state the extension keeps, so the upgrade has something to lose. Generic streams
-- with every optional key, accounts (deposits, withdrawals, a frozen one, automatic snapshots),
-- a snapshot saved by hand, the declared cart type of examples/cart.sql (with its upcaster and
-- stream-type rule, a v1 event read upcast), a partitioned subscription with acked checkpoints
-- and a claimed lease, a subscription with a parked event, a projection the worker has caught
-- up, a paused one, and the account projections. Positions and revisions come from the
-- extension's sequences; a role owns nothing but exists (role OIDs are kept by pg_upgrade and
-- es.projection_config.run_as is a regrole).
-- Run with psql -v ON_ERROR_STOP=1 in an empty database of a cluster with the library preloaded.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION event_store;
CREATE ROLE es_upgrade_reader NOLOGIN;
GRANT USAGE ON SCHEMA es TO es_upgrade_reader;
SELECT es.enable_account_projections();

CREATE TABLE public.fixture (name text PRIMARY KEY, id uuid NOT NULL);

-- generic streams, interleaved, over several transactions
INSERT INTO public.fixture
SELECT 'generic' || i, ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid FROM generate_series(1, 6) i;
SELECT es.append_events(id, 0, ARRAY[jsonb_build_object(
         'type', 'Created', 'n', 0, 'event_version', 2, 'occurred_at', '2024-01-02T03:04:05Z',
         'metadata', jsonb_build_object('correlation_id', 'fill-' || name, 'user', 'fill'))])
  FROM public.fixture WHERE name LIKE 'generic%' ORDER BY name;
SELECT es.append_events(f.id, NULL,
         (SELECT array_agg(jsonb_build_object('type', 'Noted', 'n', j, 'round', r)) FROM generate_series(1, 3) j))
  FROM public.fixture f, generate_series(1, 4) r WHERE f.name LIKE 'generic%' ORDER BY r, f.name;
SELECT es.save_snapshot(id, 2, '{"manual": true, "at": 2}') FROM public.fixture WHERE name = 'generic1';
SELECT es.save_snapshot(id, 7, '{"manual": true, "at": 7}') FROM public.fixture WHERE name = 'generic1';

-- accounts: automatic snapshots every 3 versions
SET es.snapshot_interval = 3;
INSERT INTO public.fixture SELECT 'account' || i, es.open_account('Holder ' || i, 1000 * i) FROM generate_series(1, 4) i;
SELECT es.deposit(f.id, 250 + r, 'salary ' || r) FROM public.fixture f, generate_series(1, 4) r
 WHERE f.name LIKE 'account%' ORDER BY r, f.name;
SELECT es.withdraw(f.id, 100 + r, 'rent ' || r) FROM public.fixture f, generate_series(1, 2) r
 WHERE f.name LIKE 'account%' ORDER BY r, f.name;
SELECT es.freeze_account(id, 'audit') FROM public.fixture WHERE name = 'account4';
RESET es.snapshot_interval;

-- a declared aggregate type written in SQL, with an upcaster and a stream-type rule
\ir ../../examples/cart.sql
SET client_min_messages = warning;
INSERT INTO public.fixture VALUES ('cart1', 'c0000000-0000-0000-0000-000000000001'),
                                  ('cart2', 'c0000000-0000-0000-0000-000000000002');
SELECT es.append_events(id, 0, ARRAY['{"type": "CartOpened", "customer": "Bob"}',
         '{"type": "ItemAdded", "sku": "apple", "qty": 2, "unit_price_cents": 50}',
         '{"type": "ItemAdded", "sku": "pear", "quantity": 1, "unit_price_cents": 80, "event_version": 2}']::jsonb[])
  FROM public.fixture WHERE name LIKE 'cart%' ORDER BY name;
SELECT es.append_events(id, NULL, ARRAY['{"type": "CheckedOut"}']::jsonb[]) FROM public.fixture WHERE name = 'cart2';

-- a projection of every event, and a paused one
CREATE TABLE public.model (seq bigserial PRIMARY KEY, global_position bigint NOT NULL,
                           stream_id uuid NOT NULL, version bigint NOT NULL, event_type text NOT NULL);
CREATE FUNCTION public.model_handler(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.model (global_position, stream_id, version, event_type)
  VALUES (e.global_position, e.stream_id, e.version, e.event_type);
END $$;
SELECT es.create_projection('model', 'public.model_handler(es.events)');
CREATE TABLE public.paused_model (global_position bigint NOT NULL);
CREATE FUNCTION public.paused_handler(e es.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.paused_model VALUES (e.global_position) $$;
SELECT es.create_projection('paused', 'public.paused_handler(es.events)', ARRAY['Deposited']);
SELECT es.pause_projection('paused');

-- a subscription in 2 partitions, partly acked, its partitions claimed for a day
SELECT es.create_subscription('mailer', start_after => 0, partitions => 2);
SELECT count(*) AS claimed FROM es.claim('mailer', 'worker-a', '1 day');
SELECT es.ack('mailer', 0, (SELECT max(global_position) FROM es.poll('mailer', 0, 10, 'worker-a')), 'worker-a');
SELECT es.ack('mailer', 1, (SELECT max(global_position) FROM es.poll('mailer', 1, 7, 'worker-a')), 'worker-a');
-- a subscription whose first event was parked (max_attempts 1), the stream's later events behind it
SELECT es.create_subscription('flaky', start_after => 0, event_types => ARRAY['Noted'], max_attempts => 1);
SELECT es.nack('flaky', 0, (SELECT min(global_position) FROM es.poll('flaky', 0, 1)), 'handler failed') AS parked;

-- more appends after everything exists, then the worker catches up
SELECT es.append_events(id, NULL, ARRAY['{"type": "Noted", "n": 99}']::jsonb[]) FROM public.fixture WHERE name = 'generic3';
SELECT es.deposit(id, 5, 'late') FROM public.fixture WHERE name = 'account2';
SELECT name, es.wait_for_projection(name, (SELECT max(global_position) FROM es.events), 60000) AS caught_up
  FROM es.projection_config WHERE NOT paused ORDER BY name;
