//! Subscriptions (docs/reference.md §5): the SQL calls (`es.create_subscription`, `es.claim`,
//! `es.poll`, `es.ack`, `es.nack`, `es.wait`, `es.release`) on any executor, the log and the
//! subscriptions as [`futures::Stream`]s, and [`Consumer`], the helper that handles each event
//! inside the caller's transaction and acks it there.

use crate::client::{EVENT_COLUMNS, EventStoreClient, RecordedEvent};
use crate::error::EventStoreError;
use futures::future::{BoxFuture, Either};
use futures::stream::{self, Stream};
use sqlx::{Executor, Postgres, Transaction};
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Display;
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

/// What `es.create_subscription` takes besides the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// Start after this global position (`None`: at the current end of the log).
    pub start_after: Option<i64>,
    /// Only events of these types (`None`: all).
    pub event_types: Option<Vec<String>>,
    /// Only streams of this type (`None`: all).
    pub stream_type: Option<String>,
    /// How many partitions (a stream's events stay in one, in order).
    pub partitions: i32,
    /// Failed attempts (`es.nack`) before an event is parked.
    pub max_attempts: i32,
}

impl Default for SubscriptionSpec {
    /// From the start of the log, every event, one partition, 5 attempts.
    fn default() -> Self {
        Self {
            start_after: Some(0),
            event_types: None,
            stream_type: None,
            partitions: 1,
            max_attempts: 5,
        }
    }
}

impl EventStoreClient {
    /// `es.create_subscription`: a durable subscription (42710 as
    /// [`EventStoreError::Database`] when the name is taken).
    #[tracing::instrument(name = "event_store_client.create_subscription", skip(self), err)]
    pub async fn create_subscription(
        &self,
        name: &str,
        spec: &SubscriptionSpec,
    ) -> Result<(), EventStoreError> {
        self.sql("SELECT es.create_subscription($1, $2, $3, $4, $5, $6)")
            .query()
            .bind(name)
            .bind(spec.start_after)
            .bind(spec.event_types.as_deref())
            .bind(spec.stream_type.as_deref())
            .bind(spec.partitions)
            .bind(spec.max_attempts)
            .execute(self.executor())
            .await?;
        Ok(())
    }

    /// `es.drop_subscription`.
    #[tracing::instrument(name = "event_store_client.drop_subscription", skip(self), err)]
    pub async fn drop_subscription(&self, name: &str) -> Result<(), EventStoreError> {
        self.sql("SELECT es.drop_subscription($1)")
            .query()
            .bind(name)
            .execute(self.executor())
            .await?;
        Ok(())
    }

    /// `es.claim`: takes (or renews) the consumer's fair share of the partitions for `lease`;
    /// returns the partitions it holds, in order. Call it again before the lease ends.
    #[tracing::instrument(name = "event_store_client.claim", skip(self), err)]
    pub async fn claim(
        &self,
        name: &str,
        consumer: &str,
        lease: Duration,
    ) -> Result<Vec<i32>, EventStoreError> {
        let mut partitions: Vec<i32> = self
            .sql("SELECT partition FROM es.claim($1, $2, make_interval(secs => $3::float8))")
            .scalar()
            .bind(name)
            .bind(consumer)
            .bind(lease.as_secs_f64())
            .fetch_all(self.executor())
            .await?;
        partitions.sort_unstable();
        Ok(partitions)
    }

    /// `es.release`: gives the consumer's partitions up; returns how many.
    #[tracing::instrument(name = "event_store_client.release", skip(self), err)]
    pub async fn release(&self, name: &str, consumer: &str) -> Result<i32, EventStoreError> {
        Ok(self
            .sql("SELECT es.release($1, $2)")
            .scalar()
            .bind(name)
            .bind(consumer)
            .fetch_one(self.executor())
            .await?)
    }

