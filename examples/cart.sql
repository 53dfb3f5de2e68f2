-- The shopping cart: an aggregate of event_store defined entirely in PL/pgSQL.
--
--   psql -v ON_ERROR_STOP=1 -d mydb -f examples/cart.sql      (the database has the extension)
--
-- A cart is a stream of type 'cart'. Its events (the JSON objects appended with
-- es.append_events, "type" naming the event):
--
--   CartOpened  {"customer": <any JSON, e.g. a name or an id>}
--   ItemAdded   {"sku": text, "quantity": int >= 1, "unit_price_cents": int >= 1,
--                "event_version": 2}
--               version 1 of ItemAdded called the quantity "qty"; stored version-1 events are
--               read as version 2 through the upcaster cart.item_added_v1_to_v2 below
--   ItemRemoved {"sku": text}                  removes the item's whole line
--   CheckedOut  {}
--
-- Its state (es.state(cart_id)), the JSON object cart.evolve keeps:
--
--   {"customer": ..., "status": "empty" | "open" | "checked_out",
--    "items": {"<sku>": {"quantity": n, "unit_price_cents": n}, ...},
--    "item_count": <sum of the quantities>, "total_cents": <sum of quantity * unit price>}
--
-- "empty" is the status of a cart that has not been opened yet (the initial state). Adding a sku
-- that is already in the cart adds to its quantity, and the line takes the newest price.
--
-- The rules, checked by cart.check before anything of a batch is stored (the store calls it for
-- each event, with the state the events before it give, under the stream's lock, so concurrent
-- writers are judged one after the other). Each refusal has its own SQLSTATE, in class CT:
--
--   CT001  the cart is not open: anything but CartOpened on a new cart, CartOpened twice,
--          anything after CheckedOut
--   CT002  an invalid item: a missing or empty sku, a quantity or unit price that is missing,
--          not a whole number, below 1, or a price above 1000000000000 cents
--   CT003  ItemRemoved of a sku that is not in the cart
--   CT004  CheckedOut of a cart without items
--   CT005  the cart is full: at most 20 items in all (the sum of the quantities);
--          DETAIL `items: <in the cart>, adding: <quantity>, limit: 20`
--   CT006  an event type a cart does not have
--
-- Messages are lowercase and carry the values; DETAIL carries them in a fixed format where a
-- program may want them. The store passes the SQLSTATE, message, DETAIL and HINT to the caller
-- unchanged (event_store_client: EventStoreError::Domain { code, .. }).
--
-- The functions read nothing but their arguments: no table access, no dynamic SQL, so they
-- are IMMUTABLE. Each runs with search_path = pg_catalog, pg_temp: every operator and function
-- they name is the built-in one (pg_catalog comes first; nothing of another schema is used),
-- whatever the path of the session that appends. They run on every append and every replay,
-- so they do the least work they can.
--
-- Runnable again, in one transaction: the functions are replaced in place (CREATE OR REPLACE
-- keeps their identity, which the store's definition refers to), and an existing definition is
-- replaced with es.alter_aggregate, so the carts already stored stay carts (es.drop_aggregate
-- with detach would make them generic streams). A new definition marks their kept states
-- stale (reads replay the log meanwhile): the CALL es.rebuild_states at the end recomputes them.
-- New streams whose first event is CartOpened become carts without naming the type
-- (es.stream_type_rules); a writer can also name it: es.append_events(id, v, events, 'cart').

BEGIN;
SET LOCAL client_min_messages = warning;  -- not the notice of an existing schema on a rerun
CREATE SCHEMA IF NOT EXISTS cart;
COMMENT ON SCHEMA cart IS 'the shopping cart aggregate of event_store (examples/cart.sql)';

-- The fold. Never refuses: every rule is in cart.check, which ran before the event was stored.
-- It must still not fail on an event it cannot read (es.replay may be given anything), so such
-- an event leaves the state unchanged. Returns a JSON object.
CREATE OR REPLACE FUNCTION cart.evolve(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sku text := event ->> 'sku';
    line jsonb := state -> 'items' -> (event ->> 'sku');
    quantity numeric;
    price numeric;
    old_quantity numeric := coalesce((line -> 'quantity')::numeric, 0);
    old_price numeric := coalesce((line -> 'unit_price_cents')::numeric, 0);
BEGIN
    CASE event ->> 'type'
    WHEN 'CartOpened' THEN
        RETURN state || jsonb_build_object(
            'customer', event -> 'customer', 'status', 'open', 'item_count', 0);
    WHEN 'ItemAdded' THEN
        IF sku IS NULL OR jsonb_typeof(event -> 'quantity') IS DISTINCT FROM 'number'
           OR jsonb_typeof(event -> 'unit_price_cents') IS DISTINCT FROM 'number' THEN
            RETURN state;
        END IF;
        quantity := (event -> 'quantity')::numeric;
        price := (event -> 'unit_price_cents')::numeric;
        -- The line takes the newest price, so its whole amount is recomputed.
        RETURN state || jsonb_build_object(
            'items', coalesce(state -> 'items', '{}') || jsonb_build_object(
                sku, jsonb_build_object('quantity', old_quantity + quantity,
                                        'unit_price_cents', price)),
            'item_count', coalesce((state -> 'item_count')::numeric, 0) + quantity,
            'total_cents', coalesce((state -> 'total_cents')::numeric, 0)
                           - old_quantity * old_price + (old_quantity + quantity) * price);
    WHEN 'ItemRemoved' THEN
        IF line IS NULL THEN
            RETURN state;
        END IF;
        RETURN state || jsonb_build_object(
            'items', (state -> 'items') - sku,
            'item_count', coalesce((state -> 'item_count')::numeric, 0) - old_quantity,
            'total_cents', coalesce((state -> 'total_cents')::numeric, 0)
                           - old_quantity * old_price);
    WHEN 'CheckedOut' THEN
        RETURN state || '{"status": "checked_out"}';
    ELSE
        RETURN state;
    END CASE;
END
$$;
COMMENT ON FUNCTION cart.evolve(jsonb, jsonb) IS
    'the cart''s fold: the state after an event (examples/cart.sql)';

-- The rules. Raises to refuse (SQLSTATEs CT001..CT006, see the header); returns nothing when
-- the event may be stored.
CREATE OR REPLACE FUNCTION cart.check(state jsonb, event jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    event_type text := event ->> 'type';
    status text := coalesce(state ->> 'status', 'empty');
    sku text := event ->> 'sku';
    quantity jsonb := event -> 'quantity';
    price jsonb := event -> 'unit_price_cents';
    item_count numeric := coalesce((state -> 'item_count')::numeric, 0);
BEGIN
    IF event_type IS NULL
       OR event_type NOT IN ('CartOpened', 'ItemAdded', 'ItemRemoved', 'CheckedOut') THEN
        RAISE EXCEPTION 'unknown cart event type %', coalesce(event_type, 'null')
            USING ERRCODE = 'CT006',
                  HINT = 'a cart has CartOpened, ItemAdded, ItemRemoved and CheckedOut';
    END IF;
    IF status = 'checked_out' THEN
        RAISE EXCEPTION 'the cart is not open: it is checked out, % is refused', event_type
            USING ERRCODE = 'CT001', DETAIL = 'status: checked_out';
    END IF;
    IF event_type = 'CartOpened' THEN
        IF status <> 'empty' THEN
            RAISE EXCEPTION 'the cart is open already: CartOpened is refused'
                USING ERRCODE = 'CT001', DETAIL = format('status: %s', status);
        END IF;
        RETURN;
    END IF;
    IF status <> 'open' THEN
        RAISE EXCEPTION 'the cart is not open: % needs CartOpened first', event_type
            USING ERRCODE = 'CT001', DETAIL = format('status: %s', status);
    END IF;

    CASE event_type
    WHEN 'ItemAdded' THEN
        IF jsonb_typeof(event -> 'sku') IS DISTINCT FROM 'string' OR sku = '' THEN
            RAISE EXCEPTION 'invalid item: "sku" must be a non-empty string, got %',
                    coalesce((event -> 'sku')::text, 'nothing')
                USING ERRCODE = 'CT002';
        END IF;
        -- A whole number is a JSON number whose text is digits only (jsonb prints 1e2 as 100
        -- and 3.0 as 3.0), so the state's sums stay integers.
        IF quantity IS NULL OR quantity::text !~ '^[1-9][0-9]*$' THEN
            RAISE EXCEPTION 'invalid item %: "quantity" must be a whole number from 1, got %',
                    sku, coalesce(quantity::text, 'nothing')
                USING ERRCODE = 'CT002',
                      DETAIL = format('sku: %s, quantity: %s', sku,
                                      coalesce(quantity::text, 'missing'));
        END IF;
        IF price IS NULL OR price::text !~ '^[1-9][0-9]*$'
           OR length(price::text) > 13 OR price::numeric > 1000000000000 THEN
            RAISE EXCEPTION 'invalid item %: "unit_price_cents" must be a whole number from 1 '
                            'to 1000000000000, got %', sku, coalesce(price::text, 'nothing')
                USING ERRCODE = 'CT002',
                      DETAIL = format('sku: %s, unit_price_cents: %s', sku,
                                      coalesce(price::text, 'missing'));
        END IF;
        IF item_count + quantity::numeric > 20 THEN
            RAISE EXCEPTION 'the cart is full: % items and % more of % would be % (at most 20)',
                    item_count, quantity, sku, item_count + quantity::numeric
                USING ERRCODE = 'CT005',
                      DETAIL = format('items: %s, adding: %s, limit: 20', item_count, quantity),
                      HINT = 'remove items or check out first';
        END IF;
    WHEN 'ItemRemoved' THEN
        IF sku IS NULL OR NOT coalesce(state -> 'items', '{}') ? sku THEN
            RAISE EXCEPTION 'item % is not in the cart', coalesce(sku, '(no sku)')
                USING ERRCODE = 'CT003', DETAIL = format('sku: %s', coalesce(sku, 'missing'));
        END IF;
    WHEN 'CheckedOut' THEN
        IF item_count = 0 THEN
            RAISE EXCEPTION 'cannot check out an empty cart'
                USING ERRCODE = 'CT004', HINT = 'add an item first';
        END IF;
    ELSE
        NULL;
    END CASE;
END
$$;
COMMENT ON FUNCTION cart.check(jsonb, jsonb) IS
    'the cart''s rules: raises CT001..CT006 to refuse an event (examples/cart.sql)';

-- Version 1 of ItemAdded called the quantity "qty"; version 2 calls it "quantity". Stored rows
-- never change: the store applies this to every version-1 ItemAdded it reads.
CREATE OR REPLACE FUNCTION cart.item_added_v1_to_v2(event jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN event ? 'qty'
                THEN (event - 'qty') || jsonb_build_object('quantity', event -> 'qty',
                                                           'event_version', 2)
                ELSE event || '{"event_version": 2}'
           END
$$;
COMMENT ON FUNCTION cart.item_added_v1_to_v2(jsonb) IS
    'ItemAdded version 1 ("qty") to version 2 ("quantity") (examples/cart.sql)';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM es.aggregates WHERE stream_type = 'cart') THEN
        PERFORM es.alter_aggregate('cart', 'cart.evolve(jsonb,jsonb)',
                                   '{"status":"empty","items":{},"total_cents":0}',
                                   'cart.check(jsonb,jsonb)', 100);
    ELSE
        PERFORM es.define_aggregate('cart', 'cart.evolve(jsonb,jsonb)',
                                    '{"status":"empty","items":{},"total_cents":0}',
                                    'cart.check(jsonb,jsonb)', 100);
    END IF;
    IF EXISTS (SELECT 1 FROM es.upcasters WHERE event_type = 'ItemAdded' AND from_version = 1) THEN
        PERFORM es.drop_upcaster('ItemAdded', 1);
    END IF;
    PERFORM es.define_upcaster('ItemAdded', 1, 'cart.item_added_v1_to_v2(jsonb)');
END
$$;

INSERT INTO es.stream_type_rules (first_event_type, stream_type) VALUES ('CartOpened', 'cart')
ON CONFLICT (first_event_type) DO UPDATE SET stream_type = excluded.stream_type;

COMMIT;

-- Outside the transaction: it commits a batch at a time. Nothing to do on a first run.
CALL es.rebuild_states('cart');
