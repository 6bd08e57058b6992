//! The lease on one core's note stream: who may number and append notes
//! for that core, and how that right is taken away.
//!
//! Each core writes one ordered stream of notes (`NODE-CORE-SEQ`, see
//! `note.rs`). Normally one executor holds the stream for the life of the
//! process. When the watchdog replaces a failed shard (`watchdog.rs`), the
//! old executor may still be alive: a stalled thread cannot be killed, and
//! it may wake up at any moment and carry on from where it stopped. Two
//! writers of one stream would be fatal: if both gave out sequence number
//! 42, recovery would keep one note and silently drop the other, which may
//! have been acknowledged. The lease prevents it.
//!
//! A [`StreamLease`] is one `AtomicU64`: the low 63 bits hold the last
//! sequence number handed out, the top bit says the lease was *fenced*.
//! - The holder takes a number with one `fetch_add` ([`StreamLease::next_seq`]):
//!   if the fence bit was already set, it gets no number and must refuse
//!   the write.
//! - The watchdog fences with one `fetch_or` ([`StreamLease::fence`]), which
//!   returns the last number ever handed out, atomically. The successor's
//!   lease starts above it, so no number is ever given out twice, whatever
//!   the old thread does afterwards.
//! - Before the holder treats a note as published (answers the client, or
//!   keeps a note it took from its inbox), it confirms with an RMW
//!   ([`StreamLease::still_held`]). An RMW reads the latest value in the
//!   atomic's modification order, so if it finds no fence, everything the
//!   holder did before it (the note is durable in the log) happens-before
//!   the watchdog's fence and therefore before the successor rescans the
//!   log: the successor sees that note. If it finds the fence, the holder
//!   hands the note to the successor through the core's inbox instead.
//!
//! Cost: one uncontended atomic RMW per note written, and one per batch of
//! notes received from other cores; nothing on the read path.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The fence bit; the other 63 bits count sequence numbers.
const FENCED: u64 = 1 << 63;

/// The right to number and append notes of one core's stream.
#[derive(Debug)]
pub struct StreamLease {
    /// FENCED | last sequence number handed out.
    state: AtomicU64,
}

impl StreamLease {
    /// A lease whose first number will be `seq_last + 1`.
    pub fn new(seq_last: u64) -> StreamLease {
        assert!(seq_last < FENCED, "sequence space exhausted");
        StreamLease {
            state: AtomicU64::new(seq_last),
        }
    }

    /// Makes sure the next number is above `seq_last` (e.g. the highest
    /// number found in the log). Called by the holder before it serves.
    pub fn raise_floor(&self, seq_last: u64) {
        debug_assert!(seq_last < FENCED);
        self.state.fetch_max(seq_last, Ordering::AcqRel);
    }

    /// The next sequence number, or `None` once the lease is fenced.
    #[inline]
    pub fn next_seq(&self) -> Option<u64> {
        let previous = self.state.fetch_add(1, Ordering::AcqRel);
        if previous & FENCED != 0 {
            return None;
        }
        let seq = previous + 1;
        // 2^63 notes from one core will not happen; if it ever did, the
        // increment would carry into the fence bit, which only fences.
        debug_assert!(seq & FENCED == 0);
        Some(seq)
    }

    /// True if the lease is still held. An RMW on purpose (see the module
    /// doc): a `true` answer orders everything before it ahead of any fence.
    #[inline]
    pub fn still_held(&self) -> bool {
        self.state.fetch_add(0, Ordering::AcqRel) & FENCED == 0
    }

    /// A cheap check for loops that only need to stop soon after a fence.
    #[inline]
    pub fn is_fenced(&self) -> bool {
        self.state.load(Ordering::Relaxed) & FENCED != 0
    }

    /// Fences the lease (idempotent); returns the last number handed out
    /// while it was held. After this, [`next_seq`](Self::next_seq) and
    /// [`still_held`](Self::still_held) of this lease fail forever.
    pub fn fence(&self) -> u64 {
        let previous = self.state.fetch_or(FENCED, Ordering::AcqRel);
        previous & !FENCED
    }
}

/// Hands out the segment numbers of one core. Shared by every incarnation of
/// that core's writer, so an old writer that wakes up after being replaced
/// can never create (or append to) the file its successor uses.
#[derive(Debug)]
pub struct SegmentNumbers {
    next: AtomicU32,
}

impl SegmentNumbers {
    /// Numbers start at `next` (one above the highest found on disk).
    pub fn new(next: u32) -> SegmentNumbers {
        SegmentNumbers {
            next: AtomicU32::new(next.max(1)),
        }
    }

    /// A number no other writer of this core has had or will get.
    pub fn allocate(&self) -> u32 {
        self.next.fetch_add(1, Ordering::AcqRel)
    }

    /// The number the next `allocate` returns (every number allocated
    /// after this call is at least this).
    pub fn peek(&self) -> u32 {
        self.next.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_continue_from_the_floor() {
        let lease = StreamLease::new(5);
        assert_eq!(lease.next_seq(), Some(6));
        lease.raise_floor(10);
        assert_eq!(lease.next_seq(), Some(11));
        lease.raise_floor(3);
        assert_eq!(lease.next_seq(), Some(12));
        assert!(lease.still_held());
    }

    #[test]
    fn a_fence_returns_the_last_number_and_stops_the_holder() {
        let lease = StreamLease::new(0);
        assert_eq!(lease.next_seq(), Some(1));
        assert_eq!(lease.next_seq(), Some(2));
        assert_eq!(lease.fence(), 2);
        assert!(lease.is_fenced());
        assert!(!lease.still_held());
        assert_eq!(lease.next_seq(), None, "a fenced holder gets no number");
        assert!(lease.is_fenced(), "a second fence keeps it fenced");
        lease.fence();
        assert!(!lease.still_held());
    }

    #[test]
    fn concurrent_holders_and_fence_never_share_a_number() {
        use std::collections::HashSet;
        use std::sync::Arc;
        let lease = Arc::new(StreamLease::new(0));
        let taker = {
            let lease = Arc::clone(&lease);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(seq) = lease.next_seq() {
                    got.push(seq);
                }
                got
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(5));
        let last = lease.fence();
        let got = taker.join().unwrap();
        let successor = StreamLease::new(last);
        let after: Vec<u64> = (0..100).filter_map(|_| successor.next_seq()).collect();
        let all: HashSet<u64> = got.iter().chain(after.iter()).copied().collect();
        assert_eq!(
            all.len(),
            got.len() + after.len(),
            "a number was given twice"
        );
        assert!(got.iter().all(|&s| s <= last));
    }

    #[test]
    fn segment_numbers_are_unique() {
        let numbers = SegmentNumbers::new(7);
        assert_eq!(numbers.allocate(), 7);
        assert_eq!(numbers.allocate(), 8);
        assert_eq!(SegmentNumbers::new(0).allocate(), 1);
    }
}
