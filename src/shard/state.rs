//! A shard's state: everything one core owns while an executor serves it.
//!
//! Each shard runs on its own pinned glommio executor and owns its listening
//! socket (SO_REUSEPORT), its connections, its view of the note index, its
//! feed, its log writer and its buffer pools. Nothing here is shared with
//! another core except through [`Shared`] (immutable after start, atomics
//! written by one core, and the one note index, below) and the lock-free
//! inboxes (`inbox.rs`).
//! The tasks that run on this state are in `tasks.rs`.
//!
//! A shard is one *incarnation* (`incarnation.rs`) of its core's server: the
//! watchdog restarts a failed one as a new executor. Failure handling:
//! - a panic in a connection's handler is caught in `conn::serve` and
//!   closes that connection only;
//! - a panic in shard machinery (the tasks of `tasks.rs`) is caught at the
//!   task boundary (`spawn_machinery`) and *crashes* the shard
//!   ([`Shard::crash`]): it reports the crash to the watchdog at once,
//!   shuts all its sockets, fails pending writes, and ends every task
//!   before the executor returns. Ending every task matters: glommio does
//!   not reliably drop the tasks still pending when an executor returns or
//!   unwinds (some are dropped, others leak), so their sockets, files and
//!   memory could leak (measured; see `watchdog.rs`);
//! - every task is in glommio's default task queue: a panic in a task of a
//!   non-default queue aborts the whole process (DataDog/glommio#689);
//! - nothing here uses `spawn_blocking` (a panicking closure hangs its
//!   caller); the one blocking job, rescanning the core's own recent
//!   segments after a restart, runs before the executor serves anything;
//! - after the watchdog has replaced this incarnation (its lease is fenced,
//!   see `store/lease.rs`), it numbers and writes no more notes, hands any
//!   note it still finishes to its successor through the core's inbox,
//!   keeps its hands off the core's metrics, and stops.
//!
//! The note index is one for the whole process (`store/index.rs`): a shard
//! holds a *view* of it, refreshed after this core inserts a note and
//! whenever it takes notes out of its inbox ([`Shard::index_queued_notes`],
//! before it routes a request). Every note reaches this core's feed exactly
//! once: through [`Shard::publish`] on the core that inserted it, through
//! [`Shard::note_arrived`] on every other core (its inbox); live
//! subscribers (`GET /events`) and, on core 0, replication follow the feed.

