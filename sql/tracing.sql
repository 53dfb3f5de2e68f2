-- Tracing (SPEC §7): the SQL object of the OpenTelemetry export. Spans themselves need no SQL
-- objects (they live in shared memory until the export worker sends them); this file holds the
-- view on the counters, kept apart from bootstrap.sql so the tracing layer stays in one place.

CREATE FUNCTION es.tracing_stats(
    OUT available boolean,
    OUT status text,
    OUT spans_recorded bigint,
    OUT spans_exported bigint,
    OUT spans_dropped bigint,
    OUT spans_dropped_export bigint,
    OUT export_failures bigint,
    OUT spans_queued bigint,
    OUT buffer_size integer,
    OUT last_error text,
    OUT last_export_at timestamptz,
    OUT last_failure_at timestamptz,
    OUT worker_pid integer,
    OUT otlp_endpoint text)
RETURNS SETOF record
LANGUAGE c VOLATILE PARALLEL SAFE ROWS 1
AS 'MODULE_PATHNAME', 'es_tracing_stats';
COMMENT ON FUNCTION es.tracing_stats() IS
  'One row: whether tracing is available (needs shared_preload_libraries = ''event_store''), its status in this session, spans recorded, exported, dropped because the buffer was full (spans_dropped), dropped after failed export retries (spans_dropped_export), failed export attempts, spans waiting, the buffer size, the last export error and the times of the last successful and failed exports, the export worker''s pid and es.otlp_endpoint.';
REVOKE ALL ON FUNCTION es.tracing_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION es.tracing_stats() TO pg_monitor;
