//! Aggregates of any domain: the [`Aggregate`] trait over a serde event enum, and the typed
//! operations of [`EventStoreClient`] on streams of that aggregate's type.
//!
//! The domain lives in the database: `es.define_aggregate(stream_type, evolve, initial_state,
//! check)` names a fold (`evolve(state, event) -> state`) and the rules (`check(state, event)`,
//! which raises to refuse), and the store runs them on every append to a stream of that type,
//! under the stream's lock, so no writer can store an event the rules refuse, whatever it
//! believed. This module is the Rust side of such a type:
//!
//! - [`Aggregate`] names the stream type and the Rust types of its events and state, and folds
//!   an event into the state the same way the database's `evolve` does (so a client can decide
//!   from a state it folded itself, and a test can assert both folds agree);
//! - [`EventStoreClient::append_to`] appends typed events to a stream of that type
//!   (`es.append_events` with the type named), [`load`](EventStoreClient::load) reads them back
//!   (upcast by the store to their current version), [`state`](EventStoreClient::state) /
//!   [`state_at`](EventStoreClient::state_at) / [`state_as_of`](EventStoreClient::state_as_of)
//!   read the state the database folded (`es.state`), [`fold`](EventStoreClient::fold) folds
//!   the loaded events in the client.
//!
//! A refusal of the domain's `check` arrives as [`EventStoreError::Domain`] with its SQLSTATE,
//! message, DETAIL and HINT, unchanged.
//!
//! ```
//! use event_store_client::Aggregate;
//! use serde::{Deserialize, Serialize};
//!
//! /// The domain's events: the variant is the JSON object's `"type"`.
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! #[serde(tag = "type")]
//! enum CounterEvent {
//!     Incremented { by: i64 },
//!     Reset,
//! }
//!
//! /// The state JSON the database's evolve keeps: `{"count": n}`.
//! #[derive(Debug, Clone, PartialEq, Deserialize)]
//! struct CounterState {
//!     count: i64,
//! }
//!
//! /// The aggregate: a marker type naming the stream type and the two types above.
//! struct Counter;
//!
//! impl Aggregate for Counter {
//!     const STREAM_TYPE: &'static str = "counter";
//!     type Event = CounterEvent;
//!     type State = CounterState;
//!
//!     fn initial() -> CounterState {
//!         CounterState { count: 0 }
//!     }
//!
//!     fn apply(state: &mut CounterState, event: &CounterEvent) {
//!         match event {
//!             CounterEvent::Incremented { by } => state.count += by,
//!             CounterEvent::Reset => state.count = 0,
//!         }
//!     }
//! }
//!
//! let events = [CounterEvent::Incremented { by: 2 }, CounterEvent::Incremented { by: 3 }];
//! assert_eq!(Counter::fold(&events).count, 5);
//! ```
//!
//! With a client: `client.append_to::<Counter>(id, Some(0), &events).await?` appends to a new
//! counter stream, `client.state::<Counter>(id).await?` is the database's fold.

use crate::client::EventStoreClient;
use crate::error::EventStoreError;
use crate::expected::ExpectedVersion;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{Executor, Postgres};
use uuid::Uuid;

/// An aggregate type of the store: the stream type a database defined with
/// `es.define_aggregate`, the Rust types of its events and state, and its fold.
///
/// Shaped after cqrs-es's `Aggregate::apply`, with one difference: the rules are not here. The
/// store enforces them in the database (the type's `check` function) on every append, whoever
/// writes; a client that wants to decide before it writes folds the state with [`apply`] and
/// still gets the database's verdict on append.
///
/// The implementor is usually a marker type (`struct Cart;`): the state is [`State`], and the
/// stream id is the aggregate's identity.
///
/// [`apply`]: Aggregate::apply
/// [`State`]: Aggregate::State
pub trait Aggregate {
    /// The stream type: the first argument of `es.define_aggregate`, which
    /// [`EventStoreClient::append_to`] names on every append (a stream keeps the type of its
    /// first append; another type later is [`EventStoreError::StreamTypeConflict`]).
    const STREAM_TYPE: &'static str;

