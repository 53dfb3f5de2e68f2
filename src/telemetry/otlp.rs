//! From span records to OpenTelemetry's `SpanData` and `Resource`, and the export worker's retry
//! schedule: the pure half of the export (SPEC §7), so the mapping is tested without a server.

use super::record::SpanRecord;
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

/// A record as OpenTelemetry's exportable span (`None` for a record of an unknown name).
pub fn span_data(r: &SpanRecord, scope: &InstrumentationScope) -> Option<SpanData> {
    let name = r.name()?;
    let mut attributes: Vec<KeyValue> = r
        .statics()
        .map(|a| {
            let (k, v) = a.key_value();
            KeyValue::new(k, v)
        })
        .collect();
    let uuid = |id: [u8; 16]| uuid::Uuid::from_bytes(id).to_string();
    if let Some(id) = r.account_id() {
        attributes.push(KeyValue::new("account_id", uuid(id)));
    }
    if let Some(id) = r.aggregate_id() {
        attributes.push(KeyValue::new("aggregate_id", uuid(id)));
    }
    for (k, v) in r.nums() {
        attributes.push(KeyValue::new(k.key(), v));
    }
    attributes.push(KeyValue::new("process.pid", i64::from(r.pid)));
    if let Some(code) = r.sqlstate() {
        attributes.push(KeyValue::new("db.response.status_code", code.to_owned()));
    }
    let status = match r.failure() {
        Some(message) => Status::error(message.to_owned()),
        None => Status::Ok,
    };
    let ts = |ns: u64| UNIX_EPOCH + Duration::from_nanos(ns);
    Some(SpanData {
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
        name: name.as_str().into(),
        start_time: ts(r.start_unix_ns),
        end_time: ts(r.end_unix_ns.max(r.start_unix_ns)),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    })
}

/// How long the worker waits before retry `attempt` (1-based) of a failed batch: 250 ms,
/// doubling, at most 8 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 250u64.saturating_mul(1 << attempt.saturating_sub(1).min(5));
    Duration::from_millis(ms.min(8_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::record::{NumAttr, SpanName, StaticAttr};
    use opentelemetry::Value;

    fn attr<'a>(d: &'a SpanData, k: &str) -> Option<&'a Value> {
        d.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| &kv.value)
    }

    #[test]
    fn a_deposit_record_maps_to_the_seeds_span() {
        let mut r = SpanRecord::new(SpanName::Deposit, [7; 16], [8; 8], [9; 8]);
        r.start_unix_ns = 1_000;
        r.end_unix_ns = 5_000;
        r.set_parent_remote(true);
        r.set_aggregate_id([1; 16]);
        r.set_account_id([1; 16]);
        r.set_static(StaticAttr::OpCommand);
        r.set_num(NumAttr::AmountCents, 250);
        let d = span_data(&r, &scope()).unwrap();
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
        let mut r = SpanRecord::new(SpanName::AppendEvents, [7; 16], [8; 8], [0; 8]);
        r.set_error("ES001", "wrong expected version");
        r.set_static(StaticAttr::DbSystem);
        r.set_static(StaticAttr::DbInsert);
        let d = span_data(&r, &scope()).unwrap();
        assert_eq!(d.status, Status::error("wrong expected version"));
        assert_eq!(
            attr(&d, "db.response.status_code"),
            Some(&Value::from("ES001"))
        );
        assert_eq!(attr(&d, "db.system"), Some(&Value::from("postgresql")));
        assert_eq!(attr(&d, "db.operation"), Some(&Value::from("INSERT")));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(6), Duration::from_millis(8_000));
        assert_eq!(backoff(60), Duration::from_millis(8_000));
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
