//! The typed Rust client of the `event_store` PostgreSQL extension, over sqlx.
//!
//! It is the seed guide's storage layer (its `PostgresEventStore` and `PostgresSnapshotStore`)
//! with the work moved into the database:
//!
//! - the seed's traits [`EventStore`] and [`SnapshotStore`], with their exact signatures,
//!   implemented by [`EventStoreClient`] on `es.append_events`, `es.load_events`,
//!   `es.save_snapshot`, `es.load_snapshot` and `es.account_state`;
//! - the seed's [`Account`] aggregate and [`DomainError`], (de)serialized as the store's state
//!   JSON; the seed's events are [`seed::AccountEvent`] / [`seed::EventMetadata`] from
//!   `event_store_core`;
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
//!   domain's own refusals arrive as [`EventStoreError::Domain`].
//!
//! ```no_run
//! use event_store_client::{Account, EventStore, EventStoreClient, EventStoreError};
//!
//! # async fn demo() -> Result<(), EventStoreError> {
//! let store = EventStoreClient::connect("postgres://postgres@localhost/bank").await?;
//!
//! // The seed's way: decide in the client, append with the version it read.
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

pub mod account;
pub mod aggregate;
pub mod client;
pub mod error;
pub mod store;

/// The seed's event types, from `event_store_core` (the same serde definitions the extension
/// validates against).
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
pub use seed::{AccountEvent, EventMetadata};
pub use store::{EventStore, SnapshotStore};