use std::cell::{Cell, Ref, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures_lite::FutureExt as _;

use super::bufpool::BufferPool;
use super::conn_table::{now_ms, ConnTable};
use super::dispatch;
use super::inbox::{CoreMsg, DispatchJob, Inbox};
use super::incarnation::{Incarnation, Report, SocketRegistry, Supervision};
use crate::api::ApiState;
use crate::cluster::{Cluster, ClusterShared};
use crate::config::{AckPolicy, Config};
use crate::fault::{FaultCell, SLOW_RESPONSE_DELAY_MS};
use crate::metrics::{AllMetrics, CoreMetrics};
use crate::store::feed::Feed;
use crate::store::index::{Digest, Index, NoteRef, SharedIndex};
use crate::store::lease::SegmentNumbers;
use crate::store::note::{Note, NoteId, Origin};
use crate::store::writer::{LogWriter, WriteError};
use crate::store::NodeInfo;

/// Free buffers kept per pool per core.
const POOL_FREE_MAX: usize = 1024;
/// The smallest read buffer: a request head up to `header_bytes_max` must
/// fit in one (it is parsed in place), and 16 KiB takes a typical
/// pipelined batch of small requests in one read.
const READ_BUFFER_BYTES_MIN: usize = 16 * 1024;
/// Write buffer size: a rendered page of notes (about 22 KB for 100 notes)
/// takes two; most responses are a few hundred bytes.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// What every shard can see. Immutable after start-up except for atomics,
/// each of which has a single writing core, and the per-core slots below.
pub struct Shared {
    pub config: Config,
    pub node: NodeInfo,
    pub data_dir: PathBuf,
    /// The public listener's bound address (HTTPS when `tls` is set).
    pub listen: SocketAddr,
    /// The admin listener's and the redirect listener's bound addresses,
    /// when configured (a restarted shard binds them again).
    pub admin_listen: Option<SocketAddr>,
    pub redirect_listen: Option<SocketAddr>,
    /// The TLS configuration of the public listener (its certificate is
    /// swapped by a reload; see `tls/server.rs`).
    pub tls: Option<Arc<crate::tls::server::ServerTls>>,
    /// The `Strict-Transport-Security` value for HTTPS responses.
    pub hsts: Option<&'static str>,
    /// CPU each shard runs on: pinned there when `pinned`, else only the
    /// count matters and the kernel places the executors.
    pub cpus: Vec<usize>,
    /// Whether shard executors are pinned (`Placement::pins`).
    pub pinned: bool,
    /// One per core; a restarted shard consumes the same queue as its
    /// predecessor (see `tasks::run_inbox`).
    pub inboxes: Arc<[Inbox]>,
    pub metrics: AllMetrics,
    /// Per-core state that outlives a shard's incarnations.
    pub cores: Box<[CoreSlot]>,
    /// The one note index, shared by every core and every incarnation
    /// (each shard reads it through its own view).
    pub index: Arc<SharedIndex>,
    pub recovered_log_bytes: u64,
    pub started: Instant,
    pub cluster: Arc<ClusterShared>,
}

/// What belongs to a core rather than to one executor serving it.
pub struct CoreSlot {
    /// The core's segment numbers, shared by all its writers.
    pub segment_numbers: Arc<SegmentNumbers>,
    /// A fault posted for this core (`--fault-injection` only).
    pub fault: FaultCell,
    /// Restarts and the last failure, written by the watchdog and read by
    /// `/_status`: never touched on the request path.
    pub supervision: Mutex<Supervision>,
    /// The lowest segment number of this core that may hold a durable note
    /// missing from the index (a crash between the log and the index): the
    /// first segment of the oldest incarnation whose notes were not yet
    /// rescanned. A successor rescans from here (`tasks::run`), then sets
    /// it to its own first segment.
    pub unindexed_from_segment: AtomicU32,
}

impl CoreSlot {
    pub fn new(next_segment: u32) -> CoreSlot {
        CoreSlot {
            segment_numbers: Arc::new(SegmentNumbers::new(next_segment)),
            fault: FaultCell::default(),
            supervision: Mutex::default(),
            unindexed_from_segment: AtomicU32::new(next_segment),
        }
    }
}

/// How far a shard is in stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    Running,
    /// SIGTERM/SIGINT: stop accepting, let in-flight requests finish.
    Graceful,
    /// Crashed or replaced: shut every socket now.
    Hard,
}

pub struct Shard {
    pub(super) id: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) incarnation: Arc<Incarnation>,
    index: RefCell<Index>,
    /// Notes newly indexed here: `GET /events` subscribers and (core 0)
    /// replication follow it.
    feed: Rc<Feed>,
    pub(super) writer: Rc<LogWriter>,
    pub conns: ConnTable,
    pub read_pool: BufferPool,
    pub write_pool: BufferPool,
    /// The handlers' own per-core state (render buffer, page cache).
    api: ApiState,
    pub(super) stop: Cell<Stop>,
    /// Resolves `shutdown_signalled`: set when stopping begins.
    stopping: Signal,
    /// Set when the shard is done serving; the machinery tasks then end.
    pub(super) finished: Signal,
    /// Why the shard crashed (the first reason wins).
    pub(super) crash: RefCell<Option<String>>,
    /// The inbox consumer's waker, so the sweeper can wake it (see `run_inbox`).
    pub(super) inbox_waker: RefCell<Option<Waker>>,
    /// Messages other than notes that `index_queued_notes` popped, for the
    /// inbox task (which handles them first).
    pub(super) inbox_deferred: RefCell<Vec<CoreMsg>>,
    /// Counters written once this incarnation was replaced, so that it no
    /// longer disturbs the core's real ones (its successor writes those).
    orphan_metrics: CoreMetrics,
    /// Any per-request fault armed (`slow` or `handler-panic`): the one
    /// check on the request path when fault injection is on.
    pub(super) request_faults_armed: Cell<bool>,
    pub(super) slow_until_ms: Cell<u64>,
    pub(super) panic_next_request: Cell<bool>,
    /// Writes waiting for peers' acknowledgements (woken by `CoreMsg::Replicated`).
    replication_waiters: RefCell<Vec<Waker>>,
    /// The cluster, on core 0 only.
    pub(super) cluster: RefCell<Option<Rc<Cluster>>>,
    /// Requests this core dispatched elsewhere, by token.
    pub(super) dispatch_pending: RefCell<rustc_hash::FxHashMap<u64, Rc<dispatch::ReplySlot>>>,
    pub(super) dispatch_next_token: Cell<u64>,
    /// `node/core`, for the `X-Served-By` header.
    served_by: &'static str,
    /// This shard's copy of the TLS configuration (its own reference
    /// count; the certificate and ticket keys inside are shared).
    tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS handshakes in progress on this core (`tls_handshakes_max_per_core`).
    pub(super) tls_handshakes: Cell<usize>,
    /// Per-core random state for dispatch decisions (xorshift).
    rng: Cell<u64>,
}

