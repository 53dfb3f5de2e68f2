//! The bank-account example's `Account` aggregate (the guide's `src/domain/aggregates/account.rs`):
//! rebuilt from its events ([`Account::from_events`]), commands that record new events
//! ([`Account::open`], [`Account::deposit`], [`Account::withdraw`], plus [`Account::freeze`] and
//! [`Account::close`]), and [`DomainError`].
//!
//! One addition to the bank-account example: the account (de)serializes as the store's state JSON,
//! `{"holder_name", "balance_cents", "status": "Active"|"Frozen"|"Closed", "version"}`, the shape
//! of `es.snapshots.state` and `es.account_state`, so a snapshot the store takes and one the
//! client saves are the same document. The id is not part of the state: it is the stream's id,
//! which the snapshot store sets ([`Account::from_state`]).

use crate::seed::AccountEvent;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The bank-account example's `AccountStatus`: the core crate's, the one the extension decides
/// with.
pub use event_store_core::account::AccountStatus;

/// An account's state: the bank-account example's `AccountState` plus the version it reflects,
/// exactly the store's state JSON (`es.account_state`, `es.snapshots.state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// The holder's name (from `Opened`).
    pub holder_name: String,
    /// Balance in integer cents.
    pub balance_cents: i64,
    /// Lifecycle status.
    pub status: AccountStatus,
    /// The stream version this state reflects (the number of events applied).
    pub version: i64,
}

/// The bank-account example's event-sourced bank account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The aggregate id (the stream id).
    id: Uuid,
    /// The state, with the version used for optimistic concurrency.
    state: AccountState,
    /// Events recorded by commands and not yet appended.
    uncommitted_events: Vec<AccountEvent>,
}

impl Account {
    /// Rebuilds an account from its history (the bank-account example's event replay): the id is
    /// the first event's `aggregate_id`, the version the last event's `sequence_number`.
    pub fn from_events(events: Vec<AccountEvent>) -> Result<Self, DomainError> {
        let Some(first) = events.first() else {
            return Err(DomainError::NoEvents);
        };
        let mut account = Self::blank(first.metadata().aggregate_id);
        for event in events {
            account.apply_event(&event);
            account.state.version = event.metadata().sequence_number;
        }
        Ok(account)
    }

    /// An account at a known state, e.g. a snapshot's (the state JSON has no id).
    pub fn from_state(id: Uuid, state: AccountState) -> Self {
        Self {
            id,
            state,
            uncommitted_events: Vec::new(),
        }
    }

    /// Opens a new account with a new random id (records `Opened` at version 1).
    pub fn open(account_holder: String, initial_balance_cents: i64) -> Result<Self, DomainError> {
        if initial_balance_cents < 0 {
            return Err(DomainError::NegativeInitialBalance);
        }
        let account_id = Uuid::new_v4();
        let event = AccountEvent::new_opened(account_id, 1, account_holder, initial_balance_cents);
        let mut account = Self::blank(account_id);
        account.apply_event(&event);
        account.uncommitted_events.push(event);
        account.state.version = 1;
        Ok(account)
    }

    /// Deposits `amount_cents` (> 0) into an active account (records `Deposited`).
    pub fn deposit(&mut self, amount_cents: i64, description: String) -> Result<(), DomainError> {
        if amount_cents <= 0 {
            return Err(DomainError::InvalidAmount);
        }
        self.require_active()?;
        let event =
            AccountEvent::new_deposited(self.id, self.next_sequence(), amount_cents, description);
        self.record(event);
        Ok(())
    }

    /// Withdraws `amount_cents` (> 0, at most the balance) from an active account (records
    /// `Withdrawn`).
    pub fn withdraw(&mut self, amount_cents: i64, description: String) -> Result<(), DomainError> {
        if amount_cents <= 0 {
            return Err(DomainError::InvalidAmount);
        }
        self.require_active()?;
        if self.state.balance_cents < amount_cents {
            return Err(DomainError::InsufficientBalance {
                available: self.state.balance_cents,
                requested: amount_cents,
            });
        }
        let event =
            AccountEvent::new_withdrawn(self.id, self.next_sequence(), amount_cents, description);
        self.record(event);
        Ok(())
    }

    /// Freezes an active account (records `Frozen`); the store's rule for `es.freeze_account`.
    pub fn freeze(&mut self, reason: String) -> Result<(), DomainError> {
        self.require_active()?;
        let event = AccountEvent::new_frozen(self.id, self.next_sequence(), reason);
        self.record(event);
        Ok(())
    }

    /// Closes an account that is not closed yet (records `Closed`); the store's rule for
    /// `es.close_account`.
    pub fn close(&mut self, reason: String) -> Result<(), DomainError> {
        if self.state.status == AccountStatus::Closed {
            return Err(DomainError::AccountNotActive);
        }
        let event = AccountEvent::new_closed(self.id, self.next_sequence(), reason);
        self.record(event);
        Ok(())
    }

    /// Takes the events recorded since the last call (to append them).
    pub fn take_uncommitted_events(&mut self) -> Vec<AccountEvent> {
        std::mem::take(&mut self.uncommitted_events)
    }

    /// The aggregate id (the stream id).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The version: the sequence number of the last event applied or recorded.
    pub fn version(&self) -> i64 {
        self.state.version
    }

