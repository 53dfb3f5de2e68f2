//! The examples, run against a fresh database: the seed's `DepositHandler` (its code verbatim,
//! over this crate), the plain-sqlx snippet of the README, and the README's consumer.

mod support;

#[allow(dead_code)]
#[path = "../examples/consumer.rs"]
mod consumer;
#[allow(dead_code)] // its `main` is the example's
#[path = "../examples/deposit_handler.rs"]
mod deposit_handler;
#[allow(dead_code)]
#[path = "../examples/sqlx_plain.rs"]
mod sqlx_plain;

use deposit_handler::{CommandError, DepositCommand, DepositHandler};
use event_store_client::{
    Account, AccountEvent, AccountStatus, EventStore, EventStoreClient, EventStoreError,
    SnapshotStore,
};
use std::sync::Arc;
use support::TestDb;
use uuid::Uuid;

/// The example as shipped: a few deposits, no snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_handler_example_runs() {
    let db = TestDb::new("ex_deposit").await;
    let (id, balance) = deposit_handler::run(&db.url(), 5).await.unwrap();
    assert_eq!(balance, 1_000 + 5 * 100);
    let state = db.client().account_state(id).await.unwrap();
    assert_eq!((state.balance_cents, state.version), (1_500, 6));
}

/// The seed's handler across its own snapshot (version 100) and beyond: with the store's
/// automatic snapshots off, the only snapshot is the one the handler saves, and every later
/// command loads it through `load_snapshot`. The balance stays right: the fold-forward gives the
/// seed's handler an empty tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_handler_is_correct_across_its_snapshot() {
    let db = TestDb::new("ex_snapshot").await;
    db.exec(&format!(
        "ALTER DATABASE {} SET es.snapshot_interval = 0",
        db.name()
    ))
    .await;
    let (id, balance) = deposit_handler::run(&db.url(), 104).await.unwrap();
    assert_eq!(balance, 1_000 + 104 * 100);
    let store = db.client();
    let (stored, version) = store.load_stored_snapshot(id).await.unwrap().unwrap();
    assert_eq!(version, 100, "the handler's own snapshot");
    assert_eq!(stored.balance(), 1_000 + 99 * 100);
    let state = store.account_state(id).await.unwrap();
    assert_eq!(
        (state.balance_cents, state.version),
        (1_000 + 104 * 100, 105)
    );
}

/// Why `load_snapshot` folds forward: a snapshot store that returns the raw stored snapshot
/// triggers the seed's bug (the account rebuilt from the tail alone). The store still keeps the
/// history right: the deposits are facts it checks itself, and the wrong state the handler
/// would save as a snapshot is refused (ES005).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_bug_with_raw_snapshots_cannot_corrupt_the_store() {
    struct RawSnapshots(EventStoreClient);

    #[async_trait::async_trait]
    impl SnapshotStore for RawSnapshots {
        async fn save_snapshot(
            &self,
            aggregate_id: Uuid,
            version: i64,
            state: &Account,
        ) -> Result<(), EventStoreError> {
            self.0.save_snapshot(aggregate_id, version, state).await
        }

        async fn load_snapshot(
            &self,
            aggregate_id: Uuid,
        ) -> Result<Option<(Account, i64)>, EventStoreError> {
            self.0.load_stored_snapshot(aggregate_id).await
        }
    }

    let db = TestDb::new("ex_seed_bug").await;
    db.exec(&format!(
        "ALTER DATABASE {} SET es.snapshot_interval = 0",
        db.name()
    ))
    .await;
    let store = db.client();
    let mut account = Account::open("Alice".into(), 1_000).unwrap();
    let id = account.id();
    account.deposit(500, "salary".into()).unwrap();
    store
        .append_events(id, 0, account.take_uncommitted_events())
        .await
        .unwrap();
    store.save_snapshot(id, 2, &account).await.unwrap();

    let handler = DepositHandler::new(
        Arc::new(store.clone()),
        Arc::new(RawSnapshots(store.clone())),
    );
    let deposit = |cents| DepositCommand {
        account_id: id,
        amount_cents: cents,
        description: "d".into(),
    };
    // Snapshot at 2, empty tail: right. Then snapshot at 2 + tail [3]: the seed rebuilds the
    // account from event 3 alone, but the deposit itself is a valid fact and is stored.
    handler.handle(deposit(100)).await.unwrap();
    handler.handle(deposit(100)).await.unwrap();
    let state = store.account_state(id).await.unwrap();
    assert_eq!((state.balance_cents, state.version), (1_700, 4));

    // What that handler believed (the tail alone), saved as a snapshot: refused.
    let tail = store.load_events_from_version(id, 2).await.unwrap();
    let believed = Account::from_events(tail).unwrap();
    assert_eq!(believed.balance(), 200);
    assert!(matches!(
        store.save_snapshot(id, 4, &believed).await,
        Err(EventStoreError::InvalidSnapshot { .. })
    ));

    // The same handler with the client's own snapshot store is right again.
    let handler = DepositHandler::new(Arc::new(store.clone()), Arc::new(store.clone()));
    handler.handle(deposit(100)).await.unwrap();
    assert_eq!(store.account_state(id).await.unwrap().balance_cents, 1_800);

    // A frozen account: the handler's client-side rule refuses, and the store would too.
    store.freeze_account(id, "audit").await.unwrap();
    assert!(matches!(
        handler.handle(deposit(100)).await,
        Err(CommandError::DomainError(_))
    ));
    let forged = AccountEvent::new_deposited(id, 7, 100, "anyway".into());
    assert!(matches!(
        store.append_events(id, 6, vec![forged]).await,
        Err(EventStoreError::AccountNotActive {
            status: AccountStatus::Frozen,
            ..
        })
    ));
}

/// The plain-sqlx snippet: jsonb[] binding, ES001 read from the PgDatabaseError, read_all
/// paging with bigint arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_plain_example_runs() {
    let db = TestDb::new("ex_sqlx").await;
    let (expected, actual, read) = sqlx_plain::run(&db.url())
        .await
        .unwrap_or_else(|e| panic!("examples/sqlx_plain.rs: {e}"));
    assert_eq!((expected, actual, read), (0, 2, 2));
}

/// The README's consumer: serde events appended, handled in the consumer's transaction, the
/// read model and the checkpoint committed together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_example_runs() {
    let db = TestDb::new("ex_consumer").await;
    let (handled, revenue) = consumer::run(&db.url(), 10)
        .await
        .unwrap_or_else(|e| panic!("examples/consumer.rs: {e}"));
    assert_eq!((handled, revenue), (20, 10 * 1_000));
    // Run again: the subscription exists and is drained; nothing is handled twice.
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT checkpoint FROM es.subscriptions WHERE name = 'revenue'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM es.events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(checkpoint, last);
}
