//! The cluster: peers, replication and cross-node dispatch.
//!
//! - [`frame`]: the peer protocol's framing (length, type, version, CRC).
//! - [`wire`]: message payloads.
//! - [`auth`]: the cookie and the challenge-response proofs.
//! - [`membership`]: SWIM failure detection (foca) over UDP.
//! - [`peer`]: one authenticated TCP connection (handshake, frame loop).
//!
//! Ownership: everything here lives on core 0, which owns the peer listener,
//! the membership socket and every peer connection ([`Cluster`]). Other cores
//! reach it only through their inboxes (notes they write, requests to
//! forward) and read [`ClusterShared`] (atomics and a lock-free snapshot).
//!
//! Replication is pull-based and per origin stream: each connection keeps,
//! per origin, the highest sequence the peer holds (its last vector) and the
//! highest already queued; whenever core 0's index grows, the pump queues the
//! missing notes in order, bounded by the outbox high-water mark. A peer
//! acknowledges by sending its vector after making received notes durable,
//! so the same mechanism is anti-entropy on (re)connect, live replication
//! and acknowledgement. Notes of a third origin are relayed only when the
//! peer has not reported them after [`RELAY_DELAY_MS`] (in a healthy full
//! mesh each origin delivers its own notes first).
//!
//! Repair: a vector is a high-water mark, so it cannot say that a note
//! *below* it is missing (a damaged record skipped by recovery, a write
//! whose fsync failed). On connect each side also sends `Holes`: per origin
//! the ranges below its mark that its index lacks (`Index::holes`), and for
//! its own streams everything above its mark (the pump never sends a node
//! its own notes back). The peer answers with the notes it has in those
//! ranges as ordinary `Notes` frames, under the same outbox bound; the
//! receiver applies them like any others (idempotently, durably).

pub mod auth;
pub mod frame;
pub mod membership;
pub mod peer;
pub mod wire;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use glommio::net::{TcpListener, TcpStream};
use rustc_hash::FxHashMap;

use crate::server::inbox::{CoreMsg, DispatchJob, DispatchReply, ReplyTo};
use crate::server::shard::Shard;
use crate::store::index::NoteRef;
use crate::store::note::Origin;
use auth::Cookie;
use frame::FrameKind;
use membership::{MemberEvent, MemberId, Membership};
use peer::{FramedStream, LocalSide, PeerConn, PeerError, PeerHandler};
use wire::{DispatchRequest, DispatchResponse, Holes, NodeIdentity, SeqRange, Vector};

/// A foreign origin's notes are relayed to a peer only if the peer has not
/// reported them this long after their creation.
pub const RELAY_DELAY_MS: u64 = 1_000;
/// Bytes of notes per `Notes` frame.
pub const NOTES_FRAME_BYTES_TARGET: usize = 256 * 1024;
/// Reconnect backoff bounds.
pub const DIAL_BACKOFF_MIN_MS: u64 = 100;
pub const DIAL_BACKOFF_MAX_MS: u64 = 3_000;
/// How often the cluster view shown by `/_status` and used by dispatch is refreshed.
pub const VIEW_REFRESH_MS: u64 = 200;
/// Forwarded requests waiting for a remote answer, at most (per node).
pub const REMOTE_PENDING_MAX: usize = 4096;
/// Most hole ranges asked for per origin stream on one connect (the lowest
/// first; the rest are asked for on a later connect once these are filled).
pub const HOLE_RANGES_PER_ORIGIN_MAX: usize = 1024;

/// One member as every core sees it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub node: u32,
    pub name: String,
    pub peer_addr: SocketAddr,
    /// "up", "suspect" or "down" (SWIM), "connecting" before SWIM knows it.
    pub state: &'static str,
    pub connected: bool,
    pub cores: u16,
    pub loads: Vec<u32>,
    /// Notes this node holds that the member has not acknowledged.
    pub lag_notes: u64,
    pub outbox_bytes: u64,
}

/// A consistent snapshot of the cluster, replaced as a whole.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub members: Vec<MemberView>,
}

/// Cluster state every core can read.
pub struct ClusterShared {
    pub enabled: bool,
    /// Per local core: the highest sequence of that core's stream that every
    /// connected peer has acknowledged (`u64::MAX` when no peer is connected).
    pub replicated: Box<[AtomicU64]>,
    pub view: ArcSwap<ClusterView>,
    /// Node names whose traffic is dropped (partition test hook).
    blocked: RwLock<Vec<String>>,
    blocked_any: AtomicBool,
    /// The peer address actually bound (resolves a `:0` port), set once by core 0.
    pub bound: std::sync::OnceLock<SocketAddr>,
}

