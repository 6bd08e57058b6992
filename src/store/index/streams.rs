//! Notes by id: one slot array per origin stream, shared by every core.
//!
//! A stream (`NODE-CORE`) numbers its notes densely, so a note's slot is
//! its sequence number. The slots live in buckets of doubling size
//! ([`BUCKET0_SLOTS`] << b), allocated once and never moved or freed while
//! the stream lives: a reader on any core finds a slot with two loads
//! (bucket pointer, slot), no lock, no reference count, nothing written.
//!
//! Invariants:
//! - only the index's writer (under its lock) stores into a stream; a slot
//!   goes from null to an entry once and never changes again;
//! - a slot's entry is stored with `Release` before `dense_end` covers it,
//!   and readers load both with `Acquire`, so an entry a reader sees points
//!   at a record whose bytes it sees too;
//! - sequence numbers far beyond the dense run (more than
//!   [`STREAM_GAP_MAX`] past it, or at [`DENSE_SEQ_LIMIT`] and above) are
//!   not given slots: they go to the origin's sparse map, which is part of
//!   an immutable index version (`order.rs`'s `Version`), so an absurd
//!   number cannot make the array allocate its gap.
//!
//! Buckets are allocated zeroed (`alloc_zeroed`: for large ones, fresh
//! pages that the kernel maps on first write), so the part of the newest
//! bucket that holds no note yet costs address space, not memory.

use std::alloc::{self, Layout};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::Entry;

/// Slots in the first bucket; bucket `b` holds `BUCKET0_SLOTS << b`.
const BUCKET0_SLOTS: u64 = 1024;

/// Sequence numbers at or above this never get a slot (they go to the
/// sparse map): 2^40 notes in one stream is far beyond any real store.
pub(super) const DENSE_SEQ_LIMIT: u64 = 1 << 40;

/// Sequence gaps a stream's slots may open before far-out sequence numbers
/// go to the sparse map instead (bounds memory against absurd sequences).
pub(super) const STREAM_GAP_MAX: u64 = 1 << 16;

/// Buckets needed to cover every slot below [`DENSE_SEQ_LIMIT`].
const BUCKETS: usize = (64 - (DENSE_SEQ_LIMIT / BUCKET0_SLOTS).leading_zeros()) as usize;

/// The bucket and offset of slot `seq` (`seq < DENSE_SEQ_LIMIT`).
#[inline]
fn locate(seq: u64) -> (usize, usize) {
    let x = seq / BUCKET0_SLOTS + 1;
    let bucket = 63 - x.leading_zeros() as usize;
    let start = BUCKET0_SLOTS * ((1u64 << bucket) - 1);
    (bucket, (seq - start) as usize)
}

fn bucket_layout(bucket: usize) -> Layout {
    // Cannot fail: the largest bucket is 2^39 slots of 8 bytes.
    Layout::array::<AtomicPtr<u8>>((BUCKET0_SLOTS << bucket) as usize)
        .expect("bucket layout fits the address space")
}

/// One origin's notes by sequence number (the dense part).
pub(super) struct Stream {
    buckets: [AtomicPtr<AtomicPtr<u8>>; BUCKETS],
    /// One past the highest sequence number with a slot entry (0: none).
    dense_end: AtomicU64,
    /// The highest sequence number held, slots and sparse map together.
    seq_max: AtomicU64,
}

impl Stream {
    pub(super) fn new() -> Stream {
        Stream {
            buckets: [const { AtomicPtr::new(ptr::null_mut()) }; BUCKETS],
            dense_end: AtomicU64::new(0),
            seq_max: AtomicU64::new(0),
        }
    }

    /// The entry at `seq`, if it has a slot entry.
    #[inline]
    pub(super) fn get(&self, seq: u64) -> Option<Entry> {
        if seq >= self.dense_end.load(Ordering::Acquire) {
            return None;
        }
        let (bucket, offset) = locate(seq);
        let slots = self.buckets[bucket].load(Ordering::Acquire);
        if slots.is_null() {
            // A gap below `dense_end` that no note fell into yet.
            return None;
        }
        // SAFETY: a non-null bucket was allocated with `offset` in bounds
        // (see `locate`), and buckets are never freed while the stream lives.
        let slot = unsafe { &*slots.add(offset) };
        NonNull::new(slot.load(Ordering::Acquire)).map(Entry)
    }

