//! The typed Rust client of the `event_store` PostgreSQL extension, over sqlx.
//!
//! Its account types come from the bank-account example: the event-sourcing guide this store's
//! domain comes from (its events, account rules and storage traits; the repository's
//! `docs/glossary.md` calls it "the seed", hence the module [`seed`]). The crate is that guide's
//! storage layer (its `PostgresEventStore` and `PostgresSnapshotStore`) with the work moved into
//! the database, and a client for events of any type:
//!
//! - the bank-account example's traits [`EventStore`] and [`SnapshotStore`], with their exact
//!   signatures, implemented by [`EventStoreClient`] on `es.append_events`, `es.load_events`,
//!   `es.save_snapshot`, `es.load_snapshot` and `es.account_state`;
//! - the bank-account example's [`Account`] aggregate and [`DomainError`], (de)serialized as the
//!   store's state JSON; the bank-account example's events are [`seed::AccountEvent`] /
//!   [`seed::EventMetadata`] from `event_store_core`;
//! - the account commands decided inside the database in one round trip
//!   ([`EventStoreClient::open_account`], [`deposit`](EventStoreClient::deposit),
//!   [`withdraw`](EventStoreClient::withdraw), …), the audit reads and the global log
//!   ([`EventStoreClient::read_all`]);
//! - aggregates of any domain defined in the database (`es.define_aggregate`): the
//!   [`Aggregate`] trait over a serde event enum, and typed operations on streams of its type
//!   ([`EventStoreClient::append_to`], [`load`](EventStoreClient::load),
//!   [`state`](EventStoreClient::state), [`fold`](EventStoreClient::fold), …);
//! - one error enum, [`EventStoreError`], typed by the store's SQLSTATEs with the values of
//!   their DETAIL parsed: a stable contract (its table is on the enum and in the README); a
//!   domain's own refusals arrive as [`EventStoreError::Domain`]; the codes themselves are
//!   [`sqlstate`] (the core's constants);
//! - events of **any serde type** ([`EventStoreClient::append`], [`RecordedEvent::decode`],
//!   [`EventStoreClient::load_as`]) with an [`ExpectedVersion`], and every log call on **any
//!   sqlx executor** (`append_in`, `load_in`, `read_all_in`, `poll_in`, `ack_in`, …) so it joins
//!   the caller's transaction;
//! - the log and subscriptions as [`futures::Stream`]s ([`EventStoreClient::read_all_stream`],
//!   [`load_events_stream`](EventStoreClient::load_events_stream),
//!   [`subscription_stream`](EventStoreClient::subscription_stream)), and [`Consumer`], a
//!   cancel-safe helper that handles each event in the caller's transaction and acks it there;
//! - [`ClientOptions`]: a **pooler-safe** mode for pgbouncer in transaction mode (unnamed
//!   statements, each call not given the caller's transaction inside a short transaction of its
//!   own: [`PoolExecutor`], [`EventStoreClient::executor`]) and the page size; every call has a
//!   `tracing` span and sends the current W3C
//!   `traceparent` in a sqlcommenter comment (feature `opentelemetry`), so the server's spans
//!   join the application's trace.
//!
//! ```no_run
//! use event_store_client::{Account, EventStore, EventStoreClient, EventStoreError};
//!
//! # async fn demo() -> Result<(), EventStoreError> {
//! let store = EventStoreClient::connect("postgres://postgres@localhost/bank").await?;
//!
//! // The bank-account example's way: decide in the client, append with the version it read.
//! let mut account = Account::open("Alice".into(), 10_000).expect("valid");
//! let events = account.take_uncommitted_events();
//! store.append_events(account.id(), 0, events).await?;
//!
//! // Or one round trip, decided by the database.
//! match store.withdraw(account.id(), 50_000, "car", None).await {
//!     Err(EventStoreError::InsufficientFunds { available, requested, .. }) => {
//!         println!("only {available} of {requested} cents");
//!     }
//!     other => println!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod account;
pub mod aggregate;
pub mod client;
pub mod error;
pub mod executor;
pub mod expected;
pub mod options;
pub mod store;
pub mod subscription;
pub mod typed;

/// The bank-account example's event types, from `event_store_core` (the same serde definitions the
/// extension validates against). The module keeps the core's name for the example, "the seed".
pub mod seed {
    pub use event_store_core::seed::{AccountEvent, EventMetadata};
}

pub use account::{Account, AccountState, AccountStatus, DomainError};
pub use aggregate::Aggregate;
pub use client::{
    EventStoreClient, HistoryEntry, PostgresEventStore, PostgresSnapshotStore, RecordedEvent,
    RetentionPolicy,
};
pub use error::{EventStoreError, SnapshotError};
pub use event_store_core::sqlstate;
pub use executor::PoolExecutor;
pub use expected::ExpectedVersion;
pub use options::ClientOptions;
pub use seed::{AccountEvent, EventMetadata};
pub use store::{EventStore, SnapshotStore};
pub use subscription::{Consumer, HandlerFuture, Progress, SubscriptionSpec};