    /// `es.poll` on any executor: the partition's next events after its checkpoint (at most
    /// `max_count`), gap-safe; does not move the checkpoint.
    #[tracing::instrument(name = "event_store_client.poll", skip(self, executor), err)]
    pub async fn poll_in<'c, X>(
        &self,
        executor: X,
        name: &str,
        partition: i32,
        max_count: i64,
        consumer: Option<&str>,
    ) -> Result<Vec<RecordedEvent>, EventStoreError>
    where
        X: Executor<'c, Database = Postgres>,
    {
        self.poll_with(executor, name, partition, max_count, consumer, None)
            .await
    }

    /// `es.poll` with `wait_ms` on any executor: like [`poll_in`](Self::poll_in), but when
    /// nothing is readable it sleeps in the server until an event of the partition is (then
    /// returns it in the same round trip) or `wait` passes (then returns nothing). Holds the
    /// executor's connection while it sleeps.
    #[tracing::instrument(name = "event_store_client.poll_waiting", skip(self, executor), err)]
    pub async fn poll_waiting_in<'c, X>(
        &self,
        executor: X,
        name: &str,
        partition: i32,
        max_count: i64,
        consumer: Option<&str>,
        wait: Duration,
    ) -> Result<Vec<RecordedEvent>, EventStoreError>
    where
        X: Executor<'c, Database = Postgres>,
    {
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        self.poll_with(executor, name, partition, max_count, consumer, Some(ms))
            .await
    }

    /// `es.poll`, waiting up to `wait_ms` when given; without it the four-argument call, which
    /// a store whose `es.poll` has no `wait_ms` yet also answers.
    async fn poll_with<'c, X>(
        &self,
        executor: X,
        name: &str,
        partition: i32,
        max_count: i64,
        consumer: Option<&str>,
        wait_ms: Option<i32>,
    ) -> Result<Vec<RecordedEvent>, EventStoreError>
    where
        X: Executor<'c, Database = Postgres>,
    {
        let sql = match wait_ms {
            Some(_) => {
                format!("SELECT {EVENT_COLUMNS} FROM es.poll($1, $2, $3, $4, wait_ms => $5)")
            }
            None => format!("SELECT {EVENT_COLUMNS} FROM es.poll($1, $2, $3, $4)"),
        };
        let statement = self.sql(&sql);
        let mut query = statement
            .query()
            .bind(name)
            .bind(partition)
            .bind(max_count)
            .bind(consumer);
        if let Some(ms) = wait_ms {
            query = query.bind(ms);
        }
        let rows = query.fetch_all(executor).await?;
        Ok(rows
            .iter()
            .map(RecordedEvent::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// `es.ack` on any executor: moves the checkpoint to `position` (never backwards) in the
    /// executor's transaction; returns the checkpoint.
    #[tracing::instrument(name = "event_store_client.ack", skip(self, executor), err)]
    pub async fn ack_in<'c, X>(
        &self,
        executor: X,
        name: &str,
        partition: i32,
        position: i64,
        consumer: Option<&str>,
    ) -> Result<i64, EventStoreError>
    where
        X: Executor<'c, Database = Postgres>,
    {
        Ok(self
            .sql("SELECT es.ack($1, $2, $3, $4)")
            .scalar()
            .bind(name)
            .bind(partition)
            .bind(position)
            .bind(consumer)
            .fetch_one(executor)
            .await?)
    }

    /// `es.nack` on any executor: a failed attempt of the partition's next event (at
    /// `position`), with the error text; true when the event was parked.
    #[tracing::instrument(name = "event_store_client.nack", skip(self, executor), err)]
    pub async fn nack_in<'c, X>(
        &self,
        executor: X,
        name: &str,
        partition: i32,
        position: i64,
        error: &str,
        consumer: Option<&str>,
    ) -> Result<bool, EventStoreError>
    where
        X: Executor<'c, Database = Postgres>,
    {
        Ok(self
            .sql("SELECT es.nack($1, $2, $3, $4, $5)")
            .scalar()
            .bind(name)
            .bind(partition)
            .bind(position)
            .bind(error)
            .bind(consumer)
            .fetch_one(executor)
            .await?)
    }

    /// `es.wait`: sleeps until the partition has a readable event (true) or `timeout` (false).
    /// Holds a pool connection while it sleeps.
    #[tracing::instrument(name = "event_store_client.wait", skip(self), err)]
    pub async fn wait(
        &self,
        name: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<bool, EventStoreError> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        Ok(self
            .sql("SELECT es.wait($1, $2, $3)")
            .scalar()
            .bind(name)
            .bind(partition)
            .bind(ms)
            .fetch_one(self.executor())
            .await?)
    }

    /// The global log after `after`, as a stream, read a page
    /// ([`ClientOptions::page_size`](crate::ClientOptions::page_size)) at a time with
    /// `es.read_all`; it ends at the first empty page (the log's current gap-safe end). An error
    /// ends it after being yielded.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// # async fn demo(store: event_store_client::EventStoreClient) -> Result<(), event_store_client::EventStoreError> {
    /// let mut log = std::pin::pin!(store.read_all_stream(0));
    /// while let Some(event) = log.try_next().await? {
    ///     println!("{} {}", event.global_position, event.event_type);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn read_all_stream(
        &self,
        after: i64,
    ) -> impl Stream<Item = Result<RecordedEvent, EventStoreError>> + Send + 'static {
        let client = self.clone();
        let span = tracing::Span::current();
        paged(
            move |after| {
                let client = client.clone();
                let span = span.clone();
                async move {
                    let page = client.options().page();
                    client
                        .read_all_in(client.executor(), after, page)
                        .instrument(span)
                        .await
                }
            },
            after,
            |e| e.global_position,
        )
    }

    /// The stream's events after `from_version`, as a stream, a page at a time
    /// (`es.load_events` with `max_count`).
    pub fn load_events_stream(
        &self,
        stream_id: Uuid,
        from_version: i64,
    ) -> impl Stream<Item = Result<RecordedEvent, EventStoreError>> + Send + 'static {
        let client = self.clone();
        let span = tracing::Span::current();
        paged(
            move |after| {
                let client = client.clone();
                let span = span.clone();
                async move {
                    let page = client.options().page();
                    client
                        .load_in(client.executor(), stream_id, after, Some(page))
                        .instrument(span)
                        .await
                }
            },
            from_version,
            |e| e.version,
        )
    }

    /// A subscription's partition as an endless stream: `es.poll` a page, yield its events, and
    /// `es.ack` the page once the caller asks for the event after its last one (so an event is
    /// acked only after the caller handled it: at-least-once); when the partition is empty, the
    /// poll waits in the server up to `idle_wait` (`es.poll(…, wait_ms)`) and returns the events
    /// that commit meanwhile in the same call. `consumer` names the lease holder (see
    /// [`claim`](Self::claim)); `None` when nobody claims the subscription.
    ///
    /// The ack is its own statement, outside any transaction of the caller: for handling and
    /// acking atomically, use [`Consumer`].
    pub fn subscription_stream(
        &self,
        name: &str,
        partition: i32,
        consumer: Option<&str>,
        idle_wait: Duration,
    ) -> impl Stream<Item = Result<RecordedEvent, EventStoreError>> + Send + 'static {
        struct State {
            client: EventStoreClient,
            name: String,
            consumer: Option<String>,
            buffer: VecDeque<RecordedEvent>,
            unacked: Option<i64>,
            span: tracing::Span,
        }
        let state = State {
            client: self.clone(),
            name: name.to_owned(),
            consumer: consumer.map(str::to_owned),
            buffer: VecDeque::new(),
            unacked: None,
            span: tracing::Span::current(),
        };
        stream::try_unfold(state, move |mut s| async move {
            loop {
                if let Some(event) = s.buffer.pop_front() {
                    s.unacked = Some(event.global_position);
                    return Ok(Some((event, s)));
                }
                let span = s.span.clone();
                if let Some(position) = s.unacked.take() {
                    s.client
                        .ack_in(
                            s.client.executor(),
                            &s.name,
                            partition,
                            position,
                            s.consumer.as_deref(),
                        )
                        .instrument(span.clone())
                        .await?;
                }
                // one round trip: a page when there is one, else the first events that commit
                // within idle_wait, returned by the call that waited for them
                let page = s.client.options().page();
                let events = s
                    .client
                    .poll_waiting_in(
                        s.client.executor(),
                        &s.name,
                        partition,
                        page,
                        s.consumer.as_deref(),
                        idle_wait,
                    )
                    .instrument(span)
                    .await?;
                s.buffer.extend(events);
            }
        })
    }
}

