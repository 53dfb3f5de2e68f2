//! The store from plain sqlx, without event_store_client (the README's snippet for sqlx users):
//! bind `jsonb[]`, catch ES001 with its expected/actual versions, page the global log.
//! `DATABASE_URL=postgres://… cargo run -p event_store_client --example sqlx_plain`

use serde_json::{Value, json};
use sqlx::Row;
use sqlx::postgres::{PgDatabaseError, PgPool};
use uuid::Uuid;

/// Appends twice with the same expected version, reads the log; returns the second writer's
/// (expected, actual) and the number of events read.
pub async fn run(url: &str) -> Result<(i64, i64, usize), Box<dyn std::error::Error>> {
    let pool = PgPool::connect(url).await?;
    let stream = Uuid::new_v4();
    // `jsonb[]` binds as a Vec<serde_json::Value>; expected version 0: a new stream.
    let events: Vec<Value> = vec![
        json!({"type": "Added", "sku": "A1"}),
        json!({"type": "Paid"}),
    ];
    let append = || {
        sqlx::query_scalar::<_, i64>("SELECT es.append_events($1, $2, $3)")
            .bind(stream)
            .bind(0_i64)
            .bind(&events)
    };
    println!(
        "stream {stream} at version {}",
        append().fetch_one(&pool).await?
    );

    // A second writer that also read version 0 loses with SQLSTATE ES001 and the DETAIL
    // `expected: 0 (no stream), actual: 2` (E is N, `0 (no stream)` or `-1 (an existing stream)`).
    let err = append()
        .fetch_one(&pool)
        .await
        .expect_err("the stream exists");
    let pg = err
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<PgDatabaseError>());
    let Some(pg) = pg.filter(|pg| pg.code() == "ES001") else {
        return Err(err.into());
    };
    let detail = pg.detail().unwrap_or_default();
    let numbers: Vec<i64> = detail
        .split([' ', ','])
        .filter_map(|w| w.parse().ok())
        .collect();
    let [expected, actual] = numbers[..] else {
        return Err(detail.into());
    };
    println!("conflict: expected {expected}, stream at {actual}: reload and retry");

    // The global log, a page at a time, by the last position seen (bigint arguments).
    let (mut after, mut read) = (0_i64, 0);
    let page_sql = "SELECT global_position, event_type FROM es.read_all($1::bigint, $2::bigint)";
    loop {
        let page = sqlx::query(page_sql)
            .bind(after)
            .bind(100_i64)
            .fetch_all(&pool)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.get("global_position");
        read += page.len();
    }
    println!("read {read} events, up to position {after}");
    Ok((expected, actual, read))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(&std::env::var("DATABASE_URL")?).await.map(|_| ())
}
