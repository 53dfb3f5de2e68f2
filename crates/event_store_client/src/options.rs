//! [`ClientOptions`]: how the client sends its statements: named (prepared once per connection,
//! the default) or unnamed (pooler-safe), the page size of its streams, and where the W3C
//! `traceparent` it appends to every statement comes from.
//!
//! # Pooler-safe mode
//!
//! sqlx prepares every statement under a name on the connection and reuses it. Behind a pooler in
//! **transaction mode** (pgbouncer `pool_mode = transaction` before 1.21, or with
//! `max_prepared_statements = 0`) consecutive transactions of one client run on different server
//! connections, so a name prepared on one is missing on the next (`prepared statement "sqlx_s_1"
//! does not exist`) or names another statement. Unnamed statements alone (sqlx's
//! `persistent(false)`) do not fix it: sqlx still sends them in two round trips (Parse/Describe,
//! then Bind/Execute), and outside a transaction the pooler may run the second on another server
//! connection (`unnamed prepared statement does not exist`).
//!
//! With [`ClientOptions::pooler_safe`] every query is sent unnamed, and every call that is not
//! given the caller's executor runs inside a short transaction of its own
//! ([`PoolExecutor`](crate::PoolExecutor): `BEGIN`, the statement, `COMMIT`), during which the
//! pooler keeps the client on one server connection. Nothing is left on a server connection, so
//! any pooler mode forwards it. The cost is a parse and two more round trips per call. A call
//! given the caller's transaction (`append_in(&mut *tx, …)`) runs in that transaction; the
//! [`Consumer`](crate::Consumer) runs each batch in one.
//!
//! # Trace context
//!
//! Each statement ends with a sqlcommenter comment `/*traceparent='00-<trace>-<span>-<flags>'*/`
//! when a trace context is current; the server reads it (docs/reference.md §7) and makes its spans
//! children of the client's span. With the `opentelemetry` feature the context is the current
//! `tracing` span's OpenTelemetry context (`tracing-opentelemetry`); without it, or in addition,
//! [`ClientOptions::traceparent_from`] names a function that returns it. A statement with a
//! comment is sent unnamed too (its text is unique, so preparing it would only fill the cache and
//! leave a named statement per call on the server). Being unnamed does not make it pooler-safe by
//! itself (see above): behind a transaction-mode pooler, turn the pooler-safe mode on, which
//! covers the traced statements too.

use sqlx::Postgres;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::{Query, QueryAs, QueryScalar};
use std::fmt;
use std::sync::Arc;

/// A function returning the current W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if any.
pub type TraceparentFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// How an [`EventStoreClient`](crate::EventStoreClient) sends its statements. Built with
/// [`Default`] and the builder methods:
///
/// ```
/// use event_store_client::ClientOptions;
///
/// let options = ClientOptions::default().pooler_safe(true).page_size(1_000);
/// assert!(options.is_pooler_safe());
/// assert_eq!(options.page(), 1_000);
/// ```
#[derive(Clone)]
pub struct ClientOptions {
    pooler_safe: bool,
    page_size: i64,
    traceparent: Option<TraceparentFn>,
}

impl Default for ClientOptions {
    /// Named statements, pages of 500 events, and the trace context of the current span when the
    /// `opentelemetry` feature is on.
    fn default() -> Self {
        Self {
            pooler_safe: false,
            page_size: 500,
            traceparent: default_traceparent(),
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("pooler_safe", &self.pooler_safe)
            .field("page_size", &self.page_size)
            .field("traceparent", &self.traceparent.as_ref().map(|_| "fn"))
            .finish()
    }
}

impl ClientOptions {
    /// Unnamed statements only (sqlx `persistent(false)` on every query), each call on the pool
    /// inside a transaction of its own, for pgbouncer in transaction mode and other poolers that
    /// move a client between server connections (see the module documentation).
    pub fn pooler_safe(mut self, on: bool) -> Self {
        self.pooler_safe = on;
        self
    }

    /// How many events a stream reads per round trip (`es.read_all`, `es.load_events`,
    /// `es.poll`); at least 1.
    pub fn page_size(mut self, events: i64) -> Self {
        self.page_size = events.max(1);
        self
    }

