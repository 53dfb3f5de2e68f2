//! PostgreSQL's binary jsonb, in two halves: [`read`] reads a value in place (keys, numbers,
//! strings; what they mean for an account is the store's, `crate::store::account_json`), and
//! [`write`] builds values with PostgreSQL's jsonb builder and functions.

pub mod build;
pub mod read;
pub mod write;

pub use read::*;