/// A one-shot, level-triggered event for tasks of one executor.
#[derive(Default)]
pub(super) struct Signal {
    set: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Signal {
    pub(super) fn raise(&self) {
        if !self.set.replace(true) {
            for w in self.wakers.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    pub(super) fn is_set(&self) -> bool {
        self.set.get()
    }

    pub(super) async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.get() {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            // Tasks poll this repeatedly (the accept loop once per
            // connection): keep one waker per task, not one per poll.
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

impl Shard {
    /// The state of a new incarnation serving `incarnation.core`, reading
    /// the shared index through `index`.
    pub(super) fn new(
        shared: Arc<Shared>,
        incarnation: Arc<Incarnation>,
        index: Index,
    ) -> Rc<Shard> {
        let id = incarnation.core;
        let config = &shared.config;
        // Core 0 replicates to peers: with a cluster, notes from the other
        // cores must reach it at once (and every core, for simplicity: a
        // cluster's write path is network-bound anyway). Otherwise a core's
        // inbox wakes it for notes only while it has live subscribers.
        let always_eager = shared.cluster.enabled;
        shared.inboxes[id].set_eager(always_eager);
        let hook_shared = Arc::clone(&shared);
        let subscribers_were = Cell::new(0usize);
        let feed = Feed::on_subscribers(move |n| {
            let was = subscribers_were.replace(n);
            if !always_eager && (was == 0) != (n == 0) {
                hook_shared.inboxes[id].set_eager(n > 0);
            }
            hook_shared.metrics[id].set_sse_subscribers(n as u64);
        });
        let read_buffer_bytes = config.header_bytes_max.max(READ_BUFFER_BYTES_MIN);
        Rc::new(Shard {
            id,
            index: RefCell::new(index),
            feed: Rc::new(feed),
            writer: LogWriter::new(
                shared.data_dir.clone(),
                id as u16,
                Arc::clone(&shared.cores[id].segment_numbers),
                Arc::clone(&incarnation.lease),
                config.fsync,
                config.segment_bytes_max,
                Arc::clone(&shared.metrics[id].log),
            ),
            incarnation,
            conns: ConnTable::default(),
            read_pool: BufferPool::new(read_buffer_bytes, POOL_FREE_MAX),
            write_pool: BufferPool::new(WRITE_BUFFER_BYTES, POOL_FREE_MAX),
            api: ApiState::default(),
            stop: Cell::new(Stop::Running),
            stopping: Signal::default(),
            finished: Signal::default(),
            crash: RefCell::default(),
            inbox_waker: RefCell::default(),
            inbox_deferred: RefCell::default(),
            orphan_metrics: CoreMetrics::default(),
            request_faults_armed: Cell::new(false),
            slow_until_ms: Cell::new(0),
            panic_next_request: Cell::new(false),
            replication_waiters: RefCell::default(),
            cluster: RefCell::new(None),
            dispatch_pending: RefCell::default(),
            dispatch_next_token: Cell::new(1),
            served_by: Box::leak(format!("{}/{}", shared.node.name, id).into_boxed_str()),
            tls: shared
                .tls
                .as_ref()
                .map(|tls| Arc::new(rustls::ServerConfig::clone(&tls.config()))),
            tls_handshakes: Cell::new(0),
            rng: Cell::new(
                0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) << 32) ^ u64::from(shared.node.id),
            ),
            shared,
        })
    }

    /// The `X-Served-By` value, if the header is enabled.
    pub fn served_by(&self) -> Option<&'static str> {
        self.shared.config.served_by.then_some(self.served_by)
    }

    /// The TLS configuration new public connections are made with (`None`:
    /// the public listener speaks plain HTTP).
    pub fn tls_config(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.as_ref()
    }

    /// The `Strict-Transport-Security` value, on a node serving HTTPS.
    #[inline]
    pub fn hsts(&self) -> Option<&'static str> {
        self.shared.hsts
    }

    /// A pseudo-random number (xorshift64*): dispatch choices only.
    pub fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn cluster(&self) -> Option<Rc<Cluster>> {
        self.cluster.borrow().clone()
    }

    /// Sends a message to a core (this one included) without waiting: if
    /// its inbox is full, a task waits for room instead.
    pub fn notify_core(&self, core: usize, msg: CoreMsg) {
        let shared = Arc::clone(&self.shared);
        glommio::spawn_local(async move {
            if let Some(inbox) = shared.inboxes.get(core) {
                inbox.send(msg).await;
            }
        })
        .detach();
    }

    /// Makes notes received from a peer durable in this core's log, then
    /// indexes them (one insert for the batch) and passes the new ones on.
    pub async fn store_replicated(&self, notes: Vec<NoteRef>) -> Result<(), WriteError> {
        let payloads: Vec<&[u8]> = notes.iter().map(|r| r.payload()).collect();
        self.writer.append_all(&payloads).await?;
        let mut fresh: Vec<NoteRef> = Vec::with_capacity(notes.len());
        self.shared
            .index
            .insert_all(&notes, |r| fresh.push(r.clone()));
        self.refresh_index();
        for note_ref in fresh {
            self.announce(note_ref).await;
        }
        Ok(())
    }

    pub fn id(&self) -> usize {
        self.id
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn node(&self) -> &NodeInfo {
        &self.shared.node
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// This core's counters; a throwaway set once this incarnation was
    /// replaced (a relaxed load of the lease, on a line that is written only
    /// when this core creates a note).
    #[inline]
    pub fn metrics(&self) -> &CoreMetrics {
        if self.incarnation.superseded() {
            &self.orphan_metrics
        } else {
            &self.shared.metrics[self.id]
        }
    }

    /// This core's sockets, as the watchdog sees them.
    pub fn sockets(&self) -> &SocketRegistry {
        &self.incarnation.sockets
    }

    /// Records in a job from another core that this incarnation took it
    /// (to run or to relay), so that its requester answers at once if this
    /// incarnation fails before answering (`dispatch::fail_lost`).
    pub(super) fn take_job(&self, job: &DispatchJob) {
        if let Some(taken_by) = &job.taken_by {
            taken_by.store(self.incarnation.generation + 1, Ordering::Release);
        }
    }

    /// True once the watchdog replaced this incarnation (it had stalled):
    /// whatever still runs on it must stop acting for the core.
    pub fn superseded(&self) -> bool {
        self.incarnation.superseded()
    }

    pub fn generation(&self) -> u64 {
        self.incarnation.generation
    }

    pub fn index(&self) -> Ref<'_, Index> {
        self.index.borrow()
    }

    pub fn feed(&self) -> &Rc<Feed> {
        &self.feed
    }

    /// The handlers' own per-core state.
    pub fn api_state(&self) -> &ApiState {
        &self.api
    }

    /// Which notes the index holds, with this core's view brought up to
    /// them (see `Index::refresh_digest`).
    pub fn index_digest(&self) -> Digest {
        self.index.borrow_mut().refresh_digest()
    }

    /// Moves this core's view of the index to the newest version (one
    /// atomic load when nothing changed).
    #[inline]
    pub fn refresh_index(&self) {
        self.index.borrow_mut().refresh();
    }

    /// A note another core inserted in the index reached this core (taken
    /// from its inbox): the view is refreshed (the inserting core published
    /// the version holding the note before it queued it), then the note goes
    /// onto this core's feed (live subscribers, and replication on core 0,
    /// follow it, and read the index when woken). Costs one atomic load
    /// besides the feed push when the version did not change.
    pub fn note_arrived(&self, note_ref: NoteRef) {
        self.refresh_index();
        self.feed.push(note_ref);
    }

    /// Before a handler waits: gives an empty write buffer from this core's
    /// pool back to the pool (see [`Shard::unpark_write_buffer`]).
    pub fn park_write_buffer(&self, out: &mut Vec<u8>) {
        if out.is_empty() && out.capacity() >= self.write_pool.buffer_bytes() {
            self.write_pool.give(std::mem::take(out));
        }
    }

    /// After the wait: a write buffer again, if `park_write_buffer` took it.
    pub fn unpark_write_buffer(&self, out: &mut Vec<u8>) {
        if out.capacity() == 0 {
            *out = self.write_pool.take_write();
        }
    }

    pub fn shutting_down(&self) -> bool {
        self.stop.get() != Stop::Running
    }

    /// True if a `slow` or `handler-panic` fault is armed on this shard.
    #[inline]
    pub fn request_faults_armed(&self) -> bool {
        self.request_faults_armed.get()
    }

    /// Applies the armed per-request faults (see `fault.rs`) to the request
    /// about to be handled.
    pub async fn apply_request_faults(&self) {
        if self.panic_next_request.replace(false) {
            self.rearm_request_faults();
            panic!("injected fault: handler-panic on shard {}", self.id);
        }
        if now_ms() < self.slow_until_ms.get() {
            glommio::timer::sleep(Duration::from_millis(SLOW_RESPONSE_DELAY_MS)).await;
        }
    }

    pub(super) fn rearm_request_faults(&self) {
        self.request_faults_armed
            .set(self.panic_next_request.get() || now_ms() < self.slow_until_ms.get());
    }

    fn origin(&self) -> Origin {
        Origin {
            node: self.shared.node.id,
            core: self.id as u16,
        }
    }

    /// Creates a note in this core's stream: durable in the log, then
    /// indexed here and sent to every other core (and, with `--ack all`,
    /// held by every connected peer). While it waits it is not counted as
    /// load for dispatch (`CoreMetrics::dispatch_load`).
    pub async fn create_note(&self, text: String) -> Result<NoteRef, WriteError> {
        // A guard, so a cancelled or panicking write ends the wait too.
        let _waiting =
            GaugeUnit::begin(self, CoreMetrics::log_wait_begin, CoreMetrics::log_wait_end);
        // A peer may hold notes of this stream that our log lost (damage);
        // never reuse their sequence numbers.
        let lease = &self.incarnation.lease;
        lease.raise_floor(self.index.borrow().seq_max(self.origin()));
        // Numbers come from the lease: none once the watchdog replaced us.
        let Some(seq) = lease.next_seq() else {
            return Err(WriteError::Restarting);
        };
        let created_at_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let note = Note {
            id: NoteId {
                origin: self.origin(),
                seq,
            },
            created_at_us,
            text,
        };
        // Frame once: the same record bytes go to the log and into memory.
        let note_ref = NoteRef::from_new_note(&note);
        self.writer.append_framed(note_ref.record()).await?;
        self.publish(note_ref.clone()).await;
        self.wait_replicated(seq).await;
        Ok(note_ref)
    }

    /// With `--ack all`, waits until every connected peer holds this core's
    /// stream up to `seq` (bounded by `ack_timeout_ms`).
    async fn wait_replicated(&self, seq: u64) {
        let shared = &self.shared;
        if !shared.cluster.enabled || shared.config.ack == AckPolicy::Local {
            return;
        }
        let slot = &shared.cluster.replicated[self.id];
        let replicated = poll_fn(|cx| {
            if slot.load(Ordering::Acquire) >= seq {
                Poll::Ready(true)
            } else {
                self.replication_waiters
                    .borrow_mut()
                    .push(cx.waker().clone());
                Poll::Pending
            }
        });
        let timed_out = async {
            glommio::timer::sleep(Duration::from_millis(shared.config.ack_timeout_ms)).await;
            false
        };
        if !replicated.or(timed_out).await {
            self.metrics().add_replication_ack_timeouts(1);
            tracing::warn!(
                core = self.id,
                seq,
                "a write was answered before every peer acknowledged it (ack timeout)"
            );
        }
    }

    /// Takes the notes other cores have queued for this one, now, and
    /// refreshes this core's view of the index: notes do not wake a core
    /// (see `inbox.rs`), so this runs before every request is routed, and a
    /// request sent after a note was acknowledged through any core finds it
    /// here. Other messages popped meanwhile go to the inbox task. Costs one
    /// load of the queue's ends when it is empty.
    pub fn index_queued_notes(&self) {
        let inbox = &self.shared.inboxes[self.id];
        if inbox.is_empty() || !self.incarnation.lease.still_held() {
            return;
        }
        // Bounded by what is queued now: producers keep pushing meanwhile.
        let mut received = 0u64;
        let mut deferred = false;
        for _ in 0..inbox.len() {
            match inbox.try_recv() {
                Some(CoreMsg::Note(note_ref)) => {
                    self.note_arrived(note_ref);
                    received += 1;
                }
                Some(other) => {
                    self.inbox_deferred.borrow_mut().push(other);
                    deferred = true;
                }
                None => break,
            }
        }
        self.metrics().add_notes_received_from_cores(received);
        if deferred {
            if let Some(w) = self.inbox_waker.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
    }

    /// Inserts a durable note in the shared index (visible to this core at
    /// once, and to every other core once it refreshes) and, if it is new,
    /// passes it on (`announce`).
    pub async fn publish(&self, note_ref: NoteRef) {
        let inserted = self.shared.index.insert(&note_ref);
        self.refresh_index();
        if inserted {
            self.announce(note_ref).await;
        }
    }

    /// Pushes a note this core just inserted in the index onto this core's
    /// feed and queues it for every other core: they refresh their view and
    /// push it onto their feeds when they take it (`note_arrived`).
    pub async fn announce(&self, note_ref: NoteRef) {
        self.feed.push(note_ref.clone());
        for (core, inbox) in self.shared.inboxes.iter().enumerate() {
            if core != self.id {
                inbox.send(CoreMsg::Note(note_ref.clone())).await;
            }
        }
        if !self.incarnation.lease.still_held() {
            // Replaced while this note was being written: the note is in the
            // index, but this incarnation's feed goes with it. The successor
            // reads this core's inbox, so the note reaches its feed there.
            self.shared.inboxes[self.id]
                .send(CoreMsg::Note(note_ref))
                .await;
        }
    }

    /// Wakes the writes waiting for peers' acknowledgements (the
    /// watermarks moved).
    pub(super) fn wake_replication_waiters(&self) {
        for w in self.replication_waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub(super) fn begin_stop(&self, stop: Stop) {
        let was = self.stop.get();
        if was == Stop::Hard || was == stop {
            return;
        }
        tracing::debug!(core = self.id, stop = ?stop, "shard stopping");
        self.stop.set(stop);
        if stop == Stop::Hard {
            // Whatever is still waiting for the log will not be written by
            // this shard; without this, their tasks would never end.
            self.writer.abandon(WriteError::Restarting);
        }
        self.stopping.raise();
    }

    /// Resolves once this shard has begun shutting down (for any reason).
    pub async fn shutdown_signalled(&self) {
        self.stopping.wait().await
    }

    /// Stops an incarnation the watchdog has replaced (it had stalled).
    pub(super) fn stop_superseded(&self) {
        if self.stop.get() != Stop::Hard {
            tracing::warn!(
                core = self.id,
                generation = self.generation(),
                "this executor was replaced by the watchdog while it was stalled; stopping it"
            );
            self.begin_stop(Stop::Hard);
        }
    }

    pub(super) fn superseded_or_stopping(&self) -> bool {
        self.incarnation.superseded() || self.shutting_down()
    }

    /// Records a caught panic in shard machinery: reports it to the
    /// watchdog at once and stops the shard hard.
    pub(super) fn crash(&self, reason: String) {
        if self.crash.borrow().is_some() {
            return;
        }
        tracing::error!(
            core = self.id,
            cpu = self.incarnation.cpu,
            generation = self.incarnation.generation,
            reason = %reason,
            "shard crashed; closing its connections for the watchdog to restart it"
        );
        *self.crash.borrow_mut() = Some(reason.clone());
        self.incarnation.report(Report::Crashed(reason));
        self.begin_stop(Stop::Hard);
    }
}

/// One unit of a per-core gauge (requests in flight, requests waiting for
/// the log), taken back when dropped: also when the request's task panics
/// or is cancelled. Each end goes to the shard's current metrics (an
/// orphan's once the shard was replaced, as all its counters do).
pub struct GaugeUnit<'a> {
    shard: &'a Shard,
    end: fn(&CoreMetrics),
}

impl<'a> GaugeUnit<'a> {
    pub fn begin(
        shard: &'a Shard,
        begin: fn(&CoreMetrics),
        end: fn(&CoreMetrics),
    ) -> GaugeUnit<'a> {
        begin(shard.metrics());
        GaugeUnit { shard, end }
    }
}

impl Drop for GaugeUnit<'_> {
    fn drop(&mut self) {
        (self.end)(self.shard.metrics());
    }
}
