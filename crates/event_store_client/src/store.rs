//! The bank-account example's two storage traits (the guide's `src/event_store/postgres_store.rs`
//! and `snapshots.rs`), with its exact signatures, so code written against them (the bank-account
//! example's `DepositHandler` holds `Arc<dyn EventStore>` and `Arc<dyn SnapshotStore>`) runs
//! unchanged over [`crate::EventStoreClient`], or over a test double.

use crate::account::Account;
use crate::error::{EventStoreError, SnapshotError};
use crate::seed::AccountEvent;
use async_trait::async_trait;
use uuid::Uuid;

/// The bank-account example's event store: an append-only log of account events per aggregate.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends `events` to the aggregate's stream atomically, if the stream is at
    /// `expected_version` (`0`: the stream must not exist yet); else
    /// [`EventStoreError::ConcurrencyConflict`].
    async fn append_events(
        &self,
        aggregate_id: Uuid,
        expected_version: i64,
        events: Vec<AccountEvent>,
    ) -> Result<(), EventStoreError>;

    /// All events of the aggregate, in version order.
    async fn load_events(&self, aggregate_id: Uuid) -> Result<Vec<AccountEvent>, EventStoreError>;

    /// The aggregate's events after `from_version`, in version order.
    async fn load_events_from_version(
        &self,
        aggregate_id: Uuid,
        from_version: i64,
    ) -> Result<Vec<AccountEvent>, EventStoreError>;
}

/// The bank-account example's snapshot store.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Saves the aggregate's state at `version`.
    async fn save_snapshot(
        &self,
        aggregate_id: Uuid,
        version: i64,
        state: &Account,
    ) -> Result<(), SnapshotError>;

    /// The aggregate's latest snapshot and its version, `None` when there is none. (What
    /// "latest" means for [`crate::EventStoreClient`] is documented on its implementation.)
    async fn load_snapshot(
        &self,
        aggregate_id: Uuid,
    ) -> Result<Option<(Account, i64)>, SnapshotError>;
}