    /// The events: a serde enum with `#[serde(tag = "type")]`, so each serializes to the JSON
    /// object the store keeps, its variant name in `"type"` (the event type the database's
    /// `evolve` and `check` match on). Decoding must accept keys the enum does not name (serde's
    /// default; not `deny_unknown_fields`): the stored object also carries `"event_version"`
    /// when [`event_version`](Aggregate::event_version) is above 1. `Send + Sync` so that the
    /// client's futures are `Send`.
    type Event: Serialize + DeserializeOwned + Send + Sync;

    /// The state: what the database's `evolve` returns, decoded from JSON (`es.state`). Keys
    /// the initial state lacks and `evolve` adds later need `#[serde(default)]`.
    type State: DeserializeOwned + Send;

    /// The state before the first event: the `initial_state` given to `es.define_aggregate`,
    /// as this type.
    fn initial() -> Self::State;

    /// Folds one event into the state: the Rust twin of the database's `evolve`. Never fails
    /// (as `evolve` never refuses: the event was checked before it was stored); an event it
    /// cannot use leaves the state as it is.
    fn apply(state: &mut Self::State, event: &Self::Event);

    /// The schema version of an event's payload, stored as its `"event_version"` (the store's
    /// default is 1). Return the current version of each event type whose payload changed, and
    /// define an upcaster in the database (`es.define_upcaster(event_type, from_version,
    /// function)`) from each older one: stored events are never rewritten, the store upcasts
    /// them on every read, so [`EventStoreClient::load`] decodes current versions only.
    fn event_version(event: &Self::Event) -> i32 {
        let _ = event;
        1
    }

    /// Folds `events` from [`initial`](Aggregate::initial), in order.
    fn fold<'e>(events: impl IntoIterator<Item = &'e Self::Event>) -> Self::State
    where
        Self::Event: 'e,
    {
        let mut state = Self::initial();
        for event in events {
            Self::apply(&mut state, event);
        }
        state
    }
}

/// The JSON object an event of `A` is stored as: its serde form, with `"event_version"` set when
/// the aggregate says it is above the store's default of 1.
pub fn event_json<A: Aggregate>(event: &A::Event) -> Result<Value, EventStoreError> {
    let mut value = serde_json::to_value(event)?;
    let Value::Object(object) = &mut value else {
        return Err(EventStoreError::Serialization(format!(
            "an event of aggregate {} must serialize to a JSON object (a serde enum with \
             tag = \"type\"), got {value}",
            A::STREAM_TYPE
        )));
    };
    let version = A::event_version(event);
    if version != 1 {
        object.insert("event_version".into(), version.into());
    }
    Ok(value)
}

/// Decodes a stored event object (`es.load_events`'s `data`) as an event of `A`.
fn decode_event<A: Aggregate>(
    stream_id: Uuid,
    version: i64,
    data: Value,
) -> Result<A::Event, EventStoreError> {
    serde_json::from_value(data).map_err(|e| {
        EventStoreError::Serialization(format!(
            "event at version {version} of stream {stream_id} is not an event of aggregate {}: \
             {e}",
            A::STREAM_TYPE
        ))
    })
}

/// Decodes a state JSON of the database as `A`'s state.
fn decode_state<A: Aggregate>(stream_id: Uuid, state: Value) -> Result<A::State, EventStoreError> {
    serde_json::from_value(state.clone()).map_err(|e| {
        EventStoreError::Serialization(format!(
            "the state of stream {stream_id} is not a state of aggregate {}: {state}: {e}",
            A::STREAM_TYPE
        ))
    })
}

