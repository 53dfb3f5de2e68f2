//! The span ring's shared-memory segment: places the lock-free ring
//! ([`event_store_telemetry::ring::Ring`]) in shared memory, sized by `es.trace_buffer_size`, when
//! the library is preloaded, and gives backends and the export worker their view of it.
//!
//! The ring needs no lock: producers claim slots with a compare-and-swap and the single consumer
//! is the export worker, so a backend never waits on tracing. Without the preload there is no
//! ring, [`get`] says so, and tracing is off.

use super::settings::BUFFER_SIZE;
use crate::pg::shmem::Segment;
use event_store_telemetry::ring::Ring;
use std::ffi::CStr;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

const SHMEM_KEY: &CStr = c"event_store span ring";

static RING: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());

/// The shared-memory segment of the ring (placed by `crate::pg::shmem`).
pub static SEGMENT: Segment = Segment {
    key: SHMEM_KEY,
    size,
    tranche: None,
    init: init_ring,
    attach: |mem| RING.store(mem, Ordering::Release),
};

fn capacity() -> usize {
    BUFFER_SIZE.get().max(1) as usize
}

fn size() -> usize {
    Ring::size_for(capacity())
}

/// # Safety
/// See [`Segment::init`].
unsafe fn init_ring(mem: *mut u8) {
    // SAFETY: Segment::init's contract: `size()` bytes of shared memory, 8-byte aligned
    // (ShmemInitStruct aligns to MAXALIGN), not in use by anyone yet. es.trace_buffer_size is a
    // postmaster-start setting, so the size is the one requested.
    unsafe { Ring::init(mem, capacity()) };
}

/// The ring, when the library is preloaded.
pub fn get() -> Option<Ring> {
    let mem = RING.load(Ordering::Acquire);
    // SAFETY: RING is null or the ring init_ring set up in shared memory, mapped for the life of
    // the process.
    (!mem.is_null()).then(|| unsafe { Ring::attach(mem) })
}
