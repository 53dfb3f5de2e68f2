//! A consumer with event_store_client: orders appended as a serde enum, and a subscription whose
//! events are handled inside the consumer's transaction, so each row of the read model and the
//! subscription's checkpoint commit together (exactly once for the database).
//! `DATABASE_URL=postgres://… cargo run -p event_store_client --example consumer`

use event_store_client::{
    Consumer, EventStoreClient, ExpectedVersion, RecordedEvent, SubscriptionSpec,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The shop's events: the variant is the stored event's `"type"`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Shop {
    Ordered { sku: String, cents: i64 },
    Paid { cents: i64 },
}

/// Appends `orders` orders of two events, consumes them; returns the events handled and the
/// revenue the read model holds.
pub async fn run(url: &str, orders: usize) -> Result<(u64, i64), Box<dyn std::error::Error>> {
    let store = EventStoreClient::connect(url).await?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS revenue (position bigint PRIMARY KEY, cents bigint)")
        .execute(store.pool())
        .await?;
    store
        .create_subscription("revenue", &SubscriptionSpec::default())
        .await?;

    for n in 0..orders {
        let order = [
            Shop::Ordered {
                sku: format!("SKU-{n}"),
                cents: 1_000,
            },
            Shop::Paid { cents: 1_000 },
        ];
        store
            .append(Uuid::new_v4(), ExpectedVersion::NoStream, &order)
            .await?;
    }

    // Each event is handled with the batch's transaction; the ack commits with the inserts.
    let mut consumer = Consumer::new(store.clone(), "revenue", "worker-1").batch_size(50);
    let progress = consumer
        .run_until_idle(|tx, event: RecordedEvent| {
            Box::pin(async move {
                if let Shop::Paid { cents } = event.decode::<Shop>()? {
                    sqlx::query("INSERT INTO revenue VALUES ($1, $2)")
                        .bind(event.global_position)
                        .bind(cents)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .await?;

    let revenue: i64 = sqlx::query_scalar("SELECT coalesce(sum(cents), 0)::bigint FROM revenue")
        .fetch_one(store.pool())
        .await?;
    Ok((progress.acked, revenue))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let (handled, revenue) = run(&url, 10).await?;
    println!("{handled} events handled, revenue {revenue} cents");
    Ok(())
}