/// A stream read a page at a time by `fetch(after)`, `after` moving to `key` of the last event;
/// it ends at the first empty page.
fn paged<F, Fut>(
    fetch: F,
    after: i64,
    key: fn(&RecordedEvent) -> i64,
) -> impl Stream<Item = Result<RecordedEvent, EventStoreError>> + Send + 'static
where
    F: Fn(i64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<RecordedEvent>, EventStoreError>> + Send + 'static,
{
    let state = (fetch, after, VecDeque::<RecordedEvent>::new(), false);
    stream::try_unfold(state, move |(fetch, after, mut buffer, done)| async move {
        if buffer.is_empty() && !done {
            let page = fetch(after).await?;
            let done = page.is_empty();
            buffer.extend(page);
            let Some(event) = buffer.pop_front() else {
                return Ok(None);
            };
            let next = key(&event);
            return Ok(Some((event, (fetch, next, buffer, done))));
        }
        match buffer.pop_front() {
            Some(event) => {
                let next = key(&event);
                Ok(Some((event, (fetch, next, buffer, done))))
            }
            None => Ok(None),
        }
    })
}

/// The future a [`Consumer`]'s handler returns: it borrows the transaction for its lifetime.
pub type HandlerFuture<'t, E> = BoxFuture<'t, Result<(), E>>;

/// What one [`Consumer::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Events handled and acked (committed with the handler's writes).
    pub acked: u64,
    /// Handler failures (each rolled back; the first event of a batch that fails is nacked).
    pub failed: u64,
    /// Events parked by those nacks (their attempts reached the subscription's `max_attempts`).
    pub parked: u64,
}

