//! Events of any serde type, the executor-taking calls, the streams, the pooler-safe mode and the
//! consumer helper, against a fresh database (see `support`): the consumer is cancelled in the
//! middle of a batch, and every event is then delivered again and handled exactly once.

mod support;

use event_store_client::{
    ClientOptions, Consumer, EventStoreClient, EventStoreError, ExpectedVersion, RecordedEvent,
    SubscriptionSpec,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use support::TestDb;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Shop {
    Ordered { sku: String },
    Paid { cents: i64 },
}

fn order(n: i64) -> [Shop; 2] {
    [
        Shop::Ordered {
            sku: format!("SKU-{n}"),
        },
        Shop::Paid { cents: n },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serde_events_round_trip_with_every_expected_version() {
    let db = TestDb::new("cc_serde").await;
    let store = db.client();
    let id = Uuid::new_v4();
    assert_eq!(
        store
            .append(id, ExpectedVersion::NoStream, &order(1))
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.load_as::<Shop>(id).await.unwrap(), order(1).to_vec());
    // Exact: the version read; a stale one is ES001 with the versions parsed.
    assert_eq!(
        store
            .append(id, ExpectedVersion::Exact(2), &[Shop::Paid { cents: 3 }])
            .await
            .unwrap(),
        3
    );
    match store
        .append(id, ExpectedVersion::Exact(2), &[Shop::Paid { cents: 3 }])
        .await
    {
        Err(EventStoreError::ConcurrencyConflict {
            expected, actual, ..
        }) => {
            assert_eq!((expected, actual), (2, 3))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.append(id, ExpectedVersion::NoStream, &order(2)).await,
        Err(EventStoreError::ConcurrencyConflict { .. })
    ));
    assert_eq!(
        store
            .append(id, ExpectedVersion::StreamExists, &order(2))
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        store
            .append(id, ExpectedVersion::Any, &order(3))
            .await
            .unwrap(),
        7
    );
    assert!(matches!(
        store
            .append(Uuid::new_v4(), ExpectedVersion::StreamExists, &order(4))
            .await,
        Err(EventStoreError::StreamNotFound { .. })
    ));
    // The old i64 / Option<i64> arguments convert.
    assert_eq!(store.append(id, 7, &order(5)).await.unwrap(), 9);
    assert_eq!(store.append(id, None, &order(6)).await.unwrap(), 11);
    // The raw form is still there, and decodes into the same type.
    let recorded = store.load_recorded(id, 0, None).await.unwrap();
    assert_eq!(recorded[1].data["cents"], 1);
    assert_eq!(
        recorded[1].decode::<Shop>().unwrap(),
        Shop::Paid { cents: 1 }
    );
    // Another type: a Serialization error naming the version.
    #[derive(Debug, Deserialize)]
    struct Other {
        #[allow(dead_code)]
        missing: i64,
    }
    match recorded[0].decode::<Other>() {
        Err(EventStoreError::Serialization(m)) => assert!(m.contains("version 1"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_join_the_callers_transaction() {
    let db = TestDb::new("cc_tx").await;
    let store = db.client();
    db.exec("CREATE TABLE outbox (id uuid)").await;
    let id = Uuid::new_v4();

    // Rolled back: neither the caller's row nor the events.
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO outbox VALUES ($1)")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    store
        .append_in(&mut *tx, id, ExpectedVersion::NoStream, &order(1))
        .await
        .unwrap();
    assert_eq!(store.stream_version_in(&mut *tx, id).await.unwrap(), 2);
    assert_eq!(store.load_in(&mut *tx, id, 0, None).await.unwrap().len(), 2);
    tx.rollback().await.unwrap();
    assert_eq!(store.stream_version(id).await.unwrap(), 0);

    // Committed: both.
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO outbox VALUES ($1)")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    store
        .append_in(&mut *tx, id, ExpectedVersion::NoStream, &order(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!((rows, store.stream_version(id).await.unwrap()), (1, 2));

    // A plain connection is an executor too.
    let mut conn = store.pool().acquire().await.unwrap();
    assert_eq!(store.read_all_in(&mut *conn, 0, 10).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_and_a_stream_read_as_streams_page_by_page() {
    let db = TestDb::new("cc_streams").await;
    let store =
        EventStoreClient::with_options(db.pool.clone(), ClientOptions::default().page_size(3));
    let id = Uuid::new_v4();
    for n in 0..5 {
        store.append(id, None, &order(n)).await.unwrap();
    }
    let all: Vec<RecordedEvent> = store.read_all_stream(0).try_collect().await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(
        all.windows(2)
            .all(|w| w[0].global_position < w[1].global_position)
    );
    assert_eq!(store.read_all(0, 100).await.unwrap(), all);
    let tail: Vec<RecordedEvent> = store
        .read_all_stream(all[6].global_position)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(tail, all[7..].to_vec());

    let versions: Vec<i64> = store
        .load_events_stream(id, 2)
        .map_ok(|e| e.version)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(versions, (3..=10).collect::<Vec<_>>());
    let typed: Vec<Shop> = store
        .load_events_stream(id, 0)
        .and_then(|e| async move { e.decode::<Shop>() })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(typed[..2], order(0));

    // A subscription as a stream: events in order, acked once the next one is asked for.
    store
        .create_subscription("s", &SubscriptionSpec::default())
        .await
        .unwrap();
    let sub = store.subscription_stream("s", 0, None, std::time::Duration::from_secs(30));
    let first: Vec<i64> = sub
        .take(7)
        .map_ok(|e| e.global_position)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        first,
        all[..7]
            .iter()
            .map(|e| e.global_position)
            .collect::<Vec<_>>()
    );
    // Pages of 3: the first two pages (6 events) were acked when the 7th was asked for.
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT checkpoint FROM es.subscriptions WHERE name = 's'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(checkpoint, all[5].global_position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooler_safe_mode_prepares_no_statement() {
    let db = TestDb::new("cc_pooler").await;
    for pooler_safe in [false, true] {
        // One connection, so pg_prepared_statements (per session) sees every call.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&db.url())
            .await
            .unwrap();
        let store = EventStoreClient::with_options(
            pool,
            ClientOptions::default()
                .pooler_safe(pooler_safe)
                .without_traceparent(),
        );
        let id = Uuid::new_v4();
        store
            .append(id, ExpectedVersion::NoStream, &order(1))
            .await
            .unwrap();
        store.load_as::<Shop>(id).await.unwrap();
        store.stream_version(id).await.unwrap();
        store.read_all(0, 10).await.unwrap();
        let open = store.open_account("Alice", 100).await.unwrap();
        store.deposit(open, 5, "d", None).await.unwrap();
        // The simple query protocol prepares nothing itself.
        let prepared: i64 = sqlx::raw_sql("SELECT count(*) FROM pg_prepared_statements")
            .fetch_one(store.pool())
            .await
            .map(|row| sqlx::Row::get(&row, 0))
            .unwrap();
        if pooler_safe {
            assert_eq!(
                prepared, 0,
                "pooler-safe: no named statement on the session"
            );
        } else {
            assert!(prepared >= 5, "named statements by default: {prepared}");
        }
        store.pool().close().await;
    }
}

/// The read model of the consumer tests: one row per handled event, so a second delivery
/// committed twice would be a primary-key violation.
async fn handled(db: &TestDb) -> Vec<i64> {
    sqlx::query_scalar("SELECT position FROM handled ORDER BY position")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn checkpoint(db: &TestDb, name: &str) -> i64 {
    sqlx::query_scalar("SELECT checkpoint FROM es.subscriptions WHERE name = $1")
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_cancelled_mid_batch_leaves_nothing_half_done() {
    let db = TestDb::new("cc_cancel").await;
    let store = db.client();
    db.exec("CREATE TABLE handled (position bigint PRIMARY KEY)")
        .await;
    store
        .create_subscription("c", &SubscriptionSpec::default())
        .await
        .unwrap();
    for n in 0..10 {
        store.append(Uuid::new_v4(), None, &order(n)).await.unwrap();
    }
    let positions: Vec<i64> = store
        .read_all(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.global_position)
        .collect();
    assert_eq!(positions.len(), 20);

    // The handler writes 5 events of a batch of 8, then never finishes: cancelled there.
    let (reached, mut reached_rx) = tokio::sync::mpsc::unbounded_channel::<i64>();
    let mut consumer = Consumer::new(store.clone(), "c", "worker-a").batch_size(8);
    let stop_at = positions[4];
    let run = consumer.run(move |tx, event| {
        let reached = reached.clone();
        Box::pin(async move {
            sqlx::query("INSERT INTO handled VALUES ($1)")
                .bind(event.global_position)
                .execute(&mut **tx)
                .await?;
            let _ = reached.send(event.global_position);
            if event.global_position == stop_at {
                std::future::pending::<()>().await;
            }
            Ok::<_, sqlx::Error>(())
        })
    });
    tokio::select! {
        result = run => panic!("the consumer returned: {result:?}"),
        _ = async { while reached_rx.recv().await != Some(stop_at) {} } => {}
    }
    drop(consumer);
    // Nothing of the batch committed: no row, no ack.
    assert_eq!(handled(&db).await, Vec::<i64>::new());
    assert_eq!(checkpoint(&db, "c").await, 0);

    // The same consumer name again: every event delivered again, each handled once.
    let mut again = Consumer::new(store.clone(), "c", "worker-a").batch_size(8);
    let progress = again
        .run_until_idle(|tx, event| {
            Box::pin(async move {
                sqlx::query("INSERT INTO handled VALUES ($1)")
                    .bind(event.global_position)
                    .execute(&mut **tx)
                    .await?;
                Ok::<_, sqlx::Error>(())
            })
        })
        .await
        .unwrap();
    assert_eq!(progress.acked, 20);
    assert_eq!(handled(&db).await, positions);
    assert_eq!(checkpoint(&db, "c").await, positions[19]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_rolls_back_and_nacks_with_its_text() {
    let db = TestDb::new("cc_nack").await;
    let store = db.client();
    db.exec("CREATE TABLE handled (position bigint PRIMARY KEY)")
        .await;
    store
        .create_subscription(
            "n",
            &SubscriptionSpec {
                max_attempts: 2,
                ..SubscriptionSpec::default()
            },
        )
        .await
        .unwrap();
    for n in 0..3 {
        store.append(Uuid::new_v4(), None, &order(n)).await.unwrap();
    }
    let positions: Vec<i64> = store
        .read_all(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.global_position)
        .collect();
    let poison = positions[3];
    let mut consumer = Consumer::new(store.clone(), "n", "worker-a").batch_size(100);
    let progress = consumer
        .run_until_idle(|tx, event| {
            Box::pin(async move {
                if event.global_position == poison {
                    return Err(format!("cannot handle {}", event.global_position));
                }
                sqlx::query("INSERT INTO handled VALUES ($1)")
                    .bind(event.global_position)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            })
        })
        .await
        .unwrap();
    // The poison event failed twice (the 2nd time parked); the others were handled once.
    assert_eq!(
        (progress.acked, progress.failed, progress.parked),
        (5, 3, 1)
    );
    let expected: Vec<i64> = positions.iter().copied().filter(|&p| p != poison).collect();
    assert_eq!(handled(&db).await, expected);
    let error: String =
        sqlx::query_scalar("SELECT error FROM es.parked_events WHERE global_position = $1")
            .bind(poison)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(error, format!("cannot handle {poison}"));
}
