-- W12's shopping cart (benches/run.sh): an aggregate type 'cart' whose check and evolve are
-- PL/pgSQL, with the events and state of examples/cart.sql (CartOpened, ItemAdded, ItemRemoved,
-- CheckedOut; lines by sku with quantity and unit price, item count, total), written with few
-- statements: PL/pgSQL prepares each expression of a function again in every transaction, the
-- bulk of what a one-event append to such a type costs (docs/benchmarks.md). No limit on the
-- items (examples/cart.sql stops at 20, which random appends to 10k carts would soon reach), so
-- the workload is never refused; every append still reads the state, validates the event
-- (status, sku, quantity and price) and builds the new state with jsonb functions. Without a
-- SET clause (examples/cart.sql pins search_path): a function with one is called through
-- fmgr_security_definer, which saves and restores the setting on every call.
CREATE FUNCTION bench.cart_evolve(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    line jsonb;
BEGIN
    CASE event ->> 'type'
    WHEN 'ItemAdded' THEN
        line := state -> 'items' -> (event ->> 'sku');
        RETURN state || jsonb_build_object(
            'items', state -> 'items' || jsonb_build_object(event ->> 'sku', jsonb_build_object(
                'quantity', coalesce((line ->> 'quantity')::int, 0) + (event ->> 'quantity')::int,
                'unit_price_cents', (event -> 'unit_price_cents'))),
            'item_count', (state ->> 'item_count')::int + (event ->> 'quantity')::int,
            'total_cents', (state ->> 'total_cents')::bigint
                           + coalesce((line ->> 'quantity')::int * ((event ->> 'unit_price_cents')::bigint - (line ->> 'unit_price_cents')::bigint), 0)
                           + (event ->> 'quantity')::int * (event ->> 'unit_price_cents')::bigint);
    WHEN 'ItemRemoved' THEN
        line := state -> 'items' -> (event ->> 'sku');
        RETURN state || jsonb_build_object(
            'items', (state -> 'items') - (event ->> 'sku'),
            'item_count', (state ->> 'item_count')::int - (line ->> 'quantity')::int,
            'total_cents', (state ->> 'total_cents')::bigint - (line ->> 'quantity')::int * (line ->> 'unit_price_cents')::bigint);
    WHEN 'CartOpened' THEN
        RETURN state || jsonb_build_object('status', 'open', 'customer', event -> 'customer');
    WHEN 'CheckedOut' THEN
        RETURN state || '{"status": "checked_out"}';
    ELSE
        RETURN state;
    END CASE;
END
$$;
CREATE FUNCTION bench.cart_check(state jsonb, event jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    IF state ->> 'status' = 'checked_out'
       OR (state ->> 'status' = 'open') = (event ->> 'type' = 'CartOpened') THEN
        RAISE EXCEPTION 'the cart is %, % is refused', state ->> 'status', event ->> 'type'
            USING ERRCODE = 'CT001';
    END IF;
    CASE event ->> 'type'
    WHEN 'ItemAdded' THEN
        IF NOT (jsonb_typeof(event -> 'sku') = 'string' AND event ->> 'sku' <> ''
                AND jsonb_typeof(event -> 'quantity') = 'number' AND (event ->> 'quantity')::numeric >= 1
                AND jsonb_typeof(event -> 'unit_price_cents') = 'number' AND (event ->> 'unit_price_cents')::numeric >= 1) THEN
            RAISE EXCEPTION 'invalid item %', event USING ERRCODE = 'CT002';
        END IF;
    WHEN 'ItemRemoved' THEN
        IF NOT coalesce(state -> 'items' ? (event ->> 'sku'), false) THEN
            RAISE EXCEPTION 'item % is not in the cart', event ->> 'sku' USING ERRCODE = 'CT003';
        END IF;
    WHEN 'CheckedOut' THEN
        IF (state ->> 'item_count')::int = 0 THEN
            RAISE EXCEPTION 'cannot check out an empty cart' USING ERRCODE = 'CT004';
        END IF;
    WHEN 'CartOpened' THEN
        NULL;
    ELSE
        RAISE EXCEPTION 'unknown cart event type %', event ->> 'type' USING ERRCODE = 'CT006';
    END CASE;
END
$$;

SELECT es.define_aggregate('cart', 'bench.cart_evolve(jsonb,jsonb)',
                           '{"status": "empty", "items": {}, "item_count": 0, "total_cents": 0}',
                           'bench.cart_check(jsonb,jsonb)', 100);
