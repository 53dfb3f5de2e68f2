//! The pure core of the event store: every decision the store makes (argument rules, event
//! validation, expected-version checks, idempotent retries) as plain Rust.
//!
//! Nothing below this module imports pgrx or touches PostgreSQL, so all of it is tested with plain
//! `#[test]`s; the SQL-facing layer (`crate::api`) only converts arguments, calls in here, runs
//! the statements of `crate::storage` and raises the errors of [`error::EventStoreError`].

pub mod account;
pub mod append;
pub mod error;
pub mod event;
pub mod otlp;
pub mod spans;
pub mod trace;

pub use append::{ExpectedVersion, RetryDecision};
pub use error::EventStoreError;
pub use event::{ACCOUNT_STREAM_TYPE, EventMeta, JsonField, RawEvent};
