//! [`EventStoreClient`]: the bank-account example's `EventStore` and `SnapshotStore` over the
//! extension's SQL functions, the account commands (one round trip each, decided inside the
//! database), the audit reads and the global log. Every call is one statement; every failure is a
//! typed [`EventStoreError`].

use crate::account::{Account, AccountState, AccountStatus};
use crate::error::{EventStoreError, SnapshotError};
use crate::executor::PoolExecutor;
use crate::options::{ClientOptions, Sql};
use crate::seed::AccountEvent;
use crate::store::{EventStore, SnapshotStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Executor, Postgres, Row};
use uuid::Uuid;

/// The bank-account example's `PostgresEventStore`, now this client
/// (`PostgresEventStore::new(pool)` as in the guide).
pub type PostgresEventStore = EventStoreClient;
/// The bank-account example's `PostgresSnapshotStore`, now this client.
pub type PostgresSnapshotStore = EventStoreClient;

/// The columns of `es.events` a client reads, in [`RecordedEvent`]'s order.
pub(crate) const EVENT_COLUMNS: &str = "global_position, stream_id, version, event_id, event_type, \
                             event_version, data, metadata, occurred_at, recorded_at";

/// A client of the `event_store` extension over a sqlx pool. Cheap to clone (the pool is
/// shared); implements the bank-account example's [`EventStore`] and [`SnapshotStore`], so one
/// value serves both `Arc<dyn EventStore>` and `Arc<dyn SnapshotStore>`.
#[derive(Debug, Clone)]
pub struct EventStoreClient {
    pool: PgPool,
    options: ClientOptions,
}

/// One stored event: a row of `es.events`, as `es.read_all` and `es.load_events` return it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Position in the global log (unique, increasing in commit-safe read order).
    pub global_position: i64,
    /// The stream (the bank-account example's `aggregate_id`).
    pub stream_id: Uuid,
    /// 1-based, gapless version in the stream (the bank-account example's `sequence_number`).
    pub version: i64,
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The event object's `"type"`.
    pub event_type: String,
    /// Schema version of the payload.
    pub event_version: i32,
    /// The event object exactly as appended.
    pub data: Value,
    /// Optional metadata (correlation ids, user, traceparent…).
    pub metadata: Option<Value>,
    /// When it happened (given by the client, else the transaction time).
    pub occurred_at: DateTime<Utc>,
    /// When the store recorded it (the transaction time).
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// Decodes `data` as the bank-account example's [`AccountEvent`].
    pub fn account_event(&self) -> Result<AccountEvent, EventStoreError> {
        serde_json::from_value(self.data.clone()).map_err(|e| {
            EventStoreError::Serialization(format!(
                "event {} (version {} of stream {}) is not an AccountEvent: {e}",
                self.event_id, self.version, self.stream_id
            ))
        })
    }

    pub(crate) fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            global_position: row.try_get(0)?,
            stream_id: row.try_get(1)?,
            version: row.try_get(2)?,
            event_id: row.try_get(3)?,
            event_type: row.try_get(4)?,
            event_version: row.try_get(5)?,
            data: row.try_get(6)?,
            metadata: row.try_get(7)?,
            occurred_at: row.try_get(8)?,
            recorded_at: row.try_get(9)?,
        })
    }
}

/// One row of `es.account_history`: an event of an account with the running balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The event's version.
    pub version: i64,
    /// The event's type (`Opened`, `Deposited`, …).
    pub event_type: String,
    /// The signed amount: the opening balance, `+` a deposit, `-` a withdrawal; `None` for
    /// `Frozen`/`Closed`.
    pub amount_cents: Option<i64>,
    /// The balance after the event.
    pub balance_cents: i64,
    /// The status after the event.
    pub status: AccountStatus,
    /// The description, reason or holder's name.
    pub description: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
}

/// One row of the view `es.retention`: a retention policy and its progress.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    /// The stream type (`""`: the generic streams).
    pub stream_type: String,
    /// Events older than this are removed (`None`: no age limit).
    pub max_age: Option<std::time::Duration>,
    /// Each stream keeps its newest this many events (`None`: no count limit).
    pub max_count: Option<i64>,
    /// Paused (`set_retention_paused`).
    pub paused: bool,
    /// Events removed under the policy so far.
    pub events_removed: i64,
    /// Events the policy would remove now.
    pub events_expired: i64,
    /// When the worker last removed events under it.
    pub last_batch_at: Option<DateTime<Utc>>,
}

