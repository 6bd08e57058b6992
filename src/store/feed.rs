//! One core's live feed: the notes newly indexed on this core, for the
//! Server-Sent Events subscribers (`GET /events`) connected to it and, on
//! core 0 of a cluster node, for replication (its one *follower*, which only
//! wants to know that the index grew).
//!
//! Every note reaches every core's feed exactly once (`Shard::announce` on
//! the core that inserted it in the shared index, `Shard::note_arrived` on
//! every other core, from its inbox), so a subscriber on any core sees every
//! note, however it arrived (written through this core, through another
//! core's inbox, or by replication from another node). The feed is per core and touched only
//! by its core: no lock, no atomic. It knows nothing of metrics or inboxes:
//! whoever owns it learns of subscriber-count changes through the hook set
//! with [`Feed::on_subscribers`].
//!
//! The feed keeps the last [`FEED_NOTES_MAX`] notes in arrival order, each
//! with a sequence number. A subscriber remembers the sequence number of the
//! next note it wants; a subscriber that falls more than the ring behind
//! (it could not write fast enough) is told so ([`Next::Lagged`]) instead of
//! silently missing notes. The ring holds `NoteRef`s, which share the bytes
//! the index already holds: its cost is one pointer and one counter per slot.
//!
//! Subscribers live in a slot table (like `ConnTable`): a slot holds the
//! waker of a subscriber waiting for news, so a new note wakes each waiting
//! subscriber once, and re-polling replaces a waker instead of piling them up.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::{Poll, Waker};

use super::index::NoteRef;

/// Called with the new subscriber count whenever it changes.
type SubscribersHook = Box<dyn Fn(usize)>;

/// Notes kept for subscribers that are behind (per core). A subscriber more
/// than this many notes behind is told to reload. At 64 notes per write
/// batch this is many batches of slack; the memory is one `NoteRef` each.
pub const FEED_NOTES_MAX: usize = 1024;

#[derive(Default)]
pub struct Feed {
    /// The last notes indexed here, oldest first.
    ring: RefCell<VecDeque<NoteRef>>,
    /// Sequence number of `ring[0]` (the first note ever pushed is 0).
    ring_first_seq: Cell<u64>,
    /// Largest `created_at_us` of any note dropped off the ring: a
    /// subscriber asking for notes created since a time at or before this
    /// may have missed some.
    evicted_created_max_us: Cell<Option<u64>>,
    /// Subscriber slots: `Some(waker)` while that subscriber waits.
    slots: RefCell<Vec<Option<Option<Waker>>>>,
    free: RefCell<Vec<usize>>,
    subscribers: Cell<usize>,
    /// Slots holding a waker: a note arriving while every subscriber is
    /// still busy writing (a burst) costs no walk over the slots.
    waiting: Cell<usize>,
    /// Woken by every new note; not a subscriber (see [`Feed::poll_grew`]).
    follower: RefCell<Option<Waker>>,
    /// Told the subscriber count when it changes (the shard publishes it in
    /// its metrics and makes its inbox eager while anyone subscribes).
    on_subscribers: Option<SubscribersHook>,
}

/// What a subscriber gets next.
pub enum Next {
    /// The note with this sequence number (the subscriber's cursor moves on).
    Note(NoteRef),
    /// Nothing new yet.
    Empty,
    /// Notes this subscriber wanted fell off the ring.
    Lagged,
}

impl Feed {
    /// A feed that calls `hook` with the subscriber count whenever it changes.
    pub fn on_subscribers(hook: impl Fn(usize) + 'static) -> Feed {
        Feed {
            on_subscribers: Some(Box::new(hook)),
            ..Feed::default()
        }
    }

    fn set_subscribers(&self, n: usize) {
        self.subscribers.set(n);
        if let Some(hook) = &self.on_subscribers {
            hook(n);
        }
    }

    /// Sequence number the next pushed note will get.
    pub fn seq_next(&self) -> u64 {
        self.ring_first_seq.get() + self.ring.borrow().len() as u64
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.get()
    }

    /// Adds a newly indexed note and wakes every waiting subscriber.
    pub fn push(&self, note_ref: NoteRef) {
        {
            let mut ring = self.ring.borrow_mut();
            if ring.len() == FEED_NOTES_MAX {
                if let Some(old) = ring.pop_front() {
                    let created = old.note().created_at_us();
                    let max = self
                        .evicted_created_max_us
                        .get()
                        .map_or(created, |m| m.max(created));
                    self.evicted_created_max_us.set(Some(max));
                    self.ring_first_seq.set(self.ring_first_seq.get() + 1);
                }
            }
            ring.push_back(note_ref);
        }
        if let Some(w) = self.follower.borrow_mut().take() {
            w.wake();
        }
        if self.waiting.replace(0) == 0 {
            return;
        }
        for slot in self.slots.borrow_mut().iter_mut().flatten() {
            if let Some(w) = slot.take() {
                w.wake();
            }
        }
    }

    /// The note at `seq`, if it is still in the ring.
    pub fn next(&self, seq: u64) -> Next {
        let first = self.ring_first_seq.get();
        if seq < first {
            return Next::Lagged;
        }
        match self.ring.borrow().get((seq - first) as usize) {
            Some(r) => Next::Note(r.clone()),
            None => Next::Empty,
        }
    }

