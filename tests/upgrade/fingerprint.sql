-- The fingerprint of a store that tests/upgrade/pg_upgrade.sh takes before and after the
-- upgrade: one labelled line per fact (every row of the extension's tables and of the test's
-- read models rendered whole, the sequences, the views' stable columns, the states and reads the
-- functions return). The two must be equal line for line, so it leaves out what legitimately
-- moves with the clock (seconds_behind, lease arithmetic is stored, so kept) and renders
-- timestamps in UTC with the search path pinned (regprocedure and regrole columns render as
-- qualified names, not OIDs, so function OIDs that pg_upgrade does not keep do not differ).
\set ON_ERROR_STOP 1
SET TimeZone = 'UTC';
SET search_path = pg_catalog;
SELECT 'extension ' || extname || ' ' || extversion || ' ' || extnamespace::regnamespace::text
  FROM pg_extension WHERE extname = 'event_store';
SELECT 'role ' || rolname || ' ' || oid FROM pg_roles WHERE rolname = 'es_upgrade_reader';
SELECT 'events ' || count(*) || ' max_position ' || coalesce(max(global_position), 0) FROM es.events;
SELECT 'event ' || to_jsonb(e)::text FROM es.events e ORDER BY global_position;
SELECT 'stream ' || to_jsonb(s)::text || ' stream_version=' || es.stream_version(s.stream_id)
  FROM es.streams s ORDER BY stream_id;
SELECT 'snapshot ' || to_jsonb(s)::text FROM es.snapshots s ORDER BY stream_id, version;
SELECT 'load_snapshot ' || s.stream_id || ' ' || coalesce(to_jsonb(l)::text, 'none')
  FROM es.streams s LEFT JOIN LATERAL es.load_snapshot(s.stream_id) l ON true ORDER BY s.stream_id;
SELECT 'state ' || stream_id || ' ' || es.state(stream_id)::text || ' at_v1 ' || es.state(stream_id, at_version => 1)::text
  FROM es.streams WHERE stream_type IS NOT NULL ORDER BY stream_id;
SELECT 'account_state ' || stream_id || ' ' || es.account_state(stream_id)::text
  FROM es.streams WHERE stream_type = 'account' ORDER BY stream_id;
SELECT 'history ' || h.stream_id || ' ' || md5(string_agg(to_jsonb(h)::text, ',' ORDER BY h.version))
  FROM (SELECT s.stream_id, x.* FROM es.streams s, es.history(s.stream_id) x WHERE s.stream_type IS NOT NULL) h
 GROUP BY h.stream_id ORDER BY h.stream_id;
SELECT 'load_events ' || s.stream_id || ' ' || md5(string_agg(to_jsonb(e)::text, ',' ORDER BY e.version))
  FROM es.streams s, es.load_events(s.stream_id) e GROUP BY s.stream_id ORDER BY s.stream_id;
SELECT 'read_all ' || count(*) || ' ' || md5(string_agg(to_jsonb(r)::text, ',' ORDER BY r.global_position))
  FROM es.read_all(0, 1000000) r;
SELECT 'sequence es.global_position_seq ' || last_value || ' ' || is_called FROM es.global_position_seq;
SELECT 'sequence es.aggregate_revision_seq ' || last_value || ' ' || is_called FROM es.aggregate_revision_seq;
SELECT 'sequence public.model_seq_seq ' || last_value || ' ' || is_called FROM public.model_seq_seq;
SELECT 'subscription_config ' || to_jsonb(c)::text FROM es.subscription_config c ORDER BY name;
SELECT 'subscription_partition ' || to_jsonb(p)::text FROM es.subscription_partitions p ORDER BY subscription, partition;
SELECT 'subscription_consumer ' || to_jsonb(c)::text FROM es.subscription_consumers c ORDER BY subscription, consumer;
SELECT 'parked ' || to_jsonb(p)::text FROM es.parked_events p ORDER BY subscription, global_position;
SELECT 'subscriptions_view ' || concat_ws(' ', name, partition, checkpoint, events_behind, events_behind_is_estimate,
                                         owner, lease_until, head_attempts, parked)
  FROM es.subscriptions ORDER BY name, partition;
SELECT 'projection_config ' || (to_jsonb(p) - 'last_run_at')::text FROM es.projection_config p ORDER BY name;
SELECT 'projections_view ' || concat_ws(' ', name, state, checkpoint, events_behind, last_error, handler)
  FROM es.projections ORDER BY name;
SELECT 'watermark ' || to_jsonb(w)::text FROM es.watermark w ORDER BY id;
SELECT 'account_balance ' || (to_jsonb(b) - 'updated_at')::text FROM es.account_balances b ORDER BY account_id;
SELECT 'account_transaction ' || to_jsonb(t)::text FROM es.account_transactions t ORDER BY account_id, version;
SELECT 'aggregate_type ' || to_jsonb(t)::text FROM es.aggregate_types t ORDER BY stream_type;
SELECT 'aggregates_view ' || to_jsonb(a)::text FROM es.aggregates a ORDER BY stream_type;
SELECT 'stream_type_rule ' || to_jsonb(r)::text FROM es.stream_type_rules r ORDER BY first_event_type;
SELECT 'upcaster ' || to_jsonb(u)::text FROM es.upcasters u ORDER BY event_type, from_version;
SELECT 'model ' || to_jsonb(m)::text FROM public.model m ORDER BY seq;
SELECT 'paused_model ' || count(*) FROM public.paused_model;
