//! The bank-account example's command handler, unchanged, over this crate: `DepositHandler`,
//! `DepositCommand`, `CommandError` and `should_snapshot` are copied verbatim from the guide
//! (`src/commands/handlers/deposit_handler.rs`, `src/event_store/snapshots.rs`); only the `use`
//! lines differ. The guide's `PostgresEventStore` and `PostgresSnapshotStore` are this crate's
//! [`EventStoreClient`].
//!
//! It opens an account, runs the handler a few times and prints the balance:
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@localhost:5432/bank cargo run -p event_store_client --example deposit_handler
//! ```
//!
//! Note on the bank-account example's `load_account`: after a snapshot it rebuilds the account from
//! the tail events alone (the bank-account example's bug of docs/reference.md §4). It is correct
//! here because this crate's `load_snapshot` returns the snapshot folded forward to the stream's
//! head, so the tail is empty.

// The bank-account example's `CommandError` names every variant `…Error`; it stays as the seed
// wrote it.
#![allow(clippy::enum_variant_names)]

use event_store_client::{Account, EventStore, EventStoreClient, SnapshotStore};
use std::sync::Arc;
use tracing::{info, instrument};
use uuid::Uuid;

// ---- verbatim from the bank-account example: src/commands/handlers/deposit_handler.rs ----

pub struct DepositHandler {
    event_store: Arc<dyn EventStore>,
    snapshot_store: Arc<dyn SnapshotStore>,
}

impl DepositHandler {
    pub fn new(event_store: Arc<dyn EventStore>, snapshot_store: Arc<dyn SnapshotStore>) -> Self {
        Self {
            event_store,
            snapshot_store,
        }
    }

    #[instrument(
        name = "command.deposit",
        skip(self, command),
        fields(
            account_id = %command.account_id,
            amount_cents = command.amount_cents,
            event_sourcing.operation = "command"
        )
    )]
    pub async fn handle(&self, command: DepositCommand) -> Result<(), CommandError> {
        info!("处理存款命令");

        // 1. 加载聚合根 (优先从快照)
        let mut account = self.load_account(command.account_id).await?;

        // 2. 执行业务逻辑
        account
            .deposit(command.amount_cents, command.description)
            .map_err(|e| CommandError::DomainError(e.to_string()))?;

        // 3. 获取新事件
        let events = account.take_uncommitted_events();
        let new_version = account.version();

        // 4. 持久化事件
        self.event_store
            .append_events(
                command.account_id,
                new_version - events.len() as i64,
                events,
            )
            .await
            .map_err(|e| CommandError::EventStoreError(e.to_string()))?;

        // 5. 判断是否需要创建快照
        if should_snapshot(new_version) {
            info!(version = new_version, "创建快照");
            self.snapshot_store
                .save_snapshot(command.account_id, new_version, &account)
                .await
                .map_err(|e| CommandError::SnapshotError(e.to_string()))?;
        }

        info!("存款成功");
        Ok(())
    }

    /// 加载聚合根 (快照 + 增量事件)
    async fn load_account(&self, account_id: Uuid) -> Result<Account, CommandError> {
        // 1. 尝试加载快照
        if let Some((mut account, snapshot_version)) = self
            .snapshot_store
            .load_snapshot(account_id)
            .await
            .map_err(|e| CommandError::SnapshotError(e.to_string()))?
        {
            info!(snapshot_version, "从快照加载");

            // 2. 加载快照之后的增量事件
            let incremental_events = self
                .event_store
                .load_events_from_version(account_id, snapshot_version)
                .await
                .map_err(|e| CommandError::EventStoreError(e.to_string()))?;

            // 3. 应用增量事件
            if !incremental_events.is_empty() {
                info!(events_count = incremental_events.len(), "应用增量事件");
                account = Account::from_events(incremental_events)
                    .map_err(|e| CommandError::DomainError(e.to_string()))?;
            }

            return Ok(account);
        }

        // 4. 无快照,从头重放所有事件
        info!("无快照,重放所有事件");
        let events = self
            .event_store
            .load_events(account_id)
            .await
            .map_err(|e| CommandError::EventStoreError(e.to_string()))?;

        Account::from_events(events).map_err(|e| CommandError::DomainError(e.to_string()))
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct DepositCommand {
    pub account_id: Uuid,
    pub amount_cents: i64,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("领域错误: {0}")]
    DomainError(String),

    #[error("事件存储错误: {0}")]
    EventStoreError(String),

    #[error("快照错误: {0}")]
    SnapshotError(String),
}

// ---- verbatim from the bank-account example: src/event_store/snapshots.rs ----

/// 快照策略: 每 N 个事件创建一次快照
pub const SNAPSHOT_INTERVAL: i64 = 100;

/// 判断是否需要创建快照
pub fn should_snapshot(current_version: i64) -> bool {
    current_version % SNAPSHOT_INTERVAL == 0
}

// ---- end of the bank-account example's code ----

/// Opens an account with the bank-account example's aggregate, runs the bank-account example's
/// handler `deposits` times (1 € each, so a run of 100 or more crosses the handler's own snapshot),
/// and returns the account's id and balance as the handler's next load sees it.
pub async fn run(url: &str, deposits: i64) -> Result<(Uuid, i64), Box<dyn std::error::Error>> {
    let store = Arc::new(EventStoreClient::connect(url).await?);

    let mut account = Account::open("Alice".into(), 1_000)?;
    let id = account.id();
    store
        .append_events(id, 0, account.take_uncommitted_events())
        .await?;

    let handler = DepositHandler::new(store.clone(), store.clone());
    for i in 0..deposits {
        let command = DepositCommand {
            account_id: id,
            amount_cents: 100,
            description: format!("deposit {}", i + 1),
        };
        handler.handle(command).await?;
    }
    let balance = handler.load_account(id).await?.balance();
    Ok((id, balance))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let (id, balance) = run(&url, 5).await?;
    println!("account {id}: balance {balance} cents");
    Ok(())
}
