//! The use cases of the store: what each SQL function does, built on the PostgreSQL glue
//! ([`crate::pg`]) and the pure core (`event_store_core`), and nothing above them. Each entry
//! point of [`crate::api`] calls one function here.
//!
//! - [`pipeline`]: the append pipeline, with the [`pipeline::StreamRules`] hook a kind of
//!   stream implements;
//! - [`append`]: `es.append_events` (the pipeline with the rules of the stream's type);
//! - [`aggregate`]: aggregates for any domain: the rules of typed streams, the declared
//!   types and upcasters, `es.state`, `es.history`, `es.replay`, `es.rebuild_states`;
//! - [`account`]: the account rules and commands, and an account's state at a version;
//! - [`audit`]: an account's time travel and audit (`es.account_state`, `es.account_history`),
//!   the use cases of `crate::api::audit`;
//! - [`account_json`]: what an account event's and an account state's JSON mean;
//! - [`read`]: `es.load_events`, `es.stream_version`, `es.read_all`;
//! - [`snapshot`]: `es.save_snapshot`, `es.load_snapshot`, and the snapshot lookups and saves of
//!   the account;
//! - [`stream`]: reading one stream in version order;
//! - [`personal`]: personal data: `es.define_personal_data`, `es.forget`, the subjects' keys,
//!   and how reads reveal or erase sealed values;
//! - [`replay`]: the steps of the `es.account_replay` aggregate;
//! - [`life`]: a stream's life as reads and appends see it (deleted, truncated);
//! - [`lifecycle`]: `es.delete_stream`, `es.undelete_stream`, `es.truncate_stream`;
//! - [`retention`]: the retention policies' worker side (`es.wake_retention`, the batches);
//! - [`upcast`]: upcasting: events of an older `event_version` as their upcasters make them;
//! - [`subscription`]: subscriptions: checkpoints, leases, attempts, parking, waiting;
//! - [`projection`]: the projections' management and one batch of the worker;
//! - [`sql`]: the statements more than one use case runs (each use case declares its own).

pub mod account;
pub mod account_json;
pub mod aggregate;
pub mod append;
pub mod audit;
pub mod life;
pub mod lifecycle;
pub mod personal;
pub mod pipeline;
pub mod projection;
pub mod read;
pub mod replay;
pub mod retention;
pub mod snapshot;
pub mod sql;
pub mod stream;
pub mod subscription;
pub mod upcast;
