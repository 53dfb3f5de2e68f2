//! The PostgreSQL glue: everything that touches PostgreSQL's memory, catalogs, executor or
//! shared memory, and nothing that knows what the store does with it. It imports only the pure
//! core (`event_store_core`) and pgrx; the use cases (`crate::store`) and the entry points
//! (`crate::api`) are built on it.
//!
//! - [`call`]: one call of a C entry point (arguments, result, set-returning output) and datums;
//! - [`compat`]: the calls that differ between PostgreSQL 15 and 18, one function each;
//! - [`spi`]: the SPI connection, the statements' prepared plans (the statements themselves are
//!   declared by the modules that run them, the store's in `crate::store`), reading their rows;
//! - [`backend`]: the backend's own state: its database, its current memory context, its latch;
//! - [`heap`]: the native paths: the stream-row bump, the event inserts, the ordered scan of a
//!   stream, with the heap and index access methods;
//! - [`insert`]: storing an append's rows, natively or through SQL, conflicts as values;
//! - [`jsonb`]: the reader of binary jsonb (event keys, account events and states);
//! - [`positions`]: global positions: their draws and the positions in flight that make the
//!   global read gap-safe;
//! - [`wake`]: the waiters for new events and the commits that wake them, filtered by what
//!   each commit appended;
//! - [`shmem`]: the shared-memory hooks of every segment;
//! - [`worker_registry`]: the registry in shared memory of the databases the background workers
//!   serve (their work, their worker, why one waits, a database command's hold): what backends
//!   and the hooks here tell the workers, and what the workers (`workers/`) read;
//! - [`server`]: what the server is (in recovery, its background worker slots);
//! - [`utility`]: the `ProcessUtility_hook` that moves the workers out of the way of
//!   database-level commands (`DROP DATABASE`, …);
//! - [`aggregate`]: Rust values owned by an aggregate's memory context;
//! - [`presorted`]: the planner hook (PostgreSQL 15) that spares a replay in SQL the sort of
//!   its stream's events when the index already gives them in version order;
//! - [`proxy`]: the relay a PL/Proxy proxy's routed functions are where its server has this
//!   library: the raw PL/Proxy call, its error given back without PL/Proxy's decoration;
//! - [`security`]: running code as another role (a projection's handler as its creator) the
//!   way PostgreSQL does, in a security-restricted operation;
//! - [`udf`]: calling a user's function (an aggregate's evolve and check, an upcaster) through
//!   fmgr, its ERROR caught whole, inside a subtransaction as its definer; long folds in
//!   bounded memory;
//! - [`registry`]: the declared aggregate types, stream-type rules and upcasters, cached per
//!   backend until one of their tables changes;
//! - [`settings`]: the store's `es.*` settings (tracing has its own, `trace/settings.rs`);
//!   [`error`]: raising the store's errors as PostgreSQL ERRORs.

pub mod aggregate;
pub mod backend;
pub mod call;
pub mod compat;
pub mod error;
pub mod heap;
pub mod insert;
pub mod jsonb;
pub mod positions;
pub mod presorted;
pub mod proxy;
pub mod registry;
pub mod security;
pub mod server;
pub mod settings;
pub mod shmem;
pub mod spi;
pub mod udf;
pub mod utility;
pub mod wake;
pub mod wire;
pub mod worker_registry;
