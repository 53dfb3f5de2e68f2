//! The SQL surface: one entry point per SQL function, each registered once with
//! `#[sql_function]` (its SQL declaration, comment and privileges, its C symbol, its span and
//! its arguments by name; see the `event_store_macros` crate). A body converts its arguments,
//! calls one use case of [`crate::store`] and converts the result; a user error leaves through
//! `crate::pg::error::raise`, which keeps its own SQLSTATE (`ES001`…).

pub mod account;
pub mod aggregate;
pub mod append;
pub mod audit;
pub mod lifecycle;
pub mod personal;
pub mod projection;
pub mod read;
pub mod replay;
pub mod retention;
pub mod snapshot;
pub mod subscription;
pub mod tracing_stats;
