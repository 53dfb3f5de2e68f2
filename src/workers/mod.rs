//! The store's background workers (docs/reference.md §7, §10, §11), registered by `_PG_init`
//! when the library is preloaded:
//!
//! - [`launcher`]: one per cluster, on a primary; starts a database's worker where there is work;
//! - [`database`]: one per database that has work: its projections, its retention policies and,
//!   while replicas are connected, its watermark;
//! - [`export`]: the OTLP export worker, which drains the span ring and sends the spans to the
//!   collector.
//!
//! This folder is the top layer beside `api/`: it may import `store/`, `pg/`, `trace/` and the
//! pure crates, and nothing imports it. What backends and workers share (the registry of
//! databases in shared memory, the span ring's segment) is glue below, in
//! `pg/worker_registry.rs` and `trace/ring_segment.rs`. Its `unsafe` blocks are glue
//! with PostgreSQL's worker API (signals, the catalog scan of the launcher, aborting a
//! worker's transaction), each with its `// SAFETY:`.

pub mod database;
pub mod export;
pub mod launcher;

use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use std::ffi::{c_int, c_long};
use std::ptr;
use std::time::Duration;

/// Registers the static workers: the OTLP export worker, then the launcher (which starts the
/// database workers itself). Call from `_PG_init` under `shared_preload_libraries`, never in
/// binary-upgrade mode.
pub fn register() {
    export::register();
    launcher::register();
}

/// Between rounds: reloads the configuration after a SIGHUP; false once SIGTERM arrived (the
/// worker leaves its loop), by pgrx's handler or by PostgreSQL's `die`
/// ([`die_on_sigterm`](crate::pg::compat::die_on_sigterm)).
fn check_signals() -> bool {
    if BackgroundWorker::sighup_received() {
        // SAFETY: what a backend does on SIGHUP, on the worker's main thread between rounds.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
    // SAFETY: a sig_atomic_t that PostgreSQL's `die` sets; read (volatile) on the thread the
    // handler interrupts.
    let die_pending = unsafe { ptr::read_volatile(&raw const pg_sys::ProcDiePending) } != 0;
    !BackgroundWorker::sigterm_received() && !die_pending
}

/// Sleeps until the process latch is set or `timeout` passed (the postmaster's death ends the
/// process, as in PostgreSQL's workers); false once SIGTERM arrived. Interrupts are not
/// processed here: a worker with `die` as its SIGTERM handler
/// ([`die_on_sigterm`](crate::pg::compat::die_on_sigterm)) leaves its loop cleanly between
/// rounds, where pgrx's `wait_latch`, which processes them, would turn that leave into a FATAL.
fn wait(timeout: Duration) -> bool {
    let ms = c_long::try_from(timeout.as_millis()).unwrap_or(c_long::MAX);
    let events = (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as c_int;
    // SAFETY: the worker's own latch, waited on and reset on its main thread, outside any
    // transaction.
    unsafe {
        pg_sys::WaitLatch(pg_sys::MyLatch, events, ms, pg_sys::PG_WAIT_EXTENSION);
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    check_signals()
}

/// Whether a WAL sender is running (a streaming standby, a logical-replication subscriber or a
/// base backup): then every database that appends needs its watermark written.
fn replicas_connected() -> bool {
    // SAFETY: WalSndCtl is set up at startup with max_wal_senders slots; each pid is read
    // without the slot's spinlock, which can only make the answer stale by one iteration.
    unsafe {
        let ctl = pg_sys::WalSndCtl;
        if ctl.is_null() {
            return false;
        }
        let n = pg_sys::max_wal_senders.max(0) as usize;
        (*ctl)
            .walsnds
            .as_slice(n)
            .iter()
            .any(|w| ptr::read_volatile(&w.pid) != 0)
    }
}
