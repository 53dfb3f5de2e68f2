//! The lock-free span ring (docs/reference.md §7): backends push finished [`SpanRecord`]s into it and never
//! wait, the export worker is its single consumer, and it counts what it drops and what the
//! worker reports. The memory is given to it (shared memory, placed by the extension's `trace::ring_segment`), so
//! it is tested here with plain memory and threads.

use super::record::{SpanRecord, copy_truncated};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters and the export status, shared by every backend and the worker.
#[repr(C)]
#[derive(Debug)]
pub struct RingStats {
    /// Spans written into the ring.
    pub recorded: AtomicU64,
    /// Spans dropped because the ring was full.
    pub dropped_full: AtomicU64,
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans given up after the export retries failed.
    pub dropped_export: AtomicU64,
    /// Failed export attempts (each retry counts).
    pub export_failures: AtomicU64,
    /// Batches the collector refused with an answer the OTLP/HTTP specification says not to
    /// retry (a 4xx other than 429, a 5xx other than 502, 503, 504): dropped at once, their
    /// spans counted in `dropped_export` too.
    pub batches_rejected: AtomicU64,
    /// Time of the last successful export, ns since the Unix epoch; 0 = never.
    pub last_success_unix_ns: AtomicU64,
    /// Time of the last failed attempt, ns since the Unix epoch; 0 = never.
    pub last_failure_unix_ns: AtomicU64,
    /// Process id of the export worker; 0 when it is not running.
    pub worker_pid: AtomicU64,
    /// Address of the worker's latch (in shared memory) for backends to wake it when the ring
    /// is half full; 0 when it is not running.
    pub worker_latch: AtomicU64,
    /// Seqlock version of `last_error` (odd while it is written).
    error_version: AtomicU64,
    error_len: AtomicU64,
    error_words: [AtomicU64; ERROR_WORDS],
}

const ERROR_WORDS: usize = 32;
/// Bytes kept of the last export error.
pub const ERROR_BYTES: usize = ERROR_WORDS * 8;

impl RingStats {
    /// Stores the last export error (single writer: the worker).
    pub fn set_last_error(&self, message: &str) {
        let mut buf = [0u8; ERROR_BYTES];
        let n = copy_truncated(&mut buf, message);
        self.error_version.fetch_add(1, Ordering::AcqRel);
        for (i, w) in self.error_words.iter().enumerate() {
            let word = u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            w.store(word, Ordering::Relaxed);
        }
        self.error_len.store(n as u64, Ordering::Relaxed);
        self.error_version.fetch_add(1, Ordering::AcqRel);
    }

    /// The last export error, `None` when there was none.
    pub fn last_error(&self) -> Option<String> {
        loop {
            let v1 = self.error_version.load(Ordering::Acquire);
            if v1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut buf = [0u8; ERROR_BYTES];
            for (i, w) in self.error_words.iter().enumerate() {
                buf[i * 8..i * 8 + 8].copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
            }
            let len = (self.error_len.load(Ordering::Relaxed) as usize).min(ERROR_BYTES);
            std::sync::atomic::fence(Ordering::Acquire);
            if self.error_version.load(Ordering::Acquire) == v1 {
                return (v1 != 0).then(|| String::from_utf8_lossy(&buf[..len]).into_owned());
            }
        }
    }
}

#[repr(C)]
struct RingHeader {
    capacity: u64,
    /// Next position a producer claims (many producers, compare-and-swap).
    enqueue: AtomicU64,
    _pad1: [u64; 6],
    /// Next position the consumer reads (the worker only).
    dequeue: AtomicU64,
    _pad2: [u64; 7],
    stats: RingStats,
}

#[repr(C)]
struct Cell {
    /// Vyukov's sequence: `pos` when free for the producer of `pos`, `pos + 1` when filled.
    seq: AtomicU64,
    record: UnsafeCell<SpanRecord>,
}

/// A bounded multi-producer, single-consumer queue of span records in caller-provided memory
/// (Dmitry Vyukov's bounded queue). A producer never waits: it claims a position with one
/// compare-and-swap, copies its record in and publishes it; when the ring is full the record is
/// dropped and counted. Between the claim and the publish there is only a memory copy, so no
/// PostgreSQL error or signal can leave a claimed slot unpublished.
#[derive(Clone, Copy)]
pub struct Ring {
    header: *const RingHeader,
    cells: *const Cell,
}

