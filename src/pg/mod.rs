//! The PostgreSQL glue: everything that touches PostgreSQL's memory, catalogs, executor or
//! shared memory, and nothing that knows what the store does with it. It imports only the pure
//! core (`event_store_core`) and pgrx; the use cases (`crate::store`) and the entry points
//! (`crate::api`) are built on it.
//!
//! - [`call`]: one call of a C entry point (arguments, result, set-returning output) and datums;
//! - [`spi`]: every SQL statement of the store and the SPI connection that runs them;
//! - [`heap`]: the native paths: the stream-row bump, the event inserts, the ordered scan of a
//!   stream, with the heap and index access methods;
//! - [`insert`]: storing an append's rows, natively or through SQL, conflicts as values;
//! - [`jsonb`]: the reader of binary jsonb (event keys, account events and states);
//! - [`positions`]: global positions: their draws and the positions in flight that make the
//!   global read gap-safe;
//! - [`shmem`]: the shared-memory hooks of every segment;
//! - [`workers`]: the registry of the per-database workers in shared memory, starting them, the
//!   list of databases, whether replicas are connected;
//! - [`utility`]: the `ProcessUtility_hook` that moves the workers out of the way of
//!   database-level commands (`DROP DATABASE`, …);
//! - [`aggregate`]: Rust values owned by an aggregate's memory context;
//! - [`security`]: running code as another role (a projection's handler as its creator) the
//!   way PostgreSQL does, in a security-restricted operation;
//! - [`gucs`]: the store's settings; [`error`]: raising the store's errors as PostgreSQL ERRORs.

pub mod aggregate;
pub mod call;
pub mod error;
pub mod gucs;
pub mod heap;
pub mod insert;
pub mod jsonb;
pub mod positions;
pub mod security;
pub mod shmem;
pub mod spi;
pub mod utility;
pub mod workers;