impl EventStoreClient {
    /// Appends `events` to stream `stream_id` of aggregate `A` (`es.append_events` with
    /// `stream_type = A::STREAM_TYPE`), atomically; returns the stream's new version.
    ///
    /// `expected_version`: `None` appends whatever the version (the type's `check` still judges
    /// each event against the current state, under the stream's lock), `Some(0)` the stream must
    /// not exist, `Some(-1)` it must exist, `Some(n)` it must be at `n` (else
    /// [`EventStoreError::ConcurrencyConflict`]). A refusal of the type's rules is
    /// [`EventStoreError::Domain`] (its SQLSTATE, message, DETAIL, HINT) and stores nothing of
    /// the batch; a stream of another type is [`EventStoreError::StreamTypeConflict`].
    /// `expected_version` also takes an [`ExpectedVersion`] (`Option<i64>` converts into it).
    /// Its span is [`append_to_in`](Self::append_to_in)'s.
    pub async fn append_to<A: Aggregate>(
        &self,
        stream_id: Uuid,
        expected_version: impl Into<ExpectedVersion> + std::fmt::Debug,
        events: &[A::Event],
    ) -> Result<i64, EventStoreError> {
        self.append_to_in::<A, _>(self.executor(), stream_id, expected_version, events)
            .await
    }

