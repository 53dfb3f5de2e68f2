//! The account commands, the audit reads and the global log through the client, and the seed's
//! serde types decoding what the commands write (docs/reference.md §5).

mod support;

use event_store_client::{AccountEvent, AccountStatus, EventStore, EventStoreError, RecordedEvent};
use serde_json::Value;
use support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_in_the_database() {
    let db = TestDb::new("commands").await;
    let store = db.client();
    let id = store.open_account("Alice", 1_000).await.unwrap();
    assert_eq!(store.deposit(id, 500, "salary", None).await.unwrap(), 2);
    assert_eq!(store.withdraw(id, 200, "rent", Some(2)).await.unwrap(), 3);
    // A stale expected version is a typed conflict.
    assert!(matches!(
        store.deposit(id, 1, "late", Some(2)).await,
        Err(EventStoreError::ConcurrencyConflict {
            expected: 2,
            actual: 3,
            ..
        })
    ));
    let state = store.account_state(id).await.unwrap();
    assert_eq!(
        (
            state.holder_name.as_str(),
            state.balance_cents,
            state.status,
            state.version
        ),
        ("Alice", 1_300, AccountStatus::Active, 3)
    );
    assert_eq!(store.freeze_account(id, "audit").await.unwrap(), 4);
    assert_eq!(store.close_account(id, "moved").await.unwrap(), 5);

    // Time travel.
    let at_two = store.account_state_at(id, None, Some(2)).await.unwrap();
    assert_eq!((at_two.balance_cents, at_two.version), (1_500, 2));

    let history = store.account_history(id).await.unwrap();
    let summary: Vec<_> = history
        .iter()
        .map(|h| {
            (
                h.version,
                h.event_type.as_str(),
                h.amount_cents,
                h.balance_cents,
                h.status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "Opened", Some(1_000), 1_000, AccountStatus::Active),
            (2, "Deposited", Some(500), 1_500, AccountStatus::Active),
            (3, "Withdrawn", Some(-200), 1_300, AccountStatus::Active),
            (4, "Frozen", None, 1_300, AccountStatus::Frozen),
            (5, "Closed", None, 1_300, AccountStatus::Closed),
        ]
    );
    assert_eq!(history[1].description.as_deref(), Some("salary"));
}

/// Every event a command writes decodes as the seed's `AccountEvent`, with the metadata the
/// store stored in its columns (docs/reference.md §5: the commands write the seed's whole serde shape).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_written_events_decode_as_the_seeds_account_events() {
    let db = TestDb::new("decode").await;
    let store = db.client();
    let id = store.open_account("Alice", 1_000).await.unwrap();
    store.deposit(id, 500, "salary", None).await.unwrap();
    store.withdraw(id, 200, "rent", None).await.unwrap();
    store.freeze_account(id, "audit").await.unwrap();
    store.close_account(id, "moved").await.unwrap();

    // Through the seed's trait.
    let events = store.load_events(id).await.unwrap_or_else(|e| {
        panic!("the commands' events do not decode as the seed's AccountEvent: {e}")
    });
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.metadata().event_type.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "AccountOpened",
            "MoneyDeposited",
            "MoneyWithdrawn",
            "AccountFrozen",
            "AccountClosed"
        ]
    );
    assert!(matches!(
        &events[0],
        AccountEvent::Opened { account_holder, initial_balance_cents: 1_000, .. } if account_holder == "Alice"
    ));
    assert!(matches!(
        &events[2],
        AccountEvent::Withdrawn { amount_cents: 200, description, .. } if description == "rent"
    ));
    assert!(matches!(&events[4], AccountEvent::Closed { reason, .. } if reason == "moved"));

    // And from the raw rows: `data` decodes with serde_json::from_value, and its metadata is
    // the row's columns.
    let rows: Vec<(Value, uuid::Uuid, i64, chrono::DateTime<chrono::Utc>, i32)> = sqlx::query_as(
        "SELECT data, event_id, version, occurred_at, event_version FROM es.events \
         WHERE stream_id = $1 ORDER BY version",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 5);
    for (data, event_id, version, occurred_at, event_version) in rows {
        let event = serde_json::from_value::<AccountEvent>(data.clone())
            .unwrap_or_else(|e| panic!("version {version}: {e}: {data}"));
        let m = event.metadata();
        assert_eq!(m.event_id, event_id, "{data}");
        assert_eq!(m.aggregate_id, id, "{data}");
        assert_eq!(m.sequence_number, version, "{data}");
        assert_eq!(m.occurred_at, occurred_at, "{data}");
        assert_eq!(m.event_version, event_version, "{data}");
        assert_eq!(events[version as usize - 1], event);
    }
}

/// `read_all(after, max_count)` pages the global log with bigint arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_all_pages_the_global_log() {
    let db = TestDb::new("read_all").await;
    let store = db.client();
    let a = store.open_account("A", 10).await.unwrap();
    let b = store.open_account("B", 20).await.unwrap();
    store.deposit(a, 1, "x", None).await.unwrap();
    store.deposit(b, 2, "y", None).await.unwrap();
    store.withdraw(a, 3, "z", None).await.unwrap();

    let mut seen: Vec<RecordedEvent> = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .read_all(after, 2)
            .await
            .unwrap_or_else(|e| panic!("es.read_all(bigint, bigint): {e}"));
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.global_position;
        seen.extend(page);
    }
    let order: Vec<_> = seen.iter().map(|e| (e.stream_id, e.version)).collect();
    assert_eq!(order, [(a, 1), (b, 1), (a, 2), (b, 2), (a, 3)]);
    assert!(
        seen.windows(2)
            .all(|w| w[0].global_position < w[1].global_position)
    );
    assert_eq!(seen[4].event_type, "Withdrawn");
    assert_eq!(seen[4].data["amount_cents"], 3);
    // Past the end: empty. A negative count: a typed invalid argument.
    assert!(store.read_all(after, 10).await.unwrap().is_empty());
    assert!(matches!(
        store.read_all(0, -1).await,
        Err(EventStoreError::InvalidArgument { code, .. }) if code == "22023"
    ));
    // Beyond the int range (an i64 count is no problem for the bigint signature).
    assert_eq!(
        store
            .read_all(0, i64::from(i32::MAX) + 1)
            .await
            .unwrap()
            .len(),
        5
    );
}