impl EventStoreClient {
    /// A client over an existing pool (the bank-account example's `PostgresEventStore::new(pool)`).
    pub fn new(pool: PgPool) -> Self {
        Self::with_options(pool, ClientOptions::default())
    }

    /// A client over an existing pool, sending its statements as `options` say (e.g.
    /// [`ClientOptions::pooler_safe`] behind pgbouncer in transaction mode).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), event_store_client::EventStoreError> {
    /// use event_store_client::{ClientOptions, EventStoreClient};
    ///
    /// let pool = sqlx::PgPool::connect("postgres://app@pgbouncer:6432/shop").await?;
    /// let store = EventStoreClient::with_options(pool, ClientOptions::default().pooler_safe(true));
    /// # Ok(()) }
    /// ```
    pub fn with_options(pool: PgPool, options: ClientOptions) -> Self {
        Self { pool, options }
    }

    /// Connects a new pool to `url` (`postgres://user@host/db`, or `host=/socket/dir` options).
    #[tracing::instrument(name = "event_store_client.connect", skip_all, err)]
    pub async fn connect(url: &str) -> Result<Self, EventStoreError> {
        Ok(Self::new(PgPool::connect(url).await?))
    }

    /// [`connect`](Self::connect) with options.
    #[tracing::instrument(name = "event_store_client.connect_with", skip_all, err)]
    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Self, EventStoreError> {
        Ok(Self::with_options(PgPool::connect(url).await?, options))
    }

    /// The options the client sends its statements with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The statement to send for `text` (named or not, with the trace comment).
    pub(crate) fn sql(&self, text: &str) -> Sql {
        self.options.sql(text)
    }

