//! Retention and archiving through the typed client (docs/reference.md §14): a policy set, read back,
//! paused and resumed, the worker's removal seen through `retention`, an invalid value as a
//! typed error, and `archive` with reads through the archive unchanged.

mod support;

use event_store_client::{EventStoreClient, EventStoreError};
use serde_json::json;
use std::time::{Duration, Instant};
use support::TestDb;
use uuid::Uuid;

/// Waits (at most 60 s) until the policy of `stream_type` has nothing expired left.
async fn until_applied(store: &EventStoreClient, stream_type: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let policies = store.retention().await.unwrap();
        let p = policies
            .iter()
            .find(|p| p.stream_type == stream_type)
            .expect("the policy");
        if p.events_expired == 0 {
            return p.events_removed;
        }
        assert!(Instant::now() < deadline, "the worker did not apply {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_policy_and_archive_through_the_client() {
    let db = TestDb::new("retention").await;
    let store = db.client();
    let stream = Uuid::from_u128(0x7e7e_0001);
    let events: Vec<_> = (1..=6).map(|i| json!({"type": "Tick", "n": i})).collect();
    store.append_json(stream, Some(0), events).await.unwrap();

    // invalid values are typed errors, and nothing is set
    let err = store.set_retention("", None, Some(0)).await.unwrap_err();
    assert!(
        matches!(&err, EventStoreError::InvalidArgument { code, .. } if code == "22023"),
        "{err:?}"
    );
    let err = store
        .set_retention_paused(Some("nope"), true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventStoreError::InvalidArgument { .. }),
        "{err:?}"
    );
    assert!(store.retention().await.unwrap().is_empty());

    // a paused policy first: read back as set. It is created with a limit that expires nothing
    // and paused before its real limit is set (a change keeps the pause): set unpaused, the
    // worker, woken by the call, could remove events before the pause
    store
        .set_retention("", Some(Duration::from_secs(86_400)), Some(100))
        .await
        .unwrap();
    assert_eq!(store.set_retention_paused(Some(""), true).await.unwrap(), 1);
    store
        .set_retention("", Some(Duration::from_secs(86_400)), Some(2))
        .await
        .unwrap();
    let policies = store.retention().await.unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].stream_type, "");
    assert_eq!(policies[0].max_age, Some(Duration::from_secs(86_400)));
    assert_eq!(policies[0].max_count, Some(2));
    assert!(policies[0].paused);
    assert_eq!(policies[0].events_expired, 4);
    assert_eq!(store.load_recorded(stream, 0, None).await.unwrap().len(), 6);

    // resumed: the worker removes all but the newest two
    assert_eq!(store.set_retention_paused(None, false).await.unwrap(), 1);
    assert_eq!(until_applied(&store, "").await, 4);
    let kept: Vec<i64> = store
        .load_recorded(stream, 0, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(kept, [5, 6]);
    store.set_retention("", None, None).await.unwrap();
    assert!(store.retention().await.unwrap().is_empty());

    // archiving: the same answers before and after
    let account = store.open_account("Ada", 1_000).await.unwrap();
    for i in 1..=5 {
        store.deposit(account, 10 * i, "d", None).await.unwrap();
    }
    let state = store.account_state(account).await.unwrap();
    let history = store.account_history(account).await.unwrap();
    let log = store.read_all(0, 1_000).await.unwrap();
    let moved = store
        .archive(chrono::Utc::now() + chrono::Duration::seconds(1), None)
        .await
        .unwrap();
    assert_eq!(moved, log.len() as i64);
    assert_eq!(store.account_state(account).await.unwrap(), state);
    assert_eq!(store.account_history(account).await.unwrap(), history);
    assert_eq!(store.read_all(0, 1_000).await.unwrap(), log);
    assert_eq!(
        store.archive(chrono::Utc::now(), None).await.unwrap(),
        0,
        "nothing left to move"
    );
}
