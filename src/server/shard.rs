//! A shard: everything one core owns, and the tasks that run on it.
//!
//! Each shard runs on its own pinned glommio executor and owns its listening
//! socket (SO_REUSEPORT), its accept loop, its connections, its copy of the
//! note index, its log writer and its buffer pools. Nothing here is shared
//! with another core except through [`Shared`] (immutable after start, or
//! atomics written by one core) and the lock-free [`Inbox`]es.
//!
//! Tasks of a shard:
//! - the accept loop (the executor's main future; it ends the shard);
//! - one task per connection (`conn.rs`);
//! - the log flusher (`store/writer.rs`), doing group commit;
//! - the inbox consumer, indexing notes written through other cores;
//! - the sweeper, enforcing connection deadlines, beating the heartbeat the
//!   watchdog watches, and taking injected faults (`fault.rs`).
//!
//! A shard is one *incarnation* (`incarnation.rs`) of its core's server: the
//! watchdog restarts a failed one as a new executor. Failure handling here:
//! - a panic in a connection's handler is caught in `conn::serve` and
//!   closes that connection only;
//! - a panic in shard machinery (the tasks above) is caught at the task
//!   boundary (`spawn_machinery`) and *crashes* the shard: it reports the
//!   crash to the watchdog at once, shuts all its sockets, fails pending
//!   writes, and ends every task before the executor returns. Ending every
//!   task matters: glommio does not reliably drop the tasks still pending
//!   when an executor returns or unwinds (some are dropped, others leak), so
//!   their sockets, files and memory could leak (measured; see `watchdog.rs`);
//! - every task is in glommio's default task queue: a panic in a task of a
//!   non-default queue aborts the whole process (DataDog/glommio#689);
//! - nothing here uses `spawn_blocking` (a panicking closure hangs its
//!   caller); the one blocking job, rebuilding the index after a restart,
//!   runs before the executor serves anything;
//! - after the watchdog has replaced this incarnation (its lease is fenced,
//!   see `store/lease.rs`), it numbers and writes no more notes, hands any
//!   note it still finishes to its successor through the core's inbox,
//!   keeps its hands off the core's metrics, and stops.
//!
//! Every note enters this core's index through [`Shard::index_note`], which
//! also feeds the core's live subscribers (`feed.rs`, `GET /events`).

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::future::{poll_fn, Future};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures_lite::FutureExt as _;
use glommio::net::TcpListener;

use super::bufpool::BufferPool;
use super::conn;
use super::conn_table::{now_ms, ConnTable};
use super::dispatch;
use super::fault::{FaultCell, FaultKind, SLOW_RESPONSE_DELAY_MS};
use super::feed::Feed;
use super::inbox::{CoreMsg, Inbox};
use super::incarnation::{ExitReason, Incarnation, RegisteredSocket, Report, SocketRegistry};
use crate::cluster::{Cluster, ClusterShared};
use crate::config::{AckPolicy, Config};
use crate::metrics::{AllMetrics, CoreMetrics};
use crate::store::index::{FrozenIndex, Index, NoteRef};
use crate::store::lease::SegmentNumbers;
use crate::store::note::{Note, NoteId, Origin};
use crate::store::recovery;
use crate::store::writer::{LogWriter, WriteError};
use crate::watchdog::Supervision;

/// How often the sweeper checks connection deadlines and beats the heartbeat.
pub const SWEEP_INTERVAL_MS: u64 = 100;
/// Free buffers kept per pool per core.
const POOL_FREE_MAX: usize = 1024;
/// Notes the inbox consumer takes per lease check.
const INBOX_BATCH_MAX: usize = 256;
/// A crashed or replaced shard waits at most this long for its connection
/// tasks and its in-flight log write to end after shutting their sockets.
const HARD_STOP_WAIT_MS: u64 = 2_000;
/// Time allowed to the machinery tasks to end once the shard is done;
/// those still running then are cancelled (dropped on this executor).
const TASKS_END_WAIT_MS: u64 = 1_000;

/// This node's identity.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: u32,
    pub name: String,
}

