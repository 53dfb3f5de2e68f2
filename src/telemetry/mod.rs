//! The pure model of the store's tracing (docs/reference.md §7), tested without PostgreSQL: what a span
//! becomes ([`record`]), the client's trace context and new ids ([`context`]), the lock-free
//! ring the records cross to the export worker in ([`ring`]), the `tracing` subscriber that
//! makes records of the spans the code declares ([`subscriber`]), and the mapping of records to
//! OpenTelemetry spans ([`otlp`]). The PostgreSQL side (the backend's host, shared memory, the
//! export worker) is `crate::trace`.

pub mod context;
pub mod otlp;
pub mod record;
pub mod ring;
pub mod subscriber;
