//! Places the span ring (`core::trace::Ring`) in shared memory, sized by
//! `es.trace_buffer_size`, when the library is preloaded.
//!
//! The ring needs no lock: producers claim slots with a compare-and-swap and the single consumer
//! is the export worker, so a backend never waits on tracing. Without the preload there is no
//! ring, [`get`] says so, and tracing is off.

use super::gucs::BUFFER_SIZE;
use crate::core::trace::Ring;
use pgrx::pg_sys;
use std::ffi::CStr;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

const SHMEM_KEY: &CStr = c"event_store span ring";

static RING: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
/// The hooks installed before ours, called first (set once, in the postmaster).
static PREV_REQUEST_HOOK: OnceLock<pg_sys::shmem_request_hook_type> = OnceLock::new();
static PREV_STARTUP_HOOK: OnceLock<pg_sys::shmem_startup_hook_type> = OnceLock::new();

/// Installs the shared-memory hooks. Call from `_PG_init` while `shared_preload_libraries` is
/// processed, after the settings are defined.
pub fn install_hooks() {
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

fn capacity() -> usize {
    BUFFER_SIZE.get().max(1) as usize
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn request_shmem() {
    if let Some(Some(prev)) = PREV_REQUEST_HOOK.get() {
        // SAFETY: the hook that was installed before ours, called as PostgreSQL would.
        unsafe { prev() };
    }
    // SAFETY: called from shmem_request_hook, the only place such requests are allowed.
    unsafe { pg_sys::RequestAddinShmemSpace(Ring::size_for(capacity())) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn startup_shmem() {
    if let Some(Some(prev)) = PREV_STARTUP_HOOK.get() {
        // SAFETY: the hook that was installed before ours, called as PostgreSQL would.
        unsafe { prev() };
    }
    // SAFETY: ShmemInitStruct returns the `Ring::size_for(capacity())` bytes requested above
    // (es.trace_buffer_size is a postmaster-start setting, so both hooks see the same value);
    // the ring is initialized once, under AddinShmemInitLock.
    unsafe {
        let init_lock = crate::shmem::addin_shmem_init_lock();
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let size = Ring::size_for(capacity());
        let mem = pg_sys::ShmemInitStruct(SHMEM_KEY.as_ptr(), size, &mut found).cast::<u8>();
        if !found {
            Ring::init(mem, capacity());
        }
        pg_sys::LWLockRelease(init_lock);
        RING.store(mem, Ordering::Release);
    }
}

/// The ring, when the library is preloaded.
pub fn get() -> Option<Ring> {
    let mem = RING.load(Ordering::Acquire);
    // SAFETY: RING is null or the ring startup_shmem initialized in shared memory, mapped for
    // the life of the process.
    (!mem.is_null()).then(|| unsafe { Ring::attach(mem) })
}