/// What every shard can see. Immutable after start-up except for atomics,
/// each of which has a single writing core, and the per-core slots below.
pub struct Shared {
    pub config: Config,
    pub node: NodeInfo,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// CPU each shard is pinned to.
    pub cpus: Vec<usize>,
    /// One per core; a restarted shard consumes the same queue as its
    /// predecessor (see `run_inbox`).
    pub inboxes: Arc<[Inbox]>,
    pub metrics: AllMetrics,
    /// Per-core state that outlives a shard's incarnations.
    pub cores: Box<[CoreSlot]>,
    /// The index as recovered at start-up; each shard starts from a copy.
    pub recovered: FrozenIndex,
    /// Per core, the first segment number written in this run (one above
    /// the highest found at start-up).
    pub next_segment_by_core: rustc_hash::FxHashMap<u16, u32>,
    pub recovered_log_bytes: u64,
    pub started: Instant,
    pub cluster: ClusterShared,
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
}

impl CoreSlot {
    pub fn new(next_segment: u32) -> CoreSlot {
        CoreSlot {
            segment_numbers: Arc::new(SegmentNumbers::new(next_segment)),
            fault: FaultCell::default(),
            supervision: Mutex::default(),
        }
    }
}

/// How far a shard is in stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// SIGTERM/SIGINT: stop accepting, let in-flight requests finish.
    Graceful,
    /// Crashed or replaced: shut every socket now.
    Hard,
}

pub struct Shard {
    id: usize,
    shared: Arc<Shared>,
    incarnation: Arc<Incarnation>,
    index: RefCell<Index>,
    /// Notes newly indexed here, for `GET /events` subscribers on this core.
    feed: Rc<Feed>,
    writer: Rc<LogWriter>,
    pub conns: ConnTable,
    pub read_pool: BufferPool,
    pub write_pool: BufferPool,
    /// Reusable buffer for rendering response bodies.
    scratch: RefCell<Vec<u8>>,
    /// The newest notes page as last rendered (see `routes/page.rs`).
    pub page_cache: RefCell<Option<crate::routes::page::PageCache>>,
    stop: Cell<Stop>,
    /// Resolves `shutdown_signalled`: set when stopping begins.
    stopping: Signal,
    /// Set when the shard is done serving; the machinery tasks then end.
    finished: Signal,
    /// Why the shard crashed (the first reason wins).
    crash: RefCell<Option<String>>,
    /// The inbox consumer's waker, so the sweeper can wake it (see `run_inbox`).
    inbox_waker: RefCell<Option<Waker>>,
    /// Messages other than notes that `index_queued_notes` popped, for the
    /// inbox task (which handles them first).
    inbox_deferred: RefCell<Vec<CoreMsg>>,
    /// Counters written once this incarnation was replaced, so that it no
    /// longer disturbs the core's real ones (its successor writes those).
    orphan_metrics: CoreMetrics,
    /// Any per-request fault armed (`slow` or `handler-panic`): the one
    /// check on the request path when fault injection is on.
    request_faults_armed: Cell<bool>,
    slow_until_ms: Cell<u64>,
    panic_next_request: Cell<bool>,
    /// Writes waiting for peers' acknowledgements (woken by `CoreMsg::Replicated`).
    replication_waiters: RefCell<Vec<Waker>>,
    /// The cluster, on core 0 only.
    cluster: RefCell<Option<Rc<Cluster>>>,
    /// Requests this core dispatched elsewhere, by token.
    pub dispatch_pending: RefCell<rustc_hash::FxHashMap<u64, Rc<dispatch::ReplySlot>>>,
    pub dispatch_next_token: Cell<u64>,
    /// `node/core`, for the `X-Served-By` header.
    served_by: &'static str,
    /// Per-core random state for dispatch decisions (xorshift).
    rng: Cell<u64>,
}