    /// Where a new subscriber that has seen every note created before
    /// `since_us` starts: the sequence number of the first ring note
    /// created at or after `since_us` (or of the next note), or `None` if
    /// such a note may already have left the ring.
    pub fn start_since(&self, since_us: u64) -> Option<u64> {
        if self
            .evicted_created_max_us
            .get()
            .is_some_and(|m| m >= since_us)
        {
            return None;
        }
        let ring = self.ring.borrow();
        let offset = ring
            .iter()
            .position(|r| r.note().created_at_us() >= since_us)
            .unwrap_or(ring.len());
        Some(self.ring_first_seq.get() + offset as u64)
    }

    /// Takes a subscriber slot, or `None` at `max` subscribers.
    pub fn subscribe(&self, max: usize) -> Option<usize> {
        if self.subscribers.get() >= max {
            return None;
        }
        self.set_subscribers(self.subscribers.get() + 1);
        let mut slots = self.slots.borrow_mut();
        Some(match self.free.borrow_mut().pop() {
            Some(id) => {
                slots[id] = Some(None);
                id
            }
            None => {
                slots.push(Some(None));
                slots.len() - 1
            }
        })
    }

    pub fn unsubscribe(&self, slot: usize) {
        if let Some(s) = self.slots.borrow_mut().get_mut(slot) {
            if let Some(waker) = s.take() {
                if waker.is_some() {
                    self.waiting.set(self.waiting.get() - 1);
                }
                self.set_subscribers(self.subscribers.get() - 1);
                self.free.borrow_mut().push(slot);
            }
        }
    }

    /// For the feed's one follower (replication on core 0): ready once a
    /// note with sequence number `seq` or later was pushed. A follower is
    /// not a subscriber: it takes no slot, is not counted, and reads no
    /// notes from the ring (it reads the index).
    pub fn poll_grew(&self, seq: u64, waker: &Waker) -> Poll<()> {
        if seq < self.seq_next() {
            return Poll::Ready(());
        }
        let mut follower = self.follower.borrow_mut();
        if !follower.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *follower = Some(waker.clone());
        }
        Poll::Pending
    }

    /// Ready once the note `seq` exists (or fell off the ring).
    pub fn poll_news(&self, slot: usize, seq: u64, waker: &Waker) -> Poll<()> {
        if seq < self.seq_next() {
            return Poll::Ready(());
        }
        if let Some(Some(w)) = self.slots.borrow_mut().get_mut(slot) {
            match w {
                Some(old) if old.will_wake(waker) => {}
                Some(_) => *w = Some(waker.clone()),
                None => {
                    *w = Some(waker.clone());
                    self.waiting.set(self.waiting.get() + 1);
                }
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::note::{self, Note, NoteId, Origin};
    use std::sync::Arc;
    use std::task::Wake;

    fn note_ref(seq: u64, created: u64) -> NoteRef {
        let note = Note {
            id: NoteId {
                origin: Origin { node: 1, core: 0 },
                seq,
            },
            created_at_us: created,
            text: "x".into(),
        };
        NoteRef::from_payload(note::archive(&note)).unwrap()
    }

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn subscribers_are_woken_and_read_in_order() {
        let feed = Feed::default();
        let slot = feed.subscribe(2).unwrap();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(Arc::clone(&flag));
        assert!(feed.poll_news(slot, 0, &waker).is_pending());
        assert!(feed.poll_news(slot, 0, &waker).is_pending());
        assert_eq!(feed.waiting.get(), 1, "re-polling does not pile up wakers");
        feed.push(note_ref(1, 100));
        assert_eq!(feed.waiting.get(), 0);
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(feed.poll_news(slot, 0, &waker).is_ready());
        assert!(matches!(feed.next(0), Next::Note(r) if r.note().id().seq == 1));
        assert!(matches!(feed.next(1), Next::Empty));
        assert!(feed.poll_news(slot, 1, &waker).is_pending());
        feed.unsubscribe(slot);
        assert_eq!(feed.subscribers(), 0);
        assert_eq!(
            feed.waiting.get(),
            0,
            "a waiting subscriber that leaves is not counted"
        );
    }

    #[test]
    fn the_follower_is_woken_by_every_note_and_is_not_a_subscriber() {
        let counts = std::rc::Rc::new(RefCell::new(Vec::new()));
        let seen = std::rc::Rc::clone(&counts);
        let feed = Feed::on_subscribers(move |n| seen.borrow_mut().push(n));
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(Arc::clone(&flag));
        assert!(feed.poll_grew(0, &waker).is_pending());
        feed.push(note_ref(1, 100));
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(feed.poll_grew(0, &waker).is_ready());
        assert!(feed.poll_grew(1, &waker).is_pending());
        assert_eq!(feed.subscribers(), 0);
        let slot = feed.subscribe(1).unwrap();
        feed.unsubscribe(slot);
        assert_eq!(*counts.borrow(), vec![1, 0], "the hook hears every change");
    }

    #[test]
    fn subscriber_limit_holds() {
        let feed = Feed::default();
        let a = feed.subscribe(1).unwrap();
        assert!(feed.subscribe(1).is_none());
        feed.unsubscribe(a);
        assert!(feed.subscribe(1).is_some());
    }

    #[test]
    fn lagging_and_since_are_reported_exactly() {
        let feed = Feed::default();
        for i in 0..FEED_NOTES_MAX as u64 + 10 {
            feed.push(note_ref(i + 1, 1000 + i));
        }
        // The first ten notes (created 1000..1009) left the ring.
        assert!(matches!(feed.next(9), Next::Lagged));
        assert!(matches!(feed.next(10), Next::Note(_)));
        assert_eq!(feed.start_since(1009), None);
        assert_eq!(feed.start_since(1010), Some(10));
        assert_eq!(feed.start_since(5000), Some(feed.seq_next()));
    }
}
