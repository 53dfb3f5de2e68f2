//! The pure core of event_store: every decision the store makes, as plain Rust that never touches
//! PostgreSQL, so it is tested with `cargo test -p event_store_core` on any machine and shared by
//! the extension and a Rust client.
//!
//! - [`seed`]: the seed's event types as serde definitions ([`seed::AccountEvent`] with its
//!   flattened [`seed::EventMetadata`]), exactly the JSON the seed's client reads and writes;
//! - [`event`]: what the store reads from an appended event object and the rules it must follow;
//! - [`expected`]: the expected-version modes and the classification of idempotent retries;
//! - [`account`]: the bank account of the seed: its state, the one fold every read uses, and the
//!   rules every write path checks;
//! - [`lifecycle`]: the deletion, undeletion and truncation of a stream, and its reserved marker
//!   event types;
//! - [`shape`]: the seed's whole event shape for the events the account commands write;
//! - [`personal`]: personal-data paths, sealing a value with its subject's key (AES-256-GCM) and
//!   revealing or erasing it on read (crypto-shredding);
//! - [`proxy`]: a shard's error as a PL/Proxy proxy's client sees it (PL/Proxy's decoration off);
//! - [`subscription`]: the partition of a stream, and the rules of subscriptions (leases, attempts);
//! - [`error`]: the one error enum, with the SQLSTATE, message, DETAIL and HINT of each failure;
//!   [`sqlstate`]: the SQLSTATE constants themselves, which a client matches on.

pub mod account;
pub mod error;
pub mod event;
pub mod expected;
pub mod lifecycle;
pub mod personal;
pub mod proxy;
pub mod seed;
pub mod shape;
pub mod subscription;

pub use error::{EventStoreError, RaisedError, sqlstate};
pub use event::{ACCOUNT_STREAM_TYPE, EventMeta, JsonField, NumberText, RawEvent};
pub use expected::{ExpectedVersion, RetryDecision};
