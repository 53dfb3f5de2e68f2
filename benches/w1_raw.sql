-- W1 (raw baseline): one plain single-row INSERT into bench.raw_events for a random one of the same 100k streams, client-made version, no checks.
\set n random(1, 100000)
\set v random(2, 4611686018427387903)
INSERT INTO bench.raw_events (stream_id, version, event_id, event_type, data, occurred_at, recorded_at)
VALUES (lpad(to_hex(:n::bigint), 32, '0')::uuid, :v, gen_random_uuid(), 'ItemAdded', '{"type":"ItemAdded","sku":"A-1","qty":1}', now(), now());
