//! From span records to OpenTelemetry's `SpanData` and `Resource`, and the export worker's retry
//! schedule: the pure half of the export (docs/reference.md §7), so the mapping is tested without a server.

use super::record::{AttrValue, SpanRecord};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::time::{Duration, UNIX_EPOCH};

/// The instrumentation scope of every exported span.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("event_store")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// The resource of spans recorded in database `db`: `service.name`, `host.name`, the database.
pub fn resource(service_name: &str, host: &str, db: &str) -> Resource {
    Resource::builder_empty()
        .with_service_name(service_name.to_owned())
        .with_attributes([
            KeyValue::new("host.name", host.to_owned()),
            KeyValue::new("db.system", "postgresql"),
            KeyValue::new("db.namespace", db.to_owned()),
            KeyValue::new("db.name", db.to_owned()),
        ])
        .build()
}

/// A record as OpenTelemetry's exportable span: its declared name, and each attribute under
/// its own key (a uuid as its text form).
pub fn span_data(r: &SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let mut attributes: Vec<KeyValue> = r
        .attrs()
        .map(|(k, v)| {
            let key = k.to_owned();
            match v {
                AttrValue::Int(i) => KeyValue::new(key, i),
                AttrValue::Uuid(id) => KeyValue::new(key, uuid::Uuid::from_bytes(id).to_string()),
                AttrValue::Str(text) => KeyValue::new(key, text.to_owned()),
                AttrValue::Bool(b) => KeyValue::new(key, b),
                AttrValue::F64(f) => KeyValue::new(key, f),
            }
        })
        .collect();
    attributes.push(KeyValue::new("process.pid", i64::from(r.pid)));
    if let Some(code) = r.sqlstate() {
        attributes.push(KeyValue::new("db.response.status_code", code.to_owned()));
    }
    let status = match r.failure() {
        Some(message) => Status::error(message.to_owned()),
        None => Status::Ok,
    };
    let ts = |ns: u64| UNIX_EPOCH + Duration::from_nanos(ns);
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(r.trace_id),
            SpanId::from_bytes(r.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from_bytes(r.parent_id),
        parent_span_is_remote: r.parent_remote(),
        span_kind: SpanKind::Internal,
        name: r.name().to_owned().into(),
        start_time: ts(r.start_unix_ns),
        end_time: ts(r.end_unix_ns.max(r.start_unix_ns)),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// How long the worker waits before retry `attempt` (1-based) of a failed batch when the
/// collector did not say: exponential backoff (250 ms, doubling, at most 8 s) with jitter, a
/// uniform draw in the upper half of the step (`jitter` is any random number), so exporters that
/// failed together do not retry together.
pub fn backoff(attempt: u32, jitter: u64) -> Duration {
    let ms = 250u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(5))
        .min(8_000);
    Duration::from_millis(ms / 2 + jitter % (ms / 2 + 1))
}

/// The longest `Retry-After` the worker honours: a collector cannot stall the export for longer
/// per retry (the retries themselves are bounded by `es.otlp_retries`).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What to do with a batch whose export failed, by the OTLP/HTTP specification's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Retry (after the collector's `Retry-After` when it sent one): the collector was
    /// unreachable or answered 429, 502, 503 or 504.
    Retry(Option<Duration>),
    /// Drop the batch at once: any other answer (a 4xx says the request is bad and would be as
    /// bad again; the specification names no other 5xx retryable either).
    Reject,
}

/// The verdict on an export that failed with HTTP status `status` (`None`: no answer, a network
/// error or a timeout) and the answer's `Retry-After` header.
pub fn verdict(status: Option<u16>, retry_after: Option<&str>) -> Verdict {
    match status {
        None => Verdict::Retry(None),
        Some(429 | 502 | 503 | 504) => Verdict::Retry(retry_after.and_then(parse_retry_after)),
        Some(_) => Verdict::Reject,
    }
}

