//! The seed's `EventStore` and `SnapshotStore` over the extension, and every typed error a
//! client can provoke, against a real cluster (see `support`).

mod support;

use event_store_client::{
    Account, AccountEvent, AccountStatus, EventStore, EventStoreClient, EventStoreError,
    SnapshotStore,
};
use serde_json::json;
use std::sync::Arc;
use support::TestDb;
use uuid::Uuid;

/// An account with a few events recorded by the seed's aggregate, not yet appended.
fn seed_account() -> Account {
    let mut account = Account::open("Alice".into(), 10_000).unwrap();
    account.deposit(2_500, "salary".into()).unwrap();
    account.withdraw(1_000, "rent".into()).unwrap();
    account
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_events_round_trip() {
    let db = TestDb::new("round_trip").await;
    let store = db.client();
    let mut account = seed_account();
    let id = account.id();
    let first = account.take_uncommitted_events();
    // The seed's handler passes new_version - events.len(): 0 for a new stream.
    store
        .append_events(id, account.version() - first.len() as i64, first.clone())
        .await
        .unwrap();
    account.deposit(700, "bonus".into()).unwrap();
    account.freeze("audit".into()).unwrap();
    let second = account.take_uncommitted_events();
    store.append_events(id, 3, second.clone()).await.unwrap();

    let all: Vec<AccountEvent> = first.iter().chain(&second).cloned().collect();
    assert_eq!(store.load_events(id).await.unwrap(), all);
    assert_eq!(store.load_events_from_version(id, 3).await.unwrap(), second);
    assert!(
        store
            .load_events_from_version(id, 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.load_events(Uuid::new_v4()).await.unwrap().is_empty());

    let rebuilt = Account::from_events(store.load_events(id).await.unwrap()).unwrap();
    assert_eq!(rebuilt, account);
    assert_eq!(
        (rebuilt.version(), rebuilt.balance(), *rebuilt.status()),
        (5, 12_200, AccountStatus::Frozen)
    );
    // The store folds the same history to the same state.
    assert_eq!(&store.account_state(id).await.unwrap(), account.state());
    // An empty batch checks the version and writes nothing.
    store.append_events(id, 5, vec![]).await.unwrap();
    assert_eq!(store.stream_version(id).await.unwrap(), 5);
    // The stored rows carry the metadata columns from the seed's JSON.
    let recorded = store.load_recorded(id, 0, None).await.unwrap();
    for (row, event) in recorded.iter().zip(&all) {
        let m = event.metadata();
        assert_eq!((row.stream_id, row.version), (id, m.sequence_number));
        assert_eq!(row.event_id, m.event_id);
        assert_eq!(row.account_event().unwrap(), *event);
    }
    assert_eq!(store.load_recorded(id, 1, Some(2)).await.unwrap().len(), 2);
}

/// Writers that read the same version race; exactly one appends, the others get
/// `ConcurrencyConflict` with the version they expected and the one the winner made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_appends_give_one_winner_and_typed_conflicts() {
    let db = TestDb::new("race").await;
    let store: Arc<dyn EventStore> = Arc::new(db.client());
    let mut account = seed_account();
    let id = account.id();
    store
        .append_events(id, 0, account.take_uncommitted_events())
        .await
        .unwrap();
    let writers = 6;
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let store = Arc::clone(&store);
            let mut mine = account.clone();
            tokio::spawn(async move {
                mine.deposit(100 + i, format!("writer {i}")).unwrap();
                store
                    .append_events(id, 3, mine.take_uncommitted_events())
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => won += 1,
            Err(EventStoreError::ConcurrencyConflict {
                expected, actual, ..
            }) => assert_eq!((expected, actual), (3, 4)),
            Err(other) => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.load_events(id).await.unwrap().len(), 4);

    // A new account over an existing stream: expected 0, actual 4.
    let mut again = Account::from_events(store.load_events(id).await.unwrap()).unwrap();
    again.deposit(1, "late".into()).unwrap();
    match store
        .append_events(id, 0, again.take_uncommitted_events())
        .await
    {
        Err(EventStoreError::ConcurrencyConflict {
            expected: 0,
            actual: 4,
            message,
        }) => assert!(message.contains(&id.to_string()), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_error_is_typed() {
    let db = TestDb::new("errors").await;
    let store = db.client();
    let generic = Uuid::new_v4();

    // ES001 with expected -1 / N.
    store
        .append_json(generic, Some(0), vec![json!({"type": "A"})])
        .await
        .unwrap();
    assert!(matches!(
        store
            .append_json(generic, Some(7), vec![json!({"type": "A"})])
            .await,
        Err(EventStoreError::ConcurrencyConflict {
            expected: 7,
            actual: 1,
            ..
        })
    ));

    // ES002: a stream that must exist, an account that does not.
    let missing = Uuid::new_v4();
    assert!(matches!(
        store.append_json(missing, Some(-1), vec![json!({"type": "A"})]).await,
        Err(EventStoreError::StreamNotFound { message }) if message.contains(&missing.to_string())
    ));
    assert!(matches!(
        store.deposit(missing, 5, "", None).await,
        Err(EventStoreError::StreamNotFound { message }) if message.contains("account")
    ));

    // ES003: no type; a seed event whose sequence_number is not the version it gets.
    assert!(matches!(
        store.append_json(generic, None, vec![json!({"typ": "A"})]).await,
        Err(EventStoreError::InvalidEvent { message }) if message.contains("\"type\"")
    ));
    let mut account = seed_account();
    let id = account.id();
    let events = account.take_uncommitted_events();
    assert!(matches!(
        store.append_events(id, 0, events[1..].to_vec()).await,
        Err(EventStoreError::InvalidEvent { .. })
    ));
    store.append_events(id, 0, events.clone()).await.unwrap();

    // ES004: stored in another stream, twice in one batch.
    let taken = events[0].metadata().event_id;
    match store
        .append_json(
            Uuid::new_v4(),
            Some(0),
            vec![json!({"type": "A", "event_id": taken})],
        )
        .await
    {
        Err(EventStoreError::DuplicateEventId {
            event_id,
            stored_in,
            ..
        }) => {
            assert_eq!(event_id, taken);
            assert_eq!(stored_in, Some((id, 1)));
        }
        other => panic!("{other:?}"),
    }
    let twice = Uuid::new_v4();
    match store
        .append_json(
            Uuid::new_v4(),
            Some(0),
            vec![
                json!({"type": "A", "event_id": twice}),
                json!({"type": "B", "event_id": twice}),
            ],
        )
        .await
    {
        Err(EventStoreError::DuplicateEventId {
            event_id,
            stored_in: None,
            detail,
            ..
        }) => {
            assert_eq!(event_id, twice);
            assert_eq!(
                detail.as_deref(),
                Some("the event id is already stored in this batch, at positions 1 and 2")
            );
        }
        other => panic!("{other:?}"),
    }
    // The seed's retry: the same events again right after the same version are a no-op.
    store.append_events(id, 0, events.clone()).await.unwrap();
    assert_eq!(store.stream_version(id).await.unwrap(), 3);

    // ES005: a version past the head; a state that is not the history's.
    assert!(matches!(
        store.save_snapshot(id, 9, &account).await,
        Err(EventStoreError::InvalidSnapshot { detail: Some(d), .. }) if d == "current stream version: 3"
    ));
    let mut forged = account.clone();
    forged.deposit(1_000_000, "forged".into()).unwrap();
    let forged = Account::from_state(
        id,
        event_store_client::AccountState {
            version: 3,
            ..forged.state().clone()
        },
    );
    assert!(matches!(
        store.save_snapshot(id, 3, &forged).await,
        Err(EventStoreError::InvalidSnapshot { detail: Some(d), .. }) if d.starts_with("the history gives: ")
    ));

    // ES101, ES103, ES102 (Frozen, then Closed), through the commands and the append path.
    assert!(matches!(
        store.withdraw(id, 1_000_000, "car", None).await,
        Err(EventStoreError::InsufficientFunds {
            available: 11_500,
            requested: 1_000_000,
            ..
        })
    ));
    let mut overdraft = Account::from_events(store.load_events(id).await.unwrap()).unwrap();
    overdraft.deposit(1, "x".into()).unwrap();
    let mut events = overdraft.take_uncommitted_events();
    // The seed's aggregate would refuse this withdrawal; the store refuses it whoever sends it.
    events.push(AccountEvent::new_withdrawn(
        id,
        5,
        1_000_000,
        "overdraft".into(),
    ));
    assert!(matches!(
        store.append_events(id, 3, events).await,
        Err(EventStoreError::InsufficientFunds {
            available: 11_501,
            requested: 1_000_000,
            ..
        })
    ));
    assert!(matches!(
        store.deposit(id, -5, "", None).await,
        Err(EventStoreError::InvalidAmount { message }) if message.contains("-5")
    ));
    assert!(matches!(
        store.open_account("Bob", -1).await,
        Err(EventStoreError::InvalidAmount { .. })
    ));
    store.freeze_account(id, "audit").await.unwrap();
    assert!(matches!(
        store.deposit(id, 5, "", None).await,
        Err(EventStoreError::AccountNotActive {
            status: AccountStatus::Frozen,
            ..
        })
    ));
    store.close_account(id, "moved").await.unwrap();
    assert!(matches!(
        store.close_account(id, "again").await,
        Err(EventStoreError::AccountNotActive {
            status: AccountStatus::Closed,
            ..
        })
    ));

    // ES104: an account command on a generic stream.
    assert!(matches!(
        store.deposit(generic, 5, "", None).await,
        Err(EventStoreError::NotAnAccount { message }) if message.contains(&generic.to_string())
    ));

    // 22023 / 22004.
    assert!(matches!(
        store.append_json(generic, Some(-2), vec![json!({"type": "A"})]).await,
        Err(EventStoreError::InvalidArgument { code, message }) if code == "22023" && message.contains("expected_version")
    ));
    assert!(matches!(
        store.load_recorded(generic, 0, Some(-1)).await,
        Err(EventStoreError::InvalidArgument { code, .. }) if code == "22023"
    ));
    let null: Result<i64, EventStoreError> =
        sqlx::query_scalar("SELECT es.append_events($1, NULL, NULL)")
            .bind(generic)
            .fetch_one(&db.pool)
            .await
            .map_err(EventStoreError::from);
    assert!(matches!(
        null,
        Err(EventStoreError::InvalidArgument { code, message }) if code == "22004" && message.contains("events")
    ));

    // ES202 and ES201: subscriptions, through `From<sqlx::Error>`.
    let typed =
        |r: Result<sqlx::postgres::PgQueryResult, sqlx::Error>| r.map_err(EventStoreError::from);
    assert!(matches!(
        typed(sqlx::query("SELECT es.ack('nosuch', 0, 1)").execute(&db.pool).await),
        Err(EventStoreError::NoSuchSubscription { message }) if message.contains("nosuch")
    ));
    db.exec("SELECT es.create_subscription('orders')").await;
    db.exec("SELECT es.claim('orders', 'worker, lease until: 1')")
        .await;
    match typed(
        sqlx::query("SELECT es.poll('orders', 0, 10, 'worker-2')")
            .execute(&db.pool)
            .await,
    ) {
        Err(EventStoreError::LeasedByAnother {
            owner, lease_until, ..
        }) => {
            assert_eq!(owner, "worker, lease until: 1");
            assert!(lease_until.starts_with("20"), "{lease_until}");
        }
        other => panic!("{other:?}"),
    }

    // Anything else keeps the whole sqlx error: a duplicate subscription (42710).
    match typed(
        sqlx::query("SELECT es.create_subscription('orders')")
            .execute(&db.pool)
            .await,
    ) {
        Err(err @ EventStoreError::Database(_)) => assert_eq!(err.sqlstate(), Some("42710")),
        other => panic!("{other:?}"),
    }

    // Serialization: a stream whose events are not the seed's.
    assert!(matches!(
        store.load_events(generic).await,
        Err(EventStoreError::Serialization(message)) if message.contains("version 1")
    ));
}

/// `load_snapshot` returns the newest snapshot folded to the head; `load_stored_snapshot` the
/// stored one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_fold_forward_to_the_head() {
    let db = TestDb::new("snapshots").await;
    let store: EventStoreClient = db.client();
    let mut account = seed_account();
    let id = account.id();
    store
        .append_events(id, 0, account.take_uncommitted_events())
        .await
        .unwrap();
    assert!(store.load_snapshot(id).await.unwrap().is_none());
    assert!(store.load_stored_snapshot(id).await.unwrap().is_none());
    assert!(store.load_snapshot(Uuid::new_v4()).await.unwrap().is_none());

    store.save_snapshot(id, 3, &account).await.unwrap();
    let at_three = account.clone();
    account.deposit(500, "tip".into()).unwrap();
    account.withdraw(200, "lunch".into()).unwrap();
    store
        .append_events(id, 3, account.take_uncommitted_events())
        .await
        .unwrap();

    let (stored, version) = store.load_stored_snapshot(id).await.unwrap().unwrap();
    assert_eq!(version, 3);
    assert_eq!(stored, at_three);

    let (head, version) = store.load_snapshot(id).await.unwrap().unwrap();
    assert_eq!(version, 5);
    assert_eq!(head.id(), id);
    assert_eq!(head.state(), account.state());
    assert_eq!(head.balance(), 11_800);
    // So the seed's handler loads an empty tail.
    assert!(
        store
            .load_events_from_version(id, version)
            .await
            .unwrap()
            .is_empty()
    );

    // Saving the head state is accepted; it becomes the stored snapshot.
    store.save_snapshot(id, 5, &head).await.unwrap();
    assert_eq!(store.load_stored_snapshot(id).await.unwrap().unwrap().1, 5);
}

/// Appends to different streams racing with one event id: exactly one stores it, every other
/// gets `DuplicateEventId` for that id (where the server knows the place, the winner's stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_duplicate_event_ids_are_typed() {
    let db = TestDb::new("dup_race").await;
    let store = Arc::new(db.client());
    let event_id = Uuid::new_v4();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let stream = Uuid::new_v4();
                let event = json!({"type": "Paid", "event_id": event_id});
                (
                    stream,
                    store.append_json(stream, Some(0), vec![event]).await,
                )
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let winners: Vec<Uuid> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, result) in &results {
        match result {
            Ok(version) => assert_eq!(*version, 1),
            Err(EventStoreError::DuplicateEventId {
                event_id: id,
                stored_in,
                ..
            }) => {
                assert_eq!(*id, event_id);
                if let Some(place) = stored_in {
                    assert_eq!(*place, (winners[0], 1));
                }
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}
