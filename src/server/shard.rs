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
//! - the sweeper, enforcing connection deadlines.
//!
//! Every note enters this core's index through [`Shard::index_note`], which
//! also feeds the core's live subscribers (`feed.rs`, `GET /events`).

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures_lite::FutureExt as _;
use glommio::net::TcpListener;

use super::bufpool::BufferPool;
use super::conn;
use super::conn_table::{now_ms, ConnTable};
use super::dispatch;
use super::feed::Feed;
use super::inbox::{CoreMsg, Inbox};
use crate::cluster::{Cluster, ClusterShared};
use crate::config::{AckPolicy, Config};
use crate::metrics::{AllMetrics, CoreMetrics};
use crate::store::index::{Index, NoteRef};
use crate::store::note::{self, Note, NoteId, Origin};
use crate::store::writer::{LogWriter, WriteError};

/// How often the sweeper checks connection deadlines (and heartbeats).
pub const SWEEP_INTERVAL_MS: u64 = 100;
/// Free buffers kept per pool per core.
const POOL_FREE_MAX: usize = 1024;

/// This node's identity.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: u32,
    pub name: String,
}

/// What every shard can see. Immutable after start-up except for atomics,
/// each of which has a single writing core.
pub struct Shared {
    pub config: Config,
    pub node: NodeInfo,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// CPU each shard is pinned to.
    pub cpus: Vec<usize>,
    pub inboxes: Arc<[Inbox]>,
    pub metrics: AllMetrics,
    /// Bumped by each shard's sweeper; read by the watchdog.
    pub heartbeats: Arc<[AtomicU64]>,
    /// The index as recovered at start-up; each shard starts from a copy.
    pub recovered: Index,
    pub next_segment_by_core: rustc_hash::FxHashMap<u16, u32>,
    pub recovered_log_bytes: u64,
    pub started: Instant,
    pub cluster: ClusterShared,
}

pub struct Shard {
    id: usize,
    shared: Arc<Shared>,
    index: RefCell<Index>,
    /// Notes newly indexed here, for `GET /events` subscribers on this core.
    feed: Rc<Feed>,
    writer: Rc<LogWriter>,
    /// Sequence number of the last note created by this core's stream.
    seq_last: Cell<u64>,
    pub conns: ConnTable,
    pub read_pool: BufferPool,
    pub write_pool: BufferPool,
    /// Reusable buffer for rendering response bodies.
    scratch: RefCell<Vec<u8>>,
    shutting_down: Cell<bool>,
    shutdown_wakers: RefCell<Vec<Waker>>,
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

