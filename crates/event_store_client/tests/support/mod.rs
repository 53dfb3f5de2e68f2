//! What every database test of the client needs: the test cluster from `ES_TEST_PGHOST` /
//! `ES_TEST_PGPORT` (as `tests/client/run.sh` exports them; the tests fail, never skip, without
//! them), and a fresh database per test with `CREATE EXTENSION event_store`, dropped when the
//! test ends, so tests never see each other's events.

#![allow(dead_code)] // each test binary uses its own part of the support

use event_store_client::EventStoreClient;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The user the throwaway cluster trusts.
const USER: &str = "postgres";

/// The cluster's host: a unix socket directory (starts with `/`) or an address.
fn host() -> String {
    std::env::var("ES_TEST_PGHOST").unwrap_or_else(|_| {
        panic!(
            "ES_TEST_PGHOST is not set: run these tests with tests/client/run.sh, or export \
             ES_TEST_PGHOST/ES_TEST_PGPORT from `scripts/cluster.sh env` (PGHOST, PGPORT)"
        )
    })
}

/// The cluster's port.
fn port() -> u16 {
    let raw = std::env::var("ES_TEST_PGPORT")
        .unwrap_or_else(|_| panic!("ES_TEST_PGPORT is not set: run with tests/client/run.sh"));
    raw.trim()
        .parse()
        .unwrap_or_else(|_| panic!("ES_TEST_PGPORT is not a port number: {raw:?}"))
}

/// A connection URL for `dbname` (sqlx reads a socket directory from `?host=`).
pub fn url(dbname: &str) -> String {
    let host = host();
    let port = port();
    if host.starts_with('/') {
        format!("postgres://{USER}@localhost:{port}/{dbname}?host={host}")
    } else {
        format!("postgres://{USER}@{host}:{port}/{dbname}")
    }
}

fn options(dbname: &str) -> PgConnectOptions {
    url(dbname)
        .parse::<PgConnectOptions>()
        .expect("a valid connection URL")
        .options([("statement_timeout", "120s")])
        .disable_statement_logging()
}

/// A throwaway database with the extension; dropped (`WITH (FORCE)`) when the value goes.
pub struct TestDb {
    name: String,
    /// A pool on the database.
    pub pool: PgPool,
}

impl TestDb {
    /// Creates `es_cc_<tag>_<pid>_<n>_<time>` and runs `CREATE EXTENSION event_store` in it.
    pub async fn new(tag: &str) -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "es_cc_{tag}_{}_{}_{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect_with(&options("postgres"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to the test cluster at {}: {e}",
                    url("postgres")
                )
            });
        sqlx::raw_sql(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        admin.close().await.ok();
        let db = TestDb {
            pool: PgPoolOptions::new()
                .max_connections(8)
                .connect_lazy_with(options(&name)),
            name,
        };
        sqlx::raw_sql("CREATE EXTENSION event_store")
            .execute(&db.pool)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "CREATE EXTENSION event_store in {}: {e} (is it installed? scripts/install.sh)",
                    db.name
                )
            });
        db
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its connection URL (for code that connects by itself, like the examples).
    pub fn url(&self) -> String {
        url(&self.name)
    }

    /// A client of the store on this database.
    pub fn client(&self) -> EventStoreClient {
        EventStoreClient::new(self.pool.clone())
    }

    /// Runs one SQL statement (or several, as a simple query), panicking with the error.
    pub async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block: a thread with its own.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let mut admin = PgConnection::connect_with(&options("postgres")).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            // Never panic in drop (it may run while unwinding): leave a note instead.
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}
