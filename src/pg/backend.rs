//! The backend's own state, read or waited on safely: its database, its current memory
//! context, its latch. The store uses these instead of PostgreSQL's globals.

use pgrx::pg_sys;
use std::time::Duration;

/// This backend's database.
pub fn current_database() -> u32 {
    // SAFETY: MyDatabaseId is set at connection and constant afterwards.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// A memory context to make values in later: the one current when [`Memory::current`] was
/// called (a call's own, before a connection or a fold switches to one of theirs). Keep it only
/// while that context lives: within the call that took it.
#[derive(Clone, Copy)]
pub struct Memory(pg_sys::MemoryContext);

impl Memory {
    /// The current memory context.
    pub fn current() -> Memory {
        // SAFETY: a read of the backend's current context, always set.
        Memory(unsafe { pg_sys::CurrentMemoryContext })
    }

    /// The context of a call in progress.
    pub fn from_call(memory: crate::pg::call::CallMemory<'_>) -> Memory {
        Memory(memory.raw())
    }

    /// Runs `f` with this context current, and switches back.
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        // SAFETY: a switch to a context of this call (see the type) and back; an ERROR inside
        // `f` unwinds to the abort, which resets the current context itself.
        let previous = unsafe { pg_sys::MemoryContextSwitchTo(self.0) };
        let r = f();
        // SAFETY: back to the context that was current before.
        unsafe { pg_sys::MemoryContextSwitchTo(previous) };
        r
    }

    /// The raw context, for the glue that allocates in it.
    pub(crate) fn raw(self) -> pg_sys::MemoryContext {
        self.0
    }
}

/// Sleeps on this backend's latch for at most `timeout` (a commit that wakes the backend ends
/// it sooner), then resets the latch.
pub fn sleep_on_latch(timeout: Duration) {
    // SAFETY: waits on this backend's own latch (MyLatch), then resets it, as every latch loop
    // in PostgreSQL does; an interrupt is handled by the caller's CHECK_FOR_INTERRUPTS.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            timeout.as_millis().max(1) as i64,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
}