    /// Takes the `traceparent` of each statement from `f` (instead of the current span's
    /// OpenTelemetry context).
    pub fn traceparent_from(
        mut self,
        f: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.traceparent = Some(Arc::new(f));
        self
    }

    /// Sends no `traceparent` at all.
    pub fn without_traceparent(mut self) -> Self {
        self.traceparent = None;
        self
    }

    /// Whether statements are sent unnamed, each call on the pool in its own transaction.
    pub fn is_pooler_safe(&self) -> bool {
        self.pooler_safe
    }

    /// The page size of the streams.
    pub fn page(&self) -> i64 {
        self.page_size
    }

    /// The statement to send for `text`: with the trace comment when a context is current, and
    /// named only when neither the pooler-safe mode nor a comment forbids it.
    pub(crate) fn sql(&self, text: &str) -> Sql {
        let traceparent = self
            .traceparent
            .as_ref()
            .and_then(|f| f())
            .filter(|t| is_traceparent(t));
        match traceparent {
            Some(t) => Sql {
                text: format!("{text} /*traceparent='{t}'*/"),
                persistent: false,
            },
            None => Sql {
                text: text.to_owned(),
                persistent: !self.pooler_safe,
            },
        }
    }
}

/// Only a well-formed value goes into the SQL text (it is pasted into a comment).
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && [2, 32, 16, 2]
            .iter()
            .zip(&parts)
            .all(|(len, p)| p.len() == *len && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(feature = "opentelemetry")]
fn default_traceparent() -> Option<TraceparentFn> {
    Some(Arc::new(current_traceparent))
}

#[cfg(not(feature = "opentelemetry"))]
fn default_traceparent() -> Option<TraceparentFn> {
    None
}

/// The current `tracing` span's OpenTelemetry context as a W3C `traceparent` (feature
/// `opentelemetry`): `None` when the span has no valid context (no OpenTelemetry layer).
#[cfg(feature = "opentelemetry")]
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// A statement ready to send: its text and whether sqlx may prepare it under a name.
pub(crate) struct Sql {
    text: String,
    persistent: bool,
}

impl Sql {
    pub(crate) fn query(&self) -> Query<'_, Postgres, PgArguments> {
        sqlx::query(&self.text).persistent(self.persistent)
    }

    pub(crate) fn scalar<O>(&self) -> QueryScalar<'_, Postgres, O, PgArguments>
    where
        (O,): for<'r> sqlx::FromRow<'r, PgRow>,
    {
        sqlx::query_scalar(&self.text).persistent(self.persistent)
    }

    pub(crate) fn query_as<O>(&self) -> QueryAs<'_, Postgres, O, PgArguments>
    where
        O: for<'r> sqlx::FromRow<'r, PgRow>,
    {
        sqlx::query_as(&self.text).persistent(self.persistent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn named_by_default_unnamed_when_pooler_safe() {
        let sql = ClientOptions::default()
            .without_traceparent()
            .sql("SELECT 1");
        assert_eq!((sql.text.as_str(), sql.persistent), ("SELECT 1", true));
        let sql = ClientOptions::default()
            .without_traceparent()
            .pooler_safe(true)
            .sql("SELECT 1");
        assert_eq!((sql.text.as_str(), sql.persistent), ("SELECT 1", false));
    }

    #[test]
    fn a_traceparent_becomes_a_sqlcommenter_comment_and_an_unnamed_statement() {
        let sql = ClientOptions::default()
            .traceparent_from(|| Some(TP.to_owned()))
            .sql("SELECT 1");
        assert_eq!(sql.text, format!("SELECT 1 /*traceparent='{TP}'*/"));
        assert!(!sql.persistent);
        // Never pasted into SQL unless it has the W3C shape.
        for bad in [
            "x",
            "00-zz-00f067aa0ba902b7-01",
            "00-a-b-c*/; DROP TABLE t; /*",
        ] {
            let sql = ClientOptions::default()
                .traceparent_from(move || Some(bad.to_owned()))
                .sql("SELECT 1");
            assert_eq!(sql.text, "SELECT 1");
        }
    }
}