    /// The pool, for the application's own queries and transactions (`store.pool().begin()`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool as an executor that follows the client's options: in pooler-safe mode each
    /// statement runs in a transaction of its own (see [`PoolExecutor`]); every call of the
    /// client that is not given an executor runs on it.
    pub fn executor(&self) -> PoolExecutor<'_> {
        PoolExecutor::new(&self.pool, self.options.is_pooler_safe())
    }

    /// `es.append_events` of any JSON event objects to any stream; `expected_version` `None`
    /// appends without a check (`Some(-1)`: the stream must exist, `Some(0)`: it must not).
    /// Returns the stream's new version.
    #[tracing::instrument(name = "event_store_client.append_json", skip(self, events), err)]
    pub async fn append_json(
        &self,
        stream_id: Uuid,
        expected_version: Option<i64>,
        events: Vec<Value>,
    ) -> Result<i64, EventStoreError> {
        append_json(
            &self.options,
            self.executor(),
            stream_id,
            expected_version,
            events,
        )
        .await
    }

    /// `es.append_events` inside the caller's transaction (or on any connection), with the
    /// default [`ClientOptions`].
    #[deprecated(
        since = "0.2.0",
        note = "use `EventStoreClient::append_in(executor, …)`, which keeps the client's options \
                (pooler-safe mode, trace context) and takes any serde event"
    )]
    #[tracing::instrument(
        name = "event_store_client.append_json_in",
        skip(executor, events),
        err
    )]
    pub async fn append_json_in<'c, E>(
        executor: E,
        stream_id: Uuid,
        expected_version: Option<i64>,
        events: Vec<Value>,
    ) -> Result<i64, EventStoreError>
    where
        E: Executor<'c, Database = Postgres>,
    {
        append_json(
            &ClientOptions::default(),
            executor,
            stream_id,
            expected_version,
            events,
        )
        .await
    }

    /// The stream's events after `from_version` (at most `max_count`), as stored: [`Self::load_in`]
    /// on the client's own executor.
    pub async fn load_recorded(
        &self,
        stream_id: Uuid,
        from_version: i64,
        max_count: Option<i64>,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        self.load_in(self.executor(), stream_id, from_version, max_count)
            .await
    }

    /// `es.stream_version`: the stream's version, 0 when it does not exist
    /// ([`Self::stream_version_in`] on the client's own executor).
    pub async fn stream_version(&self, stream_id: Uuid) -> Result<i64, EventStoreError> {
        self.stream_version_in(self.executor(), stream_id).await
    }

    /// The global log after position `after`, at most `max_count` events, in position order
    /// (`es.read_all`). Gap-safe: paging with the last position seen never skips an event that
    /// commits late. Needs the library preloaded (else [`EventStoreError::Database`], `55000`).
    pub async fn read_all(
        &self,
        after: i64,
        max_count: i64,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        self.read_all_in(self.executor(), after, max_count).await
    }

    /// `es.open_account`: opens an account in the database; returns its id (the stream id).
    #[tracing::instrument(name = "event_store_client.open_account", skip(self), err)]
    pub async fn open_account(
        &self,
        holder: &str,
        initial_balance_cents: i64,
    ) -> Result<Uuid, EventStoreError> {
        Ok(self
            .sql("SELECT es.open_account($1, $2)")
            .scalar()
            .bind(holder)
            .bind(initial_balance_cents)
            .fetch_one(self.executor())
            .await?)
    }

    /// `es.deposit`: checks the rules and appends `Deposited` in one round trip; with
    /// `expected_version` the account must be at that version (else `ConcurrencyConflict`).
    /// Returns the account's new version.
    #[tracing::instrument(name = "event_store_client.deposit", skip(self), err)]
    pub async fn deposit(
        &self,
        account_id: Uuid,
        amount_cents: i64,
        description: &str,
        expected_version: Option<i64>,
    ) -> Result<i64, EventStoreError> {
        self.money(
            "deposit",
            account_id,
            amount_cents,
            description,
            expected_version,
        )
        .await
    }

    /// `es.withdraw`: like [`deposit`](Self::deposit); a withdrawal larger than the balance is
    /// [`EventStoreError::InsufficientFunds`]. Concurrent withdrawals serialize in the store.
    #[tracing::instrument(name = "event_store_client.withdraw", skip(self), err)]
    pub async fn withdraw(
        &self,
        account_id: Uuid,
        amount_cents: i64,
        description: &str,
        expected_version: Option<i64>,
    ) -> Result<i64, EventStoreError> {
        self.money(
            "withdraw",
            account_id,
            amount_cents,
            description,
            expected_version,
        )
        .await
    }

    /// `es.freeze_account`: returns the new version.
    #[tracing::instrument(name = "event_store_client.freeze_account", skip(self), err)]
    pub async fn freeze_account(
        &self,
        account_id: Uuid,
        reason: &str,
    ) -> Result<i64, EventStoreError> {
        Ok(self
            .sql("SELECT es.freeze_account($1, $2)")
            .scalar()
            .bind(account_id)
            .bind(reason)
            .fetch_one(self.executor())
            .await?)
    }

    /// `es.close_account`: returns the new version.
    #[tracing::instrument(name = "event_store_client.close_account", skip(self), err)]
    pub async fn close_account(
        &self,
        account_id: Uuid,
        reason: &str,
    ) -> Result<i64, EventStoreError> {
        Ok(self
            .sql("SELECT es.close_account($1, $2)")
            .scalar()
            .bind(account_id)
            .bind(reason)
            .fetch_one(self.executor())
            .await?)
    }

    /// `es.account_state`: the account's current state, folded by the database from its newest
    /// snapshot.
    #[tracing::instrument(name = "event_store_client.account_state", skip(self), err)]
    pub async fn account_state(&self, account_id: Uuid) -> Result<AccountState, EventStoreError> {
        self.account_state_at(account_id, None, None).await
    }

    /// Time travel: the state as of a time and/or at a version (`es.account_state(id, as_of,
    /// at_version)`).
    #[tracing::instrument(name = "event_store_client.account_state_at", skip(self), err)]
    pub async fn account_state_at(
        &self,
        account_id: Uuid,
        as_of: Option<DateTime<Utc>>,
        at_version: Option<i64>,
    ) -> Result<AccountState, EventStoreError> {
        let state: Value = self
            .sql("SELECT es.account_state($1, $2, $3)")
            .scalar()
            .bind(account_id)
            .bind(as_of)
            .bind(at_version)
            .fetch_one(self.executor())
            .await?;
        let state = erased_as_empty(state);
        serde_json::from_value(state.clone()).map_err(|e| {
            EventStoreError::Serialization(format!("not an account state: {state}: {e}"))
        })
    }

    /// `es.define_personal_data`: marks the personal-data paths of an event type (dot-separated
    /// object keys); from the next append on their values are sealed with their subject's key.
    /// An empty slice unmarks the type.
    #[tracing::instrument(name = "event_store_client.define_personal_data", skip(self), err)]
    pub async fn define_personal_data(
        &self,
        event_type: &str,
        paths: &[&str],
    ) -> Result<(), EventStoreError> {
        self.sql("SELECT es.define_personal_data($1, $2)")
            .query()
            .bind(event_type)
            .bind(paths)
            .execute(self.executor())
            .await?;
        Ok(())
    }

    /// `es.forget`: destroys the key of a data subject (a stream id as text, or the
    /// `data_subject` its events' metadata named), crypto-shredding every value sealed with it;
    /// true when a key was destroyed.
    #[tracing::instrument(name = "event_store_client.forget", skip(self), err)]
    pub async fn forget(&self, subject: &str) -> Result<bool, EventStoreError> {
        Ok(self
            .sql("SELECT es.forget($1)")
            .scalar()
            .bind(subject)
            .fetch_one(self.executor())
            .await?)
    }

    /// `es.account_history`: one entry per event with the running balance.
    #[tracing::instrument(name = "event_store_client.account_history", skip(self), err)]
    pub async fn account_history(
        &self,
        account_id: Uuid,
    ) -> Result<Vec<HistoryEntry>, EventStoreError> {
        let rows = self
            .sql(
                "SELECT version, event_type, amount_cents, balance_cents, status, description, \
             occurred_at, recorded_at FROM es.account_history($1)",
            )
            .query()
            .bind(account_id)
            .fetch_all(self.executor())
            .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get(4)?;
                Ok(HistoryEntry {
                    version: row.try_get(0)?,
                    event_type: row.try_get(1)?,
                    amount_cents: row.try_get(2)?,
                    balance_cents: row.try_get(3)?,
                    status: AccountStatus::parse(&status).ok_or_else(|| {
                        EventStoreError::Serialization(format!("unknown status {status:?}"))
                    })?,
                    description: row.try_get(5)?,
                    occurred_at: row.try_get(6)?,
                    recorded_at: row.try_get(7)?,
                })
            })
            .collect()
    }

    /// `es.delete_stream`: deletes the stream (`hard`: a tombstone, its events removed and its
    /// id never usable again; else soft, until [`undelete_stream`](Self::undelete_stream)) if
    /// it is at `expected_version` (`None`: any); returns the version of the `$stream_deleted`
    /// marker appended at its head. [`EventStoreError::StreamDeleted`] when it is deleted
    /// already (a soft-deleted one may still be deleted hard),
    /// [`EventStoreError::AccountNotDeletable`] for an account with money,
    /// [`EventStoreError::ConcurrencyConflict`], or a declared type's own refusal
    /// ([`EventStoreError::Domain`]).
    #[tracing::instrument(name = "event_store_client.delete_stream", skip(self), err)]
    pub async fn delete_stream(
        &self,
        stream_id: Uuid,
        expected_version: Option<i64>,
        hard: bool,
    ) -> Result<i64, EventStoreError> {
        Ok(self
            .sql("SELECT es.delete_stream($1, $2, $3)")
            .scalar()
            .bind(stream_id)
            .bind(expected_version)
            .bind(hard)
            .fetch_one(self.executor())
            .await?)
    }

    /// `es.undelete_stream`: restores a soft-deleted stream; returns the version of the
    /// `$stream_undeleted` marker. [`EventStoreError::StreamDeleted`] for a hard-deleted one,
    /// [`EventStoreError::Database`] (`55000`) for a live one.
    #[tracing::instrument(name = "event_store_client.undelete_stream", skip(self), err)]
    pub async fn undelete_stream(&self, stream_id: Uuid) -> Result<i64, EventStoreError> {
        Ok(self
            .sql("SELECT es.undelete_stream($1)")
            .scalar()
            .bind(stream_id)
            .fetch_one(self.executor())
            .await?)
    }

    /// `es.truncate_stream`: removes the stream's events below `before_version`; returns how
    /// many. An account or a declared type's stream needs a snapshot at `before_version - 1`
    /// ([`EventStoreError::InvalidSnapshot`] otherwise). Later reads below the cut fail with
    /// [`EventStoreError::StreamTruncated`].
    #[tracing::instrument(name = "event_store_client.truncate_stream", skip(self), err)]
    pub async fn truncate_stream(
        &self,
        stream_id: Uuid,
        before_version: i64,
    ) -> Result<i64, EventStoreError> {
        Ok(self
            .sql("SELECT es.truncate_stream($1, $2)")
            .scalar()
            .bind(stream_id)
            .bind(before_version)
            .fetch_one(self.executor())
            .await?)
    }

    /// The newest snapshot as stored in `es.snapshots` (not folded forward), with its version;
    /// `None` when the stream has none. See [`SnapshotStore::load_snapshot`] for the folded one.
    #[tracing::instrument(name = "event_store_client.load_stored_snapshot", skip(self), err)]
    pub async fn load_stored_snapshot(
        &self,
        aggregate_id: Uuid,
    ) -> Result<Option<(Account, i64)>, EventStoreError> {
        let row: Option<(i64, Value)> = self
            .sql("SELECT version, state FROM es.load_snapshot($1)")
            .query_as()
            .bind(aggregate_id)
            .fetch_optional(self.executor())
            .await?;
        row.map(|(version, state)| Ok((account_from_state(aggregate_id, state)?, version)))
            .transpose()
    }

    /// `es.set_retention`: the retention policy of `stream_type` (`""`: the generic streams,
    /// whose type is NULL). The database's background worker removes events recorded longer ago
    /// than `max_age` and events beyond the newest `max_count` of their stream, in small
    /// batches; for a declared aggregate type (the account included) only events a stored
    /// snapshot covers. Both `None` removes the policy. Invalid values are
    /// [`EventStoreError::InvalidArgument`] (`22023`).
    #[tracing::instrument(name = "event_store_client.set_retention", skip(self), err)]
    pub async fn set_retention(
        &self,
        stream_type: &str,
        max_age: Option<std::time::Duration>,
        max_count: Option<i64>,
    ) -> Result<(), EventStoreError> {
        self.sql("SELECT es.set_retention($1, make_interval(secs => $2::float8), $3)")
            .query()
            .bind(stream_type)
            .bind(max_age.map(|d| d.as_secs_f64()))
            .bind(max_count)
            .execute(self.executor())
            .await?;
        Ok(())
    }

    /// `es.pause_retention` (`paused` true) or `es.resume_retention`: one policy, or every policy
    /// when `stream_type` is `None`. Returns how many policies changed; a policy that does not
    /// exist is [`EventStoreError::InvalidArgument`].
    #[tracing::instrument(name = "event_store_client.set_retention_paused", skip(self), err)]
    pub async fn set_retention_paused(
        &self,
        stream_type: Option<&str>,
        paused: bool,
    ) -> Result<i64, EventStoreError> {
        Ok(self
            .sql("SELECT es.set_retention_paused($1, $2)")
            .scalar()
            .bind(stream_type)
            .bind(paused)
            .fetch_one(self.executor())
            .await?)
    }

    /// The view `es.retention`: each policy with its progress.
    #[tracing::instrument(name = "event_store_client.retention", skip(self), err)]
    pub async fn retention(&self) -> Result<Vec<RetentionPolicy>, EventStoreError> {
        let rows = self
            .sql(
                "SELECT stream_type, extract(epoch FROM max_age)::float8, max_count, paused, \
                    events_removed, events_expired, last_batch_at \
               FROM es.retention ORDER BY stream_type",
            )
            .query()
            .fetch_all(self.executor())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RetentionPolicy {
                    stream_type: r.try_get(0)?,
                    max_age: r
                        .try_get::<Option<f64>, _>(1)?
                        .map(std::time::Duration::from_secs_f64),
                    max_count: r.try_get(2)?,
                    paused: r.try_get(3)?,
                    events_removed: r.try_get(4)?,
                    events_expired: r.try_get(5)?,
                    last_batch_at: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// `es.archive`: moves the events recorded before `before` (at most `max_events`, oldest
    /// positions first) to `es.events_archive` in one transaction; returns how many moved. Every
    /// read, this client's included, reads through the archive. Call it until it returns 0 to
    /// archive in chunks.
    #[tracing::instrument(name = "event_store_client.archive", skip(self), err)]
    pub async fn archive(
        &self,
        before: DateTime<Utc>,
        max_events: Option<i64>,
    ) -> Result<i64, EventStoreError> {
        Ok(self
            .sql("SELECT es.archive($1, $2)")
            .scalar()
            .bind(before)
            .bind(max_events)
            .fetch_one(self.executor())
            .await?)
    }

    async fn money(
        &self,
        command: &str,
        account_id: Uuid,
        amount_cents: i64,
        description: &str,
        expected_version: Option<i64>,
    ) -> Result<i64, EventStoreError> {
        let sql = format!("SELECT es.{command}($1, $2, $3, $4)");
        Ok(self
            .sql(&sql)
            .scalar()
            .bind(account_id)
            .bind(amount_cents)
            .bind(description)
            .bind(expected_version)
            .fetch_one(self.executor())
            .await?)
    }
}

async fn append_json<'c, E>(
    options: &ClientOptions,
    executor: E,
    stream_id: Uuid,
    expected_version: Option<i64>,
    events: Vec<Value>,
) -> Result<i64, EventStoreError>
where
    E: Executor<'c, Database = Postgres>,
{
    Ok(options
        .sql("SELECT es.append_events($1, $2, $3)")
        .scalar()
        .bind(stream_id)
        .bind(expected_version)
        .bind(events)
        .fetch_one(executor)
        .await?)
}