    pub(super) fn dense_end(&self) -> u64 {
        self.dense_end.load(Ordering::Acquire)
    }

    pub(super) fn seq_max(&self) -> u64 {
        self.seq_max.load(Ordering::Acquire)
    }

    /// Whether `seq` may take a slot (else it belongs in the sparse map).
    pub(super) fn fits_dense(&self, seq: u64) -> bool {
        seq < DENSE_SEQ_LIMIT && seq <= self.dense_end.load(Ordering::Relaxed) + STREAM_GAP_MAX
    }

    /// Stores `entry` at `seq`. Writer only (under the index's lock); the
    /// slot must be empty and `fits_dense(seq)` true.
    pub(super) fn put(&self, seq: u64, entry: Entry) {
        debug_assert!(self.fits_dense(seq));
        debug_assert!(self.get(seq).is_none(), "a slot is written once");
        let (bucket, offset) = locate(seq);
        let mut slots = self.buckets[bucket].load(Ordering::Acquire);
        if slots.is_null() {
            let layout = bucket_layout(bucket);
            // SAFETY: the layout is non-zero-sized; all-zero bytes are null
            // `AtomicPtr`s.
            slots = unsafe { alloc::alloc_zeroed(layout) }.cast::<AtomicPtr<u8>>();
            if slots.is_null() {
                alloc::handle_alloc_error(layout);
            }
            self.buckets[bucket].store(slots, Ordering::Release);
        }
        // SAFETY: `offset` is within the bucket (see `locate`).
        let slot = unsafe { &*slots.add(offset) };
        slot.store(entry.0.as_ptr(), Ordering::Release);
        if seq >= self.dense_end.load(Ordering::Relaxed) {
            self.dense_end.store(seq + 1, Ordering::Release);
        }
        self.raise_seq_max(seq);
    }

    /// Records that `seq` is held (also for the sparse map's notes).
    pub(super) fn raise_seq_max(&self, seq: u64) {
        if seq > self.seq_max.load(Ordering::Relaxed) {
            self.seq_max.store(seq, Ordering::Release);
        }
    }

    /// Slot entries with a sequence number in `from..end`, in order.
    pub(super) fn dense_range(
        &self,
        from: u64,
        end: u64,
    ) -> impl Iterator<Item = (u64, Entry)> + '_ {
        let end = end.min(self.dense_end());
        (from..end).filter_map(move |seq| self.get(seq).map(|e| (seq, e)))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        for (bucket, slots) in self.buckets.iter_mut().enumerate() {
            let slots = *slots.get_mut();
            if !slots.is_null() {
                // SAFETY: allocated in `put` with this bucket's layout.
                unsafe { alloc::dealloc(slots.cast::<u8>(), bucket_layout(bucket)) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_found_across_buckets() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(BUCKET0_SLOTS - 1), (0, BUCKET0_SLOTS as usize - 1));
        assert_eq!(locate(BUCKET0_SLOTS), (1, 0));
        assert_eq!(
            locate(3 * BUCKET0_SLOTS - 1),
            (1, 2 * BUCKET0_SLOTS as usize - 1)
        );
        assert_eq!(locate(3 * BUCKET0_SLOTS), (2, 0));
        let (b, o) = locate(DENSE_SEQ_LIMIT - 1);
        assert!(b < BUCKETS);
        assert!((o as u64) < BUCKET0_SLOTS << b);
    }

    #[test]
    fn put_get_and_holes() {
        let stream = Stream::new();
        let mut bytes = [0u8; 4];
        let e = Entry(NonNull::from(&mut bytes[0]));
        for seq in [1u64, 2, 5000, 3] {
            assert!(stream.get(seq).is_none());
            assert!(stream.fits_dense(seq));
            stream.put(seq, e);
        }
        assert!(stream.get(4).is_none());
        assert!(
            stream.get(2000).is_none(),
            "a bucket between two that hold notes"
        );
        assert!(stream.get(5000).is_some());
        assert!(stream.get(5001).is_none());
        assert_eq!(stream.seq_max(), 5000);
        assert_eq!(stream.dense_end(), 5001);
        let seqs: Vec<u64> = stream.dense_range(0, u64::MAX).map(|(s, _)| s).collect();
        assert_eq!(seqs, [1, 2, 3, 5000]);
        assert!(!stream.fits_dense(5001 + STREAM_GAP_MAX + 1));
        assert!(!stream.fits_dense(u64::MAX));
    }
}
