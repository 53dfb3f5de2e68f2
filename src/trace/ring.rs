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
use std::sync::atomic::{AtomicPtr, Ordering};

const SHMEM_KEY: &CStr = c"event_store span ring";

static RING: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static mut PREV_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// Installs the shared-memory hooks. Call from `_PG_init` while `shared_preload_libraries` is
/// processed, after the settings are defined.
pub fn install_hooks() {
    unsafe {
        PREV_REQUEST_HOOK = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(request_shmem);
        PREV_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(startup_shmem);
    }
}

fn capacity() -> usize {
    BUFFER_SIZE.get().max(1) as usize
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn request_shmem() {
    unsafe {
        if let Some(prev) = PREV_REQUEST_HOOK {
            prev();
        }
        pg_sys::RequestAddinShmemSpace(Ring::size_for(capacity()));
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn startup_shmem() {
    unsafe {
        if let Some(prev) = PREV_STARTUP_HOOK {
            prev();
        }
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock; // AddinShmemInitLock
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
    (!mem.is_null()).then(|| unsafe { Ring::attach(mem) })
}
