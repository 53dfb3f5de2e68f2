-- Tracing's SQL contract (docs/reference.md §7): es.tracing_stats() shape, the settings and their limits, and
-- a malformed client trace context being a WARNING, never an error. Counters depend on the
-- cluster's history (and the status on whether the worker has started yet), so only their
-- presence is shown.
SELECT available, buffer_size, spans_recorded IS NOT NULL AND batches_rejected IS NOT NULL AS has_counters,
       otlp_endpoint
FROM es.tracing_stats();
SELECT name, setting, unit, context, vartype, min_val, max_val
FROM pg_settings
WHERE name IN ('es.tracing', 'es.trace_sample_ratio', 'es.traceparent', 'es.trace_buffer_size',
               'es.otlp_endpoint', 'es.service_name', 'es.otlp_timeout', 'es.otlp_interval',
               'es.otlp_max_batch', 'es.otlp_retries', 'es.otlp_compression')
ORDER BY name;
-- a malformed traceparent: WARNING, the call succeeds
BEGIN;
SET LOCAL es.traceparent = '00-not-a-trace-01';
SELECT es.append_events('00000000-0000-0000-0000-0000000000f1', 0, ARRAY['{"type":"A"}']::jsonb[]);
-- also in a sqlcommenter comment
SELECT es.stream_version('00000000-0000-0000-0000-0000000000f1') /*traceparent='00-XYZ-01'*/;
ROLLBACK;
-- a valid one changes nothing visible in SQL
BEGIN;
SET LOCAL es.traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
SELECT es.append_events('00000000-0000-0000-0000-0000000000f2', 0, ARRAY['{"type":"A"}']::jsonb[]);
ROLLBACK;
-- settings are checked
SET es.trace_sample_ratio = 1.5;
SET es.trace_buffer_size = 100;
SET es.tracing = off;
SELECT status FROM es.tracing_stats();
RESET es.tracing;
