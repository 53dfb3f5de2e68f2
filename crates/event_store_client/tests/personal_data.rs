//! Crypto-shredding through the client (docs/lifecycle.md "Forgetting a subject"): marking the holder as
//! personal data, reading it back, forgetting the account, and the typed reads afterwards.

mod support;

use event_store_client::EventStore;
use support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_holder_reads_as_erased_and_the_balance_stays() {
    let db = TestDb::new("personal").await;
    let store = db.client();
    store
        .define_personal_data("Opened", &["account_holder"])
        .await
        .unwrap();
    assert!(matches!(
        store.define_personal_data("Opened", &["initial_balance_cents"]).await,
        Err(e) if e.to_string().contains("account_holder")
    ));
    let id = store.open_account("Zoe Client", 700).await.unwrap();
    store.deposit(id, 300, "salary", None).await.unwrap();
    assert_eq!(
        store.account_state(id).await.unwrap().holder_name,
        "Zoe Client"
    );
    let stored: String = sqlx::query_scalar(
        "SELECT data->>'account_holder' FROM es.events WHERE stream_id = $1 AND version = 1",
    )
    .bind(id)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(stored.starts_with("es:enc:v1:"), "{stored}");

    assert!(store.forget(&id.to_string()).await.unwrap());
    assert!(!store.forget(&id.to_string()).await.unwrap());
    let state = store.account_state(id).await.unwrap();
    assert_eq!(
        (state.holder_name.as_str(), state.balance_cents),
        ("", 1_000)
    );
    // the typed events still decode: the erased holder is an empty string
    let events = store.load_events(id).await.unwrap();
    assert_eq!(events.len(), 2);
    let raw = store.load_recorded(id, 0, None).await.unwrap();
    assert_eq!(raw[0].data["account_holder"], serde_json::Value::Null);
    assert_eq!(
        raw[0].data["_erased"],
        serde_json::json!(["account_holder"])
    );
}
