//! The `es.*` tracing settings (docs/reference.md §7). Session settings decide what a backend records;
//! reloadable ones (`SIGHUP`) steer the export worker; the buffer size is fixed at server start
//! because it sizes shared memory.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `es.tracing`: record spans at all (the switch; needs the preload to have any effect).
pub static TRACING: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `es.trace_sample_ratio`: the share of new root traces recorded (0..1). A call that carries
/// the client's trace context follows the client's sampled flag instead.
pub static SAMPLE_RATIO: GucSetting<f64> = GucSetting::<f64>::new(1.0);

/// `es.traceparent`: the client's W3C trace context for this session (or transaction, with
/// `SET LOCAL`); a sqlcommenter comment in the query text takes precedence.
pub static TRACEPARENT: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);

/// `es.trace_buffer_size`: spans the shared ring holds; when it is full new spans are dropped
/// and counted. Server start only.
pub static BUFFER_SIZE: GucSetting<i32> = GucSetting::<i32>::new(4096);

/// `es.otlp_endpoint`: the OTLP/HTTP (protobuf) traces URL, including `/v1/traces`; empty turns
/// export off (spans are then drained and counted as dropped).
pub static OTLP_ENDPOINT: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"http://127.0.0.1:4318/v1/traces"));

/// `es.service_name`: the `service.name` resource attribute of exported spans.
pub static SERVICE_NAME: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"event_store"));

/// `es.otlp_timeout`: the time one export request may take, name lookup to response (ms).
pub static OTLP_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(2000);

/// `es.otlp_interval`: the longest spans wait while less than a full batch is waiting (ms).
pub static OTLP_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// `es.otlp_max_batch`: spans per export request.
pub static OTLP_MAX_BATCH: GucSetting<i32> = GucSetting::<i32>::new(512);

/// `es.otlp_retries`: retries of a failed batch (with exponential backoff) before it is dropped.
pub static OTLP_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(3);

/// The values of `es.otlp_compression`.
#[derive(pgrx::PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum OtlpCompression {
    /// Uncompressed bodies, unless the postmaster's environment sets
    /// `OTEL_EXPORTER_OTLP_TRACES_COMPRESSION` or `OTEL_EXPORTER_OTLP_COMPRESSION` (read by
    /// `opentelemetry-otlp`).
    #[name = c"none"]
    None,
    /// gzip-compressed bodies (`Content-Encoding: gzip`), which every OTLP/HTTP collector
    /// accepts.
    #[name = c"gzip"]
    Gzip,
}

/// `es.otlp_compression`: `none` or `gzip`, the compression of export request bodies.
pub static OTLP_COMPRESSION: GucSetting<OtlpCompression> =
    GucSetting::<OtlpCompression>::new(OtlpCompression::None);

/// Registers the tracing settings (before the shared-memory hooks, which read the buffer size).
pub fn init() {
    GucRegistry::define_bool_guc(
        c"es.tracing",
        c"Records OpenTelemetry spans of the es.* functions.",
        c"Needs shared_preload_libraries = 'event_store'; off records nothing.",
        &TRACING,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"es.trace_sample_ratio",
        c"Share of new root traces that are recorded (0 to 1).",
        c"Calls that carry the client's trace context follow its sampled flag instead.",
        &SAMPLE_RATIO,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"es.traceparent",
        c"The client's W3C traceparent: spans become children of the client's span.",
        c"Format 00-<trace id>-<parent id>-<flags>. A sqlcommenter traceparent comment in the query takes precedence. A malformed value gives a WARNING and a new root trace.",
        &TRACEPARENT,
        GucContext::Userset,
        GucFlags::default(),
    );
    // A server-start setting can only be defined while the postmaster loads the library;
    // defined later (CREATE EXTENSION without the preload) it would be a FATAL error. Without
    // the preload there is no buffer to size anyway.
    // SAFETY: a flag the postmaster sets while it loads shared_preload_libraries.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        define_buffer_size();
    }
    GucRegistry::define_string_guc(
        c"es.otlp_endpoint",
        c"OTLP/HTTP protobuf traces URL of the collector (empty = no export).",
        c"The full URL including /v1/traces, e.g. http://127.0.0.1:4318/v1/traces. Reloadable.",
        &OTLP_ENDPOINT,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"es.service_name",
        c"service.name resource attribute of exported spans.",
        c"Reloadable.",
        &SERVICE_NAME,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"es.otlp_timeout",
        c"Time one export request may take, name lookup to response.",
        c"A collector that accepts connections but never answers costs at most this per attempt (a shutdown abandons the request at once).",
        &OTLP_TIMEOUT_MS,
        100,
        60_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"es.otlp_interval",
        c"The longest spans wait for export while less than a full batch is waiting.",
        c"Full batches (es.otlp_max_batch, at most half the span buffer) are exported at once.",
        &OTLP_INTERVAL_MS,
        10,
        600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"es.otlp_max_batch",
        c"Spans per export request.",
        c"Also bounds the worker's memory: it holds at most one batch.",
        &OTLP_MAX_BATCH,
        1,
        65_536,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"es.otlp_retries",
        c"Retries of a failed export batch before it is dropped.",
        c"Only unreachable collectors and the answers 429, 502, 503 and 504 are retried, after the collector's Retry-After or an exponential backoff with jitter (250 ms doubling, at most 8 s); other answers drop the batch at once. Dropped spans are counted in es.tracing_stats().",
        &OTLP_RETRIES,
        0,
        100,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"es.otlp_compression",
        c"Compression of export request bodies: none or gzip.",
        c"none leaves it to OTEL_EXPORTER_OTLP_TRACES_COMPRESSION / OTEL_EXPORTER_OTLP_COMPRESSION in the postmaster's environment (uncompressed when unset). Reloadable.",
        &OTLP_COMPRESSION,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

fn define_buffer_size() {
    GucRegistry::define_int_guc(
        c"es.trace_buffer_size",
        c"Spans the shared-memory buffer holds (server start).",
        c"When the buffer is full, new spans are dropped and counted in es.tracing_stats().",
        &BUFFER_SIZE,
        16,
        1 << 22,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}
