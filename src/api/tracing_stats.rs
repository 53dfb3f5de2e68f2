//! `es.tracing_stats()`: one row with the state of tracing and its counters (docs/reference.md §7) — spans
//! recorded, exported, dropped because the buffer was full, dropped after failed exports, export
//! failures, batches the collector refused, the last error and the last successful export. Without the preload the row says
//! tracing is unavailable and why, instead of failing: a monitoring query should keep working.

use crate::pg::call::{Call, Value, no_value};
use crate::trace::{ring_segment, settings};
use event_store_core::EventStoreError;
use event_store_macros::sql_function;
use pgrx::pg_sys::Datum;
use std::sync::atomic::Ordering;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

fn timestamptz(unix_ns: u64) -> Value<'static> {
    if unix_ns == 0 {
        Value::Null
    } else {
        Value::TimestampTz((unix_ns / 1000) as i64 - PG_EPOCH_OFFSET_US)
    }
}

fn int8(v: u64) -> Value<'static> {
    Value::Int8(v as i64)
}

/// One row of the columns declared below: available, status, spans_recorded, spans_exported,
/// spans_dropped, spans_dropped_export, export_failures, batches_rejected, spans_queued,
/// buffer_size, last_error,
/// last_export_at, last_failure_at, worker_pid, otlp_endpoint.
#[sql_function(
    sql = "es.tracing_stats(
    OUT available boolean,
    OUT status text,
    OUT spans_recorded bigint,
    OUT spans_exported bigint,
    OUT spans_dropped bigint,
    OUT spans_dropped_export bigint,
    OUT export_failures bigint,
    OUT batches_rejected bigint,
    OUT spans_queued bigint,
    OUT buffer_size integer,
    OUT last_error text,
    OUT last_export_at timestamptz,
    OUT last_failure_at timestamptz,
    OUT worker_pid integer,
    OUT otlp_endpoint text)
RETURNS SETOF record
LANGUAGE c VOLATILE PARALLEL SAFE ROWS 1",
    comment = "One row: whether tracing is available (needs shared_preload_libraries = 'event_store'), its status in this session, spans recorded, exported, dropped because the buffer was full (spans_dropped), dropped after failed exports (spans_dropped_export), failed export attempts, batches the collector refused with an answer that is not retried (batches_rejected: a 4xx other than 429, a 5xx other than 502, 503, 504; their spans are in spans_dropped_export), spans waiting, the buffer size, the last export error and the times of the last successful and failed exports, the export worker's pid and es.otlp_endpoint.",
    access = "owner, pg_monitor"
)]
fn tracing_stats(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let mut out = call.materialize();
    let endpoint = settings::OTLP_ENDPOINT
        .get()
        .map(|s| s.to_string_lossy().into_owned());
    let mut row: [Value<'_>; 15] = [Value::Null; 15];
    let last_error;
    match ring_segment::get() {
        None => {
            row[0] = Value::Bool(false);
            row[1] = Value::Text(
                "unavailable: event_store is not in shared_preload_libraries (tracing is off)",
            );
        }
        Some(ring) => {
            let st = ring.stats();
            let status = if !settings::TRACING.get() {
                "off: es.tracing is off in this session"
            } else if settings::OTLP_ENDPOINT
                .get()
                .is_none_or(|e| e.to_bytes().is_empty())
            {
                "recording, export off: es.otlp_endpoint is empty"
            } else if st.worker_pid.load(Ordering::Relaxed) == 0 {
                "recording, exporter not running"
            } else {
                "on"
            };
            row[0] = Value::Bool(true);
            row[1] = Value::Text(status);
            row[2] = int8(st.recorded.load(Ordering::Relaxed));
            row[3] = int8(st.exported.load(Ordering::Relaxed));
            row[4] = int8(st.dropped_full.load(Ordering::Relaxed));
            row[5] = int8(st.dropped_export.load(Ordering::Relaxed));
            row[6] = int8(st.export_failures.load(Ordering::Relaxed));
            row[7] = int8(st.batches_rejected.load(Ordering::Relaxed));
            row[8] = int8(ring.len() as u64);
            row[9] = Value::Int4(ring.capacity() as i32);
            last_error = st.last_error();
            row[10] = last_error.as_deref().map_or(Value::Null, Value::Text);
            row[11] = timestamptz(st.last_success_unix_ns.load(Ordering::Relaxed));
            row[12] = timestamptz(st.last_failure_unix_ns.load(Ordering::Relaxed));
            let pid = st.worker_pid.load(Ordering::Relaxed);
            row[13] = if pid != 0 {
                Value::Int4(pid as i32)
            } else {
                Value::Null
            };
        }
    }
    row[14] = endpoint.as_deref().map_or(Value::Null, Value::Text);
    out.put_values(&row);
    Ok(no_value())
}