    /// [`append_to`](Self::append_to) on any sqlx executor: `&mut *tx` appends inside the
    /// caller's transaction.
    ///
    /// ```no_run
    /// # use event_store_client::{Aggregate, EventStoreClient, ExpectedVersion};
    /// # async fn demo<A: Aggregate>(store: EventStoreClient, id: uuid::Uuid, events: Vec<A::Event>)
    /// # -> Result<(), event_store_client::EventStoreError> {
    /// let mut tx = store.pool().begin().await?;
    /// store.append_to_in::<A, _>(&mut *tx, id, ExpectedVersion::NoStream, &events).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(name = "event_store_client.append_to", skip(self, executor, events), fields(stream_type = A::STREAM_TYPE, events = events.len()), err)]
    pub async fn append_to_in<'c, A: Aggregate, X>(
        &self,
        executor: X,
        stream_id: Uuid,
        expected_version: impl Into<ExpectedVersion> + std::fmt::Debug,
        events: &[A::Event],
    ) -> Result<i64, EventStoreError>
    where
        X: Executor<'c, Database = Postgres>,
    {
        let events = events
            .iter()
            .map(event_json::<A>)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .sql("SELECT es.append_events($1, $2, $3, $4)")
            .scalar()
            .bind(stream_id)
            .bind(expected_version.into().as_sql())
            .bind(events)
            .bind(A::STREAM_TYPE)
            .fetch_one(executor)
            .await?)
    }

    /// The stream's events in version order (`es.load_events`), upcast by the store to their
    /// current version and decoded as `A`'s events; empty when the stream does not exist. An
    /// event that does not decode is [`EventStoreError::Serialization`] naming its version.
    #[tracing::instrument(name = "event_store_client.load", skip(self), err)]
    pub async fn load<A: Aggregate>(
        &self,
        stream_id: Uuid,
    ) -> Result<Vec<A::Event>, EventStoreError> {
        Ok(self
            .load_versioned::<A>(stream_id)
            .await?
            .into_iter()
            .map(|(_, event)| event)
            .collect())
    }

    /// The stream's events folded in the client ([`Aggregate::fold`] of [`load`](Self::load)),
    /// with the version the state is at (0: no stream), the one to pass as `expected_version`
    /// when appending what was decided from this state.
    #[tracing::instrument(name = "event_store_client.fold", skip(self), err)]
    pub async fn fold<A: Aggregate>(
        &self,
        stream_id: Uuid,
    ) -> Result<(A::State, i64), EventStoreError> {
        let events = self.load_versioned::<A>(stream_id).await?;
        let version = events.last().map_or(0, |(version, _)| *version);
        Ok((A::fold(events.iter().map(|(_, event)| event)), version))
    }

    /// The stream's current state as the database folds it (`es.state`: the state the stream
    /// row keeps, or the newest snapshot of the type's current definition folded forward by its
    /// `evolve`), decoded as `A::State`. A stream that does not exist is
    /// [`EventStoreError::StreamNotFound`], one without an aggregate type (a generic stream)
    /// [`EventStoreError::NoAggregateType`].
    #[tracing::instrument(name = "event_store_client.state", skip(self), err)]
    pub async fn state<A: Aggregate>(&self, stream_id: Uuid) -> Result<A::State, EventStoreError> {
        let state: Value = self
            .sql("SELECT es.state($1)")
            .scalar()
            .bind(stream_id)
            .fetch_one(self.executor())
            .await?;
        decode_state::<A>(stream_id, state)
    }

    /// The state after the event at `at_version` (`es.state(stream_id, at_version)`): time
    /// travel by version. A version outside 1..current is
    /// [`EventStoreError::InvalidArgument`].
    #[tracing::instrument(name = "event_store_client.state_at", skip(self), err)]
    pub async fn state_at<A: Aggregate>(
        &self,
        stream_id: Uuid,
        at_version: i64,
    ) -> Result<A::State, EventStoreError> {
        let state: Value = self
            .sql("SELECT es.state($1, at_version => $2)")
            .scalar()
            .bind(stream_id)
            .bind(at_version)
            .fetch_one(self.executor())
            .await?;
        decode_state::<A>(stream_id, state)
    }

    /// The state as of a time: after the events recorded at or before `as_of`
    /// (`es.state(stream_id, as_of => as_of)`); `None` when the stream had no event yet then.
    #[tracing::instrument(name = "event_store_client.state_as_of", skip(self), err)]
    pub async fn state_as_of<A: Aggregate>(
        &self,
        stream_id: Uuid,
        as_of: DateTime<Utc>,
    ) -> Result<Option<A::State>, EventStoreError> {
        let state: Option<Value> = self
            .sql("SELECT es.state($1, as_of => $2)")
            .scalar()
            .bind(stream_id)
            .bind(as_of)
            .fetch_one(self.executor())
            .await?;
        state
            .map(|state| decode_state::<A>(stream_id, state))
            .transpose()
    }

    /// The stream's events with their versions, decoded as `A`'s.
    async fn load_versioned<A: Aggregate>(
        &self,
        stream_id: Uuid,
    ) -> Result<Vec<(i64, A::Event)>, EventStoreError> {
        let rows: Vec<(i64, Value)> = self
            .sql("SELECT version, data FROM es.load_events($1) ORDER BY version")
            .query_as()
            .bind(stream_id)
            .fetch_all(self.executor())
            .await?;
        rows.into_iter()
            .map(|(version, data)| Ok((version, decode_event::<A>(stream_id, version, data)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// A small cart (its state is simpler than examples/cart.sql's): enough to test the
    /// trait's JSON.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum CartEvent {
        CartOpened {
            customer: String,
        },
        ItemAdded {
            sku: String,
            quantity: i64,
            unit_price_cents: i64,
        },
        ItemRemoved {
            sku: String,
        },
        CheckedOut,
    }

    #[derive(Debug, Clone, PartialEq, Deserialize)]
    struct CartState {
        #[serde(default)]
        customer: Option<String>,
        status: String,
        items: BTreeMap<String, i64>,
        #[serde(default)]
        item_count: i64,
    }

    struct Cart;

    impl Aggregate for Cart {
        const STREAM_TYPE: &'static str = "cart";
        type Event = CartEvent;
        type State = CartState;

        fn initial() -> CartState {
            serde_json::from_value(json!({"status": "empty", "items": {}})).unwrap()
        }

        fn apply(state: &mut CartState, event: &CartEvent) {
            match event {
                CartEvent::CartOpened { customer } => {
                    state.customer = Some(customer.clone());
                    state.status = "open".into();
                }
                CartEvent::ItemAdded { sku, quantity, .. } => {
                    *state.items.entry(sku.clone()).or_default() += quantity;
                    state.item_count += quantity;
                }
                CartEvent::ItemRemoved { sku } => {
                    state.item_count -= state.items.remove(sku).unwrap_or(0);
                }
                CartEvent::CheckedOut => state.status = "checked_out".into(),
            }
        }

        fn event_version(event: &CartEvent) -> i32 {
            match event {
                CartEvent::ItemAdded { .. } => 2,
                _ => 1,
            }
        }
    }

    /// Not an object: a plain enum serializes to a string.
    #[derive(Debug, Serialize, Deserialize)]
    enum Bare {
        Thing,
    }

    struct BareAggregate;

    impl Aggregate for BareAggregate {
        const STREAM_TYPE: &'static str = "bare";
        type Event = Bare;
        type State = Value;

        fn initial() -> Value {
            json!({})
        }

        fn apply(_: &mut Value, _: &Bare) {}
    }

    fn added(sku: &str, quantity: i64) -> CartEvent {
        CartEvent::ItemAdded {
            sku: sku.into(),
            quantity,
            unit_price_cents: 250,
        }
    }

    #[test]
    fn events_are_stored_as_tagged_objects_with_their_version() {
        assert_eq!(
            event_json::<Cart>(&CartEvent::CartOpened {
                customer: "alice".into()
            })
            .unwrap(),
            json!({"type": "CartOpened", "customer": "alice"})
        );
        assert_eq!(
            event_json::<Cart>(&added("A1", 3)).unwrap(),
            json!({"type": "ItemAdded", "sku": "A1", "quantity": 3,
                   "unit_price_cents": 250, "event_version": 2})
        );
        // A unit variant is still an object with its type.
        assert_eq!(
            event_json::<Cart>(&CartEvent::CheckedOut).unwrap(),
            json!({"type": "CheckedOut"})
        );
    }

    #[test]
    fn stored_objects_decode_with_extra_keys() {
        // What es.load_events returns: the object as appended (event_version included), or an
        // upcast version-1 event.
        let stored = json!({"type": "ItemAdded", "sku": "A1", "quantity": 3,
                            "unit_price_cents": 250, "event_version": 2});
        assert_eq!(
            decode_event::<Cart>(Uuid::nil(), 2, stored).unwrap(),
            added("A1", 3)
        );
        // Another domain's event: a Serialization error naming the version and the type.
        match decode_event::<Cart>(Uuid::nil(), 7, json!({"type": "Deposited", "amount": 1})) {
            Err(EventStoreError::Serialization(message)) => {
                assert!(message.contains("version 7"), "{message}");
                assert!(message.contains("aggregate cart"), "{message}");
                assert!(message.contains("Deposited"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_event_that_is_not_an_object_is_refused_before_sending() {
        match event_json::<BareAggregate>(&Bare::Thing) {
            Err(EventStoreError::Serialization(message)) => {
                assert!(message.contains("aggregate bare"), "{message}");
                assert!(message.contains("\"Thing\""), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fold_applies_in_order_from_the_initial_state() {
        let events = [
            CartEvent::CartOpened {
                customer: "alice".into(),
            },
            added("A1", 3),
            added("B2", 1),
            added("A1", 2),
            CartEvent::ItemRemoved { sku: "B2".into() },
        ];
        let state = Cart::fold(&events);
        assert_eq!(state.customer.as_deref(), Some("alice"));
        assert_eq!(state.status, "open");
        assert_eq!(state.items, BTreeMap::from([("A1".to_owned(), 5)]));
        assert_eq!(state.item_count, 5);
        assert_eq!(Cart::fold([]), Cart::initial());
        // The state JSON of the database decodes with the keys the initial state lacks.
        let server: CartState = decode_state::<Cart>(
            Uuid::nil(),
            json!({"customer": "alice", "status": "open", "items": {"A1": 5},
                   "item_count": 5, "total_cents": 1250}),
        )
        .unwrap();
        assert_eq!(server, state);
        assert!(matches!(
            decode_state::<Cart>(Uuid::nil(), Value::Null),
            Err(EventStoreError::Serialization(_))
        ));
    }
}