/// A socket's entry in shard 0's socket registry (see
/// `Shard::register_socket`): dropping it takes the socket out of the
/// registry, which must happen before the socket is closed.
pub type SocketRegistration = Box<dyn std::any::Any>;

/// The peer listener and its registration with shard 0's incarnation
/// (released first: fields drop in declaration order).
struct PeerListener {
    _registration: Option<SocketRegistration>,
    listener: TcpListener,
}

impl ClusterShared {
    pub fn new(enabled: bool, cores: usize) -> ClusterShared {
        ClusterShared {
            enabled,
            replicated: (0..cores).map(|_| AtomicU64::new(u64::MAX)).collect(),
            view: ArcSwap::from_pointee(ClusterView::default()),
            blocked: RwLock::new(Vec::new()),
            blocked_any: AtomicBool::new(false),
            bound: std::sync::OnceLock::new(),
        }
    }

    pub fn set_blocked(&self, names: Vec<String>) {
        let any = !names.is_empty();
        if let Ok(mut b) = self.blocked.write() {
            *b = names;
        }
        self.blocked_any.store(any, Ordering::Release);
    }

    pub fn is_blocked(&self, name: &str) -> bool {
        if !self.blocked_any.load(Ordering::Acquire) {
            return false;
        }
        self.blocked
            .read()
            .map(|b| b.iter().any(|n| n == name))
            .unwrap_or(false)
    }
}

struct Member {
    ident: NodeIdentity,
    /// The newest SWIM incarnation seen up: a node that restarted (or whose
    /// shard 0 did) comes back with a newer one, and the old one's
    /// later "down" is not about the node any more.
    incarnation: u64,
    next_dial: Instant,
    backoff_ms: u64,
    dialing: bool,
}

