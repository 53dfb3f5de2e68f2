//! The seed's event types, as serde definitions: [`AccountEvent`] with `#[serde(tag = "type")]`
//! and its flattened [`EventMetadata`], exactly as the guide declares them. This is the JSON the
//! seed's client writes with `serde_json::to_value` and reads back with
//! `serde_json::from_value::<AccountEvent>`; the store accepts it unchanged (docs/reference.md §2) and folds
//! it with the same transition as everything else ([`AccountEvent::fact`]).

use crate::account::Event;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The metadata the seed flattens into every event object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The aggregate (stream) the event belongs to.
    pub aggregate_id: Uuid,
    /// The event's version in its stream, from 1.
    pub sequence_number: i64,
    /// The seed's event type name (`AccountOpened`, `MoneyDeposited`, …).
    pub event_type: String,
    /// When the event happened.
    pub occurred_at: DateTime<Utc>,
    /// Schema version of the payload.
    pub event_version: i32,
}

/// The seed's account events; the variant is the object's `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AccountEvent {
    /// The account was opened.
    Opened {
        /// The event's metadata.
        #[serde(flatten)]
        metadata: EventMetadata,
        /// The holder's name.
        account_holder: String,
        /// Opening balance in cents, ≥ 0.
        initial_balance_cents: i64,
    },
    /// Money was deposited.
    Deposited {
        /// The event's metadata.
        #[serde(flatten)]
        metadata: EventMetadata,
        /// Amount in cents, > 0.
        amount_cents: i64,
        /// What the deposit is for.
        description: String,
    },
    /// Money was withdrawn.
    Withdrawn {
        /// The event's metadata.
        #[serde(flatten)]
        metadata: EventMetadata,
        /// Amount in cents, > 0.
        amount_cents: i64,
        /// What the withdrawal is for.
        description: String,
    },
    /// The account was frozen.
    Frozen {
        /// The event's metadata.
        #[serde(flatten)]
        metadata: EventMetadata,
        /// Why.
        reason: String,
    },
    /// The account was closed.
    Closed {
        /// The event's metadata.
        #[serde(flatten)]
        metadata: EventMetadata,
        /// Why.
        reason: String,
    },
}

impl AccountEvent {
    /// The event's metadata.
    pub fn metadata(&self) -> &EventMetadata {
        match self {
            Self::Opened { metadata, .. }
            | Self::Deposited { metadata, .. }
            | Self::Withdrawn { metadata, .. }
            | Self::Frozen { metadata, .. }
            | Self::Closed { metadata, .. } => metadata,
        }
    }

    /// The fact the account fold applies ([`crate::account::AccountState::apply`]).
    pub fn fact(&self) -> Event<'_> {
        match self {
            Self::Opened {
                account_holder,
                initial_balance_cents,
                ..
            } => Event::Opened {
                account_holder,
                initial_balance_cents: *initial_balance_cents,
            },
            Self::Deposited { amount_cents, .. } => Event::Deposited {
                amount_cents: *amount_cents,
            },
            Self::Withdrawn { amount_cents, .. } => Event::Withdrawn {
                amount_cents: *amount_cents,
            },
            Self::Frozen { .. } => Event::Frozen,
            Self::Closed { .. } => Event::Closed,
        }
    }

    /// The seed's factory of an `Opened` event (`event_type` `AccountOpened`), with a new
    /// random event id and the current time.
    pub fn new_opened(
        aggregate_id: Uuid,
        sequence: i64,
        account_holder: String,
        initial_balance_cents: i64,
    ) -> Self {
        Self::Opened {
            metadata: EventMetadata::new(aggregate_id, sequence, "AccountOpened"),
            account_holder,
            initial_balance_cents,
        }
    }

    /// The seed's factory of a `Deposited` event (`event_type` `MoneyDeposited`).
    pub fn new_deposited(
        aggregate_id: Uuid,
        sequence: i64,
        amount_cents: i64,
        description: String,
    ) -> Self {
        Self::Deposited {
            metadata: EventMetadata::new(aggregate_id, sequence, "MoneyDeposited"),
            amount_cents,
            description,
        }
    }

    /// The seed's factory of a `Withdrawn` event (`event_type` `MoneyWithdrawn`).
    pub fn new_withdrawn(
        aggregate_id: Uuid,
        sequence: i64,
        amount_cents: i64,
        description: String,
    ) -> Self {
        Self::Withdrawn {
            metadata: EventMetadata::new(aggregate_id, sequence, "MoneyWithdrawn"),
            amount_cents,
            description,
        }
    }

    /// A `Frozen` event (`event_type` `AccountFrozen`), built like the seed's factories.
    pub fn new_frozen(aggregate_id: Uuid, sequence: i64, reason: String) -> Self {
        Self::Frozen {
            metadata: EventMetadata::new(aggregate_id, sequence, "AccountFrozen"),
            reason,
        }
    }

    /// A `Closed` event (`event_type` `AccountClosed`), built like the seed's factories.
    pub fn new_closed(aggregate_id: Uuid, sequence: i64, reason: String) -> Self {
        Self::Closed {
            metadata: EventMetadata::new(aggregate_id, sequence, "AccountClosed"),
            reason,
        }
    }
}