/// Consumes a subscription: claims the consumer's partitions, and for each polls a batch inside
/// a transaction, hands each event to the caller's handler **with that transaction** (so what
/// the handler writes and the ack commit together: exactly once for the database), acks the
/// batch's last position and commits; waits with `es.wait` when idle; renews the lease (`es.claim`)
/// every third of it while a batch runs.
///
/// - **Handler errors**: the transaction rolls back (the handler's writes of the whole batch go
///   with it). When the failing event is the batch's first, it is nacked with the error's text
///   (`es.nack`: after the subscription's `max_attempts` it is parked and the partition moves
///   on); when it is a later one, the events before it are handled again as a batch of their
///   own, and the failing one comes first in the next batch.
/// - **Cancel safety**: dropping a future of this type at any `.await` leaves nothing
///   half-done: the open transaction rolls back (sqlx rolls back a dropped transaction before
///   the connection is reused), so no handler write and no ack of the batch is committed; the
///   lease stays with this consumer name until it expires, and a consumer of the same name
///   takes the partitions back at once. The batch is delivered again, and an event is never
///   acked twice, because its ack commits only with its handler's writes.
/// - Database errors other than a lost lease (`ES201`, which ends the batch and claims again)
///   are returned.
///
/// ```no_run
/// use event_store_client::{Consumer, EventStoreClient, EventStoreError};
///
/// # async fn demo(store: EventStoreClient) -> Result<(), EventStoreError> {
/// let mut consumer = Consumer::new(store, "mailer", "worker-a");
/// consumer
///     .run(|tx, event| {
///         Box::pin(async move {
///             sqlx::query("INSERT INTO mail_queue (position) VALUES ($1)")
///                 .bind(event.global_position)
///                 .execute(&mut **tx)
///                 .await?;
///             Ok::<_, sqlx::Error>(())
///         })
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Consumer {
    client: EventStoreClient,
    subscription: String,
    consumer: String,
    batch: i64,
    lease: Duration,
    idle_wait: Duration,
    /// Per partition, the size of the next batch after a handler failed in the middle of one
    /// (the events before the failure, handled again on their own).
    retry_prefix: BTreeMap<i32, i64>,
}