/// A `Retry-After` value in its delay-seconds form, capped at [`MAX_RETRY_AFTER`]; `None` for
/// the HTTP-date form or garbage (the backoff applies then).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AttrValue as A;
    use opentelemetry::Value;

    fn attr<'a>(d: &'a SpanData, k: &str) -> Option<&'a Value> {
        d.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| &kv.value)
    }

    #[test]
    fn a_deposit_record_maps_to_the_seeds_span() {
        let mut r = SpanRecord::new("command.deposit", [7; 16], [8; 8], [9; 8]);
        r.start_unix_ns = 1_000;
        r.end_unix_ns = 5_000;
        r.set_parent_remote(true);
        r.set_attr("aggregate_id", A::Uuid([1; 16]));
        r.set_attr("account_id", A::Uuid([1; 16]));
        r.set_attr("event_sourcing.operation", A::Str("command"));
        r.set_attr("amount_cents", A::Int(250));
        r.set_attr("retried", A::Bool(true));
        let d = span_data(&r, &scope());
        assert_eq!(attr(&d, "retried"), Some(&Value::Bool(true)));
        assert_eq!(d.name, "command.deposit");
        assert_eq!(d.span_context.trace_id(), TraceId::from_bytes([7; 16]));
        assert_eq!(d.parent_span_id, SpanId::from_bytes([9; 8]));
        assert!(d.parent_span_is_remote);
        assert_eq!(attr(&d, "amount_cents"), Some(&Value::I64(250)));
        assert_eq!(
            attr(&d, "event_sourcing.operation"),
            Some(&Value::from("command"))
        );
        let id = uuid::Uuid::from_bytes([1; 16]).to_string();
        assert_eq!(attr(&d, "account_id"), Some(&Value::from(id.clone())));
        assert_eq!(attr(&d, "aggregate_id"), Some(&Value::from(id)));
        assert_eq!(d.status, Status::Ok);
        assert_eq!(
            d.end_time.duration_since(d.start_time).unwrap(),
            Duration::from_nanos(4_000)
        );
    }

    #[test]
    fn a_failed_record_has_status_error() {
        let mut r = SpanRecord::new("event_store.append_events", [7; 16], [8; 8], [0; 8]);
        r.set_error("ES001", "wrong expected version");
        r.set_attr("db.system", A::Str("postgresql"));
        r.set_attr("db.operation", A::Str("INSERT"));
        let d = span_data(&r, &scope());
        assert_eq!(d.status, Status::error("wrong expected version"));
        assert_eq!(
            attr(&d, "db.response.status_code"),
            Some(&Value::from("ES001"))
        );
        assert_eq!(attr(&d, "db.system"), Some(&Value::from("postgresql")));
        assert_eq!(attr(&d, "db.operation"), Some(&Value::from("INSERT")));
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        assert_eq!(backoff(1, 0), Duration::from_millis(125));
        assert_eq!(backoff(1, 125), Duration::from_millis(250));
        assert_eq!(backoff(2, 0), Duration::from_millis(250));
        assert_eq!(backoff(2, 250), Duration::from_millis(500));
        assert_eq!(backoff(6, u64::MAX), backoff(60, u64::MAX));
        for j in [0, 1, 7, 1_000_003, u64::MAX] {
            let d = backoff(60, j);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
        assert_ne!(backoff(3, 1), backoff(3, 2), "jitter moves the retry");
    }

    #[test]
    fn only_the_specifications_retryable_answers_are_retried() {
        assert_eq!(verdict(None, None), Verdict::Retry(None));
        for code in [429, 502, 503, 504] {
            assert_eq!(verdict(Some(code), None), Verdict::Retry(None), "{code}");
        }
        assert_eq!(
            verdict(Some(429), Some(" 3 ")),
            Verdict::Retry(Some(Duration::from_secs(3)))
        );
        assert_eq!(
            verdict(Some(503), Some("86400")),
            Verdict::Retry(Some(MAX_RETRY_AFTER))
        );
        assert_eq!(
            verdict(Some(503), Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Verdict::Retry(None)
        );
        for code in [400, 401, 403, 404, 413, 500, 501, 505] {
            assert_eq!(verdict(Some(code), Some("1")), Verdict::Reject, "{code}");
        }
    }

    #[test]
    fn the_resource_names_service_host_and_database() {
        let r = resource("svc", "host1", "bank");
        let get = |k: &str| {
            r.iter()
                .find(|(key, _)| key.as_str() == k)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("svc"));
        assert_eq!(get("host.name").as_deref(), Some("host1"));
        assert_eq!(get("db.namespace").as_deref(), Some("bank"));
    }
}
