//! [`PoolExecutor`]: the client's pool as a sqlx executor that follows its [`ClientOptions`]:
//! in pooler-safe mode each statement runs inside a short transaction of its own.
//!
//! Why a transaction: sqlx sends even an unnamed statement (`persistent(false)`) in two round
//! trips, Parse/Describe/Sync to learn its parameter and column types, then Bind/Execute/Sync.
//! A pooler in transaction mode may hand the second round trip to another server connection
//! (the first one ended with the connection idle), where the unnamed statement does not exist:
//! `26000 unnamed prepared statement does not exist`, as `tests/client/tests/pgbouncer.rs`
//! measures with pgbouncer. Inside a transaction the pooler keeps the client on one server
//! connection until `COMMIT`, so `BEGIN`, the two round trips and `COMMIT` all run there and
//! leave nothing behind. The cost is two more round trips per call (`BEGIN`, `COMMIT`).
//!
//! [`ClientOptions`]: crate::ClientOptions

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sqlx::postgres::{PgPool, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Error, Execute, Executor, Postgres, Transaction};

/// The client's pool as a sqlx executor ([`EventStoreClient::executor`]): with
/// [`ClientOptions::pooler_safe`] each statement runs inside a transaction of its own
/// (`BEGIN` … `COMMIT`, rolled back when it fails), else it is the pool itself.
///
/// Every call of the client that is not given an executor uses it; pass it to the `*_in`
/// methods, or to your own queries, to get the same behaviour. Your own queries behind a
/// pooler also need `.persistent(false)` (a named statement outlives the transaction on its
/// server connection).
///
/// ```no_run
/// # async fn demo(store: event_store_client::EventStoreClient) -> Result<(), sqlx::Error> {
/// let n: i64 = sqlx::query_scalar("SELECT count(*) FROM es.events")
///     .persistent(false)
///     .fetch_one(store.executor())
///     .await?;
/// # Ok(()) }
/// ```
///
/// [`EventStoreClient::executor`]: crate::EventStoreClient::executor
/// [`ClientOptions::pooler_safe`]: crate::ClientOptions::pooler_safe
#[derive(Debug, Clone, Copy)]
pub struct PoolExecutor<'p> {
    pool: &'p PgPool,
    own_transaction: bool,
}

impl<'p> PoolExecutor<'p> {
    pub(crate) fn new(pool: &'p PgPool, own_transaction: bool) -> Self {
        Self {
            pool,
            own_transaction,
        }
    }

    /// Whether each statement runs in a transaction of its own (pooler-safe mode).
    pub fn in_own_transaction(&self) -> bool {
        self.own_transaction
    }
}

/// Commits the call's transaction after a success; rolls it back at once after a failure, so
/// the pooler gets its server connection back without waiting for the pool to clean up.
async fn finish<T>(
    tx: Transaction<'static, Postgres>,
    result: Result<T, Error>,
) -> Result<T, Error> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            // The statement's error is the one to report; a failed rollback only means the
            // connection is gone, and sqlx discards it.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

impl<'p> Executor<'p> for PoolExecutor<'p> {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.own_transaction {
            return self.pool.fetch_many(query);
        }
        let pool = self.pool.clone();
        // The whole result is read before COMMIT: its rows are returned only once the
        // transaction (an ack, an append) has committed.
        stream::once(async move {
            let mut tx = pool.begin().await?;
            let steps = (&mut *tx).fetch_many(query).try_collect::<Vec<_>>().await;
            finish(tx, steps).await
        })
        .map_ok(|steps| stream::iter(steps.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.own_transaction {
            return self.pool.fetch_optional(query);
        }
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut tx = pool.begin().await?;
            let row = (&mut *tx).fetch_optional(query).await;
            finish(tx, row).await
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, Error>>
    where
        'p: 'e,
    {
        // A prepared statement is the pool's (the client never prepares one itself).
        self.pool.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Postgres>, Error>>
    where
        'p: 'e,
    {
        self.pool.describe(sql)
    }
}