/// An account from a state JSON of the store, with its id.
/// A state or event the store read with erased personal values (`null`, listed under
/// `"_erased"`): each erased top-level value becomes an empty string, so the typed values of the
/// bank-account example (whose holder, description and reason are strings) still decode. The raw
/// JSON keeps `null` and the marker.
fn erased_as_empty(mut value: Value) -> Value {
    let erased: Vec<String> = value
        .get("_erased")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Value::Object(map) = &mut value {
        for key in erased {
            if let Some(v) = map.get_mut(&key)
                && v.is_null()
            {
                *v = Value::String(String::new());
            }
        }
    }
    value
}

fn account_from_state(id: Uuid, state: Value) -> Result<Account, EventStoreError> {
    let state = erased_as_empty(state);
    let parsed = serde_json::from_value::<AccountState>(state.clone()).map_err(|e| {
        EventStoreError::Serialization(format!("not an account state: {state}: {e}"))
    })?;
    Ok(Account::from_state(id, parsed))
}

/// Decodes stored event objects as the bank-account example's [`AccountEvent`]s.
fn decode_events(
    stream_id: Uuid,
    rows: Vec<(i64, Value)>,
) -> Result<Vec<AccountEvent>, EventStoreError> {
    rows.into_iter()
        .map(|(version, data)| {
            serde_json::from_value(erased_as_empty(data)).map_err(|e| {
                EventStoreError::Serialization(format!(
                    "event at version {version} of stream {stream_id} is not an AccountEvent: {e}"
                ))
            })
        })
        .collect()
}

