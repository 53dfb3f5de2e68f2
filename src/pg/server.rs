//! What the running server is, as the store's paths ask it: whether it is in recovery (a hot
//! standby's readers cap at the replicated watermark, docs/reference.md §11) and how many
//! background worker slots it has (what `es.projections` says a waiting database lacks).

use pgrx::pg_sys;

/// Whether this server is a hot standby (or in crash recovery): readers there cap at the
/// replicated watermark.
pub fn in_recovery() -> bool {
    // SAFETY: a read of shared state, valid in any backend.
    unsafe { pg_sys::RecoveryInProgress() }
}

/// `max_worker_processes`: the cluster's background worker slots.
pub fn max_worker_processes() -> i32 {
    // SAFETY: a server setting, set at start and never changed while the server runs.
    unsafe { pg_sys::max_worker_processes }
}