// SAFETY: all shared state is reached through atomics; a cell's record is written only by the
// producer that claimed it and read only by the single consumer after it was published.
unsafe impl Send for Ring {}
// SAFETY: as for Send: &Ring only gives access through atomics and the claim protocol.
unsafe impl Sync for Ring {}

impl Ring {
    /// Bytes of memory a ring of `capacity` records needs.
    pub fn size_for(capacity: usize) -> usize {
        std::mem::size_of::<RingHeader>() + capacity * std::mem::size_of::<Cell>()
    }

    /// Alignment the memory must have.
    pub const ALIGN: usize = 8;

    /// Initializes a ring in `mem` (at least [`Ring::size_for`] bytes, 8-byte aligned).
    ///
    /// # Safety
    /// `mem` must be valid for writes of that size and not in use by anyone else.
    pub unsafe fn init(mem: *mut u8, capacity: usize) -> Ring {
        // SAFETY: the caller's contract: `mem` holds the header and `capacity` cells; zeroed
        // atomics are valid, and each cell's sequence starts at its index.
        unsafe {
            std::ptr::write_bytes(mem, 0, Ring::size_for(capacity));
            let header = mem.cast::<RingHeader>();
            (*header).capacity = capacity as u64;
            let ring = Ring::attach(mem);
            for i in 0..capacity {
                (*ring.cells.add(i)).seq.store(i as u64, Ordering::Relaxed);
            }
            ring
        }
    }

    /// A handle on a ring initialized by [`Ring::init`].
    ///
    /// # Safety
    /// `mem` must point to an initialized ring that outlives the handle.
    pub unsafe fn attach(mem: *mut u8) -> Ring {
        let header = mem.cast::<RingHeader>();
        Ring {
            header,
            // SAFETY: the cells follow the header within the ring's memory (the contract).
            cells: unsafe { mem.add(std::mem::size_of::<RingHeader>()) }.cast::<Cell>(),
        }
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: `attach`'s contract: the ring outlives the handle.
        unsafe { &*self.header }
    }

    fn cell(&self, pos: u64) -> &Cell {
        let i = pos % self.header().capacity;
        // SAFETY: i < capacity, a cell of the ring.
        unsafe { &*self.cells.add(i as usize) }
    }

