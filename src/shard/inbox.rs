//! Cross-core mailboxes: how a note written through one core reaches every
//! other core (its view of the shared index is refreshed, the note goes
//! onto its feed), and every other message between cores (dispatched
//! requests and their answers, replication news, shutdown).
//!
//! Each core has one [`Inbox`]: a bounded lock-free queue
//! (`crossbeam_queue::ArrayQueue`, multi-producer) of [`NoteRef`]s and an
//! [`AtomicWaker`] for its consumer task. A producer pushes and wakes; the
//! consumer drains the queue (refreshing its view of the index and pushing
//! each note onto its feed), then registers its waker and re-checks before
//! sleeping (so no push can be missed). Only the
//! first wake after the consumer registers costs anything (a cross-thread
//! wake of a sleeping executor); later ones find no waker. A note is an
//! `Arc` pointer: the bytes are shared, never copied between cores.
//!
//! **Notes do not wake the consumer** unless it is *eager* (it has live
//! subscribers, or peers to replicate to) or [`LAZY_NOTES_MAX`] of them are
//! queued. Waking a sleeping executor costs it 17-22 µs (measured: one
//! connection writing through one core), many times the pop, view
//! refresh and feed push a note needs. Instead the consumer takes queued
//! notes before it routes each request (`Shard::index_queued_notes`), so a
//! request sent after a note was acknowledged anywhere sees it; its sweeper
//! tick (every 100 ms) catches up an idle core. Every other message wakes at once.
//!
//! The same inbox carries the shutdown request from the main thread.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

use crate::cluster::Requester;
use crate::http::request::OwnedRequest;
use crate::http::response::CompleteResponse;
use crate::store::index::NoteRef;

/// Messages a core may have queued for it before producers wait. At the
/// measured write rates this is well over a second of writes.
pub const INBOX_CAPACITY: usize = 64 * 1024;

/// Notes queued for a core that is not eager before their producer wakes
/// it anyway: bounds the catching up an idle core does at once, and keeps
/// the queue far from full.
pub const LAZY_NOTES_MAX: usize = 1024;

/// What one core can ask of another.
pub enum CoreMsg {
    /// A durable note, already in the shared index: the receiving core
    /// refreshes its view and pushes it onto its feed.
    Note(NoteRef),
    /// Replication watermarks moved: re-check writes waiting for peers.
    Replicated,
    /// Execute a request on the receiving core and send the reply back.
    Dispatch(Box<DispatchJob>),
    /// The reply to a request this core dispatched elsewhere.
    DispatchReply { token: u64, reply: CompleteResponse },
    /// For core 0 (which owns the peer connections): forward a request to
    /// another node.
    Forward {
        node: u32,
        core: u16,
        job: Box<DispatchJob>,
    },
    /// For core 0: send the reply of a request a peer forwarded to us.
    PeerReply {
        node: u32,
        id: u64,
        reply: CompleteResponse,
    },
    /// From the watchdog: the executor thread of `core`'s incarnation
    /// `generation` has ended. Requests this core dispatched there that it
    /// had taken and not answered died with it (`dispatch::fail_lost`).
    ShardLost { core: usize, generation: u64 },
}

/// Where the reply to a dispatched request goes.
#[derive(Debug, Clone, Copy)]
pub enum ReplyTo {
    /// A waiting request on a core of this node.
    Core(Requester),
    /// A request forwarded by another node (answered through core 0).
    Peer { node: u32, id: u64 },
}

/// A request to run elsewhere, and where its answer goes.
#[derive(Debug)]
pub struct DispatchJob {
    pub reply_to: ReplyTo,
    /// For a job from a core of this node: 0 while queued; then the
    /// generation plus one of the incarnation that takes the job from its
    /// inbox to run it (`Dispatch`) or to relay it to another node
    /// (`Forward`, core 0).
    /// The requester reads it when that incarnation's thread ends: a job
    /// still queued is run or relayed by the successor, a taken one is lost.
    pub taken_by: Option<Arc<AtomicU64>>,
    pub request: OwnedRequest,
}

pub struct Inbox {
    queue: ArrayQueue<CoreMsg>,
    waker: AtomicWaker,
    shutdown: AtomicBool,
    /// Set by the consumer while notes must reach it at once.
    eager: AtomicBool,
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox {
            queue: ArrayQueue::new(INBOX_CAPACITY),
            waker: AtomicWaker::new(),
            shutdown: AtomicBool::new(false),
            eager: AtomicBool::new(false),
        }
    }
}

impl Inbox {
    /// Queues a message for this inbox's core, waiting (asynchronously, on
    /// the producer's executor) while the queue is full.
    pub async fn send(&self, mut msg: CoreMsg) {
        let lazy = matches!(msg, CoreMsg::Note(_));
        loop {
            match self.queue.push(msg) {
                Ok(()) => break,
                Err(back) => {
                    msg = back;
                    self.waker.wake();
                    glommio::timer::sleep(Duration::from_micros(200)).await;
                }
            }
        }
        if lazy {
            // Pairs with the fence in `set_eager`: either this sees the
            // consumer eager, or the consumer's drain after becoming eager
            // sees this note.
            fence(Ordering::SeqCst);
            if !self.eager.load(Ordering::Relaxed) && self.queue.len() < LAZY_NOTES_MAX {
                return;
            }
        }
        self.waker.wake();
    }

    /// Queues a message without waiting, from any thread (the watchdog's):
    /// false if the queue is full.
    pub fn try_send_now(&self, msg: CoreMsg) -> bool {
        let queued = self.queue.push(msg).is_ok();
        self.waker.wake();
        queued
    }

    /// Whether notes wake the consumer at once (see the module doc). Turning
    /// it on wakes the consumer, to take the notes queued before.
    pub fn set_eager(&self, eager: bool) {
        self.eager.store(eager, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if eager {
            self.waker.wake();
        }
    }

    pub fn try_recv(&self) -> Option<CoreMsg> {
        self.queue.pop()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Registers the consumer's waker. Call, then re-check the queue and
    /// the shutdown flag before sleeping.
    pub fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Takes `own` (the caller's waker) out of the waker slot, so that it is
    /// dropped on the caller's thread. A waker of a glommio task that is
    /// dropped on another thread after its executor ended is never freed
    /// (it is queued to that executor's notifier, which it keeps alive: an
    /// eventfd and the task leak). If the slot holds somebody else's waker
    /// (a successor's), it is put back and woken, in case a note arrived
    /// while it was out.
    pub fn unregister(&self, own: &std::task::Waker) {
        if let Some(w) = self.waker.take() {
            if !w.will_wake(own) {
                self.waker.register(&w);
                w.wake();
            }
        }
    }

    /// Asks the owning core to shut down (called from the main thread).
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}