impl Consumer {
    /// A consumer of `subscription` under the name `consumer` (the lease holder: several
    /// consumers of one subscription share its partitions fairly). Batches of the client's
    /// page size, a lease of 30 s, an idle wait of 5 s.
    pub fn new(client: EventStoreClient, subscription: &str, consumer: &str) -> Self {
        let batch = client.options().page();
        Self {
            client,
            subscription: subscription.to_owned(),
            consumer: consumer.to_owned(),
            batch,
            lease: Duration::from_secs(30),
            idle_wait: Duration::from_secs(5),
            retry_prefix: BTreeMap::new(),
        }
    }

    /// At most this many events per transaction (at least 1).
    pub fn batch_size(mut self, events: i64) -> Self {
        self.batch = events.max(1);
        self
    }

    /// The lease `es.claim` takes; renewed every third of it while a batch runs. A consumer
    /// that stops (or is cancelled) holds its partitions until it ends.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_secs(1));
        self
    }

    /// How long [`run`](Self::run) waits with `es.wait` when every partition is empty before
    /// claiming again. `es.wait` watches one partition (`es.wait(name, partition, timeout_ms)`;
    /// the extension has no wait on several): the consumer waits on the first partition it
    /// holds, which an event appended there wakes at once; an event of another of its partitions
    /// is picked up when the wait ends, at most `idle_wait` later. With several partitions per
    /// consumer, a shorter `idle_wait` bounds that delay (each end of a wait costs a claim and a
    /// poll per partition).
    pub fn idle_wait(mut self, wait: Duration) -> Self {
        self.idle_wait = wait;
        self
    }

    /// Handles events for ever: [`run_once`](Self::run_once), and when it found nothing, waits
    /// (up to [`idle_wait`](Self::idle_wait), on the first partition it holds: see there for
    /// what that means with several). Returns only an error.
    pub async fn run<F, E>(&mut self, mut handler: F) -> Result<Infallible, EventStoreError>
    where
        F: for<'t> FnMut(
                &'t mut Transaction<'static, Postgres>,
                RecordedEvent,
            ) -> HandlerFuture<'t, E>
            + Send,
        E: Display,
    {
        loop {
            let (progress, partitions) = self.round(&mut handler).await?;
            if progress == Progress::default() {
                if let Some(&first) = partitions.first() {
                    self.client
                        .wait(&self.subscription, first, self.idle_wait)
                        .await?;
                } else {
                    tokio::time::sleep(self.idle_wait).await;
                }
            }
        }
    }

    /// Handles until a round finds no event (the subscription is drained, up to its gap-safe
    /// end); returns what was done in all.
    pub async fn run_until_idle<F, E>(
        &mut self,
        mut handler: F,
    ) -> Result<Progress, EventStoreError>
    where
        F: for<'t> FnMut(
                &'t mut Transaction<'static, Postgres>,
                RecordedEvent,
            ) -> HandlerFuture<'t, E>
            + Send,
        E: Display,
    {
        let mut total = Progress::default();
        loop {
            let (progress, _) = self.round(&mut handler).await?;
            if progress == Progress::default() {
                return Ok(total);
            }
            total.acked += progress.acked;
            total.failed += progress.failed;
            total.parked += progress.parked;
        }
    }

    /// One round: claims (renews) the partitions, and runs one batch on each.
    pub async fn run_once<F, E>(&mut self, mut handler: F) -> Result<Progress, EventStoreError>
    where
        F: for<'t> FnMut(
                &'t mut Transaction<'static, Postgres>,
                RecordedEvent,
            ) -> HandlerFuture<'t, E>
            + Send,
        E: Display,
    {
        Ok(self.round(&mut handler).await?.0)
    }

    async fn round<F, E>(
        &mut self,
        handler: &mut F,
    ) -> Result<(Progress, Vec<i32>), EventStoreError>
    where
        F: for<'t> FnMut(
                &'t mut Transaction<'static, Postgres>,
                RecordedEvent,
            ) -> HandlerFuture<'t, E>
            + Send,
        E: Display,
    {
        let partitions = self
            .client
            .claim(&self.subscription, &self.consumer, self.lease)
            .await?;
        let mut progress = Progress::default();
        for &partition in &partitions {
            let batch = {
                let work = std::pin::pin!(self.batch(partition, handler));
                let renew = std::pin::pin!(self.renew());
                match futures::future::select(work, renew).await {
                    Either::Left((batch, _)) => batch,
                    Either::Right((Err(e), _)) => Err(e),
                    Either::Right((Ok(never), _)) => match never {},
                }
            };
            self.retry_prefix.remove(&partition);
            match batch {
                Ok(Batch::Acked(n)) => progress.acked += n,
                Ok(Batch::Failed { parked, prefix }) => {
                    progress.failed += 1;
                    progress.parked += u64::from(parked);
                    if let Some(prefix) = prefix {
                        self.retry_prefix.insert(partition, prefix);
                    }
                }
                Ok(Batch::Empty) => {}
                // The lease went to another consumer: its checkpoint is fenced; claim again.
                Err(EventStoreError::LeasedByAnother { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((progress, partitions))
    }

    /// Renews the lease every third of it; returns only an error.
    async fn renew(&self) -> Result<Infallible, EventStoreError> {
        loop {
            tokio::time::sleep(self.lease / 3).await;
            self.client
                .claim(&self.subscription, &self.consumer, self.lease)
                .await?;
        }
    }

    #[tracing::instrument(name = "event_store_client.consumer.batch", skip(self, handler), fields(subscription = %self.subscription, consumer = %self.consumer), err)]
    async fn batch<F, E>(&self, partition: i32, handler: &mut F) -> Result<Batch, EventStoreError>
    where
        F: for<'t> FnMut(
                &'t mut Transaction<'static, Postgres>,
                RecordedEvent,
            ) -> HandlerFuture<'t, E>
            + Send,
        E: Display,
    {
        let limit = self
            .retry_prefix
            .get(&partition)
            .copied()
            .unwrap_or(self.batch);
        let consumer = Some(self.consumer.as_str());
        let mut tx = self.client.pool().begin().await?;
        let events = self
            .client
            .poll_in(&mut *tx, &self.subscription, partition, limit, consumer)
            .await?;
        let Some(last) = events.last().map(|e| e.global_position) else {
            tx.rollback().await?;
            return Ok(Batch::Empty);
        };
        let count = events.len() as u64;
        for (index, event) in events.into_iter().enumerate() {
            let position = event.global_position;
            if let Err(e) = handler(&mut tx, event).await {
                let error = e.to_string();
                tx.rollback().await?;
                tracing::warn!(partition, position, error = %error, "the handler failed");
                if index == 0 {
                    let parked = self
                        .client
                        .nack_in(
                            self.client.executor(),
                            &self.subscription,
                            partition,
                            position,
                            &error,
                            consumer,
                        )
                        .await?;
                    return Ok(Batch::Failed {
                        parked,
                        prefix: None,
                    });
                }
                return Ok(Batch::Failed {
                    parked: false,
                    prefix: Some(index as i64),
                });
            }
        }
        self.client
            .ack_in(&mut *tx, &self.subscription, partition, last, consumer)
            .await?;
        tx.commit().await?;
        Ok(Batch::Acked(count))
    }
}

/// What one batch did.
enum Batch {
    Empty,
    Acked(u64),
    /// The handler failed: `parked` when the nack parked the event; `prefix`, the number of
    /// events before the failing one, to handle again as a batch of their own.
    Failed {
        parked: bool,
        prefix: Option<i64>,
    },
}