    /// How many records the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.header().capacity as usize
    }

    /// The shared counters.
    pub fn stats(&self) -> &RingStats {
        &self.header().stats
    }

    /// Records waiting for the worker (approximate while producers are active).
    pub fn len(&self) -> usize {
        let h = self.header();
        let e = h.enqueue.load(Ordering::Relaxed);
        let d = h.dequeue.load(Ordering::Relaxed);
        e.saturating_sub(d) as usize
    }

    /// No records waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a record; `false` (and the drop counted) when the ring is full.
    pub fn push(&self, record: &SpanRecord) -> bool {
        let h = self.header();
        let mut pos = h.enqueue.load(Ordering::Relaxed);
        loop {
            let cell = self.cell(pos);
            let seq = cell.seq.load(Ordering::Acquire);
            let diff = seq as i64 - pos as i64;
            if diff == 0 {
                match h.enqueue.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the compare-exchange gave this producer the cell; no one reads
                        // the record until its sequence is published below.
                        unsafe { *cell.record.get() = *record };
                        cell.seq.store(pos + 1, Ordering::Release);
                        h.stats.recorded.fetch_add(1, Ordering::Relaxed);
                        return true;
                    }
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                h.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
                return false;
            } else {
                pos = h.enqueue.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the oldest published record.
    ///
    /// # Safety
    /// Only one thread of one process may consume the ring at a time (the export worker): two
    /// consumers would read and release the same cell.
    pub unsafe fn pop(&self) -> Option<SpanRecord> {
        let h = self.header();
        let pos = h.dequeue.load(Ordering::Relaxed);
        let cell = self.cell(pos);
        if cell.seq.load(Ordering::Acquire) != pos + 1 {
            return None;
        }
        // SAFETY: the sequence shows the record published (Acquire), and the single consumer
        // (the contract) owns it until it releases the cell below.
        let record = unsafe { *cell.record.get() };
        cell.seq.store(pos + h.capacity, Ordering::Release);
        h.dequeue.store(pos + 1, Ordering::Relaxed);
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(Vec<u64>);
    impl Mem {
        fn ring(&mut self, capacity: usize) -> Ring {
            self.0 = vec![0; Ring::size_for(capacity).div_ceil(8)];
            // SAFETY: the vector holds size_for(capacity) bytes, 8-byte aligned, and lives as
            // long as the Mem the test keeps.
            unsafe { Ring::init(self.0.as_mut_ptr().cast(), capacity) }
        }
    }

    /// The tests' consumer: the test thread that calls it is the ring's only consumer.
    fn pop(ring: &Ring) -> Option<SpanRecord> {
        // SAFETY: each test consumes its ring from one thread only.
        unsafe { ring.pop() }
    }

    fn rec(i: u64) -> SpanRecord {
        let mut r = SpanRecord::new(
            "event_store.append_events",
            [1; 16],
            i.to_be_bytes(),
            [0; 8],
        );
        r.start_unix_ns = i;
        r
    }

    #[test]
    fn ring_keeps_order_drops_when_full_and_wraps() {
        let mut m = Mem(Vec::new());
        let ring = m.ring(3);
        assert!(pop(&ring).is_none());
        assert!(ring.push(&rec(1)) && ring.push(&rec(2)) && ring.push(&rec(3)));
        assert!(!ring.push(&rec(4)), "full: dropped");
        assert_eq!(ring.stats().dropped_full.load(Ordering::Relaxed), 1);
        assert_eq!(ring.len(), 3);
        assert_eq!(pop(&ring).unwrap().start_unix_ns, 1);
        assert!(ring.push(&rec(5)));
        let got: Vec<u64> = std::iter::from_fn(|| pop(&ring))
            .map(|r| r.start_unix_ns)
            .collect();
        assert_eq!(got, vec![2, 3, 5]);
        assert_eq!(ring.stats().recorded.load(Ordering::Relaxed), 4);
        for round in 0..10 {
            assert!(ring.push(&rec(round)));
            assert_eq!(pop(&ring).unwrap().start_unix_ns, round);
        }
    }

    #[test]
    fn ring_loses_nothing_between_many_producers_and_one_consumer() {
        let mut m = Mem(Vec::new());
        let ring = m.ring(64);
        let producers = 4;
        let per = 20_000u64;
        let mut seen = 0u64;
        let mut sum = 0u64;
        std::thread::scope(|s| {
            for p in 0..producers {
                s.spawn(move || {
                    for i in 0..per {
                        ring.push(&rec(p * per + i));
                    }
                });
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                match pop(&ring) {
                    Some(r) => {
                        seen += 1;
                        sum += r.start_unix_ns;
                    }
                    None => {
                        let st = ring.stats();
                        let done = st.recorded.load(Ordering::Relaxed)
                            + st.dropped_full.load(Ordering::Relaxed);
                        if done == producers * per && ring.is_empty() {
                            break;
                        }
                        assert!(std::time::Instant::now() < deadline, "consumer stuck");
                        std::thread::yield_now();
                    }
                }
            }
        });
        let st = ring.stats();
        assert_eq!(seen, st.recorded.load(Ordering::Relaxed));
        assert_eq!(
            seen + st.dropped_full.load(Ordering::Relaxed),
            producers * per
        );
        assert!(sum > 0);
    }

    #[test]
    fn last_error_is_kept_and_truncated() {
        let mut m = Mem(Vec::new());
        let ring = m.ring(1);
        assert_eq!(ring.stats().last_error(), None);
        ring.stats().set_last_error("connection refused");
        assert_eq!(
            ring.stats().last_error().as_deref(),
            Some("connection refused")
        );
        ring.stats().set_last_error(&"y".repeat(1000));
        assert_eq!(ring.stats().last_error().unwrap().len(), ERROR_BYTES);
    }
}