#[async_trait]
impl EventStore for EventStoreClient {
    /// `es.append_events(aggregate_id, expected_version, events)`, the events serialized with
    /// the bank-account example's serde shape. `expected_version` is passed as it is: N the stream
    /// must be at N, `0` it must not exist (the bank-account example's new account), `-1` it must
    /// exist. The store checks that each event's `aggregate_id` and `sequence_number` are the
    /// stream and the version it assigns (`InvalidEvent` otherwise), and for an account stream
    /// every rule of the account.
    #[tracing::instrument(name = "event_store_client.append_events", skip(self, events), fields(events = events.len()), err)]
    async fn append_events(
        &self,
        aggregate_id: Uuid,
        expected_version: i64,
        events: Vec<AccountEvent>,
    ) -> Result<(), EventStoreError> {
        let events = events
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()?;
        append_json(
            &self.options,
            self.executor(),
            aggregate_id,
            Some(expected_version),
            events,
        )
        .await?;
        Ok(())
    }

    /// `es.load_events(aggregate_id)`, each event decoded as the bank-account example's
    /// `AccountEvent`.
    async fn load_events(&self, aggregate_id: Uuid) -> Result<Vec<AccountEvent>, EventStoreError> {
        self.load_events_from_version(aggregate_id, 0).await
    }

