//! The OTLP export worker (docs/reference.md §7): a static background worker, registered when the library is
//! preloaded and restarted a second after a crash, that drains the span ring and exports batches
//! with `opentelemetry-otlp` (OTLP/HTTP protobuf) to `es.otlp_endpoint`.
//!
//! Everything runs on the worker's main thread: the exporter's future is driven by
//! `futures_executor::block_on` and the HTTP client (`crate::trace::http`) is blocking with one
//! deadline per request, so no thread ever sees PostgreSQL's signals. A failed batch is handled
//! as the OTLP/HTTP specification says ([`otlp::verdict`]): an unreachable collector and the
//! answers 429, 502, 503 and 504 are retried `es.otlp_retries` times, after the collector's
//! `Retry-After` or an exponential backoff with jitter, then the batch is dropped and counted;
//! any other answer drops the batch at once (counted in `batches_rejected`). The worker holds
//! at most one batch, so its memory stays bounded whatever the collector does. SIGHUP reloads
//! the settings (a new endpoint takes effect for the next batch); SIGTERM abandons the request
//! in flight within 100 ms and ends the loop.

use crate::trace::http::{BlockingHttp, LastAnswer};
use crate::trace::ring_segment;
use crate::trace::settings::{self, OtlpCompression};
use event_store_telemetry::context::now_unix_ns;
use event_store_telemetry::otlp;
use event_store_telemetry::record::SpanRecord;
use event_store_telemetry::ring::{Ring, RingStats};
use opentelemetry_otlp::{Compression, Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SpanExporter as _;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Registers the worker (see [`super::register`]).
pub fn register() {
    BackgroundWorkerBuilder::new("event_store otlp exporter")
        .set_type("event_store otlp exporter")
        .set_library("event_store")
        .set_function("es_otlp_exporter_main")
        .enable_shmem_access(None)
        .set_start_time(BgWorkerStartTime::PostmasterStart)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

/// Whether SIGTERM arrived (set by pgrx's handler): an export in flight is abandoned, so a fast
/// shutdown never waits for a silent collector.
fn shutdown_requested() -> bool {
    // SAFETY: a sig_atomic_t flag set by the SIGTERM handler, read (volatile) on the same
    // thread.
    unsafe { (&raw const pg_sys::ShutdownRequestPending).read_volatile() != 0 }
}

fn string_guc(g: &pgrx::GucSetting<Option<std::ffi::CString>>) -> String {
    g.get()
        .map(|s| s.to_string_lossy().trim().to_owned())
        .unwrap_or_default()
}

/// The exporter for the current settings, rebuilt when they change.
struct Export {
    endpoint: String,
    timeout_ms: i32,
    compression: OtlpCompression,
    exporter: opentelemetry_otlp::SpanExporter,
    /// The status of the collector's last answer (the HTTP client's).
    answer: LastAnswer,
}

impl Export {
    fn build(
        endpoint: &str,
        timeout_ms: i32,
        compression: OtlpCompression,
    ) -> Result<Export, String> {
        let timeout = Duration::from_millis(timeout_ms.max(1) as u64);
        let client = BlockingHttp::new(timeout).with_cancel(shutdown_requested);
        let answer = client.last_answer();
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(timeout);
        // `none` sets nothing, so OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION still applies
        if compression == OtlpCompression::Gzip {
            builder = builder.with_compression(Compression::Gzip);
        }
        let exporter = builder
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter for {endpoint:?}: {e}"))?;
        Ok(Export {
            endpoint: endpoint.to_owned(),
            timeout_ms,
            compression,
            exporter,
            answer,
        })
    }
}

/// A failed export of the first `spans` pending spans (one database's batch).
struct Failed {
    message: String,
    verdict: otlp::Verdict,
    spans: usize,
}

impl Failed {
    /// A failure before any request (the exporter cannot be built): retried, it may be a
    /// setting being fixed.
    fn local(message: String) -> Failed {
        Failed {
            message,
            verdict: otlp::Verdict::Retry(None),
            spans: 0,
        }
    }
}

/// What the worker keeps between iterations.
struct State {
    ring: Ring,
    export: Option<Export>,
    host: String,
    scope: opentelemetry::InstrumentationScope,
    /// The batch being exported (at most `es.otlp_max_batch` records).
    pending: Vec<SpanRecord>,
    /// Failed attempts of `pending` so far.
    attempts: u32,
    /// When the ring was last seen empty: no span has waited longer than this.
    flushed_at: Instant,
    stopping: bool,
    /// Exports are failing (since the last success).
    failing: bool,
    /// When the last failure was logged.
    last_log: Option<Instant>,
}

impl State {
    fn stats(&self) -> &RingStats {
        self.ring.stats()
    }

    fn check_signals(&mut self) {
        if BackgroundWorker::sigterm_received() {
            self.stopping = true;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: what a backend does on SIGHUP, on the worker's main thread between
            // exports.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }

    fn fill(&mut self) {
        let max = settings::OTLP_MAX_BATCH.get().max(1) as usize;
        while self.pending.len() < max {
            // SAFETY: this worker is the ring's only consumer: one static worker, registered
            // once, and a restarted one starts after the old one exited.
            match unsafe { self.ring.pop() } {
                Some(r) => self.pending.push(r),
                None => break,
            }
        }
    }

    fn give_up(&mut self) {
        let n = self.pending.len() as u64;
        self.stats().dropped_export.fetch_add(n, Ordering::Relaxed);
        self.pending.clear();
        self.attempts = 0;
    }

    /// Exports `pending`, one request per database (the database is a resource attribute).
    fn export_pending(&mut self) -> Result<(), Failed> {
        let endpoint = string_guc(&settings::OTLP_ENDPOINT);
        let timeout_ms = settings::OTLP_TIMEOUT_MS.get();
        let compression = settings::OTLP_COMPRESSION.get();
        if self.export.as_ref().is_none_or(|e| {
            e.endpoint != endpoint || e.timeout_ms != timeout_ms || e.compression != compression
        }) {
            self.export = None;
            self.export =
                Some(Export::build(&endpoint, timeout_ms, compression).map_err(Failed::local)?);
        }
        let service = string_guc(&settings::SERVICE_NAME);
        self.pending.sort_by(|a, b| a.db_name().cmp(b.db_name()));
        while let Some(first) = self.pending.first() {
            let db = first.db_name().to_owned();
            let n = self
                .pending
                .iter()
                .take_while(|r| r.db_name() == db)
                .count();
            let batch: Vec<_> = self.pending[..n]
                .iter()
                .map(|r| otlp::span_data(r, &self.scope))
                .collect();
            let export = self.export.as_mut().expect("built above");
            export
                .exporter
                .set_resource(&otlp::resource(&service, &self.host, &db));
            *export.answer.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if let Err(e) = futures_executor::block_on(export.exporter.export(batch)) {
                let answer = export
                    .answer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                return Err(Failed {
                    message: e.to_string(),
                    verdict: otlp::verdict(
                        answer.as_ref().map(|a| a.status),
                        answer.as_ref().and_then(|a| a.retry_after.as_deref()),
                    ),
                    spans: n,
                });
            }
            self.stats().exported.fetch_add(n as u64, Ordering::Relaxed);
            self.stats()
                .last_success_unix_ns
                .store(now_unix_ns(), Ordering::Relaxed);
            self.pending.drain(..n);
            self.check_signals();
            if self.stopping {
                break;
            }
        }
        Ok(())
    }

    /// A full batch: `es.otlp_max_batch` spans, or half the ring when that is smaller (backends
    /// wake the worker at half a ring, so a larger batch would only ever go out on the interval).
    fn full_batch(&self) -> usize {
        let max = settings::OTLP_MAX_BATCH.get().max(1) as usize;
        max.min((self.ring.capacity() / 2).max(1))
    }

    /// Exports full batches while the ring holds them, and everything once spans may have
    /// waited `es.otlp_interval`; stops early when an export fails or a shutdown is asked for.
    /// Returns how long to sleep: the backoff before a retry, else until the waiting spans are
    /// due (backends wake the worker sooner when the ring is half full).
    ///
    /// Why not send whatever is there: under a steady load the worker then ran back to back
    /// with a few dozen spans a request (measured: 660 requests a second at 19,000 spans a
    /// second), and the per-request costs (the exporter's grouping, the HTTP exchange, two
    /// context switches) made it the third busiest process on the machine.
    fn run_once(&mut self) -> Duration {
        let interval = Duration::from_millis(settings::OTLP_INTERVAL_MS.get().max(1) as u64);
        loop {
            self.check_signals();
            if self.stopping {
                return interval;
            }
            let full = self.full_batch();
            self.fill();
            if self.pending.is_empty() {
                self.flushed_at = Instant::now();
                return interval;
            }
            let waited = self.flushed_at.elapsed();
            if self.pending.len() < full && self.attempts == 0 {
                if waited < interval {
                    return interval - waited;
                }
                // the spans that arrive from now on wait for the next interval
                self.flushed_at = Instant::now();
            }
            if string_guc(&settings::OTLP_ENDPOINT).is_empty() {
                self.give_up();
                continue;
            }
            match self.export_pending() {
                Ok(()) => {
                    self.attempts = 0;
                    if self.failing {
                        self.failing = false;
                        pgrx::log!("event_store: span export works again");
                    }
                }
                Err(failed) => {
                    let e = failed.message;
                    self.attempts += 1;
                    let st = self.stats();
                    st.export_failures.fetch_add(1, Ordering::Relaxed);
                    st.last_failure_unix_ns
                        .store(now_unix_ns(), Ordering::Relaxed);
                    st.set_last_error(&e);
                    // One LOG line when exports start failing, then at most one a minute: a
                    // collector that is down for hours must not flood the server log.
                    if !self.failing
                        || self
                            .last_log
                            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                    {
                        match failed.verdict {
                            otlp::Verdict::Reject => pgrx::log!(
                                "event_store: the collector rejected a span batch (not retried: dropped; see es.tracing_stats()): {e}"
                            ),
                            otlp::Verdict::Retry(_) => pgrx::log!(
                                "event_store: span export failed (retried {} times per batch, then dropped; see es.tracing_stats()): {e}",
                                settings::OTLP_RETRIES.get()
                            ),
                        }
                        self.last_log = Some(Instant::now());
                    }
                    self.failing = true;
                    let after = match failed.verdict {
                        otlp::Verdict::Reject => {
                            // the collector refused this batch and would refuse it again
                            let st = self.stats();
                            st.batches_rejected.fetch_add(1, Ordering::Relaxed);
                            st.dropped_export
                                .fetch_add(failed.spans as u64, Ordering::Relaxed);
                            self.pending.drain(..failed.spans);
                            self.attempts = 0;
                            continue;
                        }
                        otlp::Verdict::Retry(after) => after,
                    };
                    if self.attempts > settings::OTLP_RETRIES.get().max(0) as u32 {
                        self.give_up();
                        continue;
                    }
                    return after.unwrap_or_else(|| {
                        // jitter: the clock's nanoseconds, enough to spread workers apart
                        otlp::backoff(self.attempts, now_unix_ns())
                    });
                }
            }
        }
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the local buffer.
    let rc = unsafe { libc_gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

unsafe extern "C" {
    #[link_name = "gethostname"]
    fn libc_gethostname(name: *mut std::ffi::c_char, len: usize) -> std::ffi::c_int;
}

/// Entry point of the export worker (see [`register`]).
///
/// # Safety
/// Called by the postmaster as a background worker's main function.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn es_otlp_exporter_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let Some(ring) = ring_segment::get() else {
        pgrx::log!("event_store: no span ring in shared memory; the exporter exits");
        return;
    };
    ring.stats()
        .worker_pid
        .store(std::process::id().into(), Ordering::Relaxed);
    // SAFETY: MyLatch is set before a background worker's main function runs (its PGPROC's
    // latch, in shared memory; see PgHost::finish).
    let latch = unsafe { pg_sys::MyLatch };
    ring.stats()
        .worker_latch
        .store(latch as u64, Ordering::Release);
    let mut state = State {
        ring,
        export: None,
        host: hostname(),
        scope: otlp::scope(),
        pending: Vec::with_capacity(settings::OTLP_MAX_BATCH.get().max(1) as usize),
        attempts: 0,
        flushed_at: Instant::now(),
        stopping: false,
        failing: false,
        last_log: None,
    };
    loop {
        let sleep = state.run_once();
        if state.stopping || !BackgroundWorker::wait_latch(Some(sleep)) {
            break;
        }
    }
    ring.stats().worker_latch.store(0, Ordering::Release);
    ring.stats().worker_pid.store(0, Ordering::Relaxed);
}
