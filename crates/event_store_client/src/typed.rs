//! Events of any serde type, and every log operation on any sqlx executor.
//!
//! An event is any `E: Serialize` whose JSON is an object with a `"type"` (a serde enum with
//! `#[serde(tag = "type")]`, or a struct with a `type` field); it is read back into any
//! `E: DeserializeOwned` with [`RecordedEvent::decode`]. The raw `serde_json::Value` form stays
//! available ([`RecordedEvent::data`], [`EventStoreClient::append_json`]).
//!
//! The `*_in` methods take any sqlx executor (`&PgPool`, `&mut PgConnection`, `&mut *tx` of a
//! `Transaction`), so a call joins the caller's transaction: an append and the application's own
//! writes commit or roll back together.

use crate::client::{EVENT_COLUMNS, EventStoreClient, RecordedEvent};
use crate::error::EventStoreError;
use crate::expected::ExpectedVersion;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{Executor, Postgres};
use uuid::Uuid;

impl RecordedEvent {
    /// Decodes [`data`](Self::data) as an event of any serde type. Keys the type does not name
    /// are ignored (serde's default), so the stored `"event_version"` never gets in the way. An
    /// event that does not decode is [`EventStoreError::Serialization`] naming its stream and
    /// version.
    ///
    /// ```
    /// # use event_store_client::RecordedEvent;
    /// #[derive(serde::Deserialize, Debug, PartialEq)]
    /// #[serde(tag = "type")]
    /// enum Shop { Paid { cents: i64 } }
    ///
    /// # fn check(event: &RecordedEvent) -> Result<(), event_store_client::EventStoreError> {
    /// let paid: Shop = event.decode()?;
    /// # Ok(()) }
    /// ```
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, EventStoreError> {
        serde_json::from_value(self.data.clone()).map_err(|e| {
            EventStoreError::Serialization(format!(
                "event at version {} of stream {} ({}) is not a {}: {e}",
                self.version,
                self.stream_id,
                self.event_type,
                std::any::type_name::<E>()
            ))
        })
    }
}

/// The JSON object an event is stored as; refused before sending when it is not an object with a
/// string `"type"` (the store would refuse it with ES003).
pub(crate) fn event_object<E: Serialize>(event: &E) -> Result<Value, EventStoreError> {
    let value = serde_json::to_value(event)?;
    match value.get("type") {
        Some(Value::String(_)) if value.is_object() => Ok(value),
        _ => Err(EventStoreError::Serialization(format!(
            "an event must serialize to a JSON object with a string \"type\" (a serde enum with \
             #[serde(tag = \"type\")], or a struct with a `type` field), got {value}"
        ))),
    }
}

impl EventStoreClient {
    /// Appends events of any serde type to a stream atomically (`es.append_events`), if it is at
    /// `expected`; returns the stream's new version. The event type stored is each object's
    /// `"type"`. Its span is [`append_in`](Self::append_in)'s.
    ///
    /// ```no_run
    /// use event_store_client::{EventStoreClient, ExpectedVersion};
    /// use serde::Serialize;
    ///
    /// #[derive(Serialize)]
    /// #[serde(tag = "type")]
    /// enum Shop { Ordered { sku: String }, Paid { cents: i64 } }
    ///
    /// # async fn demo(store: EventStoreClient) -> Result<(), event_store_client::EventStoreError> {
    /// let order = uuid::Uuid::new_v4();
    /// let events = [Shop::Ordered { sku: "A1".into() }, Shop::Paid { cents: 250 }];
    /// let version = store.append(order, ExpectedVersion::NoStream, &events).await?;
    /// assert_eq!(version, 2);
    /// # Ok(()) }
    /// ```
    pub async fn append<E: Serialize>(
        &self,
        stream_id: Uuid,
        expected: impl Into<ExpectedVersion> + std::fmt::Debug,
        events: &[E],
    ) -> Result<i64, EventStoreError> {
        self.append_in(self.executor(), stream_id, expected, events)
            .await
    }