    /// `es.load_events(aggregate_id, from_version)`: the events with a version above
    /// `from_version`.
    #[tracing::instrument(name = "event_store_client.load_events", skip(self), err)]
    async fn load_events_from_version(
        &self,
        aggregate_id: Uuid,
        from_version: i64,
    ) -> Result<Vec<AccountEvent>, EventStoreError> {
        let rows: Vec<(i64, Value)> = self
            .sql("SELECT version, data FROM es.load_events($1, $2)")
            .query_as()
            .bind(aggregate_id)
            .bind(from_version)
            .fetch_all(self.executor())
            .await?;
        decode_events(aggregate_id, rows)
    }
}

#[async_trait]
impl SnapshotStore for EventStoreClient {
    /// `es.save_snapshot(aggregate_id, version, state)` with the account serialized as the
    /// store's state JSON. For an account stream the store checks that the state is the
    /// history's state at `version` and refuses any other ([`EventStoreError::InvalidSnapshot`],
    /// `ES005`): a snapshot can never make a wrong balance authoritative.
    #[tracing::instrument(name = "event_store_client.save_snapshot", skip(self, state), err)]
    async fn save_snapshot(
        &self,
        aggregate_id: Uuid,
        version: i64,
        state: &Account,
    ) -> Result<(), SnapshotError> {
        let state = serde_json::to_value(state)?;
        self.sql("SELECT es.save_snapshot($1, $2, $3)")
            .query()
            .bind(aggregate_id)
            .bind(version)
            .bind(state)
            .execute(self.executor())
            .await?;
        Ok(())
    }

