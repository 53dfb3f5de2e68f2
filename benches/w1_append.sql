-- W1 (store): one-event es.append_events with expected_version NULL to a random one of 100k existing streams.
\set n random(1, 100000)
SELECT es.append_events(lpad(to_hex(:n::bigint), 32, '0')::uuid, NULL, ARRAY['{"type":"ItemAdded","sku":"A-1","qty":1}']::jsonb[]);