    pub fn metrics(&self) -> &CoreMetrics {
        &self.shared.metrics[self.id]
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

    /// The render buffer. Callers must not hold it across an await.
    pub fn scratch(&self) -> RefMut<'_, Vec<u8>> {
        self.scratch.borrow_mut()
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.get()
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
        let seq = self
            .seq_last
            .get()
            .max(self.index.borrow().seq_max(self.origin()))
            + 1;
        self.seq_last.set(seq);
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
        let payload = note::archive(&note);
        self.writer.append(&payload).await?;
        let note_ref = NoteRef::from_payload(payload)
            .map_err(|e| WriteError::Io(format!("archived note failed validation: {e}")))?;
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

    /// Indexes a durable note here and queues it for every other core.
    pub async fn publish(&self, note_ref: NoteRef) {
        self.index_note(note_ref.clone());
        for (core, inbox) in self.shared.inboxes.iter().enumerate() {
            if core != self.id {
                inbox.send(CoreMsg::Note(note_ref.clone())).await;
            }
        }
    }

    fn begin_shutdown(&self) {
        if !self.shutting_down.replace(true) {
            tracing::debug!(core = self.id, "shard shutting down");
            for w in self.shutdown_wakers.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// Resolves once this shard has begun shutting down.
    pub async fn shutdown_signalled(&self) {
        poll_fn(|cx| {
            if self.shutting_down.get() {
                Poll::Ready(())
            } else {
                self.shutdown_wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Runs shard `id` until shutdown. `listener_fd` is this core's listening
/// socket (ownership passes to the shard).
pub async fn run(
    shared: Arc<Shared>,
    id: usize,
    listener_fd: std::os::fd::RawFd,
    ready: impl FnOnce(),
) {
    let config = &shared.config;
    let core = id as u16;
    let origin = Origin {
        node: shared.node.id,
        core,
    };
    let index = shared.recovered.clone();
    let seq_last = index.seq_max(origin);
    let read_buffer_bytes = config.header_bytes_max.max(16 * 1024);
    let shard = Rc::new(Shard {
        id,
        index: RefCell::new(index),
        feed: Rc::new(Feed::new(Arc::clone(&shared.metrics), id)),
        writer: LogWriter::new(
            shared.data_dir.clone(),
            core,
            shared.next_segment_by_core.get(&core).copied().unwrap_or(1),
            config.fsync,
            config.segment_bytes_max,
            Arc::clone(&shared.metrics),
        ),
        seq_last: Cell::new(seq_last),
        conns: ConnTable::default(),
        read_pool: BufferPool::new(read_buffer_bytes, POOL_FREE_MAX),
        write_pool: BufferPool::new(16 * 1024, POOL_FREE_MAX),
        scratch: RefCell::new(Vec::with_capacity(64 * 1024)),
        shutting_down: Cell::new(false),
        shutdown_wakers: RefCell::default(),
        replication_waiters: RefCell::default(),
        cluster: RefCell::new(None),
        dispatch_pending: RefCell::default(),
        dispatch_next_token: Cell::new(1),
        served_by: Box::leak(format!("{}/{}", shared.node.name, id).into_boxed_str()),
        rng: Cell::new(0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) << 32) ^ u64::from(shared.node.id)),
        shared,
    });

    glommio::spawn_local(Rc::clone(&shard.writer).run_flusher()).detach();
    glommio::spawn_local(run_inbox(Rc::clone(&shard))).detach();
    glommio::spawn_local(run_sweeper(Rc::clone(&shard))).detach();
    if id == 0 && shard.shared.config.peer_listen.is_some() {
        match Cluster::start(Rc::clone(&shard)) {
            Ok(cluster) => {
                shard.cluster.replace(Some(cluster));
            }
            Err(e) => {
                // Without its cluster a node would silently diverge: stop.
                tracing::error!(error = %e, "cannot start the cluster");
                panic!("cannot start the cluster: {e}");
            }
        }
    }

    // SAFETY: the fd is a listening socket created for this shard; the
    // caller gave up ownership of it.
    let listener = unsafe { TcpListener::from_raw_fd(listener_fd) };
    ready();
    accept_loop(&shard, listener).await;
    drain(&shard).await;
}

async fn accept_loop(shard: &Rc<Shard>, listener: TcpListener) {
    let config = shard.config();
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shard.shutdown_signalled().await;
                None
            })
            .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                let io: std::io::Error = e.into();
                tracing::warn!(core = shard.id, error = %io, "accept failed");
                // Out of descriptors or memory: back off instead of spinning;
                // the connections already open keep being served meanwhile.
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shard.conns.open_count() >= config.connections_max_per_core {
            shard.metrics().add_connections_rejected(1);
            conn::reject_overloaded(stream);
            continue;
        }
        glommio::spawn_local(conn::serve(Rc::clone(shard), stream)).detach();
    }
    // Dropping the listener closes this core's socket; the kernel routes new
    // connections to the other cores' sockets while they still listen.
    drop(listener);
}

/// Lets in-flight requests finish (bounded), then flushes the log.
async fn drain(shard: &Rc<Shard>) {
    let grace = Duration::from_millis(shard.config().shutdown_timeout_ms);
    let started = Instant::now();
    while shard.conns.open_count() > 0 && started.elapsed() < grace {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if shard.conns.open_count() > 0 {
        tracing::warn!(
            core = shard.id,
            open = shard.conns.open_count(),
            "shutdown grace period over; closing remaining connections"
        );
    }
    shard.writer.stop();
    shard.writer.flushed().await;
}

async fn run_inbox(shard: Rc<Shard>) {
    let inbox = &shard.shared.inboxes[shard.id];
    loop {
        let mut received = 0u64;
        while let Some(msg) = inbox.try_recv() {
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
                    glommio::spawn_local(dispatch::execute(Rc::clone(&shard), job)).detach();
                }
                CoreMsg::DispatchReply { token, reply } => dispatch::deliver(&shard, token, reply),
                CoreMsg::Forward { node, core, job } => match shard.cluster() {
                    Some(cluster) => cluster.forward(node, core, *job),
                    None => dispatch::fail(&shard, *job, "this node has no cluster"),
                },
                CoreMsg::PeerReply { node, id, reply } => {
                    if let Some(cluster) = shard.cluster() {
                        cluster.reply_to_peer(node, id, reply);
                    }
                }
            }
            if received % 1024 == 1023 {
                glommio::yield_if_needed().await;
            }
        }
        let metrics = shard.metrics();
        metrics.add_notes_received_from_cores(received);
        metrics.set_inbox_depth(inbox.len() as u64);
        if inbox.shutdown_requested() {
            shard.begin_shutdown();
        }
        poll_fn(|cx| {
            inbox.register(cx.waker());
            let shutdown_news = inbox.shutdown_requested() && !shard.shutting_down();
            if !inbox.is_empty() || shutdown_news {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

async fn run_sweeper(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(SWEEP_INTERVAL_MS)).await;
        let cut = shard.conns.sweep(now_ms(), shard.shutting_down());
        if cut > 0 {
            shard.metrics().add_connections_timed_out(cut);
        }
        shard.shared.heartbeats[shard.id].fetch_add(1, Ordering::Relaxed);
    }
}
