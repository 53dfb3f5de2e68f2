//! The store's shared memory: one pair of hooks (`shmem_request_hook`, `shmem_startup_hook`)
//! for every segment the library places there (the positions in flight, the span ring, the
//! workers' registry), so the hook chaining and `AddinShmemInitLock` are written once.
//!
//! Segments exist only when the library is preloaded (`shared_preload_libraries`): the hooks are
//! installed by `_PG_init` in the postmaster, before any fork.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::sync::OnceLock;

/// A piece of shared memory: its name, size, optional LWLock and how to set it up.
pub struct Segment {
    /// The `ShmemInitStruct` key.
    pub key: &'static CStr,
    /// Its size in bytes (the same in the request and the startup hook).
    pub size: fn() -> usize,
    /// A named LWLock tranche of one lock to request with it, if it needs one.
    pub tranche: Option<&'static CStr>,
    /// Sets up freshly allocated (zeroed) memory, once per cluster start.
    ///
    /// # Safety
    /// Called with `size()` zeroed bytes of shared memory, under `AddinShmemInitLock`.
    pub init: unsafe fn(*mut u8),
    /// Publishes the address to this process (every process that attaches calls it).
    pub attach: fn(*mut u8),
}

/// The segments the hooks place, set once by [`install`].
static SEGMENTS: OnceLock<&'static [&'static Segment]> = OnceLock::new();
/// The hooks installed before ours, called first.
static PREV_REQUEST_HOOK: OnceLock<pg_sys::shmem_request_hook_type> = OnceLock::new();
static PREV_STARTUP_HOOK: OnceLock<pg_sys::shmem_startup_hook_type> = OnceLock::new();

/// Index of `AddinShmemInitLock` in `MainLWLockArray` (`storage/lwlocknames.h`, generated from
/// `lwlocknames.txt`, where it has been number 21 since PostgreSQL 9.6; the macro itself is not
/// in pgrx's bindings). [`addin_shmem_init_lock`] checks the name before using it.
const ADDIN_SHMEM_INIT_LOCK: usize = 21;

/// `AddinShmemInitLock`, which serializes `ShmemInitStruct` of add-ins at startup. Verified by
/// name, so a PostgreSQL that renumbered its locks stops the startup with an error instead of
/// taking a wrong lock.
///
/// # Safety
/// Call only from a `shmem_startup_hook` (the main LWLock array exists).
unsafe fn addin_shmem_init_lock() -> *mut pg_sys::LWLock {
    // SAFETY: the caller's contract: MainLWLockArray holds NUM_FIXED_LWLOCKS (> 21) locks, and
    // GetLWLockIdentifier returns a static name for a main lock.
    unsafe {
        let name =
            pg_sys::GetLWLockIdentifier(pg_sys::PG_WAIT_LWLOCK, ADDIN_SHMEM_INIT_LOCK as u16);
        if name.is_null() || CStr::from_ptr(name) != c"AddinShmemInit" {
            pgrx::error!(
                "event_store: MainLWLockArray[21] is not AddinShmemInitLock in this PostgreSQL"
            );
        }
        &raw mut (*pg_sys::MainLWLockArray.add(ADDIN_SHMEM_INIT_LOCK)).lock
    }
}

/// Installs the hooks that place `segments`. Call once, from `_PG_init` while
/// `shared_preload_libraries` is being processed (in the postmaster, before any fork).
pub fn install(segments: &'static [&'static Segment]) {
    if SEGMENTS.set(segments).is_err() {
        return;
    }
    // SAFETY: the postmaster loads preloaded libraries one at a time on its only thread, so
    // reading and replacing the hook variables cannot race; the previous hooks are kept and
    // called first.
    unsafe {
        let _ = PREV_REQUEST_HOOK.set(pg_sys::shmem_request_hook);
        pg_sys::shmem_request_hook = Some(request_shmem);
        let _ = PREV_STARTUP_HOOK.set(pg_sys::shmem_startup_hook);
        pg_sys::shmem_startup_hook = Some(startup_shmem);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn request_shmem() {
    if let Some(Some(prev)) = PREV_REQUEST_HOOK.get() {
        // SAFETY: the hook that was installed before ours, called as PostgreSQL would.
        unsafe { prev() };
    }
    for segment in SEGMENTS.get().copied().unwrap_or_default() {
        // SAFETY: called from shmem_request_hook, the only place these requests are allowed.
        unsafe {
            pg_sys::RequestAddinShmemSpace((segment.size)());
            if let Some(tranche) = segment.tranche {
                pg_sys::RequestNamedLWLockTranche(tranche.as_ptr(), 1);
            }
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn startup_shmem() {
    if let Some(Some(prev)) = PREV_STARTUP_HOOK.get() {
        // SAFETY: the hook that was installed before ours, called as PostgreSQL would.
        unsafe { prev() };
    }
    // SAFETY: ShmemInitStruct returns each segment's `size()` bytes (the size requested above;
    // the settings it depends on are postmaster-start settings), initialized once, zeroed,
    // under AddinShmemInitLock, as Segment::init requires.
    unsafe {
        let init_lock = addin_shmem_init_lock();
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        for segment in SEGMENTS.get().copied().unwrap_or_default() {
            let size = (segment.size)();
            let mut found = false;
            let mem = pg_sys::ShmemInitStruct(segment.key.as_ptr(), size, &mut found).cast::<u8>();
            if !found {
                std::ptr::write_bytes(mem, 0, size);
                (segment.init)(mem);
            }
            (segment.attach)(mem);
        }
        pg_sys::LWLockRelease(init_lock);
    }
}

/// The lock of a tranche a segment requested.
///
/// # Safety
/// Call only after the startup hook ran, for a tranche requested by a segment.
pub unsafe fn tranche_lock(tranche: &CStr) -> *mut pg_sys::LWLock {
    // SAFETY: the caller's contract: the tranche was requested with one lock.
    unsafe { &raw mut (*pg_sys::GetNamedLWLockTranche(tranche.as_ptr())).lock }
}