/// The cluster as run by core 0.
pub struct Cluster {
    shard: Rc<Shard>,
    me: NodeIdentity,
    incarnation: u64,
    cookie: Cookie,
    members: RefCell<BTreeMap<u32, Member>>,
    conns: RefCell<BTreeMap<u32, Rc<PeerConn>>>,
    membership: RefCell<Option<Rc<Membership>>>,
    /// Forwarded requests awaiting a peer's answer: id -> (node, reply_to).
    remote_pending: RefCell<FxHashMap<u64, (u32, ReplyTo)>>,
    next_remote_id: Cell<u64>,
    /// Join addresses not yet reached.
    joins: RefCell<Vec<(SocketAddr, Instant, u64)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Cookie(#[from] auth::CookieError),
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Cluster {
    /// Starts the cluster on core 0: listener, membership, dialer.
    pub fn start(shard: Rc<Shard>) -> Result<Rc<Cluster>, ClusterError> {
        let config = shard.config().clone();
        let Some(peer_listen) = config.peer_listen else {
            unreachable!("Cluster::start without peer_listen")
        };
        let cookie = match &config.cookie_file {
            Some(p) => Cookie::load(p)?,
            None => unreachable!("config validation requires a cookie file"),
        };
        // A restarted shard 0 binds the port its first incarnation bound
        // (that resolved a `:0`). The check that nobody else listens there
        // is for the first start only: the failed predecessor's sockets may
        // still be open (a stalled thread, or one still unwinding) until
        // the watchdog has shut them down, and SO_REUSEPORT lets both exist
        // meanwhile.
        let restarted = shard.generation() > 0;
        let peer_listen = match shard.shared().cluster.bound.get() {
            Some(bound) if restarted => *bound,
            _ => peer_listen,
        };
        let in_use_check = if restarted {
            Ok(())
        } else {
            crate::net::ensure_not_in_use(peer_listen)
        };
        let listener = in_use_check
            .and_then(|()| crate::net::bind_one(peer_listen, 1024))
            .map_err(|source| ClusterError::Listen {
                addr: peer_listen,
                source,
            })?;
        // A `:0` port is resolved here; UDP membership uses the same port.
        let peer_listen = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(peer_listen);
        let _ = shard.shared().cluster.bound.set(peer_listen);
        let listener_fd = listener.into_raw_fd();
        // SAFETY: a listening socket we just created and hand over.
        let listener = PeerListener {
            _registration: shard
                .register_socket(listener_fd)
                .map(|r| Box::new(r) as SocketRegistration),
            listener: unsafe { TcpListener::from_raw_fd(listener_fd) },
        };
        let advertise = match config.peer_advertise {
            Some(a) => a,
            None => peer_listen,
        };
        let me = NodeIdentity {
            node: shard.node().id,
            name: shard.node().name.clone(),
            peer_addr: advertise,
            cores: shard.shared().cpus.len() as u16,
        };
        let incarnation = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let now = Instant::now();
        let cluster = Rc::new(Cluster {
            me,
            incarnation,
            cookie: cookie.clone(),
            members: RefCell::default(),
            conns: RefCell::default(),
            membership: RefCell::new(None),
            remote_pending: RefCell::default(),
            next_remote_id: Cell::new(1),
            joins: RefCell::new(
                config
                    .join
                    .iter()
                    .map(|a| (*a, now, DIAL_BACKOFF_MIN_MS))
                    .collect(),
            ),
            shard,
        });
        let shared = Arc::clone(cluster.shard.shared_arc());
        let blocked_addrs = Rc::clone(&cluster);
        let registering = Rc::clone(&cluster);
        let membership = Membership::start(
            cluster.member_id(),
            peer_listen,
            cookie,
            move |fd| registering.register_socket(fd),
            // A replaced (stalled) incarnation's membership falls silent:
            // its successor speaks for the node, under a newer incarnation.
            Box::new(move |addr| {
                blocked_addrs.retired()
                    || shared.cluster.blocked_any.load(Ordering::Acquire)
                        && blocked_addrs
                            .members
                            .try_borrow()
                            .map(|m| {
                                m.values().any(|m| {
                                    m.ident.peer_addr == addr
                                        && shared.cluster.is_blocked(&m.ident.name)
                                })
                            })
                            .unwrap_or(false)
            }),
        )
        .map_err(|source| ClusterError::Listen {
            addr: peer_listen,
            source,
        })?;
        cluster.membership.replace(Some(membership));
        if restarted {
            // No peer is connected to this incarnation yet: writes on the
            // other cores wait for nobody until peers reconnect (the
            // predecessor's watermarks would make them wait for peers
            // that are no longer connected to anything).
            cluster.update_watermarks();
        }
        glommio::spawn_local(Rc::clone(&cluster).accept_loop(listener)).detach();
        glommio::spawn_local(Rc::clone(&cluster).maintain()).detach();
        tracing::info!(peer_listen = %peer_listen, advertise = %advertise, joins = ?config.join, "cluster started");
        Ok(cluster)
    }

    fn member_id(&self) -> MemberId {
        MemberId {
            node: self.me.node,
            name: self.me.name.clone(),
            peer_addr: self.me.peer_addr,
            cores: self.me.cores,
            incarnation: self.incarnation,
        }
    }

    /// Records a cluster socket in shard 0's socket registry.
    fn register_socket(&self, fd: std::os::fd::RawFd) -> Option<SocketRegistration> {
        self.shard
            .register_socket(fd)
            .map(|r| Box::new(r) as SocketRegistration)
    }

    fn is_blocked(&self, name: &str) -> bool {
        self.shard.shared().cluster.is_blocked(name)
    }

    /// True once this cluster's shard was replaced by the watchdog (it had
    /// stalled and has just woken up): its successor runs a new cluster,
    /// so this one must not dial, answer, or publish anything any more.
    fn retired(&self) -> bool {
        self.shard.superseded()
    }

    async fn accept_loop(self: Rc<Self>, listener: PeerListener) {
        loop {
            let accepted = listener.listener.accept().await;
            if self.retired() {
                return;
            }
            match accepted {
                Ok(stream) => {
                    glommio::spawn_local(Rc::clone(&self).handle_inbound(stream)).detach();
                }
                Err(e) => {
                    let io: std::io::Error = e.into();
                    tracing::warn!(error = %io, "peer accept failed");
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn handle_inbound(self: Rc<Self>, stream: TcpStream) {
        let from = stream.peer_addr().ok();
        let registration = self.register_socket(stream.as_raw_fd());
        let mut io = FramedStream::new(stream).registered(registration);
        let is_blocked = |name: &str| self.is_blocked(name);
        let local = LocalSide {
            me: &self.me,
            cookie: &self.cookie,
            is_blocked: &is_blocked,
        };
        match peer::handshake_acceptor(&mut io, &local).await {
            Ok(peer) => self.attach(peer, false, io),
            Err(PeerError::Blocked(_)) | Err(PeerError::SelfConnection) => {}
            Err(e) => tracing::warn!(from = ?from, error = %e, "refused a peer connection"),
        }
    }

    async fn dial(self: Rc<Self>, addr: SocketAddr, expect: Option<u32>) -> bool {
        let stream = match TcpStream::connect_timeout(
            addr,
            Duration::from_millis(peer::HANDSHAKE_TIMEOUT_MS),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "cannot connect to peer");
                return false;
            }
        };
        let registration = self.register_socket(stream.as_raw_fd());
        let mut io = FramedStream::new(stream).registered(registration);
        let is_blocked = |name: &str| self.is_blocked(name);
        let local = LocalSide {
            me: &self.me,
            cookie: &self.cookie,
            is_blocked: &is_blocked,
        };
        match peer::handshake_initiator(&mut io, &local).await {
            Ok(peer) => {
                if expect.is_some_and(|n| n != peer.node) {
                    tracing::info!(%addr, node = %format_args!("{:08x}", peer.node), "a different node now answers at this address");
                }
                self.attach(peer, true, io);
                true
            }
            Err(PeerError::SelfConnection) => true,
            Err(PeerError::Blocked(_)) => false,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "peer handshake failed");
                false
            }
        }
    }

    /// Registers an authenticated connection and starts its task.
    fn attach(self: &Rc<Self>, peer: NodeIdentity, initiated_by_me: bool, io: FramedStream) {
        let initiator = if initiated_by_me {
            self.me.node
        } else {
            peer.node
        };
        {
            let conns = self.conns.borrow();
            if let Some(existing) = conns.get(&peer.node) {
                // Two connections to the same node (both dialed at once):
                // both sides keep the one dialed by the lower node id.
                if !existing.is_closed() && existing.initiator <= initiator {
                    tracing::debug!(peer = %peer.name, "dropping a duplicate peer connection");
                    return;
                }
            }
        }
        let conn = PeerConn::new(peer.clone(), initiator);
        if let Some(old) = self.conns.borrow_mut().insert(peer.node, Rc::clone(&conn)) {
            old.close();
        }
        let mut members = self.members.borrow_mut();
        // The handshake does not carry the SWIM incarnation: keep the
        // newest one membership reported.
        let incarnation = members.get(&peer.node).map_or(0, |m| m.incarnation);
        members.insert(
            peer.node,
            Member {
                ident: peer.clone(),
                incarnation,
                next_dial: Instant::now(),
                backoff_ms: DIAL_BACKOFF_MIN_MS,
                dialing: false,
            },
        );
        drop(members);
        tracing::info!(peer = %peer.name, node = %format_args!("{:08x}", peer.node), addr = %peer.peer_addr, "peer connected");
        if let Some(m) = self.membership.borrow().as_ref() {
            m.announce(MemberId {
                node: peer.node,
                name: peer.name.clone(),
                peer_addr: peer.peer_addr,
                cores: peer.cores,
                incarnation: 0,
            });
        }
        self.update_watermarks();
        let me = Rc::clone(self);
        glommio::spawn_local(async move {
            let reason = peer::run(Rc::clone(&me), Rc::clone(&conn), io).await;
            me.detach(&conn, reason);
        })
        .detach();
    }

    fn detach(self: &Rc<Self>, conn: &Rc<PeerConn>, reason: PeerError) {
        conn.close();
        let removed = {
            let mut conns = self.conns.borrow_mut();
            match conns.get(&conn.peer.node) {
                Some(c) if Rc::ptr_eq(c, conn) => conns.remove(&conn.peer.node).is_some(),
                _ => false,
            }
        };
        if removed {
            match reason {
                PeerError::Local(_) => {
                    tracing::info!(peer = %conn.peer.name, "peer connection closed")
                }
                other => {
                    tracing::warn!(peer = %conn.peer.name, reason = %other, "peer connection lost")
                }
            }
            // Requests forwarded over this connection will get no answer.
            let failed: Vec<(u64, ReplyTo)> = self
                .remote_pending
                .borrow()
                .iter()
                .filter(|(_, (node, _))| *node == conn.peer.node)
                .map(|(id, (_, r))| (*id, *r))
                .collect();
            for (id, reply_to) in failed {
                self.remote_pending.borrow_mut().remove(&id);
                self.deliver_reply(
                    reply_to,
                    unavailable_reply("the node serving this request went away"),
                );
            }
            self.update_watermarks();
        }
    }

    /// The replication watermark of each local stream: the minimum over
    /// connected peers of what they acknowledged.
    pub fn update_watermarks(&self) {
        if self.retired() {
            // The successor's cluster owns the watermarks now.
            return;
        }
        let shared = self.shard.shared();
        let conns = self.conns.borrow();
        for (core, slot) in shared.cluster.replicated.iter().enumerate() {
            let origin = Origin {
                node: self.me.node,
                core: core as u16,
            };
            let wm = conns
                .values()
                .filter(|c| !c.is_closed())
                .map(|c| c.vector.borrow().get(&origin).copied().unwrap_or(0))
                .min()
                .unwrap_or(u64::MAX);
            let old = slot.swap(wm, Ordering::AcqRel);
            if wm > old || (old == u64::MAX) != (wm == u64::MAX) {
                self.shard.notify_core(core, CoreMsg::Replicated);
            }
        }
    }

    /// Wakes every connection's pump (core 0's index grew).
    pub fn on_index_grew(&self) {
        for c in self.conns.borrow().values() {
            c.wake();
        }
    }

    fn our_vector(&self) -> Vector {
        Vector {
            entries: self.shard.index().vector(),
            loads: self
                .shard
                .shared()
                .metrics
                .iter()
                .map(|m| m.dispatch_load().min(u32::MAX as u64) as u32)
                .collect(),
        }
    }

    /// Sends a request to another node; the answer comes back to `job.reply_to`.
    pub fn forward(&self, node: u32, core: u16, job: DispatchJob) {
        let conn = self.conns.borrow().get(&node).cloned();
        let Some(conn) = conn.filter(|c| !c.is_closed()) else {
            self.deliver_reply(
                job.reply_to,
                unavailable_reply("the chosen node is not connected"),
            );
            return;
        };
        if self.remote_pending.borrow().len() >= REMOTE_PENDING_MAX {
            self.deliver_reply(
                job.reply_to,
                unavailable_reply("too many forwarded requests"),
            );
            return;
        }
        let id = self.next_remote_id.get();
        self.next_remote_id.set(id + 1);
        self.remote_pending
            .borrow_mut()
            .insert(id, (node, job.reply_to));
        let req = DispatchRequest {
            id,
            core,
            keep_alive: job.keep_alive,
            http10: job.http10,
            raw_head: job.raw_head,
            body: job.body,
        };
        conn.send(FrameKind::DispatchRequest, &req.encode());
    }

    /// Sends the reply of a request a peer forwarded to us.
    pub fn reply_to_peer(&self, node: u32, id: u64, reply: DispatchReply) {
        if let Some(conn) = self.conns.borrow().get(&node) {
            let resp = DispatchResponse {
                id,
                status: reply.status,
                close: reply.close,
                response: reply.response,
            };
            conn.send(FrameKind::DispatchResponse, &resp.encode());
        }
    }

    fn deliver_reply(&self, to: ReplyTo, reply: DispatchReply) {
        match to {
            ReplyTo::Core { core, token } => self
                .shard
                .notify_core(core, CoreMsg::DispatchReply { token, reply }),
            ReplyTo::Peer { node, id } => self.reply_to_peer(node, id, reply),
        }
    }

    /// Periodic work: membership events, dialing, the shared view.
    async fn maintain(self: Rc<Self>) {
        while !self.retired() {
            self.process_membership_events();
            self.dial_due();
            self.publish_view();
            glommio::timer::sleep(Duration::from_millis(VIEW_REFRESH_MS)).await;
        }
    }

    fn process_membership_events(self: &Rc<Self>) {
        let Some(m) = self.membership.borrow().clone() else {
            return;
        };
        for event in m.take_events() {
            match event {
                MemberEvent::Up(id) => {
                    let mut members = self.members.borrow_mut();
                    let entry = members.entry(id.node).or_insert_with(|| Member {
                        ident: NodeIdentity {
                            node: id.node,
                            name: id.name.clone(),
                            peer_addr: id.peer_addr,
                            cores: id.cores,
                        },
                        incarnation: id.incarnation,
                        next_dial: Instant::now(),
                        backoff_ms: DIAL_BACKOFF_MIN_MS,
                        dialing: false,
                    });
                    entry.ident.peer_addr = id.peer_addr;
                    entry.ident.name = id.name.clone();
                    entry.incarnation = entry.incarnation.max(id.incarnation);
                    tracing::info!(member = %id.name, "member up");
                }
                MemberEvent::Down(id) => {
                    let newer_is_up = self
                        .members
                        .borrow()
                        .get(&id.node)
                        .is_some_and(|m| m.incarnation > id.incarnation);
                    if newer_is_up {
                        tracing::debug!(member = %id.name, "an earlier incarnation of the member is down");
                        continue;
                    }
                    tracing::warn!(member = %id.name, "member down");
                    if let Some(c) = self.conns.borrow().get(&id.node) {
                        c.close();
                    }
                }
            }
        }
        // Partition hook: cut connections to blocked members.
        for c in self.conns.borrow().values() {
            if self.is_blocked(&c.peer.name) {
                c.close();
            }
        }
    }

    /// Dials join addresses and known members that are not connected.
    fn dial_due(self: &Rc<Self>) {
        let now = Instant::now();
        // Join addresses: until each has been reached once.
        let joins: Vec<SocketAddr> = {
            let mut joins = self.joins.borrow_mut();
            let due: Vec<SocketAddr> = joins
                .iter()
                .filter(|(_, at, _)| *at <= now)
                .map(|(a, _, _)| *a)
                .collect();
            for j in joins.iter_mut().filter(|(_, at, _)| *at <= now) {
                j.2 = (j.2 * 2).min(DIAL_BACKOFF_MAX_MS);
                j.1 = now + Duration::from_millis(j.2);
            }
            due
        };
        for addr in joins {
            let me = Rc::clone(self);
            glommio::spawn_local(async move {
                if Rc::clone(&me).dial(addr, None).await {
                    me.joins.borrow_mut().retain(|(a, _, _)| *a != addr);
                }
            })
            .detach();
        }
        let connected: Vec<u32> = self.conns.borrow().keys().copied().collect();
        let mut to_dial = Vec::new();
        for (node, m) in self.members.borrow_mut().iter_mut() {
            if connected.contains(node)
                || m.dialing
                || m.next_dial > now
                || self.is_blocked(&m.ident.name)
            {
                continue;
            }
            m.dialing = true;
            to_dial.push((*node, m.ident.peer_addr));
        }
        for (node, addr) in to_dial {
            let me = Rc::clone(self);
            glommio::spawn_local(async move {
                let ok = Rc::clone(&me).dial(addr, Some(node)).await;
                if let Some(m) = me.members.borrow_mut().get_mut(&node) {
                    m.dialing = false;
                    if ok {
                        m.backoff_ms = DIAL_BACKOFF_MIN_MS;
                    } else {
                        m.backoff_ms = (m.backoff_ms * 2).min(DIAL_BACKOFF_MAX_MS);
                    }
                    m.next_dial = Instant::now() + Duration::from_millis(m.backoff_ms);
                }
            })
            .detach();
        }
    }

    fn publish_view(&self) {
        let index = self.shard.index();
        let ours = index.vector();
        let membership = self.membership.borrow().clone();
        let conns = self.conns.borrow();
        let members = self
            .members
            .borrow()
            .values()
            .map(|m| {
                let conn = conns.get(&m.ident.node).filter(|c| !c.is_closed());
                let lag_notes = conn.map_or(0, |c| {
                    let v = c.vector.borrow();
                    ours.iter()
                        .map(|(o, s)| s.saturating_sub(v.get(o).copied().unwrap_or(0)))
                        .sum()
                });
                let swim = membership.as_ref().and_then(|ms| ms.state_of(m.ident.node));
                MemberView {
                    node: m.ident.node,
                    name: m.ident.name.clone(),
                    peer_addr: m.ident.peer_addr,
                    state: match (swim, conn.is_some()) {
                        (Some(s), _) => s,
                        (None, true) => "up",
                        (None, false) => "down",
                    },
                    connected: conn.is_some(),
                    cores: m.ident.cores,
                    loads: conn.map(|c| c.loads.borrow().clone()).unwrap_or_default(),
                    lag_notes,
                    outbox_bytes: conn.map_or(0, |c| c.outbox_bytes() as u64),
                }
            })
            .collect();
        self.shard
            .shared()
            .cluster
            .view
            .store(Arc::new(ClusterView { members }));
    }

    /// Applies a batch of notes from a peer: durable here, then indexed on
    /// every core. Returns an error only for malformed input.
    async fn apply_notes(&self, conn: &Rc<PeerConn>, payload: &[u8]) -> Result<(), PeerError> {
        let payloads = wire::decode_notes(payload)?;
        let mut fresh: Vec<NoteRef> = Vec::new();
        {
            let index = self.shard.index();
            for p in payloads {
                let note_ref = NoteRef::from_payload(p.to_vec())
                    .map_err(|e| PeerError::Local(format!("peer sent an invalid note: {e}")))?;
                let id = note_ref.note().id();
                if !index.contains(&id) && !fresh.iter().any(|f| f.note().id() == id) {
                    fresh.push(note_ref);
                }
            }
        }
        if !fresh.is_empty() {
            let bytes: Vec<&[u8]> = fresh.iter().map(|r| r.payload()).collect();
            if let Err(e) = self.shard.append_replicated(&bytes).await {
                // Not acknowledged: the peer resends after reconnecting.
                return Err(PeerError::Local(format!(
                    "cannot store replicated notes: {e}"
                )));
            }
            let now_us = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            for note_ref in fresh {
                let created = note_ref.note().created_at_us();
                self.shard
                    .metrics()
                    .record_replication_delay(now_us.saturating_sub(created));
                self.shard.publish(note_ref).await;
            }
        }
        // The acknowledgement: what we now hold, durably.
        conn.send(FrameKind::Vector, &self.our_vector().encode());
        let _ = conn;
        Ok(())
    }

    fn on_vector(&self, conn: &Rc<PeerConn>, payload: &[u8]) -> Result<(), PeerError> {
        let v = Vector::decode(payload)?;
        {
            let mut vector = conn.vector.borrow_mut();
            for (origin, seq) in v.entries {
                let e = vector.entry(origin).or_insert(0);
                *e = (*e).max(seq);
            }
        }
        *conn.loads.borrow_mut() = v.loads;
        conn.synced.set(true);
        self.update_watermarks();
        Ok(())
    }

    /// Tells a newly connected peer which notes below our high-water marks
    /// we lack, and asks for our own streams above them (see the module doc).
    fn send_holes(&self, conn: &Rc<PeerConn>) {
        let index = self.shard.index();
        let mut ranges: Vec<SeqRange> = Vec::new();
        for (origin, _) in index.vector() {
            let room = wire::HOLE_RANGES_PER_FRAME_MAX.saturating_sub(ranges.len());
            let holes = index.holes(origin, room.min(HOLE_RANGES_PER_ORIGIN_MAX));
            ranges.extend(holes.into_iter().map(|(first, last)| SeqRange {
                origin,
                first,
                last,
            }));
        }
        let below_marks = ranges.len();
        let missing_notes: u64 = ranges.iter().map(|r| r.last - r.first + 1).sum();
        for core in 0..self.me.cores {
            if ranges.len() >= wire::HOLE_RANGES_PER_FRAME_MAX {
                break;
            }
            let origin = Origin {
                node: self.me.node,
                core,
            };
            ranges.push(SeqRange {
                origin,
                first: index.seq_max(origin) + 1,
                last: u64::MAX,
            });
        }
        if below_marks > 0 {
            tracing::info!(
                peer = %conn.peer.name,
                ranges = below_marks,
                missing_notes,
                "asking a peer for notes missing below the high-water marks"
            );
        }
        conn.send(FrameKind::Holes, &Holes { ranges }.encode());
    }

    /// A peer's `Holes`: queue the ranges; the pump answers them.
    fn on_holes(&self, conn: &Rc<PeerConn>, payload: &[u8]) -> Result<(), PeerError> {
        let holes = Holes::decode(payload)?;
        let mut repairs = conn.repairs.borrow_mut();
        let room = peer::REPAIR_RANGES_QUEUED_MAX.saturating_sub(repairs.len());
        if holes.ranges.len() > room {
            tracing::warn!(peer = %conn.peer.name, asked = holes.ranges.len(), room, "too many hole ranges queued; dropping the rest");
        }
        repairs.extend(holes.ranges.into_iter().take(room));
        conn.wake();
        Ok(())
    }

    /// Answers queued `Holes` ranges with the notes we have in them, in
    /// `Notes` frames, until the outbox reaches its high-water mark.
    fn serve_repairs(&self, conn: &Rc<PeerConn>, index: &crate::store::index::Index) {
        let mut repairs = conn.repairs.borrow_mut();
        let mut batch: Vec<&[u8]> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut notes_sent = 0usize;
        while let Some(range) = repairs.front_mut() {
            if conn.outbox_bytes() >= peer::OUTBOX_HIGH_WATER_BYTES {
                break;
            }
            let mut done = true;
            for note_ref in index.stream_after(range.origin, range.first - 1) {
                let seq = note_ref.note().id().seq;
                if seq > range.last {
                    break;
                }
                batch.push(note_ref.payload());
                batch_bytes += note_ref.payload().len() + 4;
                notes_sent += 1;
                if batch_bytes >= NOTES_FRAME_BYTES_TARGET
                    || batch.len() >= wire::NOTES_PER_FRAME_MAX
                {
                    conn.send(FrameKind::Notes, &peer::notes_payload(&batch));
                    batch.clear();
                    batch_bytes = 0;
                    if seq >= range.last {
                        break;
                    }
                    range.first = seq + 1;
                    if conn.outbox_bytes() >= peer::OUTBOX_HIGH_WATER_BYTES {
                        done = false;
                        break;
                    }
                }
            }
            if !done {
                break;
            }
            repairs.pop_front();
        }
        if !batch.is_empty() {
            conn.send(FrameKind::Notes, &peer::notes_payload(&batch));
        }
        if notes_sent > 0 {
            tracing::info!(peer = %conn.peer.name, notes = notes_sent, "sent a peer notes it lacked below its high-water marks");
        }
    }

    fn on_dispatch_request(
        self: &Rc<Self>,
        conn: &Rc<PeerConn>,
        payload: &[u8],
    ) -> Result<(), PeerError> {
        let req = DispatchRequest::decode(payload)?;
        let cores = self.shard.shared().cpus.len();
        let core = (req.core as usize).min(cores.saturating_sub(1));
        let job = DispatchJob {
            reply_to: ReplyTo::Peer {
                node: conn.peer.node,
                id: req.id,
            },
            // The requesting node times out on its own (`DISPATCH_TIMEOUT_MS`).
            taken_by: None,
            keep_alive: req.keep_alive,
            http10: req.http10,
            raw_head: req.raw_head,
            body: req.body,
        };
        self.shard
            .notify_core(core, CoreMsg::Dispatch(Box::new(job)));
        Ok(())
    }

    fn on_dispatch_response(&self, payload: &[u8]) -> Result<(), PeerError> {
        let resp = DispatchResponse::decode(payload)?;
        let pending = self.remote_pending.borrow_mut().remove(&resp.id);
        if let Some((_, reply_to)) = pending {
            self.deliver_reply(
                reply_to,
                DispatchReply {
                    status: resp.status,
                    close: resp.close,
                    response: resp.response,
                },
            );
        }
        Ok(())
    }

    /// What `/_status` shows about this node's own peer endpoint.
    pub fn me(&self) -> &NodeIdentity {
        &self.me
    }
}

/// A 503 for a request whose remote execution failed.
pub fn unavailable_reply(why: &str) -> DispatchReply {
    crate::server::dispatch::closing_reply(503, &[("Retry-After", "1")], why)
}

impl PeerHandler for Cluster {
    fn on_frame(
        self: Rc<Self>,
        conn: &Rc<PeerConn>,
        kind: FrameKind,
        payload: Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(), PeerError>> + '_>> {
        let conn = Rc::clone(conn);
        Box::pin(async move {
            if self.is_blocked(&conn.peer.name) {
                return Err(PeerError::Blocked(conn.peer.name.clone()));
            }
            match kind {
                FrameKind::Vector => self.on_vector(&conn, &payload),
                FrameKind::Notes => self.apply_notes(&conn, &payload).await,
                FrameKind::DispatchRequest => self.on_dispatch_request(&conn, &payload),
                FrameKind::DispatchResponse => self.on_dispatch_response(&payload),
                FrameKind::Holes => self.on_holes(&conn, &payload),
                other => Err(PeerError::Unexpected(other)),
            }
        })
    }

    fn pump(&self, conn: &Rc<PeerConn>) {
        if conn.is_closed() {
            return;
        }
        let index = self.shard.index();
        // What the peer told us it lacks below its marks, first.
        if !conn.repairs.borrow().is_empty() {
            self.serve_repairs(conn, &index);
        }
        // Nothing else is sent before the peer told us what it has.
        if !conn.synced.get() {
            return;
        }
        let now_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let relay_cutoff_us = now_us.saturating_sub(RELAY_DELAY_MS * 1000);
        let connected: Vec<u32> = self.conns.borrow().keys().copied().collect();
        for (origin, ours) in index.vector() {
            if conn.outbox_bytes() >= peer::OUTBOX_HIGH_WATER_BYTES {
                return;
            }
            let peer_has = conn.vector.borrow().get(&origin).copied().unwrap_or(0);
            let sent = conn.sent.borrow().get(&origin).copied().unwrap_or(0);
            let from = peer_has.max(sent);
            if ours <= from || origin.node == conn.peer.node {
                continue;
            }
            // Another node's notes: its own connection delivers them first.
            let delay_relay = origin.node != self.me.node && connected.contains(&origin.node);
            let mut batch: Vec<&[u8]> = Vec::new();
            let mut batch_bytes = 0usize;
            let mut last = from;
            for note_ref in index.stream_after(origin, from) {
                let note = note_ref.note();
                if delay_relay && note.created_at_us() > relay_cutoff_us {
                    break;
                }
                batch.push(note_ref.payload());
                batch_bytes += note_ref.payload().len() + 4;
                last = note.id().seq;
                if batch_bytes >= NOTES_FRAME_BYTES_TARGET
                    || batch.len() >= wire::NOTES_PER_FRAME_MAX
                {
                    conn.send(FrameKind::Notes, &peer::notes_payload(&batch));
                    batch.clear();
                    batch_bytes = 0;
                    if conn.outbox_bytes() >= peer::OUTBOX_HIGH_WATER_BYTES {
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                conn.send(FrameKind::Notes, &peer::notes_payload(&batch));
            }
            if last > sent {
                conn.sent.borrow_mut().insert(origin, last);
            }
        }
    }

    fn heartbeat(&self, conn: &Rc<PeerConn>) {
        conn.send(FrameKind::Vector, &self.our_vector().encode());
    }

    fn established(&self, conn: &Rc<PeerConn>) {
        self.send_holes(conn);
    }
}