    /// [`append`](Self::append) on any executor: `&mut *tx` appends inside the caller's
    /// transaction, so the events and the caller's own writes commit together.
    ///
    /// ```no_run
    /// # use event_store_client::{EventStoreClient, ExpectedVersion};
    /// # async fn demo(store: EventStoreClient, order: uuid::Uuid) -> Result<(), event_store_client::EventStoreError> {
    /// let mut tx = store.pool().begin().await?;
    /// sqlx::query("INSERT INTO outbox (order_id) VALUES ($1)").bind(order).execute(&mut *tx).await?;
    /// store.append_in(&mut *tx, order, ExpectedVersion::Exact(2), &[serde_json::json!({"type": "Shipped"})]).await?;
    /// tx.commit().await?; // both, or neither
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(name = "event_store_client.append", skip(self, executor, events), fields(events = events.len()), err)]
    pub async fn append_in<'c, X, E>(
        &self,
        executor: X,
        stream_id: Uuid,
        expected: impl Into<ExpectedVersion> + std::fmt::Debug,
        events: &[E],
    ) -> Result<i64, EventStoreError>
    where
        X: Executor<'c, Database = Postgres>,
        E: Serialize,
    {
        let events = events
            .iter()
            .map(event_object)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .sql("SELECT es.append_events($1, $2, $3)")
            .scalar()
            .bind(stream_id)
            .bind(expected.into().as_sql())
            .bind(events)
            .fetch_one(executor)
            .await?)
    }

    /// The stream's events after `from_version` (at most `max_count`) on any executor, as
    /// stored; [`RecordedEvent::decode`] reads each into a serde type.
    #[tracing::instrument(name = "event_store_client.load_events", skip(self, executor), err)]
    pub async fn load_in<'c, X>(
        &self,
        executor: X,
        stream_id: Uuid,
        from_version: i64,
        max_count: Option<i64>,
    ) -> Result<Vec<RecordedEvent>, EventStoreError>
    where
        X: Executor<'c, Database = Postgres>,
    {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM es.load_events($1, $2, $3)");
        let rows = self
            .sql(&sql)
            .query()
            .bind(stream_id)
            .bind(from_version)
            .bind(max_count)
            .fetch_all(executor)
            .await?;
        Ok(rows
            .iter()
            .map(RecordedEvent::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// All the stream's events decoded as `E`, in version order.
    ///
    /// ```no_run
    /// # use event_store_client::EventStoreClient;
    /// #[derive(serde::Deserialize)]
    /// #[serde(tag = "type")]
    /// enum Shop { Ordered { sku: String }, Paid { cents: i64 } }
    /// # async fn demo(store: EventStoreClient, order: uuid::Uuid) -> Result<(), event_store_client::EventStoreError> {
    /// let events: Vec<Shop> = store.load_as(order).await?;
    /// # Ok(()) }
    /// ```
    pub async fn load_as<E: DeserializeOwned>(
        &self,
        stream_id: Uuid,
    ) -> Result<Vec<E>, EventStoreError> {
        self.load_in(self.executor(), stream_id, 0, None)
            .await?
            .iter()
            .map(RecordedEvent::decode)
            .collect()
    }

    /// The global log after position `after` (at most `max_count`) on any executor
    /// (`es.read_all`, gap-safe).
    #[tracing::instrument(name = "event_store_client.read_all", skip(self, executor), err)]
    pub async fn read_all_in<'c, X>(
        &self,
        executor: X,
        after: i64,
        max_count: i64,
    ) -> Result<Vec<RecordedEvent>, EventStoreError>
    where
        X: Executor<'c, Database = Postgres>,
    {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM es.read_all($1::bigint, $2::bigint)");
        let rows = self
            .sql(&sql)
            .query()
            .bind(after)
            .bind(max_count)
            .fetch_all(executor)
            .await?;
        Ok(rows
            .iter()
            .map(RecordedEvent::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// `es.stream_version` on any executor (0: no stream).
    #[tracing::instrument(name = "event_store_client.stream_version", skip(self, executor), err)]
    pub async fn stream_version_in<'c, X>(
        &self,
        executor: X,
        stream_id: Uuid,
    ) -> Result<i64, EventStoreError>
    where
        X: Executor<'c, Database = Postgres>,
    {
        Ok(self
            .sql("SELECT es.stream_version($1)")
            .scalar()
            .bind(stream_id)
            .fetch_one(executor)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum Shop {
        Ordered { sku: String },
        Paid { cents: i64 },
    }

    #[derive(Serialize)]
    struct Flat {
        r#type: &'static str,
        n: i64,
    }

    #[test]
    fn any_serde_event_with_a_type_is_an_event_object() {
        assert_eq!(
            event_object(&Shop::Paid { cents: 5 }).unwrap(),
            json!({"type": "Paid", "cents": 5})
        );
        assert_eq!(
            event_object(&Flat {
                r#type: "Counted",
                n: 1
            })
            .unwrap(),
            json!({"type": "Counted", "n": 1})
        );
        for bad in [json!("Paid"), json!({"cents": 5}), json!({"type": 7})] {
            assert!(matches!(
                event_object(&bad),
                Err(EventStoreError::Serialization(_))
            ));
        }
    }
}
