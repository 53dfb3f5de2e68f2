//! The span model of event_store's tracing (docs/reference.md §7), pure Rust without PostgreSQL or
//! pgrx, tested with plain `cargo test -p event_store_telemetry`: what a span becomes
//! ([`record`]), the client's trace context and new ids ([`context`]), the lock-free ring the
//! records cross to the export worker in ([`ring`]), the `tracing` subscriber that makes records
//! of the spans the code declares ([`subscriber`]), and the mapping of records to OpenTelemetry
//! spans ([`otlp`]).
//!
//! The PostgreSQL side is in the extension: the backend's [`subscriber::Host`] and the ring's
//! shared-memory segment in its `trace` module, the export worker in its `workers` module.

pub mod context;
pub mod otlp;
pub mod record;
pub mod ring;
pub mod subscriber;
