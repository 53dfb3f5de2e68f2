-- The worked example that is not a bank (examples/cart.sql, loaded as a user would): the cart
-- defined in PL/pgSQL, appended from psql, a rule refused with the domain's own SQLSTATE, state
-- and time travel, a projection folding with es.replay, the upcaster of the renamed field.
\set ON_ERROR_STOP 1
\ir ../../../examples/cart.sql
\set ON_ERROR_STOP 0
\pset null '(null)'
SELECT stream_type, evolve, "check", initial_state, snapshot_every, native
  FROM es.aggregates WHERE stream_type = 'cart';
SELECT event_type, from_version, upcast, definer FROM es.upcasters ORDER BY event_type, from_version;
-- a projection that keeps each cart's state in a table, folding with the store's own fold
CREATE SCHEMA cart_demo;
CREATE TABLE cart_demo.totals (cart_id uuid PRIMARY KEY, item_count int, total_cents bigint, status text);
CREATE FUNCTION cart_demo.project(e es.events) RETURNS void LANGUAGE sql AS $$
  INSERT INTO cart_demo.totals
  SELECT e.stream_id, (s->>'item_count')::int, (s->>'total_cents')::bigint, s->>'status'
    FROM (SELECT es.replay('cart', data ORDER BY version) AS s FROM es.events
           WHERE stream_id = e.stream_id AND version <= e.version
             AND EXISTS (SELECT 1 FROM es.streams t WHERE t.stream_id = e.stream_id AND t.stream_type = 'cart')
          HAVING count(*) > 0) f
  ON CONFLICT (cart_id) DO UPDATE
     SET item_count = excluded.item_count, total_cents = excluded.total_cents, status = excluded.status $$;
SELECT es.create_projection('cart_totals', 'cart_demo.project(es.events)',
                            ARRAY['CartOpened', 'ItemAdded', 'ItemRemoved', 'CheckedOut']);
-- a projection's handler gets old events upcast too
CREATE TABLE cart_demo.lines (cart_id uuid, version bigint, event_version int, quantity int,
                              PRIMARY KEY (cart_id, version));
CREATE FUNCTION cart_demo.line(e es.events) RETURNS void LANGUAGE sql AS $$
  INSERT INTO cart_demo.lines
  SELECT e.stream_id, e.version, e.event_version, (e.data->>'quantity')::int
   WHERE e.stream_id::text LIKE 'ca000000%' $$;
SELECT es.create_projection('cart_lines', 'cart_demo.line(es.events)', ARRAY['ItemAdded']);
-- appends from psql: the first event makes the stream a cart (es.stream_type_rules), or it is named
SELECT es.append_events('ca000000-0000-0000-0000-000000000001', 0, ARRAY[
  '{"type":"CartOpened","customer":"Ada"}',
  '{"type":"ItemAdded","sku":"tea","quantity":2,"unit_price_cents":450,"event_version":2}']::jsonb[]) AS v;
SELECT es.append_events('ca000000-0000-0000-0000-000000000002', 0, ARRAY[
  '{"type":"CartOpened","customer":"Bob"}']::jsonb[], 'cart') AS v;
SELECT stream_id, stream_type, version FROM es.streams WHERE stream_id::text LIKE 'ca000000%' ORDER BY 1;
-- an event stored at version 1 (before the field was renamed): stored as sent, read upcast
SELECT es.append_events('ca000000-0000-0000-0000-000000000001', 2, ARRAY[
  '{"type":"ItemAdded","sku":"mug","qty":1,"unit_price_cents":900}']::jsonb[]) AS v;
SELECT version, event_version, data FROM es.events WHERE stream_id = 'ca000000-0000-0000-0000-000000000001' ORDER BY version;
SELECT version, event_version, data FROM es.load_events('ca000000-0000-0000-0000-000000000001') ORDER BY version;
-- the rules, each refusal with the domain's SQLSTATE and DETAIL; nothing of a refused batch is stored
SELECT error_of($$SELECT es.append_events('ca000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"ItemAdded","sku":"tea","quantity":18,"unit_price_cents":450,"event_version":2}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('ca000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"ItemAdded","sku":"tea","quantity":0,"unit_price_cents":450,"event_version":2}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('ca000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"ItemRemoved","sku":"cake"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('ca000000-0000-0000-0000-000000000002', NULL, ARRAY['{"type":"CheckedOut"}']::jsonb[])$$);
SELECT error_of($$SELECT es.append_events('ca000000-0000-0000-0000-000000000002', NULL, ARRAY['{"type":"Refunded"}']::jsonb[])$$);
SELECT es.stream_version('ca000000-0000-0000-0000-000000000001') AS still_3;
SELECT es.append_events('ca000000-0000-0000-0000-000000000001', 3, ARRAY[
  '{"type":"ItemRemoved","sku":"tea"}', '{"type":"CheckedOut"}']::jsonb[]) AS v;
SELECT error_of($$SELECT es.append_events('ca000000-0000-0000-0000-000000000001', NULL, ARRAY['{"type":"ItemAdded","sku":"tea","quantity":1,"unit_price_cents":450,"event_version":2}']::jsonb[])$$);
-- state, time travel, history
SELECT es.state('ca000000-0000-0000-0000-000000000001') AS now;
SELECT es.state('ca000000-0000-0000-0000-000000000001', at_version => 3) AS before_checkout;
SELECT version, event_type, state->'item_count' AS items, state->'total_cents' AS total, state->>'status' AS status
  FROM es.history('ca000000-0000-0000-0000-000000000001') ORDER BY version;
-- the projection caught up, folding with es.replay
SELECT max(global_position) AS last FROM es.events \gset
SELECT es.wait_for_projection('cart_totals', :last, 30000);
SELECT * FROM cart_demo.totals ORDER BY cart_id;
SELECT es.wait_for_projection('cart_lines', :last, 30000);
SELECT * FROM cart_demo.lines ORDER BY cart_id, version;
SELECT es.drop_projection('cart_totals');
SELECT es.drop_projection('cart_lines');