impl EventMetadata {
    /// The metadata the seed's factories build: a new random (v4) event id, the current time,
    /// event version 1.
    fn new(aggregate_id: Uuid, sequence_number: i64, event_type: &str) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            aggregate_id,
            sequence_number,
            event_type: event_type.to_owned(),
            occurred_at: Utc::now(),
            event_version: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{AccountState, AccountStatus};
    use crate::event::tests::raw_from_json;
    use crate::event::validate_event;

    fn meta(seq: i64, event_type: &str, id: Uuid) -> EventMetadata {
        EventMetadata {
            event_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + seq as u128),
            aggregate_id: id,
            sequence_number: seq,
            event_type: event_type.into(),
            occurred_at: DateTime::parse_from_rfc3339("2025-10-11T08:30:00Z")
                .unwrap()
                .with_timezone(&Utc),
            event_version: 1,
        }
    }

    /// The seed's own JSON: the type tag, the flattened metadata, the payload.
    #[test]
    fn the_seeds_json_round_trips() {
        let id = Uuid::from_u128(7);
        let e = AccountEvent::Deposited {
            metadata: meta(2, "MoneyDeposited", id),
            amount_cents: 500,
            description: "salary".into(),
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "Deposited");
        assert_eq!(json["event_type"], "MoneyDeposited");
        assert_eq!(json["sequence_number"], 2);
        assert_eq!(json["amount_cents"], 500);
        assert_eq!(json["aggregate_id"], id.to_string());
        assert_eq!(serde_json::from_value::<AccountEvent>(json).unwrap(), e);
    }

    /// What the seed's client writes is a valid event for the store, and folds like any other.
    #[test]
    fn seed_events_validate_and_fold() {
        let id = Uuid::from_u128(9);
        let events = [
            AccountEvent::Opened {
                metadata: meta(1, "AccountOpened", id),
                account_holder: "Alice".into(),
                initial_balance_cents: 0,
            },
            AccountEvent::Deposited {
                metadata: meta(2, "MoneyDeposited", id),
                amount_cents: 500,
                description: "salary".into(),
            },
            AccountEvent::Withdrawn {
                metadata: meta(3, "MoneyWithdrawn", id),
                amount_cents: 200,
                description: "rent".into(),
            },
            AccountEvent::Frozen {
                metadata: meta(4, "AccountFrozen", id),
                reason: "audit".into(),
            },
        ];
        let mut state = AccountState::default();
        for (i, e) in events.iter().enumerate() {
            let json = serde_json::to_value(e).unwrap();
            let meta = validate_event(i + 1, &raw_from_json(&json), &id).unwrap();
            assert_eq!(meta.sequence_number, Some(i as i64 + 1));
            assert_eq!(meta.event_id, Some(e.metadata().event_id));
            state.apply(&e.fact()).unwrap();
        }
        assert_eq!(state.holder_name, "Alice");
        assert_eq!(state.balance_cents, 300);
        assert_eq!(state.status, AccountStatus::Frozen);
        assert_eq!(state.version, 4);
    }

    /// The factories name the seed's event types and validate as the store's events.
    #[test]
    fn factories_build_the_seeds_events() {
        let id = Uuid::from_u128(11);
        let events = [
            AccountEvent::new_opened(id, 1, "Alice".into(), 100),
            AccountEvent::new_deposited(id, 2, 50, "salary".into()),
            AccountEvent::new_withdrawn(id, 3, 20, "rent".into()),
            AccountEvent::new_frozen(id, 4, "audit".into()),
            AccountEvent::new_closed(id, 5, "moved".into()),
        ];
        let types = [
            "AccountOpened",
            "MoneyDeposited",
            "MoneyWithdrawn",
            "AccountFrozen",
            "AccountClosed",
        ];
        for (i, (e, t)) in events.iter().zip(types).enumerate() {
            let m = e.metadata();
            assert_eq!((m.aggregate_id, m.sequence_number), (id, i as i64 + 1));
            assert_eq!((m.event_type.as_str(), m.event_version), (t, 1));
            let json = serde_json::to_value(e).unwrap();
            validate_event(i + 1, &raw_from_json(&json), &id).unwrap();
        }
        assert_ne!(events[0].metadata().event_id, events[1].metadata().event_id);
    }
}