/// A one-shot, level-triggered event for tasks of one executor.
#[derive(Default)]
struct Signal {
    set: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Signal {
    fn raise(&self) {
        if !self.set.replace(true) {
            for w in self.wakers.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    fn is_set(&self) -> bool {
        self.set.get()
    }

    async fn wait(&self) {
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
    pub fn shared_arc(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The `X-Served-By` value, if the header is enabled.
    pub fn served_by(&self) -> Option<&'static str> {
        self.shared.config.served_by.then_some(self.served_by)
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

    /// Makes notes received from a peer durable in this core's log.
    pub async fn append_replicated(&self, payloads: &[&[u8]]) -> Result<(), WriteError> {
        self.writer.append_all(payloads).await
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

    /// Records a socket other than the HTTP listener and connections (the
    /// cluster's) in this incarnation's registry, so that the watchdog
    /// ends it if this incarnation fails; see [`RegisteredSocket`].
    pub fn register_socket(&self, fd: RawFd) -> Option<RegisteredSocket> {
        RegisteredSocket::new(&self.incarnation, fd)
    }

    /// Records in a job from another core that this incarnation took it
    /// (to run or to relay), so that its requester answers at once if this
    /// incarnation fails before answering (`dispatch::fail_lost`).
    fn take_job(&self, job: &super::inbox::DispatchJob) {
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

    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// The feed, for a subscription that outlives the request handler.
    pub fn feed_rc(&self) -> Rc<Feed> {
        Rc::clone(&self.feed)
    }

    /// Adds a durable note to this core's index and, if it is new here,
    /// hands it to this core's live subscribers and tells replication. Every
    /// note reaches a core's index through this function, whichever way it
    /// arrived (written here, on another core, or on a peer). Returns false
    /// if the note was already indexed.
    pub fn index_note(&self, note_ref: NoteRef) -> bool {
        let inserted = self.index.borrow_mut().insert(note_ref.clone());
        if inserted {
            self.feed.push(note_ref);
            if let Some(cluster) = self.cluster.borrow().as_ref() {
                cluster.on_index_grew();
            }
        }
        inserted
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

    /// The render buffer. Callers must not hold it across an await.
    pub fn scratch(&self) -> RefMut<'_, Vec<u8>> {
        self.scratch.borrow_mut()
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

    fn rearm_request_faults(&self) {
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
    /// indexed here and sent to every other core.
    pub async fn create_note(&self, text: String) -> Result<NoteRef, WriteError> {
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

    /// Indexes the notes other cores have queued for this one, now: notes
    /// do not wake a core (see `inbox.rs`), so this runs before every request
    /// is routed, and a request sent after a note was acknowledged through
    /// any core finds it here. Other messages popped meanwhile go to the
    /// inbox task. Costs one load of the queue's ends when it is empty.
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
                    self.index_note(note_ref);
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

    /// Indexes a durable note here and queues it for every other core.
    pub async fn publish(&self, note_ref: NoteRef) {
        self.index_note(note_ref.clone());
        for (core, inbox) in self.shared.inboxes.iter().enumerate() {
            if core != self.id {
                inbox.send(CoreMsg::Note(note_ref.clone())).await;
            }
        }
        if !self.incarnation.lease.still_held() {
            // Replaced while this note was being written: the successor may
            // have rebuilt its index before the note was durable. It reads
            // this core's inbox, so the note reaches it there.
            self.shared.inboxes[self.id]
                .send(CoreMsg::Note(note_ref))
                .await;
        }
    }

    fn begin_stop(&self, stop: Stop) {
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
    fn stop_superseded(&self) {
        if self.stop.get() != Stop::Hard {
            tracing::warn!(
                core = self.id,
                generation = self.generation(),
                "this executor was replaced by the watchdog while it was stalled; stopping it"
            );
            self.begin_stop(Stop::Hard);
        }
    }

    fn superseded_or_stopping(&self) -> bool {
        self.incarnation.superseded() || self.shutting_down()
    }

    /// Records a caught panic in shard machinery: reports it to the
    /// watchdog at once and stops the shard hard.
    fn crash(&self, reason: String) {
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

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Spawns a machinery task of `shard`: a panic in it is caught here and
/// crashes the shard (an orderly stop, see the module doc) instead of
/// unwinding the executor thread.
fn spawn_machinery<F>(shard: &Rc<Shard>, name: &'static str, task: F) -> glommio::Task<()>
where
    F: Future<Output = ()> + 'static,
{
    let shard = Rc::clone(shard);
    glommio::spawn_local(async move {
        if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
            shard.crash(format!("{name} task panicked: {}", panic_message(&*panic)));
        }
    })
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

/// Runs one incarnation of a core's shard until it stops, crashes or is
/// replaced. `listener_fd` is its listening socket (ownership passes to the
/// shard; the watchdog registered it in the incarnation's socket registry).
pub async fn run(
    shared: Arc<Shared>,
    incarnation: Arc<Incarnation>,
    listener_fd: RawFd,
) -> ExitReason {
    let id = incarnation.core;
    let config = &shared.config;
    let core = id as u16;
    let origin = Origin {
        node: shared.node.id,
        core,
    };
    let mut index = shared.recovered.thaw();
    if incarnation.generation > 0 {
        // A restart: the index as found at start-up, plus everything
        // written since, read back from the log. Notes that become durable
        // while this runs reach the index through the inbox, which other
        // cores (and a replaced predecessor) keep filling meanwhile.
        match recovery::rescan_since(&shared.data_dir, &shared.next_segment_by_core, &mut index) {
            Ok(report) => tracing::info!(
                core = id,
                generation = incarnation.generation,
                segments = report.segments,
                records = report.records,
                notes = index.len(),
                elapsed_ms = report.elapsed_ms,
                "rebuilt the index of a restarted shard from the log"
            ),
            Err(e) => {
                // SAFETY: the listener was handed to this shard, which has
                // not adopted it; nobody else closes it.
                incarnation.sockets.release_listener(listener_fd);
                unsafe { libc::close(listener_fd) };
                return ExitReason::Crashed(format!("cannot rebuild the index from the log: {e}"));
            }
        }
    }
    // Never reuse a number that is in the log already.
    incarnation.lease.raise_floor(index.seq_max(origin));
    let read_buffer_bytes = config.header_bytes_max.max(16 * 1024);
    let shard = Rc::new(Shard {
        id,
        index: RefCell::new(index),
        feed: Rc::new(Feed::new(
            Arc::clone(&shared.metrics),
            Arc::clone(&shared.inboxes),
            id,
            // Core 0 replicates to peers: with a cluster, notes from the
            // other cores must reach it at once (and every core, for
            // simplicity: a cluster's write path is network-bound anyway).
            shared.cluster.enabled,
        )),
        writer: LogWriter::new(
            shared.data_dir.clone(),
            core,
            Arc::clone(&shared.cores[id].segment_numbers),
            Arc::clone(&incarnation.lease),
            config.fsync,
            config.segment_bytes_max,
            Arc::clone(&shared.metrics),
        ),
        incarnation,
        conns: ConnTable::default(),
        read_pool: BufferPool::new(read_buffer_bytes, POOL_FREE_MAX),
        write_pool: BufferPool::new(16 * 1024, POOL_FREE_MAX),
        scratch: RefCell::new(Vec::with_capacity(64 * 1024)),
        page_cache: RefCell::new(None),
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
        rng: Cell::new(0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) << 32) ^ u64::from(shared.node.id)),
        shared,
    });
    if shard.generation() > 0 {
        // The predecessor's connections are gone (or no longer counted here).
        shard.metrics().reset_for_restart();
    }

    let tasks = [
        spawn_machinery(
            &shard,
            "log flusher",
            Rc::clone(&shard.writer).run_flusher(),
        ),
        spawn_machinery(&shard, "inbox", run_inbox(Rc::clone(&shard))),
        spawn_machinery(&shard, "sweeper", run_sweeper(Rc::clone(&shard))),
    ];
    if id == 0 && shard.shared.config.peer_listen.is_some() {
        match Cluster::start(Rc::clone(&shard)) {
            Ok(cluster) => {
                shard.cluster.replace(Some(cluster));
            }
            Err(e) => {
                // Without its cluster a node would silently diverge: stop.
                // (This panic unwinds the executor thread; the watchdog
                // reports it, see `watchdog.rs`.)
                tracing::error!(error = %e, "cannot start the cluster");
                panic!("cannot start the cluster: {e}");
            }
        }
    }

    let listener = RegisteredListener {
        sockets: shard.sockets(),
        fd: listener_fd,
        // SAFETY: the fd is a listening socket created for this shard; the
        // caller gave up ownership of it.
        listener: ManuallyDrop::new(unsafe { TcpListener::from_raw_fd(listener_fd) }),
    };
    shard.incarnation.report(Report::Ready);
    if let Err(panic) = AssertUnwindSafe(accept_loop(&shard, &listener.listener, listener_fd))
        .catch_unwind()
        .await
    {
        shard.crash(format!("accept loop panicked: {}", panic_message(&*panic)));
    }
    // Dropping the listener closes this core's socket; the kernel routes new
    // connections to the other cores' sockets while they still listen.
    drop(listener);

    if shard.stop.get() == Stop::Hard {
        hard_stop(&shard).await;
    } else {
        drain(&shard).await;
    }
    shard.finished.raise();
    if let Some(w) = shard.inbox_waker.borrow().as_ref() {
        w.wake_by_ref();
    }
    end_tasks(&shard, tasks).await;
    // In case the flusher did not get to it (it crashed or was cancelled).
    shard.writer.close_segment().await;

    let reason = if let Some(reason) = shard.crash.take() {
        ExitReason::Crashed(reason)
    } else if shard.incarnation.superseded() {
        ExitReason::Superseded
    } else {
        ExitReason::Stopped
    };
    tracing::debug!(core = id, reason = ?reason, "shard executor done");
    reason
}

/// The shard's listening socket, taken out of the socket registry before it
/// is closed, however it is dropped: in order here, or by glommio tearing
/// down an executor that unwound (which drops some of its tasks and leaks
/// others). The watchdog closes what is still registered after the thread
/// ended, so a descriptor closed without being released first would be
/// closed twice (and the second time, it may be another socket's number).
struct RegisteredListener<'s> {
    sockets: &'s SocketRegistry,
    fd: RawFd,
    listener: ManuallyDrop<TcpListener>,
}

impl Drop for RegisteredListener<'_> {
    fn drop(&mut self) {
        self.sockets.release_listener(self.fd);
        // SAFETY: dropped exactly once, here, after the release.
        unsafe { ManuallyDrop::drop(&mut self.listener) };
    }
}

/// Waits (bounded) for the machinery tasks to end, then cancels the rest:
/// a task still pending when the executor returns would never be dropped.
async fn end_tasks(shard: &Rc<Shard>, tasks: [glommio::Task<()>; 3]) {
    let deadline = Instant::now() + Duration::from_millis(TASKS_END_WAIT_MS);
    for mut task in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        let ended = async {
            (&mut task).await;
            true
        }
        .or(async {
            glommio::timer::sleep(left).await;
            false
        })
        .await;
        if !ended {
            tracing::warn!(
                core = shard.id,
                "a shard task did not end in time; cancelling it"
            );
            // Waits until this executor has dropped the task's future.
            task.cancel().await;
        }
    }
}

/// Accepts connections until the shard stops.
///
/// On stop, the listening socket is shut down (`SHUT_RD`) instead of the
/// pending accept being dropped: glommio accepts with io_uring, and an
/// accept already in the kernel can still take a connection after its
/// future was dropped; glommio then discards that descriptor without
/// closing it, and its client hangs. Shut down, the accept fails instead.
async fn accept_loop(shard: &Rc<Shard>, listener: &TcpListener, listener_fd: RawFd) {
    let config = shard.config();
    loop {
        let accepted = listener
            .accept()
            .or(async {
                shard.shutdown_signalled().await;
                // SAFETY: shutdown(2) on this shard's own listening socket.
                unsafe { libc::shutdown(listener_fd, libc::SHUT_RD) };
                std::future::pending().await
            })
            .await;
        if shard.incarnation.superseded() {
            // Replaced while stalled: this executor must not serve anything
            // more (an accepted connection is closed by being dropped).
            shard.stop_superseded();
            break;
        }
        let stream = match accepted {
            Ok(stream) => stream,
            Err(_) if shard.shutting_down() => break,
            Err(e) => {
                let io: std::io::Error = e.into();
                tracing::warn!(core = shard.id, error = %io, "accept failed");
                // Out of descriptors or memory: back off instead of spinning;
                // the connections already open keep being served meanwhile.
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shard.stop.get() == Stop::Hard {
            // Crashing: dropping it closes it.
            break;
        }
        if shard.conns.open_count() >= config.connections_max_per_core {
            shard.metrics().add_connections_rejected(1);
            conn::reject_overloaded(stream);
            continue;
        }
        // While stopping gracefully, a connection accepted just before the
        // socket was shut down is still served (with `Connection: close`).
        glommio::spawn_local(conn::serve(Rc::clone(shard), stream)).detach();
    }
}

/// Lets in-flight requests finish (bounded), then flushes the log.
async fn drain(shard: &Rc<Shard>) {
    let grace = Duration::from_millis(shard.config().shutdown_timeout_ms);
    let started = Instant::now();
    while shard.conns.open_count() > 0 && started.elapsed() < grace {
        if shard.stop.get() == Stop::Hard {
            // Crashed or replaced while draining.
            return hard_stop(shard).await;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if shard.conns.open_count() > 0 {
        tracing::warn!(
            core = shard.id,
            open = shard.conns.open_count(),
            "shutdown grace period over; closing remaining connections"
        );
        shard.conns.shut_all();
    }
    shard.writer.stop();
    shard.writer.flushed().await;
}

/// Stops a crashed or replaced shard: every connection's socket is shut
/// both ways (their tasks see EOF or EPIPE and end), pending appends were
/// failed already (`begin_stop`), and the write in flight, if any, is let
/// finish: its buffer belongs to the kernel until it completes.
async fn hard_stop(shard: &Rc<Shard>) {
    shard.conns.shut_all();
    let deadline = Instant::now() + Duration::from_millis(HARD_STOP_WAIT_MS);
    while shard.conns.open_count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let flushed = async {
        shard.writer.flushed().await;
        true
    }
    .or(async {
        glommio::timer::sleep(left).await;
        false
    })
    .await;
    if shard.conns.open_count() > 0 || !flushed {
        // Their tasks stay pending and glommio will not drop them; the
        // watchdog closes their sockets once this thread has ended.
        tracing::warn!(
            core = shard.id,
            open = shard.conns.open_count(),
            log_write_pending = !flushed,
            "a stopping shard still had work after {HARD_STOP_WAIT_MS} ms; leaving it behind"
        );
    }
}

/// Indexes the notes other cores queue for this one.
///
/// The queue belongs to the core, not to this incarnation: after a restart
/// the successor consumes the same queue, so nothing queued meanwhile is
/// lost. A replaced incarnation must not eat its successor's notes: after
/// taking a batch it checks its lease (an RMW, see `store/lease.rs`); if
/// fenced, it puts the batch back and ends. If the check passes, the fence
/// (and the successor's rescan of the log, which follows it) comes after:
/// those notes, durable before they were queued, are in the rescan.
async fn run_inbox(shard: Rc<Shard>) {
    let inbox = &shard.shared.inboxes[shard.id];
    // However this task ends (returns, panics, is cancelled), its waker
    // must leave the shared inbox on this thread (see `Inbox::unregister`).
    struct Unregister<'a>(&'a Inbox, &'a RefCell<Option<Waker>>);
    impl Drop for Unregister<'_> {
        fn drop(&mut self) {
            if let Some(own) = self.1.take() {
                self.0.unregister(&own);
            }
        }
    }
    let _unregister = Unregister(inbox, &shard.inbox_waker);
    let mut batch: Vec<CoreMsg> = Vec::with_capacity(INBOX_BATCH_MAX);
    loop {
        if shard.finished.is_set() || shard.incarnation.superseded() {
            return;
        }
        let mut received = 0u64;
        loop {
            batch.append(&mut shard.inbox_deferred.borrow_mut());
            while batch.len() < INBOX_BATCH_MAX {
                match inbox.try_recv() {
                    Some(msg) => batch.push(msg),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            if !shard.incarnation.lease.still_held() {
                // Everything queued for this core is the successor's.
                for msg in batch.drain(..) {
                    inbox.send(msg).await;
                }
                return;
            }
            for msg in batch.drain(..) {
                match msg {
                    CoreMsg::Note(note_ref) => {
                        shard.index_note(note_ref);
                        received += 1;
                    }
                    CoreMsg::Replicated => {
                        for w in shard.replication_waiters.borrow_mut().drain(..) {
                            w.wake();
                        }
                    }
                    CoreMsg::Dispatch(job) => {
                        shard.take_job(&job);
                        glommio::spawn_local(dispatch::execute(Rc::clone(&shard), job)).detach();
                    }
                    CoreMsg::ShardLost { core, generation } => {
                        dispatch::fail_lost(&shard, core, generation)
                    }
                    CoreMsg::DispatchReply { token, reply } => {
                        dispatch::deliver(&shard, token, reply)
                    }
                    CoreMsg::Forward { node, core, job } => match shard.cluster() {
                        Some(cluster) => {
                            // Relayed by this incarnation: if it fails before
                            // the answer comes back, the requester is told
                            // at once (`dispatch::fail_lost`).
                            shard.take_job(&job);
                            cluster.forward(node, core, *job)
                        }
                        None => dispatch::fail(&shard, *job, "this node has no cluster"),
                    },
                    CoreMsg::PeerReply { node, id, reply } => {
                        if let Some(cluster) = shard.cluster() {
                            cluster.reply_to_peer(node, id, reply);
                        }
                    }
                }
            }
            glommio::yield_if_needed().await;
        }
        let metrics = shard.metrics();
        metrics.add_notes_received_from_cores(received);
        metrics.set_inbox_depth(inbox.len() as u64);
        if inbox.shutdown_requested() {
            shard.begin_stop(Stop::Graceful);
        }
        poll_fn(|cx| {
            if shard.finished.is_set() || shard.incarnation.superseded() {
                // Never register once replaced: the inbox's one waker slot
                // belongs to the successor now.
                return Poll::Ready(());
            }
            inbox.register(cx.waker());
            *shard.inbox_waker.borrow_mut() = Some(cx.waker().clone());
            let shutdown_news = inbox.shutdown_requested() && !shard.shutting_down();
            let deferred = !shard.inbox_deferred.borrow().is_empty();
            if !inbox.is_empty() || deferred || shutdown_news {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// Every `SWEEP_INTERVAL_MS`: cuts connections past their deadlines, beats
/// the heartbeat, and applies injected faults.
async fn run_sweeper(shard: Rc<Shard>) {
    let inbox = &shard.shared.inboxes[shard.id];
    loop {
        let tick = async {
            glommio::timer::sleep(Duration::from_millis(SWEEP_INTERVAL_MS)).await;
            true
        }
        .or(async {
            shard.finished.wait().await;
            false
        })
        .await;
        if !tick {
            return;
        }
        if shard.incarnation.superseded() {
            shard.stop_superseded();
        }
        let cut = shard.conns.sweep(now_ms(), shard.shutting_down());
        if cut > 0 {
            shard.metrics().add_connections_timed_out(cut);
        }
        shard.incarnation.beat();
        // A safety net for the inbox: a replaced predecessor waking up could
        // have overwritten the inbox's waker just before it noticed.
        if !inbox.is_empty() {
            if let Some(w) = shard.inbox_waker.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
        if shard.config().fault_injection {
            apply_shard_fault(&shard);
        }
    }
}

/// Makes the fault posted for this core happen here (see `fault.rs`).
fn apply_shard_fault(shard: &Rc<Shard>) {
    if shard.request_faults_armed.get() {
        shard.rearm_request_faults();
    }
    if shard.superseded_or_stopping() {
        return;
    }
    let Some((kind, duration_ms)) = shard.shared.cores[shard.id].fault.take() else {
        return;
    };
    tracing::warn!(
        core = shard.id,
        kind = kind.label(),
        duration_ms,
        "injecting a fault"
    );
    match kind {
        FaultKind::Panic => panic!("injected fault: panic in shard {} machinery", shard.id),
        FaultKind::Unwind => {
            // Deliberately not a machinery task: nothing catches this panic,
            // so it unwinds the executor thread. glommio polls a new task
            // once right away, inside its spawner's poll (`spawn_and_run`):
            // the panic must come on a later poll to escape to the executor.
            let core = shard.id;
            glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(1)).await;
                panic!("injected fault: uncaught panic on shard {core}");
            })
            .detach();
        }
        FaultKind::Stall => std::thread::sleep(Duration::from_millis(duration_ms)),
        FaultKind::Slow => {
            shard.slow_until_ms.set(now_ms() + duration_ms);
            shard.request_faults_armed.set(true);
        }
        FaultKind::HandlerPanic => {
            shard.panic_next_request.set(true);
            shard.request_faults_armed.set(true);
        }
        FaultKind::FsyncError => shard.writer.inject_fsync_failures(duration_ms),
    }
}