    /// The balance in cents.
    pub fn balance(&self) -> i64 {
        self.state.balance_cents
    }

    /// The status.
    pub fn status(&self) -> &AccountStatus {
        &self.state.status
    }

    /// The holder's name.
    pub fn holder_name(&self) -> &str {
        &self.state.holder_name
    }

    /// The whole state, as the store's state JSON has it.
    pub fn state(&self) -> &AccountState {
        &self.state
    }

    /// An account before its first event.
    fn blank(id: Uuid) -> Self {
        Self::from_state(
            id,
            AccountState {
                holder_name: String::new(),
                balance_cents: 0,
                status: AccountStatus::Active,
                version: 0,
            },
        )
    }

    fn require_active(&self) -> Result<(), DomainError> {
        if self.state.status == AccountStatus::Active {
            Ok(())
        } else {
            Err(DomainError::AccountNotActive)
        }
    }

    fn next_sequence(&self) -> i64 {
        self.state.version + 1
    }

    fn record(&mut self, event: AccountEvent) {
        self.apply_event(&event);
        self.state.version = event.metadata().sequence_number;
        self.uncommitted_events.push(event);
    }

    /// The bank-account example's transition function.
    fn apply_event(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened {
                account_holder,
                initial_balance_cents,
                ..
            } => {
                self.state.holder_name = account_holder.clone();
                self.state.balance_cents = *initial_balance_cents;
                self.state.status = AccountStatus::Active;
            }
            AccountEvent::Deposited { amount_cents, .. } => {
                self.state.balance_cents += amount_cents;
            }
            AccountEvent::Withdrawn { amount_cents, .. } => {
                self.state.balance_cents -= amount_cents;
            }
            AccountEvent::Frozen { .. } => self.state.status = AccountStatus::Frozen,
            AccountEvent::Closed { .. } => self.state.status = AccountStatus::Closed,
        }
    }
}

/// Serializes the state JSON of the store (`{"holder_name", "balance_cents", "status",
/// "version"}`); the id and the uncommitted events are not part of it.
impl Serialize for Account {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.state.serialize(serializer)
    }
}

/// Reads the store's state JSON. The id is nil: the JSON has none; [`Account::from_state`]
/// sets it (the snapshot store does).
impl<'de> Deserialize<'de> for Account {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        AccountState::deserialize(deserializer).map(|state| Self::from_state(Uuid::nil(), state))
    }
}

/// The bank-account example's domain errors: a command refused by the account's rules on the client
/// side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// `from_events` of an empty history.
    #[error("no events to rebuild the aggregate from")]
    NoEvents,
    /// `open` with a negative opening balance.
    #[error("the initial balance must not be negative")]
    NegativeInitialBalance,
    /// An amount that is not positive.
    #[error("invalid amount")]
    InvalidAmount,
    /// A command the account's status does not allow.
    #[error("the account is not active")]
    AccountNotActive,
    /// A withdrawal larger than the balance.
    #[error("insufficient balance: available {available}, requested {requested}")]
    InsufficientBalance {
        /// The balance.
        available: i64,
        /// The amount asked for.
        requested: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_record_events_and_replay_gives_the_same_account() {
        let mut account = Account::open("Alice".into(), 100).unwrap();
        account.deposit(50, "salary".into()).unwrap();
        account.withdraw(30, "rent".into()).unwrap();
        assert_eq!(
            account.withdraw(500, "car".into()),
            Err(DomainError::InsufficientBalance {
                available: 120,
                requested: 500
            })
        );
        assert_eq!(
            account.deposit(0, "".into()),
            Err(DomainError::InvalidAmount)
        );
        account.freeze("audit".into()).unwrap();
        assert_eq!(
            account.deposit(1, "".into()),
            Err(DomainError::AccountNotActive)
        );
        account.close("moved".into()).unwrap();
        assert_eq!(
            account.close("again".into()),
            Err(DomainError::AccountNotActive)
        );
        let events = account.take_uncommitted_events();
        assert_eq!(events.len(), 5);
        assert!(account.take_uncommitted_events().is_empty());
        let replayed = Account::from_events(events).unwrap();
        assert_eq!(replayed, account);
        assert_eq!(
            (replayed.version(), replayed.balance(), *replayed.status()),
            (5, 120, AccountStatus::Closed)
        );
        assert_eq!(Account::from_events(vec![]), Err(DomainError::NoEvents));
        assert_eq!(
            Account::open("x".into(), -1),
            Err(DomainError::NegativeInitialBalance)
        );
    }

    #[test]
    fn serializes_as_the_stores_state_json() {
        let mut account = Account::open("Alice".into(), 100).unwrap();
        account.deposit(50, "salary".into()).unwrap();
        let json = serde_json::to_value(&account).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "holder_name": "Alice", "balance_cents": 150, "status": "Active", "version": 2
            })
        );
        let back: Account = serde_json::from_value(json).unwrap();
        assert_eq!(back.id(), Uuid::nil());
        assert_eq!(back.state(), account.state());
        let frozen: AccountState = serde_json::from_str(
            r#"{"status": "Frozen", "version": 3, "holder_name": "A", "balance_cents": 1}"#,
        )
        .unwrap();
        assert_eq!(frozen.status, AccountStatus::Frozen);
    }
}
