//! The life of a stream through the client (docs/reference.md §14): `delete_stream` (soft, hard),
//! `undelete_stream`, `truncate_stream`, and the typed errors they and the reads after them
//! give (`StreamDeleted`, `StreamTruncated`, `AccountNotDeletable`, `InvalidSnapshot`),
//! against a real cluster (see `support`).

mod support;

use event_store_client::{EventStore, EventStoreError};
use serde_json::json;
use support::TestDb;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_undelete_and_tombstone_a_stream() {
    let db = TestDb::new("lifecycle_delete").await;
    let store = db.client();
    let id = Uuid::new_v4();
    let events = vec![json!({"type": "A"}), json!({"type": "B"})];
    assert_eq!(store.append_json(id, Some(0), events).await.unwrap(), 2);

    match store.delete_stream(id, Some(1), false).await {
        Err(EventStoreError::ConcurrencyConflict {
            expected: 1,
            actual: 2,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(store.delete_stream(id, Some(2), false).await.unwrap(), 3);
    assert!(store.load_recorded(id, 0, None).await.unwrap().is_empty());
    match store
        .append_json(id, None, vec![json!({"type": "C"})])
        .await
    {
        Err(err @ EventStoreError::StreamDeleted { hard: false, .. }) => {
            assert_eq!(err.sqlstate(), Some("ES007"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.delete_stream(id, None, false).await,
        Err(EventStoreError::StreamDeleted { hard: false, .. })
    ));

    assert_eq!(store.undelete_stream(id).await.unwrap(), 4);
    let types: Vec<String> = store
        .load_recorded(id, 0, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, ["A", "B", "$stream_deleted", "$stream_undeleted"]);
    match store.undelete_stream(id).await {
        Err(err @ EventStoreError::Database(_)) => assert_eq!(err.sqlstate(), Some("55000")),
        other => panic!("{other:?}"),
    }

    assert_eq!(store.delete_stream(id, Some(4), true).await.unwrap(), 5);
    let left: Vec<(i64, String)> = sqlx::query_as(
        "SELECT version, event_type FROM es.events WHERE stream_id = $1 ORDER BY version",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(left, [(5, "$stream_deleted".to_owned())]);
    for result in [
        store.undelete_stream(id).await,
        store.delete_stream(id, None, true).await,
        store
            .append_json(id, None, vec![json!({"type": "C"})])
            .await,
    ] {
        assert!(
            matches!(
                result,
                Err(EventStoreError::StreamDeleted { hard: true, .. })
            ),
            "{result:?}"
        );
    }
    // The reserved types are the store's own.
    assert!(matches!(
        store
            .append_json(
                Uuid::new_v4(),
                None,
                vec![json!({"type": "$stream_deleted"})]
            )
            .await,
        Err(EventStoreError::InvalidEvent { .. })
    ));
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM es.data_audit WHERE target = $1::text")
            .bind(id.to_string())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(audited, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_is_deleted_only_when_empty_and_truncated_after_a_snapshot() {
    let db = TestDb::new("lifecycle_account").await;
    let store = db.client();
    let id = store.open_account("Dee", 500).await.unwrap();
    match store.delete_stream(id, None, false).await {
        Err(err @ EventStoreError::AccountNotDeletable { balance: 500, .. }) => {
            assert_eq!(err.sqlstate(), Some("ES105"));
        }
        other => panic!("{other:?}"),
    }
    for amount in [100, 200, 300] {
        store.deposit(id, amount, "pay", None).await.unwrap();
    }
    // no snapshot at version 2: the truncation is refused
    assert!(matches!(
        store.truncate_stream(id, 3).await,
        Err(EventStoreError::InvalidSnapshot { .. })
    ));
    let at_2 = store.account_state_at(id, None, Some(2)).await.unwrap();
    sqlx::query("SELECT es.save_snapshot($1, 2, $2)")
        .bind(id)
        .bind(serde_json::to_value(&at_2).unwrap())
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(store.truncate_stream(id, 3).await.unwrap(), 2);
    assert_eq!(store.account_state(id).await.unwrap().balance_cents, 1_100);
    assert_eq!(
        store
            .account_state_at(id, None, Some(2))
            .await
            .unwrap()
            .balance_cents,
        600
    );
    match store.account_state_at(id, None, Some(1)).await {
        Err(err @ EventStoreError::StreamTruncated { .. }) => {
            assert_eq!(err.sqlstate(), Some("ES008"));
            assert!(matches!(
                err,
                EventStoreError::StreamTruncated {
                    before_version: 3,
                    asked_from: 1,
                    ..
                }
            ));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.load_events(id).await,
        Err(EventStoreError::StreamTruncated { .. })
    ));
    assert_eq!(store.load_recorded(id, 2, None).await.unwrap().len(), 2);
    store.withdraw(id, 1_100, "all", None).await.unwrap();
    assert_eq!(store.delete_stream(id, None, true).await.unwrap(), 6);
    assert!(matches!(
        store.account_state(id).await,
        Err(EventStoreError::StreamDeleted { hard: true, .. })
    ));
}