    /// The account **at the head of its stream**, folded forward by the database from its
    /// newest snapshot (`es.account_state`), with the head version; `None` when the account has
    /// no stored snapshot (the bank-account example then replays all events).
    ///
    /// Why not the raw snapshot ([`EventStoreClient::load_stored_snapshot`] returns that): the
    /// bank-account example's `DepositHandler::load_account` has a bug (docs/reference.md §4):
    /// after a snapshot it rebuilds the account from the tail events alone
    /// (`Account::from_events(incremental_events)`), losing the snapshot's balance and holder. With
    /// the fold-forward the tail it loads is empty and the unchanged handler of the bank-account
    /// example is correct.
    ///
    /// The race: a writer can append after the fold and before the handler loads the tail; the
    /// handler then rebuilds from that tail alone again (the bank-account example's bug), with a
    /// wrong balance. The damage stays on the client side: its append carries the version it read,
    /// so it fails with `ConcurrencyConflict` if the stream moved again; the store enforces every
    /// account rule server side (an overdraft or a deposit to a frozen account is refused with
    /// `ES101`/`ES102` whatever the client believed); and `es.save_snapshot` refuses a state that
    /// is not the history's state (`ES005`). A command that must not depend on client state at
    /// all is best sent as one [`deposit`](EventStoreClient::deposit) /
    /// [`withdraw`](EventStoreClient::withdraw).
    #[tracing::instrument(name = "event_store_client.load_snapshot", skip(self), err)]
    async fn load_snapshot(
        &self,
        aggregate_id: Uuid,
    ) -> Result<Option<(Account, i64)>, SnapshotError> {
        // One statement: the fold runs only when a snapshot exists.
        let state: Option<Value> = self
            .sql("SELECT es.account_state($1) FROM es.load_snapshot($1) LIMIT 1")
            .scalar()
            .bind(aggregate_id)
            .fetch_optional(self.executor())
            .await?;
        let Some(state) = state else {
            return Ok(None);
        };
        let account = account_from_state(aggregate_id, state)?;
        let version = account.version();
        Ok(Some((account, version)))
    }
}
