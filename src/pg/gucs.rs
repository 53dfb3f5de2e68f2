//! The `es.*` settings. Defined in `_PG_init` in every process that loads the library; the
//! `es` prefix is reserved so a mistyped `es.*` setting is an error, not a silent no-op.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `es.snapshot_interval`: an append to an account stream that reaches or crosses a multiple of
/// this many events writes a snapshot at the new version, in the same transaction (SPEC §4).
/// 100 is the seed's interval; 0 turns automatic snapshots off.
pub static SNAPSHOT_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(100);

/// Registers the settings.
pub fn init() {
    GucRegistry::define_int_guc(
        c"es.snapshot_interval",
        c"Events between automatic snapshots of an account stream (0 = off).",
        c"An append to an account stream that reaches or crosses a multiple of this interval writes a snapshot at the new version, in the same transaction.",
        &SNAPSHOT_INTERVAL,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: called from _PG_init after the es.* settings are defined; the prefix is a static
    // string.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"es".as_ptr()) };
}
